//! Gradient correctness, the contract the attack relies on: parameter gradients, input
//! gradients and the second-order quantity d/dx[1 − cos(∇θL(x), g*)] of every architecture,
//! with splitting on and off, against central finite differences in f64.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use synfed_models::gradcheck::{numeric_grad, spread_indices, to_f64_vec, worst_mismatch};
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::kernels::{backward_final, backward_final_with_constants};
use synfed_synapse::{MethodSet, Mode};

const H: f64 = 1e-5;
const ATOL: f64 = 1e-6;
const RTOL: f64 = 1e-4;

/// A reduced-width model and a batch of two random images for it.
fn setup(arch: Arch, methods: MethodSet) -> (Model, Tensor, Tensor) {
    let (input, width) = match arch {
        Arch::Mlp => (InputShape::new(3, 6, 6), 8),
        Arch::ConvNet => (InputShape::new(3, 9, 9), 2),
        Arch::LeNet => (InputShape::new(3, 8, 8), 4),
        Arch::AlexNet => (InputShape::new(3, 8, 8), 2),
        _ => (InputShape::new(3, 8, 8), 2),
    };
    let spec = ModelSpec::new(arch, input, 5, methods, 17).with_width(width);
    let model = Model::build(&spec, DType::F64, &Device::Cpu).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(arch as u64 + 100);
    let n = 2 * input.elem_count();
    let x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(
        x,
        (2, input.channels, input.height, input.width),
        &Device::Cpu,
    )
    .unwrap();
    let y = Tensor::new(&[1u32, 3], &Device::Cpu).unwrap();
    (model, x, y)
}

const MODE: Mode = Mode::TrainFrozenStats;

fn splitting(on: bool) -> MethodSet {
    MethodSet {
        splitting: on,
        ..MethodSet::NONE
    }
}

fn check_parameter_and_input_gradients(arch: Arch, split: bool) {
    let (model, x, y) = setup(arch, splitting(split));
    let xv = Var::from_tensor(&x).unwrap();
    let loss_of = || {
        model
            .loss(xv.as_tensor(), &y, MODE)
            .unwrap()
            .to_scalar::<f64>()
    };
    // candle's backward pass and the final one (fused kernels, no graph) must both match
    let loss = model.loss(xv.as_tensor(), &y, MODE).unwrap();
    for (pass, grads) in [
        ("backward", loss.backward().unwrap()),
        ("final", backward_final(&loss).unwrap()),
    ] {
        let mut checked = 0;
        for p in model.params().trainable() {
            let g = to_f64_vec(
                grads
                    .get(p.var.as_tensor())
                    .unwrap_or_else(|| panic!("{arch} {pass}: no gradient for {}", p.name)),
            )
            .unwrap();
            let idx = spread_indices(g.len(), 5);
            let numeric = numeric_grad(&p.var, &idx, H, loss_of).unwrap();
            let analytic: Vec<f64> = idx.iter().map(|&i| g[i]).collect();
            let bad = worst_mismatch(&analytic, &numeric, ATOL, RTOL);
            assert!(
                bad <= 1.0,
                "{arch} split={split} {pass} {}: autograd {analytic:?} vs numeric {numeric:?}",
                p.name
            );
            checked += 1;
        }
        assert_eq!(checked, model.params().trainable().count());
        let gx = to_f64_vec(grads.get(xv.as_tensor()).unwrap()).unwrap();
        let idx = spread_indices(gx.len(), 12);
        let numeric = numeric_grad(&xv, &idx, H, loss_of).unwrap();
        let analytic: Vec<f64> = idx.iter().map(|&i| gx[i]).collect();
        assert!(
            numeric.iter().any(|v| v.abs() > 1e-8),
            "{arch}: input gradient vanishes"
        );
        let bad = worst_mismatch(&analytic, &numeric, ATOL, RTOL);
        assert!(
            bad <= 1.0,
            "{arch} split={split} {pass} input: {analytic:?} vs {numeric:?}"
        );
    }
}

