//! `synfed attack`: Geiping et al.'s gradient inversion of one client update, scored against the
//! truth.
//!
//! Two forms:
//! - `--capture CAP --escrow TRUTH`: attack an update intercepted by a federation's tap;
//! - `--model M --data D [--methods …] [--trained-epochs N]`: a self-contained experiment that
//!   builds (and optionally trains) the model, takes a batch, computes its gradient exactly as a
//!   FedSGD client does, writes `capture.safetensors` and `escrow.safetensors`, then attacks it.
//!
//! Outputs in `--out`: `metrics.json`, `trace.csv` (trial, iteration, objective, distance, tv,
//! lr), `truth_XX.png`, `recon_XX.png` and `grid.png` (truth row above the reconstruction row,
//! upscaled with nearest neighbours).

use crate::device::{describe, DeviceChoice};
use crate::progress;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rand::seq::index::sample;
use rand::SeedableRng;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use synfed_attack::inversion::InversionConfig;
use synfed_attack::objective::{Distance, LayerWeighting};
use synfed_attack::pipeline::{attack_capture, AttackConfig};
use synfed_attack::scoring::{score, Scores};
use synfed_attack::{save_grid, save_image, Image};
use synfed_data::{DatasetName, Splits};
use synfed_models::{train_epoch, Arch, InputShape, Model, ModelSpec};
use synfed_synapse::{MethodSet, Mode, SynapticSgd};
use synfed_wire::{Capture, CaptureMeta, Escrow, EscrowMeta};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// A capture file written by a federation's tap (or by an earlier self-contained run).
    #[arg(long, requires = "escrow", conflicts_with_all = ["model", "data"])]
    pub capture: Option<PathBuf>,
    /// The escrowed truth of the capture, read only to score.
    #[arg(long, requires = "capture")]
    pub escrow: Option<PathBuf>,
    /// Self-contained form: the architecture to attack.
    #[arg(long)]
    #[serde(serialize_with = "crate::serde_text::display_opt")]
    pub model: Option<Arch>,
    /// Self-contained form: the data set the client's batch comes from.
    #[arg(long)]
    pub data: Option<DatasetName>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Self-contained form: the model's method set.
    #[arg(long, default_value = "none")]
    pub methods: MethodSet,
    /// Self-contained form: base width instead of the architecture's published one.
    #[arg(long)]
    pub width: Option<usize>,
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
    #[arg(long, default_value_t = 4800)]
    pub iterations: usize,
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// Weight of total variation.
    #[arg(long, default_value_t = 1e-4)]
    pub tv: f64,
    /// Adam learning rate on the images.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// cosine (Geiping et al.) or l2 (DLG).
    #[arg(long, default_value = "cosine")]
    #[serde(serialize_with = "crate::serde_text::display")]
    pub distance: Distance,
    /// equal, linear or exp weighting of the layers in the objective.
    #[arg(long, default_value = "equal")]
    #[serde(serialize_with = "crate::serde_text::display")]
    pub weighting: LayerWeighting,
    /// Seed of the model, the batch choice and the attack's initial noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    #[serde(serialize_with = "crate::serde_text::display")]
    pub device: DeviceChoice,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Serialize)]
struct Report<'a> {
    command: String,
    args: &'a Args,
    #[serde(flatten)]
    scores: &'a Scores,
    labels: Vec<u32>,
    true_labels: Vec<u32>,
    labels_recovered: bool,
    /// Per true image, the index of the reconstruction matched to it.
    assignment: Vec<usize>,
    iterations: usize,
    restarts: usize,
    /// Final gradient distance of each trial; the best is the lowest.
    trials: Vec<f64>,
    best_trial: usize,
    seconds: f64,
    device: String,
}

/// What an attack achieved, for callers that summarise several attacks (`synfed simulate`).
pub struct Outcome {
    pub scores: Scores,
    pub seconds: f64,
}

