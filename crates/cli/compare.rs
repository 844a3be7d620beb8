//! `synfed compare`: which combination of synaptic-diversity methods makes a federation harder
//! to attack, and at what cost in accuracy.
//!
//! The engine is [`synfed_lab::comparison`] (the grid of cells, running and resuming them,
//! merging shards, the report); this command reads the comparison's TOML, chooses what runs
//! here (`--kind`, `--models`, `--shard`), joins shard folders (`--merge`, `--partial`) and
//! draws the progress bars.

use crate::device::DeviceChoice;
use crate::progress;
use anyhow::{anyhow, Context, Result};
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::sync::Mutex;
use synfed_lab::comparison::{
    self, Cell, CellProgress, CompareConfig, ComparisonProgress, Kind, Plan, RunOptions,
};

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
    /// The attackers, overriding the configuration's `attacks` (`ig,analytic,dlg,bn-prior,
    /// imprint`): every captured batch is attacked by each, and the report adds the worst case
    /// per image of the honest-but-curious ones (`imprint`, a malicious server, apart).
    #[arg(long, value_delimiter = ',', conflicts_with = "merge")]
    pub attacks: Vec<String>,
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

pub fn run(args: Args) -> Result<()> {
    if !args.merge.is_empty() {
        let merged = comparison::merge(&args.merge, &args.out, args.partial, &command_line())?;
        println!(
            "merged {} cells; report in {}",
            merged.results,
            merged.report.display()
        );
        return Ok(());
    }
    let config = load_config(&args)?;
    comparison::check_models(&config, &args.models).map_err(|e| anyhow!("--models {e}"))?;
    let shard = args
        .shard
        .as_deref()
        .map(comparison::parse_shard)
        .transpose()
        .map_err(|e| anyhow!("--shard {e}"))?;
    let options = RunOptions {
        models: args.models.clone(),
        shard,
        jobs: args.jobs,
        command: command_line(),
    };
    let device = args.device.open()?;
    let bars = Bars {
        out: args.out.clone(),
        cells: Mutex::new(None),
    };
    let outcome = comparison::run(&config, &args.out, &options, &device, &bars)?;
    match (outcome.kind, &outcome.report) {
        (Kind::Learning, Some(report)) => {
            println!("learning comparison done; report in {}", report.display())
        }
        (_, Some(report)) => println!(
            "comparison done in {:.0} s; report in {}",
            outcome.seconds,
            report.display()
        ),
        (_, None) => println!(
            "these cells done in {:.0} s; join the shards with `synfed compare --merge DIR… --out OUT`",
            outcome.seconds
        ),
    }
    Ok(())
}

/// The comparison of `--config` (or the default one) with `--kind` applied, checked.
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
    if !args.attacks.is_empty() {
        config.attacks = args
            .attacks
            .iter()
            .map(|name| name.parse().map_err(|e| anyhow!("--attacks: {e}")))
            .collect::<Result<_>>()?;
    }
    config.validate().context("checking the comparison")?;
    Ok(config)
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// The comparison's bars: one over the cells (or trainings), and one below it per cell at
/// work.
struct Bars {
    out: PathBuf,
    cells: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn with_cells(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(cells) = self.cells.lock() {
            if let Some(bar) = cells.as_ref() {
                f(bar);
            }
        }
    }
}

/// `mlp-w64 III` (with ` trained` for a state of `--kind inversion`).
fn label(cell: &Cell) -> String {
    format!(
        "{} {}{}",
        cell.model.slug(),
        cell.variant.label,
        cell.state.map(|s| format!(" {s}")).unwrap_or_default()
    )
}

impl ComparisonProgress for Bars {
    fn planned(&self, plan: &Plan) {
        println!(
            "comparing {} variants × {} models = {} cells ({} here); output in {}",
            plan.variants,
            plan.models,
            plan.cells,
            plan.here,
            self.out.display()
        );
    }

    fn cells(&self, total: usize, unit: &'static str) {
        if let Ok(mut cells) = self.cells.lock() {
            *cells = Some(progress::bar(total as u64, unit));
        }
    }

    fn cell_started(&self, cell: &Cell) {
        self.with_cells(|bar| bar.set_message(label(cell)));
    }

    fn cell_finished(&self, _cell: &Cell) {
        self.with_cells(|bar| bar.inc(1));
    }

    fn cells_done(&self) {
        self.with_cells(ProgressBar::finish_and_clear);
    }

    fn cell_work(&self, cell: &Cell, steps: u64, unit: &'static str) -> Box<dyn CellProgress> {
        let bar = progress::bar(steps, unit);
        let label = format!("{} {}", cell.model.slug(), cell.variant.label);
        bar.set_message(match cell.state {
            Some(state) => format!("{label} {state}"),
            None => label.clone(),
        });
        Box::new(CellBar { bar, label })
    }
}

/// The bar of one cell at work, cleared when the cell is done with it.
struct CellBar {
    bar: ProgressBar,
    /// `model variant`.
    label: String,
}

impl CellProgress for CellBar {
    fn epoch(&self, epoch: usize, loss: f64) {
        self.bar.set_message(format!(
            "{} training epoch {epoch}: loss {loss:.4}",
            self.label
        ));
    }

    fn step(&self) {
        self.bar.inc(1);
    }
}

impl Drop for CellBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
