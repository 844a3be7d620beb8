//! The tap: the honest-but-curious server's view of chosen clients' updates.
//!
//! The simulator measures what a server that follows the protocol but reads what it receives
//! can reconstruct. The tap is that reading, kept apart from aggregation: for the rounds and
//! clients its `[tap]` section ([`TapConfig`], defined here beside what it configures) selects, it writes a [`Capture`] — the round's
//! global model, the trainable part of the update and the public facts of the round — for the
//! attacker. It sees the update exactly as the aggregation receives it, with roles taken from
//! the server's own model (never from the peer), and it never changes what is aggregated: a
//! capture that cannot be written is logged and counted, and the round goes on.
//!
//! With `mode = "imprint"` the tap plays a *malicious* server instead (Fowl et al., *Robbing
//! the Fed*): in its rounds, its clients are sent a global model whose fully connected first
//! layer is rewritten by [`crate::imprint`], and their captures record it
//! ([`CaptureMeta::imprint`]). A targeted client's update was computed on another model than
//! the global one, so the server leaves it out of the aggregate (as if the client had dropped
//! out): the honest clients' aggregate, and therefore the run's model and accuracy, are what
//! they would have been without the targeted clients, not steered by the imprinted layer.

use crate::config::{Algorithm, RunConfig, TrainingConfig};
use crate::run_files::RunFiles;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use synfed_data::{Dataset, Normalization};
use synfed_models::{Arch, ModelConfig, ModelSpec, Update};
use synfed_synapse::Method;
use synfed_wire::{Capture, CaptureMeta, ImprintRecord, UpdateKind};
use tracing::{info, warn};

/// The honest-but-curious server's view: which updates are written as capture files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TapConfig {
    /// Rounds whose updates are captured (empty: none).
    pub rounds: Vec<u64>,
    /// Clients whose updates are captured (empty: every client of a tapped round).
    pub clients: Vec<String>,
    /// `honest` (the server only reads what it receives) or `imprint` (a malicious server:
    /// the tapped clients of the tapped rounds get a model whose first layer is an imprint
    /// module; `mlp` models, with or without weight splitting).
    #[serde(skip_serializing_if = "TapMode::is_honest")]
    pub mode: TapMode,
    /// `imprint`: how many units of the first layer become bins (all its units when absent;
    /// with weight splitting a unit is Γ rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bins: Option<usize>,
}

/// What the server does besides reading the tapped updates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TapMode {
    /// Follows the protocol: every client gets the global model.
    #[default]
    Honest,
    /// Sends tapped clients a model with an imprinted first layer ([`crate::imprint`]).
    Imprint,
}

impl TapMode {
    fn is_honest(&self) -> bool {
        *self == TapMode::Honest
    }
}

impl TapConfig {
    /// Checks that `imprint` has a fully connected first layer to rewrite in `model`; the
    /// error names the field.
    pub fn validate(&self, model: &ModelConfig) -> std::result::Result<(), String> {
        if self.mode == TapMode::Honest {
            if self.bins.is_some() {
                return Err("tap.bins applies to tap.mode = \"imprint\" only".into());
            }
            return Ok(());
        }
        if model.arch != Arch::Mlp {
            return Err(format!(
                "tap.mode = \"imprint\" rewrites a fully connected first layer, and the model \
                 `{}` has none (use arch = \"mlp\")",
                model.arch
            ));
        }
        // with weight splitting the first layer's width counts Γ replicas per unit
        let gamma = if model.methods.contains(Method::Splitting) {
            model.gamma.max(1)
        } else {
            1
        };
        match (self.bins, model.width) {
            (Some(0), _) => Err("tap.bins must be at least 1".into()),
            (Some(bins), Some(width)) if bins > width / gamma => Err(format!(
                "tap.bins = {bins} exceeds the first layer's {} units (model.width {width} / Γ {gamma})",
                width / gamma
            )),
            _ => Ok(()),
        }
    }

    /// Whether `client`'s update in `round` is captured.
    pub fn taps(&self, round: u64, client: &str) -> bool {
        self.rounds.contains(&round)
            && (self.clients.is_empty() || self.clients.iter().any(|c| c == client))
    }
}

/// A model's tensors by name, shared.
type Tensors = Arc<Vec<(String, Tensor)>>;

/// Interception of a run's updates.
pub(crate) struct Tap {
    config: TapConfig,
    algorithm: Algorithm,
    training: TrainingConfig,
    spec: ModelSpec,
    normalization: Normalization,
    files: RunFiles,
    written: Vec<PathBuf>,
    failures: usize,
    /// `imprint`: the statistic over the held-out split (computed once).
    statistic: Option<crate::imprint::Statistic>,
    /// `imprint`: the round whose targeted clients got an imprinted model, that model and
    /// what was imprinted.
    imprinted: Option<(u64, Tensors, ImprintRecord)>,
}

