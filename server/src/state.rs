//! The server's shared state: who is registered, which round is open and where each sampled
//! client stands in it. The gRPC handlers and the round engine both hold it behind one mutex,
//! for short critical sections only (never across an `.await` or heavy computation).

use crate::config::{secs, RunConfig};
use crate::registry::Registry;
use crate::tokens::Tokens;
use candle_core::Tensor;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use synfed_wire::chunks::{EncodedTensor, TensorLayout};
use synfed_wire::proto::TaskKind;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

/// Where a sampled client stands in the open round.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Slot {
    /// Sampled; the task is waiting for it or it is computing.
    Assigned,
    /// Its update is being received.
    Receiving,
    /// Its update was added to the aggregate.
    Accepted,
    /// Its update was refused (the reason as the client was told).
    Refused(String),
    /// Left out: it left, went silent or missed the deadline.
    Dropped(&'static str),
}

impl Slot {
    /// Whether the engine no longer waits for this client.
    pub fn resolved(&self) -> bool {
        !matches!(self, Slot::Assigned | Slot::Receiving)
    }
}

/// The round clients can currently work on.
pub(crate) struct OpenRound {
    pub round: u64,
    pub kind: TaskKind,
    pub deadline: Instant,
    pub deadline_unix_ms: u64,
    pub slots: BTreeMap<String, Slot>,
    /// The global model of the round, encoded once for every client's download.
    pub model: Arc<Vec<EncodedTensor>>,
    /// `[tap] mode = "imprint"`: the imprinted model and the clients that download it.
    pub imprinted: Option<(Arc<Vec<EncodedTensor>>, Vec<String>)>,
}

pub(crate) enum Phase {
    /// Before the first round (waiting for clients) or between rounds (aggregating).
    Between,
    Open(OpenRound),
    Finished {
        rounds: u64,
    },
    /// Stopped by a fatal error before the run was over: every client's next call is told
    /// `reason` (for a short grace period), then the server exits with the error.
    Stopped {
        reason: String,
    },
}

pub(crate) struct State {
    pub clients: Registry,
    pub phase: Phase,
}

/// A received, fully checked update on its way to the round engine.
pub(crate) struct Submission {
    pub client: String,
    pub round: u64,
    pub examples: u64,
    pub train_loss: f64,
    /// In the order of [`Shared::layout`].
    pub update: Vec<Tensor>,
    pub reply: oneshot::Sender<Result<(), Status>>,
}

/// Bounds on what clients may claim, fixed when the run starts.
pub(crate) struct Limits {
    /// Examples in the data set's training split: no client can hold more.
    pub train_examples: u64,
    /// The most clients a round may sample, when the aggregation rule keeps the round's
    /// updates (`aggregation.memory_budget_mib`); `None` for the streamed mean.
    pub round_capacity: Option<usize>,
}

/// What the handlers and the engine share.
pub(crate) struct Shared {
    pub config: RunConfig,
    pub run_id: String,
    pub spec_json: String,
    pub tokens: Option<Tokens>,
    /// Every tensor of the model (parameters and buffers), in parameter-store order: the layout
    /// of the global model and of every update.
    pub layout: Vec<TensorLayout>,
    pub limits: Limits,
    state: Mutex<State>,
    /// Bumped on every change a long-poll or the engine may be waiting for.
    changed: watch::Sender<u64>,
    /// Set when the server stops: long-polls end with `UNAVAILABLE`.
    closing: std::sync::atomic::AtomicBool,
    pub submissions: mpsc::Sender<Submission>,
}

impl Shared {
    pub fn new(
        config: RunConfig,
        run_id: String,
        spec_json: String,
        tokens: Option<Tokens>,
        layout: Vec<TensorLayout>,
        limits: Limits,
        submissions: mpsc::Sender<Submission>,
    ) -> Self {
        let clients = Registry::new(
            config.limits.max_clients,
            secs(config.limits.registration_ttl_s),
        );
        Self {
            config,
            run_id,
            spec_json,
            tokens,
            layout,
            limits,
            state: Mutex::new(State {
                clients,
                phase: Phase::Between,
            }),
            changed: watch::channel(0).0,
            closing: std::sync::atomic::AtomicBool::new(false),
            submissions,
        }
    }

    /// Locks the state. A handler that panicked while holding the lock cannot have left it
    /// half-updated in a way that matters more than stopping the whole server would.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes every long-poll and the engine.
    pub fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Stops: wakes every long-poll, which then answers `UNAVAILABLE`.
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify();
    }

    /// Stops the run on a fatal error: from now on every client's next call is answered with
    /// `reason`.
    pub fn stop(&self, reason: String) {
        self.lock().phase = Phase::Stopped { reason };
        self.notify();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A receiver woken by [`notify`](Self::notify).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The task id of `client` in `round`.
    pub fn task_id(&self, round: u64, client: &str) -> String {
        format!("{}:{round}:{client}", self.run_id)
    }

    /// Marks `client`'s slot in `round` (if still open and unresolved) as `slot`.
    pub fn resolve(&self, round: u64, client: &str, slot: Slot) {
        let mut state = self.lock();
        if let Phase::Open(open) = &mut state.phase {
            if open.round == round {
                if let Some(s) = open.slots.get_mut(client) {
                    if !s.resolved() {
                        *s = slot;
                    }
                }
            }
        }
        drop(state);
        self.notify();
    }

    /// Marks `client`'s update in `round` as added to the aggregate.
    pub fn resolve_accepted(&self, round: u64, client: &str) {
        let mut state = self.lock();
        if let Phase::Open(open) = &mut state.phase {
            if open.round == round {
                if let Some(s) = open.slots.get_mut(client) {
                    *s = Slot::Accepted;
                }
            }
        }
        drop(state);
        self.notify();
    }
}
