//! The round engine: opens rounds, collects updates until every sampled client has answered or
//! the deadline passes, aggregates, applies, evaluates, checkpoints.
//!
//! A round is a sequence of named steps — [`open`](Engine::open) it to the sampled clients,
//! [`collect`](Engine::collect) their updates (each one [accepted](Engine::accept): shown to
//! the [`Tap`], then added to the sum), [`close`](Engine::close) it, aggregate and apply,
//! evaluate, checkpoint — so that each can be read on its own.
//!
//! Everything heavy (aggregation, the optimizer step, evaluation, writing captures and
//! checkpoints) runs on blocking threads, so the gRPC handlers stay responsive meanwhile.

use crate::aggregation::{weight, Collector};
use crate::config::{secs, Algorithm, RunConfig};
use crate::error::{Result, ServerError};
use crate::run_files::{RoundRecord, RunFiles, RunState};
use crate::sampling::sample_clients;
use crate::state::{OpenRound, Phase, Shared, Slot, Submission};
use crate::tap::Tap;
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use synfed_data::Splits;
use synfed_models::{evaluate, Evaluation, Model, Update};
use synfed_synapse::SynapticSgd;
use synfed_wire::chunks::encode_all;
use synfed_wire::proto::TaskKind;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

/// What a finished (or stopped) run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub run_id: String,
    /// One record per round finished by this process.
    pub rounds: Vec<RoundRecord>,
    /// Whether every configured round is done (false: stopped early).
    pub complete: bool,
    pub out: PathBuf,
    /// Capture files written by the tap.
    pub captures: Vec<PathBuf>,
    /// Captures the tap could not write (logged; the run went on).
    pub capture_failures: usize,
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Internal(format!("a worker thread failed: {e}")))?
}

pub(crate) struct Engine {
    pub shared: Arc<Shared>,
    pub model: Arc<Model>,
    pub optimizer: Arc<Mutex<SynapticSgd>>,
    pub files: RunFiles,
    pub splits: Arc<Splits>,
    pub eval_indices: Arc<Vec<usize>>,
    pub first_round: u64,
    pub fingerprint: String,
    pub submissions: mpsc::Receiver<Submission>,
    pub records: Vec<RoundRecord>,
    pub tap: Tap,
}

impl Engine {
    fn config(&self) -> &RunConfig {
        &self.shared.config
    }

    /// Runs the remaining rounds, then tells clients the run is over.
    pub async fn run(&mut self) -> Result<()> {
        for round in self.first_round..=self.config().rounds {
            let record = self.round(round).await?;
            self.records.push(record);
        }
        let rounds = self.config().rounds;
        self.shared.lock().phase = Phase::Finished { rounds };
        self.shared.notify();
        info!(rounds, "run finished");
        self.linger().await;
        Ok(())
    }

    pub fn summary(&self) -> RunSummary {
        RunSummary {
            run_id: self.shared.run_id.clone(),
            rounds: self.records.clone(),
            complete: self.records.last().map(|r| r.round) == Some(self.config().rounds),
            out: self.files.dir.clone(),
            captures: self.tap.written().to_vec(),
            capture_failures: self.tap.failures(),
        }
    }

    /// Waits until every client has left, at most `linger_s`.
    async fn linger(&self) {
        linger(&self.shared).await;
    }

    async fn wait_for_clients(&self) -> Result<Vec<String>> {
        let needed = self.config().sampling.min_clients;
        let waited = self.config().timing.wait_for_clients_s;
        let until = tokio::time::Instant::now() + secs(waited);
        let mut changed = self.shared.subscribe();
        loop {
            let active: Vec<String> = {
                let mut state = self.shared.lock();
                state.clients.expire(Instant::now());
                state.clients.names()
            };
            if active.len() >= needed {
                return Ok(active);
            }
            // registrations also end by expiry, which no one announces: look again each second
            let next = until.min(tokio::time::Instant::now() + Duration::from_secs(1));
            if tokio::time::timeout_at(next, changed.changed())
                .await
                .is_err()
                && tokio::time::Instant::now() >= until
            {
                return Err(ServerError::NotEnoughClients {
                    registered: active.len(),
                    needed,
                    waited_s: waited,
                });
            }
        }
    }

