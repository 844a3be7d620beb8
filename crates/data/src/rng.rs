//! The one place this crate makes random number generators.
//!
//! Experiments must be reproducible from a single `u64` seed, and candle's own RNG cannot be
//! seeded, so every random choice here — batch order, k-fold assignment, client partitions —
//! draws from `ChaCha8Rng::seed_from_u64(seed)`. Each purpose uses its own ChaCha *stream*
//! (a 64-bit nonce), so that, say, the partition and the epoch-3 batch order drawn from the
//! same seed are independent rather than two reads of one sequence.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What the random numbers are for; selects the ChaCha stream.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose {
    /// Shuffling the batch order of one epoch.
    Epoch(u64),
    /// Assigning samples to k-fold holdouts.
    KFold,
    /// Assigning samples to federated clients.
    Partition,
}

impl Purpose {
    /// Epochs use streams with the top bit clear; the fixed purposes use the top bit set.
    fn stream(self) -> u64 {
        const FIXED: u64 = 1 << 63;
        match self {
            Self::Epoch(epoch) => epoch & !FIXED,
            Self::KFold => FIXED | 1,
            Self::Partition => FIXED | 2,
        }
    }
}

/// A ChaCha8 generator for `purpose`, determined entirely by `seed`.
pub(crate) fn rng(seed: u64, purpose: Purpose) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(purpose.stream());
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_seed_and_purpose_repeat() {
        let a: [u64; 4] = rng(7, Purpose::Epoch(3)).random();
        let b: [u64; 4] = rng(7, Purpose::Epoch(3)).random();
        assert_eq!(a, b);
    }

    #[test]
    fn purposes_and_seeds_differ() {
        let draw = |seed, purpose| rng(seed, purpose).random::<u64>();
        let values = [
            draw(7, Purpose::Epoch(0)),
            draw(7, Purpose::Epoch(1)),
            draw(7, Purpose::KFold),
            draw(7, Purpose::Partition),
            draw(8, Purpose::Epoch(0)),
        ];
        for (i, a) in values.iter().enumerate() {
            for b in &values[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
