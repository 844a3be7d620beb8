//! One gradient-inversion attack as synfed runs it, from a capture to files a researcher can
//! read: the one implementation behind `synfed attack`, every attack of `synfed simulate` and
//! `synfed compare`. The attacker is chosen by [`AttackOptions::attack`] (`ig`, `analytic`,
//! `dlg`: [`synfed_attack::AttackKind`]); outputs are the same for all three.
//!
//! [`capture_batch`] plays a FedSGD client on a chosen batch and writes what a server's tap
//! would intercept (the capture) and what only the scorer may read (the escrow);
//! [`attack_and_write`] inverts a capture, scores it against its escrow and writes
//! `metrics.json`, `trace.csv` (trial, iteration, objective, distance, tv, lr), `truth_XX.png`,
//! `recon_XX.png` and `grid.png` (truth row above the matched reconstruction row, upscaled with
//! nearest neighbours). Every attack also records whether its objective was still falling when
//! its iterations ran out ([`synfed_attack::inversion::STILL_FALLING`]): a cell whose attacks
//! did not converge says less about the model than about the attack's budget.

use crate::error::{LabError, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use synfed_attack::bn_prior::BnPriorConfig;
use synfed_attack::dlg::DlgConfig;
use synfed_attack::inversion::{InversionConfig, TraceRow};
use synfed_attack::objective::{Distance, LayerWeighting};
use synfed_attack::pipeline::{attack_capture, AttackConfig};
use synfed_attack::scoring::{score, Scores};
use synfed_attack::{save_grid, save_image, AttackKind, Image};
use synfed_data::{Dataset, Normalization};
use synfed_models::Model;
use synfed_synapse::Mode;
use synfed_wire::{Binding, Capture, CaptureMeta, Escrow, EscrowMeta};
use tracing::warn;

/// How an attack runs (defaults: the reference implementation's, Geiping et al.).
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttackOptions {
    /// The attacker: ig (Geiping et al.'s Inverting Gradients), analytic (closed form from a
    /// fully connected first layer; no iterations), dlg (Zhu et al.'s Deep Leakage from
    /// Gradients, L2 + L-BFGS), bn-prior (ig + BatchNorm statistics matching; "BN exact":
    /// the statistics of the escrowed true batch; FedSGD, train-mode BatchNorm models) or
    /// imprint (a malicious server's closed-form readout of the first layer it imprinted:
    /// captures of `[tap] mode = "imprint"` only; no iterations).
    #[arg(long, default_value = "ig")]
    #[serde(with = "as_text")]
    pub attack: AttackKind,
    /// Iterations of ig (Adam steps) or dlg (L-BFGS iterations; the reference's budget is 300).
    #[arg(long, default_value_t = 4800)]
    pub iterations: usize,
    /// Trials from different initial noise (ig, dlg); the lowest gradient distance wins.
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// Weight of total variation (ig).
    #[arg(long, default_value_t = 1e-4)]
    pub tv: f64,
    /// Adam learning rate on the images (ig).
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Distance of ig's objective, cosine (Geiping et al.) or l2; dlg always uses l2.
    #[arg(long, default_value = "cosine")]
    #[serde(with = "as_text")]
    pub distance: Distance,
    /// equal, linear or exp weighting of the layers in ig's objective.
    #[arg(long, default_value = "equal")]
    #[serde(with = "as_text")]
    pub weighting: LayerWeighting,
    /// Curvature pairs L-BFGS remembers (dlg; the reference's torch.optim.LBFGS: 100).
    #[arg(long, default_value_t = 100)]
    pub lbfgs_history: usize,
    /// Seed of the attack's initial noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Weight α of bn-prior's BatchNorm statistics penalty (GradAttack's bn_reg: 1e-3).
    #[arg(long, default_value_t = synfed_attack::bn_prior::DEFAULT_ALPHA)]
    pub bn_alpha: f64,
    /// Where bn-prior's target statistics come from: update (recovered from the running
    /// statistics' change the client sent, what a server sees), escrow (the true batch's: "BN
    /// exact", an oracle) or auto (update when the capture carries that change, else escrow).
    #[arg(long, value_enum, default_value = "auto")]
    pub bn_statistics: BnStatistics,
}

/// The source of the `bn-prior` attack's target statistics, i.e. its threat model.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnStatistics {
    /// From the update when the capture carries the running statistics' change, else escrow.
    #[default]
    Auto,
    /// Recovered from the change of the running statistics in the client's update.
    Update,
    /// Computed from the escrowed true batch ("BN exact").
    Escrow,
}

