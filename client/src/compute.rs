//! The client's local work on its share of the data: a FedSGD gradient or FedAvg local
//! training. Plain synchronous candle code, run on a blocking thread by the session.
//!
//! The run's [`Defence`] is applied here, after the update is computed and before the session
//! pushes it; the truth kept for the escrow stays the real batch.

use crate::defence::{self, Defence, Defend};
use crate::error::{ClientError, Result};
use candle_core::{DType, Tensor};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use synfed_data::{Batches, Dataset, Normalization};
use synfed_models::{train_epoch, Model};
use synfed_synapse::kernels::backward_final;
use synfed_synapse::{Mode, SynapticSgd};

/// The client's data: the training split, its normalisation and this client's share.
pub struct LocalData {
    pub train: Dataset,
    pub normalization: Normalization,
    pub indices: Vec<usize>,
}

/// The result of one task.
pub struct Work {
    /// One tensor per model tensor, in parameter-store order: gradients of trainable
    /// parameters (FedSGD) or θ_local − θ_global (FedAvg); for buffers (BatchNorm running
    /// statistics) always their change.
    pub update: Vec<(String, Tensor)>,
    /// Examples the update was computed on.
    pub examples: u64,
    /// Mean training loss.
    pub train_loss: f64,
    /// The images and labels used (for the escrow of simulated clients).
    pub truth: (Tensor, Tensor),
}

/// The examples of a FedSGD batch: `batch_size` of the share (all of it if smaller), drawn
/// without replacement from `seed`.
pub fn fedsgd_batch(indices: &[usize], batch_size: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    sample(&mut rng, indices.len(), batch_size.min(indices.len()))
        .into_iter()
        .map(|i| indices[i])
        .collect()
}

fn copies(model: &Model) -> Result<Vec<(String, Tensor)>> {
    Ok(model
        .params()
        .tensors()
        .into_iter()
        .map(|(n, t)| Ok((n, t.copy()?)))
        .collect::<candle_core::Result<Vec<_>>>()?)
}

/// The gradient of the mean loss of one batch at the current (global) weights, BatchNorm on
/// batch statistics.
pub fn fedsgd(model: &Model, data: &LocalData, batch_size: usize, seed: u64) -> Result<Work> {
    // on a rayon worker (see `synfed_synapse::worker`)
    synfed_synapse::on_worker(|| {
        let batch = fedsgd_batch(&data.indices, batch_size, seed);
        let (x, y) = data
            .train
            .batch(&batch, &data.normalization, model.device(), DType::F32)?;
        let before = copies(model)?;
        let loss = model.loss(&x, &y, Mode::Train)?;
        let train_loss = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let grads = backward_final(&loss)?;
        let mut update = Vec::with_capacity(before.len());
        for (param, (name, old)) in model.params().iter().zip(before) {
            let tensor = if param.role.is_trainable() {
                match grads.get(param.var.as_tensor()) {
                    Some(g) => g.detach(),
                    None => param.var.as_tensor().zeros_like()?,
                }
            } else {
                (param.var.as_tensor() - &old)?
            };
            update.push((name, tensor));
        }
        Ok(Work {
            update,
            examples: batch.len() as u64,
            train_loss,
            truth: (x, y),
        })
    })
}

/// The defence a task asks for: its text parsed (empty, from a server that predates
/// defences, is none). Text that does not parse is refused with the reason.
pub fn task_defence(text: &str) -> Result<Defence> {
    Defence::parse_or_none(text)
        .map_err(|e| ClientError::Config(format!("the task's defence `{text}`: {e}")))
}

/// Whether each tensor of the model (parameter-store order, as in [`Work::update`]) is
/// trainable.
pub fn trainable_flags(model: &Model) -> Vec<bool> {
    model
        .params()
        .iter()
        .map(|p| p.role.is_trainable())
        .collect()
}

/// Applies `defence` to a computed update, clipping per batch (a FedAvg difference, or a
/// FedSGD gradient without per-example clipping). Noise is drawn from `seed`.
pub fn defend(model: &Model, work: &mut Work, defence: &Defence, seed: u64) -> Result<()> {
    if defence.is_none() {
        return Ok(());
    }
    defence.apply(&mut work.update, &trainable_flags(model), seed)?;
    Ok(())
}

