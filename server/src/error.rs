//! Errors of the server library.

use std::path::PathBuf;

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid run configuration: {0}")]
    Config(String),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("tokens file {}: {reason}", path.display())]
    Tokens { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("data: {0}")]
    Data(#[from] synfed_data::DataError),
    #[error("model: {0}")]
    Model(#[from] synfed_models::ModelError),
    #[error("optimizer: {0}")]
    Synapse(#[from] synfed_synapse::SynapseError),
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("capture: {0}")]
    Wire(#[from] synfed_wire::WireError),
    #[error("aggregation: {0}")]
    Aggregation(#[from] crate::aggregation::AggregationError),
    #[error("encoding the model: {0}")]
    Encode(#[from] synfed_wire::chunks::EncodeError),
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("only {registered} of the {needed} clients needed registered within {waited_s} s")]
    NotEnoughClients {
        registered: usize,
        needed: usize,
        waited_s: f64,
    },
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;
