//! `synfed`: a federated-learning privacy simulator for the synaptic-diversity mechanisms of
//! *Synaptic diversity in ANNs can facilitate faster learning*.
//!
//! One file per subcommand; each is thin and drives the library crates.

mod attack;
mod compare;
mod device;
mod join;
mod process;
mod progress;
mod serde_text;
mod serve;
mod simulate;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "synfed",
    version,
    about = "Federated-learning privacy simulator for synaptic-diversity mechanisms"
)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Centralized training with k-fold cross-validation: the paper's accuracy and
    /// learning-speed measurements (Tables 1–2).
    Train(train::Args),
    /// Gradient inversion (Geiping et al.'s Inverting Gradients) of a captured client update,
    /// or of a batch captured on the spot from a model and a data set.
    Attack(attack::Args),
    /// Compares method combinations (and defences): attacks on federations of every variant
    /// × model, or centralized learning with `--kind learning`; tables, grids and plots.
    Compare(compare::Args),
    /// The aggregation server of a federated run (clients join with `synfed join`).
    Serve(serve::Args),
    /// One federated client joining a run served by `synfed serve`.
    Join(join::Args),
    /// Server, clients and attacker in one process: a federated run over loopback gRPC, the
    /// tap's captures attacked, and a report.
    Simulate(simulate::Args),
}

fn main() -> ExitCode {
    // the allocator's policy, second-order gradients (the attack's) and candle's worker pool;
    // before any thread exists
    process::setup();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_target(false)
        .init();
    // the bytes of a run depend on the matrix-product path (see kernels::gemm_path)
    tracing::debug!(
        "matrix products on gemm's {} path",
        synfed_synapse::kernels::gemm_path()
    );
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Attack(args) => attack::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Join(args) => join::run(args),
        Command::Simulate(args) => simulate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
