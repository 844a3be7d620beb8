//! Centralized pretraining: how a study's "trained" state is made.
//!
//! A privacy verdict on a model at chance says little about a model in use, so the trained
//! state of a comparison comes from real training, the same for every variant: the model is
//! built from its seed and trained for a stated number of epochs (the mechanisms act during
//! training, with the synaptic optimizer) on a training split. Both kinds of privacy study use
//! it: `--kind inversion` attacks the pretrained model directly (the paper's Table 3), and
//! `--kind privacy` starts a federation from it (`initial_model` of the run).
//!
//! Pretraining takes hours for a ResNet on a CPU, so it never runs twice: the trained model is
//! written to `trained.safetensors` (with `pretraining.json`, the seconds it took) and reused by
//! a rerun with the same model and schedule; an interrupted pretraining leaves
//! `pretraining.partial.safetensors` after every epoch — the weights, running statistics and
//! fuzzy factors, the epochs done, the rejuvenation stream's position and the seconds so far —
//! and a rerun continues from there: the data order of an epoch depends only on the seed and
//! the epoch, so the resumed training ends in the same bytes as an uninterrupted one.

use crate::error::{LabError, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use synfed_data::Splits;
use synfed_models::{checkpoint, train_epoch, Model, ModelSpec};
use synfed_synapse::SynapticSgd;

/// Centralized training from the model's initial weights: the "trained" state of a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pretraining {
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
}

/// How far an interrupted pretraining got: the state saved with its partial checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PretrainingProgress {
    pretraining: Pretraining,
    epochs_done: usize,
    /// The rejuvenation stream's word position (a u128, written in decimal).
    rejuvenation_position: String,
    /// Seconds spent on the epochs done (absent in partial checkpoints of older versions).
    #[serde(default)]
    seconds: f64,
}

/// How long the saved trained model took to train, kept beside it so that a rerun that reuses
/// the model still reports the cost (`pretraining.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PretrainingRecord {
    seconds: f64,
}

/// The record beside `trained.safetensors`.
const RECORD: &str = "pretraining.json";

/// The partial checkpoint of an unfinished pretraining, beside `trained.safetensors`.
const PARTIAL: &str = "pretraining.partial.safetensors";

/// The trained model's file in its folder.
const TRAINED: &str = "trained.safetensors";

/// The files of a pretraining in its folder (the trained model, its record, the partial
/// checkpoint of an unfinished one): what a folder that is cleared for a fresh run must keep
/// so that a resumed run reuses or continues the training.
pub const FILES: [&str; 3] = [TRAINED, RECORD, PARTIAL];

/// `spec` built from its seed and trained for `p` on `splits`' training split — or the
/// model saved in `dir` by an earlier call with the same model and schedule, or the
/// continuation of an interrupted one — with the seconds the training took (`None` for a
/// reused model whose record is missing). `on_epoch(epoch, train_loss)` reports progress.
pub fn pretrained(
    spec: &ModelSpec,
    p: &Pretraining,
    splits: &Splits,
    dir: &Path,
    device: &Device,
    on_epoch: &mut impl FnMut(usize, f64),
) -> Result<(Model, Option<f64>)> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io("create", dir, e))?;
    let model = Model::build(spec, DType::F32, device)?;
    let record = dir.join(RECORD);
    let saved = dir.join(TRAINED);
    let state = serde_json::to_value(p)
        .map_err(|e| LabError::Config(format!("serialising the pretraining: {e}")))?;
    if saved.exists() {
        let found = checkpoint::load(&saved, DType::F32, device)?;
        if found.model.spec() == spec && found.state.as_ref() == Some(&state) {
            tracing::info!("reusing the trained model {}", saved.display());
            let seconds = std::fs::read(&record)
                .ok()
                .and_then(|b| serde_json::from_slice::<PretrainingRecord>(&b).ok())
                .map(|r| r.seconds);
            return Ok((found.model, seconds));
        }
        tracing::warn!(
            "{} holds another model or training; training afresh",
            saved.display()
        );
    }
    let started = Instant::now();
    let partial = dir.join(PARTIAL);
    let (model, mut opt, first_epoch, seconds_before) = resume(spec, model, p, &partial, device)?;
    let indices: Vec<usize> = (0..splits.train.len()).collect();
    for epoch in first_epoch..=p.epochs {
        let stats = train_epoch(
            &model,
            &mut opt,
            &splits.train,
            &indices,
            &splits.normalization,
            p.batch_size,
            spec.seed,
            epoch,
            |_| {},
        )?;
        if !stats.train_loss.is_finite() {
            return Err(LabError::Config(format!(
                "training diverged at epoch {epoch} (loss {})",
                stats.train_loss
            )));
        }
        if epoch < p.epochs {
            let progress = PretrainingProgress {
                pretraining: p.clone(),
                epochs_done: epoch,
                rejuvenation_position: opt.rng_position().to_string(),
                seconds: seconds_before + started.elapsed().as_secs_f64(),
            };
            let progress = serde_json::to_value(&progress)
                .map_err(|e| LabError::Config(format!("serialising the progress: {e}")))?;
            checkpoint::save(&model, Some(&progress), &partial)?;
        }
        on_epoch(epoch, stats.train_loss);
    }
    let seconds = seconds_before + started.elapsed().as_secs_f64();
    let json = serde_json::to_vec(&PretrainingRecord { seconds })
        .map_err(|e| LabError::Config(format!("serialising the pretraining record: {e}")))?;
    std::fs::write(&record, json).map_err(|e| LabError::io("write", &record, e))?;
    checkpoint::save(&model, Some(&state), &saved)?;
    match std::fs::remove_file(&partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(LabError::io("remove", &partial, e))
        }
        _ => {}
    }
    Ok((model, Some(seconds)))
}

/// The model, optimizer, first epoch to train and the seconds already spent: from the
/// partial checkpoint of an interrupted pretraining of this very model and schedule, else
/// from the start.
fn resume(
    spec: &ModelSpec,
    fresh: Model,
    p: &Pretraining,
    partial: &Path,
    device: &Device,
) -> Result<(Model, SynapticSgd, usize, f64)> {
    if partial.exists() {
        let found = checkpoint::load(partial, DType::F32, device)?;
        let progress = found
            .state
            .and_then(|s| serde_json::from_value::<PretrainingProgress>(s).ok());
        let position = progress
            .as_ref()
            .and_then(|g| g.rejuvenation_position.parse::<u128>().ok());
        match (progress, position) {
            (Some(g), Some(position))
                if found.model.spec() == spec
                    && g.pretraining == *p
                    && g.epochs_done < p.epochs =>
            {
                tracing::info!(
                    "resuming the pretraining after epoch {} from {}",
                    g.epochs_done,
                    partial.display()
                );
                let mut opt = SynapticSgd::new(found.model.params(), p.lr, spec.seed);
                opt.set_rng_position(position);
                return Ok((found.model, opt, g.epochs_done + 1, g.seconds));
            }
            _ => tracing::warn!(
                "{} holds another model or training; training afresh",
                partial.display()
            ),
        }
    }
    let opt = SynapticSgd::new(fresh.params(), p.lr, spec.seed);
    Ok((fresh, opt, 1, 0.0))
}
