//! `synfed attack`: a gradient-inversion attack on one client update, scored against the truth —
//! Geiping et al.'s Inverting Gradients (`--attack ig`, the default), the closed form from a fully
//! connected first layer (`--attack analytic`) or Zhu et al.'s DLG (`--attack dlg`).
//!
//! Two forms:
//! - `--capture CAP --escrow TRUTH`: attack an update intercepted by a federation's tap;
//! - `--data D [--model M --methods … --width N] [--trained-epochs N]`: a self-contained experiment that
//!   builds (and optionally trains) the model, takes a batch, computes its gradient exactly as a
//!   FedSGD client does (BatchNorm on batch statistics, or running ones with `--bn-mode eval`),
//!   writes `capture.safetensors` and `escrow.safetensors`, then attacks it.
//!
//! The attack and its outputs are [`synfed_lab::attack_and_write`]'s (`metrics.json`,
//! `trace.csv`, `truth_XX.png`, `recon_XX.png`, `grid.png`).

use crate::device::DeviceChoice;
use crate::progress;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use rand::seq::index::sample;
use rand::SeedableRng;
use serde::Serialize;
use std::path::PathBuf;
use synfed_attack::AttackKind;
use synfed_data::{DatasetName, Splits};
use synfed_lab::{AttackOptions, AttackOutcome};
use synfed_models::{train_epoch, InputShape, Model, ModelConfig};
use synfed_synapse::{BnMode, SynapticSgd};
use synfed_wire::{Capture, Escrow};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// A capture file written by a federation's tap (or by an earlier self-contained run).
    #[arg(long, requires = "escrow", conflicts_with_all = ["data", "arch", "methods", "width"])]
    pub capture: Option<PathBuf>,
    /// The escrowed truth of the capture, read only to score.
    #[arg(long, requires = "capture")]
    pub escrow: Option<PathBuf>,
    /// Self-contained form: the model to attack (`--model`, `--methods`, `--width`, `--tau`,
    /// `--d-re`, `--gamma`).
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelConfig,
    /// Self-contained form: the data set the client's batch comes from.
    #[arg(long)]
    pub data: Option<DatasetName>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Self-contained form: number of images in the attacked batch.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Self-contained form: epochs of centralized training before the attack (0 = untrained).
    #[arg(long, default_value_t = 0)]
    pub trained_epochs: usize,
    /// Self-contained form: SGD learning rate of that training.
    #[arg(long, default_value_t = 0.01)]
    pub train_lr: f64,
    /// Self-contained form: first training example of the batch (default: a seeded random batch).
    #[arg(long)]
    pub index: Option<usize>,
    /// Self-contained form: store the labels in the capture (the attacker then uses them).
    #[arg(long)]
    pub expose_labels: bool,
    /// Self-contained form: BatchNorm statistics of the client's gradient (and of the
    /// attacker's replay): `train` (batch statistics, as federated clients compute) or `eval`
    /// (running statistics, the reference attack's protocol).
    #[arg(long, default_value = "train")]
    #[serde(serialize_with = "crate::serde_text::display")]
    pub bn_mode: BnMode,
    #[command(flatten)]
    #[serde(flatten)]
    pub options: AttackOptions,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    #[serde(serialize_with = "crate::serde_text::display")]
    pub device: DeviceChoice,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let device = args.device.open()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    match (&args.capture, &args.escrow) {
        (Some(cap), Some(esc)) => {
            let capture = Capture::load(cap, &device)?;
            let escrow = Escrow::load(esc, &device)?;
            attack(&args, &capture, &escrow, &device)?
        }
        _ => {
            let (capture, escrow) = self_contained(&args, &device)?;
            attack(&args, &capture, &escrow, &device)?
        }
    };
    Ok(())
}

/// Builds (and trains) the model, captures a client's FedSGD gradient on one batch and writes
/// the capture and its escrow to `--out`.
fn self_contained(args: &Args, device: &Device) -> Result<(Capture, Escrow)> {
    let Some(data) = args.data else {
        bail!("give either --capture and --escrow, or --data (and --model, mlp by default)");
    };
    args.model
        .validate()
        .context("checking the model settings")?;
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let splits: Splits = data
        .load(args.data_dir.as_deref())
        .with_context(|| format!("loading data set {}", data.as_str()))?;
    let shape = splits.train.shape();
    let spec = args.model.spec(
        InputShape::new(shape.channels, shape.height, shape.width),
        splits.train.num_classes(),
        args.options.seed,
    );
    let model = Model::build(&spec, DType::F32, device)?;
    if args.trained_epochs > 0 {
        let all: Vec<usize> = (0..splits.train.len()).collect();
        let mut opt = SynapticSgd::new(model.params(), args.train_lr, args.options.seed);
        let bar = progress::bar(args.trained_epochs as u64, "epochs");
        bar.set_message("training");
        for epoch in 1..=args.trained_epochs {
            let stats = train_epoch(
                &model,
                &mut opt,
                &splits.train,
                &all,
                &splits.normalization,
                100,
                args.options.seed,
                epoch,
                |_| {},
            )?;
            tracing::info!("training epoch {epoch}: loss {:.4}", stats.train_loss);
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    let n = splits.train.len();
    let indices: Vec<usize> = match args.index {
        Some(first) => (first..first + args.batch_size).collect(),
        None => {
            if args.batch_size > n {
                bail!(
                    "--batch-size {} exceeds the {n} training examples",
                    args.batch_size
                );
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.options.seed);
            sample(&mut rng, n, args.batch_size).into_vec()
        }
    };
    let (capture, escrow) = synfed_lab::capture_batch(
        &model,
        &splits.train,
        &splits.normalization,
        &indices,
        args.bn_mode.mode(),
        args.expose_labels,
        "client-0",
    )?;
    capture.save(args.out.join("capture.safetensors"))?;
    escrow.save(args.out.join("escrow.safetensors"))?;
    tracing::info!(
        "captured the gradient of training examples {indices:?} (labels {:?})",
        escrow.labels_vec()?
    );
    Ok((capture, escrow))
}

/// Attacks with a progress bar and writes the outputs to `--out`.
fn attack(
    args: &Args,
    capture: &Capture,
    escrow: &Escrow,
    device: &Device,
) -> Result<AttackOutcome> {
    let o = &args.options;
    let iterations = match o.attack {
        AttackKind::Analytic | AttackKind::Imprint => 0,
        AttackKind::Ig | AttackKind::Dlg | AttackKind::BnPrior => o.iterations * o.restarts.max(1),
    };
    let bar = progress::bar(iterations as u64, "iterations");
    let outcome = synfed_lab::attack_and_write(
        o,
        capture,
        escrow,
        &args.out,
        device,
        args,
        |trial, i, objective| {
            bar.set_message(format!("trial {} obj {objective:.4}", trial + 1));
            bar.inc(1);
            if (i + 1) % 500 == 0 {
                tracing::info!(
                    "trial {} iteration {}: objective {objective:.5}",
                    trial + 1,
                    i + 1
                );
            }
        },
    )?;
    bar.finish_and_clear();
    Ok(outcome)
}
