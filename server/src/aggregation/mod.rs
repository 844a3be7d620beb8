//! Robust aggregation: how a round's updates become one step when some clients lie.
//!
//! synfed's default rule, the example-weighted mean ([`crate::aggregate::OrderedSum`]), is how
//! FedSGD and FedAvg are defined, and it is streamed: no update is kept. But a single client
//! can move it anywhere. One update of 1e38 everywhere makes every weight ±2e37 and the loss
//! NaN, and the example count a client claims sets its share of the step. So:
//!
//! - [`weight`] bounds a client's example weight by what the server asked of it (the task's
//!   batch size × local steps), whatever the client claims, and checks registration claims;
//! - [`norm_bound`] scales each update down to L2 norm C before any rule;
//! - [`median`], [`trimmed_mean`] and [`krum`] (Krum and Multi-Krum) each tolerate a bounded
//!   number of arbitrary updates; [`mean`] is the weighted mean of kept updates (Multi-Krum's
//!   last step).
//!
//! The robust rules need every update of the round at once, flattened to f64 ([`flat`]: all
//! tensors, in the layout's order). That takes n × P × 8 bytes, checked against
//! `aggregation.memory_budget_mib` before anything is allocated ([`check_budget`],
//! [`capacity`]). The engine feeds a [`Collector`]. It streams for the mean and keeps the
//! updates for the other rules, and it computes the rule when the round closes. It always works
//! in the canonical order of the round's sampled clients, so the same seed gives the same bits.

pub mod collector;
pub mod flat;
pub mod krum;
pub mod mean;
pub mod median;
pub mod norm_bound;
pub mod trimmed_mean;
pub mod weight;

pub use crate::config::{AggregationConfig, Rule};
pub use collector::{Closed, Collector};

/// Why a rule could not be computed, or a round's updates could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum AggregationError {
    #[error(
        "aggregation.memory_budget_mib = {budget_mib}: the {rule} rule keeps a round's updates, \
         {clients} clients × {parameters} parameters × 8 bytes = {needed_mib:.1} MiB; the budget \
         holds {capacity} clients (raise the budget, or lower sampling.min_clients / fraction)"
    )]
    OverBudget {
        rule: Rule,
        clients: usize,
        parameters: usize,
        needed_mib: f64,
        budget_mib: u64,
        capacity: usize,
    },
    #[error("{rule} needs at least {needed} updates, got {got}")]
    TooFewUpdates {
        rule: &'static str,
        needed: usize,
        got: usize,
    },
    #[error("an update of {got} values, where the model has {expected}")]
    Length { expected: usize, got: usize },
    #[error("the updates' weights sum to {0}, not a positive number")]
    Weight(f64),
    #[error("`{0}` is not sampled in this round")]
    UnknownClient(String),
    #[error("`{0}` was already added to or dropped from the round")]
    AlreadyResolved(String),
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

/// How many clients' updates one round may keep under `config` for a model of `parameters`
/// values (every tensor of an update); `None` when the rule keeps none (the streamed mean).
pub fn capacity(config: &AggregationConfig, parameters: usize) -> Option<usize> {
    if !config.rule.keeps_updates() {
        return None;
    }
    let per_client = (parameters.max(1) as u64).saturating_mul(8);
    Some(usize::try_from(config.budget_bytes() / per_client).unwrap_or(usize::MAX))
}

/// Checks that a round of `clients` updates of `parameters` values fits the budget of
/// `config` (always true for the streamed mean).
pub fn check_budget(
    config: &AggregationConfig,
    clients: usize,
    parameters: usize,
) -> Result<(), AggregationError> {
    match capacity(config, parameters) {
        Some(capacity) if clients > capacity => Err(AggregationError::OverBudget {
            rule: config.rule,
            clients,
            parameters,
            needed_mib: clients as f64 * parameters as f64 * 8.0 / f64::from(1u32 << 20),
            budget_mib: config.memory_budget_mib,
            capacity,
        }),
        _ => Ok(()),
    }
}

/// Checks that every update has the length of the first; returns it.
pub(crate) fn common_length(updates: &[&[f64]]) -> Result<usize, AggregationError> {
    let expected = updates.first().map_or(0, |u| u.len());
    match updates.iter().find(|u| u.len() != expected) {
        Some(u) => Err(AggregationError::Length {
            expected,
            got: u.len(),
        }),
        None => Ok(expected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_kept_updates_only() {
        let mut config = AggregationConfig {
            memory_budget_mib: 1,
            ..AggregationConfig::default()
        };
        // the streamed mean keeps nothing
        assert_eq!(capacity(&config, 1 << 20), None);
        assert!(check_budget(&config, 1000, 1 << 20).is_ok());
        config.rule = Rule::Median;
        // 1 MiB = 2^20 bytes holds 2^17 f64 values: 8 clients of 2^14 parameters
        assert_eq!(capacity(&config, 1 << 14), Some(8));
        assert!(check_budget(&config, 8, 1 << 14).is_ok());
        let err = check_budget(&config, 9, 1 << 14).unwrap_err().to_string();
        assert!(err.contains("aggregation.memory_budget_mib"), "{err}");
        assert!(err.contains("holds 8 clients"), "{err}");
        assert!(err.contains("1.1 MiB"), "{err}");
    }
}
