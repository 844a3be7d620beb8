//! Scale (issue 17, item 5): round time and the server's peak memory against the number of
//! clients, over real sockets.
//!
//! For each client count N (default 10, 100 and 1,000) the built `synfed serve` runs as its own
//! process on 127.0.0.1 and this process joins N clients to it (`synfed_client::run`, each with
//! its own connection, share k/N of demo-mnist). The run is the `mlp` of width 16, FedSGD, 2
//! rounds with every client in every round, so what grows with N is the federation, not the
//! model. The server's memory is read from `/proc/PID/status` while it runs: its resident size
//! once it listens (before any client) and its peak (`VmHWM`). Any client error, refused or
//! dropped update, or a round with fewer than N updates fails the run.
//!
//! ```sh
//! cargo bench --bench scale                 # 10, 100, 1000 clients (release build)
//! cargo bench --bench scale -- 1000 3000    # other counts
//! cargo bench --bench scale -- --width 64   # a wider mlp (4× the update)
//! cargo test --bench scale -- 1000          # the same in the test build (what CI runs)
//! ```

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synfed_client::{ClientConfig, Share};
use synfed_data::Partition;

/// Rounds per run.
const ROUNDS: u64 = 2;

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`), if the process is alive.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn run_config(clients: usize, width: usize) -> String {
    format!(
        r#"seed = 1
rounds = {ROUNDS}

[model]
arch = "mlp"
width = {width}

[data]
name = "demo-mnist"
eval_limit = 100

[training]
batch_size = 8

[sampling]
min_clients = {clients}

[timing]
pull_timeout_s = 5.0
wait_for_clients_s = 300.0
linger_s = 5.0
"#
    )
}

/// One measured run.
struct Measured {
    clients: usize,
    /// Mean of the rounds' times, as the server logged them.
    round_s: f64,
    /// Resident memory of the server once it listened, before any client.
    idle_kib: u64,
    /// The server's peak resident memory.
    peak_kib: u64,
    /// Every client from start to the end of the run.
    wall_s: f64,
    /// This process's peak resident memory so far: the clients' (counts run in rising order,
    /// so it is this count's).
    clients_peak_kib: u64,
}

fn measure(clients: usize, width: usize, dir: &Path) -> Result<Measured, String> {
    let config = dir.join("run.toml");
    std::fs::write(&config, run_config(clients, width)).map_err(|e| e.to_string())?;
    let out = dir.join("run");
    let mut server = Command::new(env!("CARGO_BIN_EXE_synfed"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting synfed serve: {e}"))?;
    let pid = server.id();
    let mut lines = BufReader::new(server.stdout.take().ok_or("no stdout")?).lines();
    let first = lines
        .next()
        .ok_or("synfed serve ended before listening")?
        .map_err(|e| e.to_string())?;
    let addr = first
        .strip_prefix("serving on ")
        .and_then(|rest| rest.split(';').next())
        .ok_or_else(|| format!("unexpected first line of synfed serve: {first}"))?
        .to_string();
    // the rest of its output, so that it never blocks on a full pipe
    let output = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(300));
    let idle_kib = status_kib(pid, "VmRSS").ok_or("the server exited early")?;

    // the server's peak, read until it exits
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                match status_kib(pid, "VmHWM") {
                    Some(hwm) => peak = peak.max(hwm),
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };

    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{addr}");
    let reports = runtime.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|k| {
                let share = Share {
                    index: k,
                    count: clients,
                    scheme: Partition::Iid,
                    seed: 1,
                };
                let config = ClientConfig::new(&url, format!("client-{k}"), "demo-mnist", share);
                tokio::spawn(synfed_client::run(
                    config,
                    candle_core::Device::Cpu,
                    std::future::pending(),
                ))
            })
            .collect();
        let mut reports = Vec::with_capacity(clients);
        for task in tasks {
            reports.push(task.await);
        }
        reports
    });
    let wall_s = started.elapsed().as_secs_f64();
    // the server's peak is read up to its exit (it lingers until every client has left)
    let status = server.wait().map_err(|e| e.to_string())?;
    done.store(true, Ordering::Relaxed);
    let peak_kib = sampler.join().map_err(|_| "the sampler failed")?;
    let output = output.join().map_err(|_| "the reader failed")?;
    if !status.success() {
        return Err(format!("synfed serve failed: {}", output.join("\n")));
    }

    let mut errors = Vec::new();
    for (k, report) in reports.into_iter().enumerate() {
        match report {
            Ok(Ok(report)) if report.refused.is_empty() && report.finished => {}
            Ok(Ok(report)) => errors.push(format!(
                "client-{k}: refused {:?}, finished {}",
                report.refused, report.finished
            )),
            Ok(Err(e)) => errors.push(format!("client-{k}: {e}")),
            Err(e) => errors.push(format!("client-{k}: {e}")),
        }
    }
    let rounds = synfed_server::read_rounds(&out.join("rounds.csv")).map_err(|e| e.to_string())?;
    for r in &rounds {
        if r.updates != clients || r.refused != 0 || r.dropped != 0 {
            errors.push(format!(
                "round {}: {} updates, {} refused, {} dropped",
                r.round, r.updates, r.refused, r.dropped
            ));
        }
    }
    if rounds.len() as u64 != ROUNDS {
        errors.push(format!("{} of {ROUNDS} rounds", rounds.len()));
    }
    if !errors.is_empty() {
        let shown = errors.len().min(10);
        return Err(format!(
            "{clients} clients: {} errors, the first {shown}:\n{}",
            errors.len(),
            errors[..shown].join("\n")
        ));
    }
    Ok(Measured {
        clients,
        round_s: rounds.iter().map(|r| r.seconds).sum::<f64>() / rounds.len() as f64,
        idle_kib,
        peak_kib,
        wall_s,
        clients_peak_kib: status_kib(std::process::id(), "VmHWM").unwrap_or(0),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --width W: the mlp's width (default 16)
    let width = args
        .iter()
        .position(|a| a == "--width")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(16);
    let counts: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with('-') && (*i == 0 || args[i - 1] != "--width"))
        .filter_map(|(_, a)| a.parse().ok())
        .collect();
    let mut counts = if counts.is_empty() {
        vec![10, 100, 1000]
    } else {
        counts
    };
    counts.sort_unstable();
    println!("mlp width {width}, demo-mnist, FedSGD, {ROUNDS} rounds, every client every round");
    println!(
        "| clients | round time | server RSS listening | server peak RSS | (peak − listening) / clients | clients' process peak RSS | run |"
    );
    println!("|---|---|---|---|---|---|---|");
    for clients in counts {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let m = match measure(clients, width, dir.path()) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        };
        println!(
            "| {} | {:.3} s | {:.1} MB | {:.1} MB | {:.1} KB | {:.0} MB | {:.1} s |",
            m.clients,
            m.round_s,
            m.idle_kib as f64 * 1.024e-3,
            m.peak_kib as f64 * 1.024e-3,
            (m.peak_kib.saturating_sub(m.idle_kib)) as f64 * 1.024 / m.clients as f64,
            m.clients_peak_kib as f64 * 1.024e-3,
            m.wall_s
        );
    }
}
