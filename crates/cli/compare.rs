//! `synfed compare`: which combination of synaptic-diversity methods makes a federation harder
//! to attack, and at what cost in accuracy.
//!
//! A grid of *cells*: every variant (a method set, an LR- or width-matched baseline, or a
//! method set under a defence) × every model. A cell is one federated run of the very same
//! server, clients and tap as `synfed simulate`: the tap captures K clients' updates in round 1
//! (the **untrained** model) and, after R rounds of training, in round R + 1 (the **trained**
//! model); the attacker inverts each capture and scores it against the client's escrow. All
//! cells share the seed, the data partition and the attacker's seed, so that two cells differ
//! only in what is compared (the K attacked batches are the same images in every cell).
//!
//! A finished cell writes `cells/<model>/<variant>/cell.json`; a rerun skips it, so a killed
//! comparison continues where it stopped. `--shard i/n` runs every n-th cell (for a batch
//! scheduler) and `--merge DIR…` joins shard folders into one report. `--kind learning` runs
//! the centralized learning comparison (paper Tables 1–2) instead.

use crate::compare_report::{self, Located};
use crate::compare_stats::Estimate;
use crate::device::DeviceChoice;
use crate::progress;
use crate::simulate::federate;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use synfed_data::Partition;
use synfed_defence::Defence;
use synfed_lab::{AttackOptions, TrainingConfig, TrainingSummary};
use synfed_models::Arch;
use synfed_server::{read_rounds, Algorithm, RunConfig};
use synfed_synapse::{Hyper, MethodSet};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Gradient-inversion attacks on federations: what a server's tap sees of real clients.
    #[default]
    Privacy,
    /// Gradient-inversion attacks on centrally built (and trained) models, on fixed
    /// consecutive held-out batches: the paper's Table 3 protocol.
    Inversion,
    /// Centralized k-fold training per method set (paper Tables 1–2).
    Learning,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The comparison (TOML); without it, a small default on embedded MNIST.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output folder (results, report, pictures, and the cells).
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
    /// What is compared (default: the configuration's `kind`, else privacy).
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// Run only cells i, i+n, i+2n, … (`i/n`, i from 0); join the folders with --merge.
    #[arg(long)]
    pub shard: Option<String>,
    /// Join the cells of these (shard) folders into --out and write the report.
    #[arg(long, num_args = 1.., conflicts_with_all = ["shard", "config"])]
    pub merge: Vec<PathBuf>,
    /// Run only the cells of these models (slugs as in the report: `mlp`, `resnet20`,
    /// `mlp-w64`), e.g. to give each machine the models it runs fastest; join the folders
    /// with --merge.
    #[arg(long, value_delimiter = ',', conflicts_with = "merge")]
    pub models: Vec<String>,
    /// With --merge: write the report from the finished cells and list the unfinished ones
    /// (a long comparison's interim report).
    #[arg(long, requires = "merge")]
    pub partial: bool,
    /// Cells computed at the same time.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// One model of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub arch: Arch,
    /// Base width (absent: the published size).
    #[serde(default)]
    pub width: Option<usize>,
}

impl ModelEntry {
    /// `mlp-w64` / `resnet20`.
    pub fn slug(&self) -> String {
        match self.width {
            Some(w) => format!("{}-w{w}", self.arch),
            None => self.arch.to_string(),
        }
    }
}

/// The comparison: what is compared and how each cell is run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompareConfig {
    /// `privacy` (federations), `inversion` (the paper's Table 3 protocol) or `learning`;
    /// `--kind` overrides it.
    pub kind: Kind,
    /// Seed of every cell (model initialisation, partition, batches, attacker).
    pub seed: u64,
    /// Data set (`demo-mnist`, `demo-cifar10`, or `mnist`/`cifar10`/`cifar100` from `data_dir`).
    pub data: String,
    pub data_dir: Option<PathBuf>,
    /// `--kind inversion`: use only the data set's test split, its first `held_out` images as
    /// the test split (attacked and tested on) and the rest as the training split (for data
    /// sets whose training split is not at hand, as CIFAR-100's here).
    pub held_out: Option<usize>,
    /// Evaluate on at most this many test images.
    pub eval_limit: usize,
    /// Clients per federation (at least `batches`).
    pub clients: usize,
    /// How the training split is cut among the clients.
    pub split: Partition,
    /// `fedsgd` (the attack's setting) or `fedavg`.
    pub algorithm: Algorithm,
    /// Rounds of training before the "trained" attacks (0: untrained only).
    pub rounds: u64,
    /// K: attacked batches per model state (the updates of clients 0 … K−1).
    pub batches: usize,
    /// Learning rate and batch size of the federation.
    pub lr: f64,
    pub batch_size: usize,
    /// Which BatchNorm statistics the clients compute their updates with: `train` (batch
    /// statistics) or `eval` (running statistics, the reference attack's protocol); the run's
    /// `training.bn_mode`.
    pub bn_mode: synfed_synapse::BnMode,
    /// Iterations and restarts of each attack.
    pub attack_iterations: usize,
    pub attack_restarts: usize,
    /// Method sets compared (default: all eight, in the paper's order).
    pub methods: Vec<MethodSet>,
    /// Defences (`dp:C=…,sigma=…`, `prune:p=…`), each run with every set of `defended`.
    pub defences: Vec<String>,
    /// Method sets the defences are combined with.
    pub defended: Vec<MethodSet>,
    /// LR-matched controls: the baseline (`none`) at lr × each factor (× Γ is always added
    /// when a compared set splits weights).
    pub lr_factors: Vec<f64>,
    /// Width-matched control: the baseline with width / Γ (as many distinct units as the split
    /// model has); models without an explicit width are skipped.
    pub width_matched: bool,
    /// τ, d_re, Γ of the mechanisms.
    pub tau: f64,
    pub d_re: f64,
    pub gamma: usize,
    pub models: Vec<ModelEntry>,
    /// `--kind inversion`: centralized epochs (lr `learning.lr` × the variant's factor, batch
    /// `learning.batch_size`) before the trained attacks; 0: untrained only.
    pub pretrain_epochs: usize,
    /// `--kind inversion`: the captures expose the batch's labels (the reference attack is
    /// given them); otherwise the attacker recovers them.
    pub expose_labels: bool,
    /// `--kind inversion`: put the paper's Table 3 values beside synfed's in the report.
    pub paper_table3: bool,
    /// `--kind learning`: folds, epochs, lr and batch size of centralized training.
    pub learning: LearningConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearningConfig {
    pub folds: usize,
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub patience: usize,
}

