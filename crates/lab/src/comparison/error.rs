//! Typed errors of a comparison. Each variant's message is its own context only (the folder,
//! the cell, the file) and the cause is its `source`, so that a caller printing the chain
//! (`anyhow`'s `{:#}`) reads "cell mlp / III: attacking …: cause" once, without repetition.

use crate::error::LabError;
use std::path::PathBuf;

/// Why a comparison (or its merge, or its report) failed.
#[derive(Debug, thiserror::Error)]
pub enum ComparisonError {
    /// The configuration cannot run as it stands.
    #[error("{0}")]
    Invalid(String),
    #[error("defence `{defence}`")]
    Defence {
        defence: String,
        #[source]
        source: synfed_defence::DefenceError,
    },
    /// The data set could not be named or loaded (`context`: what was being done).
    #[error("{context}")]
    Data {
        context: String,
        #[source]
        source: Box<synfed_data::DataError>,
    },
    /// A model chosen to run is not one of the comparison's.
    #[error("{slug}: the comparison has no such model (it has {})", available.join(", "))]
    UnknownModel {
        slug: String,
        available: Vec<String>,
    },
    /// A shard is written `i/n` with 0 ≤ i < n.
    #[error("`{0}` is not i/n with 0 ≤ i < n")]
    Shard(String),
    #[error(
        "{} already holds another comparison ({}); use a new --out or delete it",
        out.display(),
        saved.display()
    )]
    AnotherComparison { out: PathBuf, saved: PathBuf },
    /// Folders to merge that hold different comparisons.
    #[error("{} holds another comparison than {}", path.display(), first.display())]
    DifferentComparisons { path: PathBuf, first: PathBuf },
    #[error("merging needs at least one folder")]
    NothingToMerge,
    /// Cells (`model / variant[ / state]`) without a result where every one is needed.
    #[error("{} cells are not finished: {}", .0.len(), .0.join(", "))]
    Unfinished(Vec<String>),
    #[error("the federation stopped early")]
    Stopped,
    /// One cell failed.
    #[error("cell {model} / {variant}")]
    Cell {
        model: String,
        variant: String,
        #[source]
        source: Box<ComparisonError>,
    },
    /// One state of a `--kind inversion` cell failed.
    #[error("{model} / {variant} / {state}")]
    State {
        model: String,
        variant: String,
        state: String,
        #[source]
        source: Box<LabError>,
    },
    #[error("attacking {}", capture.display())]
    Attack {
        capture: PathBuf,
        #[source]
        source: Box<LabError>,
    },
    #[error("training {model} / {variant}")]
    Training {
        model: String,
        variant: String,
        #[source]
        source: Box<LabError>,
    },
    #[error(transparent)]
    Lab(Box<LabError>),
    /// An I/O failure: `action` is `reading`, `writing`, `creating` or `clearing`.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that does not parse (`cell.json`, `compare.toml`).
    #[error("in {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("writing the effective configuration")]
    SaveConfig(#[source] toml::ser::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Plot(Box<synfed_report::PlotError>),
}

impl ComparisonError {
    /// An I/O failure to `action` (`reading`, `writing`, …) `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ComparisonError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A file at `path` that does not parse.
    pub fn parse(
        path: impl Into<PathBuf>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ComparisonError::Parse {
            path: path.into(),
            source: Box::new(source),
        }
    }
}

impl From<LabError> for ComparisonError {
    fn from(e: LabError) -> Self {
        ComparisonError::Lab(Box::new(e))
    }
}

impl From<synfed_report::PlotError> for ComparisonError {
    fn from(e: synfed_report::PlotError) -> Self {
        ComparisonError::Plot(Box::new(e))
    }
}

/// Result alias of a comparison.
pub type Result<T> = std::result::Result<T, ComparisonError>;
