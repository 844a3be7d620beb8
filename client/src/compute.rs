//! The client's local work on its share of the data: a FedSGD gradient or FedAvg local
//! training. Plain synchronous candle code, run on a blocking thread by the session.
//!
//! The run's [`Defence`] is applied here, after the update is computed and before the session
//! pushes it; the truth kept for the escrow stays the real batch.
//!
//! When the run places fuzzy learning rates at the clients (`training.fuzzy_at = "client"`,
//! [`synfed_synapse::FuzzyPlacement`]), the client's [`PrivateFactors`] act as a gradient hook:
//! a FedSGD gradient is scaled by them before the defence (per example, before clipping, for
//! DP-SGD), and FedAvg's local steps use them in place of the global model's factors.
//!
//! Every computation takes the forward-pass [`Mode`] the task asks for (the run's
//! `training.bn_mode`): batch statistics ([`Mode::Train`], what federated clients do) or running
//! statistics ([`Mode::Eval`], the protocol of the reference attack). In eval mode the running
//! statistics stay as the server sent them, so their change in the update is zero.

use crate::defence::{self, Defence, Defend};
use crate::error::{ClientError, Result};
use candle_core::{DType, Tensor};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use synfed_data::{Batches, Dataset, Normalization};
use synfed_models::{train_epoch_in, Model, Update};
use synfed_synapse::kernels::backward_final;
use synfed_synapse::{BnMode, Mode, SynapticSgd};
use synfed_wire::proto::Task;

/// The client's data: the training split, its normalisation and this client's share.
pub struct LocalData {
    pub train: Dataset,
    pub normalization: Normalization,
    pub indices: Vec<usize>,
}

/// A client's private fuzzy factors (one tensor per synaptic weight, by name), drawn once from
/// a seed the server is never told; `None` where the run places I at the server.
pub type PrivateFactors = Option<std::sync::Arc<Vec<(String, Tensor)>>>;

/// Applies the gradient hook of [`PrivateFactors`] to every trainable tensor of `update`.
pub fn scale_by_private_factors(update: &mut Update, factors: &[(String, Tensor)]) -> Result<()> {
    for entry in update.iter_mut().filter(|e| e.is_trainable()) {
        entry.tensor =
            synfed_synapse::fuzzy_placement::scale_gradient(factors, &entry.name, &entry.tensor)?;
    }
    Ok(())
}

