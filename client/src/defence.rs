//! Client-side defences against gradient inversion: DP-SGD style clipping with Gaussian noise,
//! and gradient pruning.
//!
//! The simulator measures how well an honest-but-curious server reconstructs a client's batch
//! from its update; these are the standard counter-measures a client can take before the
//! update leaves it, so the attacks can be scored against defended updates as well as plain
//! ones. The server forwards the run's `training.defence` text in every task; the client
//! parses it (refusing text it cannot parse) and applies it after computing the update and
//! before pushing it. The escrowed truth stays the real batch.
//!
//! The text forms are those of [`synfed_defence::Defence`]; this module applies them, always
//! in the order clip → noise → prune.
//!
//! Only trainable parameters are clipped, noised or pruned: BatchNorm running-statistic deltas
//! in the update are left alone. Noise comes from a ChaCha stream of the task seed, so the same
//! task gives the same bytes.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use synfed_models::{Model, Update, UpdateEntry};
use synfed_synapse::kernels::backward_final;
use synfed_synapse::{Mode, Role};

pub use synfed_defence::{Defence, DefenceError, Dp, Prune};

/// The ChaCha stream of the defence's noise (the task's batch sampling uses stream 0 of the
/// same seed).
const NOISE_STREAM: u64 = 0xDEF0_0001;

/// What went wrong applying a defence to an update.
#[derive(Debug, thiserror::Error)]
pub enum DefendError {
    #[error("per-example clipping needs a model without BatchNorm or BatchNorm on running statistics (training.bn_mode = \"eval\"): batch statistics mix the examples, and `{0}` has BatchNorm")]
    PerExampleBatchNorm(String),
    #[error("the update's norm is not finite ({0})")]
    NonFinite(f64),
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("model: {0}")]
    Model(#[from] synfed_models::ModelError),
    #[error("private fuzzy factors: {0}")]
    Factors(#[from] synfed_synapse::SynapseError),
}

impl From<DefendError> for crate::ClientError {
    fn from(e: DefendError) -> Self {
        match e {
            DefendError::Tensor(e) => crate::ClientError::Candle(e),
            DefendError::Model(e) => crate::ClientError::Model(e),
            DefendError::Factors(e) => crate::ClientError::Synapse(e),
            other => crate::ClientError::Config(format!("defence: {other}")),
        }
    }
}

pub type Result<T, E = DefendError> = std::result::Result<T, E>;

/// Applying a [`Defence`] to an update.
pub trait Defend {
    /// Defends an update in place, clipping the whole update (per batch): clip the global L2
    /// norm of the trainable tensors to C, add N(0, σ²C²) to each of their elements, prune.
    /// Entries that are not trainable (BatchNorm running statistics) are left alone. Noise is
    /// drawn from a ChaCha stream of `seed`.
    ///
    /// Per-example DP is applied this way too (a FedAvg difference has no per-example form);
    /// FedSGD clips per example with [`clipped_example_sum`] and
    /// [`finish_example_sum`](Self::finish_example_sum) instead.
    fn apply(&self, update: &mut Update, seed: u64) -> Result<()>;

    /// Finishes per-example DP-SGD: `sum` holds the sum of the `batch` clipped per-example
    /// gradients; adds N(0, σ²C²) to each trainable element, divides by `batch`, then prunes.
    fn finish_example_sum(&self, sum: &mut Update, batch: usize, seed: u64) -> Result<()>;
}

impl Defend for Defence {
    fn apply(&self, update: &mut Update, seed: u64) -> Result<()> {
        if let Some(dp) = self.dp {
            clip(update, dp.clip)?;
            add_noise(update, dp.sigma * dp.clip, &mut noise_rng(seed))?;
        }
        if let Some(prune) = self.prune {
            self::prune(update, prune.keep)?;
        }
        Ok(())
    }

    fn finish_example_sum(&self, sum: &mut Update, batch: usize, seed: u64) -> Result<()> {
        if let Some(dp) = self.dp {
            add_noise(sum, dp.sigma * dp.clip, &mut noise_rng(seed))?;
        }
        let scale = 1.0 / batch.max(1) as f64;
        for entry in sum.trainable_mut() {
            entry.tensor = (&entry.tensor * scale)?;
        }
        if let Some(prune) = self.prune {
            self::prune(sum, prune.keep)?;
        }
        Ok(())
    }
}

/// The noise generator of a task: a ChaCha stream of the task seed of its own.
pub fn noise_rng(seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(NOISE_STREAM);
    rng
}

/// The L2 norm of the trainable tensors of `update` taken together.
pub fn global_norm(update: &Update) -> Result<f64> {
    let mut sum = 0.0;
    for entry in update.trainable() {
        sum += entry
            .tensor
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(sum.sqrt())
}

/// Scales the trainable tensors of `update` so that their global L2 norm is at most `c`;
/// returns the norm before clipping.
pub fn clip(update: &mut Update, c: f64) -> Result<f64> {
    let norm = global_norm(update)?;
    if !norm.is_finite() {
        return Err(DefendError::NonFinite(norm));
    }
    if norm > c {
        let factor = c / norm;
        for entry in update.trainable_mut() {
            entry.tensor = (&entry.tensor * factor)?;
        }
    }
    Ok(norm)
}

/// Adds N(0, std²) to every element of the trainable tensors, in tensor order (nothing when
/// `std` is 0).
pub fn add_noise(update: &mut Update, std: f64, rng: &mut ChaCha8Rng) -> Result<()> {
    if std == 0.0 {
        return Ok(());
    }
    for entry in update.trainable_mut() {
        let t = &mut entry.tensor;
        let values: Vec<f64> = (0..t.elem_count())
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                std * z
            })
            .collect();
        let noise = Tensor::from_vec(values, t.dims(), &Device::Cpu)?
            .to_dtype(t.dtype())?
            .to_device(t.device())?;
        *t = (&*t + noise)?;
    }
    Ok(())
}

