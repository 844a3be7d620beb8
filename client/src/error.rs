//! Errors of the client library.

/// What stops a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("the server refused the token: {0}")]
    Unauthenticated(String),
    #[error(
        "cannot reach the server at {url} after {attempts} attempts over {waited_s:.1} s: {last}"
    )]
    Unreachable {
        url: String,
        attempts: usize,
        waited_s: f64,
        last: String,
    },
    #[error("the server stopped: {reason}")]
    ServerStopped { reason: String },
    #[error("the server answered {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the server sent something unusable: {0}")]
    Protocol(String),
    #[error("the run trains on `{run}`, this client holds `{local}`")]
    DatasetMismatch { run: String, local: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("data: {0}")]
    Data(#[from] synfed_data::DataError),
    #[error("model: {0}")]
    Model(#[from] synfed_models::ModelError),
    #[error("optimizer: {0}")]
    Synapse(#[from] synfed_synapse::SynapseError),
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("escrow: {0}")]
    Wire(#[from] synfed_wire::WireError),
    #[error("encoding the update: {0}")]
    Encode(#[from] synfed_wire::chunks::EncodeError),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::Unauthenticated => ClientError::Unauthenticated(status.message().into()),
            tonic::Code::Aborted => ClientError::ServerStopped {
                reason: status
                    .message()
                    .strip_prefix("the server stopped: ")
                    .unwrap_or(status.message())
                    .into(),
            },
            code => ClientError::Refused {
                code,
                message: status.message().into(),
            },
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
