//! Federation benchmarks over real gRPC on loopback:
//! - `fedsgd_round/100_clients`: one FedSGD round with 100 clients of a tiny model (`mlp`
//!   width 16, demo-mnist): sampling, 100 downloads, 100 gradients, 100 uploads, validation,
//!   ordered aggregation, the step, evaluation and the checkpoint. Measured as the server's
//!   round time (client start-up excluded).
//! - `upload/mlp_cifar`: streaming one update of the full-size CIFAR `mlp` (3072-3000-3000-10,
//!   18.2 M parameters, 73 MB) to the server in 4 MiB chunks with checksums and validation;
//!   throughput in bytes per second of upload time.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use synfed_client::{ClientConfig, Share};
use synfed_data::Partition;
use synfed_server::RunConfig;

/// The binary's allocator and process settings (one copy, shared with `crates/cli/main.rs`).
#[path = "../crates/cli/process.rs"]
mod process;

fn config(
    out: &std::path::Path,
    rounds: u64,
    clients: usize,
    data: &str,
    width: Option<usize>,
) -> RunConfig {
    let mut c = RunConfig {
        out: out.to_path_buf(),
        rounds,
        ..RunConfig::default()
    };
    c.model.width = width;
    c.data.name = data.into();
    c.data.eval_limit = Some(50);
    c.sampling.min_clients = clients;
    c.timing.pull_timeout_s = 2.0;
    c.timing.linger_s = 1.0;
    c
}

struct Outcome {
    round_seconds: f64,
    upload_seconds: f64,
    bytes_sent: u64,
}

fn federation(config: RunConfig, clients: usize) -> Outcome {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let data = config.data.name.clone();
        let configs = |_: &RunConfig, url: &str| {
            Ok((0..clients)
                .map(|k| {
                    let share = Share {
                        index: k,
                        count: clients,
                        scheme: Partition::Iid,
                        seed: 1,
                    };
                    ClientConfig::new(url, format!("client-{k:03}"), &data, share)
                })
                .collect())
        };
        let simulated = synfed_lab::simulate(
            config,
            configs,
            &candle_core::Device::Cpu,
            std::future::pending(),
        )
        .await
        .unwrap();
        let upload_seconds = simulated.clients.iter().map(|r| r.upload_seconds).sum();
        let bytes_sent = simulated.clients.iter().map(|r| r.bytes_sent).sum();
        let summary = simulated.summary;
        Outcome {
            round_seconds: summary.rounds.iter().map(|r| r.seconds).sum(),
            upload_seconds,
            bytes_sent,
        }
    })
}

fn fedsgd_round(c: &mut Criterion) {
    process::setup();
    let mut group = c.benchmark_group("fedsgd_round");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    group.bench_function("100_clients", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let outcome = federation(config(dir.path(), iters, 100, "demo-mnist", Some(16)), 100);
            Duration::from_secs_f64(outcome.round_seconds)
        })
    });
    group.finish();
}

fn upload(c: &mut Criterion) {
    process::setup();
    let dir = tempfile::tempdir().unwrap();
    let probe = federation(config(dir.path(), 1, 1, "demo-cifar10", None), 1);
    let mut group = c.benchmark_group("upload");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Bytes(probe.bytes_sent));
    group.bench_function("mlp_cifar", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let outcome = federation(config(dir.path(), iters, 1, "demo-cifar10", None), 1);
            Duration::from_secs_f64(outcome.upload_seconds)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Without plots: criterion's plotting needs system fonts this project does not assume.
    config = Criterion::default().without_plots();
    targets = fedsgd_round, upload
}
criterion_main!(benches);
