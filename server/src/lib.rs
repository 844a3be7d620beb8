//! synfed's aggregation server.
//!
//! A federated run, served over gRPC (`proto/synfed.proto`): clients register, long-poll for
//! tasks, download the round's global model in chunks, and stream their updates back. The
//! server samples clients per round (seeded by (seed, round)), waits until every sampled client
//! has answered or the round's deadline passes, aggregates what arrived in a canonical order
//! (so the same seed gives the same bits), applies it — one `SynapticSgd` step for FedSGD, the
//! mean difference for FedAvg — evaluates on the held-out split, logs `rounds.csv` and writes a
//! checkpoint from which a killed run resumes exactly. The tap writes chosen clients' updates
//! as capture files for the attacker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), synfed_server::ServerError> {
//! let config = synfed_server::RunConfig::default();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let summary = synfed_server::run(config, listener, false, std::future::pending()).await?;
//! println!("{} rounds", summary.rounds.len());
//! # Ok(()) }
//! ```
//!
//! Shape after mini-redis: [`run`] takes a bound listener (tests bind port 0) and a shutdown
//! future; it returns when the run is over or the future completes.

pub mod aggregate;
pub mod aggregation;
pub mod config;
mod engine;
pub mod error;
pub mod imprint;
pub mod limits;
pub mod peer_text;
mod registry;
pub mod run_files;
pub mod sampling;
pub mod seeds;
mod service;
mod state;
mod tap;
pub mod tokens;

pub use config::{AggregationConfig, Algorithm, Rule, RunConfig};
pub use engine::{fingerprint, RunSummary};
pub use error::{Result, ServerError};
pub use run_files::{read_rounds, RoundRecord, RunFiles};
pub use tokens::Tokens;

use engine::Engine;
use service::Service;
use state::{Limits, Shared};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synfed_models::{InputShape, Model};
use synfed_synapse::SynapticSgd;
use synfed_wire::chunks::{TensorLayout, MAX_MESSAGE_BYTES};
use synfed_wire::proto::federation_server::FederationServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{error, info, warn};

/// The seed of the server's optimizer (rejuvenation after FedSGD steps) in a run of `seed`.
pub fn optimizer_seed(seed: u64) -> u64 {
    seeds::derive(seed, seeds::Purpose::Optimizer, 0, "")
}

fn read(path: &std::path::Path, what: &'static str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ServerError::Io {
        path: path.to_path_buf(),
        action: what,
        source,
    })
}

fn tls_config(config: &RunConfig) -> Result<Option<ServerTlsConfig>> {
    let s = &config.security;
    let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(
        read(cert, "read the TLS certificate")?,
        read(key, "read the TLS key")?,
    );
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &s.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca, "read the client CA")?));
    }
    Ok(Some(tls))
}

