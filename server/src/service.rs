//! The gRPC handlers: authentication, validation of everything a peer sends, and hand-over of
//! complete updates to the round engine.
//!
//! Every refusal has its own status code, so a client (and a test) can tell them apart:
//!
//! | problem | status |
//! |---|---|
//! | missing/unknown token | `UNAUTHENTICATED` |
//! | token of another client, client not sampled this round | `PERMISSION_DENIED` |
//! | unknown client id | `NOT_FOUND` |
//! | other run, round not open, unknown task, update already refused | `FAILED_PRECONDITION` |
//! | second update for the same task | `ALREADY_EXISTS` |
//! | after the round's deadline | `DEADLINE_EXCEEDED` |
//! | malformed header, bad example count (0, more than the training split at registration, more than registered in an update), non-finite loss, unknown/duplicate/missing tensor, wrong dtype/shape/length, non-finite values | `INVALID_ARGUMENT` |
//! | chunk larger than 4 MiB; a registration that would make a round sample more clients than the aggregation's memory budget holds | `RESOURCE_EXHAUSTED` |
//! | chunk offset gap/overlap/overrun | `OUT_OF_RANGE` |
//! | checksum mismatch | `DATA_LOSS` |

use crate::aggregation::weight;
use crate::peer_text::peer_text;
use crate::sampling::sample_size;
use crate::state::{ClientEntry, Phase, Shared, Slot, Submission};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use synfed_wire::chunks::{Assembler, MAX_CHUNK_BYTES};
use synfed_wire::proto::federation_server::Federation;
use synfed_wire::proto::{
    self, pull_task_reply, update_message, FetchModelRequest, HeartbeatReply, HeartbeatRequest,
    LeaveReply, LeaveRequest, ModelChunk, PullTaskReply, PullTaskRequest, PushUpdateReply,
    RegisterReply, RegisterRequest, TaskRef, UpdateMessage,
};
use tokio::sync::oneshot;
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

/// Longest client name (names become file names of captures).
pub const MAX_NAME_LEN: usize = 64;

/// The Federation service.
pub(crate) struct Service {
    pub shared: Arc<Shared>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

impl Service {
    /// Checks the token (if tokens are configured) belongs to `client` and `client` is
    /// registered; refreshes its liveness.
    fn authorize(&self, metadata: &MetadataMap, client: &str) -> Result<(), Status> {
        if let Some(tokens) = &self.shared.tokens {
            let name = tokens.authenticate(metadata)?;
            if name != client {
                return Err(Status::permission_denied(
                    "the token belongs to another client",
                ));
            }
        }
        let mut state = self.shared.lock();
        match state.clients.get_mut(client) {
            Some(entry) if entry.active => {
                entry.last_seen = Instant::now();
                Ok(())
            }
            _ => Err(Status::not_found(format!(
                "unknown client `{}`: register first",
                peer_text(client)
            ))),
        }
    }

    fn check_run(&self, run_id: &str) -> Result<(), Status> {
        if run_id == self.shared.run_id {
            Ok(())
        } else {
            Err(Status::failed_precondition(format!(
                "message for run `{}`; this server runs `{}`",
                peer_text(run_id),
                self.shared.run_id
            )))
        }
    }

    /// Checks `task` is `client`'s task in the open round; returns the round.
    fn check_task(&self, client: &str, task: Option<&TaskRef>) -> Result<u64, Status> {
        let task = task.ok_or_else(|| Status::invalid_argument("missing task reference"))?;
        self.check_run(&task.run_id)?;
        let state = self.shared.lock();
        let Phase::Open(open) = &state.phase else {
            return Err(Status::failed_precondition(format!(
                "round {} is not open",
                task.round
            )));
        };
        if task.round != open.round {
            return Err(Status::failed_precondition(format!(
                "round {} is not open (the open round is {})",
                task.round, open.round
            )));
        }
        if !open.slots.contains_key(client) {
            return Err(Status::permission_denied(format!(
                "`{client}` is not sampled in round {}",
                open.round
            )));
        }
        if task.task_id != self.shared.task_id(open.round, client) {
            return Err(Status::failed_precondition(format!(
                "unknown task `{}`",
                peer_text(&task.task_id)
            )));
        }
        Ok(open.round)
    }

