//! The outputs of `--kind learning` (the paper's Tables 1–2): test accuracy and
//! early-stopping epoch per model × method set, as `results.csv`, `results.json` and
//! `report.md`.

use crate::comparison::config::CompareConfig;
use crate::comparison::error::{ComparisonError, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// One row of the learning comparison.
#[derive(Serialize)]
pub struct LearningRow {
    pub model: String,
    pub methods: String,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub epoch_mean: f64,
    pub epoch_std: f64,
}

/// Writes `results.csv`, `results.json` and `report.md` of `--kind learning`.
pub fn write_learning(
    config: &CompareConfig,
    rows: &[LearningRow],
    out: &Path,
    command: &str,
) -> Result<()> {
    let mut csv =
        String::from("model,methods,test_accuracy_mean,test_accuracy_std,epoch_mean,epoch_std\n");
    for r in rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{}",
            r.model, r.methods, r.accuracy_mean, r.accuracy_std, r.epoch_mean, r.epoch_std
        );
    }
    write(&out.join("results.csv"), csv)?;
    let json = serde_json::json!({ "config": config, "command": command, "rows": rows });
    write(
        &out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let l = &config.learning;
    let mut md = String::from("# synfed compare: learning (paper Tables 1–2)\n\n");
    let _ = writeln!(md, "Command: `{command}`\n");
    let _ = writeln!(
        md,
        "Centralized training on `{}`, {} folds × at most {} epochs, lr {}, batch {}, early stopping \
         with patience {}; seed {}. Test accuracy at the early-stopping epoch and that epoch, mean ± \
         standard deviation over the folds.\n",
        config.data, l.folds, l.epochs, l.lr, l.batch_size, l.patience, config.seed
    );
    md.push_str(
        "| model | methods | test accuracy (%) | early-stopping epoch |\n|---|---|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} ± {:.2} | {:.1} ± {:.1} |",
            r.model,
            r.methods,
            100.0 * r.accuracy_mean,
            100.0 * r.accuracy_std,
            r.epoch_mean,
            r.epoch_std
        );
    }
    write(&out.join("report.md"), md)
}

fn write(path: &Path, text: String) -> Result<()> {
    std::fs::write(path, text).map_err(|e| ComparisonError::io("writing", path, e))
}
