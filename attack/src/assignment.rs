//! Optimal one-to-one matching of reconstructions to ground-truth images.
//!
//! An attack on a batch recovers a set of images in no particular order, so before scoring,
//! each reconstruction is paired with the ground-truth image it reconstructs. Pairing each one
//! greedily with its nearest image can use an image twice; the fair pairing is the permutation
//! of least total cost (for us, total MSE), the linear assignment problem. [`assign`] solves it
//! exactly with the Hungarian (Kuhn–Munkres) algorithm in its O(n³) shortest-augmenting-path
//! form with row and column potentials.

use serde::{Deserialize, Serialize};

use crate::error::{AttackError, Result};

/// An optimal matching of the rows of a square cost matrix to its columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// `permutation[i]` is the column (ground-truth image) matched to row (reconstruction) `i`.
    pub permutation: Vec<usize>,
    /// `Σ_i cost[i][permutation[i]]`, the least possible over all permutations.
    pub total_cost: f64,
}

/// Matches every row of the square matrix `cost` (`cost[i][j]`: cost of pairing reconstruction
/// `i` with ground-truth image `j`) to a distinct column so that the total cost is minimal.
///
/// Among several optimal permutations, which one is returned is deterministic but unspecified.
/// An empty, ragged or non-square matrix, or a NaN or infinite entry, is an error.
pub fn assign(cost: &[Vec<f64>]) -> Result<Assignment> {
    check_matrix(cost)?;
    let n = cost.len();
    // 1-based, as in the textbook formulation: column 0 is a virtual column that holds the row
    // being inserted; `row_of[j]` is the row matched to column j (0: none).
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; n + 1];
    let mut row_of = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut min_slack = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let mut next: Option<(f64, usize)> = None;
            for j in 1..=n {
                if used[j] {
                    continue;
                }
                let slack = cost[i0 - 1][j - 1] - u[i0] - v[j];
                if slack < min_slack[j] {
                    min_slack[j] = slack;
                    way[j] = j0;
                }
                if next.is_none_or(|(best, _)| min_slack[j] < best) {
                    next = Some((min_slack[j], j));
                }
            }
            let (delta, j1) = next.ok_or(AttackError::CostOverflow)?;
            if !delta.is_finite() {
                return Err(AttackError::CostOverflow);
            }
            for j in 0..=n {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_slack[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        // Flip the augmenting path back to the virtual column.
        while j0 != 0 {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
        }
    }
    let mut permutation = vec![0; n];
    for (j, &i) in row_of.iter().enumerate().skip(1) {
        permutation[i - 1] = j - 1;
    }
    let total_cost = permutation
        .iter()
        .enumerate()
        .map(|(i, &j)| cost[i][j])
        .sum();
    if !f64::is_finite(total_cost) {
        return Err(AttackError::CostOverflow);
    }
    Ok(Assignment {
        permutation,
        total_cost,
    })
}

