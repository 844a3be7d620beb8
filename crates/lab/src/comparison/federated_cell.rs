//! A cell of a privacy comparison: one federated run of the very same server, clients and tap
//! as `synfed simulate`. The tap captures K clients' updates in round 1 (the **untrained**
//! model) and, after R rounds of training, in round R + 1 (the **trained** model); the attacker
//! inverts each capture and scores it against the client's escrow. Every cell shares the seed,
//! the partition and the attacker's seed, so the K attacked batches are the same images in
//! every cell and two cells differ only in what is compared.

use super::applicability::split_applicable;
use super::cell_result::{finished_or_prepare, AttackRecord, CellResult, Skipped};
use super::config::{parse_defence, CompareConfig};
use super::error::{ComparisonError, Result};
use super::grid::Cell;
use super::progress::ComparisonProgress;
use crate::simulation::{federate, Fleet};
use candle_core::{DType, Device};
use std::path::Path;
use std::time::Instant;
use synfed_attack::AttackKind;
use synfed_server::{read_rounds, RunConfig};

/// Runs one cell (or reads it if it is finished) into its folder under `out`.
pub(super) fn run(
    c: &CompareConfig,
    cell: &Cell,
    out: &Path,
    device: &Device,
    progress: &dyn ComparisonProgress,
) -> Result<CellResult> {
    let dir = cell.dir(out);
    if let Some(done) = finished_or_prepare(&dir, &[])? {
        return Ok(done);
    }
    let started = Instant::now();
    let mut run = run_config(c, cell, &dir);
    parse_defence(&cell.variant.defence)?;
    run.training.defence = cell.variant.defence.clone();
    let fleet = Fleet::new(c.clients, c.split);
    tracing::info!(
        "cell {} / {}: federating",
        cell.model.slug(),
        cell.variant.label
    );
    // no shutdown of its own: an interrupted comparison is resumed, and this cell redone
    let summary = federate(run.clone(), &fleet, device, std::future::pending())?;
    if !summary.complete {
        return Err(ComparisonError::Stopped);
    }
    let records = read_rounds(&run.out.join("rounds.csv")).map_err(crate::LabError::from)?;
    let mut states = vec![("untrained", 1u64)];
    if c.rounds > 0 {
        states.push(("trained", c.rounds + 1));
    }
    let mut attacks = Vec::new();
    let captures = run.out.join("captures");
    let (runs, skipped) = applicable(
        c,
        &captures.join(synfed_wire::capture_file_name(1, &Fleet::name(0))),
        device,
    )?;
    let work = progress.cell_work(
        cell,
        (states.len() * c.batches * runs.len()) as u64,
        "attacks",
    );
    for (state, round) in states {
        for k in 0..c.batches {
            let client = Fleet::name(k);
            let capture = captures.join(synfed_wire::capture_file_name(round, &client));
            let escrow = captures.join(synfed_wire::escrow_file_name(round, &client));
            for &attack in &runs {
                let target = c
                    .attack_root(&dir, attack)
                    .join(format!("{state}-{client}"));
                let described = serde_json::json!({
                    "comparison": c,
                    "model": cell.model,
                    "variant": cell.variant,
                    "capture": capture,
                });
                let outcome = crate::attacking::attack_files(
                    &c.attack_options(attack),
                    &capture,
                    &escrow,
                    &target,
                    device,
                    &described,
                    |_, _, _| {},
                )
                .map_err(|e| ComparisonError::Attack {
                    capture: capture.clone(),
                    source: Box::new(e),
                })?;
                attacks.push(AttackRecord::of(state, client.clone(), attack, &outcome));
                work.step();
            }
        }
    }
    drop(work);
    let accuracy_curve: Vec<(u64, f64)> =
        records.iter().map(|r| (r.round, r.test_accuracy)).collect();
    let test_accuracy = (c.rounds > 0)
        .then(|| {
            records
                .iter()
                .find(|r| r.round == c.rounds)
                .map(|r| r.test_accuracy)
        })
        .flatten();
    let result = CellResult {
        model: cell.model.clone(),
        variant: cell.variant.clone(),
        width: run.model.width,
        attacks,
        test_accuracy,
        untrained_accuracy: None,
        accuracy_curve,
        same_as: None,
        training_seconds: None,
        seconds: started.elapsed().as_secs_f64(),
        skipped,
    };
    result.finish(&dir)?;
    Ok(result)
}

/// The comparison's attacks that apply to the model of the capture `first` (in the
/// comparison's order), and those that do not, with the reason.
fn applicable(
    c: &CompareConfig,
    first: &Path,
    device: &Device,
) -> Result<(Vec<AttackKind>, Vec<Skipped>)> {
    let model = synfed_wire::Capture::load(first, device)
        .and_then(|capture| capture.model(DType::F32, device))
        .map_err(|e| ComparisonError::Attack {
            capture: first.to_path_buf(),
            source: Box::new(crate::LabError::from(e)),
        })?;
    Ok(split_applicable(c, &model))
}

/// The run configuration of a cell's federation: R + 1 rounds (the last one only to capture
/// the trained model's updates), every client registered before round 1, the tap on clients
/// 0 … K−1 in rounds 1 and R + 1.
fn run_config(c: &CompareConfig, cell: &Cell, dir: &Path) -> RunConfig {
    let mut run = RunConfig {
        seed: c.seed,
        rounds: if c.rounds > 0 { c.rounds + 1 } else { 1 },
        algorithm: c.algorithm,
        out: dir.join("run"),
        ..RunConfig::default()
    };
    run.model = c.variant_model(&cell.model, &cell.variant);
    run.data.name = c.data.clone();
    run.data.dir = c.data_dir.clone();
    run.data.eval_limit = Some(c.eval_limit);
    run.training.lr = cell.variant.lr;
    run.training.batch_size = c.batch_size;
    run.training.bn_mode = c.bn_mode;
    run.training.fuzzy_at = cell.variant.fuzzy_at;
    run.sampling.min_clients = c.clients;
    run.sampling.min_updates = 1;
    run.timing.pull_timeout_s = 2.0;
    run.timing.linger_s = 1.0;
    run.tap.rounds = if c.rounds > 0 {
        vec![1, c.rounds + 1]
    } else {
        vec![1]
    };
    run.tap.clients = (0..c.batches).map(Fleet::name).collect();
    run
}
