//! CPU kernels for the operations that dominate training steps and attack iterations.
//!
//! candle 0.11's CPU backend convolves with a direct transposed-convolution loop in the backward
//! pass, copies transposed matrices in the fully connected backward pass, and composes the SGD
//! update out of allocating ops; together that made synfed 4–10× slower than PyTorch on the
//! same CPU. These kernels replace them with `gemm` products on the operands' own strides
//! ([`matmul`], [`convolution`]), per-channel reductions that avoid candle's slow
//! multi-dimension sums ([`channel`]) and an in-place update ([`descent`]).
//!
//! Each kernel is a candle custom op whose backward pass is written with the kernels again, so
//! gradients of gradients (the gradient-inversion attack) stay exact; each is checked against
//! candle's own ops and f64 finite differences, to second order. Every function falls back to
//! candle's ops off the CPU, so `--features cuda` runs on candle's CUDA kernels.

pub mod affine;
pub mod channel;
pub mod constants;
pub mod convolution;
pub mod descent;
pub mod gemm;
pub mod im2col;
pub mod matmul;
pub mod relu;
mod storage;

pub use affine::{channel_affine, channel_center};
pub use channel::{channel_broadcast, channel_sum};
pub use constants::backward_with_constants;
pub use convolution::{conv2d, conv2d_input_grad, conv2d_weight_grad, ConvParams};
pub use descent::descend;
pub use matmul::matmul;
pub use relu::{relu, relu_mask};

/// Elements below which splitting work between threads costs more than it saves.
const TASK_ELEMENTS: usize = 1 << 14;

/// How many items of `item_len` elements one parallel task should take at least, so that small
/// tensors (ResNet's last stage has 64-element planes) do not become thousands of tiny tasks.
pub(crate) fn items_per_task(item_len: usize) -> usize {
    (TASK_ELEMENTS / item_len.max(1)).max(1)
}
