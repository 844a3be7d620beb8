//! CUDA against the CPU kernels, on the same weights and inputs (built only with
//! `--features cuda`; run on a machine with a GPU by `scripts/gpu-check.sh`).
//!
//! On the CPU synfed computes with its own kernels (Winograd, fused BatchNorm, …); on a GPU
//! every op is candle's CUDA op. Both must compute the same functions, so for every
//! architecture, with no mechanism and with I+II+III, these tests compare: the logits (train
//! and eval mode), every parameter gradient a FedSGD client sends, the FedAvg update of two
//! local steps, one synaptic SGD step (fuzzy factors, rejuvenation's resets, split replicas)
//! and the Inverting-Gradients objective with its image gradient, the second-order quantity
//! the attack descends.
//!
//! The comparison is made in f64, where two implementations of the same function agree to
//! ~1e-12 and any real difference (a wrong op, a missed term, a detached gradient) shows as an
//! error of order 1: every check must agree to [`F64_TOLERANCE`]. Errors are relative to the
//! tensor's norm, floored at 1e-3 of the norm of all tensors compared together (a bias before
//! BatchNorm has a zero gradient, and its computed value is round-off). Forward values and
//! first-order gradients are also compared in f32, the dtype users compute in, where sums in
//! a different order and depth amplify round-off: to [`F32_TOLERANCE`]. Each test prints the
//! largest error it saw.
//!
//! Needs `CANDLE_GRAD_DO_NOT_DETACH=1` in the environment (cargo sets it from
//! `.cargo/config.toml`; `scripts/gpu-check.sh` exports it).

#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use synfed_attack::inversion::{evaluate, InversionConfig, Target};
use synfed_models::{unrolled_update, Arch, InputShape, LocalSteps, Model, ModelSpec};
use synfed_synapse::kernels::backward_final;
use synfed_synapse::{MethodSet, Mode, SynapticSgd};

/// Largest relative error of any check in f64.
const F64_TOLERANCE: f64 = 1e-8;
/// … of forward values and first-order gradients in f32.
const F32_TOLERANCE: f64 = 5e-2;

fn gpu() -> Device {
    assert_eq!(
        std::env::var("CANDLE_GRAD_DO_NOT_DETACH").as_deref(),
        Ok("1"),
        "set CANDLE_GRAD_DO_NOT_DETACH=1: without it candle detaches gradients and the attack's \
         second-order gradient is wrong"
    );
    Device::new_cuda(0)
        .expect("these tests need CUDA device 0 (run them through scripts/gpu-check.sh)")
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("read back")
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|y| y * y).sum::<f64>().sqrt()
}

/// Per pair (cuda, cpu): ‖cuda − cpu‖ / max(‖cpu‖, 1e-3 · ‖all cpu tensors‖).
fn relative_errors(pairs: &[(&Tensor, &Tensor)]) -> Vec<f64> {
    let values: Vec<(Vec<f64>, Vec<f64>)> = pairs
        .iter()
        .map(|(a, b)| {
            assert_eq!(a.dims(), b.dims(), "shapes differ");
            (host(a), host(b))
        })
        .collect();
    let total = values
        .iter()
        .map(|(_, b)| norm(b).powi(2))
        .sum::<f64>()
        .sqrt();
    values
        .iter()
        .map(|(a, b)| {
            let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
            norm(&diff) / norm(b).max(1e-3 * total).max(1e-300)
        })
        .collect()
}

fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    relative_errors(&[(a, b)])[0]
}

fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F64 {
        F64_TOLERANCE
    } else {
        F32_TOLERANCE
    }
}

/// A model as its tests use it: CIFAR-sized where the architecture needs it, narrower layers
/// than the paper's (the functions are the same at any width), a batch of four images.
fn spec(arch: Arch, methods: MethodSet) -> ModelSpec {
    let (input, width) = match arch {
        Arch::Mlp => (InputShape::new(3, 16, 16), Some(64)),
        Arch::LeNet => (InputShape::new(3, 32, 32), None),
        Arch::ConvNet => (InputShape::new(3, 32, 32), Some(16)),
        Arch::AlexNet => (InputShape::new(3, 32, 32), Some(16)),
        _ => (InputShape::new(3, 32, 32), None),
    };
    let spec = ModelSpec::new(arch, input, 10, methods, 7);
    match width {
        Some(w) => spec.with_width(w),
        None => spec,
    }
}