impl Default for AttackOptions {
    fn default() -> Self {
        let reference = InversionConfig::default();
        Self {
            attack: AttackKind::default(),
            iterations: reference.iterations,
            restarts: reference.restarts,
            tv: reference.tv,
            lr: reference.lr,
            distance: reference.distance,
            weighting: reference.weighting,
            lbfgs_history: DlgConfig::default().history,
            seed: 1,
            bn_alpha: BnPriorConfig::default().alpha,
            bn_statistics: BnStatistics::default(),
        }
    }
}

/// Serialises a `Display + FromStr` value as its text (`"cosine"`).
mod as_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl AttackOptions {
    fn config(&self) -> AttackConfig {
        AttackConfig {
            attack: self.attack,
            inversion: InversionConfig {
                iterations: self.iterations,
                restarts: self.restarts,
                lr: self.lr,
                tv: self.tv,
                distance: self.distance,
                weighting: self.weighting,
                seed: self.seed,
                ..InversionConfig::default()
            },
            dlg: DlgConfig {
                iterations: self.iterations,
                history: self.lbfgs_history,
                restarts: self.restarts,
                seed: self.seed,
            },
            bn_prior: BnPriorConfig {
                alpha: self.bn_alpha,
            },
            bn_statistics: None,
            use_exposed_labels: true,
        }
    }
}

/// What one attack achieved.
#[derive(Clone, Debug)]
pub struct AttackOutcome {
    pub scores: Scores,
    pub seconds: f64,
    /// Relative fall of the best trial's objective over its last quarter of iterations.
    pub final_descent: f64,
    /// Whether that fall is at most [`synfed_attack::inversion::STILL_FALLING`].
    pub converged: bool,
}

#[derive(Serialize)]
struct Metrics<'a, C: Serialize> {
    command: String,
    /// The caller's description of the attack (its command-line arguments, a cell).
    args: &'a C,
    /// The attacker (`ig`, `analytic`, `dlg`).
    attack: AttackKind,
    options: &'a AttackOptions,
    /// Where bn-prior's target statistics came from (`update` or `escrow`; absent for the
    /// other attacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    bn_statistics: Option<BnStatistics>,
    #[serde(flatten)]
    scores: &'a Scores,
    labels: Vec<u32>,
    true_labels: Vec<u32>,
    labels_recovered: bool,
    /// Per true image, the index of the reconstruction matched to it.
    assignment: Vec<usize>,
    /// BatchNorm statistics the client computed with (and the attacker replays).
    mode: Mode,
    /// Iterations the best trial ran (0 for `analytic`; `dlg` may stop early on its
    /// tolerances).
    iterations: usize,
    /// Trials run.
    restarts: usize,
    /// Final gradient distance of each trial; the best is the lowest.
    trials: Vec<f64>,
    best_trial: usize,
    /// The iteration at which the best trial's objective stopped being finite (it ended there
    /// with its last finite iterate); `null` when it ran all its iterations.
    stopped_at: Option<usize>,
    final_descent: f64,
    converged: bool,
    seconds: f64,
    device: String,
    /// The digest of the attacked update: what a resumed comparison checks before it reads
    /// this attack back instead of running it again.
    update_digest: String,
}

