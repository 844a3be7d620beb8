//! (II) Weight rejuvenation, paper §3.2, Eq. 3–4.
//!
//! After every optimizer step, each synaptic weight w of a Linear/Conv2d weight tensor is
//! re-initialised with probability P_re = 1 − Φ(|w| / σ_re), σ_re = max|w| / d_re, where Φ is
//! the standard normal CDF: small weights are reset often, large ones rarely (with d_re = 1 the
//! largest weight of a layer is reset with 1 − Φ(1) ≈ 16 %, as the paper says). A reset weight
//! gets a fresh value from its layer's initialisation distribution.
//!
//! We follow the paper's text. The authors' released code resets when |N(0, σ_re)| > |w|, i.e.
//! with probability 2(1 − Φ(|w|/σ_re)), and draws new values from U(−max|w|, max|w|).
//!
//! Draws come from a seeded stream (one uniform per weight, in parameter order), so that a run
//! is reproducible from its seed.

use crate::error::{Result, SynapseError};
use crate::param::Param;
use candle_core::{DType, Device, Tensor};
use rand::Rng;

/// P_re = 1 − Φ(|w| / σ) (Eq. 3). σ = 0 (an all-zero tensor) counts as |w|/σ = 0.
pub fn reset_probability(abs_w: f64, sigma: f64) -> f64 {
    let z = if sigma > 0.0 { abs_w / sigma } else { 0.0 };
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// Rejuvenates `values` in place; returns how many were reset.
///
/// `d_re` is the rejuvenation distance factor; `fresh` draws a new value.
pub fn rejuvenate_values<R: Rng + ?Sized>(
    values: &mut [f64],
    d_re: f64,
    rng: &mut R,
    mut fresh: impl FnMut(&mut R) -> f64,
) -> usize {
    let max = values.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let sigma = max / d_re;
    let mut reset = 0;
    for w in values.iter_mut() {
        let u: f64 = rng.random();
        // 1 − Φ(z) ≤ ½·exp(−z²/2): skip the special function when u is above that bound.
        let z = if sigma > 0.0 { w.abs() / sigma } else { 0.0 };
        if u >= 0.5 * (-0.5 * z * z).exp() {
            continue;
        }
        if u < reset_probability(w.abs(), sigma) {
            *w = fresh(rng);
            reset += 1;
        }
    }
    reset
}

/// Rejuvenates one synaptic weight tensor; returns how many weights were reset.
pub fn rejuvenate<R: Rng + ?Sized>(param: &Param, d_re: f64, rng: &mut R) -> Result<usize> {
    let var = &param.var;
    let mut values = var.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    if let Some(bad) = values.iter().find(|w| !w.is_finite()) {
        return Err(SynapseError::BadParameter {
            name: param.name.clone(),
            problem: format!("holds a non-finite weight ({bad}); training diverged"),
        });
    }
    let init = param.init;
    let reset = rejuvenate_values(&mut values, d_re, rng, |r| init.sample(r));
    if reset > 0 {
        let fresh = Tensor::from_vec(values, var.dims(), &Device::Cpu)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&fresh)?;
    }
    Ok(reset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_matches_the_normal_tail() {
        // Φ(1) = 0.841344746…, Φ(2) = 0.977249868…
        assert!((reset_probability(1.0, 1.0) - 0.158655254).abs() < 1e-8);
        assert!((reset_probability(2.0, 1.0) - 0.022750132).abs() < 1e-8);
        assert_eq!(reset_probability(0.0, 1.0), 0.5);
        assert_eq!(reset_probability(0.3, 0.0), 0.5);
    }

    #[test]
    fn empirical_reset_rate_matches_p_re_at_several_magnitudes() {
        // One tensor holds a single large weight (fixing max|w| = 1, σ = 1/d_re) and many
        // copies of a smaller magnitude; count how often those are reset.
        let d_re = 4.0;
        let mut rng = crate::rng::stream(11, 2);
        for a in [0.0, 0.1, 0.25, 0.5, 1.0] {
            let n = 200_000;
            let mut values = vec![a; n];
            values.push(1.0);
            let sigma = 1.0 / d_re;
            let reset = rejuvenate_values(&mut values[..], d_re, &mut rng, |_| f64::NAN);
            let p = reset_probability(a, sigma);
            let expected = p * n as f64 + reset_probability(1.0, sigma);
            let sd = (n as f64 * p * (1.0 - p)).sqrt().max(1.0);
            assert!(
                (reset as f64 - expected).abs() < 5.0 * sd,
                "|w| = {a}: {reset} resets, expected {expected:.0} ± {sd:.0}"
            );
            assert_eq!(values.iter().filter(|v| v.is_nan()).count(), reset);
        }
    }

    #[test]
    fn the_largest_weight_is_reset_with_16_percent_at_d_re_1() {
        let mut rng = crate::rng::stream(12, 2);
        let trials = 100_000;
        let hits: usize = (0..trials)
            .map(|_| rejuvenate_values(&mut [1.0], 1.0, &mut rng, |_| 0.0))
            .sum();
        let rate = hits as f64 / trials as f64;
        assert!((rate - 0.1587).abs() < 0.005, "{rate}");
    }
}
