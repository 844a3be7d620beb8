//! The outputs of a privacy or inversion comparison: `results.csv`, `results.json`,
//! `report.md` (the protocol, Table-3-style attack tables, paired tests, convergence, utility,
//! the paper's values where asked for; with several attacks, each attack's tables and the worst
//! case per image), comparison grids (the same attacked batch
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
mod worst_case;

pub use measures::SUCCESS_SSIM;
pub use utility::{epsilon_of, DELTA};
pub use worst_case::{attack_view, worst_case, Wins, WorstCase};

use super::collect::Located;
use super::config::{CompareConfig, Kind};
use super::error::{ComparisonError, Result};
use super::paper_table3;
use std::fmt::Write as _;
use std::path::Path;
use synfed_attack::AttackKind;

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
    let several = config.attacks.len() > 1;
    // each attack's records (and pictures) on their own, then the worst case per image
    // (an attack that applied to no cell has no section; "Attacks not run" says why)
    let mut views: Vec<(AttackKind, Vec<Located>)> = config
        .attacks
        .iter()
        .map(|&a| {
            let folder = several.then(|| a.as_str().to_string());
            (a, worst_case::attack_view(cells, a, folder))
        })
        .collect();
    let ran = |v: &[Located]| v.iter().any(|l| !l.result.attacks.is_empty());
    if views.iter().any(|(_, v)| ran(v)) {
        views.retain(|(_, v)| ran(v));
    }
    let ran: Vec<AttackKind> = views.iter().map(|(a, _)| *a).collect();
    let worst = several.then(|| worst_case::worst_case(&ran, cells));
    let mut sections: Vec<(&str, &[Located])> = views
        .iter()
        .map(|(a, v)| (a.as_str(), v.as_slice()))
        .collect();
    if let Some(w) = &worst {
        sections.push((WORST_CASE, &w.cells));
    }
    results::write_results(config, &sections, out, command)?;
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
    md.push_str(&skipped(cells));
    if several {
        let names: Vec<String> = config.attacks.iter().map(|a| format!("`{a}`")).collect();
        let _ = write!(
            md,
            "Attacks: {}, each on every attacked batch (`analytic` is closed-form: no \
             iterations). ",
            names.join(", ")
        );
        md.push_str(PAIRED_TESTS_OF_EACH);
        md.push_str(&PAIRED_TESTS.replace("The tables above", "The tables"));
    }
    for (attack, view) in &views {
        let section = attack_section(config, view);
        if several {
            let _ = writeln!(md, "## Attack `{attack}`\n");
            md.push_str(&demote(&section));
        } else {
            md.push_str(&section);
        }
    }
    if let Some(w) = &worst {
        md.push_str(&worst_case_section(config, w));
    }
    md.push_str(&convergence::convergence(cells));
    // the paper's values were measured with Inverting Gradients
    let reference = views
        .iter()
        .find(|(a, _)| *a == AttackKind::Ig)
        .or(views.first());
    if let (true, Some((_, view))) = (config.paper_table3, reference) {
        md.push_str(&paper_table3::side_by_side(config, view));
    }
    if config.kind == Kind::Inversion {
        md.push_str(&utility::held_out_accuracy(config, cells));
    }
    // a trained state: federated rounds, or a pretrained model (then perhaps no rounds)
    let trained = config.states().contains(&"trained");
    if config.kind == Kind::Privacy && trained {
        md.push_str(&utility::after_rounds(config, cells, train_examples));
        let plotted = match (&worst, views.first()) {
            (Some(w), _) => &w.cells,
            (None, Some((_, view))) => view,
            (None, None) => cells,
        };
        md.push_str(&charts::plots(config, plotted, &pictures, worst.is_some())?);
    }

    md.push_str("## Pictures\n\nThe batch of client 0 (top row, labelled `truth`) and its reconstruction under each variant (one row below it per variant, labelled with the variant; for batches of one image: one labelled column each, the truth first).\n\n");
    for m in &config.models {
        for state in config.states() {
            for (attack, view) in &views {
                let name = if several {
                    format!("grid-{}-{state}-{attack}.png", m.slug())
                } else {
                    format!("grid-{}-{state}.png", m.slug())
                };
                let model_cells: Vec<&Located> = view
                    .iter()
                    .filter(|l| l.result.model.slug() == m.slug())
                    .collect();
                if grids::compose_grid(&model_cells, state, &pictures.join(&name))? {
                    let under = if several {
                        format!(", `{attack}`")
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        md,
                        "**{} {state}{under}**\n\n![{name}](pictures/{name})\n",
                        m.slug()
                    );
                }
            }
        }
        if config.kind == Kind::Privacy && config.rounds > 0 {
            md.push_str(&charts::accuracy_over_rounds(m, cells, &pictures)?);
        }
    }
    let path = out.join("report.md");
    std::fs::write(&path, md).map_err(|e| ComparisonError::io("writing", &path, e))
}

