//! An attack whose objective stops being finite ends that trial and still returns a
//! reconstruction, instead of failing (a comparison used to abort on one such image: a trained
//! split mlp's candidate whose gradient vanished). Here the attacked model's gradient is
//! exactly zero for every candidate — its hidden units are all dead (bias −10⁶) and its output
//! bias makes the softmax exactly the label's one-hot — so the cosine distance to the observed
//! (nonzero) gradient is 0/0 from the first iteration: every trial stops there, keeps its
//! initial candidates with the worst distance, and the attack reports it has not converged.

mod common;

use candle_core::{DType, Device};
use synfed_attack::inversion::{self, InversionConfig, Target};
use synfed_attack::pipeline::pixel_bounds;
use synfed_models::{Arch, InputShape};
use synfed_synapse::Mode;

#[test]
fn a_trial_without_a_finite_objective_keeps_its_candidates_and_the_attack_goes_on() {
    let splits = synfed_data::load("demo-mnist", None).unwrap();
    let model = common::plain_model(Arch::Mlp, InputShape::new(1, 28, 28), Some(16));
    let (x, y) = splits
        .train
        .batch(&[0], &splits.normalization, &Device::Cpu, DType::F32)
        .unwrap();
    let gradient = model.gradients(&x, &y, Mode::TrainFrozenStats).unwrap();
    let label = y.to_vec1::<u32>().unwrap()[0] as usize;
    let dead = common::plain_model(Arch::Mlp, InputShape::new(1, 28, 28), Some(16));
    for p in dead.params().trainable() {
        let value = match p.name.as_str() {
            "fc1.bias" => (p.var.as_tensor().ones_like().unwrap() * -1e6).unwrap(),
            "fc2.bias" => {
                let mut b = vec![0f32; 10];
                b[label] = 1e3;
                candle_core::Tensor::new(b, &Device::Cpu).unwrap()
            }
            _ => continue,
        };
        p.var.set(&value).unwrap();
    }
    let target = Target {
        model: &dead,
        gradient,
        local_steps: None,
        labels: y,
        mode: Mode::Train,
        bounds: pixel_bounds(&splits.normalization.mean, &splits.normalization.std),
    };
    let config = InversionConfig {
        iterations: 50,
        restarts: 2,
        seed: 3,
        ..Default::default()
    };
    let mut iterations = 0;
    let r = inversion::reconstruct(&target, [1, 1, 28, 28], &config, |_, _, _| iterations += 1)
        .unwrap();
    assert_eq!(iterations, 0);
    assert!(r.trace.is_empty());
    assert_eq!(r.trials.len(), 2);
    for t in &r.trials {
        assert_eq!(t.stopped_at, Some(0));
        assert_eq!(t.distance, f64::INFINITY);
        let v = t.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|p| p.is_finite()));
    }
    assert!(!r.converged());
}
