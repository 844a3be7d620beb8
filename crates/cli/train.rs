//! `synfed train`: centralized training of one model with one method set, k-fold
//! cross-validated ([`synfed_lab::training`]), with progress bars and the accuracy chart
//! (`accuracy.png` / `accuracy.svg`) beside the library's `epochs.csv`, `summary.json` and
//! checkpoints.

use crate::device::DeviceChoice;
use crate::progress;
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use std::path::PathBuf;
use synfed_lab::training::{EpochRecord, TrainingProgress};
use synfed_lab::{train, TrainingConfig};
use synfed_report::{write_png, write_svg, LineChart, Series};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    #[command(flatten)]
    pub training: TrainingConfig,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Progress bars: epochs over all folds, and the examples of the current epoch.
struct Bars {
    overall: ProgressBar,
    epoch: Option<ProgressBar>,
    fold: usize,
}

impl TrainingProgress for Bars {
    fn fold_started(&mut self, fold: usize, _folds: usize) {
        self.fold = fold;
    }

    fn examples(&mut self, epoch: usize, done: usize, total: usize) {
        let bar = self.epoch.get_or_insert_with(|| {
            let bar = progress::bar(total as u64, "examples");
            bar.set_message(format!("fold {} epoch {epoch}", self.fold + 1));
            bar
        });
        bar.set_position(done as u64);
    }

    fn epoch_done(&mut self, _record: &EpochRecord) {
        if let Some(bar) = self.epoch.take() {
            bar.finish_and_clear();
        }
        self.overall.inc(1);
    }
}

pub fn run(args: Args) -> Result<()> {
    let t = &args.training;
    let device = args.device.open()?;
    let overall = progress::bar((t.folds * t.epochs) as u64, "epochs");
    overall.set_message(format!("{} {}", t.model.arch, t.model.methods));
    let mut bars = Bars {
        overall,
        epoch: None,
        fold: 0,
    };
    let summary = train(t, &args.out, &device, &mut bars).with_context(|| {
        format!(
            "training {} ({}) on {}",
            t.model.arch,
            t.model.methods,
            t.data.as_str()
        )
    })?;
    bars.overall.finish_and_clear();
    let curves: Vec<Series> = summary
        .folds
        .iter()
        .map(|fold| Series {
            label: format!("fold {}", fold.fold + 1),
            points: (1..)
                .zip(&fold.test_accuracy_by_epoch)
                .map(|(epoch, acc)| (epoch as f64, 100.0 * acc))
                .collect(),
        })
        .collect();
    let title = format!(
        "{} on {}, methods {}",
        t.model.arch,
        t.data.as_str(),
        t.model.methods
    );
    let chart = LineChart {
        title: &title,
        x_label: "epoch",
        y_label: "test accuracy [%]",
        series: &curves,
        y_range: None,
    };
    write_png(&chart, &args.out.join("accuracy.png"), 800, 500)?;
    write_svg(&chart, &args.out.join("accuracy.svg"), 800, 500)?;
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
