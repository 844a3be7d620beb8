//! A defence's specification: what a client does to its update before it leaves — none, DP
//! clipping with Gaussian noise, pruning, or both — as one value with one text form, parsed,
//! checked and printed here, for the client that applies it, the server that checks a run's
//! configuration and the comparison that accounts for its privacy.
//!
//! Text forms (also the serde form):
//!
//! * `none`;
//! * `dp:C=1,sigma=0.5`: per-batch clipping — the global L2 norm of the whole update over all
//!   trainable tensors is clipped to `C` — then N(0, σ²C²) noise added to every element
//!   (`σ` is accepted for `sigma`);
//! * `dp:C=1,sigma=0.5,per-example`: DP-SGD proper (Abadi et al. 2016) — each example's
//!   gradient is clipped to `C`, the clipped gradients summed, N(0, σ²C²) added and the sum
//!   divided by the batch size. FedSGD only: a FedAvg difference is clipped per batch;
//! * `prune:p=0.1`: keep the `⌈p·n⌉` largest magnitudes of each trainable tensor, zero the rest;
//! * combinations joined by `+`, e.g. `dp:C=1,sigma=0.5+prune:p=0.2`, always applied in the
//!   order clip → noise → prune.
//!

use std::fmt;
use std::str::FromStr;

/// What is wrong with a defence's text or values.
#[derive(Debug, thiserror::Error)]
pub enum DefenceError {
    #[error("an empty defence (write `none` for no defence)")]
    Empty,
    #[error("`none` cannot be combined with other defences")]
    NoneCombined,
    #[error(
        "unknown defence `{0}` (expected `none`, `dp:C=…,sigma=…[,per-example]` or `prune:p=…`)"
    )]
    UnknownKind(String),
    #[error("`{kind}` appears twice")]
    Repeated { kind: &'static str },
    #[error("unknown key `{key}` of `{kind}` (expected {expected})")]
    UnknownKey {
        kind: &'static str,
        key: String,
        expected: &'static str,
    },
    #[error("`{kind}` needs `{key}=…`")]
    MissingKey {
        kind: &'static str,
        key: &'static str,
    },
    #[error("`{key}` is given twice")]
    RepeatedKey { key: String },
    #[error("`{key}={value}` is not a number")]
    NotANumber { key: String, value: String },
    #[error("the clipping norm C must be a positive number, got {0}")]
    Clip(f64),
    #[error("the noise multiplier sigma must be a number ≥ 0, got {0}")]
    Sigma(f64),
    #[error("the pruning fraction p must be in (0, 1], got {0}")]
    Fraction(f64),
}

pub type Result<T, E = DefenceError> = std::result::Result<T, E>;

/// Clipping and Gaussian noise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dp {
    /// C: the L2 norm the update (or each example's gradient) is clipped to.
    pub clip: f64,
    /// σ: the noise multiplier; the noise's standard deviation is σC.
    pub sigma: f64,
    /// Clip each example's gradient (FedSGD) rather than the whole update.
    pub per_example: bool,
}

/// Gradient pruning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prune {
    /// p: the fraction of each tensor's elements kept (the largest magnitudes).
    pub keep: f64,
}

/// A client's defence: none, DP clipping + noise, pruning, or DP then pruning.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Defence {
    pub dp: Option<Dp>,
    pub prune: Option<Prune>,
}

impl Defence {
    /// No defence.
    pub const NONE: Defence = Defence {
        dp: None,
        prune: None,
    };

    /// Whether it leaves updates unchanged.
    pub fn is_none(&self) -> bool {
        self.dp.is_none() && self.prune.is_none()
    }

    /// Whether FedSGD gradients are clipped per example.
    pub fn per_example(&self) -> bool {
        self.dp.is_some_and(|d| d.per_example)
    }

    /// Checks the ranges (what [`FromStr`] checks; for values built in code).
    pub fn validate(&self) -> Result<()> {
        if let Some(dp) = self.dp {
            if !(dp.clip.is_finite() && dp.clip > 0.0) {
                return Err(DefenceError::Clip(dp.clip));
            }
            if !(dp.sigma.is_finite() && dp.sigma >= 0.0) {
                return Err(DefenceError::Sigma(dp.sigma));
            }
        }
        if let Some(prune) = self.prune {
            if !(prune.keep > 0.0 && prune.keep <= 1.0) {
                return Err(DefenceError::Fraction(prune.keep));
            }
        }
        Ok(())
    }

