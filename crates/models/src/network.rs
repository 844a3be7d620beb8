//! The forward pass every architecture implements.

use candle_core::Tensor;
use synfed_synapse::{Mode, Result};

/// An architecture's forward pass: images `[B, C, H, W]` to logits `[B, classes]`.
///
/// Layers hold shared handles to the parameters (candle `Var`s), so a network is cheap to
/// keep next to its [`ParamStore`](synfed_synapse::ParamStore).
pub trait Network: Send + Sync {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor>;
}
