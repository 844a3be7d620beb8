//! Typed errors of the model zoo.

use synfed_synapse::SynapseError;

/// Errors of building, running, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Synapse(#[from] SynapseError),
    #[error(transparent)]
    Data(#[from] synfed_data::DataError),
    #[error("training diverged: the loss became {loss} at epoch {epoch}, step {step}")]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("unknown architecture `{0}` (expected one of: {list})", list = crate::arch::Arch::NAMES.join(", "))]
    UnknownArch(String),
    #[error("{arch} cannot take inputs of shape {input}: {reason}")]
    BadInput {
        arch: crate::arch::Arch,
        input: crate::spec::InputShape,
        reason: String,
    },
    #[error("{arch}: {field} is {value}, more than the budget of {max}")]
    OverBudget {
        arch: crate::arch::Arch,
        field: String,
        value: u64,
        max: u64,
    },
    #[error("model setting `{field}` = {value}: {reason}")]
    BadSetting {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("batch of shape {got:?} does not match the model's input {want}")]
    BatchShape {
        got: Vec<usize>,
        want: crate::spec::InputShape,
    },
    #[error("the loss does not depend on parameter `{0}`")]
    NoGradient(String),
    #[error("checkpoint {path}: {problem}")]
    Checkpoint { path: String, problem: String },
    #[error("update: {0}")]
    UpdateLayout(String),
}

/// Result alias of the model zoo.
pub type Result<T> = std::result::Result<T, ModelError>;

impl From<safetensors::SafeTensorError> for ModelError {
    fn from(e: safetensors::SafeTensorError) -> Self {
        ModelError::Checkpoint {
            path: String::new(),
            problem: e.to_string(),
        }
    }
}
