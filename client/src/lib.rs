//! A synfed federated client.
//!
//! Connects (with retries and exponential backoff; a refused token ends it at once), registers,
//! then long-polls for tasks. For each task it downloads the round's global model, computes on
//! its own share of the data — a FedSGD gradient or FedAvg local training with `SynapticSgd` —
//! while heartbeating, and streams the update back in checksummed chunks. When the server
//! restarts (a resumed run) it registers again and carries on; when the run is over it leaves.
//! Register returns a session secret that the client sends on every later call (and when it
//! registers again after a reconnect), so that no one else can act under its name. When the
//! server stops on a fatal error, the client's next call learns why and the client stops with
//! that reason ([`ClientError::ServerStopped`]).
//!
//! The run's defence (see [`defence`]) arrives with each task and is applied to the update
//! before it leaves the client; [`accountant`] says what (ε, δ) a `dp:` defence guarantees.
//! So does the run's BatchNorm mode: whether the client computes with batch statistics (as
//! clients train) or running statistics (the reference attack's protocol).
//!
//! A simulated client can also keep the truth of chosen rounds (the batch it computed on) as
//! escrow files, which only the scoring of attacks reads.

pub mod compute;
pub mod config;
pub mod connection;
pub mod defence;
pub mod error;

pub use config::{ClientConfig, ClientTls, EscrowConfig, Retry, Share};
pub use defence::Defence;
pub use error::{ClientError, Result};

use candle_core::Device;
use compute::{LocalData, Work};
use connection::{transient, with_retry, Api, Session as SessionSecret};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use synfed_models::{Model, ModelSpec};
use synfed_wire::chunks::{Assembler, EncodedTensor, TensorLayout, MAX_CHUNK_BYTES};
use synfed_wire::proto::{
    model_chunk_is_for, pull_task_reply, update_message, FetchModelRequest, HeartbeatRequest,
    LeaveRequest, PullTaskRequest, RegisterRequest, Task, TaskKind, TaskRef, UpdateHeader,
    UpdateMessage,
};
use synfed_wire::{escrow_file_name, Escrow, EscrowMeta, UpdateDigest};
use tonic::Code;
use tracing::{debug, info, warn};

/// What a client did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientReport {
    pub client_id: String,
    /// Rounds whose update the server accepted.
    pub accepted: Vec<u64>,
    /// Rounds whose update was refused, with the server's answer.
    pub refused: Vec<(u64, String)>,
    /// Escrow files written.
    pub escrows: Vec<std::path::PathBuf>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Seconds spent streaming updates up (from the first message to the server's answer).
    pub upload_seconds: f64,
    /// Seconds spent streaming global models down.
    pub download_seconds: f64,
    /// Whether the server announced the end of the run (false: stopped by the caller).
    pub finished: bool,
}

struct Registration {
    run_id: String,
    client_id: String,
}

struct Session {
    config: ClientConfig,
    api: Api,
    secret: SessionSecret,
    device: Device,
    data: Arc<LocalData>,
    model: Option<Arc<Model>>,
    /// The private fuzzy factors of this client (drawn at registration when the model has
    /// method I; used only for tasks that place I at the clients).
    private_factors: Option<Arc<Vec<(String, candle_core::Tensor)>>>,
    reg: Registration,
    report: ClientReport,
}

