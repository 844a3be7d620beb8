//! What the attack's tests share: a model without mechanisms, a client's FedSGD capture of
//! real training images, a FedAvg client's two one-image SGD steps and their capture, and the
//! largest difference of two tensors (the zoo tests' own, through `#[path]`).
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use synfed_data::Splits;
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::{MethodSet, Mode, SynapticSgd};
use synfed_wire::{Capture, CaptureMeta, UpdateKind};

#[path = "../../../crates/models/tests/common/bits.rs"]
mod bits;

#[allow(unused_imports)] // each test file is its own crate; not all of them compare tensors
pub use bits::max_abs_diff;

/// `arch` without mechanisms for 10 classes of `input`, built from seed 1 on the CPU, of base
/// `width` (absent: the published size).
pub fn plain_model(arch: Arch, input: InputShape, width: Option<usize>) -> Model {
    let mut spec = ModelSpec::new(arch, input, 10, MethodSet::NONE, 1);
    spec.width = width;
    Model::build(&spec, DType::F32, &Device::Cpu).unwrap()
}

/// A FedSGD capture (labels hidden) of `model`'s gradient on training images `indices`, the
/// true images and their labels.
pub fn fedsgd_capture(
    model: &Model,
    splits: &Splits,
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

/// The learning rate of [`two_local_steps`].
pub const LOCAL_LR: f64 = 0.1;

/// A FedAvg client's difference θ_local − θ_global after two SGD steps (lr [`LOCAL_LR`]) of one
/// image each, the images of `x` in order, from `client`, which starts as a copy of `global`.
pub fn two_local_steps(global: &Model, client: &Model, x: &Tensor, y: &Tensor) -> Vec<Tensor> {
    let mut sgd = SynapticSgd::new(client.params(), LOCAL_LR, 5);
    for i in 0..2 {
        let loss = client
            .loss(
                &x.narrow(0, i, 1).unwrap(),
                &y.narrow(0, i, 1).unwrap(),
                Mode::Train,
            )
            .unwrap();
        sgd.step(&loss.backward().unwrap()).unwrap();
    }
    client
        .params()
        .trainable()
        .zip(global.params().trainable())
        .map(|(c, g)| (c.var.as_tensor() - g.var.as_tensor()).unwrap())
        .collect()
}

/// The capture of [`two_local_steps`]' difference, in round 1, with `labels` exposed or not.
pub fn fedavg_capture(
    global: &Model,
    splits: &Splits,
    delta: Vec<Tensor>,
    labels: Option<Vec<u32>>,
) -> Capture {
    let mut meta = CaptureMeta::fedsgd(
        global.spec().clone(),
        1,
        "client-0",
        2,
        splits.normalization.clone(),
        labels,
    );
    meta.kind = UpdateKind::FedAvg;
    meta.batch_size = 1;
    meta.local_steps = Some(2);
    meta.local_lr = Some(LOCAL_LR);
    Capture::new(meta, global, delta).unwrap()
}
