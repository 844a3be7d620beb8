//! The `bn-prior` attack: Inverting Gradients plus a BatchNorm statistics-matching prior.
//!
//! A client that computes its update with BatchNorm on the batch also moves each layer's
//! running statistics: `after = (1 − m)·before + m·batch`, with momentum `m` (0.1, as in
//! PyTorch) and the batch variance unbiased. The server knows `before` (it sent the global
//! model) and sees `after` in the update, so it can solve for the batch's per-channel mean and
//! unbiased variance exactly. Those statistics are the target of the statistics-matching prior
//! of See-through-Gradients / GradInversion (Yin et al. 2021, "BN exact" in GradAttack):
//!
//! R_BN(x̂) = Σ_l ‖μ_l(x̂) − μ*_l‖² + ‖σ²_l(x̂) − σ²*_l‖²,
//!
//! with μ_l(x̂), σ²_l(x̂) the per-channel mean and unbiased variance of layer l's input in the
//! attacker's train-mode forward pass on the candidates. [`reconstruct`] minimises Inverting
//! Gradients' objective + α·R_BN, with the penalty computed from the same forward pass whose
//! parameter gradients are matched, so its image gradient is exact (through candle's graph,
//! like the rest of the objective). Squared norms, as in DeepInversion's derivation; GradAttack
//! uses plain norms. α defaults to 10⁻³, GradAttack's `bn_reg` of its CIFAR-10 examples.
//!
//! Where the statistics come from is the threat model. [`recover`] reads them from the running
//! statistics before and after a client's train-mode step (the client sends their change with
//! every update); [`exact_statistics`] computes them from the true batch — GradAttack's "BN
//! exact" oracle, an upper bound on what the running statistics can give. A capture keeps the
//! change of the running statistics a client reported ([`synfed_wire::Capture::running`]);
//! [`statistics_of_capture`] recovers every layer's statistics from it, which is what an
//! honest-but-curious server can do. Captures without that change (eval-mode clients, files
//! written before it was kept) leave only the oracle.

use crate::error::{AttackError, Result};
use crate::inversion::{reconstruct_with_prior, InversionConfig, Reconstruction, Target};
use candle_core::{DType, Tensor};
use synfed_models::{BatchNormInput, Model};
use synfed_synapse::kernels::{channel_center, channel_sum};
use synfed_synapse::Mode;

/// Weight α of the statistics penalty by default (GradAttack's `bn_reg` for CIFAR-10).
pub const DEFAULT_ALPHA: f64 = 1e-3;

/// Settings of the `bn-prior` attack beyond Inverting Gradients'.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BnPriorConfig {
    /// Weight α of the statistics penalty in the objective.
    pub alpha: f64,
}

impl Default for BnPriorConfig {
    fn default() -> Self {
        Self {
            alpha: DEFAULT_ALPHA,
        }
    }
}

/// The statistics one named BatchNorm layer should see.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerStatistics {
    /// The layer's name in the model (`blocks.0.bn`).
    pub layer: String,
    pub statistics: BatchStatistics,
}

/// The prior term of the objective: α and every BatchNorm layer's target statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct StatisticsPrior {
    pub alpha: f64,
    pub layers: Vec<LayerStatistics>,
}

/// Per-channel mean `[C]` and unbiased variance `[C]` of a layer input `[B, C, H, W]`, as
/// graph nodes (differentiable in the input). One value per channel gives a variance of 0.
pub fn differentiable_statistics(input: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, _, h, w) = input.dims4()?;
    let n = b * h * w;
    if n == 0 {
        return Err(AttackError::Empty {
            what: "BatchNorm input".into(),
        });
    }
    let mean = (channel_sum(input)? / n as f64)?;
    let centered = channel_center(input, &mean)?;
    let variance = (channel_sum(&centered.sqr()?)? / (n as f64 - 1.0).max(1.0))?;
    Ok((mean, variance))
}

/// R_BN: Σ over `targets` of ‖μ − μ*‖² + ‖σ² − σ²*‖², each layer's statistics taken from its
/// recorded input. Every target layer must have run exactly once, with as many channels as
/// its target.
pub fn statistics_penalty(
    inputs: &[BatchNormInput],
    targets: &[LayerStatistics],
) -> Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for target in targets {
        let mut runs = inputs.iter().filter(|i| i.layer == target.layer);
        let (Some(run), None) = (runs.next(), runs.next()) else {
            return Err(AttackError::ShapeMismatch {
                what: format!(
                    "BatchNorm layer `{}` must normalise with batch statistics exactly once in \
                     the forward pass (it ran {} times)",
                    target.layer,
                    inputs.iter().filter(|i| i.layer == target.layer).count()
                ),
            });
        };
        let (mean, variance) = differentiable_statistics(&run.input)?;
        let c = mean.dims1()?;
        let stats = &target.statistics;
        if stats.mean.len() != c || stats.variance.len() != c {
            return Err(AttackError::ShapeMismatch {
                what: format!(
                    "BatchNorm layer `{}` has {c} channels, its target statistics {} means and \
                     {} variances",
                    target.layer,
                    stats.mean.len(),
                    stats.variance.len()
                ),
            });
        }
        let (device, dtype) = (mean.device().clone(), mean.dtype());
        let constant = |v: &[f64]| -> Result<Tensor> {
            Ok(Tensor::from_slice(v, c, &device)?.to_dtype(dtype)?)
        };
        let term = ((mean - constant(&stats.mean)?)?.sqr()?.sum_all()?
            + (variance - constant(&stats.variance)?)?.sqr()?.sum_all()?)?;
        sum = Some(match sum {
            None => term,
            Some(s) => (s + term)?,
        });
    }
    sum.ok_or_else(|| AttackError::Empty {
        what: "BatchNorm statistics prior: target layers".into(),
    })
}