/// Runs a client until the run is over (or `shutdown` completes).
pub async fn run(
    config: ClientConfig,
    device: Device,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ClientReport> {
    let share = config.share.clone();
    let (dataset, dir) = (config.dataset.clone(), config.data_dir.clone());
    let data = tokio::task::spawn_blocking(move || -> Result<LocalData> {
        let splits = synfed_data::load(&dataset, dir.as_deref())?;
        let mut parts = synfed_data::partition(
            splits.train.labels(),
            share.count,
            &share.scheme,
            share.seed,
        )?;
        let indices = std::mem::take(&mut parts[share.index]);
        Ok(LocalData {
            train: splits.train,
            normalization: splits.normalization,
            indices,
        })
    })
    .await
    .map_err(|e| ClientError::Internal(e.to_string()))??;
    if data.indices.is_empty() {
        return Err(ClientError::Config(format!(
            "share {}/{} of `{}` is empty",
            config.share.index, config.share.count, config.dataset
        )));
    }
    let secret = SessionSecret::default();
    let api = connection::connect(&config, secret.clone()).await?;
    let mut session = Session {
        config,
        api,
        secret,
        device,
        data: Arc::new(data),
        model: None,
        private_factors: None,
        reg: Registration {
            run_id: String::new(),
            client_id: String::new(),
        },
        report: ClientReport::default(),
    };
    session.register().await?;
    tokio::pin!(shutdown);
    loop {
        let pulled = tokio::select! {
            pulled = session.pull() => pulled?,
            () = &mut shutdown => {
                session.leave("stopped").await;
                return Ok(session.report);
            }
        };
        match pulled {
            Pulled::Task(task) => {
                let finished = tokio::select! {
                    done = session.task(task) => { done?; false }
                    () = &mut shutdown => true,
                };
                if finished {
                    session.leave("stopped").await;
                    return Ok(session.report);
                }
                let accepted = session.report.accepted.len();
                if session
                    .config
                    .stop_after_updates
                    .is_some_and(|k| accepted >= k)
                {
                    // no Leave: the server sees what a crashed host looks like
                    info!(client = %session.reg.client_id, accepted, "stopping without leaving");
                    return Ok(session.report);
                }
            }
            Pulled::Idle(wait) => tokio::time::sleep(wait).await,
            Pulled::Finished => {
                session.report.finished = true;
                session.leave("run finished").await;
                info!(client = %session.reg.client_id, accepted = session.report.accepted.len(), "run over");
                return Ok(session.report);
            }
        }
    }
}

enum Pulled {
    Task(Task),
    Idle(Duration),
    Finished,
}

/// Whether an error ends the client rather than only the task at hand.
fn fatal(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Unauthenticated(_) | ClientError::ServerStopped { .. }
    )
}

impl Session {
    async fn register(&mut self) -> Result<()> {
        let request = RegisterRequest {
            client_name: self.config.name.clone(),
            num_examples: self.data.indices.len() as u64,
        };
        let api = self.api.clone();
        let reply = with_retry(&self.config.retry, &self.config.server, || {
            let mut api = api.clone();
            let request = request.clone();
            async move { api.register(request).await.map(tonic::Response::into_inner) }
        })
        .await?;
        if reply.dataset != self.config.dataset {
            return Err(ClientError::DatasetMismatch {
                run: reply.dataset,
                local: self.config.dataset.clone(),
            });
        }
        let spec: ModelSpec = serde_json::from_str(&reply.model_spec_json)
            .map_err(|e| ClientError::Protocol(format!("unreadable model spec: {e}")))?;
        let rebuild = self.model.as_ref().is_none_or(|m| m.spec() != &spec);
        if rebuild {
            let device = self.device.clone();
            let model = tokio::task::spawn_blocking(move || {
                Model::build(&spec, candle_core::DType::F32, &device)
            })
            .await
            .map_err(|e| ClientError::Internal(e.to_string()))??;
            self.model = Some(Arc::new(model));
        }
        if rebuild || self.private_factors.is_none() {
            let model = self.model()?;
            let seed = self.config.fuzzy_seed.unwrap_or_else(|| {
                synfed_synapse::fuzzy_placement::client_seed(reply.seed, &self.config.name)
            });
            let factors = tokio::task::spawn_blocking(move || {
                synfed_synapse::fuzzy_placement::client_factors(model.params(), seed)
            })
            .await
            .map_err(|e| ClientError::Internal(e.to_string()))??;
            self.private_factors = (!factors.is_empty()).then(|| Arc::new(factors));
        }
        self.secret.set(&reply.session_secret)?;
        info!(client = %reply.client_id, run = %reply.run_id, examples = request.num_examples, "registered");
        self.report.client_id = reply.client_id.clone();
        self.reg = Registration {
            run_id: reply.run_id,
            client_id: reply.client_id,
        };
        Ok(())
    }

