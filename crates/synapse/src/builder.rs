//! Creates a model's layers and parameters from a seed.
//!
//! The builder is the one place where initial values and fuzzy factors are drawn, in creation
//! order, from the seed's [`rng`](crate::rng) streams: the same architecture, methods and seed
//! give the same bytes on every machine and for every party of a federation.

use crate::batchnorm::BatchNorm2d;
use crate::conv::Conv2d;
use crate::error::Result;
use crate::fuzzy;
use crate::hyper::Hyper;
use crate::init::Init;
use crate::linear::Linear;
use crate::methods::MethodSet;
use crate::param::{Param, ParamStore, Role};
use crate::rng;
use crate::splitting::Split;
use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

/// Where a layer sits: hidden layers are split under method III, the classifier never is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Hidden,
    Classifier,
}

/// Options of a Linear or Conv2d layer.
#[derive(Clone, Copy, Debug)]
pub struct LayerOptions {
    pub bias: bool,
    pub placement: Placement,
    /// Overrides PyTorch's default initialisation for weight and bias.
    pub init: Option<Init>,
}

impl Default for LayerOptions {
    fn default() -> Self {
        Self {
            bias: true,
            placement: Placement::Hidden,
            init: None,
        }
    }
}

impl LayerOptions {
    /// Options of the last layer (never split).
    pub fn classifier() -> Self {
        Self {
            placement: Placement::Classifier,
            ..Self::default()
        }
    }

    /// A layer without bias (e.g. convolutions followed by BatchNorm).
    pub fn no_bias() -> Self {
        Self {
            bias: false,
            ..Self::default()
        }
    }
}

/// Builds layers, registering their parameters in a [`ParamStore`].
pub struct Builder {
    device: Device,
    dtype: DType,
    methods: MethodSet,
    hyper: Hyper,
    init_rng: ChaCha8Rng,
    fuzzy_rng: ChaCha8Rng,
    prefix: Vec<String>,
    store: ParamStore,
}

impl Builder {
    /// A builder for a model with `methods` whose randomness comes from `seed`.
    pub fn new(
        seed: u64,
        methods: MethodSet,
        hyper: Hyper,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        hyper.validate()?;
        // a model on a GPU: its tensors may be used and dropped on other threads
        crate::cuda_context::register(device)?;
        Ok(Self {
            device: device.clone(),
            dtype,
            methods,
            hyper,
            init_rng: rng::stream(seed, rng::STREAM_INIT),
            fuzzy_rng: rng::stream(seed, rng::STREAM_FUZZY),
            prefix: Vec::new(),
            store: ParamStore::new(methods, hyper),
        })
    }

    /// The mechanisms the model is built with.
    pub fn methods(&self) -> MethodSet {
        self.methods
    }

    /// The mechanisms' hyper-parameters.
    pub fn hyper(&self) -> Hyper {
        self.hyper
    }

    /// The device parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The parameters' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Runs `f` with `name` appended to the parameter-name prefix (`layer1.0.conv1…`).
    pub fn scope<R>(
        &mut self,
        name: impl ToString,
        f: impl FnOnce(&mut Self) -> Result<R>,
    ) -> Result<R> {
        self.prefix.push(name.to_string());
        let out = f(self);
        self.prefix.pop();
        out
    }

    /// The current prefix (`layer1.0.conv1`), i.e. the name of the layer being built.
    pub fn prefix(&self) -> String {
        self.prefix.join(".")
    }

    /// Full name of `local` under the current prefix.
    pub fn full_name(&self, local: &str) -> String {
        let mut parts = self.prefix.clone();
        parts.push(local.to_string());
        parts.join(".")
    }

    /// Creates and registers one tensor. Fuzzy factors are drawn for synaptic weights when
    /// method I is on.
    pub fn param(&mut self, local: &str, shape: &[usize], role: Role, init: Init) -> Result<Var> {
        let name = self.full_name(local);
        let values = init.sample_n(shape.iter().product(), &mut self.init_rng);
        let var = Var::from_tensor(&self.tensor_from(values, shape)?)?;
        let fuzzy = if role == Role::SynapticWeight && self.methods.fuzzy {
            let factors =
                fuzzy::draw_factors(shape.iter().product(), self.hyper.tau, &mut self.fuzzy_rng);
            Some(self.tensor_from(factors, shape)?)
        } else {
            None
        };
        self.store.push(Param {
            name,
            var: var.clone(),
            role,
            init,
            fuzzy,
        })?;
        Ok(var)
    }

    fn tensor_from(&self, values: Vec<f64>, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_device(&self.device)?)
    }

    fn split_for(&self, name: &str, units: usize, placement: Placement) -> Result<Option<Split>> {
        if self.methods.splitting && placement == Placement::Hidden {
            Split::new(&self.full_name(name), units, self.hyper.gamma).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A fully connected layer `in_features → out_features` named `name`.
    pub fn linear(
        &mut self,
        name: &str,
        in_features: usize,
        out_features: usize,
        opts: LayerOptions,
    ) -> Result<Linear> {
        let split = self.split_for(name, out_features, opts.placement)?;
        let init = opts.init.unwrap_or(Init::pytorch_default(in_features));
        self.scope(name, |b| {
            let weight = b.param(
                "weight",
                &[out_features, in_features],
                Role::SynapticWeight,
                init,
            )?;
            let bias = if opts.bias {
                Some(b.param("bias", &[out_features], Role::Bias, init)?)
            } else {
                None
            };
            Ok(Linear::new(b.prefix(), weight, bias, split))
        })
    }

    /// A square-kernel 2-D convolution named `name`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        name: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        opts: LayerOptions,
    ) -> Result<Conv2d> {
        let split = self.split_for(name, out_channels, opts.placement)?;
        let init = opts
            .init
            .unwrap_or(Init::pytorch_default(in_channels * kernel * kernel));
        self.scope(name, |b| {
            let weight = b.param(
                "weight",
                &[out_channels, in_channels, kernel, kernel],
                Role::SynapticWeight,
                init,
            )?;
            let bias = if opts.bias {
                Some(b.param("bias", &[out_channels], Role::Bias, init)?)
            } else {
                None
            };
            Ok(Conv2d::new(weight, bias, stride, padding, split))
        })
    }

    /// BatchNorm over the channels of an NCHW tensor (PyTorch defaults: ε = 1e-5, momentum 0.1).
    pub fn batch_norm2d(&mut self, name: &str, channels: usize) -> Result<BatchNorm2d> {
        self.scope(name, |b| {
            let weight = b.param("weight", &[channels], Role::NormWeight, Init::Constant(1.0))?;
            let bias = b.param("bias", &[channels], Role::NormBias, Init::Constant(0.0))?;
            let mean = b.param(
                "running_mean",
                &[channels],
                Role::RunningMean,
                Init::Constant(0.0),
            )?;
            let var = b.param(
                "running_var",
                &[channels],
                Role::RunningVar,
                Init::Constant(1.0),
            )?;
            Ok(BatchNorm2d::new(weight, bias, mean, var))
        })
    }

    /// The parameters created so far.
    pub fn finish(self) -> ParamStore {
        self.store
    }
}
