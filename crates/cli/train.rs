//! `synfed train`: centralized training of one model with one method set, k-fold
//! cross-validated, measuring what the paper's Tables 1–2 report: test accuracy and learning
//! speed (the early-stopping epoch, §4.1).
//!
//! Folds: with `--folds k ≥ 2` the training split is cut into k parts; fold i trains on the
//! other k − 1 and selects its early-stopping epoch on part i (validation), reporting the test
//! split's accuracy at that epoch. With `--folds 1` the whole training split is used and the
//! epoch is selected on the test split, as the paper's single runs do.
//!
//! Outputs in `--out`: `epochs.csv` (one row per fold × epoch, written as it goes),
//! `summary.json`, `model-fold<k>.safetensors` (weights, fuzzy factors, ModelSpec) and
//! `accuracy.png` / `accuracy.svg`.

use crate::device::{describe, DeviceChoice};
use crate::plot::{self, LineChart, Series};
use crate::progress;
use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use synfed_data::{kfold, DatasetName, Fold, Splits};
use synfed_models::learning_speed::early_stopping_epoch;
use synfed_models::{checkpoint, evaluate, train_epoch, Arch, InputShape, Model, ModelSpec};
use synfed_synapse::{Hyper, MethodSet, SynapticSgd};

#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Args {
    /// Architecture: mlp, alexnet, resnet20, resnet32, resnet56, convnet, lenet.
    #[arg(long, default_value = "mlp")]
    #[serde(serialize_with = "crate::serde_text::display")]
    pub model: Arch,
    /// Data set: mnist, cifar10, cifar100 (from --data-dir) or embedded demo-mnist, demo-cifar10.
    #[arg(long, default_value = "demo-mnist")]
    pub data: DatasetName,
    /// Directory holding the data set files (official formats, gzip or raw).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Method set: none, I, II, III, I+II, … I+II+III (or fuzzy, rejuvenation, splitting).
    #[arg(long, default_value = "none")]
    pub methods: MethodSet,
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
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    #[serde(serialize_with = "crate::serde_text::display")]
    pub device: DeviceChoice,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Base width instead of the architecture's published one (e.g. hidden units of the mlp).
    #[arg(long)]
    pub width: Option<usize>,
    /// τ of fuzzy learning rates (I).
    #[arg(long, default_value_t = 0.09)]
    pub tau: f64,
    /// d_re of weight rejuvenation (II).
    #[arg(long, default_value_t = 14.0)]
    pub d_re: f64,
    /// Γ of weight splitting (III).
    #[arg(long, default_value_t = 2)]
    pub gamma: usize,
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

/// One fold's outcome.
#[derive(Serialize)]
struct FoldResult {
    fold: usize,
    seed: u64,
    /// 1-based early-stopping epoch.
    best_epoch: usize,
    test_accuracy: f64,
    /// Accuracy on the fold's held-out part at `best_epoch` (absent with one fold).
    validation_accuracy: Option<f64>,
    final_test_accuracy: f64,
    rejuvenated_total: usize,
    seconds: f64,
}

#[derive(Serialize)]
struct MeanStd {
    mean: f64,
    std: f64,
}

