//! What a running comparison tells its caller, so that the binary can draw its progress bars
//! (and a test or a script can stay quiet with [`Quiet`]) without the library knowing about
//! terminals. Cells may run on several threads at once: the reporter is shared between them,
//! and each cell's own work gets a tracker of its own.

use super::grid::Cell;

/// How much of a comparison will run here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Rows of the comparison.
    pub variants: usize,
    pub models: usize,
    /// Cells of the whole grid.
    pub cells: usize,
    /// Cells run here (a shard's, or those of the chosen models; else all).
    pub here: usize,
}

/// Receives a comparison's progress. Every method does nothing unless implemented.
pub trait ComparisonProgress: Sync {
    /// The grid is laid out and `plan.here` of its cells are about to run.
    fn planned(&self, _plan: &Plan) {}
    /// `total` cells (of `--kind learning`: trainings, `unit` says which) will be gone through.
    fn cells(&self, _total: usize, _unit: &'static str) {}
    /// A cell starts (a finished one is only read).
    fn cell_started(&self, _cell: &Cell) {}
    /// A cell is done: computed, read back, or left to the earlier cell it equals.
    fn cell_finished(&self, _cell: &Cell) {}
    /// Every cell has been gone through.
    fn cells_done(&self) {}
    /// The work inside `cell` begins: `steps` steps of `unit` (`attacks`, or the attacks'
    /// `iterations`). The cell reports to the returned tracker, and drops it when it is done.
    fn cell_work(&self, _cell: &Cell, _steps: u64, _unit: &'static str) -> Box<dyn CellProgress> {
        Box::new(Quiet)
    }
}

/// Receives the progress inside one cell.
pub trait CellProgress {
    /// An epoch of the cell's centralized training ended with mean training loss `loss`.
    fn epoch(&self, _epoch: usize, _loss: f64) {}
    /// One more step (an attack, or an attack's iteration) is done.
    fn step(&self) {}
}

/// Reports nothing.
pub struct Quiet;

impl ComparisonProgress for Quiet {}

impl CellProgress for Quiet {}