    /// The defence a run's text asks for, where an empty text (a task from a server that
    /// predates defences, an unset field) means none.
    pub fn parse_or_none(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            Ok(Defence::NONE)
        } else {
            text.parse()
        }
    }
}

impl fmt::Display for Defence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        let mut parts = Vec::new();
        if let Some(dp) = self.dp {
            let mut s = format!("dp:C={},sigma={}", dp.clip, dp.sigma);
            if dp.per_example {
                s.push_str(",per-example");
            }
            parts.push(s);
        }
        if let Some(prune) = self.prune {
            parts.push(format!("prune:p={}", prune.keep));
        }
        f.write_str(&parts.join("+"))
    }
}

fn number(key: &str, value: &str) -> Result<f64> {
    value
        .trim()
        .parse::<f64>()
        .map_err(|_| DefenceError::NotANumber {
            key: key.into(),
            value: value.into(),
        })
}

fn parse_dp(args: &str) -> Result<Dp> {
    const KIND: &str = "dp";
    let (mut clip, mut sigma, mut per_example) = (None, None, false);
    for item in args.split(',').map(str::trim) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (item, None),
        };
        let slot = match (key, value) {
            ("per-example" | "per_example", None) => {
                if per_example {
                    return Err(DefenceError::RepeatedKey { key: key.into() });
                }
                per_example = true;
                continue;
            }
            ("C" | "c", Some(_)) => &mut clip,
            ("sigma" | "σ", Some(_)) => &mut sigma,
            _ => {
                return Err(DefenceError::UnknownKey {
                    kind: KIND,
                    key: item.into(),
                    expected: "`C=…`, `sigma=…` and optionally `per-example`",
                })
            }
        };
        if slot.is_some() {
            return Err(DefenceError::RepeatedKey { key: key.into() });
        }
        *slot = Some(number(key, value.unwrap_or_default())?);
    }
    let clip = clip.ok_or(DefenceError::MissingKey {
        kind: KIND,
        key: "C",
    })?;
    let sigma = sigma.ok_or(DefenceError::MissingKey {
        kind: KIND,
        key: "sigma",
    })?;
    Ok(Dp {
        clip,
        sigma,
        per_example,
    })
}

fn parse_prune(args: &str) -> Result<Prune> {
    const KIND: &str = "prune";
    let mut keep = None;
    for item in args.split(',').map(str::trim) {
        match item.split_once('=') {
            Some((k, v)) if k.trim() == "p" => {
                if keep.is_some() {
                    return Err(DefenceError::RepeatedKey { key: "p".into() });
                }
                keep = Some(number("p", v)?);
            }
            _ => {
                return Err(DefenceError::UnknownKey {
                    kind: KIND,
                    key: item.into(),
                    expected: "`p=…`",
                })
            }
        }
    }
    Ok(Prune {
        keep: keep.ok_or(DefenceError::MissingKey {
            kind: KIND,
            key: "p",
        })?,
    })
}

impl FromStr for Defence {
    type Err = DefenceError;

    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Err(DefenceError::Empty);
        }
        if text.eq_ignore_ascii_case("none") {
            return Ok(Defence::NONE);
        }
        let mut defence = Defence::NONE;
        for part in text.split('+').map(str::trim) {
            if part.eq_ignore_ascii_case("none") {
                return Err(DefenceError::NoneCombined);
            }
            let (kind, args) = part
                .split_once(':')
                .ok_or_else(|| DefenceError::UnknownKind(part.into()))?;
            match kind.trim() {
                "dp" => {
                    if defence.dp.is_some() {
                        return Err(DefenceError::Repeated { kind: "dp" });
                    }
                    defence.dp = Some(parse_dp(args)?);
                }
                "prune" => {
                    if defence.prune.is_some() {
                        return Err(DefenceError::Repeated { kind: "prune" });
                    }
                    defence.prune = Some(parse_prune(args)?);
                }
                _ => return Err(DefenceError::UnknownKind(part.into())),
            }
        }
        defence.validate()?;
        Ok(defence)
    }
}

