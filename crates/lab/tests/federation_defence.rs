//! Client defences end to end: the server forwards `training.defence` in every task, the
//! clients defend their updates before pushing them, and what the honest-but-curious server
//! captures (the tap) is the defended update. Server and clients over real gRPC on loopback.

#[allow(unused_imports)]
mod common;

use candle_core::{Device, Tensor};
use common::*;
use synfed_server::{Algorithm, RunConfig};
use synfed_wire::{capture_file_name, Capture};

/// Runs 2 clients for `rounds` rounds with `defence` and the tap on round 1; returns the run's
/// directory and the captures of round 1.
async fn defended_run(
    defence: &str,
    algorithm: Algorithm,
    rounds: u64,
) -> (tempfile::TempDir, Vec<Capture>) {
    let dir = tempfile::tempdir().unwrap();
    let mut config: RunConfig = small_config(dir.path(), rounds, 2);
    config.algorithm = algorithm;
    config.training.defence = defence.into();
    config.training.local_epochs = 0;
    config.training.local_steps = 2;
    config.tap.rounds = vec![1];
    let (summary, reports) =
        federation(config, |url| (0..2).map(|k| client(url, k, 2)).collect()).await;
    assert!(summary.complete, "{defence}: {summary:?}");
    for r in &summary.rounds {
        assert_eq!((r.updates, r.refused), (2, 0), "{defence}: {r:?}");
    }
    for report in &reports {
        assert!(report.refused.is_empty(), "{defence}: {:?}", report.refused);
    }
    let captures = (0..2)
        .map(|k| {
            let file = capture_file_name(1, &format!("client-{k}"));
            Capture::load(dir.path().join("captures").join(file), &Device::Cpu).unwrap()
        })
        .collect();
    (dir, captures)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn norm(update: &[(String, Tensor)]) -> f64 {
    update
        .iter()
        .flat_map(|(_, t)| values(t))
        .map(|x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pruned_updates_keep_a_tenth_of_each_tensor() {
    let (_dir, captures) = defended_run("prune:p=0.1", Algorithm::FedSgd, 1).await;
    for capture in &captures {
        assert!(!capture.update.is_empty());
        let mut total = 0;
        for (name, t) in &capture.update {
            let v = values(t);
            let nonzero = v.iter().filter(|&&x| x != 0.0).count();
            let allowed = (0.1 * v.len() as f64).ceil() as usize;
            assert!(
                nonzero <= allowed,
                "{name}: {nonzero} non-zeros of {}, at most {allowed}",
                v.len()
            );
            total += nonzero;
        }
        assert!(total > 0, "pruning left nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clipped_updates_have_at_most_norm_c() {
    // Per batch (FedSGD and FedAvg) and per example (FedSGD): the captured update's global
    // L2 norm is at most C (σ = 0: clipping only).
    for (defence, algorithm) in [
        ("dp:C=0.5,sigma=0", Algorithm::FedSgd),
        ("dp:C=0.5,sigma=0,per-example", Algorithm::FedSgd),
        ("dp:C=0.01,sigma=0", Algorithm::FedAvg),
    ] {
        let c: f64 = if algorithm == Algorithm::FedAvg {
            0.01
        } else {
            0.5
        };
        let (_dir, captures) = defended_run(defence, algorithm, 1).await;
        for capture in &captures {
            let n = norm(&capture.update);
            eprintln!("{defence}: captured norm {n}");
            assert!(n <= c + 1e-5, "{defence}: norm {n} > C = {c}");
            assert!(n > 0.0, "{defence}: an empty update");
            if !defence.contains("per-example") {
                // This run's updates are larger than C: clipped to norm C exactly.
                assert!(
                    n >= c * (1.0 - 1e-4),
                    "{defence}: norm {n}, expected C = {c}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_noised_run_is_deterministic() {
    let mut weights = Vec::new();
    let mut updates = Vec::new();
    for _ in 0..2 {
        let (dir, captures) =
            defended_run("dp:C=0.5,sigma=0.5+prune:p=0.5", Algorithm::FedSgd, 2).await;
        weights.push(std::fs::read(dir.path().join("checkpoint.safetensors")).unwrap());
        updates.push(values(&captures[0].update[0].1));
    }
    assert!(
        weights[0] == weights[1],
        "same seed, different final weights"
    );
    assert_eq!(updates[0], updates[1]);
    // The noise is there: a noised update is not the plain gradient, pruned or not.
    let (_dir, plain) = defended_run("prune:p=0.5", Algorithm::FedSgd, 1).await;
    assert_ne!(values(&plain[0].update[0].1), updates[0]);
}