impl Args {
    /// The capture form's arguments with every attack option at its command-line default:
    /// the defaults stay in one place, the `#[arg]` attributes above.
    pub fn for_capture(capture: &Path, escrow: &Path, out: &Path) -> Result<Self> {
        use clap::{Args as _, FromArgMatches as _};
        let matches = Self::augment_args(clap::Command::new("attack"))
            .no_binary_name(true)
            .try_get_matches_from([
                "--capture".as_ref(),
                capture.as_os_str(),
                "--escrow".as_ref(),
                escrow.as_os_str(),
                "--out".as_ref(),
                out.as_os_str(),
            ])
            .context("building the attack options")?;
        Self::from_arg_matches(&matches).context("building the attack options")
    }
}

pub fn run(args: Args) -> Result<()> {
    let device = args.device.open()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    match (&args.capture, &args.escrow) {
        (Some(cap), Some(esc)) => attack_files(cap, esc, &args, &device)?,
        _ => {
            let (capture, escrow) = self_contained(&args, &device)?;
            attack_and_report(&args, &capture, &escrow, &device)?
        }
    };
    Ok(())
}

/// Attacks the capture file `capture`, scores it against the escrow file `escrow` and writes
/// the results to `args.out` (the attack options come from `args`; its `capture`/`escrow`
/// fields are only recorded in `metrics.json`).
pub fn attack_files(
    capture: &Path,
    escrow: &Path,
    args: &Args,
    device: &Device,
) -> Result<Outcome> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let capture = Capture::load(capture, device)?;
    let escrow = Escrow::load(escrow, device)?;
    escrow.check_matches(&capture.meta)?;
    attack_and_report(args, &capture, &escrow, device)
}

/// Builds (and trains) the model, captures a client's FedSGD gradient on one batch and writes
/// the capture and its escrow to `--out`.
fn self_contained(args: &Args, device: &Device) -> Result<(Capture, Escrow)> {
    let (Some(arch), Some(data)) = (args.model, args.data) else {
        bail!("give either --capture and --escrow, or --model and --data");
    };
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let splits: Splits = data
        .load(args.data_dir.as_deref())
        .with_context(|| format!("loading data set {}", data.as_str()))?;
    let shape = splits.train.shape();
    let mut spec = ModelSpec::new(
        arch,
        InputShape::new(shape.channels, shape.height, shape.width),
        splits.train.num_classes(),
        args.methods,
        args.seed,
    );
    spec.width = args.width;
    let model = Model::build(&spec, DType::F32, device)?;
    if args.trained_epochs > 0 {
        let all: Vec<usize> = (0..splits.train.len()).collect();
        let mut opt = SynapticSgd::new(model.params(), args.train_lr, args.seed);
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
                args.seed,
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
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
            sample(&mut rng, n, args.batch_size).into_vec()
        }
    };
    let (x, y) = splits
        .train
        .batch(&indices, &splits.normalization, device, DType::F32)?;
    // a FedSGD client: the gradient of one batch at the global weights, BatchNorm on batch
    // statistics (without drifting the running statistics the capture records)
    let update = model.gradients(&x, &y, Mode::TrainFrozenStats)?;
    let labels = y.to_vec1::<u32>()?;
    let meta = CaptureMeta::fedsgd(
        spec,
        0,
        "client-0",
        indices.len(),
        splits.normalization.clone(),
        args.expose_labels.then(|| labels.clone()),
    );
    let capture = Capture::new(meta, &model, update)?;
    let escrow = Escrow::new(
        EscrowMeta {
            round: 0,
            client: "client-0".into(),
        },
        &x,
        &y,
    )?;
    capture.save(args.out.join("capture.safetensors"))?;
    escrow.save(args.out.join("escrow.safetensors"))?;
    tracing::info!("captured the gradient of training examples {indices:?} (labels {labels:?})");
    Ok((capture, escrow))
}

