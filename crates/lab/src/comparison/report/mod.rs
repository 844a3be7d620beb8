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
    // the worst case is an honest-but-curious server's: a malicious one (`imprint`) is
    // another threat model, reported apart
    let honest: Vec<AttackKind> = views
        .iter()
        .map(|(a, _)| *a)
        .filter(|a| !a.is_malicious())
        .collect();
    let worst = (honest.len() > 1).then(|| worst_case::worst_case(&honest, cells));
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
        if config.attacks.iter().any(|a| a.is_malicious()) {
            md.push_str(MALICIOUS_APART);
        }
    }
    for (attack, view) in &views {
        let section = attack_section(config, view);
        if attack.is_malicious() {
            let _ = writeln!(md, "## Attack `{attack}`: a malicious server\n");
            md.push_str(&malicious_server(config));
            md.push_str(&demote(&section));
        } else if several {
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
        // the honest-but-curious server's view: its worst case, or its one attack
        let first_honest = views
            .iter()
            .find(|(a, _)| !a.is_malicious())
            .or(views.first());
        let plotted = match (&worst, first_honest) {
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

/// How a comparison with a malicious server's attack reads, after the list of attacks.
const MALICIOUS_APART: &str = "`imprint` is a malicious server, another threat model than the \
honest-but-curious server of the other attacks: its section says what it assumes, and it is \
left out of the worst case per image. ";

/// What the malicious server's attack assumes and does, at the top of its section.
fn malicious_server(config: &CompareConfig) -> String {
    let how = match config.kind {
        Kind::Privacy => {
            "Each cell runs its federations again with `[tap] mode = \"imprint\"`: in the \
             captured round the attacked clients download a global model whose first layer the \
             server rewrote, and their updates are left out of that round's aggregate"
        }
        _ => {
            "Before each batch is captured, the attacked model's first layer is rewritten as the \
             server would send it, with its bins on the brightness of the training split's images \
             (which do not include the attacked ones)"
        }
    };
    format!(
        "Threat model: the server is **malicious** (Fowl et al., *Robbing the Fed*, ICLR 2022). \
         It assumes that clients compute on whatever model they are sent, and it needs a fully \
         connected first layer (cells without one skip it). Its imprint makes the first layer's \
         units bins of the images' mean brightness, with thresholds at the quantiles of the \
         brightness over images the server holds, and gives the imprinted units the same \
         column in the next layer; an image alone in its bin is read back exactly from the \
         difference of neighbouring units' gradients, and images that share a bin come back as \
         one mixture. {how}. The mechanisms do not change this readout by construction: weight \
         splitting (III) is imprinted on every replica of a unit, rejuvenation (II) acts after \
         the update; fuzzy learning rates (I) change it only where the client scales its own \
         update (`fuzzy_at = \"client\"`).\n\n"
    )
}

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
        "## Worst case per image\n\nPer attacked image and per measure, the honest-but-curious \
         attacker's best over every attack that ran (a malicious server's `imprint` is not \
         among them): the highest PSNR and SSIM and the lowest MSE (each measure \
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
