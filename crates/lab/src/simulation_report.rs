//! What `synfed simulate` leaves behind after the federation: every capture the tap wrote
//! attacked with the escrow beside it, and `report.md` — the configuration, the rounds and, per
//! capture, the attack's scores and picture.
//!
//! A capture whose escrow is missing, or whose attack fails, stays in the report as a row that
//! says why: a report that silently drops a capture would overstate how private the run was.

use crate::attacking::{attack_files, AttackOptions, AttackOutcome};
use crate::error::{LabError, Result};
use candle_core::Device;
use synfed_data::Partition;
use synfed_server::{read_rounds, RunConfig, RunSummary};
use synfed_wire::{CAPTURE_SUFFIX, ESCROW_SUFFIX};

/// The attack on one capture.
#[derive(Clone, Debug)]
pub struct CaptureAttack {
    /// `round-RRRR-CLIENT`.
    pub name: String,
    /// The outcome, or why there is none.
    pub result: std::result::Result<AttackOutcome, String>,
}

/// Attacks every capture of `summary` (in file-name order, so by round, then client) with its
/// escrow, into `<run>/attack/<name>/`.
pub fn attack_captures(
    summary: &RunSummary,
    options: &AttackOptions,
    device: &Device,
) -> Vec<CaptureAttack> {
    let mut captures = summary.captures.clone();
    captures.sort();
    if captures.is_empty() {
        tracing::warn!("the tap wrote no capture: nothing to attack");
    }
    let mut attacks = Vec::with_capacity(captures.len());
    for capture in captures {
        let file = capture
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        let name = file
            .strip_suffix(CAPTURE_SUFFIX)
            .unwrap_or(file)
            .to_string();
        let escrow = capture.with_file_name(format!("{name}{ESCROW_SUFFIX}"));
        if !escrow.exists() {
            tracing::warn!("no escrow beside {}: not attacked", capture.display());
            attacks.push(CaptureAttack {
                name,
                result: Err(format!("no escrow file {}", escrow.display())),
            });
            continue;
        }
        let out = summary.out.join("attack").join(&name);
        tracing::info!("attacking {name} ({} iterations)", options.iterations);
        let described = serde_json::json!({
            "federation": summary.run_id,
            "capture": capture,
            "escrow": escrow,
        });
        let result = attack_files(
            options,
            &capture,
            &escrow,
            &out,
            device,
            &described,
            |_, _, _| {},
        )
        .map_err(|e| {
            tracing::warn!("the attack on {name} failed: {e:#}");
            format!("{e:#}")
        });
        attacks.push(CaptureAttack { name, result });
    }
    attacks
}

/// Everything `report.md` says about a simulated run.
pub struct SimulationReport<'a> {
    pub config: &'a RunConfig,
    pub clients: usize,
    pub split: Partition,
    pub attack_iterations: usize,
    pub summary: &'a RunSummary,
    pub attacks: &'a [CaptureAttack],
    pub federation_seconds: f64,
    pub attack_seconds: f64,
}

