//! What a client needs to know: where the server is, who it is, which data it holds.

use crate::error::{ClientError, Result};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use synfed_data::Partition;

/// This client's share of a data set: part `index` of `count` under `scheme`, drawn with
/// `seed` (every client of a federation must use the same `count`, `scheme` and `seed`, so
/// that their shares are disjoint).
#[derive(Clone, Debug, PartialEq)]
pub struct Share {
    pub index: usize,
    pub count: usize,
    pub scheme: Partition,
    pub seed: u64,
}

impl Share {
    /// Parses `k/N` (k counted from 0).
    pub fn parse(text: &str, scheme: Partition, seed: u64) -> Result<Self> {
        let bad = || {
            ClientError::Config(format!(
                "partition `{text}` is not of the form k/N with 0 ≤ k < N"
            ))
        };
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index = usize::from_str(k.trim()).map_err(|_| bad())?;
        let count = usize::from_str(n.trim()).map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self {
            index,
            count,
            scheme,
            seed,
        })
    }
}

/// TLS towards the server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientTls {
    /// PEM CA certificate that signed the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key (mutual TLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name to verify the server certificate against (default: the URL's host).
    pub domain: Option<String>,
}

/// Reconnection with exponential backoff.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
    /// Give up after failing this long without reaching the server.
    pub give_up_after: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            give_up_after: Duration::from_secs(120),
        }
    }
}

/// Where a simulated client keeps the truth of its updates (for scoring attacks).
#[derive(Clone, Debug, PartialEq)]
pub struct EscrowConfig {
    pub dir: PathBuf,
    /// Rounds to escrow (empty: every round).
    pub rounds: Vec<u64>,
}

/// Everything a client needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`.
    pub server: String,
    pub name: String,
    /// Bearer token, when the server requires one.
    pub token: Option<String>,
    /// Data set name (`demo-mnist`, `mnist`, …): must be the run's.
    pub dataset: String,
    /// Directory of full data sets.
    pub data_dir: Option<PathBuf>,
    pub share: Share,
    pub tls: Option<ClientTls>,
    pub retry: Retry,
    pub escrow: Option<EscrowConfig>,
    /// Stop after this many accepted updates without telling the server, as a host that
    /// crashed or lost its network would (fault injection; `None`: run to the end).
    pub stop_after_updates: Option<usize>,
    /// Seed of this client's private fuzzy factors, used when the run places fuzzy learning
    /// rates at the clients (`training.fuzzy_at = "client"`): a secret the client keeps.
    /// `None`: derived from the run's seed and the client's name
    /// ([`synfed_synapse::fuzzy_placement::client_seed`]), reproducible but not secret.
    pub fuzzy_seed: Option<u64>,
}

impl ClientConfig {
    /// A client `name` of `server` holding `share` of `dataset`, with default retry, no TLS,
    /// no token, no escrow, running to the end of the run.
    pub fn new(
        server: impl Into<String>,
        name: impl Into<String>,
        dataset: impl Into<String>,
        share: Share,
    ) -> Self {
        Self {
            server: server.into(),
            name: name.into(),
            token: None,
            dataset: dataset.into(),
            data_dir: None,
            share,
            tls: None,
            retry: Retry::default(),
            escrow: None,
            stop_after_updates: None,
            fuzzy_seed: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shares() {
        let s = Share::parse("2/5", Partition::Iid, 3).unwrap();
        assert_eq!((s.index, s.count), (2, 5));
        for bad in ["5/5", "1", "a/3", "1/0", "-1/3"] {
            assert!(Share::parse(bad, Partition::Iid, 3).is_err(), "{bad}");
        }
    }
}
