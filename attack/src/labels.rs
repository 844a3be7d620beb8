//! Label recovery from an observed gradient, when the scenario does not expose labels.
//!
//! The classifier is the last layer of every model of the zoo, so the observed gradient ends
//! with its weight `[K, F]` and bias `[K]`. For the mean cross-entropy over a batch,
//! ∂L/∂b_c = (1/B) Σ_i (p_ic − 1[y_i = c]) and ∂L/∂W_c = (1/B) Σ_i (p_ic − 1[y_i = c]) h_iᵀ.
//! - Batch size 1 (iDLG, Zhao et al. 2020): with non-negative features h (after ReLU or
//!   sigmoid) only the true class has a negative factor, so the label is the class whose weight
//!   row sums most negative.
//! - Larger batches (count-based, in the spirit of Wainakh et al.'s LLG): assuming the
//!   untrained model's near-uniform predictions p_ic ≈ 1/K, the number of examples of class c
//!   is ≈ B·(1/K − ∂L/∂b_c); counts are rounded by largest remainders so they sum to B.

use crate::error::{AttackError, Result};
use candle_core::{DType, Tensor, D};

/// Recovered labels of a batch of `batch` examples (sorted by class for B > 1: a batch's order
/// is not recoverable from its gradient).
pub fn recover_labels(gradient: &[Tensor], batch: usize) -> Result<Vec<u32>> {
    let n = gradient.len();
    if n < 2 || batch == 0 {
        return Err(AttackError::Shape(
            "label recovery needs the classifier's weight and bias gradients".into(),
        ));
    }
    let (weight, bias) = (&gradient[n - 2], &gradient[n - 1]);
    let (k, _) = weight.dims2().map_err(|_| {
        AttackError::Shape(format!(
            "the second-to-last gradient has shape {:?}, not [classes, features]",
            weight.dims()
        ))
    })?;
    if bias.dims() != [k] {
        return Err(AttackError::Shape(format!(
            "the last gradient has shape {:?}, not the classifier bias [{k}]",
            bias.dims()
        )));
    }
    if batch == 1 {
        let row_sums = weight.sum(D::Minus1)?;
        let label = row_sums
            .argmin(0)?
            .to_dtype(DType::U32)?
            .to_scalar::<u32>()?;
        return Ok(vec![label]);
    }
    let g: Vec<f64> = bias.to_dtype(DType::F64)?.to_vec1()?;
    if g.iter().any(|v| !v.is_finite()) {
        return Err(AttackError::Shape(
            "the classifier bias gradient is not finite".into(),
        ));
    }
    let b = batch as f64;
    let estimates: Vec<f64> = g
        .iter()
        .map(|gc| (b * (1.0 / k as f64 - gc)).max(0.0))
        .collect();
    Ok(largest_remainder(&estimates, batch)
        .into_iter()
        .enumerate()
        .flat_map(|(c, n)| std::iter::repeat_n(c as u32, n))
        .collect())
}

/// Integer counts summing to `total`, proportional to `estimates` (largest remainders).
fn largest_remainder(estimates: &[f64], total: usize) -> Vec<usize> {
    let sum: f64 = estimates.iter().sum();
    let scaled: Vec<f64> = if sum > 0.0 {
        estimates.iter().map(|e| e * total as f64 / sum).collect()
    } else {
        vec![total as f64 / estimates.len() as f64; estimates.len()]
    };
    let mut counts: Vec<usize> = scaled.iter().map(|s| s.floor() as usize).collect();
    let mut order: Vec<usize> = (0..scaled.len()).collect();
    order.sort_by(|&a, &b| {
        (scaled[b] - scaled[b].floor())
            .total_cmp(&(scaled[a] - scaled[a].floor()))
            .then(a.cmp(&b))
    });
    let mut missing = total.saturating_sub(counts.iter().sum());
    for &c in order.iter().cycle() {
        if missing == 0 {
            break;
        }
        counts[c] += 1;
        missing -= 1;
    }
    counts
}

/// Fraction of `recovered` labels that match `truth` as multisets (order-free).
pub fn label_accuracy(recovered: &[u32], truth: &[u32]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    let mut remaining = truth.to_vec();
    let mut hits = 0;
    for r in recovered {
        if let Some(pos) = remaining.iter().position(|t| t == r) {
            remaining.swap_remove(pos);
            hits += 1;
        }
    }
    hits as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_remainder_sums_to_the_total() {
        assert_eq!(largest_remainder(&[1.5, 1.5, 1.0], 4), vec![2, 1, 1]);
        assert_eq!(largest_remainder(&[0.0, 0.0], 3).iter().sum::<usize>(), 3);
        assert_eq!(largest_remainder(&[2.0, 0.0, 2.0], 4), vec![2, 0, 2]);
    }

    #[test]
    fn label_accuracy_ignores_order() {
        assert_eq!(label_accuracy(&[3, 1, 1], &[1, 3, 1]), 1.0);
        assert!((label_accuracy(&[3, 3, 1], &[1, 3, 1]) - 2.0 / 3.0).abs() < 1e-12);
    }
}
