//! `synfed serve`: the aggregation server of a federated run, for clients in other processes
//! or on other hosts (`synfed join`).
//!
//! The run is described by a TOML file (`synfed_server::RunConfig`; every field has a
//! default); a few flags override its fields. The server writes its run folder
//! (`config.toml`, `rounds.csv`, `checkpoint.safetensors`, `captures/`) and stops when the last
//! round is done or on Ctrl-C; `--resume` continues a stopped run from its checkpoint.

use anyhow::{Context, Result};
use std::path::PathBuf;
use synfed_server::{RunConfig, RunSummary};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run configuration (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Run folder, overriding the configuration's `out`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Address to listen on, overriding `listen` (e.g. 0.0.0.0:50051).
    #[arg(long)]
    pub listen: Option<String>,
    /// Number of rounds, overriding `rounds`.
    #[arg(long)]
    pub rounds: Option<u64>,
    /// Seed of the run, overriding `seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue from the run folder's checkpoint (the configuration must match it).
    #[arg(long)]
    pub resume: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut config = RunConfig::from_file(&args.config).context("reading the run configuration")?;
    if let Some(out) = args.out {
        config.out = out;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(rounds) = args.rounds {
        config.rounds = rounds;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    config
        .validate()
        .context("checking the run configuration")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // a GPU's context current on every thread that may use or drop its tensors
        .on_thread_start(synfed_synapse::cuda_context::bind_registered_or_warn)
        .build()
        .context("starting the async runtime")?;
    let out = config.out.clone();
    let summary = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener
            .local_addr()
            .map_or_else(|_| config.listen.clone(), |a| a.to_string());
        println!("serving on {addr}; run folder {}", out.display());
        synfed_server::run(config, listener, args.resume, async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
        .context("the server stopped")
    })?;
    println!("{}", summary_line(&summary));
    if !summary.complete {
        println!(
            "continue it with: synfed serve --config {} --out {} --resume",
            args.config.display(),
            summary.out.display()
        );
    }
    Ok(())
}

/// One line about a finished (or stopped) run: rounds done and the last test accuracy.
pub fn summary_line(summary: &RunSummary) -> String {
    let state = if summary.complete {
        "finished"
    } else {
        "stopped"
    };
    match summary.rounds.last() {
        Some(last) => format!(
            "run {} {state} after round {}: test accuracy {:.2} %, test loss {:.4}; results in {}",
            summary.run_id,
            last.round,
            100.0 * last.test_accuracy,
            last.test_loss,
            summary.out.display()
        ),
        None => format!(
            "run {} {state} with no round finished by this process; results in {}",
            summary.run_id,
            summary.out.display()
        ),
    }
}