struct Pair {
    cpu: Model,
    cuda: Model,
    x_cpu: Tensor,
    x_cuda: Tensor,
    y_cpu: Tensor,
    y_cuda: Tensor,
}

fn pair(arch: Arch, methods: MethodSet, dtype: DType) -> Pair {
    let spec = spec(arch, methods);
    let cpu = Model::build(&spec, dtype, &Device::Cpu).expect("cpu model");
    let cuda = Model::build(&spec, dtype, &gpu()).expect("cuda model");
    assert!(cuda.device().is_cuda(), "the model must live on the GPU");
    // same spec, same weights: built from the same seeded streams on the host
    for (a, b) in cuda.params().iter().zip(cpu.params().iter()) {
        assert_eq!(a.name, b.name);
        assert_eq!(
            relative_error(a.var.as_tensor(), b.var.as_tensor()),
            0.0,
            "{}",
            a.name
        );
    }
    let input = spec.input;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(arch as u64);
    let n = 4 * input.elem_count();
    let x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x_cpu = Tensor::from_vec(
        x,
        (4, input.channels, input.height, input.width),
        &Device::Cpu,
    )
    .and_then(|x| x.to_dtype(dtype))
    .expect("images");
    let y_cpu = Tensor::new(&[1u32, 3, 3, 7], &Device::Cpu).expect("labels");
    let x_cuda = x_cpu.to_device(cuda.device()).expect("images to gpu");
    let y_cuda = y_cpu.to_device(cuda.device()).expect("labels to gpu");
    Pair {
        cpu,
        cuda,
        x_cpu,
        x_cuda,
        y_cpu,
        y_cuda,
    }
}

/// Checks `errors` (one per named tensor) against the dtype's tolerance; returns the largest.
fn check(what: &str, names: &[String], errors: &[f64], dtype: DType) -> f64 {
    for (name, e) in names.iter().zip(errors) {
        assert!(
            *e < tolerance(dtype),
            "{what} {name} ({dtype:?}): rel. error {e:.2e} > {:.0e}",
            tolerance(dtype)
        );
    }
    errors.iter().cloned().fold(0.0, f64::max)
}

fn trainable_names(model: &Model) -> Vec<String> {
    model.params().trainable().map(|p| p.name.clone()).collect()
}

fn forward_and_gradients(arch: Arch, methods: MethodSet, dtype: DType) -> f64 {
    let p = pair(arch, methods, dtype);
    let what = format!("{arch} {methods:?}");
    let mut worst = 0.0f64;
    for mode in [Mode::Train, Mode::TrainFrozenStats, Mode::Eval] {
        let a = p.cuda.forward(&p.x_cuda, mode).expect("cuda forward");
        assert!(a.device().is_cuda());
        let b = p.cpu.forward(&p.x_cpu, mode).expect("cpu forward");
        let e = relative_error(&a, &b);
        worst = worst.max(check(&what, &[format!("{mode:?} logits")], &[e], dtype));
    }
    let ga = p
        .cuda
        .gradients(&p.x_cuda, &p.y_cuda, Mode::Train)
        .expect("cuda gradients");
    let gb = p
        .cpu
        .gradients(&p.x_cpu, &p.y_cpu, Mode::Train)
        .expect("cpu gradients");
    assert_eq!(ga.len(), gb.len());
    let pairs: Vec<_> = ga.iter().zip(&gb).collect();
    let names: Vec<String> = trainable_names(&p.cpu)
        .iter()
        .map(|n| format!("∂L/∂{n}"))
        .collect();
    worst.max(check(&what, &names, &relative_errors(&pairs), dtype))
}

fn fedavg_update(arch: Arch, methods: MethodSet) -> f64 {
    let p = pair(arch, methods, DType::F64);
    let local = LocalSteps {
        steps: 2,
        batch_size: 2,
        lr: 0.05,
    };
    let a = unrolled_update(&p.cuda, &p.x_cuda, &p.y_cuda, local, Mode::Train).expect("cuda");
    let b = unrolled_update(&p.cpu, &p.x_cpu, &p.y_cpu, local, Mode::Train).expect("cpu");
    let pairs: Vec<_> = a.iter().zip(&b).collect();
    let names: Vec<String> = trainable_names(&p.cpu)
        .iter()
        .map(|n| format!("FedAvg Δ{n}"))
        .collect();
    check(
        &format!("{arch} {methods:?}"),
        &names,
        &relative_errors(&pairs),
        DType::F64,
    )
}

