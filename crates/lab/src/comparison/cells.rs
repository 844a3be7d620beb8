//! Running a set of cells, `jobs` at a time on threads of their own (each with the GPU's
//! driver context current), finished ones only read back; the first failure stops the others
//! from taking new cells and is the run's error. Cells that equal an earlier cell
//! ([`Cell::same_as`]) are not run.

use super::config::CompareConfig;
use super::error::{ComparisonError, Result};
use super::grid::Cell;
use super::progress::ComparisonProgress;
use super::{federated_cell, inversion_cell};
use candle_core::Device;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `cells` into `out` (skipping finished ones), `jobs` at a time: federations, or with
/// `splits` the states of `--kind inversion`.
pub(super) fn run_cells(
    config: &CompareConfig,
    cells: &[Cell],
    out: &Path,
    jobs: usize,
    device: &Device,
    splits: Option<&synfed_data::Splits>,
    progress: &dyn ComparisonProgress,
) -> Result<()> {
    progress.cells(cells.len(), "cells");
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<ComparisonError>> = Mutex::new(None);
    let fail = |e: ComparisonError| {
        if let Ok(mut f) = failure.lock() {
            f.get_or_insert(e);
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(cells.len()).max(1) {
            scope.spawn(|| loop {
                if let Err(e) = synfed_synapse::cuda_context::bind(device) {
                    fail(crate::LabError::from(e).into());
                    return;
                }
                if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(cell) = cells.get(i) else { return };
                if cell.same_as.is_some() {
                    progress.cell_finished(cell);
                    continue;
                }
                progress.cell_started(cell);
                let finished = match splits {
                    Some(splits) => {
                        inversion_cell::run(config, cell, out, device, splits, progress)
                    }
                    None => federated_cell::run(config, cell, out, device, progress),
                };
                match finished {
                    Ok(_) => progress.cell_finished(cell),
                    Err(e) => {
                        fail(ComparisonError::Cell {
                            model: cell.model.slug(),
                            variant: cell.variant.label.clone(),
                            source: Box::new(e),
                        });
                        return;
                    }
                }
            });
        }
    });
    progress.cells_done();
    match failure.into_inner().unwrap_or(None) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
