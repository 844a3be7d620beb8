//! Centralized training of one model with one method set, k-fold cross-validated, measuring
//! what the paper's Tables 1–2 report: test accuracy and learning speed (the early-stopping
//! epoch, §4.1). `synfed train` runs one [`TrainingConfig`]; `synfed compare --kind learning`
//! runs one per model × method set (and learning-rate control).
//!
//! Folds: with `folds = k ≥ 2` the training split is cut into k parts; fold i trains on the
//! other k − 1 and selects its early-stopping epoch on part i (validation), reporting the test
//! split's accuracy at that epoch. With `folds = 1` the whole training split is used and the
//! epoch is selected on the test split, as the paper's single runs do.
//!
//! Writes into its output folder: `epochs.csv` (one row per fold × epoch, written as it goes),
//! `summary.json` ([`TrainingSummary`]) and `model-fold<k>.safetensors` (weights, fuzzy
//! factors, ModelSpec).

use crate::error::{LabError, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use synfed_data::{kfold, DatasetName, Fold, Splits};
use synfed_models::learning_speed::early_stopping_epoch;
use synfed_models::{checkpoint, evaluate, train_epoch, InputShape, Model, ModelConfig, ModelSpec};
use synfed_synapse::SynapticSgd;

/// What to train and how (the options of `synfed train`).
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingConfig {
    /// The model: `--model`, `--methods`, `--width`, `--tau`, `--d-re`, `--gamma`.
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelConfig,
    /// Data set: mnist, cifar10, cifar100 (from --data-dir) or embedded demo-mnist, demo-cifar10.
    #[arg(long, default_value = "demo-mnist")]
    pub data: DatasetName,
    /// Directory holding the data set files (official formats, gzip or raw).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// SGD learning rate η (the paper: 0.01).
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Number of cross-validation folds (1 = train on the whole training split).
    #[arg(long, default_value_t = 1)]
    pub folds: usize,
    /// Seed of everything random: fold k's model is built from seed + k.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Early-stopping patience in epochs (the paper: 5).
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Use only the first N training examples (quick experiments).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Batch size of evaluation passes.
    #[arg(long, default_value_t = 500)]
    pub eval_batch_size: usize,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            model: ModelConfig::default(),
            data: DatasetName::DemoMnist,
            data_dir: None,
            epochs: 100,
            batch_size: 100,
            lr: 0.01,
            folds: 1,
            seed: 1,
            patience: 5,
            train_limit: None,
            eval_batch_size: 500,
        }
    }
}

impl TrainingConfig {
    /// Checks the values a user can get wrong, before any data are loaded.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        if self.epochs == 0 || self.batch_size == 0 || self.folds == 0 || self.eval_batch_size == 0
        {
            return Err(LabError::Config(
                "epochs, batch_size, eval_batch_size and folds must be at least 1".into(),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(LabError::Config(format!(
                "lr (the learning rate) must be a positive number, got {}",
                self.lr
            )));
        }
        Ok(())
    }
}

/// One epoch of one fold, as `epochs.csv` records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 0-based fold.
    pub fold: usize,
    /// 1-based epoch.
    pub epoch: usize,
    pub train_loss: f64,
    /// Accuracy on the fold's held-out part (absent with one fold).
    pub validation_accuracy: Option<f64>,
    pub test_loss: f64,
    pub test_accuracy: f64,
    /// Weights rejuvenation reset during the epoch.
    pub rejuvenated: usize,
    /// Seconds since the fold started.
    pub seconds: f64,
}

/// One fold's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: usize,
    pub seed: u64,
    /// 1-based early-stopping epoch.
    pub best_epoch: usize,
    pub test_accuracy: f64,
    /// Accuracy on the fold's held-out part at `best_epoch` (absent with one fold).
    pub validation_accuracy: Option<f64>,
    pub final_test_accuracy: f64,
    /// Test accuracy after each epoch.
    pub test_accuracy_by_epoch: Vec<f64>,
    pub rejuvenated_total: usize,
    pub seconds: f64,
}

/// Mean and sample standard deviation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    /// Mean and sample standard deviation (0 for a single value) of `values`.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Self {
            mean,
            std: var.sqrt(),
        }
    }
}

/// `summary.json`: the configuration, the model, every fold and their mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// The command line of the process that trained.
    pub command: String,
    #[serde(deserialize_with = "read_config")]
    pub config: TrainingConfig,
    pub spec: ModelSpec,
    pub parameters: usize,
    /// `cpu` or `cuda`.
    pub device: String,
    pub train_examples: usize,
    pub test_examples: usize,
    pub folds: Vec<FoldResult>,
    pub best_epoch: MeanStd,
    pub test_accuracy: MeanStd,
}

impl TrainingSummary {
    /// Reads the `summary.json` of a finished training in `dir`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(SUMMARY);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|source| LabError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LabError::Config(format!("{}: {e}", path.display())))
    }
}

