//! `synfed simulate`: a whole federated run and the attack on it, in one process.
//!
//! The server and N clients talk real gRPC over 127.0.0.1 (a free port), exactly as
//! `synfed serve` and `synfed join` do across hosts. The tap captures chosen clients' updates,
//! the clients keep the truth of those rounds as escrow files beside the captures, and after the
//! run the gradient-inversion attacker (`synfed attack`) runs on every capture. `report.md`
//! sums it up: the configuration, the rounds, and per capture the attack's scores and picture.
//!
//! With no arguments: 4 clients, the run configuration's defaults (the `mlp` of width 128 on
//! the embedded MNIST subset, FedSGD, 20 rounds, lr 0.1, batch 8) and the tap on `client-0` in
//! the first and the last round.

use crate::device::DeviceChoice;
use crate::progress;
use crate::serve::summary_line;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use synfed_data::Partition;
use synfed_lab::{attack_captures, AttackOptions, Fleet, SimulationReport};
use synfed_server::{read_rounds, RunConfig, RunSummary, Tokens};

/// Where the run goes when neither `--out` nor the configuration says.
const DEFAULT_OUT: &str = "runs/simulate";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run configuration (TOML, as for `synfed serve`) instead of the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run folder (default: the configuration's `out` if it names one, else runs/simulate).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Number of clients, named client-0 … client-{N-1}.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// How the training split is cut among the clients: iid, dirichlet:α or shards:S.
    #[arg(long, default_value = "iid")]
    pub split: Partition,
    /// Number of rounds, overriding the configuration's.
    #[arg(long)]
    pub rounds: Option<u64>,
    /// Seed of the run (and of the clients' split), overriding the configuration's.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Iterations of each attack.
    #[arg(long, default_value_t = 1000)]
    pub attack_iterations: usize,
    /// Only the federated run: no default tap, no attacks.
    #[arg(long)]
    pub no_attack: bool,
    /// auto, cpu, cuda or cuda:N: where the clients and the attacker compute.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

pub fn run(args: Args) -> Result<()> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let config = configuration(&args)?;
    let fleet = Fleet {
        tokens: client_tokens(&config)?,
        ..Fleet::new(args.clients, args.split)
    };
    let device = args.device.open()?;
    let out = config.out.clone();
    println!(
        "simulating {} rounds with {} clients; run folder {}",
        config.rounds,
        args.clients,
        out.display()
    );

    let started = Instant::now();
    let summary = federate(config.clone(), &fleet, &device)?;
    let federation_s = started.elapsed().as_secs_f64();
    tracing::info!("federation done in {federation_s:.1} s");
    if !summary.complete {
        bail!(
            "the run stopped after {} of {} rounds; partial results in {}",
            summary.rounds.len(),
            config.rounds,
            out.display()
        );
    }

    let attack_started = Instant::now();
    let attacks = if args.no_attack {
        Vec::new()
    } else {
        let options = AttackOptions {
            iterations: args.attack_iterations,
            seed: config.seed,
            ..AttackOptions::default()
        };
        attack_captures(&summary, &options, &device)
    };
    let attack_s = attack_started.elapsed().as_secs_f64();

    let report = SimulationReport {
        config: &config,
        clients: args.clients,
        split: args.split,
        attack_iterations: args.attack_iterations,
        summary: &summary,
        attacks: &attacks,
        federation_seconds: federation_s,
        attack_seconds: attack_s,
    }
    .write()
    .context("writing the report")?;

    println!("{}", summary_line(&summary));
    for row in &attacks {
        match &row.result {
            Ok(o) => println!(
                "attack on {}: PSNR {:.2} dB, SSIM {:.3}, label accuracy {:.0} % ({:.1} s)",
                row.name,
                o.scores.psnr,
                o.scores.ssim,
                100.0 * o.scores.label_accuracy,
                o.seconds
            ),
            Err(why) => println!("attack on {}: not done: {why}", row.name),
        }
    }
    println!(
        "federation {federation_s:.1} s, attacks {attack_s:.1} s, total {:.1} s; report in {}",
        started.elapsed().as_secs_f64(),
        report.display()
    );
    Ok(())
}

