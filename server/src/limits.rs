//! The `[limits]` table: how much a peer may make the server hold, and for how long.
//!
//! Tokens bound *who* may join; these bound *how much* any peer, with or without a token, can
//! take: entries in the registry, time a registration lives without a call, time an upload may
//! stall, and HTTP/2 streams per connection. The per-stream byte and message budgets of an
//! upload follow from the model itself (`synfed_wire::chunks::StreamBudget`) and need no
//! setting. None of these fields changes what a run computes, so none is part of a
//! checkpoint's fingerprint.

use serde::{Deserialize, Serialize};

/// What a peer may make the server hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Registered clients at most; a Register beyond gets `RESOURCE_EXHAUSTED`.
    pub max_clients: usize,
    /// A registered client with no call (Register, PullTask, FetchModel, PushUpdate,
    /// Heartbeat) for this long is forgotten; if it was sampled, it is dropped from the open
    /// round. Must exceed `timing.pull_timeout_s` and `timing.heartbeat_interval_s`, the
    /// longest an honest client stays silent.
    pub registration_ttl_s: f64,
    /// An upload that delivers no message for this long is cut (`DEADLINE_EXCEEDED`); the
    /// client may send it again before the round's deadline, which cuts any upload still open.
    pub stall_timeout_s: f64,
    /// Concurrent HTTP/2 streams one connection may open (an honest client needs two: a push
    /// and a poll).
    pub max_streams_per_connection: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_clients: 10_000,
            registration_ttl_s: 300.0,
            stall_timeout_s: 20.0,
            max_streams_per_connection: 8,
        }
    }
}

impl LimitsConfig {
    /// Checks ranges and consistency with the run's timing; the error names the field.
    pub fn validate(&self, timing: &crate::config::TimingConfig) -> Result<(), String> {
        if self.max_clients == 0 || self.max_clients > 1_000_000 {
            return Err(format!(
                "limits.max_clients must be between 1 and 1000000, got {}",
                self.max_clients
            ));
        }
        for (name, v) in [
            ("registration_ttl_s", self.registration_ttl_s),
            ("stall_timeout_s", self.stall_timeout_s),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e7) {
                return Err(format!(
                    "limits.{name} must be a positive number of seconds, got {v}"
                ));
            }
        }
        let silent = timing.pull_timeout_s.max(timing.heartbeat_interval_s);
        if self.registration_ttl_s <= silent {
            return Err(format!(
                "limits.registration_ttl_s ({} s) must exceed timing.pull_timeout_s and \
                 timing.heartbeat_interval_s ({silent} s): honest clients are silent that long",
                self.registration_ttl_s
            ));
        }
        if !(1..=1024).contains(&self.max_streams_per_connection) {
            return Err(format!(
                "limits.max_streams_per_connection must be between 1 and 1024, got {}",
                self.max_streams_per_connection
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TimingConfig;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        let timing = TimingConfig::default();
        LimitsConfig::default().validate(&timing).unwrap();
        let cases: [(fn(&mut LimitsConfig), &str); 5] = [
            (|l| l.max_clients = 0, "limits.max_clients"),
            (
                |l| l.registration_ttl_s = f64::NAN,
                "limits.registration_ttl_s",
            ),
            (|l| l.registration_ttl_s = 20.0, "timing.pull_timeout_s"),
            (|l| l.stall_timeout_s = -1.0, "limits.stall_timeout_s"),
            (
                |l| l.max_streams_per_connection = 0,
                "limits.max_streams_per_connection",
            ),
        ];
        for (break_it, field) in cases {
            let mut limits = LimitsConfig::default();
            break_it(&mut limits);
            let err = limits.validate(&timing).unwrap_err();
            assert!(err.contains(field), "{err}");
        }
    }
}
