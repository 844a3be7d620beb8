//! The attack end to end on real images: a client's FedSGD gradient is captured, inverted and
//! scored against the escrowed truth.

use candle_core::{DType, Device, Tensor};
use synfed_attack::inversion::InversionConfig;
use synfed_attack::pipeline::{attack_capture, AttackConfig};
use synfed_attack::scoring::{match_to_truth, score};
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::{MethodSet, Mode};
use synfed_wire::{Capture, CaptureMeta};

/// A FedSGD capture of `model`'s gradient on training images `indices` of `data`, labels hidden.
fn capture(
    model: &Model,
    splits: &synfed_data::Splits,
    indices: &[usize],
) -> (Capture, Tensor, Vec<u32>) {
    let (x, y) = splits
        .train
        .batch(indices, &splits.normalization, &Device::Cpu, DType::F32)
        .unwrap();
    let update = model.gradients(&x, &y, Mode::TrainFrozenStats).unwrap();
    let meta = CaptureMeta::fedsgd(
        model.spec().clone(),
        0,
        "client-0",
        indices.len(),
        splits.normalization.clone(),
        None,
    );
    let labels = y.to_vec1::<u32>().unwrap();
    (Capture::new(meta, model, update).unwrap(), x, labels)
}

#[test]
fn untrained_mlp_reveals_a_real_mnist_digit_and_its_label() {
    let splits = synfed_data::load("demo-mnist", None).unwrap();
    let spec = ModelSpec::new(
        Arch::Mlp,
        InputShape::new(1, 28, 28),
        10,
        MethodSet::NONE,
        1,
    );
    let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let (cap, truth, true_labels) = capture(&model, &splits, &[0]);
    let config = AttackConfig {
        inversion: InversionConfig {
            iterations: 200,
            seed: 3,
            ..Default::default()
        },
        use_exposed_labels: false,
    };
    let attack = attack_capture(&cap, &config, &Device::Cpu, |_, _, _| {}).unwrap();
    assert!(attack.labels_recovered);
    assert_eq!(attack.labels, true_labels, "iDLG must recover the label");
    let best = attack.reconstruction.best();
    let scores = score(
        &attack.model,
        Mode::Eval,
        &best.images,
        &truth,
        &splits.normalization,
        &attack.labels,
        &true_labels,
    )
    .unwrap();
    assert!(scores.psnr >= 25.0, "PSNR {:.2} dB", scores.psnr);
    assert_eq!(scores.label_accuracy, 1.0);
    // the trace records every iteration and the objective fell
    let trace = &attack.reconstruction.trace;
    assert_eq!(trace.len(), 200);
    assert!(trace[199].distance < trace[0].distance);
}

#[test]
fn shuffled_reconstructions_are_scored_as_unshuffled() {
    let splits = synfed_data::load("demo-cifar10", None).unwrap();
    let norm = &splits.normalization;
    let (truth, _) = splits
        .train
        .batch(&[0, 1, 2, 3], norm, &Device::Cpu, DType::F32)
        .unwrap();
    // reconstructions: the truth in the order 2, 0, 3, 1, slightly perturbed
    let order = Tensor::new(&[2u32, 0, 3, 1], &Device::Cpu).unwrap();
    let noise = (Tensor::ones_like(&truth).unwrap() * 0.01).unwrap();
    let recon = (truth.index_select(&order, 0).unwrap() + noise).unwrap();
    let (matched, source) = match_to_truth(&recon, &truth, norm).unwrap();
    assert_eq!(source, vec![1, 3, 0, 2]);
    let diff = (matched - &truth)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((diff - 0.01).abs() < 1e-5);
    let spec = ModelSpec::new(
        Arch::LeNet,
        InputShape::new(3, 32, 32),
        10,
        MethodSet::NONE,
        1,
    );
    let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let s = score(
        &model,
        Mode::Eval,
        &recon,
        &truth,
        norm,
        &[1, 2, 3, 4],
        &[4, 3, 2, 0],
    )
    .unwrap();
    assert!(s.psnr > 35.0, "{}", s.psnr);
    assert!(
        (s.mse_normalized - 1e-4).abs() < 1e-6,
        "{}",
        s.mse_normalized
    );
    assert_eq!(s.label_accuracy, 0.75);
    assert_eq!(s.images[0].reconstruction, 1);
    // scored without matching, the same batch would look bad
    let unmatched = synfed_attack::metrics::psnr_batch(
        &norm.denormalize(&recon).unwrap().clamp(0f32, 1f32).unwrap(),
        &norm.denormalize(&truth).unwrap().clamp(0f32, 1f32).unwrap(),
    )
    .unwrap();
    assert!(unmatched.iter().sum::<f64>() / 4.0 < 20.0);
}
