//! Centralized training and evaluation over a [`Dataset`], the paper's setting (plain SGD,
//! cross-entropy, §4.1). Federated clients run the same epoch loop on their partition.

use crate::error::{ModelError, Result};
use crate::loss;
use crate::model::Model;
use candle_core::DType;
use synfed_data::{Batches, Dataset, Normalization};
use synfed_synapse::kernels::backward_final;
use synfed_synapse::{on_worker, Mode, SynapticSgd};

/// What one training epoch did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochStats {
    /// Mean training loss over the epoch's batches (weighted by batch size).
    pub train_loss: f64,
    /// Weights re-initialised by rejuvenation during the epoch.
    pub rejuvenated: usize,
    /// Optimizer steps taken.
    pub steps: usize,
}

/// Trains `model` for one epoch on `indices` of `data`, in an order shuffled from
/// `(seed, epoch)`. `on_step` is called after every step with the number of examples done.
/// BatchNorm normalises with batch statistics and updates the running ones ([`Mode::Train`]).
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    model: &Model,
    opt: &mut SynapticSgd,
    data: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    batch_size: usize,
    seed: u64,
    epoch: usize,
    on_step: impl FnMut(usize),
) -> Result<EpochStats> {
    train_epoch_in(
        Mode::Train,
        model,
        opt,
        data,
        indices,
        norm,
        batch_size,
        seed,
        epoch,
        on_step,
    )
}

/// [`train_epoch`] with the forward passes in `mode`: a federated client whose run asks for
/// BatchNorm on running statistics (`Mode::Eval`) trains its local steps that way, leaving the
/// running statistics as the server sent them.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch_in(
    mode: Mode,
    model: &Model,
    opt: &mut SynapticSgd,
    data: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    batch_size: usize,
    seed: u64,
    epoch: usize,
    mut on_step: impl FnMut(usize),
) -> Result<EpochStats> {
    let batches = Batches::shuffled(indices.iter().copied(), batch_size, seed, epoch as u64)?;
    let mut stats = EpochStats::default();
    let (mut loss_sum, mut seen) = (0.0, 0usize);
    for (step, batch) in batches.iter().enumerate() {
        let (x, y) = data.batch(batch, norm, model.device(), DType::F32)?;
        // the whole step on a rayon worker (see `synfed_synapse::worker`)
        let (value, report) = on_worker(|| -> Result<_> {
            let loss = model.loss(&x, &y, mode)?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Ok((value, None));
            }
            Ok((value, Some(opt.step(&backward_final(&loss)?)?)))
        })?;
        let Some(report) = report else {
            return Err(ModelError::Diverged {
                epoch,
                step,
                loss: value,
            });
        };
        stats.rejuvenated += report.rejuvenated;
        stats.steps += 1;
        loss_sum += value * batch.len() as f64;
        seen += batch.len();
        on_step(seen);
    }
    stats.train_loss = if seen > 0 {
        loss_sum / seen as f64
    } else {
        0.0
    };
    Ok(stats)
}

/// Loss and accuracy of a model on a set of examples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub correct: usize,
    pub total: usize,
}

impl Evaluation {
    /// Fraction of correct predictions (0 for an empty set).
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Evaluates `model` (BatchNorm in eval mode) on `indices` of `data`.
pub fn evaluate(
    model: &Model,
    data: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    batch_size: usize,
) -> Result<Evaluation> {
    let mut eval = Evaluation::default();
    let mut loss_sum = 0.0;
    for batch in Batches::sequential(indices.iter().copied(), batch_size)?.iter() {
        let (x, y) = data.batch(batch, norm, model.device(), DType::F32)?;
        let logits = model.forward(&x, Mode::Eval)?;
        let batch_loss = loss::cross_entropy(&logits, &y)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        loss_sum += batch_loss * batch.len() as f64;
        eval.correct += loss::accuracy(&logits, &y)?;
        eval.total += batch.len();
    }
    eval.loss = if eval.total > 0 {
        loss_sum / eval.total as f64
    } else {
        0.0
    };
    Ok(eval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Arch, InputShape, ModelSpec};
    use candle_core::Device;
    use synfed_synapse::MethodSet;

    #[test]
    fn an_mlp_learns_the_demo_digits_and_evaluation_counts_right() {
        let splits = synfed_data::load("demo-mnist", None).unwrap();
        let spec = ModelSpec::new(Arch::Mlp, InputShape::new(1, 28, 28), 10, MethodSet::ALL, 1)
            .with_width(64);
        let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
        let train: Vec<usize> = (0..splits.train.len()).collect();
        let test: Vec<usize> = (0..splits.test.len()).collect();
        let norm = &splits.normalization;
        let before = evaluate(&model, &splits.test, &test, norm, 128).unwrap();
        assert_eq!(before.total, splits.test.len());
        let mut opt = SynapticSgd::new(model.params(), 0.1, 1);
        let mut steps_seen = 0;
        let mut stats = EpochStats::default();
        for epoch in 0..2 {
            stats = train_epoch(
                &model,
                &mut opt,
                &splits.train,
                &train,
                norm,
                32,
                1,
                epoch,
                |_| steps_seen += 1,
            )
            .unwrap();
        }
        assert_eq!(stats.steps, splits.train.len().div_ceil(32));
        assert_eq!(steps_seen, 2 * stats.steps);
        assert!(stats.rejuvenated > 0);
        let after = evaluate(&model, &splits.test, &test, norm, 128).unwrap();
        assert!(after.accuracy() > 0.7, "accuracy {}", after.accuracy());
        assert!(after.loss < before.loss);
    }
}