    fn task_of(&self, round: &crate::state::OpenRound, client: &str) -> proto::Task {
        let c = &self.shared.config;
        proto::Task {
            r#ref: Some(TaskRef {
                run_id: self.shared.run_id.clone(),
                round: round.round,
                task_id: self.shared.task_id(round.round, client),
            }),
            kind: round.kind as i32,
            batch_size: c.training.batch_size as u32,
            local_epochs: c.training.local_epochs,
            local_steps: c.training.local_steps,
            learning_rate: c.training.lr,
            deadline_unix_ms: round.deadline_unix_ms,
            seed: crate::seeds::derive(c.seed, crate::seeds::Purpose::Task, round.round, client),
            heartbeat_interval_ms: (c.timing.heartbeat_interval_s * 1000.0) as u32,
            defence: c.training.defence.clone(),
            batch_norm_mode: proto::BatchNormMode::from(c.training.bn_mode) as i32,
        }
    }

    /// Receives the chunks after the header into tensors; any problem refuses the update.
    async fn receive(
        &self,
        stream: &mut Streaming<UpdateMessage>,
        client: &str,
        task: &TaskRef,
    ) -> Result<(Vec<candle_core::Tensor>, usize), Status> {
        let mut assembler = Assembler::new(self.shared.layout.clone());
        while let Some(message) = stream.message().await? {
            if message.client_id != client || message.r#ref.as_ref() != Some(task) {
                return Err(Status::invalid_argument(
                    "a message of the stream names another client or task than its header",
                ));
            }
            match message.part {
                Some(update_message::Part::Chunk(chunk)) => assembler.push(chunk)?,
                Some(update_message::Part::Header(_)) => {
                    return Err(Status::invalid_argument("a second header in one update"))
                }
                None => return Err(Status::invalid_argument("a message without content")),
            }
        }
        let received = assembler.bytes_received();
        let tensors = assembler.finish(&candle_core::Device::Cpu)?;
        Ok((tensors.into_iter().map(|(_, t)| t).collect(), received))
    }
}

