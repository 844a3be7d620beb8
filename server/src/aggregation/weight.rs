//! A client's example weight: what the server asked of it, not what it claims.
//!
//! The weighted mean gives client k the share nₖ / Σ n of the step, and nₖ is the client's
//! word. A client claiming 2^64 − 1 examples made the global step its own vector. The server
//! cannot check a count, but it knows what it asked for. A FedSGD task is one batch of
//! `batch_size`, and a FedAvg task of `local_steps` steps sees at most `batch_size ×
//! local_steps` examples. An update's weight is therefore the claim capped at that bound.
//! Claims are also checked where they are made: at registration a client cannot claim more
//! examples than the data set's training split holds, and an update may not claim zero or
//! more than the client registered.
//!
//! FedAvg over local *epochs* has no such bound. The client trains on its whole share, which
//! only the client knows, so there the weight is bounded by the registration (at most the
//! training split). With untrusted clients, use `local_steps` or a robust rule.

use crate::config::{Algorithm, RunConfig};

/// The most examples one update of `config`'s tasks can have been computed on: the batch size
/// (FedSGD), batch size × local steps (FedAvg with `local_steps`), or `None` (FedAvg with
/// `local_epochs`: the client's share, bounded only by its registration).
pub fn task_bound(config: &RunConfig) -> Option<u64> {
    let batch = config.training.batch_size as u64;
    match config.algorithm {
        Algorithm::FedSgd => Some(batch),
        Algorithm::FedAvg if config.training.local_epochs == 0 => {
            Some(batch.saturating_mul(u64::from(config.training.local_steps)))
        }
        Algorithm::FedAvg => None,
    }
}

/// The weight of an update claiming `claimed` examples (already checked against the
/// registration by [`check_update_claim`]) under the task bound `bound`.
pub fn example_weight(claimed: u64, bound: Option<u64>) -> u64 {
    bound.map_or(claimed, |b| claimed.min(b))
}

/// Checks a registration's example count against the `train_examples` of the run's training
/// split; returns the reason for refusing it.
pub fn check_registration(claimed: u64, train_examples: u64) -> Result<(), String> {
    if claimed == 0 {
        return Err("a client needs at least one example".into());
    }
    if claimed > train_examples {
        return Err(format!(
            "num_examples {claimed} is more than the {train_examples} examples of the data \
             set's training split"
        ));
    }
    Ok(())
}

/// Checks an update's example count against the client's `registered` count; returns the
/// reason for refusing it.
pub fn check_update_claim(claimed: u64, registered: u64) -> Result<(), String> {
    if claimed == 0 || claimed > registered {
        return Err(format!(
            "num_examples {claimed} is not between 1 and the {registered} examples registered"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weight_is_the_claim_capped_by_the_task() {
        let mut config = RunConfig::default();
        config.training.batch_size = 8;
        assert_eq!(task_bound(&config), Some(8));
        assert_eq!(example_weight(5, task_bound(&config)), 5);
        assert_eq!(example_weight(u64::MAX, task_bound(&config)), 8);

        config.algorithm = Algorithm::FedAvg;
        config.training.local_epochs = 0;
        config.training.local_steps = 3;
        assert_eq!(task_bound(&config), Some(24));
        assert_eq!(example_weight(400, task_bound(&config)), 24);
        assert_eq!(example_weight(10, task_bound(&config)), 10);
        config.training.local_steps = u32::MAX;
        config.training.batch_size = usize::MAX;
        assert_eq!(task_bound(&config), Some(u64::MAX), "saturates");

        config.training.local_epochs = 1;
        assert_eq!(task_bound(&config), None);
        assert_eq!(example_weight(400, None), 400);
    }

    #[test]
    fn zero_and_absurd_claims_are_refused() {
        assert!(check_registration(1, 1600).is_ok());
        assert!(check_registration(1600, 1600).is_ok());
        assert!(check_registration(0, 1600).is_err());
        let err = check_registration(u64::MAX, 1600).unwrap_err();
        assert!(err.contains("num_examples 18446744073709551615"), "{err}");
        assert!(err.contains("1600"), "{err}");

        assert!(check_update_claim(8, 100).is_ok());
        assert!(check_update_claim(100, 100).is_ok());
        assert!(check_update_claim(0, 100).is_err());
        let err = check_update_claim(u64::MAX, 100).unwrap_err();
        assert!(err.contains("num_examples"), "{err}");
    }
}
