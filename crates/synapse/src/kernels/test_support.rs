//! Shared helpers of the kernels' tests: deterministic inputs and the largest difference.

use candle_core::{DType, Device, Tensor};

/// Deterministic f64 values in [−1, 1) of shape `dims`, different for each seed.
pub(crate) fn seeded(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|i| (((i as u64 + 1) * 2654435761 + seed * 7919) % 1000) as f64 / 500.0 - 1.0)
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("seeded tensor")
}

/// max |a − b| over all elements, in f64 (shapes must agree).
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let f = |t: &Tensor| t.to_dtype(DType::F64).expect("to f64");
    (f(a) - f(b))
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f64>())
        .expect("max difference")
}

/// [`max_diff`] relative to the reference `b`'s largest magnitude (at least 1).
pub(crate) fn relative_diff(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b
        .abs()
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.max(0))
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_scalar::<f64>())
        .expect("largest magnitude")
        .max(1.0);
    max_diff(a, b) / scale
}
