//! The example-weighted mean Σ wₖ·uₖ / Σ wₖ of kept, flattened updates.
//!
//! It is the last step of Multi-Krum, which averages the updates it selects. They are weighted
//! by examples, as in the plain mean, with weights already bounded by [`super::weight`]. The
//! sum runs in the order given (the round's canonical order) and in f64, as
//! [`crate::aggregate::OrderedSum`] does, so the result is the same bits on every run.

use super::{common_length, AggregationError};

/// Σ wₖ·uₖ / Σ wₖ, coordinate by coordinate.
pub fn weighted_mean(updates: &[&[f64]], weights: &[f64]) -> Result<Vec<f64>, AggregationError> {
    if updates.is_empty() || weights.len() != updates.len() {
        return Err(AggregationError::TooFewUpdates {
            rule: "the weighted mean",
            needed: 1,
            got: updates.len().min(weights.len()),
        });
    }
    let len = common_length(updates)?;
    let total: f64 = weights.iter().sum();
    if !(total.is_finite() && total > 0.0) || weights.iter().any(|w| *w < 0.0) {
        return Err(AggregationError::Weight(total));
    }
    let mut sum = vec![0f64; len];
    for (u, &w) in updates.iter().zip(weights) {
        for (s, &x) in sum.iter_mut().zip(u.iter()) {
            *s += x * w;
        }
    }
    for s in &mut sum {
        *s /= total;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_by_examples() {
        let a = [1.0, 10.0];
        let b = [4.0, -2.0];
        // (1·1 + 3·4) / 4 = 3.25 ; (1·10 − 3·2) / 4 = 1
        assert_eq!(
            weighted_mean(&[&a, &b], &[1.0, 3.0]).unwrap(),
            vec![3.25, 1.0]
        );
        assert_eq!(weighted_mean(&[&a], &[8.0]).unwrap(), a.to_vec());
    }

    #[test]
    fn refuses_empty_input_bad_weights_and_ragged_updates() {
        assert!(weighted_mean(&[], &[]).is_err());
        assert!(weighted_mean(&[&[1.0]], &[0.0]).is_err());
        assert!(weighted_mean(&[&[1.0], &[2.0]], &[1.0, -1.0]).is_err());
        assert!(matches!(
            weighted_mean(&[&[1.0, 2.0], &[3.0]], &[1.0, 1.0]),
            Err(AggregationError::Length {
                expected: 2,
                got: 1
            })
        ));
    }
}
