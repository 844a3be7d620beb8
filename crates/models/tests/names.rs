//! Stable tensor names: ResNet's follow torchvision and ConvNet's are numbered from zero, as
//! checkpoints, captures and the attack address tensors by name.

mod common;

use common::*;
use synfed_models::{Arch, Model, ModelSpec};
use synfed_synapse::{MethodSet, Role};

fn names(model: &Model) -> Vec<String> {
    model.params().iter().map(|p| p.name.clone()).collect()
}

#[test]
fn resnet20_uses_torchvision_names() {
    let model = build(&ModelSpec::new(
        Arch::ResNet20,
        CIFAR,
        10,
        MethodSet::NONE,
        0,
    ));
    let names = names(&model);
    for name in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer1.2.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_mean",
        "layer3.0.downsample.0.weight",
        "layer3.2.bn2.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.iter().any(|n| n == name), "no `{name}` in {names:?}");
    }
    // no bias on convolutions, no downsample where the shape is kept, no fourth block
    for absent in [
        "conv1.bias",
        "layer1.0.conv1.bias",
        "layer1.0.downsample.0.weight",
        "layer2.1.downsample.0.weight",
        "layer1.3.conv1.weight",
    ] {
        assert!(!names.iter().any(|n| n == absent), "unexpected `{absent}`");
    }
    let get = |n: &str| model.params().get(n).unwrap();
    assert_eq!(get("conv1.weight").var.dims(), &[16, 3, 3, 3]);
    assert_eq!(
        get("layer2.0.downsample.0.weight").var.dims(),
        &[32, 16, 1, 1]
    );
    assert_eq!(get("layer3.2.bn2.weight").var.dims(), &[64]);
    assert_eq!(get("fc.weight").var.dims(), &[10, 64]);
    assert_eq!(get("bn1.running_mean").role, Role::RunningMean);
    // 1 stem conv + 18 block convs + 2 projections + fc = 22 synaptic weights
    let weights = model
        .params()
        .iter()
        .filter(|p| p.role == Role::SynapticWeight)
        .count();
    assert_eq!(weights, 22);
}

#[test]
fn convnet_has_eight_conv_layers_named_from_zero() {
    let model = build(&ModelSpec::new(Arch::ConvNet, CIFAR, 10, MethodSet::NONE, 0).with_width(4));
    let names = names(&model);
    for i in 0..8 {
        for suffix in ["weight", "bias"] {
            let n = format!("conv{i}.{suffix}");
            assert!(names.contains(&n), "no `{n}` in {names:?}");
        }
        let n = format!("bn{i}.running_var");
        assert!(names.contains(&n), "no `{n}`");
    }
    assert!(names.contains(&"linear.weight".to_string()));
    assert!(names.contains(&"linear.bias".to_string()));
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("conv8") || n.starts_with("bn8")),
        "{names:?}"
    );
    // the Linear takes 4w·3·3 features
    assert_eq!(
        model.params().get("linear.weight").unwrap().var.dims(),
        &[10, 4 * 4 * 3 * 3]
    );
}
