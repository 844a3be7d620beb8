//! What a train-mode update reveals about a batch through BatchNorm's running statistics.
//!
//! A client that computes its update with BatchNorm on the batch also moves each layer's
//! running statistics: `after = (1 − m)·before + m·batch`, with momentum `m` (0.1, as in
//! PyTorch) and the batch variance unbiased. The server knows `before` (it sent the global
//! model) and sees `after` in the update, so it can solve for the batch's per-channel mean and
//! unbiased variance exactly. Those statistics are the target of the statistics-matching prior
//! of See-through-Gradients / GradInversion (Yin et al. 2021, "BN exact" in GradAttack); this
//! module holds their recovery, the first half of the `bn-prior` attack (issue 18, item 3).

use crate::error::{AttackError, Result};

/// BatchNorm momentum of `synfed_synapse`'s layers (PyTorch's default).
pub const BATCHNORM_MOMENTUM: f64 = 0.1;

/// One BatchNorm layer's per-channel statistics of the attacked batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatistics {
    /// Per-channel mean of the layer's input over batch and spatial positions.
    pub mean: Vec<f64>,
    /// Per-channel unbiased variance.
    pub variance: Vec<f64>,
}

/// Running statistics of one layer before (global model) and after (client's update) a step.
#[derive(Debug, Clone, Copy)]
pub struct RunningPair<'a> {
    /// Running mean sent by the server.
    pub mean_before: &'a [f32],
    /// Running mean returned by the client.
    pub mean_after: &'a [f32],
    /// Running variance sent by the server.
    pub var_before: &'a [f32],
    /// Running variance returned by the client.
    pub var_after: &'a [f32],
}

/// Solves `after = (1 − m)·before + m·batch` for the batch's statistics of one layer.
///
/// Errors: a momentum outside (0, 1], vectors of different lengths or none, a non-finite value,
/// or running statistics that did not move at all (an eval-mode update carries no batch
/// statistics, and reading it as one would invent them).
pub fn recover(layer: &str, pair: RunningPair<'_>, momentum: f64) -> Result<BatchStatistics> {
    if !(momentum > 0.0 && momentum <= 1.0) {
        return Err(AttackError::BadOption(format!(
            "BatchNorm momentum must be in (0, 1], got {momentum}"
        )));
    }
    let n = pair.mean_before.len();
    if n == 0 {
        return Err(AttackError::Empty {
            what: format!("{layer}: running statistics"),
        });
    }
    for (name, len) in [
        ("running mean after", pair.mean_after.len()),
        ("running variance before", pair.var_before.len()),
        ("running variance after", pair.var_after.len()),
    ] {
        if len != n {
            return Err(AttackError::ShapeMismatch {
                what: format!("{layer}: {name} has {len} channels, the running mean {n}"),
            });
        }
    }
    let solve = |before: &[f32], after: &[f32], what: &str| -> Result<Vec<f64>> {
        before
            .iter()
            .zip(after)
            .enumerate()
            .map(|(c, (&b, &a))| {
                if !b.is_finite() || !a.is_finite() {
                    return Err(AttackError::InvalidArgument(format!(
                        "{layer}: {what} of channel {c} is not finite ({b} → {a})"
                    )));
                }
                Ok((a as f64 - (1.0 - momentum) * b as f64) / momentum)
            })
            .collect()
    };
    let unmoved = pair.mean_before == pair.mean_after && pair.var_before == pair.var_after;
    if unmoved {
        return Err(AttackError::NoSignal(format!(
            "{layer}: the running statistics did not move (an eval-mode update carries no \
             batch statistics)"
        )));
    }
    Ok(BatchStatistics {
        mean: solve(pair.mean_before, pair.mean_after, "running mean")?,
        variance: solve(pair.var_before, pair.var_after, "running variance")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_hand_computed_statistics() {
        // Channel 0: values 1, 3 → mean 2, unbiased variance 2. Channel 1: 0, 4 → 2, 8.
        // Before: mean [0, 1], var [1, 1]. After = 0.9·before + 0.1·batch.
        let stats = recover(
            "bn",
            RunningPair {
                mean_before: &[0.0, 1.0],
                mean_after: &[0.2, 1.1],
                var_before: &[1.0, 1.0],
                var_after: &[1.1, 1.7],
            },
            BATCHNORM_MOMENTUM,
        )
        .unwrap();
        for (got, want) in stats.mean.iter().zip([2.0, 2.0]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        for (got, want) in stats.variance.iter().zip([2.0, 8.0]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn eval_mode_update_is_refused() {
        let pair = RunningPair {
            mean_before: &[0.5],
            mean_after: &[0.5],
            var_before: &[1.0],
            var_after: &[1.0],
        };
        assert!(matches!(
            recover("bn", pair, 0.1),
            Err(AttackError::NoSignal(_))
        ));
    }

    #[test]
    fn mismatched_lengths_and_bad_momentum_are_errors() {
        let pair = RunningPair {
            mean_before: &[0.0, 1.0],
            mean_after: &[0.1],
            var_before: &[1.0, 1.0],
            var_after: &[1.0, 1.0],
        };
        assert!(matches!(
            recover("bn", pair, 0.1),
            Err(AttackError::ShapeMismatch { .. })
        ));
        let ok = RunningPair {
            mean_after: &[0.1, 1.0],
            ..pair
        };
        assert!(matches!(
            recover("bn", ok, 0.0),
            Err(AttackError::BadOption(_))
        ));
    }
}
