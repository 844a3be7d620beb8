//! A cell of a `--kind inversion` comparison, one model state: the paper's Table 3 protocol
//! ([`CentralizedInversion`]). The model is built from the comparison's seed with the
//! variant's methods and width, trained centrally for the trained state (the trained model is
//! kept through a restart of the cell), and K consecutive held-out batches are captured and
//! attacked.

use super::applicability::split_applicable;
use super::cell_result::{finished_or_prepare, AttackRecord, CellResult};
use super::config::CompareConfig;
use super::error::{ComparisonError, Result};
use super::grid::Cell;
use super::progress::ComparisonProgress;
use crate::centralized_inversion::{CentralizedInversion, Pretraining};
use candle_core::Device;
use std::path::Path;
use std::time::Instant;

/// Runs one state of a cell (or reads it if it is finished) into its folder under `out`.
pub(super) fn run(
    c: &CompareConfig,
    cell: &Cell,
    out: &Path,
    device: &Device,
    splits: &synfed_data::Splits,
    progress: &dyn ComparisonProgress,
) -> Result<CellResult> {
    let dir = cell.dir(out);
    // a restarted cell keeps its (partial) pretraining and its finished attacks
    let mut keep = crate::pretraining::FILES.to_vec();
    keep.push("attack");
    if let Some(done) = finished_or_prepare(&dir, &keep)? {
        return Ok(done);
    }
    let state = cell.state.unwrap_or("untrained");
    let started = Instant::now();
    let shape = splits.train.shape();
    let spec = c.variant_model(&cell.model, &cell.variant).spec(
        synfed_models::InputShape::new(shape.channels, shape.height, shape.width),
        splits.train.num_classes(),
        c.seed,
    );
    let built = synfed_models::Model::build(&spec, candle_core::DType::F32, device)
        .map_err(|e| state_error(cell, state, crate::LabError::from(e)))?;
    let (runs, skipped) = split_applicable(c, &built);
    drop(built);
    let work = progress.cell_work(
        cell,
        (c.batches * c.attack_iterations * c.attack_restarts.max(1) * runs.len()) as u64,
        "iterations",
    );
    tracing::info!(
        "cell {} / {} / {state}",
        cell.model.slug(),
        cell.variant.label
    );
    let mut attacks = Vec::new();
    let mut test_accuracy = None;
    let mut training_seconds = None;
    for &attack in &runs {
        let study = CentralizedInversion {
            spec: spec.clone(),
            pretraining: (state == "trained").then(|| Pretraining {
                epochs: c.pretrain_epochs,
                // the variant's factor of the comparison's lr, applied to training's
                lr: c.learning.lr * cell.variant.lr / c.lr,
                batch_size: c.learning.batch_size,
            }),
            batches: c.batches,
            batch_size: c.batch_size,
            mode: c.bn_mode.mode(),
            expose_labels: c.expose_labels,
            attack: c.attack_options(attack),
        };
        // the first attack trains (and saves) the model, the others reuse it and capture the
        // very same batches; one attacker writes `attack/batch-K/`, several
        // `attack/<name>/batch-K/`
        let result = study
            .run_into(
                splits,
                &dir,
                &c.attack_root(&dir, attack),
                device,
                |epoch, loss| {
                    work.epoch(epoch, loss);
                    tracing::info!("epoch {epoch}: train loss {loss:.4}");
                },
                |_, _, _, _| work.step(),
            )
            .map_err(|e| state_error(cell, state, e))?;
        attacks.extend(
            result
                .attacks
                .iter()
                .map(|a| AttackRecord::of(state, a.name.clone(), attack, &a.outcome)),
        );
        test_accuracy = Some(result.test_accuracy);
        // the first attack trains; the others reuse the model and read the same record
        training_seconds = training_seconds.or(result.training_seconds);
    }
    drop(work);
    let result = CellResult {
        model: cell.model.clone(),
        variant: cell.variant.clone(),
        width: spec.width,
        attacks,
        test_accuracy: test_accuracy.filter(|_| state == "trained"),
        untrained_accuracy: test_accuracy.filter(|_| state == "untrained"),
        accuracy_curve: Vec::new(),
        same_as: None,
        training_seconds,
        seconds: started.elapsed().as_secs_f64(),
        skipped,
    };
    result.finish(&dir)?;
    Ok(result)
}

/// The error of `state` of `cell`.
fn state_error(cell: &Cell, state: &str, e: crate::LabError) -> ComparisonError {
    ComparisonError::State {
        model: cell.model.slug(),
        variant: cell.variant.label.clone(),
        state: state.into(),
        source: Box::new(e),
    }
}
