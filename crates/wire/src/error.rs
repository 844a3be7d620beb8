//! Typed errors of the wire formats.
//!
//! Every problem with a file is a [`WireError::Invalid`] naming the kind of file, where it came
//! from and a [`Problem`]: callers (and tests) can match on the problem, people read the
//! message.

use std::fmt;

/// Which wire file an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// An intercepted client update ([`crate::Capture`]).
    Capture,
    /// The ground truth of a capture ([`crate::Escrow`]).
    Escrow,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Capture => "capture",
            FileKind::Escrow => "escrow",
        })
    }
}

/// What is wrong with a capture or escrow file (or with one about to be written).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("not a safetensors file: {0}")]
    NotSafetensors(String),
    #[error("no `{key}` metadata in the safetensors header: not a synfed {kind} file")]
    MissingHeader { key: &'static str, kind: FileKind },
    #[error("malformed `{key}` header: {reason}")]
    MalformedHeader { key: &'static str, reason: String },
    #[error("format is `{found}`, expected `{expected}`")]
    WrongFormat {
        found: String,
        expected: &'static str,
    },
    #[error(
        "version {found} is not supported (supported versions: {})",
        list(supported)
    )]
    UnsupportedVersion {
        found: String,
        supported: &'static [u64],
    },
    #[error("the spec is too large to build: {0}")]
    SpecTooLarge(String),
    #[error("invalid spec: {0}")]
    BadSpec(String),
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("unexpected tensor `{0}`")]
    UnexpectedTensor(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` has dtype {found}, expected {expected}")]
    BadDtype {
        name: String,
        found: String,
        expected: &'static str,
    },
    #[error("tensor `{0}` holds NaN or infinite values")]
    NonFinite(String),
    #[error("{found} labels for a batch of {batch_size}")]
    LabelCount { found: usize, batch_size: usize },
    #[error("label {label} (example {index}) is not a class of a {classes}-class model")]
    LabelOutOfRange {
        index: usize,
        label: u32,
        classes: usize,
    },
    #[error("a FedAvg update needs `{0}` (the local training it summarises)")]
    FedAvgWithout(&'static str),
    #[error("`examples` is 0: an update is computed on at least one example")]
    NoExamples,
    #[error("{0}")]
    BadMeta(String),
}

fn list(versions: &[u64]) -> String {
    versions
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Errors of writing, reading or using wire files.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The file (or the value about to be written) is invalid.
    #[error("{kind} {path}: {problem}")]
    Invalid {
        kind: FileKind,
        /// The file, or `(in memory)` for bytes.
        path: String,
        problem: Problem,
    },
    #[error("{kind} {path}: cannot {action}: {source}")]
    Io {
        kind: FileKind,
        path: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A capture or escrow does not go with the model or the other file it is used with.
    #[error("mismatch: {0}")]
    Mismatch(String),
    #[error(transparent)]
    Model(#[from] synfed_models::ModelError),
    #[error(transparent)]
    Synapse(#[from] synfed_synapse::SynapseError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl WireError {
    /// The [`Problem`] of an [`WireError::Invalid`].
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            WireError::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// Result alias of the wire formats.
pub type Result<T> = std::result::Result<T, WireError>;