fn check_matrix(cost: &[Vec<f64>]) -> Result<()> {
    let n = cost.len();
    if n == 0 {
        return Err(AttackError::Empty {
            what: "cost matrix".to_string(),
        });
    }
    if let Some((row, r)) = cost.iter().enumerate().find(|(_, r)| r.len() != n) {
        return Err(AttackError::NotSquare {
            rows: n,
            row,
            len: r.len(),
        });
    }
    for (row, r) in cost.iter().enumerate() {
        if let Some((column, &value)) = r.iter().enumerate().find(|(_, c)| !c.is_finite()) {
            return Err(AttackError::NonFiniteCost { row, column, value });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The least total cost over all n! permutations (Heap's algorithm).
    fn brute_force(cost: &[Vec<f64>]) -> f64 {
        let n = cost.len();
        let mut perm: Vec<usize> = (0..n).collect();
        let total = |p: &[usize]| p.iter().enumerate().map(|(i, &j)| cost[i][j]).sum::<f64>();
        let mut best = total(&perm);
        let mut c = vec![0; n];
        let mut i = 0;
        while i < n {
            if c[i] < i {
                if i % 2 == 0 {
                    perm.swap(0, i);
                } else {
                    perm.swap(c[i], i);
                }
                best = best.min(total(&perm));
                c[i] += 1;
                i = 0;
            } else {
                c[i] = 0;
                i += 1;
            }
        }
        best
    }

    fn assert_valid(cost: &[Vec<f64>], a: &Assignment) {
        let mut seen = vec![false; cost.len()];
        for &j in &a.permutation {
            assert!(!seen[j], "column {j} used twice in {:?}", a.permutation);
            seen[j] = true;
        }
        let total: f64 = a
            .permutation
            .iter()
            .enumerate()
            .map(|(i, &j)| cost[i][j])
            .sum();
        assert_eq!(total, a.total_cost);
    }

    #[test]
    fn matches_brute_force_on_random_matrices() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in 1..=7 {
            for _ in 0..30 {
                let cost: Vec<Vec<f64>> = (0..n)
                    .map(|_| (0..n).map(|_| rng.random_range(-5.0..10.0)).collect())
                    .collect();
                let a = assign(&cost).unwrap();
                assert_valid(&cost, &a);
                let best = brute_force(&cost);
                assert!(
                    (a.total_cost - best).abs() < 1e-9,
                    "n={n}: {} vs {best}",
                    a.total_cost
                );
            }
        }
    }

    #[test]
    fn matches_brute_force_with_many_ties() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for n in 1..=7 {
            for _ in 0..30 {
                let cost: Vec<Vec<f64>> = (0..n)
                    .map(|_| {
                        (0..n)
                            .map(|_| f64::from(rng.random_range(0..3u8)))
                            .collect()
                    })
                    .collect();
                let a = assign(&cost).unwrap();
                assert_valid(&cost, &a);
                assert_eq!(a.total_cost, brute_force(&cost), "{cost:?}");
            }
        }
        let flat = vec![vec![0.25; 5]; 5];
        let a = assign(&flat).unwrap();
        assert_valid(&flat, &a);
        assert_eq!(a.total_cost, 1.25);
    }

    #[test]
    fn identity_costs_give_the_identity_permutation() {
        // Zero on the diagonal, one elsewhere: each reconstruction is its own image.
        let n = 6;
        let cost: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| if i == j { 0.0 } else { 1.0 }).collect())
            .collect();
        let a = assign(&cost).unwrap();
        assert_eq!(a.permutation, (0..n).collect::<Vec<_>>());
        assert_eq!(a.total_cost, 0.0);
        // The identity matrix as costs: the diagonal is the only place to avoid.
        let identity: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
            .collect();
        let a = assign(&identity).unwrap();
        assert_valid(&identity, &a);
        assert_eq!(a.total_cost, 0.0);
        assert!(a.permutation.iter().enumerate().all(|(i, &j)| i != j));
    }

    #[test]
    fn hand_example() {
        // Taking the cheapest entry first, (1,1) = 0, forces a total of 6; the unique optimum
        // is (0,1) + (1,0) + (2,2) = 1 + 2 + 2 = 5.
        let cost = vec![
            vec![4.0, 1.0, 3.0],
            vec![2.0, 0.0, 5.0],
            vec![3.0, 2.0, 2.0],
        ];
        let a = assign(&cost).unwrap();
        assert_eq!(a.permutation, vec![1, 0, 2]);
        assert_eq!(a.total_cost, 5.0);
        let single = assign(&[vec![0.5]]).unwrap();
        assert_eq!((single.permutation, single.total_cost), (vec![0], 0.5));
    }

    #[test]
    fn invalid_matrices_are_errors() {
        assert!(matches!(assign(&[]), Err(AttackError::Empty { .. })));
        let rectangular = vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]];
        let err = assign(&rectangular).unwrap_err();
        assert!(
            matches!(
                err,
                AttackError::NotSquare {
                    rows: 2,
                    row: 0,
                    len: 3
                }
            ),
            "{err}"
        );
        let ragged = vec![vec![1.0, 2.0], vec![3.0]];
        assert!(matches!(
            assign(&ragged),
            Err(AttackError::NotSquare { row: 1, .. })
        ));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let cost = vec![vec![1.0, 2.0], vec![3.0, bad]];
            let err = assign(&cost).unwrap_err();
            assert!(
                matches!(
                    err,
                    AttackError::NonFiniteCost {
                        row: 1,
                        column: 1,
                        ..
                    }
                ),
                "{err}"
            );
        }
        let huge = vec![vec![f64::MAX, -f64::MAX], vec![-f64::MAX, f64::MAX]];
        assert!(matches!(assign(&huge), Err(AttackError::CostOverflow)));
    }
}
