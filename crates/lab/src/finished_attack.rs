//! Reading back an attack that an interrupted run already finished.
//!
//! Why: a comparison's cell runs many attacks (K batches or clients × the attackers), minutes
//! to an hour each. A run stopped in the middle of a cell — a session that ends, a requeued
//! Slurm task, a killed process — would otherwise redo every attack of the cell when it is
//! resumed. [`crate::attacking::attack_and_write`] writes an attack's `metrics.json` last, by
//! renaming a complete file, so its presence marks a finished attack; [`attack_or_reuse`]
//! reads such a folder back instead of attacking again, but only when it was written for the
//! very same update (the SHA-256 digest of the captured update), by the same attacker with the
//! same options, for the same caller's description (a cell's configuration and batch).
//! Anything else — another model, another capture, other options, a folder of an older
//! version without the digest — is attacked afresh and overwritten.

use crate::attacking::{attack_and_write, load_attacked, AttackOptions, AttackOutcome};
use crate::error::{LabError, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::Path;
use synfed_attack::scoring::Scores;
use synfed_attack::AttackKind;
use synfed_wire::{Capture, Escrow};

/// The file whose presence marks an attack folder as finished.
pub const METRICS: &str = "metrics.json";

/// What a finished attack's `metrics.json` must hold to be reused.
#[derive(Deserialize)]
struct Recorded {
    args: serde_json::Value,
    attack: AttackKind,
    options: serde_json::Value,
    /// Absent in folders written before attacks were resumable: never reused.
    #[serde(default)]
    update_digest: Option<String>,
    #[serde(flatten)]
    scores: Scores,
    final_descent: f64,
    converged: bool,
    seconds: f64,
}

/// The outcome recorded in `out`, if `out` holds a finished attack of `capture`'s update by
/// `options` described by `args` (see the module docs); `None` otherwise (no folder, an
/// unfinished one, or one written for something else).
pub fn finished_attack(
    out: &Path,
    options: &AttackOptions,
    capture: &Capture,
    args: &impl Serialize,
) -> Result<Option<AttackOutcome>> {
    let path = out.join(METRICS);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LabError::io("read", &path, e)),
    };
    let Ok(recorded) = serde_json::from_slice::<Recorded>(&text) else {
        tracing::warn!("{} cannot be read back; attacking again", path.display());
        return Ok(None);
    };
    let describe = |what: &str, e: serde_json::Error| {
        LabError::Config(format!("serialising the attack's {what}: {e}"))
    };
    let same = recorded.attack == options.attack
        && recorded.options == serde_json::to_value(options).map_err(|e| describe("options", e))?
        && recorded.args == serde_json::to_value(args).map_err(|e| describe("description", e))?
        && recorded.update_digest.as_deref() == Some(capture.update_digest()?.as_str());
    if !same {
        tracing::info!(
            "{} was written for another update, attacker or configuration; attacking again",
            path.display()
        );
        return Ok(None);
    }
    Ok(Some(AttackOutcome {
        scores: recorded.scores,
        seconds: recorded.seconds,
        final_descent: recorded.final_descent,
        converged: recorded.converged,
    }))
}

/// [`attack_and_write`], unless `out` already holds that very attack, finished
/// ([`finished_attack`]): then its recorded outcome, without attacking.
pub fn attack_or_reuse(
    options: &AttackOptions,
    capture: &Capture,
    escrow: &Escrow,
    out: &Path,
    device: &Device,
    args: &impl Serialize,
    on_iteration: impl FnMut(usize, usize, f64),
) -> Result<AttackOutcome> {
    if let Some(done) = finished_attack(out, options, capture, args)? {
        tracing::info!(
            "{}: reusing the finished attack in {}",
            options.attack,
            out.display()
        );
        return Ok(done);
    }
    attack_and_write(options, capture, escrow, out, device, args, on_iteration)
}

/// [`attack_or_reuse`] of a capture and its escrow read from files.
pub fn attack_files_or_reuse(
    options: &AttackOptions,
    capture: &Path,
    escrow: &Path,
    out: &Path,
    device: &Device,
    args: &impl Serialize,
    on_iteration: impl FnMut(usize, usize, f64),
) -> Result<AttackOutcome> {
    let (capture, escrow) = load_attacked(capture, escrow, device)?;
    attack_or_reuse(options, &capture, &escrow, out, device, args, on_iteration)
}
