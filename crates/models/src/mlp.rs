//! The paper's MLP (§4.1): one hidden layer of 1 000 ReLU units for 28×28 inputs (MNIST),
//! two hidden layers of 3 000 for 32×32×3 inputs (CIFAR). Other input sizes get the CIFAR
//! layout when they have more than one channel, the MNIST one otherwise.

use crate::error::Result;
use crate::network::Network;
use crate::spec::ModelSpec;
use candle_core::Tensor;
use synfed_synapse::kernels::relu;
use synfed_synapse::{Builder, LayerOptions, Linear, Mode};

/// Flatten → (Linear → ReLU)×L → Linear.
pub struct Mlp {
    hidden: Vec<Linear>,
    head: Linear,
}

impl Mlp {
    /// Builds the MLP of `spec` (hidden width `spec.width`, default 1 000 or 3 000).
    pub fn new(b: &mut Builder, spec: &ModelSpec) -> Result<Self> {
        let (layers, default_width) = if spec.input.channels == 1 {
            (1, 1000)
        } else {
            (2, 3000)
        };
        let width = spec.width.unwrap_or(default_width);
        let mut inputs = spec.input.elem_count();
        let mut hidden = Vec::new();
        for i in 0..layers {
            hidden.push(b.linear(
                &format!("fc{}", i + 1),
                inputs,
                width,
                LayerOptions::default(),
            )?);
            inputs = width;
        }
        let head = b.linear(
            &format!("fc{}", layers + 1),
            inputs,
            spec.classes,
            LayerOptions::classifier(),
        )?;
        Ok(Self { hidden, head })
    }
}

impl Network for Mlp {
    fn forward(&self, x: &Tensor, _mode: Mode) -> synfed_synapse::Result<Tensor> {
        let mut h = x.flatten_from(1)?;
        for layer in &self.hidden {
            h = relu(&layer.forward(&h)?)?;
        }
        self.head.forward(&h)
    }
}