/// The run configuration: the file's (or the defaults), the flags, and what a simulation
/// needs: every client registered before round 1, and a tap unless the file sets one.
fn configuration(args: &Args) -> Result<RunConfig> {
    let (mut config, table) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the run configuration {}", path.display()))?;
            let config = RunConfig::from_toml(&text)
                .with_context(|| format!("in the run configuration {}", path.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("in the run configuration {}", path.display()))?;
            (config, table)
        }
        None => (RunConfig::default(), toml::Table::new()),
    };
    let sets = |section: &str, key: &str| {
        table
            .get(section)
            .and_then(|s| s.as_table())
            .is_some_and(|s| s.contains_key(key))
    };
    config.out = match &args.out {
        Some(out) => out.clone(),
        None if table.contains_key("out") => config.out,
        None => PathBuf::from(DEFAULT_OUT),
    };
    if let Some(rounds) = args.rounds {
        config.rounds = rounds;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if sets("sampling", "min_clients") {
        if config.sampling.min_clients > args.clients {
            bail!(
                "sampling.min_clients is {} but only {} clients are simulated (--clients): the run would never start",
                config.sampling.min_clients,
                args.clients
            );
        }
    } else {
        // the tapped client must not miss round 1 for registering late
        config.sampling.min_clients = args.clients;
        config.sampling.min_updates = config.sampling.min_updates.min(args.clients);
    }
    if !args.no_attack && config.tap.rounds.is_empty() {
        config.tap.rounds = vec![1, config.rounds];
        config.tap.rounds.dedup();
        config.tap.clients = vec!["client-0".into()];
    }
    if config.security.tls_cert.is_some() || config.security.tls_key.is_some() {
        bail!("security.tls_cert/tls_key: `synfed simulate` runs on loopback without TLS; use `synfed serve` and `synfed join` for TLS");
    }
    config
        .validate()
        .context("checking the run configuration")?;
    Ok(config)
}

/// The clients' tokens when the configuration names a tokens file.
fn client_tokens(config: &RunConfig) -> Result<Option<Tokens>> {
    config
        .security
        .tokens
        .as_deref()
        .map(Tokens::from_file)
        .transpose()
        .context("reading the clients' tokens")
}

/// Runs the server and the clients of `fleet` in this process to the end of the run
/// ([`synfed_lab::simulation::federate`]), with a progress bar over rounds; Ctrl-C stops both.
fn federate(config: RunConfig, fleet: &Fleet, device: &Device) -> Result<RunSummary> {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("Ctrl-C: stopping the run");
        } else {
            std::future::pending::<()>().await;
        }
    };
    let (rounds_csv, rounds) = (config.out.join("rounds.csv"), config.rounds);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| watch_rounds(&rounds_csv, rounds, &done));
        let summary = synfed_lab::simulation::federate(config, fleet, device, ctrl_c);
        done.store(true, Ordering::Relaxed);
        Ok(summary?)
    })
}

/// A progress bar over rounds, fed by the server's `rounds.csv`, until `done`.
fn watch_rounds(path: &Path, rounds: u64, done: &AtomicBool) {
    let bar = progress::bar(rounds, "rounds");
    bar.set_message("federating");
    let mut shown = 0;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        // a line being appended reads as malformed: skip this poll
        let Ok(records) = read_rounds(path) else {
            continue;
        };
        if records.len() != shown {
            shown = records.len();
            bar.set_position(shown as u64);
            if let Some(last) = records.last() {
                bar.set_message(format!("acc {:.1} %", 100.0 * last.test_accuracy));
            }
            if shown as u64 >= rounds {
                bar.finish_and_clear();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: Args,
    }

    fn args(flags: &[&str]) -> Args {
        Wrap::parse_from(std::iter::once("simulate").chain(flags.iter().copied())).args
    }

    #[test]
    fn defaults_tap_client_0_in_the_first_and_last_round() {
        let config = configuration(&args(&["--rounds", "5"])).unwrap();
        assert_eq!(config.out, Path::new(DEFAULT_OUT));
        assert_eq!(config.tap.rounds, vec![1, 5]);
        assert_eq!(config.tap.clients, vec!["client-0".to_string()]);
        assert_eq!(config.sampling.min_clients, 4);
        let one = configuration(&args(&["--rounds", "1", "--clients", "2"])).unwrap();
        assert_eq!(one.tap.rounds, vec![1]);
        let none = configuration(&args(&["--no-attack"])).unwrap();
        assert!(none.tap.rounds.is_empty());
    }

    #[test]
    fn escrows_go_beside_the_captures_for_tapped_clients_only() {
        let a = args(&["--out", "x", "--rounds", "3"]);
        let config = configuration(&a).unwrap();
        let fleet = Fleet::new(a.clients, a.split);
        let clients = fleet.client_configs(&config, "http://127.0.0.1:1").unwrap();
        let escrow = clients[0].escrow.clone().unwrap();
        assert_eq!(escrow.dir, Path::new("x/captures"));
        assert_eq!(escrow.rounds, vec![1, 3]);
        let c1 = &clients[1];
        assert!(c1.escrow.is_none());
        assert_eq!((c1.share.index, c1.share.count, c1.share.seed), (1, 4, 1));
    }
}