/// [`fedsgd`] with `defence` applied: per-example DP-SGD (each example's gradient clipped,
/// summed, noised, divided by the batch size) when it asks for it, otherwise the batch's
/// gradient defended per batch. BatchNorm buffers' changes are those of the whole batch in
/// either case.
pub fn fedsgd_defended(
    model: &Model,
    data: &LocalData,
    batch_size: usize,
    seed: u64,
    defence: &Defence,
) -> Result<Work> {
    let Some(dp) = defence.dp.filter(|d| d.per_example) else {
        let mut work = fedsgd(model, data, batch_size, seed)?;
        defend(model, &mut work, defence, seed)?;
        return Ok(work);
    };
    let batch = fedsgd_batch(&data.indices, batch_size, seed);
    let (x, y) = data
        .train
        .batch(&batch, &data.normalization, model.device(), DType::F32)?;
    let (mut update, train_loss) = defence::clipped_example_sum(model, &x, &y, dp.clip)?;
    defence.finish_example_sum(&mut update, &trainable_flags(model), batch.len(), seed)?;
    Ok(Work {
        update,
        examples: batch.len() as u64,
        train_loss,
        truth: (x, y),
    })
}

/// FedAvg local training: `epochs` epochs over the share (or `steps` steps when `epochs` is
/// 0) of `SynapticSgd` with learning rate `lr`, batches and rejuvenation drawn from `seed`.
pub fn fedavg(
    model: &Model,
    data: &LocalData,
    batch_size: usize,
    epochs: u32,
    steps: u32,
    lr: f64,
    seed: u64,
) -> Result<Work> {
    // on a rayon worker (see `synfed_synapse::worker`)
    synfed_synapse::on_worker(|| {
        let before = copies(model)?;
        let mut optimizer = SynapticSgd::new(model.params(), lr, seed);
        let (mut loss_sum, mut weight) = (0.0, 0.0);
        if epochs > 0 {
            for epoch in 0..epochs as usize {
                let stats = train_epoch(
                    model,
                    &mut optimizer,
                    &data.train,
                    &data.indices,
                    &data.normalization,
                    batch_size,
                    seed,
                    epoch,
                    |_| {},
                )?;
                loss_sum += stats.train_loss * data.indices.len() as f64;
                weight += data.indices.len() as f64;
            }
        } else {
            let mut done = 0u32;
            let mut epoch = 0u64;
            while done < steps {
                let batches =
                    Batches::shuffled(data.indices.iter().copied(), batch_size, seed, epoch)?;
                for batch in batches.iter() {
                    if done == steps {
                        break;
                    }
                    let (x, y) =
                        data.train
                            .batch(batch, &data.normalization, model.device(), DType::F32)?;
                    let loss = model.loss(&x, &y, Mode::Train)?;
                    loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * batch.len() as f64;
                    weight += batch.len() as f64;
                    optimizer.step(&backward_final(&loss)?)?;
                    done += 1;
                }
                epoch += 1;
            }
        }
        let mut update = Vec::with_capacity(before.len());
        for (param, (name, old)) in model.params().iter().zip(before) {
            update.push((name, (param.var.as_tensor() - &old)?));
        }
        let truth = data.train.batch(
            &data.indices,
            &data.normalization,
            model.device(),
            DType::F32,
        )?;
        Ok(Work {
            update,
            examples: data.indices.len() as u64,
            train_loss: if weight > 0.0 { loss_sum / weight } else { 0.0 },
            truth,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_seeded_subsets_of_the_share() {
        let share: Vec<usize> = (100..140).collect();
        let a = fedsgd_batch(&share, 8, 5);
        assert_eq!(a, fedsgd_batch(&share, 8, 5));
        assert_ne!(a, fedsgd_batch(&share, 8, 6));
        assert_eq!(a.len(), 8);
        assert!(a.iter().all(|i| share.contains(i)));
        let mut distinct = a.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 8);
        assert_eq!(fedsgd_batch(&share[..3], 8, 5).len(), 3);
    }

    #[test]
    fn a_task_without_defence_has_none_and_a_bad_one_is_refused() {
        assert_eq!(task_defence("").unwrap(), Defence::NONE);
        assert_eq!(task_defence("none").unwrap(), Defence::NONE);
        assert_eq!(
            task_defence("prune:p=0.1").unwrap().to_string(),
            "prune:p=0.1"
        );
        let err = task_defence("dp:C=1,sigma=x").unwrap_err();
        assert!(matches!(err, ClientError::Config(_)), "{err}");
        assert!(err.to_string().contains("sigma=x"), "{err}");
    }
}