/// "BN exact": the statistics every BatchNorm layer of `model` computes on the true `images`
/// in a train-mode forward pass (running statistics untouched). Errors for a model without
/// BatchNorm.
pub fn exact_statistics(model: &Model, images: &Tensor) -> Result<Vec<LayerStatistics>> {
    let (_, inputs) =
        model.record_batch_norm_inputs(|| model.forward(images, Mode::TrainFrozenStats))?;
    if inputs.is_empty() {
        return Err(AttackError::NoSignal(format!(
            "{} has no BatchNorm layer, so there are no batch statistics to match",
            model.spec().arch
        )));
    }
    inputs
        .iter()
        .map(|i| {
            let (mean, variance) = differentiable_statistics(&i.input.detach())?;
            let read = |t: Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.to_vec1()?) };
            Ok(LayerStatistics {
                layer: i.layer.clone(),
                statistics: BatchStatistics {
                    mean: read(mean)?,
                    variance: read(variance)?,
                },
            })
        })
        .collect()
}

/// R_BN of candidate images `x` against `targets`, from a train-mode forward pass of `model`.
pub fn penalty_at(model: &Model, x: &Tensor, targets: &[LayerStatistics]) -> Result<Tensor> {
    let (_, inputs) =
        model.record_batch_norm_inputs(|| model.forward(x, Mode::TrainFrozenStats))?;
    statistics_penalty(&inputs, targets)
}

/// Reconstructs a batch of `shape = [B, C, H, W]` from a FedSGD, train-mode target by Inverting
/// Gradients' loop (`inversion`'s settings) with α·R_BN added to its objective.
pub fn reconstruct(
    target: &Target,
    shape: [usize; 4],
    inversion: &InversionConfig,
    config: &BnPriorConfig,
    layers: Vec<LayerStatistics>,
    on_iteration: impl FnMut(usize, usize, f64),
) -> Result<Reconstruction> {
    if !(config.alpha.is_finite() && config.alpha >= 0.0) {
        return Err(AttackError::BadOption(format!(
            "the BatchNorm prior's weight α must be finite and ≥ 0, got {}",
            config.alpha
        )));
    }
    if target.mode == Mode::Eval {
        return Err(AttackError::NoSignal(
            "the client normalised with running statistics (eval mode): its forward pass has \
             no batch statistics to match"
                .into(),
        ));
    }
    let prior = StatisticsPrior {
        alpha: config.alpha,
        layers,
    };
    reconstruct_with_prior(target, shape, inversion, Some(&prior), on_iteration)
}

/// BatchNorm momentum of `synfed_synapse`'s layers (PyTorch's default).
pub const BATCHNORM_MOMENTUM: f64 = 0.1;

/// The statistics of every BatchNorm layer of the capture's model on the client's batch,
/// recovered from the global running statistics and the change the client reported
/// ([`recover`] with [`BATCHNORM_MOMENTUM`]). Errors when the capture carries no such change
/// or a layer's statistics did not move (an eval-mode client).
pub fn statistics_of_capture(capture: &synfed_wire::Capture) -> Result<Vec<LayerStatistics>> {
    if capture.running.is_empty() {
        return Err(AttackError::NoSignal(
            "the capture carries no change of the BatchNorm running statistics (an eval-mode \
             client, a model without BatchNorm, or a capture written without them)"
                .into(),
        ));
    }
    let read = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let mut layers = Vec::new();
    for (name, _) in &capture.running {
        let Some(layer) = name.strip_suffix(".running_mean") else {
            continue;
        };
        let pair = |stat: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            let full = format!("{layer}.{stat}");
            let (before, change) =
                capture
                    .running_pair(&full)
                    .ok_or_else(|| AttackError::ShapeMismatch {
                        what: format!("the capture has no global value or change of `{full}`"),
                    })?;
            let after = read(&(before + change)?)?;
            Ok((read(before)?, after))
        };
        let (mean_before, mean_after) = pair("running_mean")?;
        let (var_before, var_after) = pair("running_var")?;
        layers.push(LayerStatistics {
            layer: layer.to_string(),
            statistics: recover(
                layer,
                RunningPair {
                    mean_before: &mean_before,
                    mean_after: &mean_after,
                    var_before: &var_before,
                    var_after: &var_after,
                },
                BATCHNORM_MOMENTUM,
            )?,
        });
    }
    if layers.is_empty() {
        return Err(AttackError::NoSignal(
            "the capture's running statistics name no BatchNorm layer".into(),
        ));
    }
    Ok(layers)
}

/// One BatchNorm layer's per-channel statistics of the attacked batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