/// How many elements of `n` pruning keeps at fraction `p`: ⌈p·n⌉ (at least one), with `p·n`
/// that is an integer up to rounding error (0.7 · 10) counted as that integer.
pub fn kept(p: f64, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let x = p * n as f64;
    let k = if (x - x.round()).abs() <= 1e-9 * x.max(1.0) {
        x.round()
    } else {
        x.ceil()
    };
    (k as usize).clamp(1, n)
}

/// Keeps the [`kept`]`(p, n)` largest magnitudes of each trainable tensor (ties: the earlier
/// element) and zeroes the rest.
pub fn prune(update: &mut Update, p: f64) -> Result<()> {
    for entry in update.trainable_mut() {
        let t = &mut entry.tensor;
        let n = t.elem_count();
        let k = kept(p, n);
        if k >= n {
            continue;
        }
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..n).collect();
        let larger_first =
            |a: &usize, b: &usize| values[*b].abs().total_cmp(&values[*a].abs()).then(a.cmp(b));
        order.select_nth_unstable_by(k - 1, larger_first);
        let mut pruned = vec![0f32; n];
        for &i in &order[..k] {
            pruned[i] = values[i];
        }
        *t = Tensor::from_vec(pruned, t.dims(), &Device::Cpu)?
            .to_dtype(t.dtype())?
            .to_device(t.device())?;
    }
    Ok(())
}