type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Federation for Service {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let authenticated = match &self.shared.tokens {
            Some(tokens) => Some(tokens.authenticate(request.metadata())?.to_string()),
            None => None,
        };
        let req = request.into_inner();
        let name = match authenticated {
            Some(name) if req.client_name.is_empty() || req.client_name == name => name,
            Some(_) => {
                return Err(Status::permission_denied(
                    "the token belongs to another client name",
                ))
            }
            None => req.client_name,
        };
        if !valid_name(&name) {
            return Err(Status::invalid_argument(format!(
                "client names are 1–{MAX_NAME_LEN} characters of A–Z a–z 0–9 . _ - (not starting with .)"
            )));
        }
        if let Err(reason) =
            weight::check_registration(req.num_examples, self.shared.limits.train_examples)
        {
            return Err(Status::invalid_argument(reason));
        }
        {
            let mut state = self.shared.lock();
            let rejoin = state.clients.contains_key(&name);
            if let Some(capacity) = self.shared.limits.round_capacity {
                // the round's kept updates must fit the budget: refuse the client that would
                // make a round sample more than it holds
                let active = 1 + state
                    .clients
                    .iter()
                    .filter(|(other, c)| c.active && **other != name)
                    .count();
                let s = &self.shared.config.sampling;
                let sampled = sample_size(active, s.fraction, s.min_clients);
                if sampled > capacity {
                    return Err(Status::resource_exhausted(format!(
                        "the server keeps at most {capacity} updates per round \
                         (aggregation.memory_budget_mib); with `{name}` a round would sample \
                         {sampled}"
                    )));
                }
            }
            state.clients.insert(
                name.clone(),
                ClientEntry {
                    examples: req.num_examples,
                    last_seen: Instant::now(),
                    active: true,
                },
            );
            info!(client = %name, examples = req.num_examples, rejoin, "client registered");
        }
        self.shared.notify();
        Ok(Response::new(RegisterReply {
            run_id: self.shared.run_id.clone(),
            client_id: name,
            model_spec_json: self.shared.spec_json.clone(),
            seed: self.shared.config.seed,
            dataset: self.shared.config.data.name.clone(),
        }))
    }

    async fn pull_task(
        &self,
        request: Request<PullTaskRequest>,
    ) -> Result<Response<PullTaskReply>, Status> {
        let client = request.get_ref().client_id.clone();
        self.authorize(request.metadata(), &client)?;
        self.check_run(&request.get_ref().run_id)?;
        let mut changed = self.shared.subscribe();
        let until = tokio::time::Instant::now()
            + crate::config::secs(self.shared.config.timing.pull_timeout_s);
        loop {
            if self.shared.is_closing() {
                return Err(Status::unavailable("the server is shutting down"));
            }
            let reply = {
                let mut state = self.shared.lock();
                if let Some(entry) = state.clients.get_mut(&client) {
                    entry.last_seen = Instant::now();
                }
                match &state.phase {
                    Phase::Finished { rounds } => {
                        Some(pull_task_reply::Reply::Finished(proto::Finished {
                            rounds: *rounds,
                        }))
                    }
                    Phase::Open(open) if open.slots.get(&client) == Some(&Slot::Assigned) => {
                        Some(pull_task_reply::Reply::Task(self.task_of(open, &client)))
                    }
                    _ => None,
                }
            };
            if let Some(reply) = reply {
                return Ok(Response::new(PullTaskReply { reply: Some(reply) }));
            }
            match tokio::time::timeout_at(until, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(Status::unavailable("the server is shutting down")),
                Err(_) => {
                    return Ok(Response::new(PullTaskReply {
                        reply: Some(pull_task_reply::Reply::Idle(proto::Idle {
                            retry_after_ms: 0,
                        })),
                    }))
                }
            }
        }
    }

    type FetchModelStream = ModelStream;

    async fn fetch_model(
        &self,
        request: Request<FetchModelRequest>,
    ) -> Result<Response<Self::FetchModelStream>, Status> {
        let req = request.get_ref();
        self.authorize(request.metadata(), &req.client_id)?;
        let round = self.check_task(&req.client_id, req.r#ref.as_ref())?;
        let model = match &self.shared.lock().phase {
            Phase::Open(open) if open.round == round => Arc::clone(&open.model),
            _ => return Err(Status::failed_precondition(format!("round {round} closed"))),
        };
        let task = req.r#ref.clone();
        let pieces: Vec<(usize, usize)> = model
            .iter()
            .enumerate()
            .flat_map(|(i, t)| (0..t.chunk_count(MAX_CHUNK_BYTES)).map(move |j| (i, j)))
            .collect();
        let stream = tokio_stream::iter(pieces.into_iter().map(move |(i, j)| {
            Ok(ModelChunk {
                r#ref: task.clone(),
                chunk: Some(model[i].chunk(j, MAX_CHUNK_BYTES)),
            })
        }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn push_update(
        &self,
        request: Request<Streaming<UpdateMessage>>,
    ) -> Result<Response<PushUpdateReply>, Status> {
        let metadata = request.metadata().clone();
        // Authenticate before any upload byte is pulled: a caller without a valid token never
        // gets the server to buffer its message.
        if let Some(tokens) = &self.shared.tokens {
            tokens.authenticate(&metadata)?;
        }
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty update stream"))?;
        let Some(update_message::Part::Header(header)) = first.part else {
            return Err(Status::invalid_argument(
                "the first message of an update must be its header",
            ));
        };
        let client = first.client_id;
        self.authorize(&metadata, &client)?;
        let round = self.check_task(&client, first.r#ref.as_ref())?;
        let task = first.r#ref.unwrap_or_default();

        // Identity established: from here a problem refuses this client's update for the round.
        {
            let mut state = self.shared.lock();
            let examples = state.clients.get(&client).map_or(0, |c| c.examples);
            let Phase::Open(open) = &mut state.phase else {
                return Err(Status::failed_precondition(format!("round {round} closed")));
            };
            let slot = open.slots.get_mut(&client).ok_or_else(|| {
                Status::permission_denied(format!("`{client}` is not sampled in round {round}"))
            })?;
            match slot {
                Slot::Assigned => {}
                Slot::Receiving | Slot::Accepted => {
                    return Err(Status::already_exists(format!(
                        "an update of `{client}` for round {round} was already received"
                    )))
                }
                Slot::Refused(reason) => {
                    return Err(Status::failed_precondition(format!(
                        "the update of `{client}` for round {round} was refused: {reason}"
                    )))
                }
                Slot::Dropped(why) => {
                    return Err(Status::failed_precondition(format!(
                        "`{client}` was dropped from round {round}: {why}"
                    )))
                }
            }
            if Instant::now() > open.deadline {
                return Err(Status::deadline_exceeded(format!(
                    "round {round} is past its deadline"
                )));
            }
            let problem =
                if let Err(reason) = weight::check_update_claim(header.num_examples, examples) {
                    Some(reason)
                } else if header.tensor_count as usize != self.shared.layout.len() {
                    Some(format!(
                        "the header announces {} tensors, the model has {}",
                        header.tensor_count,
                        self.shared.layout.len()
                    ))
                } else if !header.train_loss.is_finite() {
                    Some(format!("train_loss {} is not finite", header.train_loss))
                } else {
                    None
                };
            if let Some(problem) = problem {
                *slot = Slot::Refused(problem.clone());
                drop(state);
                self.shared.notify();
                warn!(%client, round, %problem, "update refused");
                return Err(Status::invalid_argument(problem));
            }
            *slot = Slot::Receiving;
        }

        let (update, received) = match self.receive(&mut stream, &client, &task).await {
            Ok(ok) => ok,
            Err(status) => {
                if matches!(
                    status.code(),
                    tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Unavailable
                ) {
                    // The transfer broke off (the client died or lost its connection): it may
                    // still send the update again before the deadline.
                    {
                        let mut state = self.shared.lock();
                        if let Phase::Open(open) = &mut state.phase {
                            if open.round == round {
                                if let Some(slot) = open.slots.get_mut(&client) {
                                    *slot = Slot::Assigned;
                                }
                            }
                        }
                    }
                    self.shared.notify();
                    debug!(%client, round, status = %status.message(), "upload interrupted");
                } else {
                    warn!(%client, round, status = %status.message(), "update refused");
                    self.shared.resolve(
                        round,
                        &client,
                        Slot::Refused(status.message().to_string()),
                    );
                }
                return Err(status);
            }
        };
        let (reply, accepted) = oneshot::channel();
        let submission = Submission {
            client: client.clone(),
            round,
            examples: header.num_examples,
            train_loss: header.train_loss,
            update,
            reply,
        };
        if self.shared.submissions.send(submission).await.is_err() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        match accepted.await {
            Ok(Ok(())) => Ok(Response::new(PushUpdateReply {
                r#ref: Some(task),
                bytes_received: received as u64,
            })),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::unavailable("the server is shutting down")),
        }
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let req = request.get_ref();
        self.authorize(request.metadata(), &req.client_id)?;
        self.check_run(&req.run_id)?;
        let active = match (&self.shared.lock().phase, &req.r#ref) {
            (Phase::Open(open), Some(task)) => {
                task.round == open.round
                    && task.task_id == self.shared.task_id(open.round, &req.client_id)
                    && open
                        .slots
                        .get(&req.client_id)
                        .is_some_and(|s| !s.resolved())
            }
            _ => false,
        };
        Ok(Response::new(HeartbeatReply {
            task_active: active,
        }))
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<LeaveReply>, Status> {
        let req = request.get_ref();
        self.authorize(request.metadata(), &req.client_id)?;
        self.check_run(&req.run_id)?;
        let round = {
            let mut state = self.shared.lock();
            if let Some(entry) = state.clients.get_mut(&req.client_id) {
                entry.active = false;
            }
            match &state.phase {
                Phase::Open(open) => Some(open.round),
                _ => None,
            }
        };
        if let Some(round) = round {
            self.shared
                .resolve(round, &req.client_id, Slot::Dropped("left the run"));
        }
        self.shared.notify();
        info!(client = %req.client_id, reason = %peer_text(&req.reason), "client left");
        Ok(Response::new(LeaveReply {}))
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_are_safe_file_name_parts() {
        assert!(valid_name("client-07"));
        assert!(valid_name("hospital_a.eu"));
        assert!(!valid_name(""));
        assert!(!valid_name("../etc"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
