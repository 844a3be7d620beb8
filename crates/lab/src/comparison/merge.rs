//! Joining the folders of a comparison computed in parts — shards of a batch scheduler, or
//! models given to different machines — into the one report an unsharded run writes, or, for
//! a comparison still running, an interim report of the cells finished so far.

use super::collect::collect;
use super::config::{CompareConfig, CONFIG_FILE};
use super::error::{ComparisonError, Result};
use super::grid::grid;
use super::report;
use std::path::{Path, PathBuf};

/// What [`merge`] joined.
#[derive(Clone, Debug)]
pub struct Merged {
    /// Results in the report (variant × model).
    pub results: usize,
    /// Cells without a result (`partial` only).
    pub missing: Vec<String>,
    pub report: PathBuf,
}

/// Joins the folders `dirs` (shards of one comparison, which must hold the same
/// `compare.toml`) into `out`: their configuration, and the report of their cells. Unfinished
/// cells are an error unless `partial`, which writes an interim report of the finished ones.
/// `command` is quoted in the report.
pub fn merge(dirs: &[PathBuf], out: &Path, partial: bool, command: &str) -> Result<Merged> {
    let Some(first) = dirs.first() else {
        return Err(ComparisonError::NothingToMerge);
    };
    let (config, text) = CompareConfig::read_saved(first)?;
    for dir in &dirs[1..] {
        let path = dir.join(CONFIG_FILE);
        let other =
            std::fs::read_to_string(&path).map_err(|e| ComparisonError::io("reading", &path, e))?;
        if other != text {
            return Err(ComparisonError::DifferentComparisons {
                path,
                first: first.clone(),
            });
        }
    }
    std::fs::create_dir_all(out).map_err(|e| ComparisonError::io("creating", out, e))?;
    let saved = out.join(CONFIG_FILE);
    std::fs::write(&saved, text).map_err(|e| ComparisonError::io("writing", &saved, e))?;
    let (results, missing) = collect(&grid(&config), dirs, partial)?;
    report::write(
        &config,
        &results,
        &missing,
        out,
        command,
        config.train_examples()?,
    )?;
    Ok(Merged {
        results: results.len(),
        missing,
        report: out.join("report.md"),
    })
}