impl Tap {
    /// The tap of the run `run` (its `[tap]` section, algorithm and training settings) over
    /// the model `spec`, whose clients normalise their images with `normalization`; captures
    /// go to `files`' capture directory.
    pub fn new(
        run: &RunConfig,
        spec: ModelSpec,
        normalization: Normalization,
        files: RunFiles,
    ) -> Self {
        Self {
            config: run.tap.clone(),
            algorithm: run.algorithm,
            training: run.training.clone(),
            spec,
            normalization,
            files,
            written: Vec::new(),
            failures: 0,
            statistic: None,
            imprinted: None,
        }
    }

    /// `imprint`: the model the targeted clients of `round` are sent instead of `global`
    /// (bins placed on the statistic of the server's `held_out` images); `None` in honest
    /// mode or an untapped round.
    pub fn imprint_round(
        &mut self,
        round: u64,
        global: &[(String, Tensor)],
        held_out: &Dataset,
    ) -> crate::error::Result<Option<Tensors>> {
        self.imprinted = None;
        if self.config.mode != TapMode::Imprint || !self.config.rounds.contains(&round) {
            return Ok(None);
        }
        if self.statistic.is_none() {
            let known = crate::imprint::statistic_distribution(held_out, &self.normalization)?;
            self.statistic = Some(known);
        }
        let Some(statistic) = &self.statistic else {
            return Ok(None);
        };
        let (model, record) = crate::imprint::imprint(
            global,
            self.config.bins,
            statistic,
            &self.normalization,
            crate::imprint::split_factor(&self.spec),
        )?;
        let (mean, std) = (record.mean, record.std);
        let model = Arc::new(model);
        info!(
            round,
            bins = record.bins,
            mean,
            std,
            "imprinted model for the targeted clients"
        );
        self.imprinted = Some((round, Arc::clone(&model), record));
        Ok(Some(model))
    }

    /// Whether `client` got the imprinted model of `round` (its update is then left out of
    /// the aggregate).
    pub fn is_targeted(&self, round: u64, client: &str) -> bool {
        matches!(&self.imprinted, Some((r, _, _)) if *r == round) && self.wants(round, client)
    }

    /// Whether `client`'s update in `round` is captured.
    pub fn wants(&self, round: u64, client: &str) -> bool {
        self.config.taps(round, client)
    }

    /// Captures `client`'s `update` of `round` (computed on `examples` examples from the
    /// round's `global` model) if the configuration selects it; the file is written on a
    /// blocking thread. Nothing happens for an update that is not tapped.
    pub async fn intercept(
        &mut self,
        round: u64,
        client: &str,
        examples: u64,
        global: &Arc<Vec<(String, Tensor)>>,
        update: &Update,
    ) {
        if !self.wants(round, client) {
            return;
        }
        let mut meta = self.meta(round, client, examples);
        let mut global = global;
        if let Some((r, imprinted, record)) = &self.imprinted {
            if *r == round {
                // the client computed on the model it was sent
                global = imprinted;
                meta.imprint = Some(record.clone());
            }
        }
        let capture = Capture::of_update(meta, global.as_ref().clone(), update);
        let path = self.files.capture(round, client);
        let target = path.clone();
        let saved = tokio::task::spawn_blocking(move || capture.save(&target))
            .await
            .map_err(|e| e.to_string())
            .and_then(|saved| saved.map_err(|e| e.to_string()));
        match saved {
            Ok(()) => self.written.push(path),
            Err(error) => {
                self.failures += 1;
                warn!(%error, round, %client, "the tap could not write a capture");
            }
        }
    }

    /// The capture files written so far, in the order they were written.
    pub fn written(&self) -> &[PathBuf] {
        &self.written
    }