impl MeanStd {
    /// Mean and sample standard deviation (0 for a single value).
    fn of(values: &[f64]) -> Self {
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

#[derive(Serialize)]
struct Summary<'a> {
    command: String,
    args: &'a Args,
    spec: &'a ModelSpec,
    parameters: usize,
    device: String,
    train_examples: usize,
    test_examples: usize,
    folds: Vec<FoldResult>,
    best_epoch: MeanStd,
    test_accuracy: MeanStd,
}

impl Args {
    /// Arguments from a command-line style list (used by `synfed compare --kind learning`, so
    /// that the defaults stay in the `#[arg]` attributes above).
    pub fn from_argv(argv: &[String]) -> Result<Self> {
        use clap::{Args as _, FromArgMatches as _};
        let matches = Self::augment_args(clap::Command::new("train"))
            .no_binary_name(true)
            .try_get_matches_from(argv)
            .context("building the training options")?;
        Self::from_arg_matches(&matches).context("building the training options")
    }
}

pub fn run(args: Args) -> Result<()> {
    let hyper = Hyper {
        tau: args.tau,
        d_re: args.d_re,
        gamma: args.gamma,
    };
    hyper.validate()?;
    if args.epochs == 0 || args.batch_size == 0 || args.folds == 0 {
        bail!("--epochs, --batch-size and --folds must be at least 1");
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", args.lr);
    }
    let device = args.device.open()?;
    let splits: Splits = args
        .data
        .load(args.data_dir.as_deref())
        .with_context(|| format!("loading data set {}", args.data.as_str()))?;
    let train_len = args
        .train_limit
        .map_or(splits.train.len(), |n| n.min(splits.train.len()));
    let folds: Vec<Fold> = if args.folds == 1 {
        vec![Fold {
            train: (0..train_len).collect(),
            holdout: Vec::new(),
        }]
    } else {
        kfold(train_len, args.folds, args.seed)?
    };
    let shape = splits.train.shape();
    let mut spec = ModelSpec::new(
        args.model,
        InputShape::new(shape.channels, shape.height, shape.width),
        splits.train.num_classes(),
        args.methods,
        args.seed,
    );
    spec.hyper = hyper;
    spec.width = args.width;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let csv_path = args.out.join("epochs.csv");
    let mut csv = std::fs::File::create(&csv_path)
        .with_context(|| format!("creating {}", csv_path.display()))?;
    writeln!(
        csv,
        "fold,epoch,train_loss,validation_accuracy,test_loss,test_accuracy,rejuvenated,seconds"
    )?;
    let test_indices: Vec<usize> = (0..splits.test.len()).collect();
    let mut results = Vec::new();
    let mut curves = Vec::new();
    let mut parameters = 0;
    let overall = progress::bar((args.folds * args.epochs) as u64, "epochs");
    overall.set_message(format!("{} {}", args.model, args.methods));
    for (k, fold) in folds.iter().enumerate() {
        let fold_spec = ModelSpec {
            seed: args.seed.wrapping_add(k as u64),
            ..spec.clone()
        };
        let model = Model::build(&fold_spec, DType::F32, &device)?;
        parameters = model.num_params();
        tracing::info!(
            "fold {}/{}: {} ({} parameters, methods {}) on {} training / {} validation examples, device {}",
            k + 1,
            folds.len(),
            fold_spec.arch,
            parameters,
            fold_spec.methods,
            fold.train.len(),
            fold.holdout.len(),
            describe(&device)
        );
        let mut opt = SynapticSgd::new(model.params(), args.lr, fold_spec.seed);
        let started = Instant::now();
        let (mut selection, mut test_acc, mut curve) = (Vec::new(), Vec::new(), Vec::new());
        let mut rejuvenated_total = 0;
        for epoch in 1..=args.epochs {
            let bar = progress::bar(fold.train.len() as u64, "examples");
            bar.set_message(format!("fold {} epoch {epoch}", k + 1));
            let stats = train_epoch(
                &model,
                &mut opt,
                &splits.train,
                &fold.train,
                &splits.normalization,
                args.batch_size,
                fold_spec.seed,
                epoch,
                |done| bar.set_position(done as u64),
            )?;
            bar.finish_and_clear();
            rejuvenated_total += stats.rejuvenated;
            let validation = if fold.holdout.is_empty() {
                None
            } else {
                Some(evaluate(
                    &model,
                    &splits.train,
                    &fold.holdout,
                    &splits.normalization,
                    args.eval_batch_size,
                )?)
            };
            let test = evaluate(
                &model,
                &splits.test,
                &test_indices,
                &splits.normalization,
                args.eval_batch_size,
            )?;
            let seconds = started.elapsed().as_secs_f64();
            let validation_accuracy = validation.map(|v| v.accuracy());
            writeln!(
                csv,
                "{},{},{:.6},{},{:.6},{:.6},{},{:.2}",
                k,
                epoch,
                stats.train_loss,
                validation_accuracy.map_or(String::new(), |a| format!("{a:.6}")),
                test.loss,
                test.accuracy(),
                stats.rejuvenated,
                seconds
            )?;
            csv.flush()?;
            tracing::info!(
                "fold {} epoch {epoch}: train loss {:.4}, {}test accuracy {:.2}%, rejuvenated {}",
                k + 1,
                stats.train_loss,
                validation_accuracy.map_or(String::new(), |a| format!(
                    "validation accuracy {:.2}%, ",
                    100.0 * a
                )),
                100.0 * test.accuracy(),
                stats.rejuvenated
            );
            selection.push(validation_accuracy.unwrap_or(test.accuracy()));
            test_acc.push(test.accuracy());
            curve.push((epoch as f64, 100.0 * test.accuracy()));
            overall.inc(1);
        }
        let best = early_stopping_epoch(&selection, args.patience).unwrap_or(0);
        let ckpt = args.out.join(format!("model-fold{k}.safetensors"));
        let state = serde_json::json!({ "fold": k, "epochs": args.epochs, "lr": args.lr, "data": args.data.as_str() });
        checkpoint::save(&model, Some(&state), &ckpt)?;
        results.push(FoldResult {
            fold: k,
            seed: fold_spec.seed,
            best_epoch: best + 1,
            test_accuracy: test_acc[best],
            validation_accuracy: (!fold.holdout.is_empty()).then(|| selection[best]),
            final_test_accuracy: test_acc[test_acc.len() - 1],
            rejuvenated_total,
            seconds: started.elapsed().as_secs_f64(),
        });
        curves.push(Series {
            label: format!("fold {}", k + 1),
            points: curve,
        });
    }
    overall.finish_and_clear();
    let epochs: Vec<f64> = results.iter().map(|r| r.best_epoch as f64).collect();
    let accs: Vec<f64> = results.iter().map(|r| r.test_accuracy).collect();
    let summary = Summary {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        args: &args,
        spec: &spec,
        parameters,
        device: describe(&device),
        train_examples: train_len,
        test_examples: splits.test.len(),
        best_epoch: MeanStd::of(&epochs),
        test_accuracy: MeanStd::of(&accs),
        folds: results,
    };
    write_json(&args.out.join("summary.json"), &summary)?;
    let title = format!(
        "{} on {}, methods {}",
        args.model,
        args.data.as_str(),
        args.methods
    );
    let chart = LineChart {
        title: &title,
        x_label: "epoch",
        y_label: "test accuracy [%]",
        series: &curves,
        y_range: None,
    };
    plot::write_png(&chart, &args.out.join("accuracy.png"), 800, 500)?;
    plot::write_svg(&chart, &args.out.join("accuracy.svg"), 800, 500)?;
    tracing::info!(
        "early-stopping epoch {:.1} ± {:.1}, test accuracy {:.2}% ± {:.2}; results in {}",
        summary.best_epoch.mean,
        summary.best_epoch.std,
        100.0 * summary.test_accuracy.mean,
        100.0 * summary.test_accuracy.std,
        args.out.display()
    );
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
