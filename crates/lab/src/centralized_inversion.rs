//! Gradient inversion of a centrally built model on fixed held-out batches: the protocol of the
//! paper's Table 3 (and of the reference implementation it used, inversefed).
//!
//! A federation answers "what does a tap see of a real client?"; the paper asks a narrower
//! question: given a model (untrained, or trained for E epochs), how well can a FedSGD gradient
//! of *fixed consecutive batches* be inverted? So here there is no server and no partition: the
//! model is built from its seed, optionally trained centrally (the mechanisms act during
//! training, with the synaptic optimizer) on the training split, and then each of K
//! consecutive batches of the test split — images the training never saw — is captured as a
//! client's FedSGD gradient ([`capture_batch`]) and attacked ([`attack_and_write`]). The
//! BatchNorm mode is the caller's: `Eval` reproduces the reference protocol, `Train` what
//! synfed's federated clients compute.
//!
//! The trained model is written to `trained.safetensors` in the state's folder and reused by a
//! rerun, so an interrupted study never trains twice. Pretraining itself (100 epochs of a
//! ResNet take hours on a CPU) leaves `pretraining.partial.safetensors` after every epoch —
//! the weights, running statistics and fuzzy factors, the epochs done and the rejuvenation
//! stream's position — and a rerun continues from there: the data order of an epoch depends
//! only on the seed and the epoch, so the resumed training ends in the same bytes as an
//! uninterrupted one.

