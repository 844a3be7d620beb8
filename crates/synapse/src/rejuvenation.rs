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

/// Values a weight tensor can hold on the host.
pub trait WeightValue: Copy + candle_core::WithDType {
    fn weight_f64(self) -> f64;
    fn from_weight_f64(v: f64) -> Self;
}

impl WeightValue for f32 {
    fn weight_f64(self) -> f64 {
        self as f64
    }
    fn from_weight_f64(v: f64) -> Self {
        v as f32
    }
}

impl WeightValue for f64 {
    fn weight_f64(self) -> f64 {
        self
    }
    fn from_weight_f64(v: f64) -> Self {
        v
    }
}

/// Tabulated P_re over z = |w|/σ ∈ [0, Z_MAX], to decide most draws without evaluating Φ.
///
/// P_re is decreasing in z, so for z in bin [z_i, z_i+1] it lies between the bin's end values:
/// u below the lower one resets, u above the upper one does not, and only draws between the
/// two (a fraction ≈ the bin's width times the density) need the exact function. The decision
/// is therefore exact, at a few nanoseconds per weight.
struct ResetTable {
    inv_step: f64,
    p: Vec<f64>,
}

const Z_MAX: f64 = 8.0;
const BINS: usize = 2048;

impl ResetTable {
    fn get() -> &'static ResetTable {
        static TABLE: std::sync::OnceLock<ResetTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            let step = Z_MAX / BINS as f64;
            ResetTable {
                inv_step: 1.0 / step,
                p: (0..=BINS)
                    .map(|i| reset_probability(i as f64 * step, 1.0))
                    .collect(),
            }
        })
    }

    /// Whether a weight at z = |w|/σ is reset by the uniform draw `u`: u < 1 − Φ(z).
    fn resets(&self, z: f64, u: f64) -> bool {
        let bin = (z * self.inv_step) as usize;
        let (upper, lower) = if bin < BINS {
            (self.p[bin], self.p[bin + 1])
        } else {
            (self.p[BINS], 0.0)
        };
        if u >= upper {
            false
        } else if u < lower {
            true
        } else {
            u < reset_probability(z, 1.0)
        }
    }
}

/// Rejuvenates `values` in place; returns how many were reset.
///
/// `d_re` is the rejuvenation distance factor; `fresh` draws a new value. One uniform draw
/// per weight, in order, then the new values of the reset ones as they occur.
pub fn rejuvenate_values<T: WeightValue, R: Rng + ?Sized>(
    values: &mut [T],
    d_re: f64,
    rng: &mut R,
    mut fresh: impl FnMut(&mut R) -> f64,
) -> usize {
    let max = values
        .iter()
        .fold(0.0f64, |m, w| m.max(w.weight_f64().abs()));
    let sigma = max / d_re;
    let inv_sigma = if sigma > 0.0 { 1.0 / sigma } else { 0.0 };
    let table = ResetTable::get();
    let mut reset = 0;
    for w in values.iter_mut() {
        // 32 random bits per weight: u ∈ [0, 1) on a grid of 2⁻³².
        let u = rng.next_u32() as f64 * (1.0 / 4_294_967_296.0);
        if table.resets(w.weight_f64().abs() * inv_sigma, u) {
            *w = T::from_weight_f64(fresh(rng));
            reset += 1;
        }
    }
    reset
}

/// Rejuvenates one synaptic weight tensor; returns how many weights were reset.
pub fn rejuvenate<R: Rng + ?Sized>(param: &Param, d_re: f64, rng: &mut R) -> Result<usize> {
    match param.var.dtype() {
        DType::F64 => rejuvenate_as::<f64, R>(param, d_re, rng),
        _ => rejuvenate_as::<f32, R>(param, d_re, rng),
    }
}

fn rejuvenate_as<T: WeightValue, R: Rng + ?Sized>(
    param: &Param,
    d_re: f64,
    rng: &mut R,
) -> Result<usize> {
    let var = &param.var;
    let mut values = var.flatten_all()?.to_dtype(T::DTYPE)?.to_vec1::<T>()?;
    if let Some(bad) = values.iter().find(|w| !w.weight_f64().is_finite()) {
        return Err(SynapseError::BadParameter {
            name: param.name.clone(),
            problem: format!(
                "holds a non-finite weight ({}); training diverged",
                bad.weight_f64()
            ),
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
    fn the_table_decides_exactly_like_the_formula() {
        let table = ResetTable::get();
        let mut rng = crate::rng::stream(13, 2);
        for _ in 0..200_000 {
            let z: f64 = rng.random_range(0.0..10.0);
            let u: f64 = rng.random::<f64>() * 0.6;
            assert_eq!(
                table.resets(z, u),
                u < reset_probability(z, 1.0),
                "z {z} u {u}"
            );
        }
        // the boundaries of a bin
        for z in [0.0, Z_MAX, Z_MAX / BINS as f64, 3.0] {
            let p = reset_probability(z, 1.0);
            assert!(table.resets(z, p * 0.999_999));
            assert!(!table.resets(z, p));
        }
    }

    #[test]
    fn the_largest_weight_is_reset_with_16_percent_at_d_re_1() {
        let mut rng = crate::rng::stream(12, 2);
        let trials = 100_000;
        let hits: usize = (0..trials)
            .map(|_| rejuvenate_values(&mut [1.0f64], 1.0, &mut rng, |_| 0.0))
            .sum();
        let rate = hits as f64 / trials as f64;
        assert!((rate - 0.1587).abs() < 0.005, "{rate}");
    }
}
