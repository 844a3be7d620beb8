//! Which differences between variants are real: every variant attacks the same batches as
//! `none`, so each is compared with `none` batch by batch (Wilcoxon's signed-rank test of the
//! per-batch PSNR, Holm-adjusted over a table's rows), and every splitting set also with its
//! matched controls, which tell a mechanism's effect from a changed learning rate or width.
//! The attack tables bold a value only where it is such a significant difference.

use super::measures::{psnr_by_client, SUCCESS_SSIM};
use crate::comparison::cell_result::CellResult;
use crate::comparison::collect::Located;
use crate::comparison::config::CompareConfig;
use crate::statistics::{holm, wilcoxon_signed_rank, Spread, SuccessRate};
use std::collections::HashSet;
use std::fmt::Write as _;

/// Family-wise level of the paired tests (Holm-adjusted over the rows of a table).
const ALPHA: f64 = 0.05;

/// `(variant, model, state)` of the cells whose PSNR differs from `none`'s significantly.
pub type Significant = HashSet<(String, String, &'static str)>;

/// The paired tests of every variant against `none` on the same batches, one table per model
/// and state: median PSNR with quartiles, attack success rate (SSIM ≥ [`SUCCESS_SSIM`]), the
/// median paired PSNR difference, Wilcoxon's two-sided p and its Holm adjustment over the
/// table's rows, and the verdict. Then every splitting set against its matched controls
/// (`none lr×Γ`, `none width/Γ`), which tell a mechanism's effect from a changed effective
/// learning rate or number of distinct units. Returns the markdown and the cells significant
/// against `none`.
pub fn paired_tests(config: &CompareConfig, cells: &[Located]) -> (String, Significant) {
    let mut md = String::new();
    let mut significant = Significant::new();
    for model in &config.models {
        let slug = model.slug();
        let of_model: Vec<&CellResult> = cells
            .iter()
            .map(|l| &l.result)
            .filter(|c| c.model.slug() == slug)
            .collect();
        let Some(baseline) = of_model.iter().find(|c| c.variant.label == "none") else {
            continue;
        };
        for state in config.states() {
            let others: Vec<&CellResult> = of_model
                .iter()
                .filter(|c| c.variant.label != "none")
                .copied()
                .collect();
            for label in paired_table(&mut md, &slug, state, baseline, &others) {
                significant.insert((label, slug.clone(), state));
            }
        }
    }
    let mut controls_md = String::new();
    for model in &config.models {
        let slug = model.slug();
        let of_model: Vec<&CellResult> = cells
            .iter()
            .map(|l| &l.result)
            .filter(|c| c.model.slug() == slug)
            .collect();
        let matched = of_model.iter().filter(|c| {
            c.variant.role == "width-control"
                || (c.variant.role == "lr-control"
                    && (c.variant.lr - config.lr * config.gamma as f64).abs()
                        <= 1e-12 * c.variant.lr.abs())
        });
        let splitting: Vec<&CellResult> = of_model
            .iter()
            .filter(|c| c.variant.role == "method" && c.variant.methods.splitting)
            .copied()
            .collect();
        if splitting.is_empty() {
            continue;
        }
        for control in matched {
            for state in config.states() {
                paired_table(&mut controls_md, &slug, state, control, &splitting);
            }
        }
    }
    if !controls_md.is_empty() {
        md.push_str(
            "### Against the matched controls\n\nWeight splitting makes the Γ replicas of a \
             connection receive the same gradient, so a split unit moves Γ× faster, and a split \
             model has 1/Γ as many distinct units: each splitting set is also compared, batch by \
             batch, with `none` at lr × Γ and at width / Γ. A difference from `none` that \
             vanishes here is the changed learning rate or width, not the mechanism.\n\n",
        );
        md.push_str(&controls_md);
    }
    (md, significant)
}

/// One table of paired tests: every cell of `others` against `baseline` on the same batches
/// in `state`; returns the labels whose difference is significant after Holm's correction.
fn paired_table(
    md: &mut String,
    slug: &str,
    state: &'static str,
    baseline: &CellResult,
    others: &[&CellResult],
) -> Vec<String> {
    let base = psnr_by_client(baseline, state);
    let mut lines = Vec::new();
    for cell in others {
        let ours = psnr_by_client(cell, state);
        // pairs: the same client's batch under both variants
        let (x, y): (Vec<f64>, Vec<f64>) = ours
            .iter()
            .filter_map(|(client, v)| {
                base.iter()
                    .find(|(b, _)| b == client)
                    .map(|(_, w)| (*v, *w))
            })
            .unzip();
        let ssim: Vec<f64> = cell
            .attacks
            .iter()
            .filter(|a| a.state == state)
            .map(|a| a.ssim)
            .collect();
        let values: Vec<f64> = ours.iter().map(|(_, v)| *v).collect();
        lines.push((
            cell.variant.label.clone(),
            Spread::of(&values),
            SuccessRate::of(&ssim, SUCCESS_SSIM),
            wilcoxon_signed_rank(&x, &y),
        ));
    }
    let mut significant = Vec::new();
    if lines.is_empty() {
        return significant;
    }
    let p: Vec<f64> = lines
        .iter()
        .map(|l| l.3.map_or(f64::NAN, |w| w.p_value))
        .collect();
    let adjusted = holm(&p);
    let _ = writeln!(
        md,
        "### {slug} {state}: against `{}` on the same batches\n\n\
         | variant | PSNR median [quartiles] | success (SSIM ≥ {SUCCESS_SSIM}) | \
         median ΔPSNR | pairs | p | p (Holm) | verdict |\n\
         |---|---:|---:|---:|---:|---:|---:|---|",
        baseline.variant.label
    );
    for ((label, spread, success, test), adj) in lines.iter().zip(&adjusted) {
        let spread = spread.map_or("—".into(), |s| {
            format!("{:.2} [{:.2}, {:.2}]", s.median, s.q1, s.q3)
        });
        let success = success.map_or("—".into(), |r| {
            format!(
                "{}/{} ({:.0}–{:.0} %)",
                r.successes,
                r.n,
                100.0 * r.interval.lo,
                100.0 * r.interval.hi
            )
        });
        let verdict = match test {
            Some(w) if *adj < ALPHA => {
                significant.push(label.clone());
                if w.median_difference < 0.0 {
                    "**harder to invert**"
                } else {
                    "**easier to invert**"
                }
            }
            Some(_) => "no detectable difference",
            None => "—",
        };
        let _ = writeln!(
            md,
            "| {label} | {spread} | {success} | {} | {} | {} | {} | {verdict} |",
            test.map_or("—".into(), |w| format!("{:+.2}", w.median_difference)),
            test.map_or("—".into(), |w| w.n.to_string()),
            test.map_or("—".into(), |w| format!("{:.3}", w.p_value)),
            if adj.is_finite() {
                format!("{adj:.3}")
            } else {
                "—".into()
            },
        );
    }
    md.push('\n');
    significant
}
