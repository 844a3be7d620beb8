//! BatchNorm over the channels of NCHW tensors, written with differentiable primitives.
//!
//! candle-nn's BatchNorm updates its running statistics in train mode and its clones share
//! them; here the caller chooses with [`Mode`] whether statistics are updated, and the
//! normalisation is composed of ops whose gradients candle can differentiate again (the
//! attack needs the gradient of a gradient).

use crate::error::Result;
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

    /// Forward pass on `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let channel = |t: &Var| value(t).reshape((1, (), 1, 1));
        let (mean, var) = if mode.uses_batch_stats() {
            let mean = x.mean_keepdim((0, 2, 3))?;
            let centered = x.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim((0, 2, 3))?;
            if mode == Mode::Train {
                self.update_running_stats(x, &mean, &var)?;
            }
            (mean, var)
        } else {
            (channel(&self.running_mean)?, channel(&self.running_var)?)
        };
        let normed = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed
            .broadcast_mul(&channel(&self.weight)?)?
            .broadcast_add(&channel(&self.bias)?)?)
    }

    fn update_running_stats(&self, x: &Tensor, mean: &Tensor, var: &Tensor) -> Result<()> {
        let (b, _, h, w) = x.dims4()?;
        let n = (b * h * w) as f64;
        let unbiased = (var.detach().flatten_all()? * (n / (n - 1.0).max(1.0)))?;
        let m = self.momentum;
        let new_mean =
            ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach().flatten_all()? * m)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        Ok(())
    }
}
