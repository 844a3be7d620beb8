//! The outputs of a privacy or inversion comparison: `results.csv`, `results.json`,
//! `report.md` (the protocol, Table-3-style attack tables, paired tests, convergence, utility,
//! the paper's values where asked for), comparison grids (the same attacked batch
//! reconstructed under every variant) and charts. `--kind learning` has its own, smaller
//! report ([`learning`]).
//!
//! Everything here is a pure function of the collected cells and the configuration, so that a
//! merge of shards writes the very bytes an unsharded run does.

mod charts;
mod convergence;
mod grids;
pub mod learning;
mod measures;
mod paired;
mod protocol;
mod results;
mod tables;
mod utility;

pub use measures::SUCCESS_SSIM;
pub use utility::{epsilon_of, DELTA};

use super::collect::Located;
use super::config::{CompareConfig, Kind};
use super::error::{ComparisonError, Result};
use super::paper_table3;
use std::fmt::Write as _;
use std::path::Path;

/// Writes every output of a privacy or inversion comparison into `out`: `results.csv`,
/// `results.json`, `pictures/` and `report.md` of `cells` (`missing`: unfinished cells an
/// interim report names; `train_examples`: for the DP accountant).
pub fn write(
    config: &CompareConfig,
    cells: &[Located],
    missing: &[String],
    out: &Path,
    command: &str,
    train_examples: usize,
) -> Result<()> {
    results::write_results(config, cells, out, command)?;
    let pictures = out.join("pictures");
    std::fs::create_dir_all(&pictures)
        .map_err(|e| ComparisonError::io("creating", &pictures, e))?;

    let mut md = String::from("# synfed compare: privacy of method combinations\n\n");
    let _ = writeln!(md, "Command: `{command}`\n");
    if !missing.is_empty() {
        let _ = writeln!(
            md,
            "**Interim report: {} cells are not finished** ({}); the tables below hold the \
             finished ones.\n",
            missing.len(),
            missing.join(", ")
        );
    }
    md.push_str(&protocol::protocol(config));
    let (paired, significant) = paired::paired_tests(config, cells);
    md.push_str(&tables::attack_tables(config, cells, &significant));
    md.push_str(
        "## Paired tests\n\nEvery variant attacks the same batches as `none`, so each variant is \
         compared with `none` batch by batch: Wilcoxon's signed-rank test of the per-batch PSNR \
         (exact reconstructions at 100 dB), two-sided, Holm-adjusted over the rows of each table; \
         a verdict only where the adjusted p < 0.05, otherwise \"no detectable difference\". \
         Attack success: SSIM ≥ 0.5, with Wilson's 95 % interval. The tables above bold a most \
         private value only where it is such a significant difference.\n\n",
    );
    md.push_str(&paired);
    md.push_str(&convergence::convergence(cells));
    if config.paper_table3 {
        md.push_str(&paper_table3::side_by_side(config, cells));
    }
    if config.kind == Kind::Inversion {
        md.push_str(&utility::held_out_accuracy(config, cells));
    }
    if config.kind == Kind::Privacy && config.rounds > 0 {
        md.push_str(&utility::after_rounds(config, cells, train_examples));
        md.push_str(&charts::plots(config, cells, &pictures)?);
    }

    md.push_str("## Pictures\n\nThe batch of client 0 (top row, labelled `truth`) and its reconstruction under each variant (one row below it per variant, labelled with the variant; for batches of one image: one labelled column each, the truth first).\n\n");
    for m in &config.models {
        for state in config.states() {
            let name = format!("grid-{}-{state}.png", m.slug());
            let model_cells: Vec<&Located> = cells
                .iter()
                .filter(|l| l.result.model.slug() == m.slug())
                .collect();
            if grids::compose_grid(&model_cells, state, &pictures.join(&name))? {
                let _ = writeln!(
                    md,
                    "**{} {state}**\n\n![{name}](pictures/{name})\n",
                    m.slug()
                );
            }
        }
        if config.kind == Kind::Privacy && config.rounds > 0 {
            md.push_str(&charts::accuracy_over_rounds(m, cells, &pictures)?);
        }
    }
    let path = out.join("report.md");
    std::fs::write(&path, md).map_err(|e| ComparisonError::io("writing", &path, e))
}
