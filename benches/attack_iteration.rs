//! Criterion benchmark of one gradient-inversion iteration: the objective (forward pass,
//! parameter gradients, cosine against the observed gradient, TV) and its exact
//! second-order gradient with respect to the images — what the attack repeats thousands of
//! times. Workloads: untrained `mlp` on MNIST-shaped images, batch 1; `resnet20` on
//! CIFAR-shaped images, batch 8 and 1; `convnet`, batch 1.

use candle_core::{DType, Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use synfed_attack::inversion::{evaluate, InversionConfig, Target};
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::{MethodSet, Mode};

/// The binary's allocator and process settings (one copy, shared with `crates/cli/main.rs`).
#[path = "../crates/cli/process.rs"]
mod process;

fn images(n: usize, input: InputShape, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * input.elem_count())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(
        v,
        (n, input.channels, input.height, input.width),
        &Device::Cpu,
    )
    .unwrap()
}

fn attack_iteration(c: &mut Criterion) {
    process::setup();
    let mut group = c.benchmark_group("attack_iteration");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let mnist = InputShape::new(1, 28, 28);
    let cifar = InputShape::new(3, 32, 32);
    for (arch, input, batch) in [
        (Arch::Mlp, mnist, 1),
        (Arch::ResNet20, cifar, 8),
        (Arch::ResNet20, cifar, 1),
        (Arch::ConvNet, cifar, 1),
    ] {
        let spec = ModelSpec::new(arch, input, 10, MethodSet::NONE, 1);
        let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
        let labels = Tensor::new(vec![3u32; batch], &Device::Cpu).unwrap();
        let truth = images(batch, input, 1);
        let gradient = model
            .gradients(&truth, &labels, Mode::TrainFrozenStats)
            .unwrap();
        let target = Target {
            local_steps: None,
            model: &model,
            gradient,
            labels,
            mode: Mode::TrainFrozenStats,
            bounds: vec![(-2.0, 2.0); input.channels],
        };
        let config = InversionConfig::default();
        let x = Var::from_tensor(&images(batch, input, 2)).unwrap();
        group.bench_function(format!("{arch}/batch{batch}"), |b| {
            b.iter(|| evaluate(&target, &config, x.as_tensor()).unwrap().objective)
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = attack_iteration
}
criterion_main!(benches);
