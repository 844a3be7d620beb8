//! A small AlexNet for 28×28 and 32×32 inputs, in the spirit of the paper authors'
//! `AlexNetMini` (Krizhevsky et al. 2012, scaled down for small images): five convolutions
//! (w, 3w, 6w, 4w, 4w channels; 5×5, 5×5, 3×3, 3×3, 3×3 kernels, "same" padding) with 2×2 max
//! pooling after the first, second and fifth, then three Linear layers (16w, 16w, classes).
//! With w = 64: 64-192-384-256-256 channels as AlexNet's features, and 1 024-unit hidden
//! layers instead of 4 096. No dropout (the paper uses no regularization, §4.1).

use crate::error::{ModelError, Result};
use crate::network::Network;
use crate::spec::ModelSpec;
use candle_core::Tensor;
use synfed_synapse::kernels::relu;
use synfed_synapse::{pool, Builder, Conv2d, LayerOptions, Linear, Mode};

/// conv ×5 with three max pools, Linear ×3, ReLU everywhere.
pub struct AlexNet {
    convs: Vec<Conv2d>,
    fcs: Vec<Linear>,
}

impl AlexNet {
    /// Builds the AlexNet of `spec` (first-conv width `spec.width`, default 64).
    pub fn new(b: &mut Builder, spec: &ModelSpec) -> Result<Self> {
        let w = spec.width.unwrap_or(64);
        let (h, wd) = (spec.input.height / 8, spec.input.width / 8);
        if h == 0 || wd == 0 {
            return Err(ModelError::BadInput {
                arch: spec.arch,
                input: spec.input,
                reason: "three 2×2 max pools need at least 8×8 pixels".into(),
            });
        }
        let channels = [spec.input.channels, w, 3 * w, 6 * w, 4 * w, 4 * w];
        let kernels = [5, 5, 3, 3, 3];
        let mut convs = Vec::new();
        for i in 0..5 {
            let k = kernels[i];
            convs.push(b.conv2d(
                &format!("conv{}", i + 1),
                channels[i],
                channels[i + 1],
                k,
                1,
                k / 2,
                LayerOptions::default(),
            )?);
        }
        let flat = 4 * w * h * wd;
        let fcs = vec![
            b.linear("fc1", flat, 16 * w, LayerOptions::default())?,
            b.linear("fc2", 16 * w, 16 * w, LayerOptions::default())?,
            b.linear("fc3", 16 * w, spec.classes, LayerOptions::classifier())?,
        ];
        Ok(Self { convs, fcs })
    }
}

impl Network for AlexNet {
    fn forward(&self, x: &Tensor, _mode: Mode) -> synfed_synapse::Result<Tensor> {
        let mut h = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            h = relu(&conv.forward(&h)?)?;
            if matches!(i, 0 | 1 | 4) {
                h = pool::max_pool2d(&h, 2)?;
            }
        }
        let mut h = h.flatten_from(1)?;
        for (i, fc) in self.fcs.iter().enumerate() {
            h = fc.forward(&h)?;
            if i + 1 < self.fcs.len() {
                h = relu(&h)?;
            }
        }
        Ok(h)
    }
}
