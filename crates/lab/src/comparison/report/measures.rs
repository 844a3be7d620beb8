//! How a cell's attacks are measured wherever the report speaks of them (tables, paired tests,
//! charts, result files): PSNR per batch with exact reconstructions at a ceiling (an infinite
//! PSNR cannot be averaged or ranked), success as SSIM ≥ [`SUCCESS_SSIM`], and the bootstrap
//! interval of a mean, from the comparison's seed so that the files are reproducible.

use crate::comparison::cell_result::CellResult;
use crate::comparison::collect::Located;
use crate::statistics::{bootstrap_mean_interval, Interval};

/// Resamples of the bootstrap intervals in the result files.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// PSNR above which a reconstruction counts as exact (an infinite PSNR, MSE 0, is set to it for
/// the paired tests and medians).
pub const PSNR_CEILING: f64 = 100.0;
/// SSIM at or above which an attack counts as a success.
pub const SUCCESS_SSIM: f64 = 0.5;

/// Per-batch PSNR of `cell` in `state`, by client, exact reconstructions at the ceiling.
pub fn psnr_by_client<'a>(cell: &'a CellResult, state: &str) -> Vec<(&'a str, f64)> {
    cell.attacks
        .iter()
        .filter(|a| a.state == state)
        .map(|a| {
            let psnr = if a.psnr.is_nan() {
                f64::NAN
            } else {
                a.psnr.min(PSNR_CEILING)
            };
            (a.client.as_str(), psnr)
        })
        .collect()
}

/// The per-batch PSNR values of `cell` in `state` ([`psnr_by_client`] without the clients).
pub fn psnr_values(cell: &CellResult, state: &str) -> Vec<f64> {
    psnr_by_client(cell, state)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// The bootstrap 95 % interval of the mean of `values` that the result files and the PSNR
/// chart report ([`BOOTSTRAP_RESAMPLES`] resamples from the comparison's seed).
pub fn bootstrap95(values: &[f64], seed: u64) -> Option<Interval> {
    bootstrap_mean_interval(values, 0.95, BOOTSTRAP_RESAMPLES, seed)
}

/// The variants' labels in the order their cells first appear (the tables' row order).
pub fn variant_labels(cells: &[Located]) -> Vec<&str> {
    let mut labels: Vec<&str> = Vec::new();
    for l in cells {
        if !labels.contains(&l.result.variant.label.as_str()) {
            labels.push(&l.result.variant.label);
        }
    }
    labels
}