impl serde::Serialize for Defence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Defence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for (text, expected) in [
            ("none", Defence::NONE),
            (
                "dp:C=1,sigma=0.5",
                Defence {
                    dp: Some(Dp {
                        clip: 1.0,
                        sigma: 0.5,
                        per_example: false,
                    }),
                    prune: None,
                },
            ),
            (
                "dp:C=1,sigma=0.5,per-example",
                Defence {
                    dp: Some(Dp {
                        clip: 1.0,
                        sigma: 0.5,
                        per_example: true,
                    }),
                    prune: None,
                },
            ),
            (
                "prune:p=0.1",
                Defence {
                    dp: None,
                    prune: Some(Prune { keep: 0.1 }),
                },
            ),
            (
                "dp:C=1,sigma=0.5+prune:p=0.2",
                Defence {
                    dp: Some(Dp {
                        clip: 1.0,
                        sigma: 0.5,
                        per_example: false,
                    }),
                    prune: Some(Prune { keep: 0.2 }),
                },
            ),
        ] {
            let parsed: Defence = text.parse().unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_string(), text);
            assert_eq!(parsed.to_string().parse::<Defence>().unwrap(), parsed);
        }
        // Other spellings of the same defences.
        let a: Defence = " prune:p=0.2 + dp:σ=0.5, C=1 ".parse().unwrap();
        assert_eq!(a.to_string(), "dp:C=1,sigma=0.5+prune:p=0.2");
        assert_eq!("NONE".parse::<Defence>().unwrap(), Defence::NONE);
        let b: Defence = "dp:per-example,sigma=1.25,C=0.1".parse().unwrap();
        assert_eq!(b.to_string(), "dp:C=0.1,sigma=1.25,per-example");
        assert_eq!(b.to_string().parse::<Defence>().unwrap(), b);
        assert!(b.per_example());
        // serde: as a string.
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"dp:C=1,sigma=0.5+prune:p=0.2\"");
        assert_eq!(serde_json::from_str::<Defence>(&json).unwrap(), a);
        assert!(serde_json::from_str::<Defence>("\"dp:C=0,sigma=1\"").is_err());
    }

    #[test]
    fn bad_text_gives_typed_errors() {
        use DefenceError as E;
        let err = |s: &str| s.parse::<Defence>().unwrap_err();
        assert!(matches!(err(""), E::Empty));
        assert!(matches!(err("none+prune:p=0.1"), E::NoneCombined));
        assert!(matches!(err("dp:C=0,sigma=1"), E::Clip(c) if c == 0.0));
        assert!(matches!(err("dp:C=-1,sigma=1"), E::Clip(_)));
        assert!(matches!(err("dp:C=inf,sigma=1"), E::Clip(_)));
        assert!(matches!(err("dp:C=1,sigma=-0.1"), E::Sigma(_)));
        assert!(matches!(err("dp:C=1,sigma=NaN"), E::Sigma(_)));
        assert!(matches!(err("prune:p=0"), E::Fraction(_)));
        assert!(matches!(err("prune:p=1.5"), E::Fraction(_)));
        assert!(matches!(err("prune:p=-0.1"), E::Fraction(_)));
        assert!(matches!(
            err("dp:C=1,sigma=1,noise=2"),
            E::UnknownKey { kind: "dp", .. }
        ));
        assert!(matches!(
            err("prune:q=0.1"),
            E::UnknownKey { kind: "prune", .. }
        ));
        assert!(matches!(err("dp:C=1"), E::MissingKey { key: "sigma", .. }));
        assert!(matches!(err("dp:sigma=1"), E::MissingKey { key: "C", .. }));
        assert!(matches!(err("dp:C=1,C=2,sigma=1"), E::RepeatedKey { .. }));
        assert!(matches!(err("dp:C=one,sigma=1"), E::NotANumber { .. }));
        assert!(matches!(
            err("prune:p=0.1+prune:p=0.2"),
            E::Repeated { kind: "prune" }
        ));
        assert!(matches!(err("laplace:b=1"), E::UnknownKind(_)));
        assert!(matches!(err("dp"), E::UnknownKind(_)));
        // Messages name the problem.
        assert!(err("dp:C=0,sigma=1").to_string().contains("C must be"));
        assert!(err("prune:p=2").to_string().contains("(0, 1]"));
    }

    #[test]
    fn empty_text_means_none() {
        assert_eq!(Defence::parse_or_none("").unwrap(), Defence::NONE);
        assert_eq!(Defence::parse_or_none("  ").unwrap(), Defence::NONE);
        assert_eq!(
            Defence::parse_or_none("prune:p=0.5").unwrap().prune,
            Some(Prune { keep: 0.5 })
        );
        assert!(matches!(
            Defence::parse_or_none("prune:p=5"),
            Err(DefenceError::Fraction(_))
        ));
    }
}
