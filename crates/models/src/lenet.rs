//! The LeNet of *Deep Leakage from Gradients* (Zhu et al. 2019, `mit-han-lab/dlg`
//! `models/vision.py`; `LeNetZhu` in Geiping's `inversefed`): three 5×5 sigmoid convolutions
//! of 12 channels (strides 2, 2, 1, padding 2) and one Linear, every weight and bias drawn
//! from U(−0.5, 0.5) as DLG initialises it. Twice-differentiable everywhere (sigmoid), which is
//! why DLG chose it. For 32×32 inputs the Linear takes 12·8·8 = 768 features.

use crate::error::Result;
use crate::network::Network;
use crate::spec::ModelSpec;
use candle_core::Tensor;
use synfed_synapse::{Builder, Conv2d, Init, LayerOptions, Linear, Mode};

/// conv-sigmoid ×3, Linear.
pub struct LeNet {
    convs: Vec<Conv2d>,
    fc: Linear,
}

impl LeNet {
    /// Builds the LeNet of `spec` (channels `spec.width`, default 12).
    pub fn new(b: &mut Builder, spec: &ModelSpec) -> Result<Self> {
        let c = spec.width.unwrap_or(12);
        let hidden = LayerOptions {
            init: Some(Init::Uniform { bound: 0.5 }),
            ..LayerOptions::default()
        };
        let classifier = LayerOptions {
            init: Some(Init::Uniform { bound: 0.5 }),
            ..LayerOptions::classifier()
        };
        let mut convs = Vec::new();
        let (mut h, mut w, mut ch) = (spec.input.height, spec.input.width, spec.input.channels);
        for (i, stride) in [2usize, 2, 1].into_iter().enumerate() {
            convs.push(b.conv2d(&format!("conv{}", i + 1), ch, c, 5, stride, 2, hidden)?);
            // output size of a 5×5 convolution with padding 2
            h = (h - 1) / stride + 1;
            w = (w - 1) / stride + 1;
            ch = c;
        }
        let fc = b.linear("fc", c * h * w, spec.classes, classifier)?;
        Ok(Self { convs, fc })
    }
}

impl Network for LeNet {
    fn forward(&self, x: &Tensor, _mode: Mode) -> synfed_synapse::Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.convs {
            h = sigmoid(&conv.forward(&h)?)?;
        }
        self.fc.forward(&h.flatten_from(1)?)
    }
}

/// 1 / (1 + e^(−x)) from primitive ops, so candle can differentiate it twice.
fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}