impl Default for LearningConfig {
    fn default() -> Self {
        Self {
            folds: 3,
            epochs: 5,
            lr: 0.01,
            batch_size: 50,
            patience: 5,
        }
    }
}

impl Default for CompareConfig {
    fn default() -> Self {
        let hyper = Hyper::default();
        Self {
            kind: Kind::Privacy,
            seed: 1,
            data: "demo-mnist".into(),
            data_dir: None,
            held_out: None,
            eval_limit: 400,
            clients: 4,
            split: Partition::Iid,
            algorithm: Algorithm::FedSgd,
            rounds: 10,
            batches: 4,
            lr: 0.1,
            batch_size: 4,
            bn_mode: synfed_synapse::BnMode::Train,
            attack_iterations: 300,
            attack_restarts: 1,
            methods: MethodSet::paper_order().to_vec(),
            defences: Vec::new(),
            defended: vec![MethodSet::NONE],
            lr_factors: vec![0.5],
            width_matched: true,
            tau: hyper.tau,
            d_re: hyper.d_re,
            gamma: hyper.gamma,
            models: vec![ModelEntry {
                arch: Arch::Mlp,
                width: Some(64),
            }],
            pretrain_epochs: 0,
            expose_labels: false,
            paper_table3: false,
            learning: LearningConfig::default(),
        }
    }
}

impl CompareConfig {
    fn validate(&self) -> Result<()> {
        if self.models.is_empty() || self.methods.is_empty() {
            bail!("the comparison needs at least one model and one method set");
        }
        if self.batches == 0 || (self.kind != Kind::Inversion && self.batches > self.clients) {
            bail!(
                "batches (K = {}) must be between 1 and clients ({})",
                self.batches,
                self.clients
            );
        }
        if !(self.lr > 0.0 && self.lr.is_finite())
            || self.lr_factors.iter().any(|f| !(*f > 0.0 && f.is_finite()))
        {
            bail!("lr and lr_factors must be positive");
        }
        if self.attack_iterations == 0 {
            bail!("attack_iterations must be at least 1");
        }
        for d in &self.defences {
            d.parse::<Defence>()
                .with_context(|| format!("defence `{d}`"))?;
        }
        if self.kind != Kind::Inversion
            && (self.held_out.is_some() || self.pretrain_epochs > 0 || self.expose_labels)
        {
            bail!(
                "held_out, pretrain_epochs and expose_labels belong to kind = \"inversion\" \
                 (this comparison is {:?})",
                self.kind
            );
        }
        if self.kind == Kind::Inversion && !self.defences.is_empty() {
            bail!("kind = \"inversion\" attacks centrally built models: defences apply to federations (kind = \"privacy\")");
        }
        Ok(())
    }

    /// The model states attacked: untrained, and trained when there is training.
    pub fn states(&self) -> Vec<&'static str> {
        let trained = match self.kind {
            Kind::Inversion => self.pretrain_epochs > 0,
            _ => self.rounds > 0,
        };
        if trained {
            vec!["untrained", "trained"]
        } else {
            vec!["untrained"]
        }
    }

    /// The data set's splits as the comparison uses them (carved by `held_out`).
    pub fn splits(&self) -> Result<synfed_data::Splits> {
        let name: synfed_data::DatasetName = self.data.parse().map_err(|e| anyhow!("data: {e}"))?;
        let splits = match self.held_out {
            Some(n) => {
                let whole = name
                    .load_test(self.data_dir.as_deref())
                    .with_context(|| format!("loading the test split of {name}"))?;
                synfed_data::Splits::held_out(&whole, n)
                    .with_context(|| format!("holding out {n} images of {name}"))?
            }
            None => name
                .load(self.data_dir.as_deref())
                .with_context(|| format!("loading {name}"))?,
        };
        Ok(splits)
    }
}