/// Serves the run of `config` on `listener` until it is over or `shutdown` completes.
///
/// With `resume`, continues from `config.out/checkpoint.safetensors` (the configuration must
/// match the one the checkpoint was written with in everything that determines results); the
/// run then reaches the same final model as an uninterrupted one.
pub async fn run(
    config: RunConfig,
    listener: TcpListener,
    resume: bool,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunSummary> {
    config.validate()?;
    let files = RunFiles::create(&config.out)?;
    std::fs::write(files.config(), config.to_toml()?).map_err(|source| ServerError::Io {
        path: files.config(),
        action: "write",
        source,
    })?;
    let data = config.data.clone();
    let splits =
        tokio::task::spawn_blocking(move || synfed_data::load(&data.name, data.dir.as_deref()))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??;
    let shape = splits.train.shape();
    let spec = config.model_spec(
        InputShape::new(shape.channels, shape.height, shape.width),
        splits.train.num_classes(),
    );
    let fingerprint = engine::fingerprint(&config);

    let (model, first_round, run_id, rng_position) = if resume {
        let (model, state) = files.load_checkpoint()?;
        if model.spec() != &spec {
            return Err(ServerError::Resume(
                "the checkpoint's model differs from the configuration's".into(),
            ));
        }
        if state.fingerprint != fingerprint {
            return Err(ServerError::Resume(format!(
                "the configuration differs from the checkpoint's in what determines results\n  checkpoint: {}\n  now:        {fingerprint}",
                state.fingerprint
            )));
        }
        let position: u128 = state
            .optimizer_rng
            .parse()
            .map_err(|_| ServerError::Resume("unreadable optimizer state".into()))?;
        info!(round = state.round, "resuming");
        (model, state.round + 1, state.run_id, Some(position))
    } else {
        let mut model = match &config.initial_model {
            Some(path) => initial_model(path, &spec)?,
            None => Model::build(&spec, candle_core::DType::F32, &candle_core::Device::Cpu)?,
        };
        if config.training.fuzzy_at == synfed_synapse::FuzzyPlacement::Client {
            // the clients scale their gradients by their own factors: the server steps without
            synfed_synapse::fuzzy_placement::neutralise(model.params_mut())?;
        }
        let run_id = format!(
            "run-{:016x}",
            seeds::derive(
                config.seed,
                seeds::Purpose::Sampling,
                u64::MAX,
                &fingerprint
            )
        );
        (model, 1, run_id, None)
    };
    files.start_rounds_log(first_round - 1)?;
    let mut optimizer = SynapticSgd::new(
        model.params(),
        config.training.lr,
        optimizer_seed(config.seed),
    );
    if let Some(position) = rng_position {
        optimizer.set_rng_position(position);
    }

    let tokens = match &config.security.tokens {
        Some(path) => Some(Tokens::from_file(path)?),
        None => {
            let loopback = config
                .listen
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback());
            if !loopback {
                warn!("no tokens configured: anyone who can reach the server can join the run");
            }
            None
        }
    };
    let tls = tls_config(&config)?;
    let layout: Vec<TensorLayout> = model
        .params()
        .tensors()
        .iter()
        .map(|(name, t)| TensorLayout::of(name.clone(), t))
        .collect();
    // the robust rules keep a round's updates: at least min_clients of them must fit
    let parameters = aggregation::flat::value_count(&layout);
    aggregation::check_budget(&config.aggregation, config.sampling.min_clients, parameters)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let limits = Limits {
        train_examples: splits.train.len() as u64,
        round_capacity: aggregation::capacity(&config.aggregation, parameters),
    };
    let spec_json =
        serde_json::to_string(model.spec()).map_err(|e| ServerError::Internal(e.to_string()))?;
    let test_len = splits.test.len();
    let eval_indices: Vec<usize> =
        (0..config.data.eval_limit.map_or(test_len, |l| l.min(test_len))).collect();

    let (submit, submissions) = tokio::sync::mpsc::channel(64);
    let shared = Arc::new(Shared::new(
        config, run_id, spec_json, tokens, layout, limits, submit,
    ));
    let service = FederationServer::new(Service {
        shared: Arc::clone(&shared),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);

    // One connection cannot open more than a handful of concurrent streams: an honest client
    // has at most one push and one poll in flight.
    let streams = shared.config.limits.max_streams_per_connection;
    let mut builder = Server::builder()
        .max_concurrent_streams(streams)
        .concurrency_limit_per_connection(streams as usize)
        .initial_stream_window_size(synfed_wire::chunks::STREAM_WINDOW)
        .initial_connection_window_size(synfed_wire::chunks::CONNECTION_WINDOW)
        .max_frame_size(synfed_wire::chunks::MAX_FRAME_BYTES);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = listener.local_addr().ok();
    let server = tokio::spawn(builder.add_service(service).serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async {
            let _ = stopped.await;
        },
    ));
    info!(run_id = %shared.run_id, ?addr, "serving");

    let tap = tap::Tap::new(
        &shared.config,
        model.spec().clone(),
        splits.normalization.clone(),
        files.clone(),
    );
    let mut engine = Engine {
        shared: Arc::clone(&shared),
        model: Arc::new(model),
        optimizer: Arc::new(Mutex::new(optimizer)),
        files,
        splits: Arc::new(splits),
        eval_indices: Arc::new(eval_indices),
        first_round,
        fingerprint,
        submissions,
        records: Vec::new(),
        tap,
    };
    let outcome = tokio::select! {
        result = engine.run() => result,
        () = shutdown => {
            info!("shutdown requested");
            Ok(())
        }
    };
    if let Err(fatal) = &outcome {
        // Tell the clients why before going: each one's next call gets the reason, for at most
        // timing.linger_s or until every registered client has been told.
        let reason = fatal.to_string();
        error!(%reason, "stopping on a fatal error; telling the clients");
        shared.stop(reason);
        engine::linger(&shared).await;
    }
    shared.close();
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => warn!(error = %e, "transport stopped with an error"),
        Ok(Err(e)) => warn!(error = %e, "transport task failed"),
        _ => {}
    }
    outcome?;
    Ok(engine.summary())
}

/// The weights a run starts from when `initial_model` is set: the checkpoint's model, which
/// must be the one the configuration builds (architecture, size, methods, hyper-parameters).
fn initial_model(path: &std::path::Path, spec: &synfed_models::ModelSpec) -> Result<Model> {
    let found =
        synfed_models::checkpoint::load(path, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    if found.model.spec() != spec {
        return Err(ServerError::Config(format!(
            "initial_model {}: holds another model than the configuration builds \
             (checkpoint: {:?}; configuration: {:?})",
            path.display(),
            found.model.spec(),
            spec
        )));
    }
    Ok(found.model)
}