/// The result of one task.
pub struct Work {
    /// One entry per model tensor, in parameter-store order, each with its parameter's role:
    /// gradients of trainable parameters (FedSGD) or θ_local − θ_global (FedAvg); for buffers
    /// (BatchNorm running statistics) always their change (zero in eval mode).
    pub update: Update,
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

/// A copy of every tensor of the model, in parameter-store order (later steps change the
/// variables in place).
fn copies(model: &Model) -> Result<Vec<Tensor>> {
    Ok(model
        .params()
        .iter()
        .map(|p| p.var.as_tensor().copy())
        .collect::<candle_core::Result<Vec<_>>>()?)
}

/// The gradient of the mean loss of one batch at the current (global) weights, forward passes
/// in `mode` (BatchNorm on batch statistics for [`Mode::Train`], on running statistics for
/// [`Mode::Eval`]).
pub fn fedsgd(
    model: &Model,
    data: &LocalData,
    batch_size: usize,
    seed: u64,
    mode: Mode,
) -> Result<Work> {
    // on a rayon worker (see `synfed_synapse::worker`)
    synfed_synapse::on_worker(|| {
        let batch = fedsgd_batch(&data.indices, batch_size, seed);
        let (x, y) = data
            .train
            .batch(&batch, &data.normalization, model.device(), DType::F32)?;
        let before = copies(model)?;
        let loss = model.loss(&x, &y, mode)?;
        let train_loss = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let grads = backward_final(&loss)?;
        let mut update = Vec::with_capacity(before.len());
        for (param, old) in model.params().iter().zip(before) {
            let tensor = if param.role.is_trainable() {
                match grads.get(param.var.as_tensor()) {
                    Some(g) => g.detach(),
                    None => param.var.as_tensor().zeros_like()?,
                }
            } else {
                (param.var.as_tensor() - &old)?
            };
            update.push(tensor);
        }
        Ok(Work {
            update: Update::with_roles_of(model.params(), update)?,
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

/// Where a task's fuzzy learning rates act: unset (a server that predates the option) is the
/// server; a value this client does not know is refused with the value, rather than guessed.
pub fn task_fuzzy_at(task: &Task) -> Result<synfed_synapse::FuzzyPlacement> {
    task.fuzzy_at().map_err(|value| {
        ClientError::Protocol(format!(
            "the task asks for fuzzy placement {value}, which this client does not know"
        ))
    })
}

/// The BatchNorm mode a task asks for: unset (a server that predates the option) is train; a
/// value this client does not know is refused with the value, rather than guessed.
pub fn task_bn_mode(task: &Task) -> Result<BnMode> {
    task.bn_mode().map_err(|value| {
        ClientError::Protocol(format!(
            "the task asks for BatchNorm mode {value}, which this client does not know \
             (it knows train and eval; is the client older than the server?)"
        ))
    })
}

/// Applies `defence` to a computed update, clipping per batch (a FedAvg difference, or a
/// FedSGD gradient without per-example clipping). Noise is drawn from `seed`.
pub fn defend(work: &mut Work, defence: &Defence, seed: u64) -> Result<()> {
    if defence.is_none() {
        return Ok(());
    }
    defence.apply(&mut work.update, seed)?;
    Ok(())
}

/// [`fedsgd`] with the client's `private` fuzzy factors (if any) and `defence` applied:
/// per-example DP-SGD (each example's gradient scaled by the factors, clipped,
/// summed, noised, divided by the batch size) when it asks for it, otherwise the batch's
/// gradient defended per batch. BatchNorm buffers' changes are those of the whole batch in
/// either case (zero in eval mode). Forward passes in `mode`.
#[allow(clippy::too_many_arguments)]
pub fn fedsgd_defended(
    model: &Model,
    data: &LocalData,
    batch_size: usize,
    seed: u64,
    defence: &Defence,
    mode: Mode,
    private: &PrivateFactors,
) -> Result<Work> {
    let Some(dp) = defence.dp.filter(|d| d.per_example) else {
        let mut work = fedsgd(model, data, batch_size, seed, mode)?;
        if let Some(factors) = private {
            scale_by_private_factors(&mut work.update, factors)?;
        }
        defend(&mut work, defence, seed)?;
        return Ok(work);
    };
    let batch = fedsgd_batch(&data.indices, batch_size, seed);
    let (x, y) = data
        .train
        .batch(&batch, &data.normalization, model.device(), DType::F32)?;
    let factors = private.as_deref().map(Vec::as_slice);
    let (mut update, train_loss) =
        defence::clipped_example_sum(model, &x, &y, dp.clip, mode, factors)?;
    defence.finish_example_sum(&mut update, batch.len(), seed)?;
    Ok(Work {
        update,
        examples: batch.len() as u64,
        train_loss,
        truth: (x, y),
    })
}

/// FedAvg local training: `epochs` epochs over the share (or `steps` steps when `epochs` is
/// 0) of `SynapticSgd` with learning rate `lr`, batches and rejuvenation drawn from `seed`,
/// forward passes in `mode`; the steps use the client's `private` fuzzy factors where given,
/// otherwise the global model's.
#[allow(clippy::too_many_arguments)]
pub fn fedavg(
    model: &Model,
    data: &LocalData,
    batch_size: usize,
    epochs: u32,
    steps: u32,
    lr: f64,
    seed: u64,
    mode: Mode,
    private: &PrivateFactors,
) -> Result<Work> {
    // on a rayon worker (see `synfed_synapse::worker`)
    synfed_synapse::on_worker(|| {
        let before = copies(model)?;
        // a copy of the store shares the model's variables but has factors of its own
        let mut store = model.params().clone();
        if let Some(factors) = private {
            synfed_synapse::fuzzy_placement::install(&mut store, factors)?;
        }
        let mut optimizer = SynapticSgd::new(&store, lr, seed);
        let (mut loss_sum, mut weight) = (0.0, 0.0);
        if epochs > 0 {
            for epoch in 0..epochs as usize {
                let stats = train_epoch_in(
                    mode,
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
                    let loss = model.loss(&x, &y, mode)?;
                    loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * batch.len() as f64;
                    weight += batch.len() as f64;
                    optimizer.step(&backward_final(&loss)?)?;
                    done += 1;
                }
                epoch += 1;
            }
        }
        let mut update = Vec::with_capacity(before.len());
        for (param, old) in model.params().iter().zip(before) {
            update.push((param.var.as_tensor() - &old)?);
        }
        let update = Update::with_roles_of(model.params(), update)?;
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
    use candle_core::Device;
    use synfed_models::{Arch, InputShape, ModelSpec};
    use synfed_synapse::MethodSet;

    /// Geiping's ConvNet (eight BatchNorms) at width 4 on the embedded MNIST subset, and a
    /// share of 64 images.
    fn batch_norm_model_and_share() -> (ModelSpec, LocalData) {
        let splits = synfed_data::load("demo-mnist", None).unwrap();
        let spec = ModelSpec::new(
            Arch::ConvNet,
            InputShape::new(1, 28, 28),
            10,
            MethodSet::NONE,
            3,
        )
        .with_width(4);
        let data = LocalData {
            train: splits.train,
            normalization: splits.normalization,
            indices: (100..164).collect(),
        };
        (spec, data)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The model's BatchNorm running statistics (every tensor that is not trainable).
    fn running_statistics(model: &Model) -> Vec<(String, Vec<f32>)> {
        model
            .params()
            .iter()
            .filter(|p| !p.role.is_trainable())
            .map(|p| (p.name.clone(), values(p.var.as_tensor())))
            .collect()
    }

    /// The trainable part of an update, flattened, in `params().trainable()` order.
    fn trainable_update(work: &Work) -> Vec<Vec<f32>> {
        work.update.trainable().map(|e| values(&e.tensor)).collect()
    }

    fn max_abs_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .flat_map(|(a, b)| {
                assert_eq!(a.len(), b.len());
                a.iter().zip(b).map(|(x, y)| (x - y).abs())
            })
            .fold(0f32, f32::max)
    }

    fn max_abs(a: &[Vec<f32>]) -> f32 {
        a.iter().flatten().fold(0f32, |m, x| m.max(x.abs()))
    }

    #[test]
    fn an_eval_mode_fedsgd_update_is_the_eval_gradient_and_keeps_the_running_statistics() {
        let (spec, data) = batch_norm_model_and_share();
        let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
        let initial = running_statistics(&model);
        assert_eq!(initial.len(), 16, "ConvNet has 8 BatchNorms");
        // A train-mode update first: it moves the running statistics (its change is part of the
        // update), so that eval mode below normalises with statistics of the data rather than
        // the initial 0 and 1.
        let first = fedsgd(&model, &data, 16, 11, Mode::Train).unwrap();
        let moved = running_statistics(&model);
        assert_ne!(moved, initial, "train mode updates the running statistics");
        assert!(first
            .update
            .iter()
            .any(|e| !e.is_trainable() && values(&e.tensor).iter().any(|v| *v != 0.0)));

        let seed = 5;
        let work = fedsgd(&model, &data, 8, seed, Mode::Eval).unwrap();
        assert_eq!(work.examples, 8);
        assert_eq!(
            running_statistics(&model),
            moved,
            "eval mode leaves the running statistics alone"
        );
        for e in work.update.iter().filter(|e| !e.is_trainable()) {
            assert!(
                values(&e.tensor).iter().all(|v| *v == 0.0),
                "{} changed",
                e.name
            );
        }

        // The same batch, independently: the model's eval-mode gradient at the same weights.
        let batch = fedsgd_batch(&data.indices, 8, seed);
        let (x, y) = data
            .train
            .batch(&batch, &data.normalization, &Device::Cpu, DType::F32)
            .unwrap();
        assert_eq!(values(&work.truth.0), values(&x));
        let eval: Vec<Vec<f32>> = model
            .gradients(&x, &y, Mode::Eval)
            .unwrap()
            .iter()
            .map(values)
            .collect();
        let got = trainable_update(&work);
        let scale = max_abs(&eval);
        assert!(scale > 0.0);
        let d = max_abs_difference(&got, &eval);
        assert!(
            d <= 1e-6 * scale.max(1.0),
            "eval update vs eval gradient: {d}"
        );

        // ... and not the train-mode (batch statistics) gradient of that batch.
        let train: Vec<Vec<f32>> = model
            .gradients(&x, &y, Mode::TrainFrozenStats)
            .unwrap()
            .iter()
            .map(values)
            .collect();
        let d = max_abs_difference(&got, &train);
        assert!(
            d > 1e-2 * scale,
            "the eval update equals the train gradient ({d} of {scale})"
        );
        let trained = fedsgd(&model, &data, 8, seed, Mode::Train).unwrap();
        let d = max_abs_difference(&trainable_update(&trained), &train);
        assert!(
            d <= 1e-6 * scale.max(1.0),
            "train update vs train gradient: {d}"
        );
    }

    #[test]
    fn an_eval_mode_fedavg_step_descends_the_eval_gradient_and_keeps_the_running_statistics() {
        let (spec, data) = batch_norm_model_and_share();
        let (lr, seed, batch_size) = (0.05, 9, 8);
        let global = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
        let local = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
        let initial = running_statistics(&local);
        let work = fedavg(&local, &data, batch_size, 0, 1, lr, seed, Mode::Eval, &None).unwrap();
        assert_eq!(running_statistics(&local), initial);
        for e in work.update.iter().filter(|e| !e.is_trainable()) {
            assert!(
                values(&e.tensor).iter().all(|v| *v == 0.0),
                "{} changed",
                e.name
            );
        }
        // One plain SGD step (no mechanisms) on the first batch of epoch 0: −lr · ∇ in eval mode.
        let batches = Batches::shuffled(data.indices.iter().copied(), batch_size, seed, 0).unwrap();
        let first = batches.iter().next().unwrap();
        let (x, y) = data
            .train
            .batch(first, &data.normalization, &Device::Cpu, DType::F32)
            .unwrap();
        let expected: Vec<Vec<f32>> = global
            .gradients(&x, &y, Mode::Eval)
            .unwrap()
            .iter()
            .map(|g| values(&(g * -lr).unwrap()))
            .collect();
        let got = trainable_update(&work);
        let scale = max_abs(&expected);
        let d = max_abs_difference(&got, &expected);
        assert!(d <= 1e-5 * scale.max(1e-3), "{d} (scale {scale})");

        // Train mode takes another step and moves the running statistics.
        let local = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
        let trained = fedavg(
            &local,
            &data,
            batch_size,
            0,
            1,
            lr,
            seed,
            Mode::Train,
            &None,
        )
        .unwrap();
        assert_ne!(running_statistics(&local), initial);
        assert!(max_abs_difference(&trainable_update(&trained), &expected) > 1e-2 * scale);
    }

    #[test]
    fn a_task_bn_mode_is_read_and_an_unknown_one_is_refused() {
        let mut task = Task::default();
        assert_eq!(task_bn_mode(&task).unwrap(), BnMode::Train);
        task.batch_norm_mode = synfed_wire::proto::BatchNormMode::Eval as i32;
        assert_eq!(task_bn_mode(&task).unwrap(), BnMode::Eval);
        task.batch_norm_mode = 42;
        let err = task_bn_mode(&task).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err}");
        assert!(err.to_string().contains("42"), "{err}");
    }

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
