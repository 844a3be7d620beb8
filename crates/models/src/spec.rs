//! `ModelSpec`: the identity from which any party rebuilds the exact same model.

use crate::arch::Arch;
use serde::{Deserialize, Serialize};
use std::fmt;
use synfed_synapse::{Hyper, MethodSet};

/// Shape of one input image, channels first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputShape {
    /// A `C × H × W` shape.
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// C·H·W.
    pub fn elem_count(&self) -> usize {
        self.channels * self.height * self.width
    }
}

impl fmt::Display for InputShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}×{}", self.channels, self.height, self.width)
    }
}

/// Everything that determines a model's initial state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub input: InputShape,
    pub classes: usize,
    pub methods: MethodSet,
    /// τ, d_re, Γ.
    #[serde(flatten)]
    pub hyper: Hyper,
    /// Base width overriding the architecture's default (hidden units of the mlp, first-stage
    /// channels of ResNets, channels of ConvNet and LeNet, first conv of AlexNet). `None` is the
    /// published size; small widths keep tests fast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    pub seed: u64,
}

impl ModelSpec {
    /// The published size of `arch` for `input` and `classes`, with the paper's hyper-parameters.
    pub fn new(
        arch: Arch,
        input: InputShape,
        classes: usize,
        methods: MethodSet,
        seed: u64,
    ) -> Self {
        Self {
            arch,
            input,
            classes,
            methods,
            hyper: Hyper::default(),
            width: None,
            seed,
        }
    }

    /// The same spec with base width `width`.
    pub fn with_width(mut self, width: usize) -> Self {
        self.width = Some(width);
        self
    }

    /// The same spec with other mechanisms.
    pub fn with_methods(mut self, methods: MethodSet) -> Self {
        self.methods = methods;
        self
    }
}