use crate::attacking::{attack_and_write, capture_batch, AttackOptions, AttackOutcome};
use crate::error::{LabError, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use synfed_data::Splits;
use synfed_models::{checkpoint, evaluate, train_epoch, Model, ModelSpec};
use synfed_synapse::{Mode, SynapticSgd};

/// Centralized training before the attack (the "trained" state).
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

/// One model state of the study: what is built, how it is trained, what is attacked.
#[derive(Clone, Debug)]
pub struct CentralizedInversion {
    /// The model (architecture, methods, width, τ, d_re, Γ, initialisation seed).
    pub spec: ModelSpec,
    /// `None`: attack the freshly initialised model.
    pub pretraining: Option<Pretraining>,
    /// K: batches attacked, the test split's images `k·B … (k+1)·B − 1` for k < K.
    pub batches: usize,
    /// B: images per attacked batch.
    pub batch_size: usize,
    /// BatchNorm statistics of the captured gradient and of the attacker's replay.
    pub mode: Mode,
    /// Whether the capture exposes the labels (the reference attack is given them).
    pub expose_labels: bool,
    pub attack: AttackOptions,
}

/// One attacked batch.
#[derive(Clone, Debug)]
pub struct BatchAttack {
    /// `batch-K`.
    pub name: String,
    /// Test-split indices of its images.
    pub indices: Vec<usize>,
    pub outcome: AttackOutcome,
}

/// What one state of the study produced.
#[derive(Clone, Debug)]
pub struct StudyState {
    pub attacks: Vec<BatchAttack>,
    /// Test accuracy of the attacked model on the whole test split (the held-out images).
    pub test_accuracy: f64,
    /// Seconds the pretraining took (0 without pretraining; for a reused trained model the
    /// time recorded beside it in `pretraining.json`, `None` where that file is missing).
    pub training_seconds: Option<f64>,
}

impl CentralizedInversion {
    fn check(&self, splits: &Splits) -> Result<()> {
        if self.batches == 0 || self.batch_size == 0 {
            return Err(LabError::Config(
                "at least one batch of at least one image must be attacked".into(),
            ));
        }
        let needed = self.batches * self.batch_size;
        if needed > splits.test.len() {
            return Err(LabError::Config(format!(
                "{} batches of {} need {needed} test images; the test split has {}",
                self.batches,
                self.batch_size,
                splits.test.len()
            )));
        }
        if let Some(p) = &self.pretraining {
            if p.epochs == 0 || p.batch_size == 0 || !(p.lr > 0.0 && p.lr.is_finite()) {
                return Err(LabError::Config(format!(
                    "pretraining needs epochs ≥ 1, batch size ≥ 1 and a positive learning rate (got {p:?})"
                )));
            }
        }
        Ok(())
    }

    /// Builds (and trains) the model, then captures and attacks every batch; each attack's
    /// files go to `dir/attack/batch-K/`. `on_attack_iteration(batch, trial, iteration,
    /// objective)` and `on_epoch(epoch, train_loss)` report progress.
    pub fn run(
        &self,
        splits: &Splits,
        dir: &Path,
        device: &Device,
        mut on_epoch: impl FnMut(usize, f64),
        mut on_attack_iteration: impl FnMut(usize, usize, usize, f64),
    ) -> Result<StudyState> {
        self.check(splits)?;
        std::fs::create_dir_all(dir).map_err(|e| LabError::io("create", dir, e))?;
        let (model, training_seconds) = self.model(splits, dir, device, &mut on_epoch)?;
        let all: Vec<usize> = (0..splits.test.len()).collect();
        let test_accuracy =
            evaluate(&model, &splits.test, &all, &splits.normalization, 250)?.accuracy();
        let mut attacks = Vec::with_capacity(self.batches);
        for k in 0..self.batches {
            let indices: Vec<usize> = (k * self.batch_size..(k + 1) * self.batch_size).collect();
            let name = format!("batch-{k}");
            let (capture, escrow) = capture_batch(
                &model,
                &splits.test,
                &splits.normalization,
                &indices,
                self.mode,
                self.expose_labels,
                &name,
            )?;
            let described = serde_json::json!({
                "study": "centralized inversion",
                "spec": self.spec,
                "pretraining": self.pretraining,
                "test_indices": indices,
                "mode": self.mode,
                "expose_labels": self.expose_labels,
            });
            let outcome = attack_and_write(
                &self.attack,
                &capture,
                &escrow,
                &dir.join("attack").join(&name),
                device,
                &described,
                |trial, i, objective| on_attack_iteration(k, trial, i, objective),
            )?;
            attacks.push(BatchAttack {
                name,
                indices,
                outcome,
            });
        }
        Ok(StudyState {
            attacks,
            test_accuracy,
            training_seconds,
        })
    }

    /// The attacked model: fresh, or trained (and saved), or the saved trained one.
    fn model(
        &self,
        splits: &Splits,
        dir: &Path,
        device: &Device,
        on_epoch: &mut impl FnMut(usize, f64),
    ) -> Result<(Model, Option<f64>)> {
        let model = Model::build(&self.spec, DType::F32, device)?;
        let Some(p) = &self.pretraining else {
            return Ok((model, Some(0.0)));
        };
        let record = dir.join(RECORD);
        let saved = dir.join("trained.safetensors");
        let state = serde_json::to_value(p)
            .map_err(|e| LabError::Config(format!("serialising the pretraining: {e}")))?;
        if saved.exists() {
            let found = checkpoint::load(&saved, DType::F32, device)?;
            if found.model.spec() == &self.spec && found.state.as_ref() == Some(&state) {
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
        let (model, mut opt, first_epoch, seconds_before) =
            self.resume(model, p, &partial, device)?;
        let indices: Vec<usize> = (0..splits.train.len()).collect();
        for epoch in first_epoch..=p.epochs {
            let stats = train_epoch(
                &model,
                &mut opt,
                &splits.train,
                &indices,
                &splits.normalization,
                p.batch_size,
                self.spec.seed,
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
        &self,
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
                    if found.model.spec() == &self.spec
                        && g.pretraining == *p
                        && g.epochs_done < p.epochs =>
                {
                    tracing::info!(
                        "resuming the pretraining after epoch {} from {}",
                        g.epochs_done,
                        partial.display()
                    );
                    let mut opt = SynapticSgd::new(found.model.params(), p.lr, self.spec.seed);
                    opt.set_rng_position(position);
                    return Ok((found.model, opt, g.epochs_done + 1, g.seconds));
                }
                _ => tracing::warn!(
                    "{} holds another model or training; training afresh",
                    partial.display()
                ),
            }
        }
        let opt = SynapticSgd::new(fresh.params(), p.lr, self.spec.seed);
        Ok((fresh, opt, 1, 0.0))
    }
}
