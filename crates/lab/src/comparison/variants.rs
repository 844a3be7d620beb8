//! The rows of a comparison: the method sets compared, and the controls without which a
//! difference from `none` could not be told from a side effect. Weight splitting makes a split
//! unit move Γ× faster and leaves 1/Γ as many distinct units, so a splitting set is matched by
//! `none` at lr × Γ and at width / Γ; defences are run with the sets they are combined with.

use super::config::CompareConfig;
use serde::{Deserialize, Serialize};
use synfed_synapse::{FuzzyPlacement, MethodSet};

/// What distinguishes one row of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// As shown in tables: `I+III`, `none lr×2`, `none width/2`, `none + dp:C=1,sigma=0.5`.
    pub label: String,
    pub methods: MethodSet,
    pub defence: String,
    pub lr: f64,
    /// Divides every model's width (the width-matched control).
    pub width_divisor: usize,
    /// `method`, `lr-control`, `width-control` or `defence`.
    pub role: String,
    /// Where fuzzy learning rates act (`client` only for sets with I; absent in the files of
    /// comparisons from before the option: `server`).
    #[serde(default, skip_serializing_if = "is_server")]
    pub fuzzy_at: FuzzyPlacement,
}

fn is_server(placement: &FuzzyPlacement) -> bool {
    *placement == FuzzyPlacement::Server
}

impl Variant {
    /// Whether the clients scale their gradients by private fuzzy factors (I at the clients).
    pub fn client_factors(&self) -> bool {
        self.methods.fuzzy && self.fuzzy_at == FuzzyPlacement::Client
    }

    /// A file-name-safe form of the label.
    pub fn slug(&self) -> String {
        self.label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .replace('×', "x")
    }
}

/// The rows of the comparison, in report order.
pub fn variants(c: &CompareConfig) -> Vec<Variant> {
    let plain = |methods: MethodSet, role: &str| Variant {
        label: methods.to_string(),
        methods,
        defence: "none".into(),
        lr: c.lr,
        width_divisor: 1,
        role: role.into(),
        fuzzy_at: FuzzyPlacement::Server,
    };
    let mut out = Vec::new();
    for m in &c.methods {
        if !m.fuzzy {
            out.push(plain(*m, "method"));
            continue;
        }
        // a set with I once per placement; the server's keeps the plain label
        for &at in &c.fuzzy_at {
            out.push(match at {
                FuzzyPlacement::Server => plain(*m, "method"),
                FuzzyPlacement::Client => Variant {
                    label: format!("{m} @client"),
                    fuzzy_at: at,
                    ..plain(*m, "method")
                },
            });
        }
    }
    let mut factors = c.lr_factors.clone();
    if c.methods.iter().any(|m| m.splitting) && !factors.contains(&(c.gamma as f64)) {
        factors.push(c.gamma as f64);
    }
    for f in factors {
        out.push(Variant {
            label: format!("none lr×{f}"),
            lr: c.lr * f,
            ..plain(MethodSet::NONE, "lr-control")
        });
    }
    if c.width_matched && c.methods.iter().any(|m| m.splitting) && c.gamma > 1 {
        out.push(Variant {
            label: format!("none width/{}", c.gamma),
            width_divisor: c.gamma,
            ..plain(MethodSet::NONE, "width-control")
        });
    }
    for d in &c.defences {
        for m in &c.defended {
            out.push(Variant {
                label: format!("{m} + {d}"),
                defence: d.clone(),
                ..plain(*m, "defence")
            });
        }
    }
    out
}

/// Whether two variants' untrained cells compute bit-identical results: fuzzy learning rates
/// (I) at the server and rejuvenation (II) act on optimizer steps, and the learning rate only
/// on steps, so before any step the model (its weights are drawn from a stream of their own),
/// the captured gradient and the attack (same seed) are the same as without them. Only weight
/// splitting (III), the width and I at the clients (which scales the sent gradient) change
/// the untrained cell.
pub fn untrained_twin(a: &Variant, b: &Variant) -> bool {
    a.client_factors() == b.client_factors()
        && a.methods.splitting == b.methods.splitting
        && a.width_divisor == b.width_divisor
        && a.defence == b.defence
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comparison::grid::grid;

    #[test]
    fn variants_include_the_controls() {
        let c = CompareConfig {
            methods: vec!["none".parse().unwrap(), "III".parse().unwrap()],
            defences: vec!["prune:p=0.1".into()],
            lr_factors: vec![0.5],
            ..CompareConfig::default()
        };
        let labels: Vec<String> = variants(&c).into_iter().map(|v| v.label).collect();
        assert_eq!(
            labels,
            [
                "none",
                "III",
                "none lr×0.5",
                "none lr×2",
                "none width/2",
                "none + prune:p=0.1"
            ]
        );
        let v = variants(&c);
        assert_eq!(v[3].lr, 0.2);
        assert_eq!(v[4].width_divisor, 2);
        assert_eq!(grid(&c).len(), 6);
        assert!(v
            .iter()
            .all(|v| !v.slug().contains('/') && !v.slug().contains(' ')));
        // without splitting there is nothing to match
        let c = CompareConfig {
            methods: vec!["I".parse().unwrap()],
            ..CompareConfig::default()
        };
        let labels: Vec<String> = variants(&c).into_iter().map(|v| v.label).collect();
        assert_eq!(labels, ["I", "none lr×0.5"]);
    }

    #[test]
    fn sets_with_fuzzy_rates_run_once_per_placement_and_client_rows_are_not_twins() {
        let c = CompareConfig {
            methods: ["none", "I", "II", "I+III"]
                .iter()
                .map(|m| m.parse().unwrap())
                .collect(),
            fuzzy_at: vec![FuzzyPlacement::Server, FuzzyPlacement::Client],
            lr_factors: vec![],
            width_matched: false,
            ..CompareConfig::default()
        };
        let v = variants(&c);
        let labels: Vec<&str> = v.iter().map(|v| v.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "none",
                "I",
                "I @client",
                "II",
                "I+III",
                "I+III @client",
                "none lr×2"
            ]
        );
        assert_eq!(v[2].fuzzy_at, FuzzyPlacement::Client);
        assert!(v[2].client_factors() && !v[1].client_factors());
        assert_eq!(v[2].slug(), "I__client");
        // I at the server acts on steps only: its untrained cell is `none`'s; at the clients
        // it scales the gradient the server sees, so it is nobody's twin
        assert!(untrained_twin(&v[0], &v[1]));
        assert!(!untrained_twin(&v[0], &v[2]));
        assert!(!untrained_twin(&v[4], &v[5]));
        // the default configuration names no placement in its saved form
        let text = toml::to_string(&CompareConfig::default()).unwrap();
        assert!(!text.contains("fuzzy_at"), "{text}");
        let text = toml::to_string(&c).unwrap();
        assert!(
            text.contains("fuzzy_at = [\"server\", \"client\"]"),
            "{text}"
        );
        let json = serde_json::to_string(&v[1]).unwrap();
        assert!(!json.contains("fuzzy_at"), "{json}");
    }
}
