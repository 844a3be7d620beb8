//! A malicious server end to end over gRPC (`[tap] mode = "imprint"`): one FedSGD round of an
//! untrained `mlp` with two clients and batches of 8, the imprint aimed at `client-0`. The
//! analytic attack on its capture recovers at least 6 of its 8 escrowed images above 40 dB,
//! where the honest tap of the same seed recovers fewer; `client-1` gets the honest model and
//! the server steps with its update alone (the targeted update is left out of the aggregate),
//! checked against the step computed here from `client-1`'s escrowed batch.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use synfed_attack::pipeline::{attack_capture, AttackConfig};
use synfed_attack::scoring::score;
use synfed_attack::AttackKind;
use synfed_client::EscrowConfig;
use synfed_models::{checkpoint, InputShape, Model};
use synfed_server::config::TapMode;
use synfed_server::RunConfig;
use synfed_synapse::Mode;
use synfed_wire::{capture_file_name, escrow_file_name, Capture, Escrow};

const CLIENTS: usize = 2;
const WIDTH: usize = 64;

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// One FedSGD round tapping `client-0` in `mode`; every client escrows its batch.
async fn one_round(mode: TapMode) -> (tempfile::TempDir, RunConfig, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), 1, CLIENTS);
    config.model.width = Some(WIDTH);
    config.training.batch_size = 8;
    config.tap.rounds = vec![1];
    config.tap.clients = vec!["client-0".into()];
    config.tap.mode = mode;
    let truth = dir.path().join("truth");
    let (summary, reports) = federation(config.clone(), |url| {
        (0..CLIENTS)
            .map(|k| {
                let mut c = client(url, k, CLIENTS);
                c.escrow = Some(EscrowConfig {
                    dir: truth.clone(),
                    rounds: vec![],
                });
                c
            })
            .collect()
    })
    .await;
    assert!(summary.complete, "{summary:?}");
    for report in &reports {
        assert!(report.refused.is_empty(), "{:?}", report.refused);
    }
    assert_eq!(summary.captures.len(), 1);
    let updates = summary.rounds[0].updates;
    (dir, config, updates)
}

fn escrow(dir: &std::path::Path, k: usize) -> Escrow {
    Escrow::load(
        dir.join("truth")
            .join(escrow_file_name(1, &format!("client-{k}"))),
        &Device::Cpu,
    )
    .unwrap()
}

