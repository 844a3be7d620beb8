//! `ModelSpec`: the identity from which any party rebuilds the exact same model.
//!
//! Specs arrive from files and peers (captures, escrows, checkpoints, run configs), so a spec
//! is checked against a parameter and input budget ([`ModelSpec::check_budget`]) before any
//! layer is allocated: a 1 KB file naming a 4096×4096 input or a width of 10^8 is refused with
//! an error instead of aborting the process on a failed allocation.

use crate::arch::Arch;
use crate::error::{ModelError, Result};
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

/// Most parameters a spec may have (2^28 ≈ 268 M, 1 GiB in f32): the largest published model
/// of the zoo (the MLP on 32×32×3, ≈ 21 M) fits twelve times over.
pub const MAX_PARAMETERS: u64 = 1 << 28;
/// Most values in one input image (3 × 512 × 512 fits; the zoo's inputs are 28×28 and 32×32).
pub const MAX_INPUT_ELEMS: u64 = 1 << 20;
/// Most classes of a classifier.
pub const MAX_CLASSES: u64 = 1 << 16;
/// Largest base width.
pub const MAX_WIDTH: u64 = 1 << 16;

impl ModelSpec {
    /// An upper bound on the number of parameters `self` builds (weights and biases, overflow
    /// saturating), computed from the spec alone without allocating anything.
    pub fn parameter_bound(&self) -> u64 {
        let m = |a: u64, b: u64| a.saturating_mul(b);
        let (c, h, wd) = (
            self.input.channels as u64,
            self.input.height as u64,
            self.input.width as u64,
        );
        let inputs = m(m(c, h), wd);
        let k = self.classes as u64;
        let dense = |i: u64, o: u64| m(i, o).saturating_add(o);
        let conv = |i: u64, o: u64, kernel: u64| m(m(m(i, o), kernel), kernel).saturating_add(o);
        let w = |default: u64| self.width.map_or(default, |w| w as u64);
        match self.arch {
            Arch::Mlp => {
                let (layers, w) = if c == 1 { (1, w(1000)) } else { (2, w(3000)) };
                let hidden = if layers == 2 { dense(w, w) } else { 0 };
                dense(inputs, w)
                    .saturating_add(hidden)
                    .saturating_add(dense(w, k))
            }
            Arch::AlexNet => {
                let w = w(64);
                let ch = [c, w, m(3, w), m(6, w), m(4, w), m(4, w)];
                let kernels = [5, 5, 3, 3, 3];
                let convs = (0..5).fold(0u64, |acc, i| {
                    acc.saturating_add(conv(ch[i], ch[i + 1], kernels[i]))
                });
                let flat = m(m(4, w), m(h / 8, wd / 8));
                convs
                    .saturating_add(dense(flat, m(16, w)))
                    .saturating_add(dense(m(16, w), m(16, w)))
                    .saturating_add(dense(m(16, w), k))
            }
            Arch::ResNet20 | Arch::ResNet32 | Arch::ResNet56 => {
                // Every convolution bounded by the widest (4·base → 4·base, 3×3), plus
                // shortcuts and BatchNorm, generously.
                let blocks = match self.arch {
                    Arch::ResNet20 => 3,
                    Arch::ResNet32 => 5,
                    _ => 9,
                };
                let widest = m(4, w(16));
                let layers = 3 * blocks * 2 + 3;
                m(layers, conv(widest.max(c), widest, 3)).saturating_add(dense(widest, k))
            }
            Arch::ConvNet => {
                let widest = m(4, w(64));
                let flat = m(widest, m(h / 9, wd / 9));
                m(8, conv(widest.max(c), widest, 3)).saturating_add(dense(flat, k))
            }
            Arch::LeNet => {
                let ch = w(12);
                let (h, wd) = (
                    (h.saturating_sub(1)) / 4 + 1,
                    (wd.saturating_sub(1)) / 4 + 1,
                );
                m(3, conv(ch.max(c), ch, 5)).saturating_add(dense(m(ch, m(h, wd)), k))
            }
        }
    }