impl SimulationReport<'_> {
    /// The report as Markdown (pictures linked relative to the run folder).
    pub fn markdown(&self) -> Result<String> {
        let (config, summary) = (self.config, self.summary);
        let rounds_csv = summary.out.join("rounds.csv");
        let rounds = read_rounds(&rounds_csv)
            .map_err(|e| LabError::Config(format!("reading {}: {e}", rounds_csv.display())))?;
        let m = &config.model;
        let width = m
            .width
            .map_or_else(|| "published".to_string(), |w| w.to_string());
        let tapped = if config.tap.clients.is_empty() {
            "all".to_string()
        } else {
            config.tap.clients.join(", ")
        };
        let mut lines = vec![
            format!("# synfed simulate: {}\n", summary.run_id),
            format!(
                "- model: `{}` (width {width}), methods `{}` (τ {}, d_re {}, Γ {})",
                m.arch, m.methods, m.tau, m.d_re, m.gamma
            ),
            format!(
                "- data: `{}`, {} clients, `{}` split (seed {})",
                config.data.name, self.clients, self.split, config.seed
            ),
            format!(
                "- {} rounds of {}, lr {}, batch {}, sampling fraction {}, seed {}",
                config.rounds,
                config.algorithm,
                config.training.lr,
                config.training.batch_size,
                config.sampling.fraction,
                config.seed
            ),
            format!("- tap: rounds {:?}, clients {tapped}", config.tap.rounds),
            format!(
                "- time: federation {:.1} s, attacks {:.1} s ({} iterations each)",
                self.federation_seconds, self.attack_seconds, self.attack_iterations
            ),
            "- full configuration: [config.toml](config.toml)\n".to_string(),
            "## Rounds\n".to_string(),
            "| round | updates | test accuracy | test loss |".to_string(),
            "|---:|---:|---:|---:|".to_string(),
        ];
        lines.extend(rounds.iter().map(|r| {
            format!(
                "| {} | {} | {:.2} % | {:.4} |",
                r.round,
                r.updates,
                100.0 * r.test_accuracy,
                r.test_loss
            )
        }));
        if !self.attacks.is_empty() {
            lines.push("\n## Attacks\n".to_string());
            lines.push(
                "Gradient inversion of each captured update; top row of a picture the client's \
                 batch, bottom row the reconstruction.\n"
                    .to_string(),
            );
            lines.push(
                "| capture | PSNR (dB) | SSIM | MSE | label accuracy | truth / reconstruction |"
                    .to_string(),
            );
            lines.push("|---|---:|---:|---:|---:|---|".to_string());
            lines.extend(self.attacks.iter().map(attack_row));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        Ok(text)
    }

    /// Writes the report to `<run>/report.md` and returns its path.
    pub fn write(&self) -> Result<std::path::PathBuf> {
        let path = self.summary.out.join("report.md");
        std::fs::write(&path, self.markdown()?).map_err(|e| LabError::io("write", &path, e))?;
        Ok(path)
    }
}

/// One attack's row: its scores and picture, or why it has none.
fn attack_row(row: &CaptureAttack) -> String {
    match &row.result {
        Ok(o) => format!(
            "| {} | {:.2} | {:.3} | {:.5} | {:.0} % | ![{}](attack/{}/grid.png) |",
            row.name,
            o.scores.psnr,
            o.scores.ssim,
            o.scores.mse,
            100.0 * o.scores.label_accuracy,
            row.name,
            row.name
        ),
        Err(why) => format!(
            "| {} | – | – | – | – | not attacked: {} |",
            row.name,
            why.replace('|', "\\|").replace('\n', " ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_without_escrow_is_reported_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let captures = dir.path().join("captures");
        std::fs::create_dir_all(&captures).unwrap();
        // two captures out of order; only the second has an escrow, and it is no escrow
        let late = captures.join(synfed_wire::capture_file_name(3, "client-0"));
        let early = captures.join(synfed_wire::capture_file_name(1, "client-0"));
        std::fs::write(&late, b"not a capture").unwrap();
        std::fs::write(&early, b"not a capture").unwrap();
        std::fs::write(
            captures.join(synfed_wire::escrow_file_name(3, "client-0")),
            b"not an escrow",
        )
        .unwrap();
        let summary = RunSummary {
            run_id: "run-test".into(),
            rounds: Vec::new(),
            complete: true,
            out: dir.path().to_path_buf(),
            captures: vec![late, early],
            capture_failures: 0,
        };
        let attacks = attack_captures(&summary, &AttackOptions::default(), &Device::Cpu);
        let names: Vec<&str> = attacks.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["round-0001-client-0", "round-0003-client-0"]);
        let why = attacks[0].result.as_ref().unwrap_err();
        assert!(
            why.starts_with("no escrow file")
                && why.ends_with("round-0001-client-0.escrow.safetensors"),
            "{why}"
        );
        // the unreadable capture fails with a reason, and the row escapes table syntax
        assert!(attacks[1].result.is_err());
        let row = attack_row(&CaptureAttack {
            name: "round-0003-client-0".into(),
            result: Err("a | b\nc".into()),
        });
        assert_eq!(
            row,
            "| round-0003-client-0 | – | – | – | – | not attacked: a \\| b c |"
        );
    }
}
