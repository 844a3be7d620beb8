//! The Table-3-style attack tables: rows = variants, columns = model × state, one table per
//! measure (PSNR, MSE, MSE in the normalised input space, SSIM, the attacker's label accuracy).

use super::paired::Significant;
use crate::comparison::cell_result::CellResult;
use crate::comparison::collect::Located;
use crate::comparison::config::CompareConfig;
use crate::comparison::estimate::Estimate;
use std::fmt::Write as _;

/// The attack tables, under their heading; a most private value is bold only where it
/// differs from `none`'s significantly (`significant`).
pub fn attack_tables(
    config: &CompareConfig,
    cells: &[Located],
    significant: &Significant,
) -> String {
    let mut md = String::from("## Attack success\n\n");
    md.push_str(&attack_table(
        config,
        cells,
        significant,
        "PSNR of the reconstructions (dB; lower = more private)",
        &|c, s| c.estimate(s, |a| a.psnr),
        true,
        2,
    ));
    md.push('\n');
    md.push_str(&attack_table(
        config,
        cells,
        significant,
        "MSE of the reconstructions (images in [0, 1]; higher = more private)",
        &|c, s| c.estimate(s, |a| a.mse),
        false,
        4,
    ));
    md.push('\n');
    md.push_str(&attack_table(
        config,
        cells,
        significant,
        "MSE in the normalised input space (the paper's Table 3 quantity; higher = more private)",
        &|c, s| c.estimate(s, |a| a.mse_normalized),
        false,
        3,
    ));
    md.push('\n');
    md.push_str(&attack_table(
        config,
        cells,
        significant,
        "SSIM (lower = more private)",
        &|c, s| c.estimate(s, |a| a.ssim),
        true,
        3,
    ));
    md.push('\n');
    md.push_str(&attack_table(
        config,
        cells,
        significant,
        "Label accuracy of the attacker (lower = more private)",
        &|c, s| c.estimate(s, |a| a.label_accuracy),
        true,
        2,
    ));
    md.push('\n');

    md
}

/// A Table-3-style table: rows = variants, columns = model × state, `metric` per cell; the most
/// private value per column (lowest PSNR/SSIM, highest MSE) in bold only where that variant's
/// PSNR differs from `none`'s significantly (`significant`, from [`super::paired::paired_tests`]).
fn attack_table(
    config: &CompareConfig,
    cells: &[Located],
    significant: &Significant,
    title: &str,
    metric: &dyn Fn(&CellResult, &str) -> Estimate,
    lower_is_private: bool,
    digits: usize,
) -> String {
    let models: Vec<String> = config.models.iter().map(|m| m.slug()).collect();
    let columns: Vec<(String, &str)> = models
        .iter()
        .flat_map(|m| config.states().into_iter().map(move |s| (m.clone(), s)))
        .collect();
    let variants = super::measures::variant_labels(cells);
    let value = |variant: &str, (model, state): &(String, &str)| {
        cells
            .iter()
            .find(|l| l.result.variant.label == variant && l.result.model.slug() == *model)
            .map(|l| metric(&l.result, state))
    };
    let best: Vec<Option<f64>> = columns
        .iter()
        .map(|col| {
            let vals = variants
                .iter()
                .filter_map(|v| value(v, col))
                .map(|e| e.mean)
                .filter(|m| m.is_finite());
            if lower_is_private {
                vals.reduce(f64::min)
            } else {
                vals.reduce(f64::max)
            }
        })
        .collect();
    let mut t = format!("### {title}\n\n| variant |");
    for (m, s) in &columns {
        let _ = write!(t, " {m} {s} |");
    }
    t.push_str("\n|---|");
    for _ in &columns {
        t.push_str("---:|");
    }
    t.push('\n');
    for v in &variants {
        let _ = write!(t, "| {v} |");
        for (col, b) in columns.iter().zip(&best) {
            let detectable = significant.contains(&(v.to_string(), col.0.clone(), col.1));
            match value(v, col) {
                Some(e) if Some(e.mean) == *b && detectable => {
                    let _ = write!(t, " **{}** |", e.display(digits));
                }
                Some(e) => {
                    let _ = write!(t, " {} |", e.display(digits));
                }
                None => t.push_str(" — |"),
            }
        }
        t.push('\n');
    }
    t
}
