//! Shared helpers of the end-to-end federation tests: a server on 127.0.0.1:0 and clients in
//! the same process, talking real gRPC.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;
use synfed_client::{ClientConfig, ClientReport, Retry, Share};
use synfed_data::Partition;
use synfed_server::{RunConfig, RunSummary};

/// A small, fast run: `mlp` of width 16 on the embedded MNIST subset.
pub fn small_config(out: &Path, rounds: u64, min_clients: usize) -> RunConfig {
    let mut c = RunConfig::default();
    c.out = out.to_path_buf();
    c.rounds = rounds;
    c.model.width = Some(16);
    c.data.eval_limit = Some(100);
    c.sampling.min_clients = min_clients;
    c.timing.round_timeout_s = 60.0;
    c.timing.pull_timeout_s = 1.0;
    c.timing.heartbeat_interval_s = 0.2;
    c.timing.linger_s = 2.0;
    c.timing.wait_for_clients_s = 60.0;
    c
}

/// Client `k` of `n` of the run, on `url`.
pub fn client(url: &str, k: usize, n: usize) -> ClientConfig {
    let mut c = ClientConfig::new(url, format!("client-{k}"), "demo-mnist", Share {
        index: k,
        count: n,
        scheme: Partition::Iid,
        seed: 7,
    });
    c.retry = Retry {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        give_up_after: Duration::from_secs(30),
    };
    c
}

pub async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// Runs the server of `config` with `clients` (built from the server's URL) to the end.
pub async fn federation(
    config: RunConfig,
    clients: impl FnOnce(&str) -> Vec<ClientConfig>,
) -> (RunSummary, Vec<ClientReport>) {
    let (listener, url) = bind().await;
    let server = tokio::spawn(synfed_server::run(config, listener, false, std::future::pending()));
    let handles: Vec<_> = clients(&url)
        .into_iter()
        .map(|c| tokio::spawn(synfed_client::run(c, candle_core::Device::Cpu, std::future::pending())))
        .collect();
    let mut reports = Vec::new();
    for h in handles {
        reports.push(h.await.unwrap().unwrap());
    }
    (server.await.unwrap().unwrap(), reports)
}
