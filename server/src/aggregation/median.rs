//! The coordinate-wise median (Yin et al. 2018).
//!
//! Each coordinate of the aggregate is the median of the round's values for it. While fewer
//! than half of the n updates are Byzantine, every coordinate lies between two honest values,
//! however large the others are. One client sending 1e38 everywhere moves no coordinate past
//! the honest ones. The price is that the median of n honest gradients is noisier than their
//! mean, and it ignores example weights. With an even n it is the mean of the two middle
//! values.

use super::{common_length, AggregationError};

/// The median of `values` (sorted in place); `values` must not be empty.
pub(crate) fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        // halves first: the sum of two values near f64::MAX would overflow
        values[n / 2 - 1] / 2.0 + values[n / 2] / 2.0
    }
}

/// The coordinate-wise median of `updates` (unweighted).
pub fn median(updates: &[&[f64]]) -> Result<Vec<f64>, AggregationError> {
    if updates.is_empty() {
        return Err(AggregationError::TooFewUpdates {
            rule: "median",
            needed: 1,
            got: 0,
        });
    }
    let len = common_length(updates)?;
    let mut column = vec![0f64; updates.len()];
    Ok((0..len)
        .map(|j| {
            for (c, u) in column.iter_mut().zip(updates) {
                *c = u[j];
            }
            median_of(&mut column)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_five_small_vectors() {
        // per coordinate: sorted (−1, 0, 2, 3, 1e38) → 2 ; (−7, −5, 1, 4, 9) → 1 ;
        // (0.5 ×5) → 0.5
        let updates: [&[f64]; 5] = [
            &[3.0, -5.0, 0.5],
            &[-1.0, 9.0, 0.5],
            &[1e38, 1.0, 0.5],
            &[0.0, 4.0, 0.5],
            &[2.0, -7.0, 0.5],
        ];
        assert_eq!(median(&updates).unwrap(), vec![2.0, 1.0, 0.5]);
    }

    #[test]
    fn an_even_count_takes_the_mean_of_the_middle_two() {
        let updates: [&[f64]; 4] = [
            &[1.0, f64::MAX],
            &[4.0, f64::MAX],
            &[2.0, 0.0],
            &[10.0, 0.0],
        ];
        // (2 + 4) / 2 = 3 ; (0 + MAX) / 2 without overflow
        assert_eq!(median(&updates).unwrap(), vec![3.0, f64::MAX / 2.0]);
        assert_eq!(median(&[&[7.0]]).unwrap(), vec![7.0]);
    }

    #[test]
    fn refuses_nothing_and_ragged_input() {
        assert!(median(&[]).is_err());
        assert!(median(&[&[1.0], &[1.0, 2.0]]).is_err());
    }
}
