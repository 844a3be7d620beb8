//! (III) Weight splitting, paper §3.3, Eq. 5.
//!
//! A layer with N output units keeps its N rows of weights (the parameter count is unchanged,
//! §4.1), but output unit n < N/Γ becomes the sum of the pre-activations of units
//! n + γ·N/Γ, γ = 0…Γ−1 (bias included): Γ synapses connect each pair of neurons. The N/Γ sums
//! are tiled Γ times so the layer still emits N activations ("we duplicated the activations of
//! each layer such that the number of activations of each layer persists").
//!
//! We follow Eq. 5's stride N/Γ. The authors' released code sums *consecutive* blocks of Γ
//! units and duplicates with `repeat_interleave`; the two differ only by a permutation of the
//! units, which matters when comparing parameter tensors with theirs but not for learning.
//!
//! Because replica rows of one unit feed the same sum, they receive identical gradients.

use crate::error::{Result, SynapseError};
use candle_core::Tensor;

/// Splitting of one layer's output units (dimension 1 of its output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    units: usize,
    gamma: usize,
}

impl Split {
    /// Splitting for a layer `layer` with `units` outputs; fails when Γ does not divide them.
    pub fn new(layer: &str, units: usize, gamma: usize) -> Result<Self> {
        if gamma == 0 || units % gamma != 0 {
            return Err(SynapseError::NotSplittable {
                layer: layer.to_string(),
                units,
                gamma,
            });
        }
        Ok(Self { units, gamma })
    }

    /// Γ.
    pub fn gamma(&self) -> usize {
        self.gamma
    }

    /// Applies Eq. 5 to pre-activations `x` of shape `[B, N, …]`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if self.gamma == 1 {
            return Ok(x.clone());
        }
        let dims = x.dims();
        let distinct = self.units / self.gamma;
        let mut grouped = vec![dims[0], self.gamma, distinct];
        grouped.extend_from_slice(&dims[2..]);
        let sums = x.reshape(grouped)?.sum(1)?;
        let copies = vec![&sums; self.gamma];
        Ok(Tensor::cat(&copies, 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sums_units_n_and_n_plus_n_over_gamma_then_tiles() {
        let x = Tensor::new(
            &[[1f32, 2., 3., 4., 5., 6.], [10., 20., 30., 40., 50., 60.]],
            &Device::Cpu,
        )
        .unwrap();
        let y = Split::new("l", 6, 2).unwrap().apply(&x).unwrap();
        // unit n sums n and n + 3
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            [[5., 7., 9., 5., 7., 9.], [50., 70., 90., 50., 70., 90.]]
        );
        let y = Split::new("l", 6, 3).unwrap().apply(&x).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap()[0], [9., 12., 9., 12., 9., 12.]);
    }

    #[test]
    fn indivisible_units_name_the_layer() {
        let err = Split::new("features.conv3", 5, 2).unwrap_err().to_string();
        assert!(err.contains("features.conv3") && err.contains('5'), "{err}");
    }
}