fn sgd_step(arch: Arch, methods: MethodSet) -> f64 {
    let p = pair(arch, methods, DType::F64);
    for (model, x, y) in [
        (&p.cuda, &p.x_cuda, &p.y_cuda),
        (&p.cpu, &p.x_cpu, &p.y_cpu),
    ] {
        let mut opt = SynapticSgd::new(model.params(), 0.1, 5);
        for _ in 0..2 {
            let loss = model.loss(x, y, Mode::Train).expect("loss");
            opt.step(&backward_final(&loss).expect("backward"))
                .expect("step");
        }
    }
    let pairs: Vec<_> = p
        .cuda
        .params()
        .iter()
        .zip(p.cpu.params().iter())
        .map(|(a, b)| (a.var.as_tensor(), b.var.as_tensor()))
        .collect();
    let names: Vec<String> = p
        .cpu
        .params()
        .iter()
        .map(|q| format!("{} after two steps", q.name))
        .collect();
    check(
        &format!("{arch} {methods:?}"),
        &names,
        &relative_errors(&pairs),
        DType::F64,
    )
}

fn attack_gradient(arch: Arch, methods: MethodSet) -> f64 {
    let p = pair(arch, methods, DType::F64);
    let config = InversionConfig::default();
    let mut results = Vec::new();
    for (model, x, y) in [
        (&p.cuda, &p.x_cuda, &p.y_cuda),
        (&p.cpu, &p.x_cpu, &p.y_cpu),
    ] {
        let target = Target {
            model,
            gradient: model
                .gradients(x, y, Mode::TrainFrozenStats)
                .expect("observed"),
            local_steps: None,
            labels: y.clone(),
            mode: Mode::TrainFrozenStats,
            bounds: vec![(-2.0, 2.0); 3],
        };
        // a trial point away from the truth, where the objective's gradient is large
        let trial = Var::from_tensor(&(x * 0.5).expect("trial").affine(1.0, 0.1).expect("trial"))
            .expect("trial");
        results.push(evaluate(&target, &config, trial.as_tensor()).expect("iteration"));
    }
    let (a, b) = (&results[0], &results[1]);
    assert!(a.gradient.device().is_cuda());
    let what = format!("{arch} {methods:?}");
    let objective = (a.objective - b.objective).abs() / b.objective.abs().max(1e-300);
    check(
        &what,
        &["attack objective".into()],
        &[objective],
        DType::F64,
    );
    let e = relative_error(&a.gradient, &b.gradient);
    check(&what, &["attack image gradient".into()], &[e], DType::F64).max(objective)
}

macro_rules! per_architecture {
    ($($name:ident => $arch:expr),* $(,)?) => {
        mod parity {
            use super::*;
            $(
                #[test]
                fn $name() {
                    for methods in [MethodSet::NONE, MethodSet::ALL] {
                        let f64_worst = [
                            forward_and_gradients($arch, methods, DType::F64),
                            fedavg_update($arch, methods),
                            sgd_step($arch, methods),
                            attack_gradient($arch, methods),
                        ];
                        let f32_worst = forward_and_gradients($arch, methods, DType::F32);
                        eprintln!(
                            "{} {:?}: largest relative error f64 forward/gradients {:.1e}, \
                             FedAvg update {:.1e}, SGD steps {:.1e}, attack {:.1e}; \
                             f32 forward/gradients {:.1e}",
                            $arch, methods, f64_worst[0], f64_worst[1], f64_worst[2],
                            f64_worst[3], f32_worst
                        );
                    }
                }
            )*
        }
    };
}

per_architecture! {
    mlp => Arch::Mlp,
    lenet => Arch::LeNet,
    alexnet => Arch::AlexNet,
    convnet => Arch::ConvNet,
    resnet20 => Arch::ResNet20,
    resnet32 => Arch::ResNet32,
    resnet56 => Arch::ResNet56,
}