/// What distinguishes one row of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// As shown in tables: `I+III`, `none lr×2`, `none width/2`, `none + dp:C=1,sigma=0.5`.
    pub label: String,
    pub methods: MethodSet,
    pub defence: String,
    pub lr: f64,
    /// Divides every model's width (the width-matched control).
    pub width_divisor: usize,
    /// `method`, `lr-control`, `width-control` or `defence`.
    pub role: String,
}

impl Variant {
    /// A file-name-safe form of the label.
    pub fn slug(&self) -> String {
        self.label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .replace('×', "x")
    }
}

/// The rows of the comparison, in report order.
pub fn variants(c: &CompareConfig) -> Vec<Variant> {
    let plain = |methods: MethodSet, role: &str| Variant {
        label: methods.to_string(),
        methods,
        defence: "none".into(),
        lr: c.lr,
        width_divisor: 1,
        role: role.into(),
    };
    let mut out: Vec<Variant> = c.methods.iter().map(|m| plain(*m, "method")).collect();
    let mut factors = c.lr_factors.clone();
    if c.methods.iter().any(|m| m.splitting) && !factors.contains(&(c.gamma as f64)) {
        factors.push(c.gamma as f64);
    }
    for f in factors {
        out.push(Variant {
            label: format!("none lr×{f}"),
            lr: c.lr * f,
            ..plain(MethodSet::NONE, "lr-control")
        });
    }
    if c.width_matched && c.methods.iter().any(|m| m.splitting) && c.gamma > 1 {
        out.push(Variant {
            label: format!("none width/{}", c.gamma),
            width_divisor: c.gamma,
            ..plain(MethodSet::NONE, "width-control")
        });
    }
    for d in &c.defences {
        for m in &c.defended {
            out.push(Variant {
                label: format!("{m} + {d}"),
                defence: d.clone(),
                ..plain(*m, "defence")
            });
        }
    }
    out
}

/// One attack of a cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackRecord {
    /// `untrained` or `trained`.
    pub state: String,
    pub client: String,
    pub mse: f64,
    #[serde(with = "finite_or_null")]
    pub psnr: f64,
    pub ssim: f64,
    pub mse_normalized: f64,
    pub label_accuracy: f64,
    pub seconds: f64,
    /// Relative fall of the attack's objective over its last quarter of iterations, and
    /// whether that is small enough to call it converged (absent in older results).
    #[serde(default)]
    pub final_descent: Option<f64>,
    #[serde(default)]
    pub converged: Option<bool>,
}

mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

/// A finished cell, as `cell.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub model: ModelEntry,
    pub variant: Variant,
    /// Width the cell's model was built with.
    pub width: Option<usize>,
    pub attacks: Vec<AttackRecord>,
    /// Test accuracy of the global model after `rounds` rounds (the attacked trained model);
    /// `--kind inversion`: of the attacked model on the held-out images (after merging the
    /// states: the trained one's).
    pub test_accuracy: Option<f64>,
    /// `--kind inversion`: test accuracy of the untrained model (chance level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrained_accuracy: Option<f64>,
    /// Test accuracy after each round of the run.
    pub accuracy_curve: Vec<(u64, f64)>,
    /// `--kind inversion`, untrained: the variant whose cell computed these attacks (the two
    /// are bit-identical before training, see [`untrained_twin`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
    /// `--kind inversion`: seconds spent training the attacked model (0 when reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_seconds: Option<f64>,
    pub seconds: f64,
}

impl CellResult {
    /// Estimates of `metric` over the cell's attacks in `state`.
    pub fn estimate(&self, state: &str, metric: impl Fn(&AttackRecord) -> f64) -> Estimate {
        Estimate::of(self.attacks.iter().filter(|a| a.state == state).map(metric))
    }
}

/// A cell of the grid: where it lives and what it runs.
#[derive(Clone, Debug)]
pub struct Cell {
    pub index: usize,
    pub model: ModelEntry,
    pub variant: Variant,
    /// `--kind inversion`: the one model state the cell attacks (a federation's cell attacks
    /// both of its states).
    pub state: Option<&'static str>,
    /// `--kind inversion`, untrained: the index of an earlier cell that computes exactly the
    /// same thing (see [`untrained_twin`]); this cell is not run, its result is that cell's.
    pub same_as: Option<usize>,
}

impl Cell {
    /// `cells/<model>/<variant>` (the variant's folder).
    pub fn variant_dir(&self, out: &Path) -> PathBuf {
        out.join("cells")
            .join(self.model.slug())
            .join(self.variant.slug())
    }

