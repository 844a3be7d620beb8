//! Initialisation distributions of parameters.
//!
//! Linear and Conv2d layers use PyTorch's defaults (`kaiming_uniform_(a = √5)` for the weight,
//! which is U(−1/√fan_in, 1/√fan_in), and the same bound for the bias), so that synfed's
//! models start from the same distribution as the reference implementations the paper used.
//! The distribution is remembered per parameter because weight rejuvenation (II) draws a reset
//! weight's new value "from the layer's own initialisation distribution".

use rand::Rng;

/// A distribution of initial values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(−bound, bound).
    Uniform { bound: f64 },
    /// Every element equals the value (BatchNorm scale 1, shift 0, running statistics).
    Constant(f64),
}

impl Init {
    /// PyTorch's default for Linear/Conv2d weights and biases: U(±1/√fan_in).
    pub fn pytorch_default(fan_in: usize) -> Self {
        Init::Uniform {
            bound: 1.0 / (fan_in.max(1) as f64).sqrt(),
        }
    }

    /// One value.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match *self {
            Init::Uniform { bound } => rng.random_range(-bound..=bound),
            Init::Constant(v) => v,
        }
    }

    /// `n` values (no draws for constants).
    pub fn sample_n<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<f64> {
        (0..n).map(|_| self.sample(rng)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_default_bound_is_one_over_sqrt_fan_in() {
        assert_eq!(Init::pytorch_default(16), Init::Uniform { bound: 0.25 });
        let mut rng = crate::rng::stream(1, 0);
        let v = Init::pytorch_default(100).sample_n(10_000, &mut rng);
        assert!(v.iter().all(|x| x.abs() <= 0.1));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        // U(−b, b) has variance b²/3.
        assert!((var - 0.01 / 3.0).abs() < 0.0002, "{var}");
        assert!(mean.abs() < 0.002);
    }
}
