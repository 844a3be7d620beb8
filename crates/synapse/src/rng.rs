//! Seeded random streams.
//!
//! candle's CPU generator cannot be seeded, so every random draw of synfed comes from a
//! `ChaCha8Rng` seeded with the run's seed. Independent purposes use independent ChaCha
//! *streams* of the same seed, so that e.g. turning fuzzy learning rates on does not change the
//! initial weights: cells of a comparison differ only in what is compared.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Stream of the initial parameter values.
pub const STREAM_INIT: u64 = 0;
/// Stream of the fuzzy learning-rate factors (I).
pub const STREAM_FUZZY: u64 = 1;
/// Stream of weight rejuvenation (II): which weights are reset and their new values.
pub const STREAM_REJUVENATION: u64 = 2;

/// The generator for `stream` of `seed`.
pub fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: Vec<u32> = (0..4).map(|_| stream(7, STREAM_INIT).random()).collect();
        assert!(a.iter().all(|x| *x == a[0]));
        let mut init = stream(7, STREAM_INIT);
        let mut fuzzy = stream(7, STREAM_FUZZY);
        let x: [u64; 4] = std::array::from_fn(|_| init.random());
        let y: [u64; 4] = std::array::from_fn(|_| fuzzy.random());
        assert_ne!(x, y);
    }
}