/// `cpu`, `cuda` or `metal`, as results record the device.
pub fn describe_device(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// Attacks `capture`, scores it against `escrow` and writes the results to `out` (see the
/// module docs). `args` is recorded in `metrics.json` as the caller's description;
/// `on_iteration(trial, iteration, objective)` reports progress.
pub fn attack_and_write(
    options: &AttackOptions,
    capture: &Capture,
    escrow: &Escrow,
    out: &Path,
    device: &Device,
    args: &impl Serialize,
    on_iteration: impl FnMut(usize, usize, f64),
) -> Result<AttackOutcome> {
    if let Binding::Unchecked(reason) = escrow.check_matches(capture)? {
        warn!(%reason, "scoring against an escrow not bound to its capture");
    }
    std::fs::create_dir_all(out).map_err(|e| LabError::io("create", out, e))?;
    let started = Instant::now();
    let mut config = options.config();
    let mut bn_statistics = None;
    if options.attack == AttackKind::BnPrior {
        let from_update = match options.bn_statistics {
            BnStatistics::Update => true,
            BnStatistics::Escrow => false,
            BnStatistics::Auto => !capture.running.is_empty(),
        };
        config.bn_statistics = Some(if from_update {
            bn_statistics = Some(BnStatistics::Update);
            synfed_attack::bn_prior::statistics_of_capture(capture)?
        } else {
            bn_statistics = Some(BnStatistics::Escrow);
            let model = capture.model(DType::F32, device)?;
            let images = escrow.images.to_device(device)?.to_dtype(DType::F32)?;
            synfed_attack::bn_prior::exact_statistics(&model, &images)?
        });
    }
    let attack = attack_capture(capture, &config, device, on_iteration)?;
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
    let final_descent = attack.reconstruction.final_descent();
    let converged = attack.reconstruction.converged();
    let metrics = Metrics {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        args,
        attack: options.attack,
        options,
        bn_statistics,
        scores: &scores,
        labels: attack.labels.clone(),
        true_labels,
        labels_recovered: attack.labels_recovered,
        assignment: scores.images.iter().map(|i| i.reconstruction).collect(),
        mode: meta.mode,
        iterations: attack
            .reconstruction
            .trace
            .iter()
            .filter(|r| r.trial == attack.reconstruction.best)
            .count(),
        restarts: attack.reconstruction.trials.len(),
        trials: attack
            .reconstruction
            .trials
            .iter()
            .map(|t| t.distance)
            .collect(),
        best_trial: attack.reconstruction.best,
        stopped_at: best.stopped_at,
        final_descent,
        converged,
        seconds,
        device: describe_device(device),
        update_digest: capture.update_digest()?.to_string(),
    };
    // the files first, `metrics.json` last and whole (written aside, then renamed): its presence
    // marks a finished attack that a resumed comparison reads back (crate::finished_attack)
    write_trace(&out.join("trace.csv"), &attack.reconstruction.trace)?;
    write_pictures(out, &scores, &best.images, &escrow.images, meta)?;
    let path = out.join(crate::finished_attack::METRICS);
    let text = serde_json::to_string_pretty(&metrics)
        .map_err(|e| LabError::Config(format!("serialising the metrics: {e}")))?;
    let partial = out.join("metrics.json.partial");
    std::fs::write(&partial, text + "\n").map_err(|e| LabError::io("write", &partial, e))?;
    std::fs::rename(&partial, &path).map_err(|e| LabError::io("write", &path, e))?;
    tracing::info!(
        "{}: PSNR {:.2} dB, SSIM {:.3}, MSE {:.5}, normalised MSE {:.4}, label accuracy {:.0}%{} in {seconds:.1} s; results in {}",
        options.attack,
        scores.psnr,
        scores.ssim,
        scores.mse,
        scores.mse_normalized,
        100.0 * scores.label_accuracy,
        if converged { "" } else { " (objective still falling)" },
        out.display()
    );
    Ok(AttackOutcome {
        scores,
        seconds,
        final_descent,
        converged,
    })
}

/// Loads a capture and its escrow from files and attacks them ([`attack_and_write`]).
pub fn attack_files(
    options: &AttackOptions,
    capture: &Path,
    escrow: &Path,
    out: &Path,
    device: &Device,
    args: &impl Serialize,
    on_iteration: impl FnMut(usize, usize, f64),
) -> Result<AttackOutcome> {
    let (capture, escrow) = load_attacked(capture, escrow, device)?;
    attack_and_write(options, &capture, &escrow, out, device, args, on_iteration)
}

/// A capture and its escrow, read from their files onto `device`.
pub fn load_attacked(capture: &Path, escrow: &Path, device: &Device) -> Result<(Capture, Escrow)> {
    Ok((
        Capture::load(capture, device)?,
        Escrow::load(escrow, device)?,
    ))
}

/// Plays a FedSGD client on the images `indices` of `data`: the gradient of their loss at
/// `model`'s weights, with BatchNorm in `mode` (`Train`: batch statistics, as synfed's
/// federated clients compute, without drifting the running statistics; `Eval`: running
/// statistics, the reference attack's protocol). Returns the capture a tap would write (with
/// the labels when `expose_labels`, and in train mode the change of the running statistics a
/// client's step reports, computed on a copy of `model`) and its escrow (the true batch).
pub fn capture_batch(
    model: &Model,
    data: &Dataset,
    normalization: &Normalization,
    indices: &[usize],
    mode: Mode,
    expose_labels: bool,
    client: &str,
) -> Result<(Capture, Escrow)> {
    if indices.is_empty() {
        return Err(LabError::Config("the attacked batch is empty".into()));
    }
    let (x, y) = data.batch(indices, normalization, model.device(), DType::F32)?;
    let computed = match mode {
        Mode::Train | Mode::TrainFrozenStats => Mode::TrainFrozenStats,
        Mode::Eval => Mode::Eval,
    };
    let update = model.gradients(&x, &y, computed)?;
    let labels = y.to_vec1::<u32>()?;
    let mut meta = CaptureMeta::fedsgd(
        model.spec().clone(),
        0,
        client,
        indices.len(),
        normalization.clone(),
        expose_labels.then(|| labels.clone()),
    );
    meta.mode = match mode {
        Mode::Eval => Mode::Eval,
        _ => Mode::Train,
    };
    let mut capture = Capture::new(meta, model, update)?;
    if mode != Mode::Eval && model.params().iter().any(|p| !p.role.is_trainable()) {
        // what the client's train-mode step does to the running statistics, on a copy so that
        // `model` stays as it was
        let copy = capture.model(DType::F32, model.device())?;
        let before: Vec<Tensor> = running_statistics(&copy)?;
        copy.forward(&x, Mode::Train)?;
        let change = running_statistics(&copy)?
            .iter()
            .zip(&before)
            .map(|(after, before)| after - before)
            .collect::<candle_core::Result<Vec<_>>>()?;
        capture = capture.with_running_change(&copy, change)?;
    }
    let escrow = Escrow::new(
        EscrowMeta {
            round: 0,
            client: client.into(),
            update_digest: Some(capture.update_digest()?),
        },
        &x,
        &y,
    )?;
    Ok((capture, escrow))
}

/// Copies of `model`'s running statistics (every tensor that is not trainable), in order.
fn running_statistics(model: &Model) -> Result<Vec<Tensor>> {
    Ok(model
        .params()
        .iter()
        .filter(|p| !p.role.is_trainable())
        .map(|p| p.var.as_tensor().copy())
        .collect::<candle_core::Result<Vec<_>>>()?)
}

fn write_trace(path: &Path, trace: &[TraceRow]) -> Result<()> {
    let io = |e| LabError::io("write", path, e);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    writeln!(file, "trial,iteration,objective,distance,tv,lr").map_err(io)?;
    for r in trace {
        writeln!(
            file,
            "{},{},{:.8},{:.8},{:.8},{:e}",
            r.trial, r.iteration, r.objective, r.distance, r.tv, r.lr
        )
        .map_err(io)?;
    }
    file.flush().map_err(io)
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
