//! Central finite differences, to test gradients against.
//!
//! The attack's correctness rests on exact (first- and second-order) gradients of every
//! layer; these helpers compare candle's autograd with (f(x + h) − f(x − h)) / 2h in f64.

use candle_core::{DType, Result, Tensor, Var};

/// Central-difference derivative of the scalar `f` with respect to the elements `indices` of
/// `var` (flattened). `var` is restored afterwards.
pub fn numeric_grad(
    var: &Var,
    indices: &[usize],
    h: f64,
    mut f: impl FnMut() -> Result<f64>,
) -> Result<Vec<f64>> {
    let original = var.as_tensor().copy()?;
    let base = original
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let mut out = Vec::with_capacity(indices.len());
    let mut probe = |values: &[f64]| -> Result<f64> {
        var.set(
            &Tensor::from_vec(values.to_vec(), var.dims(), var.device())?.to_dtype(var.dtype())?,
        )?;
        f()
    };
    let mut shifted = base.clone();
    for &i in indices {
        shifted[i] = base[i] + h;
        let plus = probe(&shifted)?;
        shifted[i] = base[i] - h;
        let minus = probe(&shifted)?;
        shifted[i] = base[i];
        out.push((plus - minus) / (2.0 * h));
    }
    var.set(&original)?;
    Ok(out)
}

/// Up to `n` indices spread evenly over `0..len` (first and last included).
pub fn spread_indices(len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..n).map(|k| k * (len - 1) / (n - 1).max(1)).collect();
    v.dedup();
    v
}

/// Largest |a − b| / (atol + rtol·|b|) over the two vectors (≤ 1 means they agree).
pub fn worst_mismatch(analytic: &[f64], numeric: &[f64], atol: f64, rtol: f64) -> f64 {
    analytic
        .iter()
        .zip(numeric)
        .map(|(a, n)| (a - n).abs() / (atol + rtol * n.abs()))
        .fold(0.0, f64::max)
}

/// The elements of `t` as f64.
pub fn to_f64_vec(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}
