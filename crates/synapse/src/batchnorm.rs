//! BatchNorm over the channels of NCHW tensors, written with differentiable primitives.
//!
//! candle-nn's BatchNorm updates its running statistics in train mode and its clones share
//! them; here the caller chooses with [`Mode`] whether statistics are updated, and the
//! normalisation is composed of ops whose gradients candle can differentiate again (the
//! attack needs the gradient of a gradient).

use crate::batch_norm_recording;
use crate::error::Result;
use crate::kernels::{self, batch_norm, batch_norm_relu, channel_affine};
use crate::mode::Mode;
use crate::substitution::value;
use candle_core::{Tensor, Var};

/// PyTorch's BatchNorm2d: ε = 1e-5, momentum 0.1, unbiased variance in the running estimate.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    pub(crate) fn new(weight: Var, bias: Var, running_mean: Var, running_var: Var) -> Self {
        Self {
            weight,
            bias,
            running_mean,
            running_var,
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    /// Forward pass on `[B, C, H, W]`: `(x − μ) · γ/√(σ² + ε) + β` per channel.
    ///
    /// With batch statistics it is one op ([`batch_norm`]); with the running ones one
    /// per-channel affine map. No op broadcasts, so no backward pass sums over (0, 2, 3) with
    /// candle's slow reduction.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.normalize(x, mode, false)
    }

    /// `relu(self.forward(x, mode))`; with batch statistics one op (one graph node).
    pub fn forward_relu(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.normalize(x, mode, true)
    }

    fn normalize(&self, x: &Tensor, mode: Mode, relu: bool) -> Result<Tensor> {
        if mode.uses_batch_stats() {
            batch_norm_recording::note(self.running_mean.as_tensor().id(), x);
            let norm = if relu { batch_norm_relu } else { batch_norm };
            let (y, stats) = norm(x, &value(&self.weight), &value(&self.bias), self.eps)?;
            if mode == Mode::Train {
                self.update_running_stats(x, &stats.mean, &stats.var)?;
            }
            return Ok(y);
        }
        let scale = (value(&self.weight) / (value(&self.running_var) + self.eps)?.sqrt()?)?;
        let shift = (value(&self.bias) - (value(&self.running_mean) * &scale)?)?;
        let y = channel_affine(x, &scale, &shift)?;
        Ok(if relu { kernels::relu(&y)? } else { y })
    }

    fn update_running_stats(&self, x: &Tensor, mean: &Tensor, var: &Tensor) -> Result<()> {
        let (b, _, h, w) = x.dims4()?;
        let n = (b * h * w) as f64;
        let unbiased = (var.detach() * (n / (n - 1.0).max(1.0)))?;
        let m = self.momentum;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(())
    }
}
