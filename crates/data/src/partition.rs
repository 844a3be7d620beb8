//! Splitting a training set among federated clients.
//!
//! How data is spread over clients shapes every federated result, so the three schemes used
//! in the literature are provided — IID, Dirichlet label skew and label-sorted shards — all
//! seeded, and all assigning every sample to exactly one client so that no sample is lost or
//! shared. Schemes are plain values that parse from the command line (`dirichlet:0.5`) and
//! serialise as the same string, so a run's configuration records them verbatim.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rand::distr::Open01;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::{rng, Purpose};

/// How to split samples among clients.
///
/// Parses from and prints as `iid`, `dirichlet:<alpha>` and `shards:<per_client>`; serde
/// uses the same strings.
///
/// ```
/// use synfed_data::Partition;
///
/// let scheme: Partition = "dirichlet:0.5".parse()?;
/// assert_eq!(scheme, Partition::Dirichlet { alpha: 0.5 });
/// assert_eq!(scheme.to_string(), "dirichlet:0.5");
/// # Ok::<(), synfed_data::DataError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Partition {
    /// `iid`: a uniformly random split into shares whose sizes differ by at most one.
    Iid,
    /// `dirichlet:<alpha>`: label skew (Hsu et al., 2019). For each class, the clients'
    /// shares of that class are drawn from a symmetric Dirichlet(α). Small α gives each
    /// client few classes, large α approaches IID. Client sizes vary, and for very small α a
    /// client may receive no samples at all.
    Dirichlet {
        /// Concentration, > 0; smaller is more skewed.
        alpha: f64,
    },
    /// `shards:<per_client>`: pathological non-IID (McMahan et al., 2017). Samples sorted by
    /// label are cut into `n_clients × per_client` near-equal shards and each client gets
    /// `per_client` random shards, hence about `per_client` classes (a shard can straddle
    /// two classes).
    Shards {
        /// Shards given to each client.
        per_client: usize,
    },
}

impl Partition {
    /// Why the parameters are out of range, if they are.
    fn check(&self) -> std::result::Result<(), String> {
        match *self {
            Self::Dirichlet { alpha } if !(alpha.is_finite() && alpha > 0.0) => {
                Err(format!("alpha must be a finite number > 0, got {alpha}"))
            }
            Self::Shards { per_client: 0 } => Err("shards per client must be at least 1".into()),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Iid => f.write_str("iid"),
            Self::Dirichlet { alpha } => write!(f, "dirichlet:{alpha}"),
            Self::Shards { per_client } => write!(f, "shards:{per_client}"),
        }
    }
}

impl FromStr for Partition {
    type Err = DataError;

    /// Parses `iid`, `dirichlet:<alpha>` or `shards:<per_client>` (scheme name case-insensitive).
    fn from_str(spec: &str) -> Result<Self> {
        let fail = |reason: String| DataError::InvalidPartition {
            spec: spec.to_owned(),
            reason,
        };
        let trimmed = spec.trim();
        let (kind, arg) = match trimmed.split_once(':') {
            Some((kind, arg)) => (kind.trim(), Some(arg.trim())),
            None => (trimmed, None),
        };
        let scheme = match (kind.to_ascii_lowercase().as_str(), arg) {
            ("iid", None) => Self::Iid,
            ("iid", Some(_)) => return Err(fail("`iid` takes no parameter".into())),
            ("dirichlet", Some(arg)) => Self::Dirichlet {
                alpha: arg
                    .parse()
                    .map_err(|_| fail(format!("alpha `{arg}` is not a number")))?,
            },
            ("shards", Some(arg)) => Self::Shards {
                per_client: arg.parse().map_err(|_| {
                    fail(format!(
                        "shards per client `{arg}` is not a positive integer"
                    ))
                })?,
            },
            ("dirichlet", None) => return Err(fail("missing alpha, e.g. `dirichlet:0.5`".into())),
            ("shards", None) => {
                return Err(fail("missing shards per client, e.g. `shards:2`".into()))
            }
            _ => return Err(fail(format!("unknown scheme `{kind}`"))),
        };
        scheme.check().map_err(fail)?;
        Ok(scheme)
    }
}

impl TryFrom<String> for Partition {
    type Error = DataError;

    fn try_from(spec: String) -> Result<Self> {
        spec.parse()
    }
}

impl From<Partition> for String {
    fn from(scheme: Partition) -> Self {
        scheme.to_string()
    }
}

