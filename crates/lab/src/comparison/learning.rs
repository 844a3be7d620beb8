//! `--kind learning`: the paper's Tables 1–2 as a comparison. Centralized k-fold training
//! ([`crate::train`]) per model × method set and learning-rate control (`none lr×f` for every
//! `lr_factors` entry and Γ, at the learning rate `learning.lr × f`: a splitting set's faster
//! learning must be told from a larger step), resumable (a finished training keeps its
//! `summary.json`); then a table of accuracy and early-stopping epoch.

use super::config::CompareConfig;
use super::error::{ComparisonError, Result};
use super::grid::Cell;
use super::progress::ComparisonProgress;
use super::report::learning::{write_learning, LearningRow};
use super::variants::{variants, Variant};
use crate::training::{train, Quiet, TrainingConfig, TrainingSummary};
use candle_core::Device;
use std::path::Path;

/// Trains every model × variant into `out/learning/<model>/<variant>/` (a finished training is
/// read back) and writes the results and the report into `out`.
pub(super) fn run(
    config: &CompareConfig,
    out: &Path,
    command: &str,
    device: &Device,
    progress: &dyn ComparisonProgress,
) -> Result<()> {
    let l = &config.learning;
    let runs: Vec<Variant> = variants(config)
        .into_iter()
        .filter(|v| v.role == "method" || v.role == "lr-control")
        .collect();
    let trainings: Vec<Cell> = config
        .models
        .iter()
        .flat_map(|model| runs.iter().map(move |variant| (model, variant)))
        .enumerate()
        .map(|(index, (model, variant))| Cell {
            index,
            model: model.clone(),
            variant: variant.clone(),
            state: None,
            same_as: None,
        })
        .collect();
    progress.cells(trainings.len(), "trainings");
    let mut rows = Vec::new();
    for cell in &trainings {
        let (model, variant) = (&cell.model, &cell.variant);
        progress.cell_started(cell);
        let dir = out.join("learning").join(model.slug()).join(variant.slug());
        let summary = match TrainingSummary::read(&dir)? {
            Some(done) => done,
            None => {
                let training = TrainingConfig {
                    model: config.variant_model(model, variant),
                    data: config.dataset()?,
                    data_dir: config.data_dir.clone(),
                    epochs: l.epochs,
                    batch_size: l.batch_size,
                    // the variant's factor of the federated lr, applied to training's
                    lr: l.lr * variant.lr / config.lr,
                    folds: l.folds,
                    seed: config.seed,
                    patience: l.patience,
                    ..TrainingConfig::default()
                };
                train(&training, &dir, device, &mut Quiet).map_err(|e| {
                    ComparisonError::Training {
                        model: model.slug(),
                        variant: variant.label.clone(),
                        source: Box::new(e),
                    }
                })?
            }
        };
        rows.push(LearningRow {
            model: model.slug(),
            methods: variant.label.clone(),
            accuracy_mean: summary.test_accuracy.mean,
            accuracy_std: summary.test_accuracy.std,
            epoch_mean: summary.best_epoch.mean,
            epoch_std: summary.best_epoch.std,
        });
        progress.cell_finished(cell);
    }
    progress.cells_done();
    write_learning(config, &rows, out, command)
}
