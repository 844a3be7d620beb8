//! The mechanisms' hyper-parameters with the paper's defaults (§4.2: τ = 0.09, d_re = 14, Γ = 2).

use crate::error::{Result, SynapseError};

/// Hyper-parameters of the three mechanisms.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hyper {
    /// τ: width of the fuzzy-factor distribution U(1 − τ/2, 1 + τ/2) (Eq. 2).
    pub tau: f64,
    /// d_re: rejuvenation distance factor, σ_re = max|w| / d_re (Eq. 4).
    pub d_re: f64,
    /// Γ: number of synapses per connection in weight splitting (Eq. 5).
    pub gamma: usize,
}

impl Default for Hyper {
    fn default() -> Self {
        Self {
            tau: 0.09,
            d_re: 14.0,
            gamma: 2,
        }
    }
}

impl Hyper {
    /// Checks the ranges in which the mechanisms are defined.
    pub fn validate(&self) -> Result<()> {
        if !(self.tau.is_finite() && (0.0..2.0).contains(&self.tau)) {
            return Err(SynapseError::BadHyper {
                name: "tau",
                value: self.tau,
                reason: "must lie in [0, 2) so that every fuzzy factor is positive",
            });
        }
        if !(self.d_re.is_finite() && self.d_re > 0.0) {
            return Err(SynapseError::BadHyper {
                name: "d_re",
                value: self.d_re,
                reason: "must be a positive number",
            });
        }
        if self.gamma < 1 {
            return Err(SynapseError::BadHyper {
                name: "gamma",
                value: self.gamma as f64,
                reason: "must be at least 1",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers() {
        let h = Hyper::default();
        assert_eq!((h.tau, h.d_re, h.gamma), (0.09, 14.0, 2));
        h.validate().unwrap();
    }

    #[test]
    fn rejects_out_of_range_values() {
        for h in [
            Hyper {
                tau: -0.1,
                ..Default::default()
            },
            Hyper {
                tau: f64::NAN,
                ..Default::default()
            },
            Hyper {
                d_re: 0.0,
                ..Default::default()
            },
            Hyper {
                gamma: 0,
                ..Default::default()
            },
        ] {
            assert!(h.validate().is_err(), "{h:?}");
        }
    }
}
