//! The mechanisms' own cost, apart from the forward and backward pass: one SGD step of the
//! paper's CIFAR MLP (3072-3000-3000-10, 18.2 M weights) with a fixed gradient, without
//! mechanisms, with fuzzy learning rates (I), with weight rejuvenation (II) and with both; and
//! rejuvenation of its first layer alone (9.2 M weights).
//!
//! `cargo bench -p synfed-synapse --bench mechanisms`
//!
//! The whole training step, forward and backward included, is `cargo bench --bench train_step`.

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;
use synfed_synapse::{Builder, Hyper, LayerOptions, MethodSet, ParamStore, SynapticSgd};

const SEED: u64 = 2024;

/// The MLP's parameters (no forward pass is needed) and a gradient of ±1e-3 per tensor.
fn mlp(methods: MethodSet) -> (ParamStore, Vec<Tensor>) {
    let mut b =
        Builder::new(SEED, methods, Hyper::default(), DType::F32, &Device::Cpu).expect("builder");
    b.linear("fc1", 3072, 3000, LayerOptions::default())
        .expect("fc1");
    b.linear("fc2", 3000, 3000, LayerOptions::default())
        .expect("fc2");
    b.linear("fc3", 3000, 10, LayerOptions::classifier())
        .expect("fc3");
    let store = b.finish();
    let grads = store
        .iter()
        .map(|p| {
            let n = p.elem_count();
            let g: Vec<f32> = (0..n)
                .map(|i| if i % 2 == 0 { 1e-3 } else { -1e-3 })
                .collect();
            Tensor::from_vec(g, p.var.dims(), &Device::Cpu).expect("gradient")
        })
        .collect();
    (store, grads)
}

fn mechanisms(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgd_step/mlp");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    let fuzzy = MethodSet {
        fuzzy: true,
        ..MethodSet::NONE
    };
    let rejuvenation = MethodSet {
        rejuvenation: true,
        ..MethodSet::NONE
    };
    let both = MethodSet {
        fuzzy: true,
        rejuvenation: true,
        ..MethodSet::NONE
    };
    for methods in [MethodSet::NONE, fuzzy, rejuvenation, both] {
        let (store, grads) = mlp(methods);
        let mut opt = SynapticSgd::new(&store, 0.01, SEED);
        group.bench_function(format!("{methods}"), |b| {
            b.iter(|| {
                let mut next = grads.iter();
                black_box(opt.step_with(|_| next.next().cloned()).expect("step"))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("rejuvenate");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    let (store, _) = mlp(rejuvenation);
    let fc1 = store.get("fc1.weight").expect("fc1.weight").clone();
    let mut rng = synfed_synapse::rng::stream(SEED, synfed_synapse::rng::STREAM_REJUVENATION);
    let mut rejuvenator = synfed_synapse::rejuvenation::Rejuvenator::new(
        synfed_synapse::rng::stream(SEED, synfed_synapse::rng::STREAM_REJUVENATION),
    );
    group.bench_function("mlp_fc1_3000x3072", |b| {
        b.iter(|| {
            black_box(
                rejuvenator
                    .rejuvenate(&fc1, Hyper::default().d_re)
                    .expect("rejuvenate"),
            )
        })
    });
    group.bench_function("mlp_fc1_3000x3072/word_by_word", |b| {
        b.iter(|| {
            black_box(
                synfed_synapse::rejuvenation::rejuvenate(&fc1, Hyper::default().d_re, &mut rng)
                    .expect("rejuvenate"),
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = mechanisms
}
criterion_main!(benches);
