//! Typed errors of the experiment layer: each names the party (server, client) or the stage
//! that failed. The lower crates' errors are boxed: they are large, and an experiment's
//! `Result` travels through every call of a run.

use std::path::PathBuf;

/// Errors of an experiment.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("binding a loopback port for the simulated server: {0}")]
    Bind(#[source] std::io::Error),
    #[error("the server stopped: {0}")]
    Server(#[source] Box<synfed_server::ServerError>),
    #[error("client {name} failed: {source}")]
    Client {
        name: String,
        #[source]
        source: Box<synfed_client::ClientError>,
    },
    /// A server or client task panicked or was cancelled.
    #[error("the {party} task ended abnormally: {reason}")]
    Task { party: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(Box<synfed_data::DataError>),
    #[error(transparent)]
    Model(Box<synfed_models::ModelError>),
    #[error(transparent)]
    Synapse(Box<synfed_synapse::SynapseError>),
    #[error(transparent)]
    Attack(Box<synfed_attack::AttackError>),
    #[error(transparent)]
    Wire(Box<synfed_wire::WireError>),
    #[error("tensor operation: {0}")]
    Tensor(Box<candle_core::Error>),
}

impl LabError {
    /// An I/O failure to `action` the file or folder `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LabError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

macro_rules! boxed_from {
    ($($variant:ident($error:ty)),*) => {$(
        impl From<$error> for LabError {
            fn from(e: $error) -> Self {
                LabError::$variant(Box::new(e))
            }
        }
    )*};
}

boxed_from!(
    Server(synfed_server::ServerError),
    Data(synfed_data::DataError),
    Model(synfed_models::ModelError),
    Synapse(synfed_synapse::SynapseError),
    Attack(synfed_attack::AttackError),
    Wire(synfed_wire::WireError),
    Tensor(candle_core::Error)
);

/// Result alias of the experiment layer.
pub type Result<T> = std::result::Result<T, LabError>;
