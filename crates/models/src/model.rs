//! A built model: its spec, its parameters and its forward pass.

use crate::arch::Arch;
use crate::error::{ModelError, Result};
use crate::network::Network;
use crate::spec::ModelSpec;
use crate::{alexnet, convnet, lenet, loss, mlp, resnet};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use synfed_synapse::batch_norm_recording::record_batch_norm_inputs;
use synfed_synapse::kernels::backward_final;
use synfed_synapse::{on_worker, Builder, Mode, ParamStore, Role};

/// One BatchNorm layer's input during a recorded forward pass
/// ([`Model::record_batch_norm_inputs`]).
#[derive(Clone, Debug)]
pub struct BatchNormInput {
    /// The layer's name (its parameters' prefix, e.g. `blocks.0.bn`).
    pub layer: String,
    /// The `[B, C, H, W]` tensor it normalised, part of the graph.
    pub input: Tensor,
}

/// The layer a BatchNorm buffer belongs to: its name without the last component.
fn layer_of(param: &str) -> String {
    param
        .rsplit_once('.')
        .map_or_else(|| param.to_string(), |(layer, _)| layer.to_string())
}

/// A model of the zoo, built from a [`ModelSpec`].
pub struct Model {
    spec: ModelSpec,
    params: ParamStore,
    net: Box<dyn Network>,
}

impl Model {
    /// Builds `spec` with parameters of `dtype` on `device`.
    pub fn build(spec: &ModelSpec, dtype: DType, device: &Device) -> Result<Self> {
        // Degenerate specs (e.g. from a crafted checkpoint) would otherwise build empty layers
        // that fail obscurely in the forward pass, or panic (LeNet on 0×0 images).
        let degenerate = if spec.input.elem_count() == 0 {
            Some("images must have at least one channel and pixel")
        } else if spec.classes == 0 {
            Some("a classifier needs at least one class")
        } else if spec.width == Some(0) {
            Some("width 0 gives layers without units")
        } else {
            None
        };
        if let Some(reason) = degenerate {
            return Err(ModelError::BadInput {
                arch: spec.arch,
                input: spec.input,
                reason: reason.into(),
            });
        }
        spec.check_budget()?;
        let mut b = Builder::new(spec.seed, spec.methods, spec.hyper, dtype, device)?;
        let net: Box<dyn Network> = match spec.arch {
            Arch::Mlp => Box::new(mlp::Mlp::new(&mut b, spec)?),
            Arch::AlexNet => Box::new(alexnet::AlexNet::new(&mut b, spec)?),
            Arch::ResNet20 => Box::new(resnet::ResNet::new(&mut b, spec, 3)?),
            Arch::ResNet32 => Box::new(resnet::ResNet::new(&mut b, spec, 5)?),
            Arch::ResNet56 => Box::new(resnet::ResNet::new(&mut b, spec, 9)?),
            Arch::ConvNet => Box::new(convnet::ConvNet::new(&mut b, spec)?),
            Arch::LeNet => Box::new(lenet::LeNet::new(&mut b, spec)?),
        };
        Ok(Self {
            spec: spec.clone(),
            params: b.finish(),
            net,
        })
    }

    /// The spec the model was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Its parameters and buffers.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Mutable access to the parameters (to restore fuzzy factors from a checkpoint).
    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        self.params
            .iter()
            .next()
            .map(|p| p.var.device())
            .unwrap_or(&Device::Cpu)
    }

    /// Logits `[B, classes]` of images `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4().map_err(|_| self.shape_error(x))?;
        let want = self.spec.input;
        if (c, h, w) != (want.channels, want.height, want.width) {
            return Err(self.shape_error(x));
        }
        Ok(self.net.forward(x, mode)?)
    }

    fn shape_error(&self, x: &Tensor) -> ModelError {
        ModelError::BatchShape {
            got: x.dims().to_vec(),
            want: self.spec.input,
        }
    }

    /// Mean cross-entropy of the batch `(x, labels)`.
    pub fn loss(&self, x: &Tensor, labels: &Tensor, mode: Mode) -> Result<Tensor> {
        Ok(loss::cross_entropy(&self.forward(x, mode)?, labels)?)
    }

    /// The gradient of the mean loss on `(x, labels)` with respect to every trainable parameter,
    /// in `params().trainable()` order and detached: what a FedSGD client sends.
    pub fn gradients(&self, x: &Tensor, labels: &Tensor, mode: Mode) -> Result<Vec<Tensor>> {
        // on a rayon worker (see `synfed_synapse::worker`)
        on_worker(|| {
            let grads = backward_final(&self.loss(x, labels, mode)?)?;
            self.params
                .trainable()
                .map(|p| {
                    grads
                        .get(p.var.as_tensor())
                        .map(Tensor::detach)
                        .ok_or_else(|| ModelError::NoGradient(p.name.clone()))
                })
                .collect()
        })
    }

    /// The names of the model's BatchNorm layers (`blocks.0.bn`), in parameter order.
    pub fn batch_norm_layers(&self) -> Vec<String> {
        self.params
            .iter()
            .filter(|p| p.role == Role::RunningMean)
            .map(|p| layer_of(&p.name))
            .collect()
    }

    /// Runs `f` (a forward pass of this model, or a loss) and returns, with its result, the
    /// input of every BatchNorm layer that normalised with batch statistics during it, named,
    /// in the order the layers ran. The inputs stay in the graph, so statistics computed from
    /// them are differentiable in the images: what a statistics-matching attacker compares.
    /// Layers of other models run inside `f` are left out.
    pub fn record_batch_norm_inputs<R>(
        &self,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<(R, Vec<BatchNormInput>)> {
        let (result, recorded) = record_batch_norm_inputs(f);
        let result = result?;
        let names: HashMap<_, _> = self
            .params
            .iter()
            .filter(|p| p.role == Role::RunningMean)
            .map(|p| (p.var.as_tensor().id(), layer_of(&p.name)))
            .collect();
        let inputs = recorded
            .into_iter()
            .filter_map(|r| {
                names.get(&r.layer).map(|layer| BatchNormInput {
                    layer: layer.clone(),
                    input: r.input,
                })
            })
            .collect();
        Ok((result, inputs))
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params.trainable_elem_count()
    }
}