    /// One round: open it to the sampled clients, collect their updates, close it, apply the
    /// aggregate, evaluate, checkpoint and log.
    async fn round(&mut self, round: u64) -> Result<RoundRecord> {
        let active = self.wait_for_clients().await?;
        let started = Instant::now();
        let c = self.config().clone();
        let sampled = sample_clients(
            &active,
            c.sampling.fraction,
            c.sampling.min_clients,
            c.seed,
            round,
        );
        let opened = self.open(round, &sampled, started).await?;
        let (sum, loss) = self.collect(round, &sampled, &opened).await?;
        let (refused, dropped) = self.close();
        let (updates, examples, rejuvenated) = self.aggregate_and_apply(round, sum).await?;
        let eval = self.evaluate().await?;
        self.checkpoint(round).await?;

        let record = RoundRecord {
            round,
            sampled: sampled.len(),
            updates,
            refused,
            dropped,
            examples,
            train_loss: loss.mean(),
            test_loss: eval.loss,
            test_accuracy: eval.accuracy(),
            rejuvenated,
            seconds: started.elapsed().as_secs_f64(),
        };
        self.files.log_round(&record)?;
        info!(
            round,
            updates,
            refused,
            dropped,
            test_accuracy = format!("{:.4}", record.test_accuracy),
            test_loss = format!("{:.4}", record.test_loss),
            "round done"
        );
        Ok(record)
    }

