//! Which registered clients take part in a round.

use crate::seeds::{derive, Purpose};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// How many of `n` registered clients a round samples: `max(min, ⌈fraction·n⌉)`, at most n.
pub fn sample_size(n: usize, fraction: f64, min: usize) -> usize {
    ((fraction * n as f64).ceil() as usize).max(min).min(n)
}

/// Samples `max(min, ⌈fraction·n⌉)` (at most n) of `registered`, seeded by (seed, round).
///
/// `registered` is sorted first, so the choice depends only on the set of clients, never on
/// the order they happened to register in. The result is sorted: the canonical order in which
/// the round's updates are summed.
pub fn sample_clients(
    registered: &[String],
    fraction: f64,
    min: usize,
    seed: u64,
    round: u64,
) -> Vec<String> {
    let mut pool = registered.to_vec();
    pool.sort();
    pool.dedup();
    let n = pool.len();
    let want = sample_size(n, fraction, min);
    let mut rng = ChaCha8Rng::seed_from_u64(derive(seed, Purpose::Sampling, round, ""));
    let mut chosen: Vec<String> = sample(&mut rng, n, want)
        .into_iter()
        .map(|i| pool[i].clone())
        .collect();
    chosen.sort();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i:02}")).collect()
    }

    #[test]
    fn sizes_follow_fraction_and_minimum() {
        assert_eq!(sample_clients(&names(10), 0.3, 1, 7, 1).len(), 3);
        assert_eq!(sample_clients(&names(10), 0.01, 2, 7, 1).len(), 2);
        assert_eq!(sample_clients(&names(3), 0.5, 5, 7, 1).len(), 3);
        assert_eq!(sample_clients(&names(10), 1.0, 1, 7, 1), names(10));
    }

    #[test]
    fn registration_order_does_not_matter_but_round_does() {
        let mut shuffled = names(20);
        shuffled.reverse();
        let a = sample_clients(&names(20), 0.25, 1, 7, 4);
        assert_eq!(a, sample_clients(&shuffled, 0.25, 1, 7, 4));
        let differs = (5..15).any(|r| sample_clients(&names(20), 0.25, 1, 7, r) != a);
        assert!(differs);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
    }
}