/// 1 − cos(∇θL(x), g*) over all trainable parameters concatenated.
fn gradient_mismatch(model: &Model, x: &Tensor, y: &Tensor, target: &[Tensor]) -> Tensor {
    let grads = model.loss(x, y, MODE).unwrap().backward().unwrap();
    let mut dot = Tensor::zeros((), DType::F64, &Device::Cpu).unwrap();
    let mut norm = dot.clone();
    let mut tnorm = 0.0;
    for (p, t) in model.params().trainable().zip(target) {
        let g = grads.get(p.var.as_tensor()).unwrap();
        dot = (dot + (g * t).unwrap().sum_all().unwrap()).unwrap();
        norm = (norm + g.sqr().unwrap().sum_all().unwrap()).unwrap();
        tnorm += t
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
    }
    let cos = (dot / (norm.sqrt().unwrap() * tnorm.sqrt()).unwrap()).unwrap();
    (1.0 - cos).unwrap()
}

fn check_second_order(arch: Arch, split: bool) {
    let (model, x, y) = setup(arch, splitting(split));
    // g*: the gradient of another batch (what an attacker observed)
    let target_x = (x.flip_sign_like() * 0.5).unwrap();
    let grads = model.loss(&target_x, &y, MODE).unwrap().backward().unwrap();
    let target: Vec<Tensor> = model
        .params()
        .trainable()
        .map(|p| grads.get(p.var.as_tensor()).unwrap().detach())
        .collect();
    let xv = Var::from_tensor(&x).unwrap();
    let objective = gradient_mismatch(&model, xv.as_tensor(), &y, &target);
    let numeric_at = |idx: &[usize]| {
        numeric_grad(&xv, idx, H, || {
            gradient_mismatch(&model, xv.as_tensor(), &y, &target).to_scalar::<f64>()
        })
        .unwrap()
    };
    // candle's backward pass, and the attack's: final, the weights constants
    let weights = model.params().iter().map(|p| p.var.as_tensor());
    for (pass, grads) in [
        ("backward", objective.backward().unwrap()),
        (
            "final",
            backward_final_with_constants(&objective, weights).unwrap(),
        ),
    ] {
        let gx = to_f64_vec(grads.get(xv.as_tensor()).unwrap()).unwrap();
        let idx = spread_indices(gx.len(), 10);
        let numeric = numeric_at(&idx);
        let analytic: Vec<f64> = idx.iter().map(|&i| gx[i]).collect();
        assert!(
            numeric.iter().any(|v| v.abs() > 1e-8),
            "{arch}: second-order gradient vanishes"
        );
        let bad = worst_mismatch(&analytic, &numeric, ATOL, RTOL);
        assert!(
            bad <= 1.0,
            "{arch} split={split} {pass} d/dx(1 − cos): {analytic:?} vs {numeric:?}"
        );
    }
}

trait FlipSign {
    fn flip_sign_like(&self) -> Tensor;
}

impl FlipSign for Tensor {
    /// A different but related image batch: reversed pixel order.
    fn flip_sign_like(&self) -> Tensor {
        let dims = self.dims().to_vec();
        let mut v = to_f64_vec(self).unwrap();
        v.reverse();
        Tensor::from_vec(v, dims, self.device()).unwrap()
    }
}

macro_rules! gradient_tests {
    ($($name:ident: $arch:expr,)*) => {
        mod first_order {
            use super::*;
            $(
                #[test]
                fn $name() {
                    check_parameter_and_input_gradients($arch, false);
                    check_parameter_and_input_gradients($arch, true);
                }
            )*
        }
        mod second_order {
            use super::*;
            $(
                #[test]
                fn $name() {
                    check_second_order($arch, false);
                    check_second_order($arch, true);
                }
            )*
        }
    };
}

gradient_tests! {
    mlp: Arch::Mlp,
    alexnet: Arch::AlexNet,
    resnet20: Arch::ResNet20,
    resnet32: Arch::ResNet32,
    convnet: Arch::ConvNet,
    lenet: Arch::LeNet,
}
