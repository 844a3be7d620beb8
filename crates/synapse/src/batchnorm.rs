//! BatchNorm over the channels of NCHW tensors, written with differentiable primitives.
//!
//! candle-nn's BatchNorm updates its running statistics in train mode and its clones share
//! them; here the caller chooses with [`Mode`] whether statistics are updated, and the
//! normalisation is composed of ops whose gradients candle can differentiate again (the
//! attack needs the gradient of a gradient).

use crate::error::Result;
use crate::kernels::{channel_affine, channel_center, channel_sum};
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
    /// Per-channel vectors enter through [`channel_sum`] and [`channel_affine`]: no op
    /// broadcasts (whose backward pass would sum over (0, 2, 3) with candle's slow reduction)
    /// and only three activation-sized tensors enter the graph (centred, squared, output).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let (centered, var) = if mode.uses_batch_stats() {
            let m = (b * h * w) as f64;
            let mean = (channel_sum(x)? / m)?;
            let centered = channel_center(x, &mean)?;
            let var = (channel_sum(&centered.sqr()?)? / m)?;
            if mode == Mode::Train {
                self.update_running_stats(x, &mean, &var)?;
            }
            (centered, var)
        } else {
            (
                channel_center(x, &value(&self.running_mean))?,
                value(&self.running_var),
            )
        };
        let scale = (value(&self.weight) / (var + self.eps)?.sqrt()?)?;
        Ok(channel_affine(&centered, &scale, &value(&self.bias))?)
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
