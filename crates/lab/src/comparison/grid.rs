//! The grid of cells — every variant × every model (× every model state for `--kind
//! inversion`) — and the folders they live in. A cell is the unit of work, of resuming (a
//! finished cell keeps `cell.json` in its folder) and of distribution: a shard `i/n` runs every
//! n-th cell, a machine may run only some models, and their folders are merged afterwards.

use super::config::{CompareConfig, Kind, ModelEntry};
use super::error::{ComparisonError, Result};
use super::variants::{untrained_twin, variants, Variant};
use std::path::{Path, PathBuf};

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

    /// `model / variant[ / state]`, as lists of cells name it.
    pub fn name(&self) -> String {
        format!(
            "{} / {}{}",
            self.model.slug(),
            self.variant.label,
            self.state.map(|s| format!(" / {s}")).unwrap_or_default()
        )
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

/// A shard `i/n` (0 ≤ i < n): the cells whose index is i modulo n.
pub fn parse_shard(text: &str) -> Result<(usize, usize)> {
    let bad = || ComparisonError::Shard(text.into());
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

/// Checks that every slug of `models` names a model of the comparison.
pub fn check_models(c: &CompareConfig, models: &[String]) -> Result<()> {
    for slug in models {
        if !c.models.iter().any(|m| m.slug() == *slug) {
            return Err(ComparisonError::UnknownModel {
                slug: slug.clone(),
                available: c.models.iter().map(ModelEntry::slug).collect(),
            });
        }
    }
    Ok(())
}

/// The cells of `cells` that run here: those of `models` (slugs; empty: all), and of those
/// the shard's (`(i, n)`: every n-th from i).
pub fn choose(cells: &[Cell], models: &[String], shard: Option<(usize, usize)>) -> Vec<Cell> {
    cells
        .iter()
        .filter(|c| models.is_empty() || models.contains(&c.model.slug()))
        .filter(|c| shard.is_none_or(|(i, n)| c.index % n == i))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse() {
        assert_eq!(parse_shard("1/3").unwrap(), (1, 3));
        assert!(parse_shard("3/3").is_err());
        assert!(parse_shard("x").is_err());
    }
}
