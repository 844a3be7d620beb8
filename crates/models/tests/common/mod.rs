//! Helpers shared by the model zoo's tests: the two input shapes, building a model, seeded
//! random images and fixed labels, and exact (bit-level) or f64 views of tensors.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use synfed_models::{Arch, InputShape, Model, ModelSpec};

mod bits;

pub use bits::bits;

pub const CIFAR: InputShape = InputShape::new(3, 32, 32);
pub const MNIST: InputShape = InputShape::new(1, 28, 28);

pub fn build(spec: &ModelSpec) -> Model {
    Model::build(spec, DType::F32, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{} {}: {e}", spec.arch, spec.methods))
}

/// `n` images of `input` with pixels from U(−1, 1), drawn from a seeded ChaCha stream.
pub fn images(n: usize, input: InputShape, seed: u64, dtype: DType) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..n * input.elem_count())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(
        v,
        (n, input.channels, input.height, input.width),
        &Device::Cpu,
    )
    .unwrap()
    .to_dtype(dtype)
    .unwrap()
}

pub fn labels(n: usize, classes: usize) -> Tensor {
    let v: Vec<u32> = (0..n).map(|i| (i * 7 % classes) as u32).collect();
    Tensor::from_vec(v, n, &Device::Cpu).unwrap()
}

pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Every tensor and every fuzzy factor tensor of a model, as bits, by name.
pub fn snapshot(model: &Model) -> Vec<(String, Vec<u64>)> {
    let mut all: Vec<(String, Vec<u64>)> = model
        .params()
        .tensors()
        .iter()
        .map(|(n, t)| (n.clone(), bits(t)))
        .collect();
    all.extend(
        model
            .params()
            .fuzzy_tensors()
            .iter()
            .map(|(n, t)| (n.clone(), bits(t))),
    );
    all
}

/// A reduced width for `arch` that keeps every model small and fast to build.
pub fn small_width(arch: Arch) -> usize {
    match arch {
        Arch::Mlp => 8,
        _ => 4,
    }
}