    /// How many captures could not be written.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// The public facts of `client`'s update in `round`: what the attacker needs to replay
    /// the client's computation.
    fn meta(&self, round: u64, client: &str, examples: u64) -> CaptureMeta {
        let (spec, normalization) = (self.spec.clone(), self.normalization.clone());
        // the mode the client computed in (the run's, sent with the task), for the replay
        let mode = self.training.bn_mode.mode();
        match self.algorithm {
            Algorithm::FedSgd => CaptureMeta {
                mode,
                fuzzy_at: self.training.fuzzy_at,
                ..CaptureMeta::fedsgd(spec, round, client, examples as usize, normalization, None)
            },
            Algorithm::FedAvg => {
                let t = &self.training;
                let steps = if t.local_epochs > 0 {
                    t.local_epochs as usize * (examples as usize).div_ceil(t.batch_size)
                } else {
                    t.local_steps as usize
                };
                CaptureMeta {
                    spec,
                    round,
                    client: client.to_string(),
                    examples: examples as usize,
                    batch_size: t.batch_size,
                    kind: UpdateKind::FedAvg,
                    local_steps: Some(steps),
                    local_lr: Some(t.lr),
                    mode,
                    normalization,
                    labels: None,
                    fuzzy_at: t.fuzzy_at,
                    imprint: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use synfed_models::{Arch, InputShape, Model};
    use synfed_synapse::MethodSet;

    /// Geiping's ConvNet at width 2 (BatchNorm: trainable tensors and running statistics).
    fn model() -> Model {
        let spec = ModelSpec::new(
            Arch::ConvNet,
            InputShape::new(1, 9, 9),
            3,
            MethodSet::NONE,
            4,
        )
        .with_width(2);
        Model::build(&spec, DType::F32, &Device::Cpu).unwrap()
    }

    fn normalization() -> Normalization {
        Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        }
    }

    #[test]
    fn tap_selects_rounds_and_clients() {
        let tap = TapConfig {
            rounds: vec![1, 5],
            clients: vec!["b".into()],
            ..TapConfig::default()
        };
        assert!(tap.taps(1, "b"));
        assert!(!tap.taps(1, "a"));
        assert!(!tap.taps(2, "b"));
        let all = TapConfig {
            rounds: vec![2],
            clients: vec![],
            ..TapConfig::default()
        };
        assert!(all.taps(2, "anyone"));
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn tap_of(run: &RunConfig, model: &Model, dir: &std::path::Path) -> Tap {
        let files = RunFiles::create(dir).unwrap();
        Tap::new(run, model.spec().clone(), normalization(), files)
    }

    #[tokio::test]
    async fn a_tapped_client_is_captured_with_exactly_its_trainable_tensors() {
        let model = model();
        let dir = tempfile::tempdir().unwrap();
        let run = RunConfig {
            tap: TapConfig {
                rounds: vec![2],
                clients: vec!["client-1".into()],
                ..TapConfig::default()
            },
            ..RunConfig::default()
        };
        let mut tap = tap_of(&run, &model, dir.path());
        let global = Arc::new(model.params().tensors());
        // the k-th tensor of the update is filled with k + 1
        let tensors: Vec<Tensor> = model
            .params()
            .iter()
            .enumerate()
            .map(|(k, p)| (p.var.as_tensor().zeros_like().unwrap() + (k + 1) as f64).unwrap())
            .collect();
        let update = Update::with_roles_of(model.params(), tensors).unwrap();

        tap.intercept(2, "client-0", 8, &global, &update).await;
        tap.intercept(1, "client-1", 8, &global, &update).await;
        assert!(tap.written().is_empty(), "untapped updates are not written");
        assert_eq!(
            std::fs::read_dir(tap.files.captures()).unwrap().count(),
            0,
            "nothing on disk for untapped updates"
        );

        tap.intercept(2, "client-1", 8, &global, &update).await;
        assert_eq!(tap.written(), [tap.files.capture(2, "client-1")]);
        assert_eq!(tap.failures(), 0);
        let capture = Capture::load(&tap.written()[0], &Device::Cpu).unwrap();
        let trainable: Vec<(usize, &str)> = model
            .params()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role.is_trainable())
            .map(|(k, p)| (k, p.name.as_str()))
            .collect();
        assert!(
            trainable.len() < model.params().len(),
            "ConvNet has buffers"
        );
        let names: Vec<&str> = capture.update.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, trainable.iter().map(|(_, n)| *n).collect::<Vec<_>>());
        for ((k, _), (_, t)) in trainable.iter().zip(&capture.update) {
            assert!(values(t).iter().all(|v| *v == (k + 1) as f32));
        }
        assert_eq!(capture.global.len(), model.params().len());
        for ((name, t), p) in capture.global.iter().zip(model.params().iter()) {
            assert_eq!(name, &p.name);
            assert_eq!(values(t), values(p.var.as_tensor()));
        }
        assert_eq!(capture.meta.round, 2);
        assert_eq!(capture.meta.client, "client-1");
        assert_eq!(capture.meta.kind, UpdateKind::FedSgd);
        assert_eq!(capture.meta.batch_size, 8);
        assert_eq!(capture.meta.normalization, normalization());
    }

    #[tokio::test]
    async fn a_fedavg_capture_declares_its_local_steps_and_a_failed_write_is_counted() {
        let model = model();
        let dir = tempfile::tempdir().unwrap();
        let mut run = RunConfig {
            algorithm: Algorithm::FedAvg,
            ..RunConfig::default()
        };
        run.training.batch_size = 4;
        run.training.local_epochs = 2;
        run.tap.rounds = vec![1];
        let mut tap = tap_of(&run, &model, dir.path());
        let global = Arc::new(model.params().tensors());
        let update = Update::zeros_like(model.params()).unwrap();
        tap.intercept(1, "a", 10, &global, &update).await;
        let capture = Capture::load(&tap.written()[0], &Device::Cpu).unwrap();
        // 2 epochs of ⌈10 / 4⌉ = 3 batches
        assert_eq!(capture.meta.local_steps, Some(6));
        assert_eq!(capture.meta.local_lr, Some(run.training.lr));
        assert_eq!(capture.meta.examples, 10);

        // the capture directory is gone: the write fails, is counted, the tap goes on
        std::fs::remove_dir_all(tap.files.captures()).unwrap();
        tap.intercept(1, "b", 10, &global, &update).await;
        assert_eq!(tap.failures(), 1);
        assert_eq!(tap.written().len(), 1);
    }
}