    async fn pull(&mut self) -> Result<Pulled> {
        let request = PullTaskRequest {
            run_id: self.reg.run_id.clone(),
            client_id: self.reg.client_id.clone(),
        };
        let api = self.api.clone();
        let reply = with_retry(&self.config.retry, &self.config.server, || {
            let mut api = api.clone();
            let request = request.clone();
            async move {
                api.pull_task(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await;
        match reply {
            Ok(reply) => match reply.reply {
                Some(pull_task_reply::Reply::Task(task)) => Ok(Pulled::Task(task)),
                Some(pull_task_reply::Reply::Idle(idle)) => Ok(Pulled::Idle(
                    Duration::from_millis(idle.retry_after_ms.into()),
                )),
                Some(pull_task_reply::Reply::Finished(_)) => Ok(Pulled::Finished),
                Some(pull_task_reply::Reply::Stopped(stopped)) => Err(ClientError::ServerStopped {
                    reason: stopped.reason,
                }),
                None => Err(ClientError::Protocol("an empty PullTask reply".into())),
            },
            // The server restarted (resumed run) and forgot us: register again.
            Err(ClientError::Refused {
                code: Code::NotFound | Code::FailedPrecondition,
                message,
            }) => {
                info!(%message, "registering again");
                self.register().await?;
                Ok(Pulled::Idle(Duration::ZERO))
            }
            Err(e) => Err(e),
        }
    }

    fn model(&self) -> Result<Arc<Model>> {
        self.model
            .clone()
            .ok_or_else(|| ClientError::Internal("no model before registration".into()))
    }

    /// Downloads the task's global model into the local model.
    async fn fetch(&mut self, task_ref: &TaskRef) -> Result<()> {
        let model = self.model()?;
        let layout: Vec<TensorLayout> = model
            .params()
            .tensors()
            .iter()
            .map(|(n, t)| TensorLayout::of(n.clone(), t))
            .collect();
        let started = std::time::Instant::now();
        let mut stream = self
            .api
            .fetch_model(FetchModelRequest {
                client_id: self.reg.client_id.clone(),
                r#ref: Some(task_ref.clone()),
            })
            .await?
            .into_inner();
        let mut assembler = Assembler::new(layout);
        while let Some(message) = stream.message().await? {
            if !model_chunk_is_for(&message, task_ref) {
                return Err(ClientError::Protocol(
                    "a model chunk of another task".into(),
                ));
            }
            let chunk = message
                .chunk
                .ok_or_else(|| ClientError::Protocol("a model message without a chunk".into()))?;
            assembler
                .push(chunk)
                .map_err(|p| ClientError::Protocol(format!("global model: {p}")))?;
        }
        self.report.bytes_received += assembler.bytes_received() as u64;
        self.report.download_seconds += started.elapsed().as_secs_f64();
        let device = self.device.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let tensors = assembler
                .finish(&Device::Cpu)
                .map_err(|e| ClientError::Protocol(format!("global model: {e}")))?;
            for (name, tensor) in tensors {
                model.params().set(&name, &tensor.to_device(&device)?)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ClientError::Internal(e.to_string()))?
    }

    async fn task(&mut self, task: Task) -> Result<()> {
        let task_ref = task
            .r#ref
            .clone()
            .ok_or_else(|| ClientError::Protocol("a task without reference".into()))?;
        let round = task_ref.round;
        debug!(round, kind = ?task.kind(), "task");
        if let Err(e) = self.fetch(&task_ref).await {
            return self.skip(round, e);
        }
        let heartbeat = self.heartbeat(&task, &task_ref);
        let work = self.compute(&task).await;
        heartbeat.abort();
        let work = match work {
            Ok(work) => work,
            Err(e) => return self.skip(round, e),
        };
        self.escrow(round, &work).await?;
        match self.push(&task_ref, work).await {
            Ok(bytes) => {
                self.report.bytes_sent += bytes;
                self.report.accepted.push(round);
                Ok(())
            }
            Err(e) => self.skip(round, e),
        }
    }

    /// A task that failed: fatal for authentication problems and a stopped server, otherwise
    /// logged (the server goes on without this client's update) and the client pulls the next
    /// task.
    fn skip(&mut self, round: u64, error: ClientError) -> Result<()> {
        match error {
            e if fatal(&e) => Err(e),
            ClientError::Refused { code, message } => {
                warn!(round, ?code, %message, "update refused");
                self.report
                    .refused
                    .push((round, format!("{code:?}: {message}")));
                Ok(())
            }
            other => {
                warn!(round, error = %other, "task failed");
                self.report.refused.push((round, other.to_string()));
                Ok(())
            }
        }
    }

    fn heartbeat(&self, task: &Task, task_ref: &TaskRef) -> tokio::task::JoinHandle<()> {
        let mut api = self.api.clone();
        let interval = Duration::from_millis(u64::from(task.heartbeat_interval_ms.max(100)));
        let request = HeartbeatRequest {
            run_id: self.reg.run_id.clone(),
            client_id: self.reg.client_id.clone(),
            r#ref: Some(task_ref.clone()),
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match api.heartbeat(request.clone()).await {
                    Ok(reply) if !reply.get_ref().task_active => {
                        debug!("the server no longer wants this task");
                    }
                    Err(status) if !transient(&status) => debug!(%status, "heartbeat refused"),
                    _ => {}
                }
            }
        })
    }

    async fn compute(&self, task: &Task) -> Result<Work> {
        let (model, data) = (self.model()?, Arc::clone(&self.data));
        let task = task.clone();
        let defence = compute::task_defence(&task.defence)?;
        let mode = compute::task_bn_mode(&task)?.mode();
        let private = match compute::task_fuzzy_at(&task)? {
            synfed_synapse::FuzzyPlacement::Server => None,
            synfed_synapse::FuzzyPlacement::Client => self.private_factors.clone(),
        };
        tokio::task::spawn_blocking(move || match task.kind() {
            TaskKind::FedsgdGradient => compute::fedsgd_defended(
                &model,
                &data,
                task.batch_size as usize,
                task.seed,
                &defence,
                mode,
                &private,
            ),
            TaskKind::FedavgLocalTrain => {
                let mut work = compute::fedavg(
                    &model,
                    &data,
                    task.batch_size as usize,
                    task.local_epochs,
                    task.local_steps,
                    task.learning_rate,
                    task.seed,
                    mode,
                    &private,
                )?;
                compute::defend(&mut work, &defence, task.seed)?;
                Ok(work)
            }
            TaskKind::Unspecified => Err(ClientError::Protocol("a task of unknown kind".into())),
        })
        .await
        .map_err(|e| ClientError::Internal(e.to_string()))?
    }

    async fn escrow(&mut self, round: u64, work: &Work) -> Result<()> {
        let Some(config) = &self.config.escrow else {
            return Ok(());
        };
        if !config.rounds.is_empty() && !config.rounds.contains(&round) {
            return Ok(());
        }
        let path = config
            .dir
            .join(escrow_file_name(round, &self.reg.client_id));
        let client = self.reg.client_id.clone();
        let (images, labels) = (work.truth.0.clone(), work.truth.1.clone());
        // the update exactly as it will be sent (after the defence): the server's capture of
        // what it receives has the same digest, which binds this escrow to that capture
        let sent = work.update.named_trainable();
        let dir = config.dir.clone();
        let written = path.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir_all(&dir).map_err(|source| ClientError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let meta = EscrowMeta {
                round,
                client,
                update_digest: Some(UpdateDigest::of(&sent)?),
            };
            Escrow::new(meta, &images, &labels)?.save(&written)?;
            Ok(())
        })
        .await
        .map_err(|e| ClientError::Internal(e.to_string()))??;
        self.report.escrows.push(path);
        Ok(())
    }

    /// Streams the update; returns the payload bytes sent.
    async fn push(&mut self, task_ref: &TaskRef, work: Work) -> Result<u64> {
        let update = work.update.named();
        let encoded = tokio::task::spawn_blocking(move || synfed_wire::chunks::encode_all(&update))
            .await
            .map_err(|e| ClientError::Internal(e.to_string()))??;
        let bytes: u64 = encoded.iter().map(|e| e.bytes.len() as u64).sum();
        let encoded: Arc<Vec<EncodedTensor>> = Arc::new(encoded);
        let header = UpdateMessage {
            client_id: self.reg.client_id.clone(),
            r#ref: Some(task_ref.clone()),
            part: Some(update_message::Part::Header(UpdateHeader {
                num_examples: work.examples,
                train_loss: work.train_loss,
                tensor_count: encoded.len() as u32,
            })),
        };
        let pieces: Vec<(usize, usize)> = encoded
            .iter()
            .enumerate()
            .flat_map(|(i, t)| (0..t.chunk_count(MAX_CHUNK_BYTES)).map(move |j| (i, j)))
            .collect();
        let (client_id, task) = (self.reg.client_id.clone(), task_ref.clone());
        let chunks = pieces.into_iter().map(move |(i, j)| UpdateMessage {
            client_id: client_id.clone(),
            r#ref: Some(task.clone()),
            part: Some(update_message::Part::Chunk(
                encoded[i].chunk(j, MAX_CHUNK_BYTES),
            )),
        });
        let stream = tokio_stream::iter(std::iter::once(header).chain(chunks));
        let started = std::time::Instant::now();
        self.api.push_update(stream).await?;
        self.report.upload_seconds += started.elapsed().as_secs_f64();
        Ok(bytes)
    }

    async fn leave(&mut self, reason: &str) {
        let request = LeaveRequest {
            run_id: self.reg.run_id.clone(),
            client_id: self.reg.client_id.clone(),
            reason: reason.into(),
        };
        if let Err(status) = self.api.leave(request).await {
            debug!(%status, "leave not acknowledged");
        }
    }
}
