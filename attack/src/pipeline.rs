//! From an intercepted [`Capture`] to a reconstruction: rebuild the attacker's own copy of the
//! model from the capture (so nothing the scoring relies on is ever mutated), take the labels
//! the scenario exposes or recover them, and run the chosen attacker ([`AttackKind`]). Every
//! attacker goes through this one path and returns the same [`Reconstruction`], so scoring,
//! matching and pictures never depend on which one ran.

use crate::bn_prior::{BnPriorConfig, LayerStatistics};
use crate::dlg::DlgConfig;
use crate::error::{AttackError, Result};
use crate::inversion::{reconstruct, InversionConfig, Reconstruction, Target};
use crate::kind::AttackKind;
use crate::labels::recover_labels;
use crate::{analytic, bn_prior, dlg, imprint_readout};
use candle_core::{DType, Device, Tensor};
use synfed_models::{LocalSteps, Model};
use synfed_wire::{Capture, UpdateKind};

/// How to attack a capture.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AttackConfig {
    /// Which attacker runs (default: Inverting Gradients).
    pub attack: AttackKind,
    /// Inverting Gradients' settings; `analytic` reports its result's gradient distance with
    /// their `distance` and `weighting`.
    pub inversion: InversionConfig,
    /// DLG's settings.
    pub dlg: DlgConfig,
    /// `bn-prior`'s weight of the statistics penalty (its other settings are `inversion`'s).
    pub bn_prior: BnPriorConfig,
    /// `bn-prior`: the client batch's statistics at every BatchNorm layer. Captures do not
    /// carry the client's running statistics, so the caller supplies them ("BN exact",
    /// [`bn_prior::exact_statistics`] of the true batch); without them `bn-prior` is an error.
    #[serde(skip)]
    pub bn_statistics: Option<Vec<LayerStatistics>>,
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

/// Attacks a capture with `config.attack`. `on_iteration(trial, iteration, objective)` reports
/// progress (never called by `analytic`, which does not iterate).
///
/// FedSGD: the candidates' gradient is matched to the observed one, for a batch of
/// `batch_size` images. FedAvg: the client's `local_steps` SGD steps of `local_lr` on batches of
/// `batch_size` are replayed on `examples` candidate images and matched to the observed
/// difference (Geiping et al.'s FedAvg setting); without exposed labels they are recovered
/// from the difference, which points against the summed gradient. `analytic` reads only the
/// first layer's update, which is a weighted sum of the images in both settings; `dlg` matches
/// the replayed difference as Inverting Gradients does. `bn-prior` attacks FedSGD captures of
/// train-mode clients only, with `config.bn_statistics` as its target statistics.
pub fn attack_capture(
    capture: &Capture,
    config: &AttackConfig,
    device: &Device,
    on_iteration: impl FnMut(usize, usize, f64),
) -> Result<Attack> {
    let started = std::time::Instant::now();
    let meta = &capture.meta;
    let model = capture.model(DType::F32, device)?;
    let gradient = capture.update_in_param_order(&model)?;
    let (images, local_steps) = match meta.kind {
        UpdateKind::FedSgd => (meta.batch_size, None),
        UpdateKind::FedAvg => {
            let (Some(steps), Some(lr)) = (meta.local_steps, meta.local_lr) else {
                return Err(AttackError::BadOption(
                    "a FedAvg capture must state its local steps and learning rate".into(),
                ));
            };
            let local = LocalSteps {
                steps,
                batch_size: meta.batch_size,
                lr,
            };
            (meta.examples, Some(local))
        }
    };
    let (labels, labels_recovered) = match (&meta.labels, config.use_exposed_labels) {
        (Some(exposed), true) => (exposed.clone(), false),
        _ => {
            let evidence = match local_steps {
                None => gradient.clone(),
                Some(_) => gradient
                    .iter()
                    .map(Tensor::neg)
                    .collect::<candle_core::Result<_>>()?,
            };
            (recover_labels(&evidence, images)?, true)
        }
    };
    let input = meta.spec.input;
    let target = Target {
        model: &model,
        gradient,
        local_steps,
        labels: Tensor::new(labels.as_slice(), device)?,
        mode: meta.mode,
        bounds: pixel_bounds(&meta.normalization.mean, &meta.normalization.std),
    };
    let shape = [images, input.channels, input.height, input.width];
    tracing::debug!(
        "attacker's model, gradient and labels in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    let reconstruction = match config.attack {
        AttackKind::Ig => reconstruct(&target, shape, &config.inversion, on_iteration)?,
        // a malicious server's imprinted first layer is read bin by bin
        AttackKind::Analytic => match &meta.imprint {
            Some(imprint) => imprint_readout::reconstruct(
                &target,
                shape,
                imprint.bins,
                config.inversion.distance,
                config.inversion.weighting,
            )?,
            None => analytic::reconstruct(
                &target,
                shape,
                config.inversion.distance,
                config.inversion.weighting,
            )?,
        },
        AttackKind::Imprint => {
            let imprint = meta.imprint.as_ref().ok_or_else(|| {
                AttackError::NoSignal(
                    "imprint reads a malicious server's imprinted first layer, and this \
                     capture's model was not imprinted (an honest server's capture: use \
                     analytic)"
                        .into(),
                )
            })?;
            imprint_readout::reconstruct(
                &target,
                shape,
                imprint.bins,
                config.inversion.distance,
                config.inversion.weighting,
            )?
        }
        AttackKind::Dlg => dlg::reconstruct(&target, shape, &config.dlg, on_iteration)?,
        AttackKind::BnPrior => {
            let layers = config.bn_statistics.clone().ok_or_else(|| {
                AttackError::NoSignal(
                    "bn-prior needs the client batch's BatchNorm statistics, which a capture \
                     does not carry; supply them (\"BN exact\")"
                        .into(),
                )
            })?;
            bn_prior::reconstruct(
                &target,
                shape,
                &config.inversion,
                &config.bn_prior,
                layers,
                on_iteration,
            )?
        }
    };
    Ok(Attack {
        model,
        labels,
        labels_recovered,
        reconstruction,
    })
}
