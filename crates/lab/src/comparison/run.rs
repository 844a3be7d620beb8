//! A comparison from its configuration to its report: the configuration saved into the output
//! folder (a rerun continues the same comparison and refuses another), the cells chosen to run
//! here, run (finished ones read back), collected and reported. A run of only some cells — a
//! shard, or some models — leaves the report to [`super::merge`].

use super::cells::run_cells;
use super::collect::collect;
use super::config::{CompareConfig, Kind};
use super::error::Result;
use super::grid::{check_models, choose, grid};
use super::progress::{ComparisonProgress, Plan};
use super::variants::variants;
use super::{learning, report};
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How much of a comparison runs here, and how.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Run only the cells of these models (slugs as in the report: `mlp`, `mlp-w64`); empty:
    /// every model.
    pub models: Vec<String>,
    /// `(i, n)`: run only cells i, i + n, i + 2n, … (see [`super::parse_shard`]).
    pub shard: Option<(usize, usize)>,
    /// Cells computed at the same time.
    pub jobs: usize,
    /// The command line, quoted in the report and the result files.
    pub command: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            shard: None,
            jobs: 1,
            command: String::new(),
        }
    }
}

impl RunOptions {
    /// Whether only part of the cells runs here (then there is no report).
    pub fn is_partial(&self) -> bool {
        self.shard.is_some() || !self.models.is_empty()
    }
}

/// What a finished run did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub kind: Kind,
    /// `report.md`, or `None` when only part of the cells ran here.
    pub report: Option<PathBuf>,
    /// Seconds from the first cell to the report.
    pub seconds: f64,
}

/// Runs the comparison `config` into `out` on `device`: every cell (or the part of them that
/// `options` chooses) and, when all ran here, the results and the report.
pub fn run(
    config: &CompareConfig,
    out: &Path,
    options: &RunOptions,
    device: &Device,
    progress: &dyn ComparisonProgress,
) -> Result<Outcome> {
    config.validate()?;
    check_models(config, &options.models)?;
    config.save(out)?;
    if config.kind == Kind::Learning {
        let started = Instant::now();
        learning::run(config, out, &options.command, device, progress)?;
        return Ok(Outcome {
            kind: config.kind,
            report: Some(out.join("report.md")),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let splits = match config.kind {
        Kind::Inversion => Some(config.splits()?),
        _ => None,
    };
    let cells = grid(config);
    let mine = choose(&cells, &options.models, options.shard);
    progress.planned(&Plan {
        variants: variants(config).len(),
        models: config.models.len(),
        cells: cells.len(),
        here: mine.len(),
    });
    let started = Instant::now();
    run_cells(
        config,
        &mine,
        out,
        options.jobs.max(1),
        device,
        splits.as_ref(),
        progress,
    )?;
    if options.is_partial() {
        return Ok(Outcome {
            kind: config.kind,
            report: None,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let (results, missing) = collect(&cells, std::slice::from_ref(&out.to_path_buf()), false)?;
    report::write(
        config,
        &results,
        &missing,
        out,
        &options.command,
        config.train_examples()?,
    )?;
    Ok(Outcome {
        kind: config.kind,
        report: Some(out.join("report.md")),
        seconds: started.elapsed().as_secs_f64(),
    })
}
