//! `synfed join`: one federated client in its own process, joining a run served by
//! `synfed serve` (possibly on another host).
//!
//! The client holds share `k/N` of a data set's training split (every client of a run must use
//! the same N, split scheme and partition seed, so that shares are disjoint), computes what the
//! server asks each round and leaves when the run is over or on Ctrl-C. The token is read from
//! the command line or, better (it then stays out of `ps` and shell history), from a file; it is
//! never printed.

use crate::device::DeviceChoice;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use synfed_client::{ClientConfig, ClientTls, EscrowConfig, Share};
use synfed_data::Partition;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server: http://HOST:PORT, or https://HOST:PORT with TLS.
    #[arg(long)]
    pub server: String,
    /// This client's name (the server's tokens file must list it when tokens are required).
    #[arg(long)]
    pub name: String,
    /// Bearer token (prefer --token-file).
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// A file holding the bearer token (surrounding whitespace is ignored).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The run's data set: demo-mnist, demo-cifar10, mnist, cifar10 or cifar100.
    #[arg(long)]
    pub data: String,
    /// Directory of the full data sets.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// This client's share: k/N, part k (from 0) of N.
    #[arg(long)]
    pub partition: String,
    /// How the training split is cut into N shares: iid, dirichlet:α or shards:S.
    #[arg(long, default_value = "iid")]
    pub split: Partition,
    /// Seed of the split (the same for every client of the run).
    #[arg(long, default_value_t = 1)]
    pub partition_seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// PEM certificate of the CA that signed the server's certificate (TLS).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the server's certificate against (default: the host of --server).
    #[arg(long)]
    pub tls_domain: Option<String>,
    /// Keep the truth of every update (the batch computed on) here, as escrow files for
    /// scoring attacks. Only for experiments: it is exactly what the client must keep private.
    #[arg(long)]
    pub escrow_dir: Option<PathBuf>,
    /// Stop after K accepted updates without telling the server, as a host that crashed or
    /// lost its network would: the server drops this client from later rounds when it falls
    /// silent. For fault-injection tests (a reference run for a cut link).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub stop_after_updates: Option<u64>,
    /// File holding the seed (a decimal u64) of this client's private fuzzy factors, used when
    /// the run places fuzzy learning rates at the clients (`training.fuzzy_at = "client"`):
    /// keep it secret from the server. Without it the seed is derived from the run's seed and
    /// the client's name: reproducible, but anyone who knows both can compute it.
    #[arg(long, value_name = "FILE")]
    pub fuzzy_seed_file: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let share = Share::parse(&args.partition, args.split, args.partition_seed)
        .context("reading --partition")?;
    let mut config = ClientConfig::new(&args.server, &args.name, &args.data, share);
    config.token = token(&args)?;
    config.data_dir = args.data_dir.clone();
    config.tls = tls(&args)?;
    config.escrow = args.escrow_dir.clone().map(|dir| EscrowConfig {
        dir,
        rounds: Vec::new(),
    });
    config.stop_after_updates = args
        .stop_after_updates
        .map(|k| usize::try_from(k).unwrap_or(usize::MAX));
    if let Some(path) = &args.fuzzy_seed_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --fuzzy-seed-file {}", path.display()))?;
        let seed = text.trim().parse::<u64>().with_context(|| {
            format!(
                "--fuzzy-seed-file {}: expected one decimal number from 0 to {}",
                path.display(),
                u64::MAX
            )
        })?;
        config.fuzzy_seed = Some(seed);
    }
    let device = args.device.open()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // a GPU's context current on every thread that may use or drop its tensors
        .on_thread_start(synfed_synapse::cuda_context::bind_registered_or_warn)
        .build()
        .context("starting the async runtime")?;
    tracing::info!(
        "joining {} as {} with share {} of {}",
        args.server,
        args.name,
        args.partition,
        args.data
    );
    let report = runtime
        .block_on(synfed_client::run(config, device, async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }))
        .with_context(|| format!("client {} stopped", args.name))?;
    let state = if report.finished {
        "the run is over"
    } else if args
        .stop_after_updates
        .is_some_and(|k| report.accepted.len() as u64 >= k)
    {
        "stopped without leaving"
    } else {
        "left the run"
    };
    println!(
        "{}: {state}; {} updates accepted, {} refused, {:.1} MB sent, {:.1} MB received{}",
        args.name,
        report.accepted.len(),
        report.refused.len(),
        report.bytes_sent as f64 / 1e6,
        report.bytes_received as f64 / 1e6,
        match &args.escrow_dir {
            Some(dir) => format!(
                "; {} escrow files in {}",
                report.escrows.len(),
                dir.display()
            ),
            None => String::new(),
        }
    );
    for (round, why) in &report.refused {
        println!("  round {round} refused: {why}");
    }
    Ok(())
}

/// The token from --token or --token-file.
fn token(args: &Args) -> Result<Option<String>> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?
            .trim()
            .to_string(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        bail!("the token is empty");
    }
    Ok(Some(token))
}

/// TLS settings: on for https:// servers, which need the CA of the server's certificate.
fn tls(args: &Args) -> Result<Option<ClientTls>> {
    let https = args.server.to_ascii_lowercase().starts_with("https://");
    let any_flag = args.tls_ca.is_some() || args.tls_cert.is_some() || args.tls_domain.is_some();
    if !https {
        if any_flag {
            bail!(
                "the --tls-* flags need an https:// server URL, got {}",
                args.server
            );
        }
        return Ok(None);
    }
    if args.tls_ca.is_none() {
        bail!("an https:// server needs --tls-ca, the PEM certificate of the CA that signed the server's certificate");
    }
    Ok(Some(ClientTls {
        ca: args.tls_ca.clone(),
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
        domain: args.tls_domain.clone(),
    }))
}
