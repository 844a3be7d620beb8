//! Geiping et al.'s ConvNet (`inversefed/nn/models.py`, *Inverting Gradients*, NeurIPS 2020),
//! the benchmark model of the gradient-inversion literature, as upstream actually builds it.
//!
//! Upstream's `OrderedDict` names `conv6`/`bn6`/`relu6` twice; the second entry replaces the
//! first in place, so the network has **8** conv-BN-ReLU layers: widths w, 2w, 2w, 4w, 4w, 4w,
//! `MaxPool2d(3)`, 4w, 4w, `MaxPool2d(3)`, then a Linear from 36·w (= 4w · 3 · 3 for 32×32
//! inputs). At w = 64 with 10 classes that is 2,904,970 parameters. The pools floor
//! 32 → 10 → 3. Our names are `conv0…conv7`, `bn0…bn7`, `linear`.

use crate::error::{ModelError, Result};
use crate::network::Network;
use crate::spec::ModelSpec;
use candle_core::Tensor;
use synfed_synapse::{pool, BatchNorm2d, Builder, Conv2d, LayerOptions, Linear, Mode};

/// conv-BN-ReLU ×6, max-pool 3, conv-BN-ReLU ×2, max-pool 3, Linear.
pub struct ConvNet {
    blocks: Vec<(Conv2d, BatchNorm2d)>,
    linear: Linear,
}

impl ConvNet {
    /// Builds the ConvNet of `spec` (width `spec.width`, default 64).
    pub fn new(b: &mut Builder, spec: &ModelSpec) -> Result<Self> {
        let w = spec.width.unwrap_or(64);
        let (h, wd) = (spec.input.height / 3 / 3, spec.input.width / 3 / 3);
        if h == 0 || wd == 0 {
            return Err(ModelError::BadInput {
                arch: spec.arch,
                input: spec.input,
                reason: "two 3×3 max pools need at least 9×9 pixels".into(),
            });
        }
        let widths = [
            spec.input.channels,
            w,
            2 * w,
            2 * w,
            4 * w,
            4 * w,
            4 * w,
            4 * w,
            4 * w,
        ];
        let mut blocks = Vec::new();
        for i in 0..8 {
            let conv = b.conv2d(
                &format!("conv{i}"),
                widths[i],
                widths[i + 1],
                3,
                1,
                1,
                LayerOptions::default(),
            )?;
            let bn = b.batch_norm2d(&format!("bn{i}"), widths[i + 1])?;
            blocks.push((conv, bn));
        }
        let linear = b.linear(
            "linear",
            4 * w * h * wd,
            spec.classes,
            LayerOptions::classifier(),
        )?;
        Ok(Self { blocks, linear })
    }
}

impl Network for ConvNet {
    fn forward(&self, x: &Tensor, mode: Mode) -> synfed_synapse::Result<Tensor> {
        let mut h = x.clone();
        for (i, (conv, bn)) in self.blocks.iter().enumerate() {
            h = bn.forward_relu(&conv.forward(&h)?, mode)?;
            if i == 5 || i == 7 {
                h = pool::max_pool2d(&h, 3)?;
            }
        }
        self.linear.forward(&h.flatten_from(1)?)
    }
}
