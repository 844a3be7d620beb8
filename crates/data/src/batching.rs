//! Mini-batch order for one epoch, shuffled deterministically from (seed, epoch).
//!
//! Training loops need a fresh order every epoch that is nonetheless reproducible, and
//! resumable from any epoch without replaying the earlier ones. Deriving each epoch's
//! permutation from `(seed, epoch)` alone — rather than from a generator threaded through the
//! run — gives both. [`Batches`] holds the permutation and hands out index slices; turning
//! them into tensors is [`crate::Dataset::batch`]'s job.

use rand::seq::SliceRandom;

use crate::error::{DataError, Result};
use crate::rng::{rng, Purpose};

/// The batches of one epoch: a permutation of a set of sample indices, cut into consecutive
/// batches of `batch_size` (the last batch may be smaller; it is kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batches {
    order: Vec<usize>,
    batch_size: usize,
}

impl Batches {
    /// Shuffles `indices` with a permutation determined by `(seed, epoch)`.
    ///
    /// `indices` is any set of sample indices, e.g. `0..dataset.len()` or one client's share.
    pub fn shuffled(
        indices: impl IntoIterator<Item = usize>,
        batch_size: usize,
        seed: u64,
        epoch: u64,
    ) -> Result<Self> {
        let mut batches = Self::sequential(indices, batch_size)?;
        batches.order.shuffle(&mut rng(seed, Purpose::Epoch(epoch)));
        Ok(batches)
    }

    /// Keeps `indices` in the given order, e.g. for evaluation.
    pub fn sequential(indices: impl IntoIterator<Item = usize>, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::invalid_argument(
                "batch_size",
                "must be at least 1",
            ));
        }
        Ok(Self {
            order: indices.into_iter().collect(),
            batch_size,
        })
    }

    /// The indices in epoch order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The batch size (every batch but possibly the last has exactly this many indices).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Number of batches, counting a final partial one.
    pub fn len(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// Whether there are no batches (no indices).
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The batches in order, as index slices.
    pub fn iter(&self) -> std::slice::Chunks<'_, usize> {
        self.order.chunks(self.batch_size)
    }
}

impl<'a> IntoIterator for &'a Batches {
    type Item = &'a [usize];
    type IntoIter = std::slice::Chunks<'a, usize>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_index_once_and_keep_the_tail() {
        let batches = Batches::shuffled(0..10, 4, 1, 0).unwrap();
        let sizes: Vec<usize> = batches.iter().map(<[usize]>::len).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(batches.len(), 3);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn order_depends_only_on_seed_and_epoch() {
        let order = |seed, epoch| Batches::shuffled(0..100, 8, seed, epoch).unwrap().order;
        assert_eq!(order(3, 5), order(3, 5));
        assert_ne!(order(3, 5), order(3, 6));
        assert_ne!(order(3, 5), order(4, 5));
        assert_ne!(order(3, 5), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn shuffles_an_arbitrary_index_set() {
        let client = [5, 17, 42, 99, 100];
        let batches = Batches::shuffled(client, 2, 0, 0).unwrap();
        let mut seen = batches.order().to_vec();
        seen.sort_unstable();
        assert_eq!(seen, client);
        for batch in &batches {
            assert!(batch.len() <= 2);
        }
    }

    #[test]
    fn sequential_keeps_order() {
        let batches = Batches::sequential(0..5, 2).unwrap();
        let got: Vec<&[usize]> = batches.iter().collect();
        assert_eq!(got, [&[0, 1][..], &[2, 3], &[4]]);
        assert_eq!(batches.batch_size(), 2);
    }

    #[test]
    fn edge_cases() {
        assert!(Batches::shuffled(0..5, 0, 0, 0).is_err());
        let empty = Batches::shuffled(0..0, 3, 0, 0).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(empty.iter().count(), 0);
        let big = Batches::sequential(0..3, 100).unwrap();
        assert_eq!(big.len(), 1);
    }
}
