//! How a forward pass treats BatchNorm.
//!
//! Besides PyTorch's train/eval there is a third mode: batch statistics *without* updating the
//! running statistics. A client computing a FedSGD gradient and an attacker replaying that
//! computation thousands of times both need train-mode arithmetic, but must not drift the
//! model's running statistics (cloned BatchNorms share them).

/// Forward-pass mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Batch statistics; running statistics are updated (training).
    Train,
    /// Batch statistics; running statistics are left untouched.
    TrainFrozenStats,
    /// Running statistics (evaluation).
    Eval,
}

impl Mode {
    /// Whether BatchNorm normalises with the statistics of the current batch.
    pub fn uses_batch_stats(self) -> bool {
        !matches!(self, Mode::Eval)
    }
}
