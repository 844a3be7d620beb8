//! `training.bn_mode` end to end: the server sends the run's BatchNorm mode with every task,
//! the clients compute their updates in it, and the tap records it in the capture, so that the
//! attacker replays the model the way the client ran it. Server and clients over real gRPC on
//! loopback, on a BatchNorm model (Geiping's ConvNet at width 4).

#[allow(unused_imports)]
mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use synfed_client::EscrowConfig;
use synfed_models::{checkpoint, Arch, InputShape, Model};
use synfed_synapse::{BnMode, Mode};
use synfed_wire::{capture_file_name, escrow_file_name, Capture, Escrow};

const ROUNDS: u64 = 2;
const CLIENTS: usize = 2;

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The largest absolute difference between two lists of tensors, and the largest magnitude of
/// the second.
fn difference(a: &[Tensor], b: &[Tensor]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let (mut d, mut scale) = (0f32, 0f32);
    for (a, b) in a.iter().zip(b) {
        assert_eq!(a.dims(), b.dims());
        for (x, y) in values(a).iter().zip(values(b)) {
            d = d.max((x - y).abs());
            scale = scale.max(y.abs());
        }
    }
    (d, scale)
}

/// The model's BatchNorm running statistics.
fn running_statistics(model: &Model) -> Vec<Vec<f32>> {
    model
        .params()
        .iter()
        .filter(|p| !p.role.is_trainable())
        .map(|p| values(p.var.as_tensor()))
        .collect()
}

/// A ConvNet federation of 2 clients over 2 rounds in `bn_mode`, every update tapped and
/// escrowed. Checks every capture against the escrowed batch; returns the run's directory.
async fn federation_in(bn_mode: BnMode) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), ROUNDS, CLIENTS);
    config.model.arch = Arch::ConvNet;
    config.model.width = Some(4);
    config.training.batch_size = 4;
    config.training.bn_mode = bn_mode;
    config.tap.rounds = (1..=ROUNDS).collect();
    let truth = dir.path().join("truth");
    let escrow_dir = truth.clone();
    let (summary, reports) = federation(config.clone(), move |url| {
        (0..CLIENTS)
            .map(|k| {
                let mut c = client(url, k, CLIENTS);
                c.escrow = Some(EscrowConfig {
                    dir: escrow_dir.clone(),
                    rounds: vec![],
                });
                c
            })
            .collect()
    })
    .await;
    assert!(summary.complete, "{bn_mode}: {summary:?}");
    for r in &summary.rounds {
        assert_eq!((r.updates, r.refused), (CLIENTS, 0), "{bn_mode}: {r:?}");
    }
    for report in &reports {
        assert!(report.refused.is_empty(), "{bn_mode}: {:?}", report.refused);
    }

    for round in 1..=ROUNDS {
        for k in 0..CLIENTS {
            let name = format!("client-{k}");
            let capture = Capture::load(
                dir.path()
                    .join("captures")
                    .join(capture_file_name(round, &name)),
                &Device::Cpu,
            )
            .unwrap();
            let escrow =
                Escrow::load(truth.join(escrow_file_name(round, &name)), &Device::Cpu).unwrap();
            let _binding = escrow.check_matches(&capture).unwrap();
            // the tap records the mode the client computed in
            assert_eq!(capture.meta.mode, bn_mode.mode(), "round {round}, {name}");

            // Independently: the gradient of the escrowed batch at the capture's global weights,
            // in that mode (train mode without touching the replica's running statistics).
            let model = capture.model(DType::F32, &Device::Cpu).unwrap();
            let update = capture.update_in_param_order(&model).unwrap();
            let replay = match bn_mode {
                BnMode::Train => Mode::TrainFrozenStats,
                BnMode::Eval => Mode::Eval,
            };
            let expected = model
                .gradients(&escrow.images, &escrow.labels, replay)
                .unwrap();
            let (d, scale) = difference(&update, &expected);
            assert!(scale > 0.0);
            assert!(
                d <= 1e-5 * scale.max(1.0),
                "{bn_mode}, round {round}, {name}: the captured update differs from the \
                 {replay:?} gradient by {d} (scale {scale})"
            );
            // ... and the two modes really differ on this model
            let other = match bn_mode {
                BnMode::Train => Mode::Eval,
                BnMode::Eval => Mode::TrainFrozenStats,
            };
            let other = model
                .gradients(&escrow.images, &escrow.labels, other)
                .unwrap();
            let (d, _) = difference(&update, &other);
            assert!(
                d > 1e-2 * scale,
                "{bn_mode}, round {round}, {name}: the modes agree ({d} of {scale})"
            );
        }
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eval_mode_clients_send_eval_gradients_and_the_capture_says_so() {
    let dir = federation_in(BnMode::Eval).await;
    // Eval-mode clients leave the running statistics alone, so the federation never moved
    // them: the final model's are the initial model's.
    let federated = checkpoint::load(
        &dir.path().join("checkpoint.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    .model;
    let initial = Model::build(federated.spec(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(federated.spec().input, InputShape::new(1, 28, 28));
    assert_eq!(running_statistics(&federated), running_statistics(&initial));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn train_mode_clients_send_batch_statistics_gradients_and_the_capture_says_so() {
    let dir = federation_in(BnMode::Train).await;
    // Train-mode clients' running statistics changes are aggregated into the global model.
    let federated = checkpoint::load(
        &dir.path().join("checkpoint.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    .model;
    let initial = Model::build(federated.spec(), DType::F32, &Device::Cpu).unwrap();
    assert_ne!(running_statistics(&federated), running_statistics(&initial));
}