/// The attack name of the worst-case rows of the result files.
pub const WORST_CASE: &str = "worst-case";

const PAIRED_TESTS: &str = "Every variant attacks the same batches as `none`, so each variant is \
compared with `none` batch by batch: Wilcoxon's signed-rank test of the per-batch PSNR \
(exact reconstructions at 100 dB), two-sided, Holm-adjusted over the rows of each table; \
a verdict only where the adjusted p < 0.05, otherwise \"no detectable difference\". \
Attack success: SSIM ≥ 0.5, with Wilson's 95 % interval. The tables above bold a most \
private value only where it is such a significant difference.\n\n";

/// What the paired tests are, before the attacks' sections when there are several.
const PAIRED_TESTS_OF_EACH: &str = "Each attack's section below, and the worst case's, has the \
attack tables and the paired tests of its values. ";

/// The attack tables and paired tests of the records of `cells`.
fn attack_section(config: &CompareConfig, cells: &[Located]) -> String {
    let (paired, significant) = paired::paired_tests(config, cells);
    let mut md = tables::attack_tables(config, cells, &significant);
    md.push_str("## Paired tests\n\n");
    if config.attacks.len() == 1 {
        md.push_str(PAIRED_TESTS);
    }
    md.push_str(&paired);
    md
}

/// The worst case per image: which attack gave it how often, and its tables.
fn worst_case_section(config: &CompareConfig, w: &worst_case::WorstCase) -> String {
    let mut md = String::from(
        "## Worst case per image\n\nPer attacked image and per measure, the attacker's best \
         over every attack that ran: the highest PSNR and SSIM and the lowest MSE (each measure \
         on its own; MSE in the normalised space and label accuracy per batch), averaged over \
         the batch as an attack's scores are. These are the values a user must assume when the \
         attacker may choose the attack. Images whose best value each attack gave (ties to the \
         attack listed first):\n\n| attack | best PSNR | best SSIM | lowest MSE |\n|---|---:|---:|---:|\n",
    );
    for (attack, wins) in &w.wins {
        let _ = writeln!(
            md,
            "| {attack} | {} | {} | {} |",
            wins.psnr, wins.ssim, wins.mse
        );
    }
    md.push('\n');
    md.push_str(&demote(&attack_section(config, &w.cells)));
    md
}

/// The attacks that did not run on some cells, and why.
fn skipped(cells: &[Located]) -> String {
    let mut rows = String::new();
    for l in cells {
        for s in &l.result.skipped {
            let _ = writeln!(
                rows,
                "| {} | {} | {} | {} |",
                l.result.model.slug(),
                l.result.variant.label,
                s.attack,
                s.reason
            );
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "## Attacks not run\n\nThese attacks do not apply to these cells' models and were \
         skipped; their tables leave the cells out.\n\n| model | variant | attack | why |\n\
         |---|---|---|---|\n{rows}\n"
    )
}

/// `md` with every heading one level deeper (a section's tables under an attack's heading).
fn demote(md: &str) -> String {
    md.lines()
        .map(|line| {
            if line.starts_with('#') {
                format!("#{line}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}
