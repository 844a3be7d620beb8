//! Weight splitting on ResNet: a width the splitting factor does not divide is an error naming
//! the layer, the classifier is never split, and replica units of hidden layers are tied (they
//! receive identical gradients).

mod common;

use candle_core::{DType, Device};
use common::*;
use synfed_models::{Arch, Model, ModelError, ModelSpec};
use synfed_synapse::{MethodSet, Mode, SynapseError};

fn splitting() -> MethodSet {
    MethodSet {
        splitting: true,
        ..MethodSet::NONE
    }
}

#[test]
fn splitting_a_resnet_of_odd_width_names_the_layer() {
    let spec = ModelSpec::new(Arch::ResNet20, CIFAR, 10, splitting(), 0).with_width(3);
    match Model::build(&spec, DType::F32, &Device::Cpu) {
        Err(ModelError::Synapse(SynapseError::NotSplittable {
            layer,
            units,
            gamma,
        })) => {
            assert_eq!((layer.as_str(), units, gamma), ("conv1", 3, 2));
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("width 3 split by Γ = 2 was accepted"),
    }
    let msg = Model::build(&spec, DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("conv1") && msg.contains('3'), "{msg}");
    // without splitting the same width is fine
    build(&spec.clone().with_methods(MethodSet {
        splitting: false,
        ..MethodSet::ALL
    }));
}

#[test]
fn the_classifier_is_never_split() {
    // Γ = 3 divides every hidden width (3, 6, 12) but neither 10 nor 7 classes: it builds only
    // because fc is left alone.
    for classes in [10, 7] {
        let mut spec = ModelSpec::new(Arch::ResNet20, CIFAR, classes, splitting(), 4).with_width(3);
        spec.hyper.gamma = 3;
        let model = build(&spec);
        let logits = model
            .forward(&images(4, CIFAR, 9, DType::F32), Mode::Eval)
            .unwrap();
        assert_eq!(logits.dims(), &[4, classes]);
    }
    // a split classifier would tile its outputs: logit k would equal logit k + K/Γ
    let model = build(&ModelSpec::new(Arch::ResNet20, CIFAR, 10, splitting(), 4).with_width(4));
    let v = values(
        &model
            .forward(&images(2, CIFAR, 9, DType::F32), Mode::Eval)
            .unwrap(),
    );
    assert_ne!(v[..5], v[5..10], "{v:?}");
}

#[test]
fn splitting_ties_replica_units_of_hidden_layers() {
    // Hidden layers are split: the two rows k and k + N/2 of conv1 feed the same sum, so they
    // receive identical gradients; the classifier's rows do not.
    let model = Model::build(
        &ModelSpec::new(Arch::ResNet20, CIFAR, 10, splitting(), 4).with_width(4),
        DType::F64,
        &Device::Cpu,
    )
    .unwrap();
    let x = images(3, CIFAR, 2, DType::F64);
    let grads = model
        .loss(&x, &labels(3, 10), Mode::TrainFrozenStats)
        .unwrap()
        .backward()
        .unwrap();
    let grad_rows = |name: &str| -> Vec<Vec<f64>> {
        let p = model.params().get(name).unwrap();
        let g = grads.get(p.var.as_tensor()).unwrap();
        let rows = g.dims()[0];
        (0..rows)
            .map(|r| values(&g.narrow(0, r, 1).unwrap()))
            .collect()
    };
    let close = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-12 * (1.0 + x.abs()))
    };
    let conv1 = grad_rows("conv1.weight");
    assert_eq!(conv1.len(), 4);
    assert!(close(&conv1[0], &conv1[2]), "{conv1:?}");
    assert!(close(&conv1[1], &conv1[3]), "{conv1:?}");
    assert!(!close(&conv1[0], &conv1[1]), "{conv1:?}");
    let ds = grad_rows("layer3.0.downsample.0.weight");
    assert_eq!(ds.len(), 16);
    assert!(close(&ds[0], &ds[8]) && close(&ds[7], &ds[15]));
    assert!(!close(&ds[0], &ds[1]));
    let fc = grad_rows("fc.weight");
    assert!(!close(&fc[0], &fc[5]), "{fc:?}");
}