/// Reads a summary's `config`, also in the form of older `summary.json` files, which name the
/// architecture `model` (the flag's name) where [`ModelConfig`] names it `arch`: finished
/// trainings stay readable, so a learning comparison resumes over them.
fn read_config<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<TrainingConfig, D::Error> {
    let mut value = serde_json::Value::deserialize(d)?;
    if let Some(fields) = value.as_object_mut() {
        if !fields.contains_key("arch") {
            if let Some(arch) = fields.remove("model") {
                fields.insert("arch".into(), arch);
            }
        }
    }
    serde_json::from_value(value).map_err(serde::de::Error::custom)
}

/// File name of the summary in a training's folder.
pub const SUMMARY: &str = "summary.json";

/// What a training reports as it goes (progress display); every method does nothing by
/// default.
pub trait TrainingProgress {
    /// Fold `fold` (0-based) of `folds` starts.
    fn fold_started(&mut self, _fold: usize, _folds: usize) {}
    /// `done` of `total` training examples of the current epoch are through.
    fn examples(&mut self, _epoch: usize, _done: usize, _total: usize) {}
    /// An epoch has been trained and evaluated.
    fn epoch_done(&mut self, _record: &EpochRecord) {}
}

/// Progress nobody watches.
pub struct Quiet;

impl TrainingProgress for Quiet {}