/// How many of `client-0`'s escrowed images the analytic attack on its capture recovers above
/// 40 dB, and whether the capture says it was imprinted.
fn attacked(dir: &std::path::Path) -> (usize, bool) {
    let file = capture_file_name(1, "client-0");
    let capture = Capture::load(dir.join("captures").join(file), &Device::Cpu).unwrap();
    let truth = escrow(dir, 0);
    let config = AttackConfig {
        attack: AttackKind::Analytic,
        ..Default::default()
    };
    let attack = attack_capture(&capture, &config, &Device::Cpu, |_, _, _| {}).unwrap();
    let labels: Vec<u32> = truth.labels.to_vec1().unwrap();
    let scores = score(
        &attack.model,
        Mode::Eval,
        &attack.reconstruction.best().images,
        &truth.images,
        &capture.meta.normalization,
        &attack.labels,
        &labels,
    )
    .unwrap();
    let psnr: Vec<String> = scores
        .images
        .iter()
        .map(|i| format!("{:.1}", i.scores.psnr))
        .collect();
    let above = scores
        .images
        .iter()
        .filter(|i| i.scores.psnr > 40.0)
        .count();
    let imprinted = capture.meta.imprint.is_some();
    println!("imprinted: {imprinted}, {above} of 8 above 40 dB: {psnr:?}");
    (above, imprinted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_imprinted_client_leaks_its_batch_and_the_honest_client_is_aggregated_alone() {
    let (dir, config, updates) = one_round(TapMode::Imprint).await;
    let (above, imprinted) = attacked(dir.path());
    assert!(imprinted, "the capture records the imprint");
    assert!(above >= 6, "imprint: {above} of 8 above 40 dB");
    // the targeted update is left out: the round aggregated client-1 alone
    assert_eq!(updates, 1);

    // client-1 computed on the honest global model: the server's step is w − η·g₁ with g₁
    // the gradient of client-1's escrowed batch at the initial weights
    let spec = config.model_spec(InputShape::new(1, 28, 28), 10);
    let initial = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let batch = escrow(dir.path(), 1);
    let grads = initial
        .loss(&batch.images, &batch.labels, Mode::Train)
        .unwrap()
        .backward()
        .unwrap();
    let federated = checkpoint::load(
        &dir.path().join("checkpoint.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    .model;
    let lr = config.training.lr as f32;
    for p in initial.params().trainable() {
        let w0 = values(p.var.as_tensor());
        let g = values(grads.get(p.var.as_tensor()).unwrap());
        let w1 = values(federated.params().get(&p.name).unwrap().var.as_tensor());
        let worst = w1
            .iter()
            .zip(w0.iter().zip(&g))
            .map(|(w1, (w0, g))| (w1 - (w0 - lr * g)).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "{}: off the honest step by {worst}", p.name);
    }

    let (honest_dir, _, honest_updates) = one_round(TapMode::Honest).await;
    let (honest, imprinted) = attacked(honest_dir.path());
    assert!(!imprinted);
    assert_eq!(honest_updates, 2);
    assert!(
        honest < above && honest < 6,
        "honest tap: {honest} of 8 above 40 dB, imprint {above}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imprint_without_a_fully_connected_first_layer_is_refused_before_the_run_starts() {
    for (model, named) in [("arch = \"convnet\"", "convnet")] {
        let text = format!("[model]\n{model}\n[tap]\nrounds = [1]\nmode = \"imprint\"\n");
        let err = RunConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("tap.mode") && err.contains(named), "{err}");
    }
    let err = RunConfig::from_toml("[model]\nwidth = 16\n[tap]\nmode = \"imprint\"\nbins = 17\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tap.bins"), "{err}");
    // weight splitting: a unit is Γ = 2 rows, so width 16 has 8 units to imprint
    let split = "[model]\nwidth = 16\nmethods = \"III\"\n[tap]\nmode = \"imprint\"\n";
    assert!(RunConfig::from_toml(&format!("{split}bins = 8\n")).is_ok());
    let err = RunConfig::from_toml(&format!("{split}bins = 9\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tap.bins") && err.contains("8 units"), "{err}");
    let err = RunConfig::from_toml("[tap]\nmode = \"malicious\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("malicious"), "{err}");
    assert!(RunConfig::from_toml("[tap]\nmode = \"imprint\"\n").is_ok());

    // a configuration built in code is checked by the server before anything is written
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(&dir.path().join("run"), 1, 1);
    config.model.arch = "convnet".parse().unwrap();
    config.tap.mode = TapMode::Imprint;
    let (listener, _) = bind().await;
    let err = spawn_server(config, listener).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("tap.mode"), "{err}");
    assert!(!dir.path().join("run").exists(), "nothing written");
}

/// How many of `client-0`'s escrowed images `attack` recovers from its round-1 capture in
/// `dir` above `db`, and their PSNRs.
fn recovered(dir: &std::path::Path, attack: AttackKind, db: f64) -> (usize, Vec<f64>) {
    let file = capture_file_name(1, "client-0");
    let capture = Capture::load(dir.join("captures").join(file), &Device::Cpu).unwrap();
    let truth = escrow(dir, 0);
    let config = AttackConfig {
        attack,
        ..Default::default()
    };
    let attack = attack_capture(&capture, &config, &Device::Cpu, |_, _, _| {}).unwrap();
    let labels: Vec<u32> = truth.labels.to_vec1().unwrap();
    let scores = score(
        &attack.model,
        Mode::Eval,
        &attack.reconstruction.best().images,
        &truth.images,
        &capture.meta.normalization,
        &attack.labels,
        &labels,
    )
    .unwrap();
    let psnr: Vec<f64> = scores.images.iter().map(|i| i.scores.psnr).collect();
    (psnr.iter().filter(|&&p| p > db).count(), psnr)
}

/// FedAvg: `client-0` trains two local steps of four images on the model it was sent (its
/// share of the 1,600 training digits is 8) with learning rate `lr`, and sends the difference.
async fn fedavg_round(mode: TapMode, lr: f64) -> tempfile::TempDir {
    const SHARES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), 1, CLIENTS);
    config.algorithm = synfed_server::Algorithm::FedAvg;
    config.model.width = Some(WIDTH);
    config.training.lr = lr;
    config.training.batch_size = 4;
    config.training.local_epochs = 0;
    config.training.local_steps = 2;
    config.tap.rounds = vec![1];
    config.tap.clients = vec!["client-0".into()];
    config.tap.mode = mode;
    let truth = dir.path().join("truth");
    let (summary, reports) = federation(config, |url| {
        (0..CLIENTS)
            .map(|k| {
                let mut c = client(url, k, SHARES);
                c.escrow = Some(EscrowConfig {
                    dir: truth.clone(),
                    rounds: vec![],
                });
                c
            })
            .collect()
    })
    .await;
    assert!(summary.complete, "{summary:?}");
    for report in &reports {
        assert!(report.refused.is_empty(), "{:?}", report.refused);
    }
    dir
}

/// The difference of the imprinted first layer is −lr times the sum of the two steps'
/// gradients, and each image enters one step only, so an image alone in its bin comes back as
/// long as the first step leaves the imprint in place. It does not when lr is large: the
/// first step moves an imprint row by lr·g·x, and with lr = 0.1 that is of the order of 10⁻²
/// per pixel against the row's 1/784 ≈ 1.3·10⁻³, so in the second step the rows no longer
/// measure brightness and its images leave their bins. Expected from that: with lr = 10⁻⁴
/// (the row moves by ~10⁻⁵) most of the 8 images come back; with 0.1 fewer, at most the first
/// step's 4 and some mixtures.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedavg_keeps_the_imprint_only_while_local_steps_leave_it_in_place() {
    let small = fedavg_round(TapMode::Imprint, 1e-4).await;
    assert_eq!(escrow(small.path(), 0).labels.dims(), [8]);
    let (kept, kept_psnr) = recovered(small.path(), AttackKind::Imprint, 30.0);
    let large = fedavg_round(TapMode::Imprint, 0.1).await;
    let (moved, moved_psnr) = recovered(large.path(), AttackKind::Imprint, 30.0);
    println!(
        "FedAvg 2 steps × 4 images, imprint: lr 1e-4 {kept} of 8 above 30 dB {kept_psnr:.1?}; \
         lr 0.1 {moved} of 8 {moved_psnr:.1?}"
    );
    assert!(kept >= 6, "lr 1e-4: {kept_psnr:?}");
    assert!(moved <= 4 && moved < kept, "lr 0.1: {moved_psnr:?}");

    // an honest capture is not an imprinted one: the malicious server's readout refuses it
    let honest = fedavg_round(TapMode::Honest, 1e-4).await;
    let file = capture_file_name(1, "client-0");
    let capture = Capture::load(honest.path().join("captures").join(file), &Device::Cpu).unwrap();
    let config = AttackConfig {
        attack: AttackKind::Imprint,
        ..Default::default()
    };
    let err = attack_capture(&capture, &config, &Device::Cpu, |_, _, _| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not imprinted"), "{err}");
}
