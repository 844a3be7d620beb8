//! The coordinate-wise trimmed mean (Yin et al. 2018).
//!
//! For each coordinate the ⌊β·n⌋ largest and the ⌊β·n⌋ smallest of the round's n values are
//! dropped, and the rest are averaged (unweighted). With at most ⌊β·n⌋ Byzantine updates,
//! every value left lies between two honest ones. It keeps more of the honest information than
//! the median (β → 0.5), and with β = 0 it is the unweighted mean. β is in [0, 0.5), so at
//! least one value is left: 2⌊β·n⌋ < n.

use super::median::median_of;
use super::{common_length, AggregationError};

/// How many values are dropped on each side of `n` with trim fraction `beta`: ⌊β·n⌋.
pub fn trimmed_count(n: usize, beta: f64) -> usize {
    let k = (beta * n as f64).floor();
    if k.is_finite() && k > 0.0 {
        // β < 0.5 keeps 2k < n; the min guards a β given unchecked
        (k as usize).min(n.saturating_sub(1) / 2)
    } else {
        0
    }
}

/// The coordinate-wise β-trimmed mean of `updates`.
pub fn trimmed_mean(updates: &[&[f64]], beta: f64) -> Result<Vec<f64>, AggregationError> {
    let n = updates.len();
    if n == 0 {
        return Err(AggregationError::TooFewUpdates {
            rule: "trimmed-mean",
            needed: 1,
            got: 0,
        });
    }
    let len = common_length(updates)?;
    let k = trimmed_count(n, beta);
    let kept = (n - 2 * k) as f64;
    let mut column = vec![0f64; n];
    Ok((0..len)
        .map(|j| {
            for (c, u) in column.iter_mut().zip(updates) {
                *c = u[j];
            }
            // sorts `column`
            let _ = median_of(&mut column);
            column[k..n - k].iter().sum::<f64>() / kept
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: [&[f64]; 5] = [
        &[3.0, -5.0, 0.5],
        &[-1.0, 9.0, 0.5],
        &[1e38, 1.0, 0.5],
        &[0.0, 4.0, 0.5],
        &[2.0, -7.0, 0.5],
    ];

    #[test]
    fn trimmed_mean_of_five_small_vectors() {
        // β = 0.2: ⌊0.2·5⌋ = 1 dropped each side.
        // sorted (−1, 0, 2, 3, 1e38) → (0 + 2 + 3) / 3 = 5/3 ;
        // (−7, −5, 1, 4, 9) → (−5 + 1 + 4) / 3 = 0 ; 0.5
        let m = trimmed_mean(&FIVE, 0.2).unwrap();
        assert_eq!(m, vec![5.0 / 3.0, 0.0, 0.5]);
        // β = 0.4: 2 each side: the median
        assert_eq!(trimmed_mean(&FIVE, 0.4).unwrap(), vec![2.0, 1.0, 0.5]);
        // β = 0.1: ⌊0.5⌋ = 0, nothing dropped: the plain mean (the 1e38 stays)
        let plain = trimmed_mean(&FIVE, 0.1).unwrap();
        assert_eq!(plain[0], (1e38 + 4.0) / 5.0);
        assert_eq!(plain[1], 2.0 / 5.0);
    }

    #[test]
    fn the_count_dropped_is_floor_beta_n_and_leaves_one() {
        assert_eq!(trimmed_count(5, 0.2), 1);
        assert_eq!(trimmed_count(5, 0.19), 0);
        assert_eq!(trimmed_count(10, 0.25), 2);
        assert_eq!(trimmed_count(100, 0.49), 49);
        assert_eq!(trimmed_count(2, 0.49), 0);
        assert_eq!(
            trimmed_count(4, 0.5),
            1,
            "an unchecked β = 0.5 still leaves values"
        );
        assert_eq!(trimmed_count(3, 0.0), 0);
        assert_eq!(trimmed_count(3, f64::NAN), 0);
    }

    #[test]
    fn refuses_nothing_and_ragged_input() {
        assert!(trimmed_mean(&[], 0.1).is_err());
        assert!(trimmed_mean(&[&[1.0], &[]], 0.1).is_err());
    }
}
