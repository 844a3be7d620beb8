//! Gathering finished cells from output folders — the run's own, or the folders of shards
//! computed elsewhere — into the results a report is written from: a cell's twin takes its
//! representative's attacks under its own label, and the states of a `--kind inversion`
//! variant become one result.

use super::cell_result::CellResult;
use super::error::{ComparisonError, Result};
use super::grid::Cell;
use std::path::PathBuf;

/// A finished cell and the folder it was computed in.
pub struct Located {
    pub result: CellResult,
    /// The variant's folder.
    pub dir: PathBuf,
    /// `--kind inversion`: each state's folder (they may come from different shards).
    pub state_dirs: Vec<(String, PathBuf)>,
    /// The attack's subfolder of `attack/` whose pictures the report shows (`None`: a
    /// comparison of one attack, whose results lie in `attack/` itself).
    pub attack_folder: Option<String>,
}

impl Located {
    /// The folder of the attack on the first batch (client 0) in `state`.
    pub fn first_attack_dir(&self, state: &str) -> PathBuf {
        let (dir, batch) = match self.state_dirs.iter().find(|(s, _)| s == state) {
            Some((_, dir)) => (dir, "batch-0".to_string()),
            None => (&self.dir, format!("{state}-client-0")),
        };
        let root = dir.join("attack");
        match &self.attack_folder {
            Some(folder) => root.join(folder).join(batch),
            None => root.join(batch),
        }
    }
}

/// The finished cells of `all`, looked up in `dirs` (the run's folder or shard folders);
/// the states of a `--kind inversion` variant are joined into one result. Unfinished cells
/// are an error unless `partial`, which returns them (`model / variant[ / state]`) as the
/// second value.
pub fn collect(
    all: &[Cell],
    dirs: &[PathBuf],
    partial: bool,
) -> Result<(Vec<Located>, Vec<String>)> {
    let mut results: Vec<Located> = Vec::new();
    let mut missing = Vec::new();
    for cell in all {
        // a twin's result is its representative's, relabelled
        let source = match cell.same_as.and_then(|k| all.iter().find(|c| c.index == k)) {
            Some(representative) => representative,
            None => cell,
        };
        let found = dirs
            .iter()
            .find(|d| source.dir(d).join("cell.json").exists());
        let Some(root) = found else {
            missing.push(cell.name());
            continue;
        };
        let path = source.dir(root).join("cell.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| ComparisonError::io("reading", &path, e))?;
        let mut result: CellResult =
            serde_json::from_str(&text).map_err(|e| ComparisonError::parse(&path, e))?;
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
                        // one state's time unknown: the sum is unknown too
                        _ => None,
                    };
                l.result.seconds += result.seconds;
                for s in result.skipped {
                    if !l.result.skipped.contains(&s) {
                        l.result.skipped.push(s);
                    }
                }
                l.state_dirs.push(state_dir);
            }
            (_, state_dir) => results.push(Located {
                dir: cell.variant_dir(root),
                state_dirs: state_dir.into_iter().collect(),
                attack_folder: None,
                result,
            }),
        }
    }
    if !missing.is_empty() && !partial {
        return Err(ComparisonError::Unfinished(missing));
    }
    Ok((results, missing))
}