    /// The cell's own folder (`…/<state>` for a state of `--kind inversion`).
    pub fn dir(&self, out: &Path) -> PathBuf {
        match self.state {
            Some(state) => self.variant_dir(out).join(state),
            None => self.variant_dir(out),
        }
    }
}

/// Every cell: models outer, variants inner; `--kind inversion` has one cell per state, all
/// untrained cells first (they need no training, so a partial run already covers every row).
pub fn grid(c: &CompareConfig) -> Vec<Cell> {
    let vs = variants(c);
    let states: Vec<Option<&'static str>> = match c.kind {
        Kind::Inversion => c.states().into_iter().map(Some).collect(),
        _ => vec![None],
    };
    let mut cells: Vec<Cell> = Vec::new();
    for state in states {
        for m in &c.models {
            for v in &vs {
                if v.width_divisor > 1 && m.width.is_none() {
                    continue;
                }
                let same_as = (state == Some("untrained"))
                    .then(|| {
                        cells
                            .iter()
                            .find(|e| {
                                e.state == state
                                    && e.same_as.is_none()
                                    && e.model == *m
                                    && untrained_twin(&e.variant, v)
                            })
                            .map(|e| e.index)
                    })
                    .flatten();
                cells.push(Cell {
                    index: cells.len(),
                    model: m.clone(),
                    variant: v.clone(),
                    state,
                    same_as,
                });
            }
        }
    }
    cells
}

/// Whether two variants' untrained cells compute bit-identical results: fuzzy learning rates
/// (I) and rejuvenation (II) act on optimizer steps, and the learning rate only on steps, so
/// before any step the model (its weights are drawn from a stream of their own), the captured
/// gradient and the attack (same seed) are the same as without them. Only weight splitting
/// (III) and the width change the untrained model.
pub fn untrained_twin(a: &Variant, b: &Variant) -> bool {
    a.methods.splitting == b.methods.splitting
        && a.width_divisor == b.width_divisor
        && a.defence == b.defence
}

fn parse_shard(text: &str) -> Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("--shard `{text}` is not i/n with 0 ≤ i < n");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

fn load_config(args: &Args) -> Result<CompareConfig> {
    let mut config: CompareConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the comparison {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("in the comparison {}", path.display()))?
        }
        None => CompareConfig::default(),
    };
    if let Some(kind) = args.kind {
        config.kind = kind;
    }
    config.validate().context("checking the comparison")?;
    Ok(config)
}

/// The file holding the effective configuration of an output folder.
const CONFIG_FILE: &str = "compare.toml";

