//! Seeded k-fold splits of sample indices.
//!
//! Membership-inference and hyper-parameter experiments hold out part of the training data.
//! [`kfold`] shuffles `0..n` once from the seed and cuts the permutation into `k` holdouts of
//! near-equal size; fold `i` trains on everything outside holdout `i`.

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::{rng, Purpose};

/// One fold: the indices to train on and the disjoint indices held out. Both are sorted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    /// Indices to train on.
    pub train: Vec<usize>,
    /// Indices held out (for validation or as non-members).
    pub holdout: Vec<usize>,
}

/// Splits `0..n` into `k` folds determined by `seed`.
///
/// The `k` holdouts are disjoint, cover every index, and differ in size by at most one;
/// each fold's `train` is the complement of its holdout.
///
/// `k = 1` means "no cross-validation": a single fold that trains on all indices with an
/// empty holdout. `k = 0` and `k > n` (which would leave a holdout empty) are errors.
pub fn kfold(n: usize, k: usize, seed: u64) -> Result<Vec<Fold>> {
    if k == 0 {
        return Err(DataError::invalid_argument("k", "k-fold needs k ≥ 1"));
    }
    if k == 1 {
        return Ok(vec![Fold {
            train: (0..n).collect(),
            holdout: Vec::new(),
        }]);
    }
    if k > n {
        return Err(DataError::invalid_argument(
            "k",
            format!("{k} folds need at least {k} samples, got {n}"),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng(seed, Purpose::KFold));
    // Holdout i is order[start(i)..start(i + 1)]; the first n % k holdouts get one extra.
    let start = |i: usize| i * (n / k) + i.min(n % k);
    let folds = (0..k)
        .map(|i| {
            let mut holdout = order[start(i)..start(i + 1)].to_vec();
            let mut train = [&order[..start(i)], &order[start(i + 1)..]].concat();
            holdout.sort_unstable();
            train.sort_unstable();
            Fold { train, holdout }
        })
        .collect();
    Ok(folds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdouts_partition_all_indices() {
        for (n, k) in [(10, 3), (100, 5), (7, 7), (1000, 10), (11, 2)] {
            let folds = kfold(n, k, 42).unwrap();
            assert_eq!(folds.len(), k);
            let mut all: Vec<usize> = folds.iter().flat_map(|f| f.holdout.clone()).collect();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>(), "n={n} k={k}");
            let sizes: Vec<usize> = folds.iter().map(|f| f.holdout.len()).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "{sizes:?}");
            for fold in &folds {
                assert_eq!(fold.train.len() + fold.holdout.len(), n);
                assert!(fold
                    .train
                    .iter()
                    .all(|i| fold.holdout.binary_search(i).is_err()));
            }
        }
    }

    #[test]
    fn deterministic_per_seed_and_shuffled() {
        assert_eq!(kfold(50, 5, 1).unwrap(), kfold(50, 5, 1).unwrap());
        assert_ne!(kfold(50, 5, 1).unwrap(), kfold(50, 5, 2).unwrap());
        let first = &kfold(50, 5, 1).unwrap()[0].holdout;
        assert_ne!(
            first,
            &(0..10).collect::<Vec<_>>(),
            "holdout is not a contiguous block"
        );
    }

    #[test]
    fn k_one_trains_on_everything() {
        let folds = kfold(5, 1, 0).unwrap();
        assert_eq!(
            folds,
            [Fold {
                train: vec![0, 1, 2, 3, 4],
                holdout: vec![]
            }]
        );
    }

    #[test]
    fn invalid_k() {
        assert!(matches!(
            kfold(5, 0, 0),
            Err(DataError::InvalidArgument { name: "k", .. })
        ));
        assert!(kfold(3, 4, 0).is_err());
        assert_eq!(kfold(0, 1, 0).unwrap()[0].train.len(), 0);
    }
}