/// Assigns each of the `labels.len()` samples to one of `n_clients` clients.
///
/// Returns one index list per client, each sorted ascending; together they hold every index
/// in `0..labels.len()` exactly once. The assignment is determined by `seed`.
/// Errors: `n_clients` is 0 or exceeds the number of samples, the scheme's parameters are out
/// of range, or there are fewer samples than shards.
pub fn partition(
    labels: &[u32],
    n_clients: usize,
    scheme: &Partition,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    scheme
        .check()
        .map_err(|reason| DataError::InvalidPartition {
            spec: scheme.to_string(),
            reason,
        })?;
    if n_clients == 0 || n_clients > labels.len() {
        return Err(DataError::invalid_argument(
            "n_clients",
            format!(
                "need between 1 and {} clients (one per sample at most), got {n_clients}",
                labels.len()
            ),
        ));
    }
    let mut rng = rng(seed, Purpose::Partition);
    let mut clients = match *scheme {
        Partition::Iid => iid(labels.len(), n_clients, &mut rng),
        Partition::Dirichlet { alpha } => dirichlet(labels, n_clients, alpha, &mut rng)?,
        Partition::Shards { per_client } => shards(labels, n_clients, per_client, &mut rng)?,
    };
    for client in &mut clients {
        client.sort_unstable();
    }
    Ok(clients)
}

/// A random permutation cut into `n_clients` shares whose sizes differ by at most one.
fn iid(n: usize, n_clients: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    (0..n_clients)
        .map(|i| order[even_start(n, n_clients, i)..even_start(n, n_clients, i + 1)].to_vec())
        .collect()
}

/// Per class: shuffle its samples, draw client proportions from Dirichlet(α), and hand out
/// consecutive runs whose ends are the rounded cumulative proportions.
fn dirichlet(
    labels: &[u32],
    n_clients: usize,
    alpha: f64,
    rng: &mut impl Rng,
) -> Result<Vec<Vec<usize>>> {
    let sampler = LogGamma::new(alpha)?;
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (index, &label) in labels.iter().enumerate() {
        by_class.entry(label).or_default().push(index);
    }
    let mut clients = vec![Vec::new(); n_clients];
    for members in by_class.values_mut() {
        members.shuffle(rng);
        let proportions = sampler.dirichlet(n_clients, rng);
        let total = members.len();
        let (mut start, mut cumulative) = (0, 0.0);
        for (client, p) in clients.iter_mut().zip(proportions) {
            cumulative += p;
            let end = ((cumulative * total as f64).round() as usize).clamp(start, total);
            client.extend_from_slice(&members[start..end]);
            start = end;
        }
        // Rounding can leave the last few samples unassigned; they go to the last client.
        if let Some(last) = clients.last_mut() {
            last.extend_from_slice(&members[start..]);
        }
    }
    Ok(clients)
}

/// Label-sorted samples cut into `n_clients × per_client` near-equal shards, dealt out at
/// random, `per_client` to each client.
fn shards(
    labels: &[u32],
    n_clients: usize,
    per_client: usize,
    rng: &mut impl Rng,
) -> Result<Vec<Vec<usize>>> {
    let n = labels.len();
    let n_shards = n_clients
        .checked_mul(per_client)
        .filter(|&s| s <= n)
        .ok_or_else(|| {
            DataError::invalid_argument(
                "n_clients",
                format!("{n_clients} clients × {per_client} shards exceed the {n} samples"),
            )
        })?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| labels[i]);
    let mut shard_ids: Vec<usize> = (0..n_shards).collect();
    shard_ids.shuffle(rng);
    Ok(shard_ids
        .chunks(per_client)
        .map(|ids| {
            ids.iter()
                .flat_map(|&s| &order[even_start(n, n_shards, s)..even_start(n, n_shards, s + 1)])
                .copied()
                .collect()
        })
        .collect())
}

/// Start of part `i` when `n` items are cut into `parts` runs whose sizes differ by at most
/// one (the first `n % parts` runs are one longer).
fn even_start(n: usize, parts: usize, i: usize) -> usize {
    i * (n / parts) + i.min(n % parts)
}

/// Samples Dirichlet(α, …, α) vectors through Gamma(α) variates kept in log space.
///
/// The textbook construction normalises independent Gamma(α) draws, but for α < 1 those are
/// Gamma(α + 1)·U^(1/α), which underflows to 0 for small α (U^(1/0.01) = U^100), leaving
/// 0/0. Taking logs — ln Gamma(α + 1) + ln(U)/α — and normalising with a log-sum-exp keeps
/// every proportion finite for any α > 0.
struct LogGamma {
    alpha: f64,
    gamma: Gamma<f64>,
}

