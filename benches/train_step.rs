//! One local training step on the CPU in f32: forward in train mode, cross-entropy, backward and
//! `SynapticSgd::step` (fuzzy scaling and rejuvenation included when the methods are on), for the
//! paper's CIFAR MLP (3072-3000-3000-10) at batch 8 and 100 and ResNet20 at batch 8, each
//! without mechanisms and with I+II+III; plus ResNet20's forward pass alone (batch 8).
//!
//! `cargo bench --bench train_step`

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::Duration;
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::kernels::backward_final;
use synfed_synapse::{on_worker, MethodSet, Mode, SynapticSgd};

/// The binary's allocator and process settings (one copy, shared with `crates/cli/main.rs`).
#[path = "../crates/cli/process.rs"]
mod process;

const CIFAR: InputShape = InputShape::new(3, 32, 32);
const CLASSES: usize = 10;
const SEED: u64 = 2024;

/// A batch of `n` images with pixels from U(−1, 1) and labels, from a seeded ChaCha generator.
fn batch(n: usize, input: InputShape, seed: u64) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pixels: Vec<f32> = (0..n * input.elem_count())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..CLASSES as u32))
        .collect();
    let x = Tensor::from_vec(
        pixels,
        (n, input.channels, input.height, input.width),
        &Device::Cpu,
    )
    .expect("images");
    let y = Tensor::from_vec(labels, n, &Device::Cpu).expect("labels");
    (x, y)
}

fn model(arch: Arch, methods: MethodSet) -> Model {
    let spec = ModelSpec::new(arch, CIFAR, CLASSES, methods, SEED);
    Model::build(&spec, DType::F32, &Device::Cpu).expect("model")
}

fn train_step(c: &mut Criterion) {
    process::setup();
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    for (arch, n) in [(Arch::Mlp, 8), (Arch::Mlp, 100), (Arch::ResNet20, 8)] {
        for methods in [MethodSet::NONE, MethodSet::ALL] {
            let model = model(arch, methods);
            let mut opt = SynapticSgd::new(model.params(), 0.01, SEED);
            let (x, y) = batch(n, CIFAR, SEED + n as u64);
            group.bench_function(format!("{arch}/batch{n}/{methods}"), |b| {
                // on a rayon worker, as `train_epoch` runs a step
                b.iter(|| {
                    on_worker(|| {
                        let loss = model.loss(&x, &y, Mode::Train).expect("forward");
                        let grads = backward_final(&loss).expect("backward");
                        black_box(opt.step(&grads).expect("step"))
                    })
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("forward");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    let model = model(Arch::ResNet20, MethodSet::NONE);
    let (x, _) = batch(8, CIFAR, SEED + 8);
    // Eval: running statistics; TrainFrozenStats: batch statistics without updating them, the
    // forward pass a client's FedSGD gradient (and the attack's replay of it) uses.
    for (label, mode) in [
        ("eval", Mode::Eval),
        ("train-frozen-stats", Mode::TrainFrozenStats),
    ] {
        group.bench_function(format!("resnet20/batch8/{label}"), |b| {
            b.iter(|| on_worker(|| black_box(model.forward(&x, mode).expect("forward"))))
        });
    }
    group.finish();
}

// No plots: criterion's plotters backend panics on machines without system fonts, and the
// figures are what matters here.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = train_step
}
criterion_main!(benches);