/// Trains `config` on `device`, writing its files into `out`; returns the summary it wrote.
pub fn train(
    config: &TrainingConfig,
    out: &Path,
    device: &Device,
    progress: &mut dyn TrainingProgress,
) -> Result<TrainingSummary> {
    config.validate()?;
    let splits: Splits = config.data.load(config.data_dir.as_deref())?;
    let train_len = config
        .train_limit
        .map_or(splits.train.len(), |n| n.min(splits.train.len()));
    let folds: Vec<Fold> = if config.folds == 1 {
        vec![Fold {
            train: (0..train_len).collect(),
            holdout: Vec::new(),
        }]
    } else {
        kfold(train_len, config.folds, config.seed)?
    };
    let shape = splits.train.shape();
    let spec = config.model.spec(
        InputShape::new(shape.channels, shape.height, shape.width),
        splits.train.num_classes(),
        config.seed,
    );
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| LabError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(out).map_err(io("create", out))?;
    let csv_path = out.join("epochs.csv");
    let mut csv = std::fs::File::create(&csv_path).map_err(io("create", &csv_path))?;
    writeln!(
        csv,
        "fold,epoch,train_loss,validation_accuracy,test_loss,test_accuracy,rejuvenated,seconds"
    )
    .map_err(io("write", &csv_path))?;
    let test_indices: Vec<usize> = (0..splits.test.len()).collect();
    let mut results = Vec::new();
    let mut parameters = 0;
    for (k, fold) in folds.iter().enumerate() {
        progress.fold_started(k, folds.len());
        let fold_spec = ModelSpec {
            seed: config.seed.wrapping_add(k as u64),
            ..spec.clone()
        };
        let model = Model::build(&fold_spec, DType::F32, device)?;
        parameters = model.num_params();
        tracing::info!(
            "fold {}/{}: {} ({} parameters, methods {}) on {} training / {} validation examples",
            k + 1,
            folds.len(),
            fold_spec.arch,
            parameters,
            fold_spec.methods,
            fold.train.len(),
            fold.holdout.len(),
        );
        let mut opt = SynapticSgd::new(model.params(), config.lr, fold_spec.seed);
        let started = Instant::now();
        let (mut selection, mut test_acc) = (Vec::new(), Vec::new());
        let mut rejuvenated_total = 0;
        for epoch in 1..=config.epochs {
            let total = fold.train.len();
            let stats = train_epoch(
                &model,
                &mut opt,
                &splits.train,
                &fold.train,
                &splits.normalization,
                config.batch_size,
                fold_spec.seed,
                epoch,
                |done| progress.examples(epoch, done, total),
            )?;
            rejuvenated_total += stats.rejuvenated;
            let validation = if fold.holdout.is_empty() {
                None
            } else {
                Some(evaluate(
                    &model,
                    &splits.train,
                    &fold.holdout,
                    &splits.normalization,
                    config.eval_batch_size,
                )?)
            };
            let test = evaluate(
                &model,
                &splits.test,
                &test_indices,
                &splits.normalization,
                config.eval_batch_size,
            )?;
            let record = EpochRecord {
                fold: k,
                epoch,
                train_loss: stats.train_loss,
                validation_accuracy: validation.map(|v| v.accuracy()),
                test_loss: test.loss,
                test_accuracy: test.accuracy(),
                rejuvenated: stats.rejuvenated,
                seconds: started.elapsed().as_secs_f64(),
            };
            writeln!(
                csv,
                "{},{},{:.6},{},{:.6},{:.6},{},{:.2}",
                record.fold,
                record.epoch,
                record.train_loss,
                record
                    .validation_accuracy
                    .map_or(String::new(), |a| format!("{a:.6}")),
                record.test_loss,
                record.test_accuracy,
                record.rejuvenated,
                record.seconds
            )
            .and_then(|()| csv.flush())
            .map_err(io("write", &csv_path))?;
            tracing::info!(
                "fold {} epoch {epoch}: train loss {:.4}, {}test accuracy {:.2}%, rejuvenated {}",
                k + 1,
                record.train_loss,
                record
                    .validation_accuracy
                    .map_or(String::new(), |a| format!(
                        "validation accuracy {:.2}%, ",
                        100.0 * a
                    )),
                100.0 * record.test_accuracy,
                record.rejuvenated
            );
            selection.push(record.validation_accuracy.unwrap_or(record.test_accuracy));
            test_acc.push(record.test_accuracy);
            progress.epoch_done(&record);
        }
        let best = early_stopping_epoch(&selection, config.patience).unwrap_or(0);
        let ckpt = out.join(format!("model-fold{k}.safetensors"));
        let state = serde_json::json!({
            "fold": k, "epochs": config.epochs, "lr": config.lr, "data": config.data.as_str()
        });
        checkpoint::save(&model, Some(&state), &ckpt)?;
        results.push(FoldResult {
            fold: k,
            seed: fold_spec.seed,
            best_epoch: best + 1,
            test_accuracy: test_acc[best],
            validation_accuracy: (!fold.holdout.is_empty()).then(|| selection[best]),
            final_test_accuracy: test_acc[test_acc.len() - 1],
            test_accuracy_by_epoch: test_acc,
            rejuvenated_total,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let epochs: Vec<f64> = results.iter().map(|r| r.best_epoch as f64).collect();
    let accs: Vec<f64> = results.iter().map(|r| r.test_accuracy).collect();
    let summary = TrainingSummary {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        config: config.clone(),
        spec,
        parameters,
        device: if device.is_cuda() { "cuda" } else { "cpu" }.into(),
        train_examples: train_len,
        test_examples: splits.test.len(),
        best_epoch: MeanStd::of(&epochs),
        test_accuracy: MeanStd::of(&accs),
        folds: results,
    };
    let path = out.join(SUMMARY);
    let text = serde_json::to_string_pretty(&summary)
        .map_err(|e| LabError::Config(format!("encoding {}: {e}", path.display())))?;
    std::fs::write(&path, text + "\n").map_err(io("write", &path))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_deviation() {
        let m = MeanStd::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.mean, 2.5);
        // Σ(x − 2.5)² = 5, / (n − 1) = 5/3
        assert!((m.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(MeanStd::of(&[7.0]).std, 0.0);
    }

    #[test]
    fn rejects_bad_options_before_loading_data() {
        for bad in [
            TrainingConfig {
                epochs: 0,
                ..Default::default()
            },
            TrainingConfig {
                lr: f64::NAN,
                ..Default::default()
            },
            TrainingConfig {
                model: ModelConfig {
                    gamma: 0,
                    ..Default::default()
                },
                ..Default::default()
            },
            TrainingConfig {
                model: ModelConfig {
                    width: Some(0),
                    ..Default::default()
                },
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        TrainingConfig::default().validate().unwrap();
    }

    #[test]
    fn trains_writes_its_files_and_reads_its_summary_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = TrainingConfig {
            epochs: 2,
            batch_size: 50,
            model: ModelConfig {
                width: Some(16),
                methods: "I+II+III".parse().unwrap(),
                ..Default::default()
            },
            train_limit: Some(200),
            ..Default::default()
        };
        let summary = train(&config, dir.path(), &Device::Cpu, &mut Quiet).unwrap();
        assert_eq!(summary.folds.len(), 1);
        assert_eq!(summary.folds[0].test_accuracy_by_epoch.len(), 2);
        assert_eq!(summary.train_examples, 200);
        let csv = std::fs::read_to_string(dir.path().join("epochs.csv")).unwrap();
        assert_eq!(csv.lines().count(), 3);
        assert!(dir.path().join("model-fold0.safetensors").exists());
        assert_eq!(TrainingSummary::read(dir.path()).unwrap(), Some(summary));
        assert_eq!(
            TrainingSummary::read(&dir.path().join("none")).unwrap(),
            None
        );
    }

    #[test]
    fn reads_summaries_that_name_the_architecture_model() {
        // a finished training of the repository's learning experiment, written with the
        // architecture under `model`
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../experiments/learning-mnist-3fold/learning/mlp/I");
        let summary = TrainingSummary::read(&dir).unwrap().unwrap();
        assert_eq!(summary.config.model.arch, synfed_models::Arch::Mlp);
        assert_eq!(summary.config.model.methods.to_string(), "I");
        assert_eq!(summary.config.model.width, None);
        assert_eq!((summary.config.folds, summary.config.epochs), (3, 30));
        // and the form written now reads back unchanged
        let text = serde_json::to_string(&summary).unwrap();
        assert!(text.contains("\"arch\":\"mlp\""), "{text}");
        assert_eq!(
            serde_json::from_str::<TrainingSummary>(&text).unwrap(),
            summary
        );
    }
}
