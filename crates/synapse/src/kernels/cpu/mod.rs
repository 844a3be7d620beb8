//! The CPU side of the kernels: typed access to candle's storage, `gemm` products, unfolding,
//! Winograd and direct 3×3 convolutions, sums in independent lanes, and output buffers written
//! in parallel.
//!
//! Nothing here is a tensor op. The public ops one level up ([`super`]) decide whether these
//! run at all (f32/f64 on the CPU, [`super::dispatch`]), check shapes, and say how each op is
//! differentiated; this module only computes on slices, so that the numerics can be read, tested
//! and tuned without candle's graph in the way. Every sum here runs in a fixed order whatever
//! the number of threads, so results are the same bytes on any machine with the same
//! instructions.

pub(super) mod buffer;
pub(super) mod convolution;
pub(super) mod direct;
pub(super) mod fused_winograd;
pub(super) mod gemm;
pub(super) mod im2col;
pub(super) mod lanes;
pub(super) mod storage;
pub(super) mod winograd;

use direct::Direct;
use storage::Operand;

/// The element types the kernels compute in (f32 and f64): readable from candle's CPU storage
/// ([`Operand`]) and with the convolutions' register tiles ([`Direct`]).
pub(crate) trait Scalar: Operand + Direct {}

impl<T: Operand + Direct> Scalar for T {}

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
