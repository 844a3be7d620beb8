//! The run directory: effective configuration, per-round log, checkpoint, captures.
//!
//! ```text
//! out/config.toml              the effective configuration
//! out/rounds.csv               one row per round, written as the run goes
//! out/checkpoint.safetensors   the global model after the last finished round + run state
//! out/captures/                tapped updates (round-RRRR-CLIENT.capture.safetensors)
//! out/spool/                   updates waiting for their turn in the aggregation
//! ```

use crate::error::{Result, ServerError};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use synfed_models::{checkpoint, Model};
use synfed_wire::capture_file_name;

/// Header of `rounds.csv`.
pub const ROUNDS_HEADER: &str = "round,sampled,updates,refused,dropped,examples,train_loss,test_loss,test_accuracy,rejuvenated,seconds";

/// One row of `rounds.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u64,
    pub sampled: usize,
    /// Updates aggregated.
    pub updates: usize,
    /// Updates refused by validation.
    pub refused: usize,
    /// Sampled clients that left, went silent or missed the deadline.
    pub dropped: usize,
    /// Examples behind the aggregate.
    pub examples: u64,
    /// Example-weighted mean of the clients' reported training losses.
    pub train_loss: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    /// Weights the server's rejuvenation re-initialised (FedSGD).
    pub rejuvenated: usize,
    pub seconds: f64,
}

impl RoundRecord {
    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{},{:.3}",
            self.round,
            self.sampled,
            self.updates,
            self.refused,
            self.dropped,
            self.examples,
            self.train_loss,
            self.test_loss,
            self.test_accuracy,
            self.rejuvenated,
            self.seconds
        )
    }
}

/// The state saved beside the model, enough to continue a killed run exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub run_id: String,
    /// Last finished round.
    pub round: u64,
    /// Position of the server optimizer's rejuvenation stream (decimal u128).
    pub optimizer_rng: String,
    /// The configuration fields that determine results, as JSON; a resume must match them.
    pub fingerprint: String,
}

/// Paths of a run directory.
#[derive(Clone, Debug)]
pub struct RunFiles {
    pub dir: PathBuf,
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> ServerError + 'a {
    move |source| ServerError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

impl RunFiles {
    /// Creates `dir` and its `captures/`.
    pub fn create(dir: &Path) -> Result<Self> {
        let files = Self {
            dir: dir.to_path_buf(),
        };
        std::fs::create_dir_all(files.captures()).map_err(io(dir, "create the run directory"))?;
        Ok(files)
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    pub fn rounds(&self) -> PathBuf {
        self.dir.join("rounds.csv")
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }

    pub fn captures(&self) -> PathBuf {
        self.dir.join("captures")
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// The capture file of `client` in `round`.
    pub fn capture(&self, round: u64, client: &str) -> PathBuf {
        self.captures().join(capture_file_name(round, client))
    }

    /// Starts `rounds.csv` afresh, or (resuming after `keep` rounds) keeps its first `keep`
    /// rows and drops rows of rounds that were not finished.
    pub fn start_rounds_log(&self, keep: u64) -> Result<()> {
        let path = self.rounds();
        let mut text = String::from(ROUNDS_HEADER);
        text.push('\n');
        if keep > 0 {
            let old = std::fs::read_to_string(&path).unwrap_or_default();
            for line in old.lines().skip(1) {
                let round: Option<u64> = line.split(',').next().and_then(|r| r.parse().ok());
                if round.is_some_and(|r| r <= keep) {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        std::fs::write(&path, text).map_err(io(&path, "write"))
    }

    /// Appends a row to `rounds.csv`.
    pub fn log_round(&self, record: &RoundRecord) -> Result<()> {
        let path = self.rounds();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path, "open"))?;
        writeln!(file, "{}", record.csv()).map_err(io(&path, "append to"))?;
        file.sync_data().map_err(io(&path, "flush"))
    }

    /// Saves the model and run state (atomically).
    pub fn save_checkpoint(&self, model: &Model, state: &RunState) -> Result<()> {
        let value =
            serde_json::to_value(state).map_err(|e| ServerError::Internal(e.to_string()))?;
        checkpoint::save(model, Some(&value), &self.checkpoint())?;
        Ok(())
    }

    /// Loads the checkpoint to resume from.
    pub fn load_checkpoint(&self) -> Result<(Model, RunState)> {
        let path = self.checkpoint();
        if !path.exists() {
            return Err(ServerError::Resume(format!(
                "no checkpoint at {}",
                path.display()
            )));
        }
        let ckpt = checkpoint::load(&path, candle_core::DType::F32, &candle_core::Device::Cpu)?;
        let state = ckpt
            .state
            .ok_or_else(|| ServerError::Resume("the checkpoint holds no run state".into()))?;
        let state: RunState = serde_json::from_value(state)
            .map_err(|e| ServerError::Resume(format!("unreadable run state: {e}")))?;
        Ok((ckpt.model, state))
    }
}

/// Reads `rounds.csv`.
pub fn read_rounds(path: &Path) -> Result<Vec<RoundRecord>> {
    let text = std::fs::read_to_string(path).map_err(io(path, "read"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || ServerError::Internal(format!("{}: malformed line {}", path.display(), i + 1));
        if f.len() != 11 {
            return Err(bad());
        }
        let u = |k: usize| f[k].parse::<u64>().map_err(|_| bad());
        let x = |k: usize| f[k].parse::<f64>().map_err(|_| bad());
        out.push(RoundRecord {
            round: u(0)?,
            sampled: u(1)? as usize,
            updates: u(2)? as usize,
            refused: u(3)? as usize,
            dropped: u(4)? as usize,
            examples: u(5)?,
            train_loss: x(6)?,
            test_loss: x(7)?,
            test_accuracy: x(8)?,
            rejuvenated: u(9)? as usize,
            seconds: x(10)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(round: u64) -> RoundRecord {
        RoundRecord {
            round,
            sampled: 4,
            updates: 3,
            refused: 1,
            dropped: 0,
            examples: 24,
            train_loss: 2.25,
            test_loss: 2.0,
            test_accuracy: 0.5,
            rejuvenated: 7,
            seconds: 1.5,
        }
    }

    #[test]
    fn rounds_log_round_trips_and_resume_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let files = RunFiles::create(dir.path()).unwrap();
        files.start_rounds_log(0).unwrap();
        for r in 1..=4 {
            files.log_round(&record(r)).unwrap();
        }
        assert_eq!(
            read_rounds(&files.rounds()).unwrap(),
            (1..=4).map(record).collect::<Vec<_>>()
        );
        files.start_rounds_log(2).unwrap();
        assert_eq!(
            read_rounds(&files.rounds()).unwrap(),
            vec![record(1), record(2)]
        );
    }
}