impl LogGamma {
    fn new(alpha: f64) -> Result<Self> {
        let shape = if alpha < 1.0 { alpha + 1.0 } else { alpha };
        let gamma = Gamma::new(shape, 1.0).map_err(|e| DataError::InvalidPartition {
            spec: Partition::Dirichlet { alpha }.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self { alpha, gamma })
    }

    /// ln of one Gamma(α, 1) variate.
    fn sample_ln(&self, rng: &mut impl Rng) -> f64 {
        let ln_g = self.gamma.sample(rng).ln();
        if self.alpha < 1.0 {
            let u: f64 = rng.sample(Open01);
            ln_g + u.ln() / self.alpha
        } else {
            ln_g
        }
    }

    /// One draw from the symmetric Dirichlet over `k` components.
    fn dirichlet(&self, k: usize, rng: &mut impl Rng) -> Vec<f64> {
        let logs: Vec<f64> = (0..k).map(|_| self.sample_ln(rng)).collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = logs.iter().map(|&l| (l - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        weights.into_iter().map(|w| w / sum).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per_class` samples of each of `classes` classes, interleaved.
    fn balanced(classes: u32, per_class: usize) -> Vec<u32> {
        (0..per_class).flat_map(|_| 0..classes).collect()
    }

    fn class_counts(labels: &[u32], client: &[usize], classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &i in client {
            counts[labels[i] as usize] += 1;
        }
        counts
    }

    fn assert_exact_cover(clients: &[Vec<usize>], n: usize) {
        let mut all: Vec<usize> = clients.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
        for client in clients {
            assert!(client.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        }
    }

    fn schemes() -> [Partition; 5] {
        [
            Partition::Iid,
            Partition::Dirichlet { alpha: 0.05 },
            Partition::Dirichlet { alpha: 1.0 },
            Partition::Dirichlet { alpha: 1000.0 },
            Partition::Shards { per_client: 2 },
        ]
    }

    #[test]
    fn every_index_assigned_exactly_once() {
        let labels = balanced(10, 101);
        for scheme in schemes() {
            for n_clients in [1, 3, 10, 50] {
                let clients = partition(&labels, n_clients, &scheme, 9).unwrap();
                assert_eq!(clients.len(), n_clients, "{scheme}");
                assert_exact_cover(&clients, labels.len());
            }
        }
    }

    #[test]
    fn deterministic_per_seed() {
        let labels = balanced(10, 50);
        for scheme in schemes() {
            let a = partition(&labels, 7, &scheme, 1).unwrap();
            assert_eq!(a, partition(&labels, 7, &scheme, 1).unwrap(), "{scheme}");
            assert_ne!(a, partition(&labels, 7, &scheme, 2).unwrap(), "{scheme}");
        }
    }

    #[test]
    fn iid_sizes_and_class_balance() {
        let labels = balanced(10, 600);
        let clients = partition(&labels, 10, &Partition::Iid, 3).unwrap();
        for client in &clients {
            assert_eq!(client.len(), 600);
            for count in class_counts(&labels, client, 10) {
                let fraction = count as f64 / client.len() as f64;
                assert!((fraction - 0.1).abs() < 0.05, "{fraction}");
            }
        }
        let sizes: Vec<usize> = partition(&labels, 7, &Partition::Iid, 3)
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    }

    #[test]
    fn shards_limit_classes_per_client() {
        // Shards align with classes: exactly `per_client` classes at most.
        let labels = balanced(10, 600);
        let clients = partition(&labels, 10, &Partition::Shards { per_client: 2 }, 5).unwrap();
        for client in &clients {
            assert_eq!(client.len(), 600);
            let classes = class_counts(&labels, client, 10)
                .iter()
                .filter(|&&c| c > 0)
                .count();
            assert!(classes <= 2, "{classes}");
        }
        // Misaligned shards may straddle two classes each.
        let labels = balanced(10, 97);
        let clients = partition(&labels, 12, &Partition::Shards { per_client: 2 }, 5).unwrap();
        let classes: Vec<usize> = clients
            .iter()
            .map(|c| {
                class_counts(&labels, c, 10)
                    .iter()
                    .filter(|&&k| k > 0)
                    .count()
            })
            .collect();
        assert!(classes.iter().all(|&k| k <= 4), "{classes:?}");
        let mean = classes.iter().sum::<usize>() as f64 / classes.len() as f64;
        assert!(mean <= 3.0, "{mean}");
    }

    /// Mean over non-empty clients of the largest single-class fraction.
    fn mean_max_class_fraction(alpha: f64) -> f64 {
        let labels = balanced(10, 500);
        let clients = partition(&labels, 20, &Partition::Dirichlet { alpha }, 11).unwrap();
        let fractions: Vec<f64> = clients
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| {
                let counts = class_counts(&labels, c, 10);
                *counts.iter().max().unwrap() as f64 / c.len() as f64
            })
            .collect();
        fractions.iter().sum::<f64>() / fractions.len() as f64
    }

    #[test]
    fn dirichlet_alpha_controls_skew() {
        let skewed = mean_max_class_fraction(0.1);
        let mild = mean_max_class_fraction(1.0);
        let uniform = mean_max_class_fraction(1000.0);
        assert!(skewed > 0.5, "α=0.1: {skewed}");
        assert!(uniform < 0.15, "α=1000: {uniform}");
        assert!(skewed > mild && mild > uniform, "{skewed} {mild} {uniform}");
    }

    #[test]
    fn dirichlet_tiny_alpha_stays_finite() {
        let sampler = LogGamma::new(1e-3).unwrap();
        let mut rng = rng(0, Purpose::Partition);
        for _ in 0..100 {
            let p = sampler.dirichlet(50, &mut rng);
            assert!(p.iter().all(|x| x.is_finite() && *x >= 0.0));
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        let labels = balanced(10, 20);
        let clients = partition(&labels, 5, &Partition::Dirichlet { alpha: 1e-3 }, 0).unwrap();
        assert_exact_cover(&clients, labels.len());
    }

    #[test]
    fn sparse_and_large_labels() {
        let labels = [4_000_000_000, 7, 7, 4_000_000_000, 0];
        let clients = partition(&labels, 2, &Partition::Dirichlet { alpha: 0.5 }, 0).unwrap();
        assert_exact_cover(&clients, labels.len());
    }

    #[test]
    fn invalid_arguments() {
        let labels = balanced(2, 5);
        assert!(partition(&labels, 0, &Partition::Iid, 0).is_err());
        assert!(partition(&labels, 11, &Partition::Iid, 0).is_err());
        assert!(partition(&[], 1, &Partition::Iid, 0).is_err());
        assert!(partition(&labels, 6, &Partition::Shards { per_client: 2 }, 0).is_err());
        assert!(partition(
            &labels,
            2,
            &Partition::Shards {
                per_client: usize::MAX
            },
            0
        )
        .is_err());
        let err = partition(&labels, 2, &Partition::Dirichlet { alpha: -1.0 }, 0).unwrap_err();
        assert!(matches!(err, DataError::InvalidPartition { .. }), "{err}");
        assert!(partition(&labels, 2, &Partition::Dirichlet { alpha: f64::NAN }, 0).is_err());
        assert!(partition(&labels, 2, &Partition::Shards { per_client: 0 }, 0).is_err());
    }

    #[test]
    fn parse_display_round_trip() {
        for (spec, scheme) in [
            ("iid", Partition::Iid),
            ("dirichlet:0.5", Partition::Dirichlet { alpha: 0.5 }),
            ("dirichlet:0.1", Partition::Dirichlet { alpha: 0.1 }),
            ("dirichlet:1", Partition::Dirichlet { alpha: 1.0 }),
            ("dirichlet:0.0001", Partition::Dirichlet { alpha: 1e-4 }),
            ("shards:2", Partition::Shards { per_client: 2 }),
        ] {
            assert_eq!(spec.parse::<Partition>().unwrap(), scheme);
            assert_eq!(scheme.to_string(), spec);
        }
        assert_eq!(" IID ".parse::<Partition>().unwrap(), Partition::Iid);
        assert_eq!(
            "Dirichlet: 2.5".parse::<Partition>().unwrap(),
            Partition::Dirichlet { alpha: 2.5 }
        );
    }

    #[test]
    fn parse_errors_are_clear() {
        let reason = |spec: &str| match spec.parse::<Partition>() {
            Err(DataError::InvalidPartition { reason, .. }) => reason,
            other => panic!("{spec}: {other:?}"),
        };
        assert_eq!(reason("random"), "unknown scheme `random`");
        assert_eq!(reason("iid:3"), "`iid` takes no parameter");
        assert_eq!(reason("dirichlet"), "missing alpha, e.g. `dirichlet:0.5`");
        assert_eq!(reason("dirichlet:abc"), "alpha `abc` is not a number");
        assert!(reason("dirichlet:0").contains("> 0"));
        assert!(reason("dirichlet:-1").contains("> 0"));
        assert!(reason("dirichlet:inf").contains("finite"));
        assert_eq!(
            reason("shards"),
            "missing shards per client, e.g. `shards:2`"
        );
        assert!(reason("shards:-2").contains("not a positive integer"));
        assert!(reason("shards:0").contains("at least 1"));
        let msg = "bogus".parse::<Partition>().unwrap_err().to_string();
        assert!(
            msg.contains("`iid`, `dirichlet:<alpha>` or `shards:<per_client>`"),
            "{msg}"
        );
    }

    #[test]
    fn serde_uses_the_spec_string() {
        let scheme = Partition::Dirichlet { alpha: 0.5 };
        let json = serde_json::to_string(&scheme).unwrap();
        assert_eq!(json, "\"dirichlet:0.5\"");
        assert_eq!(serde_json::from_str::<Partition>(&json).unwrap(), scheme);
        assert!(serde_json::from_str::<Partition>("\"shards:0\"").is_err());
    }
}