    /// Checks the spec against the budgets ([`MAX_INPUT_ELEMS`], [`MAX_CLASSES`],
    /// [`MAX_WIDTH`], [`MAX_PARAMETERS`]) before anything is allocated; the error names the
    /// field that is too large.
    pub fn check_budget(&self) -> Result<()> {
        let over = |field: &str, value: u64, max: u64| ModelError::OverBudget {
            arch: self.arch,
            field: field.to_string(),
            value,
            max,
        };
        let inputs = (self.input.channels as u64)
            .saturating_mul(self.input.height as u64)
            .saturating_mul(self.input.width as u64);
        if inputs > MAX_INPUT_ELEMS {
            return Err(over(
                "input (channels × height × width)",
                inputs,
                MAX_INPUT_ELEMS,
            ));
        }
        if self.classes as u64 > MAX_CLASSES {
            return Err(over("classes", self.classes as u64, MAX_CLASSES));
        }
        if let Some(width) = self.width {
            if width as u64 > MAX_WIDTH {
                return Err(over("width", width as u64, MAX_WIDTH));
            }
        }
        let params = self.parameter_bound();
        if params > MAX_PARAMETERS {
            return Err(over("parameters", params, MAX_PARAMETERS));
        }
        Ok(())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: Arch, input: InputShape, classes: usize) -> ModelSpec {
        ModelSpec::new(arch, input, classes, MethodSet::default(), 0)
    }

    #[test]
    fn mlp_bound_is_its_exact_parameter_count() {
        // 784·1000 + 1000 + 1000·10 + 10, by hand.
        let mnist = spec(Arch::Mlp, InputShape::new(1, 28, 28), 10);
        assert_eq!(mnist.parameter_bound(), 795_010);
        // 3072·3000 + 3000 + 3000·3000 + 3000 + 3000·10 + 10.
        let cifar = spec(Arch::Mlp, InputShape::new(3, 32, 32), 10);
        assert_eq!(cifar.parameter_bound(), 18_252_010);
    }

    #[test]
    fn every_published_model_is_within_budget() {
        for arch in Arch::ALL {
            for (input, classes) in [
                (InputShape::new(1, 28, 28), 10),
                (InputShape::new(3, 32, 32), 100),
            ] {
                let s = spec(arch, input, classes);
                s.check_budget()
                    .unwrap_or_else(|e| panic!("{arch} {input}: {e}"));
            }
        }
    }

    #[test]
    fn hostile_specs_are_refused_naming_the_field() {
        let big_input = spec(Arch::Mlp, InputShape::new(1, 4096, 4096), 10);
        let err = big_input.check_budget().unwrap_err().to_string();
        assert!(err.contains("input"), "{err}");
        let wide = spec(Arch::Mlp, InputShape::new(1, 28, 28), 10).with_width(100_000_000);
        let err = wide.check_budget().unwrap_err().to_string();
        assert!(err.contains("width"), "{err}");
        // Width 4096 on CIFAR: 3072·4096 + 4096² + … ≈ 29 M — allowed; width 16384: 319 M — refused.
        let cifar = spec(Arch::Mlp, InputShape::new(3, 32, 32), 10);
        assert!(cifar.clone().with_width(4096).check_budget().is_ok());
        let err = cifar
            .with_width(16_384)
            .check_budget()
            .unwrap_err()
            .to_string();
        assert!(err.contains("parameters"), "{err}");
        let classes = spec(Arch::ResNet20, InputShape::new(3, 32, 32), usize::MAX);
        assert!(classes
            .check_budget()
            .unwrap_err()
            .to_string()
            .contains("classes"));
        // Saturating arithmetic: no overflow panic on absurd values.
        let absurd = spec(
            Arch::AlexNet,
            InputShape::new(usize::MAX, usize::MAX, 2),
            10,
        );
        assert!(absurd.check_budget().is_err());
    }
}
