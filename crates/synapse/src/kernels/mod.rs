//! CPU kernels for the operations that dominate training steps and attack iterations.
//!
//! candle 0.11's CPU backend convolves with a direct transposed-convolution loop in the backward
//! pass, copies transposed matrices in the fully connected backward pass, and composes the SGD
//! update out of allocating ops; together that made synfed 4–10× slower than PyTorch on the
//! same CPU. These kernels replace them with `gemm` products on the operands' own strides
//! ([`matmul`], [`convolution`]; 3×3 convolutions directly or by Winograd's algorithm),
//! per-channel reductions and maps that avoid candle's slow multi-dimension sums ([`channel`],
//! [`affine`]; their sums in independent lanes, `lanes`), BatchNorm (with or without the ReLU
//! after it), its input gradient, ReLU and the residual add + ReLU as single ops
//! ([`batch_norm`], [`batch_norm_grad`], [`relu`]) and an in-place update ([`descent`]);
//! [`backward`] lets a backward pass skip gradients nobody asked for, or not build the graph of
//! gradients nobody differentiates again (then BatchNorm's gradients come from fused kernels).
//! Outputs are written in parallel without a serial zeroing pass first (`buffer`).
//!
//! Each kernel is a candle custom op whose backward pass is written with the kernels again, so
//! gradients of gradients (the gradient-inversion attack) stay exact; each is checked against
//! candle's own ops and f64 finite differences, to second order. Every function falls back to
//! candle's ops off the CPU, so `--features cuda` runs on candle's CUDA kernels.

pub mod affine;
pub mod backward;
pub mod batch_norm;
pub mod batch_norm_grad;
mod buffer;
pub mod channel;
pub mod convolution;
pub mod descent;
mod direct;
mod fused_winograd;
pub mod gemm;
pub mod im2col;
mod lanes;
pub mod matmul;
pub mod relu;
pub mod similarity;
mod storage;
mod winograd;

pub use affine::{channel_affine, channel_center};
pub use backward::{backward_final, backward_final_with_constants, backward_with_constants};
pub use batch_norm::{batch_norm, batch_norm_relu, BatchStats};
pub use batch_norm_grad::{batch_norm_input_grad, batch_norm_scale_grad};
pub use channel::{channel_broadcast, channel_sum};
pub use convolution::{conv2d, conv2d_input_grad, conv2d_weight_grad, ConvParams};
pub use descent::descend;
pub use matmul::matmul;
pub use relu::{add_relu, relu, relu_mask};
pub use similarity::{axpby, dot_and_squares};

/// Elements below which splitting work between threads costs more than it saves. With the
/// computation on a rayon worker ([`crate::worker`]) a split is a push onto that worker's deque
/// for the other to steal, cheaper than the hand-over from outside the pool, for which 16 K was
/// best; 4 K measured best there (ResNet20 step and attacks; 2 K and 8 K no better).
const TASK_ELEMENTS: usize = 1 << 12;

/// How many items of `item_len` elements one parallel task should take at least, so that small
/// tensors (ResNet's last stage has 64-element planes) do not become thousands of tiny tasks.
pub(crate) fn items_per_task(item_len: usize) -> usize {
    (TASK_ELEMENTS / item_len.max(1)).max(1)
}

/// Whether `t` is computed by these kernels (f32/f64 on the CPU) rather than by candle's own
/// ops (any other device or dtype — the CUDA path).
pub(crate) fn uses_kernels(t: &candle_core::Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// Whether work over `elements` values is worth handing to the thread pool. At most one task's
/// worth runs on the calling thread: handing it over would still wake a worker (and, from
/// outside the pool, put the caller to sleep until it is done), which costs more than the work
/// (a batch-1 attack iteration is hundreds of such small ops).
pub(crate) fn worth_splitting(elements: usize) -> bool {
    elements > TASK_ELEMENTS
}

/// `f(channel)` for every channel, each reading `per_channel` values, in parallel when that is
/// worth it; results in channel order.
pub(crate) fn per_channel<R: Send>(
    channels: usize,
    per_channel: usize,
    f: impl Fn(usize) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    if worth_splitting(channels * per_channel) {
        (0..channels)
            .into_par_iter()
            .with_min_len(items_per_task(per_channel))
            .map(f)
            .collect()
    } else {
        (0..channels).map(f).collect()
    }
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{max_diff, seeded};
    use candle_core::{DType, Tensor};

    /// Dtypes the kernels do not handle take candle's own ops — the code path of
    /// `--features cuda` — and agree with the kernels (within half precision).
    #[test]
    fn candles_path_for_other_dtypes_agrees_with_the_kernels() {
        let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
        let (x, w) = (seeded(&[2, 3, 6, 6], 1), seeded(&[4, 3, 3, 3], 2));
        let p = ConvParams {
            stride: 2,
            padding: 1,
        };
        let y = conv2d(&x, &w, p).unwrap();
        assert!(max_diff(&conv2d(&half(&x), &half(&w), p).unwrap(), &y) < 0.05);
        let g = seeded(y.dims(), 3);
        let dx = conv2d_input_grad(&g, &w, (6, 6), p).unwrap();
        assert!(
            max_diff(
                &conv2d_input_grad(&half(&g), &half(&w), (6, 6), p).unwrap(),
                &dx
            ) < 0.05
        );
        let dw = conv2d_weight_grad(&x, &g, (3, 3), p).unwrap();
        assert!(
            max_diff(
                &conv2d_weight_grad(&half(&x), &half(&g), (3, 3), p).unwrap(),
                &dw
            ) < 0.05
        );
        let (a, b) = (seeded(&[5, 7], 4), seeded(&[3, 7], 5));
        let ab = matmul(&a, false, &b, true).unwrap();
        assert!(max_diff(&matmul(&half(&a), false, &half(&b), true).unwrap(), &ab) < 0.05);
        let (s, t) = (seeded(&[3], 6), seeded(&[3], 7));
        let aff = channel_affine(&x, &s, &t).unwrap();
        assert!(
            max_diff(
                &channel_affine(&half(&x), &half(&s), &half(&t)).unwrap(),
                &aff
            ) < 0.01
        );
        let sum = channel_sum(&x).unwrap();
        assert!(max_diff(&channel_sum(&half(&x)).unwrap(), &sum) < 0.1);
        let dims = (2, 3, 6, 6);
        let spread = channel_broadcast(&s, dims).unwrap();
        assert!(max_diff(&channel_broadcast(&half(&s), dims).unwrap(), &spread) < 0.01);
        assert!(max_diff(&relu(&half(&x)).unwrap(), &relu(&x).unwrap()) < 0.01);
        assert!(
            max_diff(
                &relu_mask(&half(&g), &half(&y)).unwrap(),
                &relu_mask(&g, &y).unwrap()
            ) < 0.01
        );
    }
}
