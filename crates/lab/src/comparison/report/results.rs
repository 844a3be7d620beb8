//! The machine-readable results of a comparison: one row per attack × variant × model × state
//! (with several attacks, also the worst case per image, attack `worst-case`), as
//! `results.csv` (for spreadsheets) and `results.json` (with the configuration, the command
//! and each row's per-image scores, for scripts).

use super::measures::{bootstrap95, psnr_values, SUCCESS_SSIM};
use crate::comparison::collect::Located;
use crate::comparison::config::CompareConfig;
use crate::comparison::error::{ComparisonError, Result};
use crate::comparison::estimate::Estimate;
use crate::statistics::{Interval, Spread, SuccessRate};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Writes `results.csv` and `results.json` of `sections` (an attack's name, or `worst-case`,
/// and its cells) into `out`.
pub fn write_results(
    config: &CompareConfig,
    sections: &[(&str, &[Located])],
    out: &Path,
    command: &str,
) -> Result<()> {
    let rows: Vec<Row> = sections
        .iter()
        .flat_map(|&(attack, cells)| rows(config, attack, cells))
        .collect();
    write_csv(&rows, &out.join("results.csv"))?;
    let json = serde_json::json!({ "config": config, "command": command, "rows": rows });
    let path = out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .map_err(|e| ComparisonError::io("writing", &path, e))
}

/// The scores of one attacked image of a row.
#[derive(Serialize)]
struct PerImage<'a> {
    /// The batch: the attacked client, or `batch-K`.
    client: &'a str,
    /// The image's index in its batch.
    image: usize,
    mse: f64,
    /// `null` for an exact reconstruction.
    psnr: Option<f64>,
    ssim: f64,
}

/// One row of `results.csv`: an attack × variant × model × state.
#[derive(Serialize)]
struct Row<'a> {
    /// The attacker (`ig`, `analytic`, `dlg`, `bn-prior`), or `worst-case`.
    attack: &'a str,
    variant: &'a str,
    role: &'a str,
    methods: String,
    defence: &'a str,
    lr: f64,
    model: String,
    width: Option<usize>,
    state: &'a str,
    k: usize,
    psnr: Estimate,
    mse: Estimate,
    ssim: Estimate,
    mse_normalized: Estimate,
    label_accuracy: Estimate,
    /// Median and quartiles of the per-batch PSNR (exact reconstructions at the ceiling).
    psnr_spread: Option<Spread>,
    /// Percentile-bootstrap 95 % interval of the mean PSNR (2,000 resamples, the run's seed).
    psnr_bootstrap: Option<Interval>,
    /// Attacks with SSIM ≥ [`SUCCESS_SSIM`].
    success: Option<SuccessRate>,
    test_accuracy: Option<f64>,
    /// Per attacked image (results without per-image scores: none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    per_image: Vec<PerImage<'a>>,
}

fn rows<'a>(config: &CompareConfig, attack: &'a str, cells: &'a [Located]) -> Vec<Row<'a>> {
    let mut out = Vec::new();
    for l in cells {
        let c = &l.result;
        for state in config.states() {
            let psnr = psnr_values(c, state);
            let ssim: Vec<f64> = c
                .attacks
                .iter()
                .filter(|a| a.state == state)
                .map(|a| a.ssim)
                .collect();
            let per_image = c
                .attacks
                .iter()
                .filter(|a| a.state == state)
                .flat_map(|a| {
                    a.images.iter().enumerate().map(|(image, i)| PerImage {
                        client: &a.client,
                        image,
                        mse: i.mse,
                        psnr: i.psnr.is_finite().then_some(i.psnr),
                        ssim: i.ssim,
                    })
                })
                .collect();
            out.push(Row {
                attack,
                variant: &c.variant.label,
                role: &c.variant.role,
                methods: c.variant.methods.to_string(),
                defence: &c.variant.defence,
                lr: c.variant.lr,
                model: c.model.slug(),
                width: c.width,
                state,
                k: c.attacks.iter().filter(|a| a.state == state).count(),
                psnr: c.estimate(state, |a| a.psnr),
                mse: c.estimate(state, |a| a.mse),
                ssim: c.estimate(state, |a| a.ssim),
                mse_normalized: c.estimate(state, |a| a.mse_normalized),
                label_accuracy: c.estimate(state, |a| a.label_accuracy),
                psnr_spread: Spread::of(&psnr),
                psnr_bootstrap: bootstrap95(&psnr, config.seed),
                success: SuccessRate::of(&ssim, SUCCESS_SSIM),
                test_accuracy: c.test_accuracy,
                per_image,
            });
        }
    }
    out
}

fn csv_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

fn write_csv(rows: &[Row], path: &Path) -> Result<()> {
    let mut text = String::from("variant,role,methods,defence,lr,model,width,state,attack,k,psnr_mean,psnr_ci95,mse_mean,mse_ci95,ssim_mean,ssim_ci95,mse_normalized_mean,mse_normalized_ci95,label_accuracy_mean,label_accuracy_ci95,psnr_median,psnr_q1,psnr_q3,psnr_bootstrap_lo,psnr_bootstrap_hi,success_rate,test_accuracy\n");
    for r in rows {
        let e = |e: &Estimate| format!("{},{}", csv_number(e.mean), csv_number(e.ci95));
        let _ = writeln!(
            text,
            "\"{}\",{},{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.variant,
            r.role,
            r.methods,
            r.defence,
            r.lr,
            r.model,
            r.width.map(|w| w.to_string()).unwrap_or_default(),
            r.state,
            r.attack,
            r.k,
            e(&r.psnr),
            e(&r.mse),
            e(&r.ssim),
            e(&r.mse_normalized),
            e(&r.label_accuracy),
            r.psnr_spread.map_or(",,".into(), |s| format!(
                "{},{},{}",
                csv_number(s.median),
                csv_number(s.q1),
                csv_number(s.q3)
            )),
            r.psnr_bootstrap.map_or(",".into(), |i| format!(
                "{},{}",
                csv_number(i.lo),
                csv_number(i.hi)
            )),
            r.success.map(|s| csv_number(s.rate)).unwrap_or_default(),
            r.test_accuracy.map(csv_number).unwrap_or_default()
        );
    }
    std::fs::write(path, text).map_err(|e| ComparisonError::io("writing", path, e))
}
