//! Gradient inversion of a centrally built model on fixed held-out batches: the protocol of the
//! paper's Table 3 (and of the reference implementation it used, inversefed).
//!
//! A federation answers "what does a tap see of a real client?"; the paper asks a narrower
//! question: given a model (untrained, or trained for E epochs), how well can a FedSGD gradient
//! of *fixed consecutive batches* be inverted? So here there is no server and no partition: the
//! model is built from its seed, optionally trained centrally (the mechanisms act during
//! training, with the synaptic optimizer) on the training split, and then each of K
//! consecutive batches of the test split — images the training never saw — is captured as a
//! client's FedSGD gradient ([`capture_batch`]) and attacked ([`attack_or_reuse`]: a batch
//! whose attack an interrupted run finished is read back, not attacked again). The
//! BatchNorm mode is the caller's: `Eval` reproduces the reference protocol, `Train` what
//! synfed's federated clients compute.
//!
//! The trained state comes from [`crate::pretraining`] (saved in the state's folder, reused
//! and resumed there).
//!
//! The `imprint` attacker is a malicious server: for it the batches are captured on the model
//! with its first layer imprinted ([`crate::malicious_server`], bins placed on the training
//! split's brightness), as the server would have sent it to the client.

use crate::attacking::{capture_batch, AttackOptions, AttackOutcome};
use crate::error::{LabError, Result};
use crate::finished_attack::attack_or_reuse;
use crate::malicious_server::imprint_model;
use crate::pretraining::pretrained;
pub use crate::pretraining::Pretraining;
use candle_core::{DType, Device};
use std::path::Path;
use synfed_attack::AttackKind;
use synfed_data::Splits;
use synfed_models::{evaluate, Model, ModelSpec};
use synfed_synapse::Mode;

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
    /// files go to `dir/attack/batch-K/` ([`Self::run_into`] with `dir/attack`).
    /// `on_attack_iteration(batch, trial, iteration, objective)` and `on_epoch(epoch,
    /// train_loss)` report progress.
    pub fn run(
        &self,
        splits: &Splits,
        dir: &Path,
        device: &Device,
        on_epoch: impl FnMut(usize, f64),
        on_attack_iteration: impl FnMut(usize, usize, usize, f64),
    ) -> Result<StudyState> {
        self.run_into(
            splits,
            dir,
            &dir.join("attack"),
            device,
            on_epoch,
            on_attack_iteration,
        )
    }

    /// [`Self::run`] with the attacks' folders in `attacks` (`attacks/batch-K/`): the model's
    /// files (the trained model, its pretraining record and partial checkpoint) stay in
    /// `dir`. A batch whose folder holds that very attack, finished, is read back.
    pub fn run_into(
        &self,
        splits: &Splits,
        dir: &Path,
        attacks: &Path,
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
        // a malicious server sends the client an imprinted model
        let imprint = (self.attack.attack == AttackKind::Imprint)
            .then(|| imprint_model(&model, &splits.train, &splits.normalization))
            .transpose()?;
        let mut outcomes = Vec::with_capacity(self.batches);
        for k in 0..self.batches {
            let indices: Vec<usize> = (k * self.batch_size..(k + 1) * self.batch_size).collect();
            let name = format!("batch-{k}");
            let (mut capture, escrow) = capture_batch(
                &model,
                &splits.test,
                &splits.normalization,
                &indices,
                self.mode,
                self.expose_labels,
                &name,
            )?;
            capture.meta.imprint = imprint.clone();
            let described = serde_json::json!({
                "study": "centralized inversion",
                "spec": self.spec,
                "pretraining": self.pretraining,
                "test_indices": indices,
                "mode": self.mode,
                "expose_labels": self.expose_labels,
            });
            let outcome = attack_or_reuse(
                &self.attack,
                &capture,
                &escrow,
                &attacks.join(&name),
                device,
                &described,
                |trial, i, objective| on_attack_iteration(k, trial, i, objective),
            )?;
            outcomes.push(BatchAttack {
                name,
                indices,
                outcome,
            });
        }
        Ok(StudyState {
            attacks: outcomes,
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
        match &self.pretraining {
            None => Ok((Model::build(&self.spec, DType::F32, device)?, Some(0.0))),
            Some(p) => pretrained(&self.spec, p, splits, dir, device, on_epoch),
        }
    }
}
