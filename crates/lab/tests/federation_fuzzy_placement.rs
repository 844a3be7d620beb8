//! Where fuzzy learning rates (I) act, end to end over gRPC: with `training.fuzzy_at =
//! "client"` each client sends g ⊙ η̂_client (its private factors) and the server steps without
//! factors; with `server` the client sends the plain gradient and the server's step carries
//! the global factors. Expectations are computed here, independently of the federation: the
//! gradient of the escrowed batch at the initial weights, the factors drawn from the documented
//! seed, the SGD step by hand.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use std::collections::HashMap;
use synfed_client::EscrowConfig;
use synfed_models::{checkpoint, InputShape, Model};
use synfed_server::RunConfig;
use synfed_synapse::fuzzy_placement::{client_factors, client_seed};
use synfed_synapse::{FuzzyPlacement, Mode, Role};
use synfed_wire::{capture_file_name, escrow_file_name, Capture, Escrow};

const CLIENTS: usize = 2;

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// One FedSGD round of `mlp` (I) with `at`, both clients tapped and escrowed; returns the run
/// folder, its configuration and the truth folder.
async fn one_round(at: FuzzyPlacement) -> (tempfile::TempDir, RunConfig) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path(), 1, CLIENTS);
    config.model.methods = "I".parse().unwrap();
    config.training.fuzzy_at = at;
    config.tap.rounds = vec![1];
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
    assert_eq!(summary.rounds[0].updates, CLIENTS);
    for report in &reports {
        assert!(report.refused.is_empty(), "{:?}", report.refused);
    }
    (dir, config)
}

/// The plain gradient of client `k`'s escrowed round-1 batch at the initial weights, by name.
fn plain_gradient(model: &Model, dir: &std::path::Path, k: usize) -> HashMap<String, Vec<f32>> {
    let escrow = Escrow::load(
        dir.join("truth")
            .join(escrow_file_name(1, &format!("client-{k}"))),
        &Device::Cpu,
    )
    .unwrap();
    let loss = model
        .loss(&escrow.images, &escrow.labels, Mode::Train)
        .unwrap();
    let grads = loss.backward().unwrap();
    model
        .params()
        .trainable()
        .map(|p| {
            (
                p.name.clone(),
                values(grads.get(p.var.as_tensor()).unwrap()),
            )
        })
        .collect()
}

fn capture(dir: &std::path::Path, k: usize) -> HashMap<String, Vec<f32>> {
    let file = capture_file_name(1, &format!("client-{k}"));
    let capture = Capture::load(dir.join("captures").join(file), &Device::Cpu).unwrap();
    capture
        .update
        .iter()
        .map(|(n, t)| (n.clone(), values(t)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_placed_factors_scale_what_the_server_sees_and_the_server_steps_without() {
    let (dir, config) = one_round(FuzzyPlacement::Client).await;
    let spec = config.model_spec(InputShape::new(1, 28, 28), 10);
    let initial = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let lr = config.training.lr as f32;
    let mut expected_step: HashMap<String, Vec<f32>> = HashMap::new();
    for k in 0..CLIENTS {
        let plain = plain_gradient(&initial, dir.path(), k);
        let seed = client_seed(config.seed, &format!("client-{k}"));
        let factors: HashMap<String, Vec<f32>> = client_factors(initial.params(), seed)
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, values(&t)))
            .collect();
        assert!(!factors.is_empty());
        let seen = capture(dir.path(), k);
        for p in initial.params().trainable() {
            let g = &plain[&p.name];
            // the hook: g ⊙ η̂_client on synaptic weights, g itself elsewhere
            let sent: Vec<f32> = match factors.get(&p.name) {
                Some(f) => g.iter().zip(f).map(|(g, f)| g * f).collect(),
                None => g.clone(),
            };
            let scale = g.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
            assert!(
                max_abs(&seen[&p.name], &sent) <= 1e-5 * scale,
                "client-{k} {}: the capture is not g ⊙ η̂_client",
                p.name
            );
            if p.role == Role::SynapticWeight {
                assert!(
                    max_abs(&seen[&p.name], g) > 1e-3 * scale,
                    "client-{k} {}: the server saw the plain gradient",
                    p.name
                );
            }
            let sum = expected_step
                .entry(p.name.clone())
                .or_insert(vec![0.0; g.len()]);
            for (s, x) in sum.iter_mut().zip(&sent) {
                *s += x / CLIENTS as f32;
            }
        }
    }
    // the server's step: w − η · mean(g ⊙ η̂_client), no factors of its own (equal batches)
    let federated = checkpoint::load(
        &dir.path().join("checkpoint.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    .model;
    for p in initial.params().trainable() {
        let w0 = values(p.var.as_tensor());
        let w1 = values(federated.params().get(&p.name).unwrap().var.as_tensor());
        let want: Vec<f32> = w0
            .iter()
            .zip(&expected_step[&p.name])
            .map(|(w, d)| w - lr * d)
            .collect();
        assert!(max_abs(&w1, &want) < 1e-6, "{}", p.name);
        assert!(max_abs(&w1, &w0) > 1e-5, "{}: not moved", p.name);
    }
    // the server's copy of the factors: all ones
    for p in federated.params().iter().filter(|p| p.fuzzy.is_some()) {
        assert!(values(p.fuzzy.as_ref().unwrap()).iter().all(|&v| v == 1.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_placed_factors_leave_the_gradient_plain_and_scale_the_servers_step() {
    let (dir, config) = one_round(FuzzyPlacement::Server).await;
    let spec = config.model_spec(InputShape::new(1, 28, 28), 10);
    let initial = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let lr = config.training.lr as f32;
    let mut mean: HashMap<String, Vec<f32>> = HashMap::new();
    for k in 0..CLIENTS {
        let plain = plain_gradient(&initial, dir.path(), k);
        let seen = capture(dir.path(), k);
        for p in initial.params().trainable() {
            let g = &plain[&p.name];
            let scale = g.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
            assert!(max_abs(&seen[&p.name], g) <= 1e-5 * scale, "{}", p.name);
            let sum = mean.entry(p.name.clone()).or_insert(vec![0.0; g.len()]);
            for (s, x) in sum.iter_mut().zip(g) {
                *s += x / CLIENTS as f32;
            }
        }
    }
    let federated = checkpoint::load(
        &dir.path().join("checkpoint.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    .model;
    for p in initial.params().trainable() {
        let w0 = values(p.var.as_tensor());
        let eta: Vec<f32> = match &p.fuzzy {
            Some(f) => values(f),
            None => vec![1.0; w0.len()],
        };
        let want: Vec<f32> = w0
            .iter()
            .zip(&mean[&p.name])
            .zip(&eta)
            .map(|((w, g), e)| w - lr * g * e)
            .collect();
        let w1 = values(federated.params().get(&p.name).unwrap().var.as_tensor());
        assert!(max_abs(&w1, &want) < 1e-6, "{}", p.name);
    }
}
