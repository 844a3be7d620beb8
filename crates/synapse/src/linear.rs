//! A fully connected layer whose output units may be split (method III).

use crate::error::Result;
use crate::kernels::matmul;
use crate::splitting::Split;
use crate::substitution::value;
use candle_core::{Tensor, Var};

/// y = x Wᵀ + b, then weight splitting when the layer is split.
#[derive(Clone, Debug)]
pub struct Linear {
    name: String,
    weight: Var,
    bias: Option<Var>,
    split: Option<Split>,
}

impl Linear {
    pub(crate) fn new(name: String, weight: Var, bias: Option<Var>, split: Option<Split>) -> Self {
        Self {
            name,
            weight,
            bias,
            split,
        }
    }

    /// The layer's name prefix.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        self.weight.as_tensor()
    }

    /// Bias `[out]`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref().map(Var::as_tensor)
    }

    /// Whether the layer is split.
    pub fn split(&self) -> Option<Split> {
        self.split
    }

    /// Forward pass on `[B, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // x·Wᵀ with W read in its [out, in] layout: no transposed copies in either pass
        let mut y = matmul(x, false, &value(&self.weight), true)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&value(b))?;
        }
        match &self.split {
            Some(split) => split.apply(&y),
            None => Ok(y),
        }
    }
}