fn attack_and_report(
    args: &Args,
    capture: &Capture,
    escrow: &Escrow,
    device: &Device,
) -> Result<Outcome> {
    let config = AttackConfig {
        inversion: InversionConfig {
            iterations: args.iterations,
            restarts: args.restarts,
            lr: args.lr,
            tv: args.tv,
            distance: args.distance,
            weighting: args.weighting,
            seed: args.seed,
            ..InversionConfig::default()
        },
        use_exposed_labels: true,
    };
    let bar = progress::bar(
        (args.iterations * args.restarts.max(1)) as u64,
        "iterations",
    );
    let started = Instant::now();
    let attack = attack_capture(capture, &config, device, |trial, i, objective| {
        bar.set_message(format!("trial {} obj {objective:.4}", trial + 1));
        bar.inc(1);
        if (i + 1) % 500 == 0 {
            tracing::info!(
                "trial {} iteration {}: objective {objective:.5}",
                trial + 1,
                i + 1
            );
        }
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let meta = &capture.meta;
    let true_labels = escrow.labels_vec()?;
    let best = attack.reconstruction.best();
    let scores = score(
        &attack.model,
        meta.mode,
        &best.images,
        &escrow.images,
        &meta.normalization,
        &attack.labels,
        &true_labels,
    )?;
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        args,
        scores: &scores,
        labels: attack.labels.clone(),
        true_labels,
        labels_recovered: attack.labels_recovered,
        assignment: scores.images.iter().map(|i| i.reconstruction).collect(),
        iterations: args.iterations,
        restarts: args.restarts.max(1),
        trials: attack
            .reconstruction
            .trials
            .iter()
            .map(|t| t.distance)
            .collect(),
        best_trial: attack.reconstruction.best,
        seconds,
        device: describe(device),
    };
    let path = args.out.join("metrics.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    write_trace(&args.out.join("trace.csv"), &attack.reconstruction.trace)?;
    write_pictures(&args.out, &scores, &best.images, &escrow.images, meta)?;
    tracing::info!(
        "PSNR {:.2} dB, SSIM {:.3}, MSE {:.5}, normalised MSE {:.4}, label accuracy {:.0}% in {seconds:.1} s; results in {}",
        scores.psnr,
        scores.ssim,
        scores.mse,
        scores.mse_normalized,
        100.0 * scores.label_accuracy,
        args.out.display()
    );
    Ok(Outcome { scores, seconds })
}

fn write_trace(path: &Path, trace: &[synfed_attack::inversion::TraceRow]) -> Result<()> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(file, "trial,iteration,objective,distance,tv,lr")?;
    for r in trace {
        writeln!(
            file,
            "{},{},{:.8},{:.8},{:.8},{:e}",
            r.trial, r.iteration, r.objective, r.distance, r.tv, r.lr
        )?;
    }
    file.flush()?;
    Ok(())
}

/// Truth and matched reconstructions as PNGs: one file per image and a two-row grid.
fn write_pictures(
    out: &Path,
    scores: &Scores,
    recon: &Tensor,
    truth: &Tensor,
    meta: &CaptureMeta,
) -> Result<()> {
    let shown = |x: &Tensor| -> Result<Vec<Image>> {
        let x = meta
            .normalization
            .denormalize(&x.to_dtype(DType::F32)?)?
            .clamp(0f32, 1f32)?;
        Ok(Image::batch_from_tensor(&x)?)
    };
    let truth = shown(truth)?;
    let recon = shown(recon)?;
    let matched: Vec<Image> = scores
        .images
        .iter()
        .map(|i| recon[i.reconstruction].clone())
        .collect();
    let scale = (96 / meta.spec.input.height.max(1)).max(1) as u32;
    for (k, (t, r)) in truth.iter().zip(&matched).enumerate() {
        save_image(t, out.join(format!("truth_{k:02}.png")), scale)?;
        save_image(r, out.join(format!("recon_{k:02}.png")), scale)?;
    }
    save_grid(&[truth, matched], out.join("grid.png"), scale)?;
    Ok(())
}
