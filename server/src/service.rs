//! The gRPC handlers: authentication, validation of everything a peer sends, and hand-over of
//! complete updates to the round engine.
//!
//! Every refusal has its own status code, so a client (and a test) can tell them apart:
//!
//! | problem | status |
//! |---|---|
//! | missing/unknown token; a registered name called without its session secret | `UNAUTHENTICATED` |
//! | token of another client, client not sampled this round | `PERMISSION_DENIED` |
//! | unknown client id or session secret (not registered, or the registration expired) | `NOT_FOUND` |
//! | other run, round not open, unknown task, update already refused | `FAILED_PRECONDITION` |
//! | second update for the same task; Register under a live name without its secret or token | `ALREADY_EXISTS` |
//! | after the round's deadline; an upload still open at the deadline or stalled for `limits.stall_timeout_s` | `DEADLINE_EXCEEDED` |
//! | the server stopped on a fatal error (the reason follows) | `ABORTED` |
//! | malformed header, bad example count (0, more than the training split at registration, more than registered in an update), non-finite loss, unknown/duplicate/missing tensor, wrong dtype/shape/length, non-finite values | `INVALID_ARGUMENT` |
//! | chunk larger than 4 MiB; an upload past its message or byte budget; a registration beyond `limits.max_clients`, or one that would make a round sample more clients than the aggregation's memory budget holds | `RESOURCE_EXHAUSTED` |
//! | chunk offset gap/overlap/overrun | `OUT_OF_RANGE` |
//! | checksum mismatch | `DATA_LOSS` |

