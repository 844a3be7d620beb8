//! A defence, specified once: the value ([`Defence`]: none, DP clipping with Gaussian noise,
//! pruning, or both), its text form (parsed, checked, printed, serialised) and the privacy
//! accountant of DP-SGD ([`accountant`]: ε at δ from the noise multiplier, sampling rate and
//! steps). The client applies a defence to its updates (`synfed_client::defence`); the server
//! checks a run's defence before the run starts; a comparison reports each defence's ε. All
//! three read the same text through this crate.

pub mod accountant;
mod spec;

pub use spec::{Defence, DefenceError, Dp, Prune, Result};