pub fn run(args: Args) -> Result<()> {
    if !args.merge.is_empty() {
        return merge(&args);
    }
    let config = load_config(&args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let saved = args.out.join(CONFIG_FILE);
    let text = toml::to_string(&config).context("writing the effective configuration")?;
    if saved.exists() {
        let before = std::fs::read_to_string(&saved)
            .with_context(|| format!("reading {}", saved.display()))?;
        if before != text {
            bail!(
                "{} already holds another comparison ({}); use a new --out or delete it",
                args.out.display(),
                saved.display()
            );
        }
    }
    std::fs::write(&saved, &text).with_context(|| format!("writing {}", saved.display()))?;
    if config.kind == Kind::Learning {
        return learning(&config, &args);
    }
    let device = args.device.open()?;
    let splits = match config.kind {
        Kind::Inversion => Some(config.splits()?),
        _ => None,
    };
    let cells = grid(&config);
    for slug in &args.models {
        if !config.models.iter().any(|m| m.slug() == *slug) {
            bail!(
                "--models {slug}: the comparison has no such model (it has {})",
                config
                    .models
                    .iter()
                    .map(ModelEntry::slug)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let chosen: Vec<Cell> = cells
        .iter()
        .filter(|c| args.models.is_empty() || args.models.contains(&c.model.slug()))
        .cloned()
        .collect();
    let mine: Vec<Cell> = match &args.shard {
        Some(s) => {
            let (i, n) = parse_shard(s)?;
            chosen.into_iter().filter(|c| c.index % n == i).collect()
        }
        None => chosen,
    };
    let partial_run = args.shard.is_some() || !args.models.is_empty();
    println!(
        "comparing {} variants × {} models = {} cells ({} here); output in {}",
        variants(&config).len(),
        config.models.len(),
        cells.len(),
        mine.len(),
        args.out.display()
    );
    let started = Instant::now();
    run_cells(
        &config,
        &mine,
        &args.out,
        args.jobs.max(1),
        &device,
        splits.as_ref(),
    )?;
    if partial_run {
        println!(
            "these cells done in {:.0} s; join the shards with `synfed compare --merge DIR… --out OUT`",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let (results, missing) = collect(&cells, std::slice::from_ref(&args.out), false)?;
    compare_report::write(
        &config,
        &results,
        &missing,
        &args.out,
        &command_line(),
        train_examples(&config)?,
    )?;
    println!(
        "comparison done in {:.0} s; report in {}",
        started.elapsed().as_secs_f64(),
        args.out.join("report.md").display()
    );
    Ok(())
}

/// Size of the data set's training split (for the DP accountant's sampling rate).
fn train_examples(config: &CompareConfig) -> Result<usize> {
    Ok(config.splits()?.train.len())
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Runs `cells` (skipping finished ones), `jobs` at a time.
fn run_cells(
    config: &CompareConfig,
    cells: &[Cell],
    out: &Path,
    jobs: usize,
    device: &Device,
    splits: Option<&synfed_data::Splits>,
) -> Result<()> {
    let bar = progress::bar(cells.len() as u64, "cells");
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(cells.len()).max(1) {
            scope.spawn(|| loop {
                if let Err(e) = synfed_synapse::cuda_context::bind(device) {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e.into());
                    }
                    return;
                }
                if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(cell) = cells.get(i) else { return };
                if cell.same_as.is_some() {
                    bar.inc(1);
                    continue;
                }
                bar.set_message(format!(
                    "{} {}{}",
                    cell.model.slug(),
                    cell.variant.label,
                    cell.state.map(|s| format!(" {s}")).unwrap_or_default()
                ));
                let finished = match splits {
                    Some(splits) => run_inversion_cell(config, cell, out, device, splits),
                    None => run_cell(config, cell, out, device),
                };
                match finished {
                    Ok(_) => bar.inc(1),
                    Err(e) => {
                        let e = e.context(format!(
                            "cell {} / {}",
                            cell.model.slug(),
                            cell.variant.label
                        ));
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    match failure.into_inner().unwrap_or(None) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The run configuration of a cell's federation.
fn cell_run_config(c: &CompareConfig, cell: &Cell, dir: &Path) -> RunConfig {
    let mut run = RunConfig {
        seed: c.seed,
        rounds: if c.rounds > 0 { c.rounds + 1 } else { 1 },
        algorithm: c.algorithm,
        out: dir.join("run"),
        ..RunConfig::default()
    };
    run.model.arch = cell.model.arch;
    run.model.methods = cell.variant.methods;
    run.model.tau = c.tau;
    run.model.d_re = c.d_re;
    run.model.gamma = c.gamma;
    run.model.width = cell
        .model
        .width
        .map(|w| (w / cell.variant.width_divisor).max(1));
    run.data.name = c.data.clone();
    run.data.dir = c.data_dir.clone();
    run.data.eval_limit = Some(c.eval_limit);
    run.training.lr = cell.variant.lr;
    run.training.batch_size = c.batch_size;
    run.training.bn_mode = c.bn_mode;
    run.sampling.min_clients = c.clients;
    run.sampling.min_updates = 1;
    run.timing.pull_timeout_s = 2.0;
    run.timing.linger_s = 1.0;
    run.tap.rounds = if c.rounds > 0 {
        vec![1, c.rounds + 1]
    } else {
        vec![1]
    };
    run.tap.clients = (0..c.batches).map(|k| format!("client-{k}")).collect();
    run
}

/// Puts the variant's defence into the run (clients apply it to their updates).
fn set_defence(run: &mut RunConfig, defence: &str) -> Result<()> {
    defence
        .parse::<Defence>()
        .with_context(|| format!("defence `{defence}`"))?;
    run.training.defence = defence.to_string();
    Ok(())
}

/// δ of the (ε, δ) guarantees reported for DP defences.
pub const DELTA: f64 = 1e-5;

/// ε at [`DELTA`] of a record-level DP defence (per-example clipping and noise) in a cell:
/// each round a client's gradient uses a batch of `batch_size` of its ~n/clients examples
/// (sampling rate q), over the run's rounds. `None` for other defences, which give no
/// record-level guarantee (per-batch clipping bounds a whole batch, not one example).
pub fn epsilon_of(c: &CompareConfig, defence: &str, train_examples: usize) -> Option<f64> {
    let dp = defence.parse::<Defence>().ok()?.dp?;
    if !dp.per_example || dp.sigma <= 0.0 {
        return None;
    }
    let share = (train_examples / c.clients.max(1)).max(1);
    let q = (c.batch_size as f64 / share as f64).min(1.0);
    let steps = if c.rounds > 0 { c.rounds + 1 } else { 1 };
    synfed_defence::accountant::epsilon(q, dp.sigma, steps, DELTA)
        .ok()
        .map(|(eps, _)| eps)
}

/// How every attack of the comparison runs: the reference settings with the comparison's
/// iterations, restarts and seed.
fn attack_options(c: &CompareConfig) -> AttackOptions {
    AttackOptions {
        iterations: c.attack_iterations,
        restarts: c.attack_restarts,
        seed: c.seed,
        ..AttackOptions::default()
    }
}

/// Reads a finished cell's `cell.json`, or prepares its folder for a fresh run (an unfinished
/// cell of a killed comparison starts afresh, except for what it keeps on purpose: a trained
/// model).
fn finished_or_prepare(dir: &Path, keep: &[&str]) -> Result<Option<CellResult>> {
    let done = dir.join("cell.json");
    if done.exists() {
        let text = std::fs::read_to_string(&done)
            .with_context(|| format!("reading {}", done.display()))?;
        let result =
            serde_json::from_str(&text).with_context(|| format!("in {}", done.display()))?;
        return Ok(Some(result));
    }
    if dir.exists() {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            if keep.iter().any(|k| entry.file_name() == **k) {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .with_context(|| format!("clearing {}", path.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(None)
}

/// Writes `cell.json` last and atomically: its presence means the cell is finished.
fn finish(dir: &Path, result: &CellResult) -> Result<()> {
    let done = dir.join("cell.json");
    let tmp = dir.join("cell.json.partial");
    std::fs::write(&tmp, serde_json::to_string_pretty(result)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &done).with_context(|| format!("writing {}", done.display()))
}

/// Runs one state of a `--kind inversion` cell (or loads it if it is finished): the model
/// built from the comparison's seed with the variant's methods and width, trained centrally
/// for the trained state, and K consecutive held-out batches captured and attacked
/// ([`synfed_lab::CentralizedInversion`]).
fn run_inversion_cell(
    c: &CompareConfig,
    cell: &Cell,
    out: &Path,
    device: &Device,
    splits: &synfed_data::Splits,
) -> Result<CellResult> {
    let dir = cell.dir(out);
    if let Some(done) = finished_or_prepare(&dir, &["trained.safetensors"])? {
        return Ok(done);
    }
    let state = cell.state.unwrap_or("untrained");
    let started = Instant::now();
    let shape = splits.train.shape();
    let mut spec = synfed_models::ModelSpec::new(
        cell.model.arch,
        synfed_models::InputShape::new(shape.channels, shape.height, shape.width),
        splits.train.num_classes(),
        cell.variant.methods,
        c.seed,
    );
    spec.hyper = Hyper {
        tau: c.tau,
        d_re: c.d_re,
        gamma: c.gamma,
    };
    spec.width = cell
        .model
        .width
        .map(|w| (w / cell.variant.width_divisor).max(1));
    let study = synfed_lab::CentralizedInversion {
        spec: spec.clone(),
        pretraining: (state == "trained").then(|| synfed_lab::Pretraining {
            epochs: c.pretrain_epochs,
            // the variant's factor of the comparison's lr, applied to training's
            lr: c.learning.lr * cell.variant.lr / c.lr,
            batch_size: c.learning.batch_size,
        }),
        batches: c.batches,
        batch_size: c.batch_size,
        mode: c.bn_mode.mode(),
        expose_labels: c.expose_labels,
        attack: attack_options(c),
    };
    let bar = progress::bar(
        (c.batches * c.attack_iterations * c.attack_restarts.max(1)) as u64,
        "iterations",
    );
    bar.set_message(format!(
        "{} {} {state}",
        cell.model.slug(),
        cell.variant.label
    ));
    tracing::info!(
        "cell {} / {} / {state}",
        cell.model.slug(),
        cell.variant.label
    );
    let result = study
        .run(
            splits,
            &dir,
            device,
            |epoch, loss| {
                bar.set_message(format!(
                    "{} {} training epoch {epoch}: loss {loss:.4}",
                    cell.model.slug(),
                    cell.variant.label
                ));
                tracing::info!("epoch {epoch}: train loss {loss:.4}");
            },
            |_, _, _, _| bar.inc(1),
        )
        .with_context(|| format!("{} / {} / {state}", cell.model.slug(), cell.variant.label))?;
    bar.finish_and_clear();
    let attacks = result
        .attacks
        .iter()
        .map(|a| AttackRecord {
            state: state.into(),
            client: a.name.clone(),
            mse: a.outcome.scores.mse,
            psnr: a.outcome.scores.psnr,
            ssim: a.outcome.scores.ssim,
            mse_normalized: a.outcome.scores.mse_normalized,
            label_accuracy: a.outcome.scores.label_accuracy,
            seconds: a.outcome.seconds,
            final_descent: Some(a.outcome.final_descent),
            converged: Some(a.outcome.converged),
        })
        .collect();
    let result = CellResult {
        model: cell.model.clone(),
        variant: cell.variant.clone(),
        width: spec.width,
        attacks,
        test_accuracy: (state == "trained").then_some(result.test_accuracy),
        untrained_accuracy: (state == "untrained").then_some(result.test_accuracy),
        accuracy_curve: Vec::new(),
        same_as: None,
        training_seconds: Some(result.training_seconds),
        seconds: started.elapsed().as_secs_f64(),
    };
    finish(&dir, &result)?;
    Ok(result)
}

/// Runs one cell (or loads it if it is finished).
fn run_cell(c: &CompareConfig, cell: &Cell, out: &Path, device: &Device) -> Result<CellResult> {
    let dir = cell.dir(out);
    if let Some(done) = finished_or_prepare(&dir, &[])? {
        return Ok(done);
    }
    let started = Instant::now();
    let mut run = cell_run_config(c, cell, &dir);
    set_defence(&mut run, &cell.variant.defence)?;
    let fleet = synfed_lab::Fleet::new(c.clients, c.split);
    tracing::info!(
        "cell {} / {}: federating",
        cell.model.slug(),
        cell.variant.label
    );
    let summary = federate(run.clone(), &fleet, false, device)?;
    if !summary.complete {
        bail!("the federation stopped early");
    }
    let records = read_rounds(&run.out.join("rounds.csv"))?;
    let mut states = vec![("untrained", 1u64)];
    if c.rounds > 0 {
        states.push(("trained", c.rounds + 1));
    }
    let mut attacks = Vec::new();
    // the current cell's progress, below the grid's bar
    let bar = progress::bar((states.len() * c.batches) as u64, "attacks");
    bar.set_message(format!("{} {}", cell.model.slug(), cell.variant.label));
    for (state, round) in states {
        for k in 0..c.batches {
            let client = format!("client-{k}");
            let captures = run.out.join("captures");
            let capture = captures.join(synfed_wire::capture_file_name(round, &client));
            let escrow = captures.join(synfed_wire::escrow_file_name(round, &client));
            let target = dir.join("attack").join(format!("{state}-{client}"));
            let described = serde_json::json!({
                "comparison": c,
                "model": cell.model,
                "variant": cell.variant,
                "capture": capture,
            });
            let outcome = synfed_lab::attack_files(
                &attack_options(c),
                &capture,
                &escrow,
                &target,
                device,
                &described,
                |_, _, _| {},
            )
            .with_context(|| format!("attacking {}", capture.display()))?;
            attacks.push(AttackRecord {
                state: state.into(),
                client,
                mse: outcome.scores.mse,
                psnr: outcome.scores.psnr,
                ssim: outcome.scores.ssim,
                mse_normalized: outcome.scores.mse_normalized,
                label_accuracy: outcome.scores.label_accuracy,
                seconds: outcome.seconds,
                final_descent: Some(outcome.final_descent),
                converged: Some(outcome.converged),
            });
            bar.inc(1);
        }
    }
    let accuracy_curve: Vec<(u64, f64)> =
        records.iter().map(|r| (r.round, r.test_accuracy)).collect();
    let test_accuracy = (c.rounds > 0)
        .then(|| {
            records
                .iter()
                .find(|r| r.round == c.rounds)
                .map(|r| r.test_accuracy)
        })
        .flatten();
    let result = CellResult {
        model: cell.model.clone(),
        variant: cell.variant.clone(),
        width: run.model.width,
        attacks,
        test_accuracy,
        untrained_accuracy: None,
        accuracy_curve,
        same_as: None,
        training_seconds: None,
        seconds: started.elapsed().as_secs_f64(),
    };
    finish(&dir, &result)?;
    Ok(result)
}

/// The finished cells of `cells`, looked up in `dirs` (the run's folder or shard folders);
/// the states of a `--kind inversion` variant are joined into one result. Unfinished cells
/// are an error unless `partial`, which returns them as the second value.
fn collect(all: &[Cell], dirs: &[PathBuf], partial: bool) -> Result<(Vec<Located>, Vec<String>)> {
    let cells = all;
    let mut results: Vec<Located> = Vec::new();
    let mut missing = Vec::new();
    for cell in cells {
        // a twin's result is its representative's, relabelled
        let source = match cell.same_as.and_then(|k| all.iter().find(|c| c.index == k)) {
            Some(representative) => representative,
            None => cell,
        };
        let found = dirs
            .iter()
            .find(|d| source.dir(d).join("cell.json").exists());
        let Some(root) = found else {
            missing.push(format!(
                "{} / {}{}",
                cell.model.slug(),
                cell.variant.label,
                cell.state.map(|s| format!(" / {s}")).unwrap_or_default()
            ));
            continue;
        };
        let path = source.dir(root).join("cell.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut result: CellResult =
            serde_json::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        if source.index != cell.index {
            result.variant = cell.variant.clone();
            result.same_as = Some(source.variant.label.clone());
        }
        let state_dir = cell.state.map(|s| (s.to_string(), source.dir(root)));
        let same = results.iter_mut().find(|l| {
            l.result.model == result.model && l.result.variant.label == result.variant.label
        });
        match (same, state_dir) {
            (Some(l), Some(state_dir)) => {
                l.result.attacks.extend(result.attacks);
                l.result.test_accuracy = l.result.test_accuracy.or(result.test_accuracy);
                l.result.untrained_accuracy =
                    l.result.untrained_accuracy.or(result.untrained_accuracy);
                l.result.training_seconds =
                    match (l.result.training_seconds, result.training_seconds) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                l.result.seconds += result.seconds;
                l.state_dirs.push(state_dir);
            }
            (_, state_dir) => results.push(Located {
                dir: cell.variant_dir(root),
                state_dirs: state_dir.into_iter().collect(),
                result,
            }),
        }
    }
    if !missing.is_empty() && !partial {
        bail!(
            "{} cells are not finished: {}",
            missing.len(),
            missing.join(", ")
        );
    }
    Ok((results, missing))
}

/// `--merge`: joins shard folders (which must hold the same comparison) into `--out`.
fn merge(args: &Args) -> Result<()> {
    let mut config: Option<(CompareConfig, String)> = None;
    for dir in &args.merge {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        match &config {
            None => {
                let parsed: CompareConfig =
                    toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
                config = Some((parsed, text));
            }
            Some((_, first)) if *first != text => {
                bail!(
                    "{} holds another comparison than {}",
                    path.display(),
                    args.merge[0].display()
                )
            }
            Some(_) => {}
        }
    }
    let Some((config, text)) = config else {
        bail!("--merge needs at least one folder")
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join(CONFIG_FILE), text)?;
    let (results, missing) = collect(&grid(&config), &args.merge, args.partial)?;
    compare_report::write(
        &config,
        &results,
        &missing,
        &args.out,
        &command_line(),
        train_examples(&config)?,
    )?;
    println!(
        "merged {} cells; report in {}",
        results.len(),
        args.out.join("report.md").display()
    );
    Ok(())
}

/// `--kind learning`: centralized training ([`synfed_lab::train`]) per model × method set and
/// learning-rate control (`none lr×f` for every `lr_factors` entry and Γ, at the learning
/// rate `learning.lr × f`), resumable (a finished training keeps its `summary.json`); then a
/// table of accuracy and early-stopping epoch.
fn learning(config: &CompareConfig, args: &Args) -> Result<()> {
    let device = args.device.open()?;
    let l = &config.learning;
    let runs: Vec<Variant> = variants(config)
        .into_iter()
        .filter(|v| v.role == "method" || v.role == "lr-control")
        .collect();
    let bar = progress::bar((config.models.len() * runs.len()) as u64, "trainings");
    let mut rows = Vec::new();
    for model in &config.models {
        for variant in &runs {
            bar.set_message(format!("{} {}", model.slug(), variant.label));
            let out = args
                .out
                .join("learning")
                .join(model.slug())
                .join(variant.slug());
            let summary = match TrainingSummary::read(&out)? {
                Some(done) => done,
                None => {
                    let training = TrainingConfig {
                        model: model.arch,
                        data: config.data.parse().map_err(|e| anyhow!("data: {e}"))?,
                        data_dir: config.data_dir.clone(),
                        methods: variant.methods,
                        epochs: l.epochs,
                        batch_size: l.batch_size,
                        // the variant's factor of the federated lr, applied to training's
                        lr: l.lr * variant.lr / config.lr,
                        folds: l.folds,
                        seed: config.seed,
                        width: model.width,
                        tau: config.tau,
                        d_re: config.d_re,
                        gamma: config.gamma,
                        patience: l.patience,
                        ..TrainingConfig::default()
                    };
                    synfed_lab::train(&training, &out, &device, &mut synfed_lab::training::Quiet)
                        .with_context(|| format!("training {} / {}", model.slug(), variant.label))?
                }
            };
            rows.push(compare_report::LearningRow {
                model: model.slug(),
                methods: variant.label.clone(),
                accuracy_mean: summary.test_accuracy.mean,
                accuracy_std: summary.test_accuracy.std,
                epoch_mean: summary.best_epoch.mean,
                epoch_std: summary.best_epoch.std,
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    compare_report::write_learning(config, &rows, &args.out, &command_line())?;
    println!(
        "learning comparison done; report in {}",
        args.out.join("report.md").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_include_the_controls() {
        let c = CompareConfig {
            methods: vec!["none".parse().unwrap(), "III".parse().unwrap()],
            defences: vec!["prune:p=0.1".into()],
            lr_factors: vec![0.5],
            ..CompareConfig::default()
        };
        let labels: Vec<String> = variants(&c).into_iter().map(|v| v.label).collect();
        assert_eq!(
            labels,
            [
                "none",
                "III",
                "none lr×0.5",
                "none lr×2",
                "none width/2",
                "none + prune:p=0.1"
            ]
        );
        let v = variants(&c);
        assert_eq!(v[3].lr, 0.2);
        assert_eq!(v[4].width_divisor, 2);
        assert_eq!(grid(&c).len(), 6);
        assert!(v
            .iter()
            .all(|v| !v.slug().contains('/') && !v.slug().contains(' ')));
        // without splitting there is nothing to match
        let c = CompareConfig {
            methods: vec!["I".parse().unwrap()],
            ..CompareConfig::default()
        };
        let labels: Vec<String> = variants(&c).into_iter().map(|v| v.label).collect();
        assert_eq!(labels, ["I", "none lr×0.5"]);
    }

    #[test]
    fn default_compares_the_eight_sets_and_parses_back() {
        let c = CompareConfig::default();
        assert_eq!(c.methods.len(), 8);
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<CompareConfig>(&text).unwrap(), c);
        assert!(toml::from_str::<CompareConfig>("batchez = 3").is_err());
    }

    #[test]
    fn shards_parse() {
        assert_eq!(parse_shard("1/3").unwrap(), (1, 3));
        assert!(parse_shard("3/3").is_err());
        assert!(parse_shard("x").is_err());
    }
}