use crate::aggregation::weight;
use crate::config::secs;
use crate::peer_text::peer_text;
use crate::registry::{RegisterRefusal, SessionRefusal};
use crate::sampling::sample_size;
use crate::state::{Phase, Shared, Slot, State, Submission};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use synfed_wire::chunks::{Assembler, StreamBudget, StreamMeter, MAX_CHUNK_BYTES};
use synfed_wire::proto::federation_server::Federation;
use synfed_wire::proto::{
    self, pull_task_reply, update_message, FetchModelRequest, HeartbeatReply, HeartbeatRequest,
    LeaveReply, LeaveRequest, ModelChunk, PullTaskReply, PullTaskRequest, PushUpdateReply,
    RegisterReply, RegisterRequest, TaskRef, UpdateMessage, SESSION_METADATA,
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

/// The session secret a call presents, if any.
fn session_of(metadata: &MetadataMap) -> Option<&str> {
    metadata.get(SESSION_METADATA).and_then(|v| v.to_str().ok())
}

/// The answer to every call once the server stopped on a fatal error.
fn stopped(reason: &str) -> Status {
    Status::aborted(format!("the server stopped: {reason}"))
}

/// How an upload broke off: whether the client may send it again before the deadline.
enum Broken {
    /// The transfer broke (the client died, lost its connection or stalled): it may retry.
    Retry(Status),
    /// The update is refused for the round.
    Refuse(Status),
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
    /// Checks the token (if tokens are configured) belongs to `client`, `client` is
    /// registered and the call presents its session secret; refreshes its liveness.
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
        match state
            .clients
            .check(client, session_of(metadata), Instant::now())
        {
            Ok(()) => Ok(()),
            Err(SessionRefusal::Unknown) => Err(Status::not_found(format!(
                "unknown client `{}`: register first",
                peer_text(client)
            ))),
            Err(SessionRefusal::WrongSecret) => Err(Status::unauthenticated(format!(
                "the call for `{}` lacks its registration's session secret ({SESSION_METADATA})",
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
        if let Phase::Stopped { reason } = &state.phase {
            return Err(stopped(reason));
        }
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
                "`{}` is not sampled in round {}",
                peer_text(client),
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
            fuzzy_placement: proto::FuzzyPlacement::from(c.training.fuzzy_at) as i32,
        }
    }

    /// The status of a refused Register of `name`.
    fn register_refused(&self, refusal: RegisterRefusal, name: &str) -> Status {
        match refusal {
            RegisterRefusal::Full { max } => Status::resource_exhausted(format!(
                "the server holds at most {max} registered clients (limits.max_clients)"
            )),
            RegisterRefusal::Taken => Status::already_exists(format!(
                "`{name}` is registered by another session: a client keeps its name by presenting \
                 its session secret ({SESSION_METADATA}); a name is free again after {} s \
                 without calls (limits.registration_ttl_s)",
                self.shared.config.limits.registration_ttl_s
            )),
        }
    }

    /// The next message of an upload, waiting at most `limits.stall_timeout_s` and never past
    /// the round's `deadline`.
    async fn next_message(
        &self,
        stream: &mut Streaming<UpdateMessage>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<UpdateMessage>, Broken> {
        let stall = self.shared.config.limits.stall_timeout_s;
        let stalled = tokio::time::Instant::now() + secs(stall);
        let until = deadline.map_or(stalled, |d| d.min(stalled));
        match tokio::time::timeout_at(until, stream.message()).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(status)) => Err(
                if matches!(
                    status.code(),
                    tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Unavailable
                ) {
                    Broken::Retry(status)
                } else {
                    Broken::Refuse(status)
                },
            ),
            Err(_) if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) => {
                Err(Broken::Refuse(Status::deadline_exceeded(
                    "the round reached its deadline during the upload: cut",
                )))
            }
            Err(_) => Err(Broken::Retry(Status::deadline_exceeded(format!(
                "the upload made no progress for {stall} s (limits.stall_timeout_s): cut"
            )))),
        }
    }

    /// Receives the chunks after the header into tensors, within the stream's budget and the
    /// round's deadline; any problem refuses the update.
    async fn receive(
        &self,
        stream: &mut Streaming<UpdateMessage>,
        client: &str,
        task: &TaskRef,
        deadline: tokio::time::Instant,
        meter: &mut StreamMeter,
    ) -> Result<(Vec<candle_core::Tensor>, usize), Broken> {
        let refuse = |status: Status| Broken::Refuse(status);
        let mut assembler = Assembler::new(self.shared.layout.clone());
        while let Some(message) = self.next_message(stream, Some(deadline)).await? {
            meter
                .charge_message(&message)
                .map_err(|p| refuse(p.into()))?;
            self.shared.lock().clients.touch(client, Instant::now());
            if message.client_id != client || message.r#ref.as_ref() != Some(task) {
                return Err(refuse(Status::invalid_argument(
                    "a message of the stream names another client or task than its header",
                )));
            }
            match message.part {
                Some(update_message::Part::Chunk(chunk)) => {
                    assembler.push(chunk).map_err(|p| refuse(p.into()))?
                }
                Some(update_message::Part::Header(_)) => {
                    return Err(refuse(Status::invalid_argument(
                        "a second header in one update",
                    )))
                }
                None => {
                    return Err(refuse(Status::invalid_argument(
                        "a message without content",
                    )))
                }
            }
        }
        let received = assembler.bytes_received();
        let tensors = assembler
            .finish(&candle_core::Device::Cpu)
            .map_err(|e| refuse(e.into()))?;
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
        let presented = session_of(request.metadata()).map(str::to_string);
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
        let secret = {
            let mut state = self.shared.lock();
            if let Phase::Stopped { reason } = &state.phase {
                return Err(stopped(reason));
            }
            let now = Instant::now();
            state.clients.expire(now);
            if let Some(capacity) = self.shared.limits.round_capacity {
                // the round's kept updates must fit the budget: refuse the client that would
                // make a round sample more than it holds
                let active = 1 + state.clients.len() - usize::from(state.clients.contains(&name));
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
            let token_proven = self.shared.tokens.is_some();
            let (secret, rejoin) = state
                .clients
                .register(
                    &name,
                    req.num_examples,
                    presented.as_deref(),
                    token_proven,
                    now,
                )
                .map_err(|refusal| self.register_refused(refusal, &name))?;
            info!(client = %name, examples = req.num_examples, rejoin, "client registered");
            secret
        };
        self.shared.notify();
        Ok(Response::new(RegisterReply {
            run_id: self.shared.run_id.clone(),
            client_id: name,
            model_spec_json: self.shared.spec_json.clone(),
            seed: self.shared.config.seed,
            dataset: self.shared.config.data.name.clone(),
            session_secret: secret,
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
                let mut guard = self.shared.lock();
                let state: &mut State = &mut guard;
                state.clients.touch(&client, Instant::now());
                match &state.phase {
                    Phase::Finished { rounds } => {
                        Some(pull_task_reply::Reply::Finished(proto::Finished {
                            rounds: *rounds,
                        }))
                    }
                    Phase::Stopped { reason } => {
                        // told: the grace period need not wait for this client any more
                        state.clients.remove(&client);
                        info!(client = %client, "told that the server stopped");
                        Some(pull_task_reply::Reply::Stopped(proto::Stopped {
                            reason: reason.clone(),
                        }))
                    }
                    Phase::Open(open) if open.slots.get(&client) == Some(&Slot::Assigned) => {
                        Some(pull_task_reply::Reply::Task(self.task_of(open, &client)))
                    }
                    _ => None,
                }
            };
            if let Some(reply) = reply {
                if matches!(reply, pull_task_reply::Reply::Stopped(_)) {
                    self.shared.notify();
                }
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
            Phase::Open(open) if open.round == round => match &open.imprinted {
                // a malicious server's targeted client gets the imprinted model
                Some((imprinted, targeted)) if targeted.contains(&req.client_id) => {
                    Arc::clone(imprinted)
                }
                _ => Arc::clone(&open.model),
            },
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
        // Authenticate before any upload byte is pulled: a caller without a valid token or
        // session secret never gets the server to buffer its message.
        if let Some(tokens) = &self.shared.tokens {
            tokens.authenticate(&metadata)?;
        }
        let owner = {
            let presented = session_of(&metadata).ok_or_else(|| {
                Status::unauthenticated(format!(
                    "an update needs its registration's session secret ({SESSION_METADATA})"
                ))
            })?;
            let state = self.shared.lock();
            state
                .clients
                .name_of(presented, Instant::now())
                .map(str::to_string)
                .ok_or_else(|| {
                    Status::not_found(
                        "no registration holds this session secret: register (again) first",
                    )
                })?
        };
        let mut stream = request.into_inner();
        let mut meter = StreamMeter::new(StreamBudget::for_tensors(
            &self.shared.layout,
            MAX_CHUNK_BYTES,
            1,
        ));
        let first = match self.next_message(&mut stream, None).await {
            Ok(first) => first,
            Err(Broken::Retry(status) | Broken::Refuse(status)) => return Err(status),
        }
        .ok_or_else(|| Status::invalid_argument("empty update stream"))?;
        meter.charge_message(&first)?;
        let Some(update_message::Part::Header(header)) = first.part else {
            return Err(Status::invalid_argument(
                "the first message of an update must be its header",
            ));
        };
        let client = first.client_id;
        if client != owner {
            return Err(Status::unauthenticated(format!(
                "the update names `{}`, its session secret is another client's",
                peer_text(&client)
            )));
        }
        self.authorize(&metadata, &client)?;
        let round = self.check_task(&client, first.r#ref.as_ref())?;
        let task = first.r#ref.unwrap_or_default();

        // Identity established: from here a problem refuses this client's update for the round.
        let deadline = {
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
            tokio::time::Instant::from_std(open.deadline)
        };

        let received = self
            .receive(&mut stream, &client, &task, deadline, &mut meter)
            .await;
        let (update, received) = match received {
            Ok(ok) => ok,
            Err(Broken::Retry(status)) => {
                // The transfer broke off (the client died, lost its connection or stalled): it
                // may still send the update again before the deadline.
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
                return Err(status);
            }
            Err(Broken::Refuse(status)) => {
                warn!(%client, round, status = %status.message(), "update refused");
                self.shared
                    .resolve(round, &client, Slot::Refused(status.message().to_string()));
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
            state.clients.remove(&req.client_id);
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
        info!(client = %peer_text(&req.client_id), reason = %peer_text(&req.reason), "client left");
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
