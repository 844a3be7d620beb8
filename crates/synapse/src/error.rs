//! Typed errors of the synapse crate: every failure names the layer or parameter involved.

/// Errors raised while building layers or applying the synaptic SGD step.
#[derive(Debug, thiserror::Error)]
pub enum SynapseError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(
        "layer `{layer}`: weight splitting needs its {units} output units to be divisible by Γ = {gamma}"
    )]
    NotSplittable {
        layer: String,
        units: usize,
        gamma: usize,
    },
    #[error("unknown method set `{input}`: {reason} (expected `none` or I, II, III / fuzzy, rejuvenation, splitting joined by `+`)")]
    BadMethodSet { input: String, reason: String },
    #[error("unknown BatchNorm mode `{0}` (expected `train`: batch statistics, or `eval`: running statistics)")]
    BadBnMode(String),
    #[error("unknown fuzzy placement `{0}` (expected `server`: the global factors scale the server's step, or `client`: each client scales its gradient by private factors)")]
    BadFuzzyPlacement(String),
    #[error("invalid hyper-parameter {name} = {value}: {reason}")]
    BadHyper {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
    #[error("parameter `{name}`: {problem}")]
    BadParameter { name: String, problem: String },
    #[error("duplicate parameter name `{0}`")]
    DuplicateParameter(String),
}

/// Result alias of the synapse crate.
pub type Result<T> = std::result::Result<T, SynapseError>;
