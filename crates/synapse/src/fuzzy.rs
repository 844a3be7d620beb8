//! (I) Fuzzy learning rates, paper §3.1, Eq. 1–2.
//!
//! Every synapse (element of a Linear or Conv2d weight; never a bias or a BatchNorm parameter)
//! gets a constant factor η̂ drawn once when the model is created, and the SGD step becomes
//! w ← w − η · ∇w ⊙ η̂ (applied in [`SynapticSgd`](crate::SynapticSgd)).
//!
//! We follow the paper's text, η̂ ~ U(1 − τ/2, 1 + τ/2). The authors' released code
//! (`CeadeS/pytorch_bio_transformations`) draws from U(1 − τ, 1 + τ) instead, i.e. twice as
//! wide; pass 2τ to reproduce it.

use rand::Rng;

/// `n` factors from U(1 − τ/2, 1 + τ/2) (Eq. 2).
pub fn draw_factors<R: Rng + ?Sized>(n: usize, tau: f64, rng: &mut R) -> Vec<f64> {
    let (lo, hi) = (1.0 - tau / 2.0, 1.0 + tau / 2.0);
    (0..n).map(|_| rng.random_range(lo..=hi)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_lie_in_range_with_mean_one_and_uniform_variance() {
        let tau = 0.09;
        let f = draw_factors(200_000, tau, &mut crate::rng::stream(3, 1));
        assert!(f
            .iter()
            .all(|x| (1.0 - tau / 2.0..=1.0 + tau / 2.0).contains(x)));
        let mean = f.iter().sum::<f64>() / f.len() as f64;
        assert!((mean - 1.0).abs() < 3e-4, "mean {mean}");
        // U(a, b) has variance (b − a)² / 12 = τ² / 12.
        let var = f.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f.len() as f64;
        assert!((var / (tau * tau / 12.0) - 1.0).abs() < 0.02, "var {var}");
        // the whole range is used, not a narrower one
        let (min, max) = f
            .iter()
            .fold((2.0f64, 0.0f64), |(a, b), x| (a.min(*x), b.max(*x)));
        assert!(min < 1.0 - 0.99 * tau / 2.0 && max > 1.0 + 0.99 * tau / 2.0);
    }

    #[test]
    fn factors_are_reproducible_from_the_seed() {
        let a = draw_factors(100, 0.09, &mut crate::rng::stream(5, 1));
        let b = draw_factors(100, 0.09, &mut crate::rng::stream(5, 1));
        let c = draw_factors(100, 0.09, &mut crate::rng::stream(6, 1));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
