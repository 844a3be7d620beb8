//! CPU kernels for the operations that dominate training steps and attack iterations.
//!
//! candle 0.11's CPU backend convolves with a direct transposed-convolution loop in the backward
//! pass, copies transposed matrices in the fully connected backward pass, and composes the SGD
//! update out of allocating ops; together that made synfed 4–10× slower than PyTorch on the
//! same CPU. These kernels replace them with `gemm` products on the operands' own strides
//! ([`matmul`], [`convolution`]; 3×3 convolutions directly or by Winograd's algorithm),
//! per-channel reductions and maps that avoid candle's slow multi-dimension sums ([`channel`],
//! [`affine`]; their sums in independent lanes), BatchNorm (with or without the ReLU
//! after it), its input gradient, ReLU and the residual add + ReLU as single ops
//! ([`batch_norm`], [`batch_norm_grad`], [`relu`]) and an in-place update ([`descent`]);
//! [`backward`] lets a backward pass skip gradients nobody asked for, or not build the graph of
//! gradients nobody differentiates again (then BatchNorm's gradients come from fused kernels).
//! Outputs are written in parallel without a serial zeroing pass first.
//!
//! Each kernel is a candle custom op whose backward pass is written with the kernels again, so
//! gradients of gradients (the gradient-inversion attack) stay exact; each is checked against
//! candle's own ops and f64 finite differences, to second order.
//!
//! The layout separates what a caller sees from how the CPU computes it:
//!
//! * the public ops (the files beside this one) are device-independent: each checks its
//!   operands, states how it is differentiated, and names two ways to compute it — its CPU
//!   kernel or candle's own ops — between which `dispatch` alone chooses (f32/f64 on the CPU:
//!   the kernel; anything else, e.g. `--features cuda`: candle's CUDA kernels);
//! * `custom_op` turns a kernel (a typed forward pass and a backward pass over arrays) into
//!   candle's `CustomOp1/2/3`, so no op repeats candle's storage, layout and dtype plumbing;
//! * `cpu` holds the numerics on slices, private to this module: `gemm` products, unfolding,
//!   Winograd and direct 3×3 convolutions, lane sums, parallel output buffers.

pub mod affine;
pub mod backward;
pub mod batch_norm;
pub mod batch_norm_grad;
pub mod channel;
pub mod convolution;
mod cpu;
mod custom_op;
pub mod descent;
mod dispatch;
pub mod gemm_path;
pub mod matmul;
pub mod relu;
pub mod similarity;

pub use affine::{channel_affine, channel_center};
pub use backward::{backward_final, backward_final_with_constants, backward_with_constants};
pub use batch_norm::{batch_norm, batch_norm_relu, BatchStats};
pub use batch_norm_grad::{batch_norm_input_grad, batch_norm_scale_grad};
pub use channel::{channel_broadcast, channel_sum};
pub use convolution::{conv2d, conv2d_input_grad, conv2d_weight_grad, ConvParams};
pub use descent::descend;
pub use gemm_path::{gemm_path, GemmPath};
pub use matmul::matmul;
pub use relu::{add_relu, relu, relu_mask};
pub use similarity::{axpby, dot_and_squares};

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
