//! The one place that decides who computes an op: synfed's CPU kernels or candle's own ops.
//!
//! The kernels ([`super::cpu`]) read f32 and f64 values in CPU memory. On any other device or
//! dtype — the `--features cuda` build, half precision — each op is computed by candle's ops,
//! composed to the same value. Every public op states both ways and calls [`compute`]; the rule
//! that picks one lives in [`Backend::of`] alone, so no op can drift from it and a new device
//! path is one change here.

use candle_core::{DType, Result, Tensor};

/// Who computes an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// synfed's kernels, as candle custom ops whose backward passes are kernels again
    CpuKernels,
    /// candle's own ops (any device, any dtype)
    Candle,
}

impl Backend {
    /// The backend for an op whose operands share `lead`'s device and dtype.
    pub(crate) fn of(lead: &Tensor) -> Self {
        if lead.device().is_cpu() && matches!(lead.dtype(), DType::F32 | DType::F64) {
            Backend::CpuKernels
        } else {
            Backend::Candle
        }
    }
}

/// `kernels()` when `lead` (an operand whose device and dtype the others share) is for the CPU
/// kernels, `candle()` otherwise. Only the chosen closure runs.
pub(crate) fn compute<R>(
    lead: &Tensor,
    kernels: impl FnOnce() -> Result<R>,
    candle: impl FnOnce() -> Result<R>,
) -> Result<R> {
    match Backend::of(lead) {
        Backend::CpuKernels => kernels(),
        Backend::Candle => candle(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn kernels_take_single_and_double_precision_on_the_cpu_only() {
        let t = |dtype| Tensor::zeros(3, dtype, &Device::Cpu).unwrap();
        assert_eq!(Backend::of(&t(DType::F32)), Backend::CpuKernels);
        assert_eq!(Backend::of(&t(DType::F64)), Backend::CpuKernels);
        for dtype in [DType::F16, DType::BF16, DType::U32, DType::U8] {
            assert_eq!(Backend::of(&t(dtype)), Backend::Candle, "{dtype:?}");
        }
        let chosen = |dtype| compute(&t(dtype), || Ok("kernels"), || Ok("candle")).unwrap();
        assert_eq!(chosen(DType::F64), "kernels");
        assert_eq!(chosen(DType::F16), "candle");
    }
}
