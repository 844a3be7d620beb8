//! A 2-D convolution whose output channels may be split (method III).

use crate::error::Result;
use crate::kernels::{channel_affine, conv2d, ConvParams};
use crate::splitting::Split;
use crate::substitution::value;
use candle_core::{Tensor, Var};

/// Square-kernel convolution of NCHW tensors, then weight splitting over channels when split.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Var,
    bias: Option<Var>,
    stride: usize,
    padding: usize,
    split: Option<Split>,
}

impl Conv2d {
    pub(crate) fn new(
        weight: Var,
        bias: Option<Var>,
        stride: usize,
        padding: usize,
        split: Option<Split>,
    ) -> Self {
        Self {
            weight,
            bias,
            stride,
            padding,
            split,
        }
    }

    /// Weight `[out, in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        self.weight.as_tensor()
    }

    /// Whether the layer is split.
    pub fn split(&self) -> Option<Split> {
        self.split
    }

    /// Forward pass on `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let params = ConvParams {
            stride: self.stride,
            padding: self.padding,
        };
        let mut y = conv2d(x, &value(&self.weight), params)?;
        if let Some(b) = &self.bias {
            let bias = value(b);
            y = channel_affine(&y, &bias.ones_like()?, &bias)?;
        }
        match &self.split {
            Some(split) => split.apply(&y),
            None => Ok(y),
        }
    }
}