    /// Opens `round` to the `sampled` clients: copies the global model (later steps change the
    /// variables in place), encodes it once for every download and publishes the round.
    async fn open(&mut self, round: u64, sampled: &[String], started: Instant) -> Result<Opened> {
        let model = Arc::clone(&self.model);
        let (global, encoded) = blocking(move || {
            let global = model
                .params()
                .tensors()
                .into_iter()
                .map(|(n, t)| Ok((n, t.copy()?)))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let encoded = encode_all(&global)?;
            Ok((Arc::new(global), Arc::new(encoded)))
        })
        .await?;
        // a malicious tap (`[tap] mode = "imprint"`) sends its clients another model
        let imprinted = match self.tap.imprint_round(round, &global, &self.splits.test)? {
            Some(model) => {
                let targeted = sampled
                    .iter()
                    .filter(|c| self.tap.is_targeted(round, c))
                    .cloned()
                    .collect();
                let encoded = blocking(move || Ok(encode_all(&model)?)).await?;
                Some((Arc::new(encoded), targeted))
            }
            None => None,
        };

        let c = self.config();
        let timeout = secs(c.timing.round_timeout_s);
        let deadline_unix_ms = SystemTime::now()
            .checked_add(timeout)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |d| d.as_millis() as u64);
        {
            let mut state = self.shared.lock();
            state.phase = Phase::Open(OpenRound {
                round,
                kind: match c.algorithm {
                    Algorithm::FedSgd => TaskKind::FedsgdGradient,
                    Algorithm::FedAvg => TaskKind::FedavgLocalTrain,
                },
                deadline: started + timeout,
                deadline_unix_ms,
                slots: sampled
                    .iter()
                    .map(|s| (s.clone(), Slot::Assigned))
                    .collect(),
                model: encoded,
                imprinted,
            });
        }
        self.shared.notify();
        info!(round, sampled = sampled.len(), "round open");
        Ok(Opened { global, timeout })
    }

    /// Collects the round's updates until every sampled client has answered (or been
    /// dropped) or the deadline passes.
    async fn collect(
        &mut self,
        round: u64,
        sampled: &[String],
        opened: &Opened,
    ) -> Result<(Collector, LossMean)> {
        let c = self.config().clone();
        // the robust rules' kept updates are checked against their budget here, before any
        // update arrives (registration already refuses clients beyond it)
        let mut sum = Some(Collector::new(
            &c.aggregation,
            sampled.to_vec(),
            &self.shared.layout,
            &self.files.spool(),
            256 << 20,
        )?);
        let lost = || ServerError::Internal("aggregate lost".into());
        let mut loss = LossMean::default();
        let mut changed = self.shared.subscribe();
        let deadline = tokio::time::Instant::now() + opened.timeout;
        let silence = secs(c.timing.heartbeat_timeout_s);
        loop {
            self.drop_silent(round, silence);
            let resolved = self.resolved_without_update(round);
            let s = sum.as_mut().ok_or_else(lost)?;
            for client in resolved {
                s.drop_client(&client)?;
            }
            if s.is_complete() {
                break;
            }
            tokio::select! {
                submission = self.submissions.recv() => {
                    let Some(submission) = submission else { break };
                    let taken = sum.take().ok_or_else(lost)?;
                    sum = Some(self.accept(submission, round, taken, &opened.global, &mut loss).await?);
                }
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        Ok((sum.ok_or_else(lost)?, loss))
    }

    /// Closes the round: whoever has not answered is a straggler, and updates still queued
    /// are refused. Returns the numbers of refused and dropped clients.
    fn close(&mut self) -> (usize, usize) {
        let counts = {
            let mut state = self.shared.lock();
            let mut counts = (0, 0);
            if let Phase::Open(open) = &mut state.phase {
                for slot in open.slots.values_mut() {
                    if !slot.resolved() {
                        *slot = Slot::Dropped("missed the round's deadline");
                    }
                    match slot {
                        Slot::Refused(_) => counts.0 += 1,
                        Slot::Dropped(_) => counts.1 += 1,
                        _ => {}
                    }
                }
            }
            state.phase = Phase::Between;
            counts
        };
        self.shared.notify();
        while let Ok(late) = self.submissions.try_recv() {
            refuse_late(late);
        }
        counts
    }

    /// Aggregates the collected updates by the run's rule and applies the result to the global
    /// model. Returns the number of updates taken, their example weight and the number of
    /// rejuvenated weights.
    async fn aggregate_and_apply(
        &mut self,
        round: u64,
        sum: Collector,
    ) -> Result<(usize, u64, usize)> {
        let c = self.config().clone();
        let min_updates = c.sampling.min_updates;
        let closed = blocking(move || sum.finish(min_updates)).await?;
        let updates = closed.contributors.len();
        let examples = closed.weight as u64;
        if let Some(selected) = &closed.selected {
            info!(round, rule = %c.aggregation.rule, ?selected, "selected updates");
        }
        let Some(aggregate) = closed.aggregate else {
            warn!(
                round,
                updates,
                needed = c.sampling.min_updates.max(c.aggregation.min_updates()),
                "too few updates: model unchanged"
            );
            return Ok((updates, examples, 0));
        };
        let (model, optimizer) = (Arc::clone(&self.model), Arc::clone(&self.optimizer));
        let algorithm = c.algorithm;
        let rejuvenated = blocking(move || {
            let step = Update::with_roles_of(model.params(), aggregate)
                .map_err(|e| ServerError::Internal(format!("the aggregate: {e}")))?;
            let mut optimizer = optimizer
                .lock()
                .map_err(|_| ServerError::Internal("optimizer lock poisoned".into()))?;
            apply(&model, &mut optimizer, algorithm, step)
        })
        .await?;
        Ok((updates, examples, rejuvenated))
    }

    /// The global model's loss and accuracy on the held-out split.
    async fn evaluate(&self) -> Result<Evaluation> {
        let (model, splits, indices) = (
            Arc::clone(&self.model),
            Arc::clone(&self.splits),
            Arc::clone(&self.eval_indices),
        );
        let eval_batch = self.config().data.eval_batch_size;
        blocking(move || {
            Ok(evaluate(
                &model,
                &splits.test,
                &indices,
                &splits.normalization,
                eval_batch,
            )?)
        })
        .await
    }

    /// Writes the checkpoint a killed run resumes from after `round`.
    async fn checkpoint(&self, round: u64) -> Result<()> {
        let state = RunState {
            run_id: self.shared.run_id.clone(),
            round,
            optimizer_rng: self
                .optimizer
                .lock()
                .map_err(|_| ServerError::Internal("optimizer lock poisoned".into()))?
                .rng_position()
                .to_string(),
            fingerprint: self.fingerprint.clone(),
        };
        let (model, files) = (Arc::clone(&self.model), self.files.clone());
        blocking(move || files.save_checkpoint(&model, &state)).await
    }

    /// Sampled clients still computing but silent for longer than `silence` are dropped, and
    /// so are those whose registration expired or ended.
    fn drop_silent(&self, round: u64, silence: Duration) {
        let (gone, silent): (Vec<String>, Vec<String>) = {
            let mut guard = self.shared.lock();
            let state: &mut crate::state::State = &mut guard;
            state.clients.expire(Instant::now());
            let Phase::Open(open) = &state.phase else {
                return;
            };
            let waiting = |name: &String| {
                matches!(open.slots.get(name), Some(Slot::Assigned | Slot::Receiving))
            };
            let silent = open
                .slots
                .iter()
                .filter(|(name, slot)| {
                    **slot == Slot::Assigned
                        && state
                            .clients
                            .get(name)
                            .is_some_and(|c| c.last_seen.elapsed() > silence)
                })
                .map(|(name, _)| name.clone())
                .collect();
            let gone: Vec<String> = open
                .slots
                .keys()
                .filter(|name| waiting(name) && !state.clients.contains(name))
                .cloned()
                .collect();
            (gone, silent)
        };
        for client in gone {
            warn!(%client, round, "registration expired or ended: dropped from the round");
            self.shared
                .resolve(round, &client, Slot::Dropped("its registration expired"));
        }
        for client in silent {
            warn!(%client, round, "client silent: dropped from the round");
            self.shared
                .resolve(round, &client, Slot::Dropped("silent for too long"));
        }
    }

    fn resolved_without_update(&self, round: u64) -> Vec<String> {
        let state = self.shared.lock();
        match &state.phase {
            Phase::Open(open) if open.round == round => open
                .slots
                .iter()
                .filter(|(_, s)| matches!(s, Slot::Refused(_) | Slot::Dropped(_)))
                .map(|(n, _)| n.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Adds a received update to the round's sum (after the tap has seen it), or refuses it if
    /// the round it was meant for is over.
    async fn accept(
        &mut self,
        submission: Submission,
        round: u64,
        sum: Collector,
        global: &Arc<Vec<(String, Tensor)>>,
        loss: &mut LossMean,
    ) -> Result<Collector> {
        if !self.receiving(&submission, round) {
            refuse_late(submission);
            return Ok(sum);
        }
        let Submission {
            client,
            examples,
            train_loss,
            update,
            reply,
            ..
        } = submission;
        // roles from the server's own model: the peer sends names and tensors only (the
        // service has checked them against the layout, which is the model's)
        let update = Update::with_roles_of(self.model.params(), update)
            .map_err(|e| ServerError::Internal(format!("`{client}`'s checked update: {e}")))?;
        self.tap
            .intercept(round, &client, examples, global, &update)
            .await;
        if self.tap.is_targeted(round, &client) {
            // computed on the imprinted model: read by the tap, left out of the aggregate
            let mut sum = sum;
            sum.drop_client(&client)?;
            self.shared.resolve_accepted(round, &client);
            let _ = reply.send(Ok(()));
            return Ok(sum);
        }
        // the claim (checked against the registration) capped by what the task asked for
        let weight = weight::example_weight(examples, weight::task_bound(self.config())) as f64;
        let sum = offer(sum, client.clone(), update, weight).await?;
        loss.add(&client, train_loss, weight);
        self.shared.resolve_accepted(round, &client);
        let _ = reply.send(Ok(()));
        Ok(sum)
    }

    /// Whether `submission` is for `round`, still open, and expected from its client.
    fn receiving(&self, submission: &Submission, round: u64) -> bool {
        let state = self.shared.lock();
        matches!(&state.phase, Phase::Open(open) if open.round == submission.round
            && submission.round == round
            && open.slots.get(&submission.client) == Some(&Slot::Receiving))
    }
}

/// Waits until every registered client has been told the run is over (or stopped) and left,
/// at most `timing.linger_s`.
pub(crate) async fn linger(shared: &Shared) {
    let until = tokio::time::Instant::now() + secs(shared.config.timing.linger_s);
    let mut changed = shared.subscribe();
    loop {
        if shared.lock().clients.is_empty() {
            return;
        }
        if tokio::time::timeout_at(until, changed.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The round's global model as its clients download it, and how long it stays open.
struct Opened {
    global: Arc<Vec<(String, Tensor)>>,
    timeout: Duration,
}

/// Tells the client of an update that arrived after its round closed.
fn refuse_late(late: Submission) {
    let _ = late.reply.send(Err(Status::deadline_exceeded(format!(
        "round {} closed before the update could be added",
        late.round
    ))));
}

/// Adds `client`'s update with example weight `weight` to the round's sum, on a blocking
/// thread.
async fn offer(sum: Collector, client: String, update: Update, weight: f64) -> Result<Collector> {
    blocking(move || {
        let mut sum = sum;
        sum.offer(&client, update.into_tensors(), weight)?;
        Ok(sum)
    })
    .await
}

/// Applies the round's mean update to the global model; returns the number of rejuvenated
/// weights. FedSGD: one `SynapticSgd` step with the mean gradient of the trainable tensors
/// (fuzzy factors, then rejuvenation), buffers (BatchNorm running statistics) moved by their
/// mean change. FedAvg: every tensor moved by its mean change.
pub(crate) fn apply(
    model: &Model,
    optimizer: &mut SynapticSgd,
    algorithm: Algorithm,
    mean: Update,
) -> Result<usize> {
    let by_name: HashMap<&str, &Tensor> =
        mean.iter().map(|e| (e.name.as_str(), &e.tensor)).collect();
    let mut rejuvenated = 0;
    if algorithm == Algorithm::FedSgd {
        rejuvenated = optimizer
            .step_with(|p| by_name.get(p.name.as_str()).map(|t| (*t).clone()))?
            .rejuvenated;
    }
    for entry in &mean {
        if algorithm == Algorithm::FedSgd && entry.is_trainable() {
            continue;
        }
        let param = model.params().get(&entry.name).ok_or_else(|| {
            ServerError::Internal(format!("the model has no tensor `{}`", entry.name))
        })?;
        let moved = (param.var.as_tensor() + entry.tensor.to_dtype(param.var.dtype())?)?;
        param.var.set(&moved)?;
    }
    Ok(rejuvenated)
}

/// Example-weighted mean of reported losses, summed in the canonical (sorted) order of the
/// clients whatever order their updates arrived in, so that `rounds.csv` has the same bits in
/// every run of a seed.
#[derive(Default)]
struct LossMean {
    by_client: std::collections::BTreeMap<String, (f64, f64)>,
}

impl LossMean {
    fn add(&mut self, client: &str, loss: f64, weight: f64) {
        self.by_client.insert(client.to_string(), (loss, weight));
    }

    fn mean(&self) -> f64 {
        let (sum, weight) = self
            .by_client
            .values()
            .fold((0.0, 0.0), |(s, w), &(l, x)| (s + l * x, w + x));
        if weight > 0.0 {
            sum / weight
        } else {
            f64::NAN
        }
    }
}

/// The configuration fields that determine a run's results, as canonical JSON.
///
/// `training.bn_mode` is left out while it is the default (`train`, what every run did before
/// the option existed), and `training.fuzzy_at` while it is `server`, so that a checkpoint written before it still resumes; likewise
/// `aggregation` while it is the plain mean without a norm bound, and its memory budget always
/// (it decides whether a run may start, not what it computes).
pub fn fingerprint(config: &RunConfig) -> String {
    let mut value = serde_json::json!({
        "seed": config.seed,
        "algorithm": config.algorithm,
        "model": config.model,
        "data": config.data.name,
        "training": config.training,
        "sampling": config.sampling,
    });
    // only a robust rule or a norm bound is named (runs before the option resume)
    if let (Some(aggregation), Some(fields)) =
        (config.aggregation.fingerprint(), value.as_object_mut())
    {
        fields.insert("aggregation".into(), aggregation);
    }
    if let Some(training) = value
        .get_mut("training")
        .and_then(serde_json::Value::as_object_mut)
    {
        if config.training.bn_mode == synfed_synapse::BnMode::Train {
            training.remove("bn_mode");
        }
        // likewise the placement of I while it is the default (the server's step)
        if config.training.fuzzy_at == synfed_synapse::FuzzyPlacement::Server {
            training.remove("fuzzy_at");
        }
    }
    // a run from given weights is another run (named only when set: runs before the option
    // resume)
    if let (Some(path), Some(fields)) = (&config.initial_model, value.as_object_mut()) {
        fields.insert(
            "initial_model".into(),
            serde_json::json!(path.display().to_string()),
        );
    }
    // serde_json's Value keeps keys sorted, so the text is canonical.
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Losses whose sum depends on the order of addition (0.1 + 0.2 + 0.3 ≠ 0.3 + 0.2 + 0.1
    /// in f64) give the same mean in any arrival order: the canonical order's.
    #[test]
    fn the_loss_mean_does_not_depend_on_arrival_order() {
        let losses = [("a", 0.1), ("b", 0.2), ("c", 0.3)];
        let mut forward = LossMean::default();
        let mut backward = LossMean::default();
        for &(client, loss) in &losses {
            forward.add(client, loss, 1.0);
        }
        for &(client, loss) in losses.iter().rev() {
            backward.add(client, loss, 1.0);
        }
        assert_eq!(
            forward.mean().to_bits(),
            ((0.1 + 0.2 + 0.3) / 3.0f64).to_bits()
        );
        assert_eq!(backward.mean().to_bits(), forward.mean().to_bits());
    }

    #[test]
    fn the_fingerprint_names_bn_mode_only_when_it_is_eval() {
        let train = RunConfig::default();
        let value: serde_json::Value = serde_json::from_str(&fingerprint(&train)).unwrap();
        let keys: Vec<&str> = value["training"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // the fields of a run from before the option: its checkpoint still resumes
        assert_eq!(
            keys,
            ["batch_size", "defence", "local_epochs", "local_steps", "lr"]
        );
        let mut eval = train.clone();
        eval.training.bn_mode = synfed_synapse::BnMode::Eval;
        let value: serde_json::Value = serde_json::from_str(&fingerprint(&eval)).unwrap();
        assert_eq!(value["training"]["bn_mode"], "eval");
        assert_ne!(fingerprint(&eval), fingerprint(&train));
        let mut client = train.clone();
        client.training.fuzzy_at = synfed_synapse::FuzzyPlacement::Client;
        let value: serde_json::Value = serde_json::from_str(&fingerprint(&client)).unwrap();
        assert_eq!(value["training"]["fuzzy_at"], "client");
        assert_ne!(fingerprint(&client), fingerprint(&train));
    }

    #[test]
    fn the_fingerprint_names_aggregation_only_when_it_is_not_the_plain_mean() {
        let plain = RunConfig::default();
        let value: serde_json::Value = serde_json::from_str(&fingerprint(&plain)).unwrap();
        assert!(value.get("aggregation").is_none(), "{value}");
        let mut budget = plain.clone();
        budget.aggregation.memory_budget_mib = 7;
        budget.aggregation.trim = 0.3;
        assert_eq!(fingerprint(&budget), fingerprint(&plain));

        let mut median = plain.clone();
        median.aggregation.rule = crate::config::Rule::Median;
        let value: serde_json::Value = serde_json::from_str(&fingerprint(&median)).unwrap();
        assert_eq!(
            value["aggregation"],
            serde_json::json!({ "rule": "median" })
        );
        let mut trimmed = plain.clone();
        trimmed.aggregation.rule = crate::config::Rule::TrimmedMean;
        trimmed.aggregation.trim = 0.2;
        trimmed.aggregation.norm_bound = Some(3.0);
        let value: serde_json::Value = serde_json::from_str(&fingerprint(&trimmed)).unwrap();
        assert_eq!(
            value["aggregation"],
            serde_json::json!({ "rule": "trimmed-mean", "trim": 0.2, "norm_bound": 3.0 })
        );
        let mut bounded = plain.clone();
        bounded.aggregation.norm_bound = Some(3.0);
        assert_ne!(fingerprint(&bounded), fingerprint(&plain));
    }
}