/// Per-example clipping: the gradient of each example of `(x, labels)` at the model's current
/// weights, scaled by the client's private fuzzy factors where given (the gradient hook of
/// `training.fuzzy_at = "client"`), clipped to global L2 norm `c`, summed. Returns one entry per model tensor in
/// parameter-store order (zeros for buffers) and the mean loss of the examples. Forward passes
/// in `mode`.
///
/// Refuses models with BatchNorm when `mode` normalises with batch statistics: then an
/// example's gradient depends on the rest of its batch, and a batch of one has no variance. On
/// running statistics ([`Mode::Eval`]) every example is computed on its own, and the running
/// statistics stay untouched.
pub fn clipped_example_sum(
    model: &Model,
    x: &Tensor,
    labels: &Tensor,
    c: f64,
    mode: Mode,
    private_factors: Option<&[(String, Tensor)]>,
) -> Result<(Update, f64)> {
    // on a rayon worker (see `synfed_synapse::worker`)
    synfed_synapse::on_worker(|| {
        let batch_norm = mode.uses_batch_stats()
            && model.params().iter().any(|p| {
                matches!(
                    p.role,
                    Role::NormWeight | Role::NormBias | Role::RunningMean | Role::RunningVar
                )
            });
        if batch_norm {
            return Err(DefendError::PerExampleBatchNorm(
                model.spec().arch.to_string(),
            ));
        }
        let mut sum = Update::zeros_like(model.params())?;
        let b = x.dim(0)?;
        let mut loss_sum = 0.0;
        for i in 0..b {
            let (xi, yi) = (x.narrow(0, i, 1)?, labels.narrow(0, i, 1)?);
            let loss = model.loss(&xi, &yi, mode)?;
            loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let grads = backward_final(&loss)?;
            let mut example = Vec::with_capacity(model.params().len());
            for p in model.params().iter() {
                let tensor = match grads.get(p.var.as_tensor()) {
                    Some(g) if p.role.is_trainable() => g.detach(),
                    _ => p.var.as_tensor().zeros_like()?,
                };
                example.push(UpdateEntry {
                    name: p.name.clone(),
                    role: p.role,
                    tensor,
                });
            }
            let mut example = Update::new(example);
            if let Some(factors) = private_factors {
                for entry in example.iter_mut().filter(|e| e.is_trainable()) {
                    entry.tensor = synfed_synapse::fuzzy_placement::scale_gradient(
                        factors,
                        &entry.name,
                        &entry.tensor,
                    )?;
                }
            }
            clip(&mut example, c)?;
            for (s, g) in sum.iter_mut().zip(example) {
                s.tensor = (&s.tensor + g.tensor)?;
            }
        }
        Ok((sum, if b > 0 { loss_sum / b as f64 } else { 0.0 }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use synfed_models::{Arch, InputShape, ModelSpec};
    use synfed_synapse::MethodSet;

    fn t(values: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// An update of `tensors`: a trainable weight where `trainable` says so, a BatchNorm
    /// running mean otherwise.
    fn update(tensors: Vec<Tensor>, trainable: &[bool]) -> Update {
        assert_eq!(tensors.len(), trainable.len());
        Update::new(
            tensors
                .into_iter()
                .zip(trainable)
                .enumerate()
                .map(|(i, (tensor, &train))| UpdateEntry {
                    name: format!("t{i}"),
                    role: if train {
                        Role::SynapticWeight
                    } else {
                        Role::RunningMean
                    },
                    tensor,
                })
                .collect(),
        )
    }

    /// The values of the `i`-th tensor of `u`.
    fn at(u: &Update, i: usize) -> Vec<f32> {
        values(&u.iter().nth(i).unwrap().tensor)
    }

    #[test]
    fn clipping_scales_above_c_and_leaves_below_alone() {
        let mut u = update(
            vec![
                t(&[3.0, 0.0], &[2]),
                t(&[0.0, 4.0, 0.0, 0.0], &[2, 2]),
                t(&[100.0], &[1]), // a BatchNorm buffer: neither counted nor clipped
            ],
            &[true, true, false],
        );
        assert!((global_norm(&u).unwrap() - 5.0).abs() < 1e-9);
        let before = clip(&mut u, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-9);
        let after = global_norm(&u).unwrap();
        assert!((after - 1.0).abs() < 1e-6, "{after}");
        assert_eq!(at(&u, 0), vec![0.6, 0.0]);
        assert_eq!(at(&u, 2), vec![100.0]);

        let mut small = update(vec![t(&[0.3, -0.4], &[2])], &[true]);
        clip(&mut small, 1.0).unwrap();
        assert_eq!(at(&small, 0), vec![0.3, -0.4]);

        let mut bad = update(vec![t(&[f32::NAN], &[1])], &[true]);
        assert!(matches!(
            clip(&mut bad, 1.0),
            Err(DefendError::NonFinite(_))
        ));
    }

    #[test]
    fn noise_has_std_sigma_c_is_seeded_and_spares_buffers() {
        let n = 200_000;
        let defence: Defence = "dp:C=2,sigma=0.5".parse().unwrap();
        let zeros = || {
            update(
                vec![
                    Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap(),
                    t(&[7.0], &[1]),
                ],
                &[true, false],
            )
        };
        let mut u = zeros();
        defence.apply(&mut u, 42).unwrap();
        let v = at(&u, 0);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        let std = var.sqrt();
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((std - 1.0).abs() < 0.01, "std {std}, expected σC = 1");
        assert_eq!(at(&u, 1), vec![7.0]);
        // Same seed, same bytes; another seed, other noise.
        let mut again = zeros();
        defence.apply(&mut again, 42).unwrap();
        assert_eq!(at(&again, 0), v);
        let mut other = zeros();
        defence.apply(&mut other, 43).unwrap();
        assert_ne!(at(&other, 0), v);
        // σ = 0: clipping only.
        let mut plain = update(vec![t(&[0.1, 0.2], &[2])], &[true]);
        "dp:C=1,sigma=0"
            .parse::<Defence>()
            .unwrap()
            .apply(&mut plain, 1)
            .unwrap();
        assert_eq!(at(&plain, 0), vec![0.1, 0.2]);
    }

    #[test]
    fn pruning_keeps_exactly_the_ceil_p_n_largest_per_tensor() {
        assert_eq!(kept(0.1, 10), 1);
        assert_eq!(kept(0.7, 10), 7); // 0.7 · 10 = 7.000000000000001
        assert_eq!(kept(0.1, 11), 2);
        assert_eq!(kept(0.01, 5), 1);
        assert_eq!(kept(1.0, 5), 5);
        let a: Vec<f32> = (0..37)
            .map(|i| ((i * 17 % 37) as f32 - 18.0) * 0.5)
            .collect();
        let b: Vec<f32> = vec![1.0, -1.0, 1.0, -1.0, 2.0]; // ties: the earlier elements win
        let buffer = vec![5.0f32, 6.0];
        let mut u = update(
            vec![t(&a, &[37]), t(&b, &[5]), t(&buffer, &[2])],
            &[true, true, false],
        );
        prune(&mut u, 0.25).unwrap();
        let pa = at(&u, 0);
        let k = kept(0.25, 37); // ⌈9.25⌉ = 10
        assert_eq!(k, 10);
        assert_eq!(pa.iter().filter(|&&x| x != 0.0).count(), k);
        let mut magnitudes: Vec<f32> = a.iter().map(|x| x.abs()).collect();
        magnitudes.sort_by(|x, y| y.total_cmp(x));
        let smallest_kept = pa
            .iter()
            .filter(|&&x| x != 0.0)
            .map(|x| x.abs())
            .fold(f32::MAX, f32::min);
        assert_eq!(smallest_kept, magnitudes[k - 1]);
        for (orig, kept) in a.iter().zip(&pa) {
            assert!(*kept == 0.0 || kept == orig);
        }
        assert_eq!(at(&u, 1), vec![1.0, 0.0, 0.0, 0.0, 2.0]); // ⌈1.25⌉ = 2
        assert_eq!(at(&u, 2), buffer, "buffers are not pruned");
        let mut u = update(vec![t(&b, &[5])], &[true]);
        prune(&mut u, 0.5).unwrap(); // ⌈2.5⌉ = 3: 2 and the first two 1s
        assert_eq!(at(&u, 0), vec![1.0, -1.0, 0.0, 0.0, 2.0]);
    }

    #[test]
    fn per_example_clipping_of_a_batch_norm_model_needs_running_statistics() {
        let mut spec = ModelSpec::new(
            Arch::ConvNet,
            InputShape::new(1, 9, 9),
            3,
            MethodSet::NONE,
            4,
        );
        spec.width = Some(2);
        let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 1, 9, 9), &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32, 2, 1], &Device::Cpu).unwrap();
        let err = clipped_example_sum(&model, &x, &y, 1.0, Mode::Train, None).unwrap_err();
        assert!(matches!(err, DefendError::PerExampleBatchNorm(_)), "{err}");
        assert!(err.to_string().contains("bn_mode"), "{err}");
        // On running statistics the examples are independent: without clipping (C huge) the sum
        // over the examples is b times the batch's mean gradient.
        let stats: Vec<Vec<f32>> = model
            .params()
            .iter()
            .filter(|p| !p.role.is_trainable())
            .map(|p| values(p.var.as_tensor()))
            .collect();
        let (sum, _) = clipped_example_sum(&model, &x, &y, 1e9, Mode::Eval, None).unwrap();
        let batch = model.gradients(&x, &y, Mode::Eval).unwrap();
        let summed: Vec<&Tensor> = sum.trainable().map(|e| &e.tensor).collect();
        assert_eq!(summed.len(), batch.len());
        for (s, g) in summed.iter().zip(&batch) {
            for (s, g) in values(s).iter().zip(values(g)) {
                assert!(
                    (s / 3.0 - g).abs() <= 1e-5 * (1.0 + g.abs()),
                    "{s} / 3 vs {g}"
                );
            }
        }
        let after: Vec<Vec<f32>> = model
            .params()
            .iter()
            .filter(|p| !p.role.is_trainable())
            .map(|p| values(p.var.as_tensor()))
            .collect();
        assert_eq!(after, stats, "running statistics untouched");
    }

    #[test]
    fn per_example_clipping_equals_clipping_each_gradient_by_hand() {
        let mut spec = ModelSpec::new(Arch::Mlp, InputShape::new(1, 4, 4), 3, MethodSet::NONE, 9);
        spec.width = Some(5);
        let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 3.0, (4, 1, 4, 4), &Device::Cpu).unwrap();
        let y = Tensor::new(&[0u32, 2, 1, 2], &Device::Cpu).unwrap();
        let c = 0.05;
        let (sum, loss) = clipped_example_sum(&model, &x, &y, c, Mode::Train, None).unwrap();
        let names: Vec<String> = model.params().trainable().map(|p| p.name.clone()).collect();
        assert_eq!(sum.len(), names.len());

        // By hand: each example's gradient, its norm, scaled.
        let mut expected: Vec<Vec<f32>> =
            sum.tensors().map(|t| vec![0.0; t.elem_count()]).collect();
        let mut losses = 0.0;
        let mut clipped_any = false;
        for i in 0..4 {
            let (xi, yi) = (x.narrow(0, i, 1).unwrap(), y.narrow(0, i, 1).unwrap());
            losses += model
                .loss(&xi, &yi, Mode::Train)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            let grads = model.gradients(&xi, &yi, Mode::Train).unwrap();
            let flat: Vec<Vec<f32>> = grads.iter().map(values).collect();
            let norm = flat
                .iter()
                .flatten()
                .map(|&g| f64::from(g).powi(2))
                .sum::<f64>()
                .sqrt();
            let factor = if norm > c {
                clipped_any = true;
                c / norm
            } else {
                1.0
            };
            for (e, g) in expected.iter_mut().zip(&flat) {
                for (e, g) in e.iter_mut().zip(g) {
                    *e += (f64::from(*g) * factor) as f32;
                }
            }
        }
        assert!(clipped_any, "the test should clip");
        for (entry, want) in sum.iter().zip(&expected) {
            let name = &entry.name;
            for (g, w) in values(&entry.tensor).iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{name}: {g} vs {w}");
            }
        }
        assert!((loss - losses / 4.0).abs() < 1e-5);

        // The finished update: σ = 0 gives the mean of the clipped gradients, norm ≤ C.
        let defence: Defence = "dp:C=0.05,sigma=0,per-example".parse().unwrap();
        let mut update = sum.clone();
        assert_eq!(
            update.trainable().count(),
            update.len(),
            "an MLP has no buffers"
        );
        defence.finish_example_sum(&mut update, 4, 1).unwrap();
        assert!(global_norm(&update).unwrap() <= c + 1e-7);
        for (u, s) in update.tensors().zip(sum.tensors()) {
            for (u, s) in values(u).iter().zip(values(s)) {
                assert!((u - s / 4.0).abs() < 1e-7);
            }
        }
    }
}
