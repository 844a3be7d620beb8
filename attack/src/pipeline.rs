//! From an intercepted [`Capture`] to a reconstruction: rebuild the attacker's own copy of the
//! model from the capture (so nothing the scoring relies on is ever mutated), take the labels
//! the scenario exposes or recover them, and run the inversion.

use crate::error::{AttackError, Result};
use crate::inversion::{reconstruct, InversionConfig, Reconstruction, Target};
use crate::labels::recover_labels;
use candle_core::{DType, Device, Tensor};
use synfed_models::Model;
use synfed_wire::{Capture, UpdateKind};

/// How to attack a capture.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AttackConfig {
    pub inversion: InversionConfig,
    /// Use the labels stored in the capture when it exposes them (otherwise always recover).
    pub use_exposed_labels: bool,
}

/// The outcome of attacking one capture.
pub struct Attack {
    /// The attacker's model at the capture's global parameters.
    pub model: Model,
    /// Labels the reconstruction used.
    pub labels: Vec<u32>,
    /// Whether they were recovered from the gradient (not exposed).
    pub labels_recovered: bool,
    pub reconstruction: Reconstruction,
}

/// Per-channel range of normalised pixels: [(0 − m)/s, (1 − m)/s].
pub fn pixel_bounds(mean: &[f32], std: &[f32]) -> Vec<(f64, f64)> {
    mean.iter()
        .zip(std)
        .map(|(m, s)| ((0.0 - *m as f64) / *s as f64, (1.0 - *m as f64) / *s as f64))
        .collect()
}

/// Attacks a FedSGD capture. `on_iteration(trial, iteration, objective)` reports progress.
pub fn attack_capture(
    capture: &Capture,
    config: &AttackConfig,
    device: &Device,
    on_iteration: impl FnMut(usize, usize, f64),
) -> Result<Attack> {
    let meta = &capture.meta;
    if meta.kind == UpdateKind::FedAvg {
        return Err(AttackError::BadOption(
            "FedAvg captures (several local steps) are not supported yet: attack FedSGD captures"
                .into(),
        ));
    }
    let model = capture.model(DType::F32, device)?;
    let gradient = capture.update_in_param_order(&model)?;
    let (labels, labels_recovered) = match (&meta.labels, config.use_exposed_labels) {
        (Some(exposed), true) => (exposed.clone(), false),
        _ => (recover_labels(&gradient, meta.batch_size)?, true),
    };
    let input = meta.spec.input;
    let target = Target {
        model: &model,
        gradient,
        labels: Tensor::new(labels.as_slice(), device)?,
        mode: meta.mode,
        bounds: pixel_bounds(&meta.normalization.mean, &meta.normalization.std),
    };
    let shape = [meta.batch_size, input.channels, input.height, input.width];
    let reconstruction = reconstruct(&target, shape, &config.inversion, on_iteration)?;
    Ok(Attack {
        model,
        labels,
        labels_recovered,
        reconstruction,
    })
}
