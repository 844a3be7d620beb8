//! He et al.'s CIFAR ResNets (*Deep Residual Learning*, 2016, §4.2): a 3×3 convolution of 16
//! channels, three stages of n basic blocks with 16, 32, 64 channels (stride 2 at the start of
//! stages 2 and 3), global average pooling and a Linear; depth 6n + 2 (ResNet20: n = 3,
//! ResNet32: n = 5, ResNet56: n = 9).
//!
//! Built as in Geiping's `inversefed` (torchvision's `BasicBlock`), which the paper's attack
//! experiments used: convolutions without bias followed by BatchNorm, and a 1×1 convolution +
//! BatchNorm shortcut where the shape changes (He's option B). Names follow torchvision:
//! `conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`, `fc`. Initialisation is
//! PyTorch's default (inversefed re-initialises convolutions with Kaiming-normal, fan-out).

use crate::error::Result;
use crate::network::Network;
use crate::spec::ModelSpec;
use candle_core::Tensor;
use synfed_synapse::kernels::add_relu;
use synfed_synapse::{pool, BatchNorm2d, Builder, Conv2d, LayerOptions, Linear, Mode};

/// A basic residual block: conv-BN-ReLU, conv-BN, + shortcut, ReLU.
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl BasicBlock {
    fn new(
        b: &mut Builder,
        inputs: usize,
        outputs: usize,
        stride: usize,
    ) -> synfed_synapse::Result<Self> {
        let conv = LayerOptions::no_bias();
        let conv1 = b.conv2d("conv1", inputs, outputs, 3, stride, 1, conv)?;
        let bn1 = b.batch_norm2d("bn1", outputs)?;
        let conv2 = b.conv2d("conv2", outputs, outputs, 3, 1, 1, conv)?;
        let bn2 = b.batch_norm2d("bn2", outputs)?;
        let downsample = if stride != 1 || inputs != outputs {
            Some(b.scope("downsample", |b| {
                Ok((
                    b.conv2d("0", inputs, outputs, 1, stride, 0, conv)?,
                    b.batch_norm2d("1", outputs)?,
                ))
            })?)
        } else {
            None
        };
        Ok(Self {
            conv1,
            bn1,
            conv2,
            bn2,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> synfed_synapse::Result<Tensor> {
        let h = self.bn1.forward_relu(&self.conv1.forward(x)?, mode)?;
        let h = self.bn2.forward(&self.conv2.forward(&h)?, mode)?;
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x)?, mode)?,
            None => x.clone(),
        };
        Ok(add_relu(&h, &shortcut)?)
    }
}

/// A CIFAR ResNet of depth 6n + 2.
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

impl ResNet {
    /// Builds the ResNet of `spec` with `n` blocks per stage (first-stage width `spec.width`,
    /// default 16).
    pub fn new(b: &mut Builder, spec: &ModelSpec, n: usize) -> Result<Self> {
        let base = spec.width.unwrap_or(16);
        let conv1 = b.conv2d(
            "conv1",
            spec.input.channels,
            base,
            3,
            1,
            1,
            LayerOptions::no_bias(),
        )?;
        let bn1 = b.batch_norm2d("bn1", base)?;
        let mut blocks = Vec::new();
        let mut inputs = base;
        for stage in 0..3 {
            let outputs = base << stage;
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(b.scope(format!("layer{}", stage + 1), |b| {
                    b.scope(i, |b| BasicBlock::new(b, inputs, outputs, stride))
                })?);
                inputs = outputs;
            }
        }
        let fc = b.linear("fc", inputs, spec.classes, LayerOptions::classifier())?;
        Ok(Self {
            conv1,
            bn1,
            blocks,
            fc,
        })
    }
}

impl Network for ResNet {
    fn forward(&self, x: &Tensor, mode: Mode) -> synfed_synapse::Result<Tensor> {
        let mut h = self.bn1.forward_relu(&self.conv1.forward(x)?, mode)?;
        for block in &self.blocks {
            h = block.forward(&h, mode)?;
        }
        self.fc.forward(&pool::global_avg_pool(&h)?)
    }
}
