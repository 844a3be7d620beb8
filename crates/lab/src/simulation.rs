//! A whole federation in one process: the server on a free loopback port and its clients,
//! talking real gRPC (the same server, clients, wire format and tap as `synfed serve` and
//! `synfed join` on separate hosts).
//!
//! One implementation serves every in-process federation — `synfed simulate`, each cell of
//! `synfed compare`, the end-to-end tests and the federation benchmark — so that what the
//! tests check is what the commands run. A client that fails stops the whole run (its error
//! is the run's); when the server has finished, clients still polling are told to leave and
//! given [`DRAIN`] to do so. [`federate`] is the same on a runtime of its own, for callers
//! that are not async (the commands, a comparison's cells).

use crate::error::{LabError, Result};
use candle_core::Device;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use synfed_client::{ClientConfig, ClientReport, EscrowConfig, Share};
use synfed_data::Partition;
use synfed_server::{RunConfig, RunSummary, Tokens};
use tokio::sync::watch;

/// How long clients may take to leave once the server has finished.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The outcome of a simulated federation.
#[derive(Debug)]
pub struct Simulated {
    pub summary: RunSummary,
    /// The clients' reports, in the order their configurations were given.
    pub clients: Vec<ClientReport>,
}

/// The standard simulated clients: `client-0` … `client-{N−1}`, client k holding share k/N of
/// the run's training split.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub clients: usize,
    pub split: Partition,
    /// Each client's token, when the run requires tokens (`security.tokens`).
    pub tokens: Option<Tokens>,
}

impl Fleet {
    /// `clients` clients sharing the split by `split`, without tokens.
    pub fn new(clients: usize, split: Partition) -> Self {
        Self {
            clients,
            split,
            tokens: None,
        }
    }

    /// Name of client `k`.
    pub fn name(k: usize) -> String {
        format!("client-{k}")
    }

    /// The configurations of the fleet's clients for the run `config` served at `url`: data
    /// and partition seed from the run, and, for the clients the run's tap watches, escrow of
    /// the tapped rounds into `out/captures` (where the tap writes the captures), so that
    /// every capture can be scored.
    pub fn client_configs(&self, config: &RunConfig, url: &str) -> Result<Vec<ClientConfig>> {
        (0..self.clients)
            .map(|k| {
                let name = Self::name(k);
                let share = Share {
                    index: k,
                    count: self.clients,
                    scheme: self.split,
                    seed: config.seed,
                };
                let mut client = ClientConfig::new(url, &name, &config.data.name, share);
                client.data_dir = config.data.dir.clone();
                if let Some(tokens) = &self.tokens {
                    let token = tokens.token_of(&name).ok_or_else(|| {
                        LabError::Config(format!(
                            "the tokens file has no token for {name} (simulated clients are \
                             client-0 … client-{})",
                            self.clients.saturating_sub(1)
                        ))
                    })?;
                    client.token = Some(token.to_string());
                }
                let tap = &config.tap;
                if !tap.rounds.is_empty() && (tap.clients.is_empty() || tap.clients.contains(&name))
                {
                    client.escrow = Some(EscrowConfig {
                        dir: config.out.join("captures"),
                        rounds: tap.rounds.clone(),
                    });
                }
                Ok(client)
            })
            .collect()
    }
}

/// Runs the server of `config` on a free port of 127.0.0.1 and the clients that `clients`
/// configures for the server's URL, all on `device`, until the run is over or `shutdown`
/// completes; returns the server's summary and the clients' reports. Must be called within a
/// tokio runtime.
pub async fn simulate(
    mut config: RunConfig,
    clients: impl FnOnce(&RunConfig, &str) -> Result<Vec<ClientConfig>>,
    device: &Device,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Simulated> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(LabError::Bind)?;
    let addr = listener.local_addr().map_err(LabError::Bind)?;
    config.listen = addr.to_string();
    let clients = clients(&config, &format!("http://{addr}"))?;

    let stop = Arc::new(watch::channel(false).0);
    let stopper = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            shutdown.await;
            stop.send_replace(true);
        })
    };
    let mut server = tokio::spawn(synfed_server::run(
        config,
        listener,
        false,
        stopped(stop.subscribe()),
    ));
    let mut running = tokio::task::JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        let name = client.name.clone();
        let run = synfed_client::run(client, device.clone(), stopped(stop.subscribe()));
        running.spawn(async move { (index, name, run.await) });
    }

    let mut reports = Vec::new();
    let mut failure: Option<LabError> = None;
    let mut settle = |joined, failure: &mut Option<LabError>| match client_outcome(joined) {
        Ok(report) => reports.push(report),
        Err(e) => {
            tracing::error!("{e}");
            failure.get_or_insert(e);
            stop.send_replace(true);
        }
    };
    let served = loop {
        tokio::select! {
            served = &mut server => break served,
            Some(joined) = running.join_next() => settle(joined, &mut failure),
        }
    };
    // the run is over: clients still polling leave now
    stop.send_replace(true);
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some(joined) = running.join_next().await {
            settle(joined, &mut failure);
        }
    })
    .await;
    if drained.is_err() {
        running.abort_all();
    }
    stopper.abort();
    let summary = served.map_err(|e| LabError::Task {
        party: "server".into(),
        reason: e.to_string(),
    })??;
    if let Some(e) = failure {
        return Err(e);
    }
    reports.sort_by_key(|(index, _)| *index);
    Ok(Simulated {
        summary,
        clients: reports.into_iter().map(|(_, report)| report).collect(),
    })
}

/// Runs the federation of `config` with the clients of `fleet` to its end, blocking, on a tokio
/// runtime of its own whose every thread has a GPU's driver context current (see
/// `synfed_synapse::cuda_context`); `shutdown` completing stops the run early (the summary
/// then says it is not complete). [`simulate`] for callers outside a runtime.
pub fn federate(
    config: RunConfig,
    fleet: &Fleet,
    device: &Device,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunSummary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // a GPU's context current on every thread that may use or drop its tensors
        .on_thread_start(synfed_synapse::cuda_context::bind_registered_or_warn)
        .build()
        .map_err(LabError::Runtime)?;
    runtime.block_on(async {
        let simulated = simulate(
            config,
            |config, url| fleet.client_configs(config, url),
            device,
            shutdown,
        )
        .await?;
        Ok(simulated.summary)
    })
}

/// A client task's report (with its position), or why it failed.
fn client_outcome(
    joined: std::result::Result<
        (usize, String, synfed_client::Result<ClientReport>),
        tokio::task::JoinError,
    >,
) -> Result<(usize, ClientReport)> {
    match joined {
        Ok((index, _, Ok(report))) => Ok((index, report)),
        Ok((_, name, Err(source))) => Err(LabError::Client {
            name,
            source: Box::new(source),
        }),
        Err(e) => Err(LabError::Task {
            party: "client".into(),
            reason: e.to_string(),
        }),
    }
}

/// A future that completes once `stop` says true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
