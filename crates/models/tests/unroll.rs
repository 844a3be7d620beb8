//! The differentiable replay of local SGD: it equals real `SynapticSgd` steps, and its
//! derivative with respect to the images matches f64 finite differences.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use synfed_models::gradcheck::{numeric_grad, spread_indices, to_f64_vec, worst_mismatch};
use synfed_models::{unrolled_update, Arch, InputShape, LocalSteps, Model, ModelSpec};
use synfed_synapse::{MethodSet, Mode, SynapticSgd};

fn setup(arch: Arch, methods: &str) -> (ModelSpec, Tensor, Tensor) {
    setup_seeded(arch, methods, 9)
}

/// `seed` draws the images; finite differences are meaningless within h of a ReLU kink, so a
/// check may pick images away from one.
fn setup_seeded(arch: Arch, methods: &str, seed: u64) -> (ModelSpec, Tensor, Tensor) {
    let input = InputShape::new(3, 8, 8);
    let width = if arch == Arch::Mlp { 8 } else { 2 };
    let methods: MethodSet = methods.parse().unwrap();
    let spec = ModelSpec::new(arch, input, 5, methods, 23).with_width(width);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = 4 * input.elem_count();
    let x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(x, (4, 3, 8, 8), &Device::Cpu).unwrap();
    let y = Tensor::new(&[1u32, 3, 0, 4], &Device::Cpu).unwrap();
    (spec, x, y)
}

const LOCAL: LocalSteps = LocalSteps {
    steps: 3,
    batch_size: 2,
    lr: 0.3,
};

fn replay_equals_real_steps(arch: Arch, methods: &str) {
    let (spec, x, y) = setup(arch, methods);
    let replayed_model = Model::build(&spec, DType::F64, &Device::Cpu).unwrap();
    let replayed = unrolled_update(&replayed_model, &x, &y, LOCAL, Mode::Train).unwrap();

    let trained = Model::build(&spec, DType::F64, &Device::Cpu).unwrap();
    let mut sgd = SynapticSgd::new(trained.params(), LOCAL.lr, 0);
    // batches 0–1, 2–3, then 0–1 again (step k uses images [k·b mod n, …))
    for start in [0, 2, 0] {
        let loss = trained
            .loss(
                &x.narrow(0, start, 2).unwrap(),
                &y.narrow(0, start, 2).unwrap(),
                Mode::TrainFrozenStats,
            )
            .unwrap();
        sgd.step(&loss.backward().unwrap()).unwrap();
    }
    for ((p, q), delta) in trained
        .params()
        .trainable()
        .zip(replayed_model.params().trainable())
        .zip(&replayed)
    {
        let real = (p.var.as_tensor() - q.var.as_tensor()).unwrap();
        let diff = (&real - delta)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let size = real
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            diff < 1e-12,
            "{arch} {methods} {}: replay differs by {diff}",
            p.name
        );
        assert!(
            size > 0.0 || p.name.contains("bias"),
            "{} did not move",
            p.name
        );
    }
    // The replay leaves the model's own parameters alone.
    let fresh = Model::build(&spec, DType::F64, &Device::Cpu).unwrap();
    for ((_, a), (_, b)) in fresh
        .params()
        .tensors()
        .iter()
        .zip(replayed_model.params().tensors().iter())
    {
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(d, 0.0);
    }
}

#[test]
fn replay_equals_real_synaptic_sgd_steps_mlp() {
    replay_equals_real_steps(Arch::Mlp, "none");
    replay_equals_real_steps(Arch::Mlp, "I+III");
}

#[test]
fn replay_equals_real_synaptic_sgd_steps_resnet_with_batchnorm() {
    replay_equals_real_steps(Arch::ResNet20, "I+III");
}

/// 1 − cos between two lists of tensors, over all of them concatenated.
fn cosine_distance(a: &[Tensor], b: &[Tensor]) -> Tensor {
    let mut dot = Tensor::new(0f64, &Device::Cpu).unwrap();
    let mut na = dot.clone();
    let mut nb = dot.clone();
    for (x, y) in a.iter().zip(b) {
        dot = (dot + (x * y).unwrap().sum_all().unwrap()).unwrap();
        na = (na + x.sqr().unwrap().sum_all().unwrap()).unwrap();
        nb = (nb + y.sqr().unwrap().sum_all().unwrap()).unwrap();
    }
    let cos = (dot / (na.sqrt().unwrap() * nb.sqrt().unwrap()).unwrap()).unwrap();
    cos.affine(-1.0, 1.0).unwrap()
}

fn image_gradient_matches_finite_differences(arch: Arch, methods: &str, seed: u64) {
    let (spec, x, y) = setup_seeded(arch, methods, seed);
    let model = Model::build(&spec, DType::F64, &Device::Cpu).unwrap();
    // The observed update comes from other images.
    let target = unrolled_update(&model, &(x.clone() * -0.5).unwrap(), &y, LOCAL, Mode::Train)
        .unwrap()
        .into_iter()
        .map(|t| t.detach())
        .collect::<Vec<_>>();
    let xv = Var::from_tensor(&x).unwrap();
    let objective = || {
        cosine_distance(
            &unrolled_update(&model, xv.as_tensor(), &y, LOCAL, Mode::Train).unwrap(),
            &target,
        )
    };
    let analytic =
        to_f64_vec(objective().backward().unwrap().get(xv.as_tensor()).unwrap()).unwrap();
    let idx = spread_indices(analytic.len(), 12);
    let numeric = numeric_grad(&xv, &idx, 1e-5, || objective().to_scalar::<f64>()).unwrap();
    let picked: Vec<f64> = idx.iter().map(|&i| analytic[i]).collect();
    assert!(
        picked.iter().any(|g| g.abs() > 1e-8),
        "vanishing gradient: {picked:?}"
    );
    let bad = worst_mismatch(&picked, &numeric, 1e-7, 1e-4);
    assert!(
        bad <= 1.0,
        "{arch} {methods}: analytic {picked:?} vs numeric {numeric:?}"
    );
}

#[test]
fn image_gradient_through_the_replay_matches_finite_differences_mlp() {
    image_gradient_matches_finite_differences(Arch::Mlp, "I+III", 9);
}

#[test]
fn image_gradient_through_the_replay_matches_finite_differences_resnet() {
    image_gradient_matches_finite_differences(Arch::ResNet20, "none", 10);
}
