//! A finished cell, as its folder keeps it: `cell.json`, written last and atomically, so that
//! its presence means the cell is done. A rerun of a killed comparison reads the finished
//! cells and starts the unfinished ones afresh; `cell.json` files of older comparisons still
//! parse (fields are only ever added, with defaults).

use super::config::ModelEntry;
use super::error::{ComparisonError, Result};
use super::estimate::Estimate;
use super::variants::Variant;
use crate::attacking::AttackOutcome;
use serde::{Deserialize, Serialize};
use std::path::Path;
use synfed_attack::metrics::ImageScores;
use synfed_attack::AttackKind;

/// One attack of a cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackRecord {
    /// `untrained` or `trained`.
    pub state: String,
    pub client: String,
    pub mse: f64,
    #[serde(with = "finite_or_null")]
    pub psnr: f64,
    pub ssim: f64,
    pub mse_normalized: f64,
    pub label_accuracy: f64,
    pub seconds: f64,
    /// Relative fall of the attack's objective over its last quarter of iterations, and
    /// whether that is small enough to call it converged (absent in older results).
    #[serde(default)]
    pub final_descent: Option<f64>,
    #[serde(default)]
    pub converged: Option<bool>,
    /// The attacker (absent in older results, which ran `ig` only).
    #[serde(default)]
    pub attack: AttackKind,
    /// MSE, PSNR and SSIM of each true image of the batch against the reconstruction matched
    /// to it, in the batch's order (absent in older results): what the worst case per image
    /// is taken over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageScores>,
}

/// An attack a cell did not run, and why (an attack that needs what the model or the clients'
/// BatchNorm mode does not offer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub attack: AttackKind,
    pub reason: String,
}

impl AttackRecord {
    /// The record of `outcome`, `attack` on `client`'s batch (or batch `client`) in `state`.
    pub fn of(state: &str, client: String, attack: AttackKind, outcome: &AttackOutcome) -> Self {
        Self {
            state: state.into(),
            client,
            mse: outcome.scores.mse,
            psnr: outcome.scores.psnr,
            ssim: outcome.scores.ssim,
            mse_normalized: outcome.scores.mse_normalized,
            label_accuracy: outcome.scores.label_accuracy,
            seconds: outcome.seconds,
            final_descent: Some(outcome.final_descent),
            converged: Some(outcome.converged),
            attack,
            images: outcome.scores.images.iter().map(|i| i.scores).collect(),
        }
    }
}

mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

/// A finished cell, as `cell.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub model: ModelEntry,
    pub variant: Variant,
    /// Width the cell's model was built with.
    pub width: Option<usize>,
    pub attacks: Vec<AttackRecord>,
    /// Test accuracy of the global model after `rounds` rounds (the attacked trained model);
    /// `--kind inversion`: of the attacked model on the held-out images (after merging the
    /// states: the trained one's).
    pub test_accuracy: Option<f64>,
    /// `--kind inversion`: test accuracy of the untrained model (chance level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrained_accuracy: Option<f64>,
    /// Test accuracy after each round of the run.
    pub accuracy_curve: Vec<(u64, f64)>,
    /// `--kind inversion`, untrained: the variant whose cell computed these attacks (the two
    /// are bit-identical before training, see [`super::variants::untrained_twin`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
    /// `--kind inversion`: seconds spent training the attacked model (0 when reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_seconds: Option<f64>,
    pub seconds: f64,
    /// Attacks of the comparison that do not apply to this cell, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

impl CellResult {
    /// Estimates of `metric` over the cell's attacks in `state`.
    pub fn estimate(&self, state: &str, metric: impl Fn(&AttackRecord) -> f64) -> Estimate {
        Estimate::of(self.attacks.iter().filter(|a| a.state == state).map(metric))
    }

    /// The finished cell in `dir`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<CellResult>> {
        let done = dir.join("cell.json");
        if !done.exists() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&done).map_err(|e| ComparisonError::io("reading", &done, e))?;
        let result = serde_json::from_str(&text).map_err(|e| ComparisonError::parse(&done, e))?;
        Ok(Some(result))
    }

    /// Writes `cell.json` into `dir`, last and atomically: its presence means the cell is
    /// finished.
    pub fn finish(&self, dir: &Path) -> Result<()> {
        let done = dir.join("cell.json");
        let tmp = dir.join("cell.json.partial");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .map_err(|e| ComparisonError::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &done).map_err(|e| ComparisonError::io("writing", &done, e))
    }
}

/// Reads a finished cell's `cell.json`, or prepares its folder for a fresh run (an unfinished
/// cell of a killed comparison starts afresh, except for the entries named in `keep`, which
/// the cell reuses only after checking them: a pretraining, finished attacks).
pub(super) fn finished_or_prepare(dir: &Path, keep: &[&str]) -> Result<Option<CellResult>> {
    if let Some(done) = CellResult::read(dir)? {
        return Ok(Some(done));
    }
    if dir.exists() {
        let entries = std::fs::read_dir(dir).map_err(|e| ComparisonError::io("reading", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ComparisonError::io("reading", dir, e))?;
            if keep.iter().any(|k| entry.file_name() == **k) {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .map_err(|e| ComparisonError::io("clearing", &path, e))?;
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| ComparisonError::io("creating", dir, e))?;
    Ok(None)
}
