//! The parameters of a model, with what the mechanisms need to know about each.
//!
//! candle's `VarMap` only maps names to variables. The mechanisms need more: which tensors are
//! synaptic weights (fuzzy factors and rejuvenation apply to Linear/Conv2d weights only, never to
//! biases or BatchNorm), each weight's initialisation distribution (rejuvenation redraws from
//! it) and its fuzzy factors (part of the model's state, saved in checkpoints).

use crate::error::{Result, SynapseError};
use crate::hyper::Hyper;
use crate::init::Init;
use crate::methods::MethodSet;
use candle_core::{Tensor, Var};

/// What a tensor is in its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Weight of a Linear or Conv2d layer: the paper's synapses.
    SynapticWeight,
    /// Bias of a Linear or Conv2d layer.
    Bias,
    /// BatchNorm scale γ.
    NormWeight,
    /// BatchNorm shift β.
    NormBias,
    /// BatchNorm running mean (a buffer, not trained).
    RunningMean,
    /// BatchNorm running variance (a buffer, not trained).
    RunningVar,
}

impl Role {
    /// Whether the optimizer updates tensors of this role.
    pub fn is_trainable(self) -> bool {
        !matches!(self, Role::RunningMean | Role::RunningVar)
    }
}

/// One named tensor of a model.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub role: Role,
    /// Distribution the initial values came from.
    pub init: Init,
    /// Per-element fuzzy learning-rate factors η̂ (method I, synaptic weights only).
    pub fuzzy: Option<Tensor>,
}

impl Param {
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.var.elem_count()
    }
}

/// All tensors of a model in creation order, plus the mechanisms they were built with.
///
/// Cloning is cheap and shares the variables (like cloning a candle `Var`).
#[derive(Clone, Debug)]
pub struct ParamStore {
    params: Vec<Param>,
    methods: MethodSet,
    hyper: Hyper,
}

impl ParamStore {
    pub(crate) fn new(methods: MethodSet, hyper: Hyper) -> Self {
        Self {
            params: Vec::new(),
            methods,
            hyper,
        }
    }

    pub(crate) fn push(&mut self, param: Param) -> Result<()> {
        if self.get(&param.name).is_some() {
            return Err(SynapseError::DuplicateParameter(param.name));
        }
        self.params.push(param);
        Ok(())
    }

    /// The mechanisms the model was built with.
    pub fn methods(&self) -> MethodSet {
        self.methods
    }

    /// The mechanisms' hyper-parameters.
    pub fn hyper(&self) -> Hyper {
        self.hyper
    }

    /// Every tensor (trainable parameters and buffers) in creation order.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }

    /// Trainable tensors in creation order.
    pub fn trainable(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.role.is_trainable())
    }

    /// The trainable variables, e.g. to take gradients of.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.trainable().map(|p| p.var.clone()).collect()
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Number of trainable scalars (what papers call the parameter count).
    pub fn trainable_elem_count(&self) -> usize {
        self.trainable().map(Param::elem_count).sum()
    }

    /// Current values of every tensor, by name.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .collect()
    }

    /// Fuzzy factors of every weight that has them, named `<param>.fuzzy`.
    pub fn fuzzy_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .filter_map(|p| p.fuzzy.as_ref().map(|f| (fuzzy_name(&p.name), f.clone())))
            .collect()
    }

    /// Overwrites the tensor called `name` with `value` (same shape; converted to the
    /// parameter's dtype and device).
    pub fn set(&self, name: &str, value: &Tensor) -> Result<()> {
        let param = self.get(name).ok_or_else(|| SynapseError::BadParameter {
            name: name.to_string(),
            problem: "the model has no such tensor".into(),
        })?;
        if value.dims() != param.var.dims() {
            return Err(SynapseError::BadParameter {
                name: name.to_string(),
                problem: format!(
                    "shape {:?} does not match the model's {:?}",
                    value.dims(),
                    param.var.dims()
                ),
            });
        }
        let value = value
            .to_dtype(param.var.dtype())?
            .to_device(param.var.device())?;
        param.var.set(&value)?;
        Ok(())
    }
}

impl ParamStore {
    /// Replaces the fuzzy factors of synaptic weight `name` (restoring a checkpoint). Create
    /// optimizers after restoring: they keep a copy of the store.
    pub fn set_fuzzy(&mut self, name: &str, factors: &Tensor) -> Result<()> {
        let param = self
            .params
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| SynapseError::BadParameter {
                name: name.to_string(),
                problem: "the model has no such tensor".into(),
            })?;
        if param.fuzzy.is_none() || factors.dims() != param.var.dims() {
            return Err(SynapseError::BadParameter {
                name: name.to_string(),
                problem: format!(
                    "fuzzy factors of shape {:?} do not fit (the parameter has shape {:?} and {} fuzzy factors)",
                    factors.dims(),
                    param.var.dims(),
                    if param.fuzzy.is_some() { "has" } else { "no" }
                ),
            });
        }
        param.fuzzy = Some(
            factors
                .to_dtype(param.var.dtype())?
                .to_device(param.var.device())?,
        );
        Ok(())
    }
}

/// Name under which the fuzzy factors of parameter `name` are stored.
pub fn fuzzy_name(name: &str) -> String {
    format!("{name}.fuzzy")
}
