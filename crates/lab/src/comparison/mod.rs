//! Which combination of synaptic-diversity methods makes a model harder to attack, and at what
//! cost in accuracy: the engine behind `synfed compare`.
//!
//! A comparison is a grid of *cells*: every [`Variant`] (a method set, an LR- or width-matched
//! baseline, or a method set under a defence) × every model. [`Kind::Privacy`] runs each cell
//! as a federation whose tap captures K clients' updates before and after training, and
//! attacks every capture; [`Kind::Inversion`] attacks centrally built (and trained) models on
//! fixed held-out batches, the paper's Table 3 protocol; [`Kind::Learning`] trains centrally
//! per method set (the paper's Tables 1–2). All cells share the seed, the data and the
//! attacker's seed, so that two cells differ only in what is compared. Every attacked batch is
//! attacked by each attacker of [`CompareConfig::attacks`] that applies to the cell's model
//! ([`inapplicable`]), and with several the report adds the worst case per image
//! ([`report::WorstCase`]).
//!
//! A cell is the unit of work and of resuming: a finished cell writes `cell.json` into its
//! folder and a rerun skips it, so a killed comparison continues where it stopped. Cells can
//! be split among machines — a shard `i/n` runs every n-th cell, [`RunOptions::models`] some
//! models — and the folders joined by [`merge`] into the report an unsharded [`run()`] writes.
//! What runs is reported through [`ComparisonProgress`], so that the binary can draw bars.

mod applicability;
mod cell_result;
mod cells;
mod collect;
mod config;
mod error;
mod estimate;
mod federated_cell;
mod grid;
mod inversion_cell;
mod learning;
mod merge;
mod paper_table3;
mod progress;
pub mod report;
mod run;
mod variants;

pub use applicability::inapplicable;
pub use cell_result::{AttackRecord, CellResult, Skipped};
pub use collect::{collect, Located};
pub use config::{CompareConfig, Kind, LearningConfig, ModelEntry, CONFIG_FILE};
pub use error::{ComparisonError, Result};
pub use estimate::{t_quantile_975, Estimate};
pub use grid::{check_models, choose, grid, parse_shard, Cell};
pub use merge::{merge, Merged};
pub use paper_table3::{paper_value, side_by_side, synfed_value};
pub use progress::{CellProgress, ComparisonProgress, Plan, Quiet};
pub use run::{run, Outcome, RunOptions};
pub use variants::{untrained_twin, variants, Variant};
