//! The machine-readable results of a comparison: one row per variant × model × state, as
//! `results.csv` (for spreadsheets) and `results.json` (with the configuration and the
//! command, for scripts).

use super::measures::{bootstrap95, psnr_values, SUCCESS_SSIM};
use crate::comparison::collect::Located;
use crate::comparison::config::CompareConfig;
use crate::comparison::error::{ComparisonError, Result};
use crate::comparison::estimate::Estimate;
use crate::statistics::{Interval, Spread, SuccessRate};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Writes `results.csv` and `results.json` of `cells` into `out`.
pub fn write_results(
    config: &CompareConfig,
    cells: &[Located],
    out: &Path,
    command: &str,
) -> Result<()> {
    let rows = rows(config, cells);
    write_csv(&rows, &out.join("results.csv"))?;
    let json = serde_json::json!({ "config": config, "command": command, "rows": rows });
    let path = out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .map_err(|e| ComparisonError::io("writing", &path, e))
}

/// One row of `results.csv`: a variant × model × state.
#[derive(Serialize)]
struct Row<'a> {
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
}

fn rows<'a>(config: &CompareConfig, cells: &'a [Located]) -> Vec<Row<'a>> {
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
            out.push(Row {
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
    let mut text = String::from("variant,role,methods,defence,lr,model,width,state,k,psnr_mean,psnr_ci95,mse_mean,mse_ci95,ssim_mean,ssim_ci95,mse_normalized_mean,mse_normalized_ci95,label_accuracy_mean,label_accuracy_ci95,psnr_median,psnr_q1,psnr_q3,psnr_bootstrap_lo,psnr_bootstrap_hi,success_rate,test_accuracy\n");
    for r in rows {
        let e = |e: &Estimate| format!("{},{}", csv_number(e.mean), csv_number(e.ci95));
        let _ = writeln!(
            text,
            "\"{}\",{},{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.variant,
            r.role,
            r.methods,
            r.defence,
            r.lr,
            r.model,
            r.width.map(|w| w.to_string()).unwrap_or_default(),
            r.state,
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
