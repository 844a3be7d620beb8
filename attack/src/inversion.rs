//! Gradient inversion: Geiping et al.'s *Inverting Gradients* reconstruction loop
//! (`inversefed.GradientReconstructor`), with its defaults.
//!
//! Starting from seeded Gaussian noise, the images x' are optimised with Adam (lr 0.1) to
//! minimise [`gradient_distance`](crate::objective::gradient_distance)(∇θL(x', y), g*) +
//! tv · TV(x'). As in the reference the image gradient is replaced by its **sign** before the
//! Adam step, and after each step every channel is clamped to the normalised image range
//! [(0 − m)/s, (1 − m)/s] ("boxed"). The learning rate drops ×0.1 at 3/8, 5/8 and 7/8 of the
//! iterations. Each of `restarts` trials starts from its own noise; the best trial is the one
//! with the lowest objective *without* TV, and every trial is kept.

use crate::bn_prior::{statistics_penalty, StatisticsPrior};
use crate::error::{AttackError, Result};
use crate::objective::{gradient_distance, total_variation, Distance, LayerWeighting};
use candle_core::{DType, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use synfed_models::{unrolled_update, LocalSteps, Model};
use synfed_synapse::Mode;

/// Hyper-parameters of the reconstruction (defaults: the reference's).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InversionConfig {
    pub iterations: usize,
    pub restarts: usize,
    pub lr: f64,
    /// Weight of total variation.
    pub tv: f64,
    pub distance: Distance,
    pub weighting: LayerWeighting,
    /// Use the sign of the image gradient (the reference's `signed=True`).
    pub signed: bool,
    /// Clamp images to the valid pixel range after each step.
    pub boxed: bool,
    /// Multiply the learning rate by 0.1 at 3/8, 5/8 and 7/8 of the iterations.
    pub lr_decay: bool,
    /// Seed of the initial noise (trial k uses stream k).
    pub seed: u64,
}

impl Default for InversionConfig {
    fn default() -> Self {
        Self {
            iterations: 4800,
            restarts: 1,
            lr: 0.1,
            tv: 1e-4,
            distance: Distance::Cosine,
            weighting: LayerWeighting::Equal,
            signed: true,
            boxed: true,
            lr_decay: true,
            seed: 0,
        }
    }
}

impl InversionConfig {
    /// The learning rate at iteration `i`.
    pub fn lr_at(&self, i: usize) -> f64 {
        if !self.lr_decay {
            return self.lr;
        }
        let n = self.iterations as f64;
        let drops = [3.0 / 8.0, 5.0 / 8.0, 7.0 / 8.0]
            .iter()
            .filter(|f| i as f64 >= (*f * n).floor())
            .count();
        self.lr * 0.1f64.powi(drops as i32)
    }
}

/// What the attacker knows: the model at the client's weights, the observed gradient and the
/// labels (given or recovered).
pub struct Target<'a> {
    pub model: &'a Model,
    /// Observed gradient (FedSGD) or parameter difference θ_local − θ_global (FedAvg), one
    /// tensor per trainable parameter in `model.params().trainable()` order.
    pub gradient: Vec<Tensor>,
    /// FedAvg: the client's local SGD steps, replayed differentiably on the candidate images
    /// ([`synfed_models::unrolled_update`]) and matched to the observed difference. `None`:
    /// FedSGD, the candidates' gradient is matched.
    pub local_steps: Option<LocalSteps>,
    /// Labels `[B]` (u32).
    pub labels: Tensor,
    /// BatchNorm mode the client computed in.
    pub mode: Mode,
    /// Per-channel valid range of normalised pixels, (lo, hi).
    pub bounds: Vec<(f64, f64)>,
}

/// One row of the optimisation trace.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TraceRow {
    pub trial: usize,
    pub iteration: usize,
    /// Gradient distance + tv · TV.
    pub objective: f64,
    /// Gradient distance alone.
    pub distance: f64,
    pub tv: f64,
    pub lr: f64,
}

/// The outcome of one trial.
pub struct Trial {
    /// Reconstructed images `[B, C, H, W]`, normalised like the model's inputs.
    pub images: Tensor,
    /// Final gradient distance (without TV), the score that picks the best trial.
    pub distance: f64,
}

/// All trials and the best one.
pub struct Reconstruction {
    pub trials: Vec<Trial>,
    pub best: usize,
    pub trace: Vec<TraceRow>,
}

/// A last-quarter fall of the objective above this share counts as "still falling": the
/// attack had not converged when its iterations ran out.
pub const STILL_FALLING: f64 = 0.01;

impl Reconstruction {
    /// The trials and their trace, the best being the one with the lowest gradient distance
    /// (the first of equals).
    pub fn from_trials(trials: Vec<Trial>, trace: Vec<TraceRow>) -> Self {
        let best = trials
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.distance.total_cmp(&b.1.distance))
            .map_or(0, |(i, _)| i);
        Self {
            trials,
            best,
            trace,
        }
    }

    /// The best trial.
    pub fn best(&self) -> &Trial {
        &self.trials[self.best]
    }

    /// How much the best trial's objective still fell over its last quarter of iterations:
    /// (m₁ − m₂) / |m₁|, where m₁ is the median objective of the 5 % of iterations before the
    /// last quarter and m₂ that of the last 5 %. Medians, because the signed-gradient steps
    /// make single values jitter. 0 when the trace is too short to tell (fewer than 20
    /// iterations).
    pub fn final_descent(&self) -> f64 {
        let objective: Vec<f64> = self
            .trace
            .iter()
            .filter(|r| r.trial == self.best)
            .map(|r| r.objective)
            .collect();
        final_descent(&objective)
    }

    /// Whether the best trial's objective had stopped falling (see [`STILL_FALLING`]).
    pub fn converged(&self) -> bool {
        self.final_descent() <= STILL_FALLING
    }
}

fn final_descent(objective: &[f64]) -> f64 {
    let n = objective.len();
    if n < 20 {
        return 0.0;
    }
    let window = (n / 20).max(1);
    let quarter = n - n / 4;
    let median = |values: &[f64]| {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    };
    let before = median(&objective[quarter - window..quarter]);
    let last = median(&objective[n - window..]);
    if before.abs() < f64::MIN_POSITIVE {
        return 0.0;
    }
    (before - last) / before.abs()
}

/// The terms of the objective at images `x` (a leaf), as graph nodes.
struct Terms {
    distance: Tensor,
    tv: Tensor,
    /// The BatchNorm statistics penalty, with a prior ([`crate::bn_prior`]).
    bn_penalty: Option<Tensor>,
}

/// Gradient distance, TV and, with a `prior`, the statistics penalty of the candidates'
/// forward pass (the same pass whose parameter gradients are matched).
fn objective(
    target: &Target,
    config: &InversionConfig,
    prior: Option<&StatisticsPrior>,
    x: &Tensor,
) -> Result<Terms> {
    // replaying a train-mode client must not drift the attacker's BatchNorm statistics
    let mode = match target.mode {
        Mode::Train => Mode::TrainFrozenStats,
        other => other,
    };
    let mut bn_penalty = None;
    let trial: Vec<Tensor> = match target.local_steps {
        Some(local) => {
            if prior.is_some() {
                return Err(AttackError::BadOption(
                    "the BatchNorm statistics prior needs a FedSGD capture (a FedAvg update \
                     mixes the statistics of several local batches)"
                        .into(),
                ));
            }
            unrolled_update(target.model, x, &target.labels, local, mode)?
        }
        None => {
            let loss = match prior {
                None => target.model.loss(x, &target.labels, mode)?,
                Some(prior) => {
                    let (loss, inputs) = target
                        .model
                        .record_batch_norm_inputs(|| target.model.loss(x, &target.labels, mode))?;
                    bn_penalty = Some(statistics_penalty(&inputs, &prior.layers)?);
                    loss
                }
            };
            let grads = loss.backward()?;
            target
                .model
                .params()
                .trainable()
                .map(|p| {
                    grads.get(p.var.as_tensor()).cloned().ok_or_else(|| {
                        AttackError::Shape(format!("the model gives no gradient for `{}`", p.name))
                    })
                })
                .collect::<Result<_>>()?
        }
    };
    let distance = gradient_distance(&trial, &target.gradient, config.distance, config.weighting)?;
    Ok(Terms {
        distance,
        tv: total_variation(x)?,
        bn_penalty,
    })
}

/// Runs the reconstruction of a batch of `shape = [B, C, H, W]`. `on_iteration(trial,
/// iteration, objective)` reports progress.
pub fn reconstruct(
    target: &Target,
    shape: [usize; 4],
    config: &InversionConfig,
    on_iteration: impl FnMut(usize, usize, f64),
) -> Result<Reconstruction> {
    reconstruct_with_prior(target, shape, config, None, on_iteration)
}

/// [`reconstruct`] with, when `prior` is given, its BatchNorm statistics penalty added to the
/// objective ([`crate::bn_prior`]); the best trial is still the one with the lowest gradient
/// distance.
pub fn reconstruct_with_prior(
    target: &Target,
    shape: [usize; 4],
    config: &InversionConfig,
    prior: Option<&StatisticsPrior>,
    mut on_iteration: impl FnMut(usize, usize, f64),
) -> Result<Reconstruction> {
    validate(target, shape, config)?;
    let device = target.model.device().clone();
    let dtype = target.gradient[0].dtype();
    let (lo, hi) = bounds_tensors(target, shape, dtype, &device)?;
    let mut trials = Vec::new();
    let mut trace = Vec::new();
    for k in 0..config.restarts.max(1) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(k as u64);
        let n: usize = shape.iter().product();
        let noise: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        let x =
            Var::from_tensor(&Tensor::from_vec(noise, shape.to_vec(), &device)?.to_dtype(dtype)?)?;
        let mut adam = Adam::new(x.as_tensor())?;
        for i in 0..config.iterations {
            let eval = evaluate_with_prior(target, config, prior, x.as_tensor())?;
            let value = eval.objective;
            if !value.is_finite() {
                return Err(AttackError::Diverged {
                    trial: k,
                    iteration: i,
                });
            }
            let grad = eval.gradient;
            let grad = if config.signed { grad.sign()? } else { grad };
            let lr = config.lr_at(i);
            let mut next = adam.step(x.as_tensor(), &grad, lr)?;
            if config.boxed {
                next = next.broadcast_maximum(&lo)?.broadcast_minimum(&hi)?;
            }
            x.set(&next.detach())?;
            trace.push(TraceRow {
                trial: k,
                iteration: i,
                objective: value,
                distance: eval.distance,
                tv: eval.tv,
                lr,
            });
            on_iteration(k, i, value);
        }
        let terms = objective(target, config, prior, x.as_tensor())?;
        trials.push(Trial {
            images: x.as_tensor().detach(),
            distance: terms.distance.to_dtype(DType::F64)?.to_scalar()?,
        });
    }
    Ok(Reconstruction::from_trials(trials, trace))
}

/// The objective at images `x` and its exact gradient with respect to them: one iteration's
/// work (a forward pass, the parameter gradients, and the backward pass through them).
pub struct Evaluation {
    /// Gradient distance + tv · TV (+ α · BatchNorm statistics penalty, with a prior).
    pub objective: f64,
    pub distance: f64,
    pub tv: f64,
    /// The BatchNorm statistics penalty before its weight α (0 without a prior).
    pub bn_penalty: f64,
    /// d objective / d x.
    pub gradient: Tensor,
}

/// Evaluates the objective and its image gradient at `x`, on a rayon worker (see
/// `synfed_synapse::worker`: the iteration's kernels then split their work without a thread
/// hand-over per op).
pub fn evaluate(target: &Target, config: &InversionConfig, x: &Tensor) -> Result<Evaluation> {
    evaluate_with_prior(target, config, None, x)
}

/// [`evaluate`] with, when `prior` is given, its weighted BatchNorm statistics penalty in the
/// objective and in the gradient.
pub fn evaluate_with_prior(
    target: &Target,
    config: &InversionConfig,
    prior: Option<&StatisticsPrior>,
    x: &Tensor,
) -> Result<Evaluation> {
    synfed_synapse::on_worker(|| evaluate_here(target, config, prior, x))
}

fn evaluate_here(
    target: &Target,
    config: &InversionConfig,
    prior: Option<&StatisticsPrior>,
    x: &Tensor,
) -> Result<Evaluation> {
    let Terms {
        distance,
        tv,
        bn_penalty,
    } = objective(target, config, prior, x)?;
    let mut total = (&distance + (&tv * config.tv)?)?;
    if let (Some(penalty), Some(prior)) = (&bn_penalty, prior) {
        total = (total + (penalty * prior.alpha)?)?;
    }
    // only the images' gradient is wanted: the model's weights are constants of this pass
    // (their second-order gradients would be computed and dropped)
    let weights = target.model.params().iter().map(|p| p.var.as_tensor());
    let grads = synfed_synapse::kernels::backward_final_with_constants(&total, weights)?;
    let gradient = grads.get(x).cloned().ok_or_else(|| {
        AttackError::Shape("the objective does not depend on the images (pass a variable)".into())
    })?;
    let scalar = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    Ok(Evaluation {
        objective: scalar(&total)?,
        distance: scalar(&distance)?,
        tv: scalar(&tv)?,
        bn_penalty: bn_penalty.as_ref().map_or(Ok(0.0), scalar)?,
        gradient,
    })
}

pub(crate) fn validate(target: &Target, shape: [usize; 4], config: &InversionConfig) -> Result<()> {
    let n_params = target.model.params().trainable().count();
    if target.gradient.len() != n_params {
        return Err(AttackError::Shape(format!(
            "{} observed gradient tensors for a model with {n_params} parameters",
            target.gradient.len()
        )));
    }
    for (p, g) in target.model.params().trainable().zip(&target.gradient) {
        if p.var.dims() != g.dims() {
            return Err(AttackError::Shape(format!(
                "observed gradient of `{}` has shape {:?}, the parameter {:?}",
                p.name,
                g.dims(),
                p.var.dims()
            )));
        }
    }
    if target.labels.dims() != [shape[0]] {
        return Err(AttackError::Shape(format!(
            "{:?} labels for a batch of {}",
            target.labels.dims(),
            shape[0]
        )));
    }
    if target.bounds.len() != shape[1] {
        return Err(AttackError::Shape(format!(
            "{} channel bounds for {} channels",
            target.bounds.len(),
            shape[1]
        )));
    }
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if config.iterations == 0
        || !positive(config.lr)
        || !(config.tv.is_finite() && config.tv >= 0.0)
    {
        return Err(AttackError::BadOption(
            "iterations ≥ 1, lr > 0 and tv ≥ 0 are required".into(),
        ));
    }
    Ok(())
}

fn bounds_tensors(
    target: &Target,
    shape: [usize; 4],
    dtype: DType,
    device: &candle_core::Device,
) -> Result<(Tensor, Tensor)> {
    let c = shape[1];
    let lo: Vec<f64> = target.bounds.iter().map(|b| b.0).collect();
    let hi: Vec<f64> = target.bounds.iter().map(|b| b.1).collect();
    let make = |v: Vec<f64>| -> Result<Tensor> {
        Ok(Tensor::from_vec(v, (1, c, 1, 1), device)?.to_dtype(dtype)?)
    };
    Ok((make(lo)?, make(hi)?))
}

/// Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8) on one tensor, PyTorch's update rule.
struct Adam {
    m: Tensor,
    v: Tensor,
    t: i32,
}

impl Adam {
    fn new(x: &Tensor) -> Result<Self> {
        Ok(Self {
            m: x.zeros_like()?,
            v: x.zeros_like()?,
            t: 0,
        })
    }

    /// x − lr · m̂ / (√v̂ + ε) for gradient `g`.
    fn step(&mut self, x: &Tensor, g: &Tensor, lr: f64) -> Result<Tensor> {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        self.t += 1;
        let g = g.detach();
        self.m = ((&self.m * b1)? + (&g * (1.0 - b1))?)?;
        self.v = ((&self.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
        let m_hat = (&self.m / (1.0 - b1.powi(self.t)))?;
        let v_hat = (&self.v / (1.0 - b2.powi(self.t)))?;
        let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
        Ok((x.detach() - (update * lr)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_descent_compares_medians_before_and_at_the_end_of_the_last_quarter() {
        // 100 iterations: the window is 5 wide; before the last quarter = iterations 70..75
        let flat: Vec<f64> = (0..100).map(|i| 1.0 + 0.001 * (i % 2) as f64).collect();
        assert!(final_descent(&flat).abs() < 1e-3);
        // falls from 1.0 to 0.5 linearly over the last quarter
        let falling: Vec<f64> = (0..100)
            .map(|i| {
                if i < 75 {
                    1.0
                } else {
                    1.0 - 0.5 * (i - 74) as f64 / 25.0
                }
            })
            .collect();
        // median of 95..100 is iteration 97: 1 − 0.5·23/25 = 0.54
        assert!((final_descent(&falling) - 0.46).abs() < 1e-12);
        // a single low outlier at the end does not count
        let mut jitter = flat.clone();
        jitter[99] = 0.1;
        assert!(final_descent(&jitter).abs() < 1e-3);
        assert_eq!(final_descent(&[1.0, 0.5]), 0.0);
        fn trace(values: &[f64], trial: usize) -> impl Iterator<Item = TraceRow> + '_ {
            values.iter().enumerate().map(move |(i, v)| TraceRow {
                trial,
                iteration: i,
                objective: *v,
                distance: *v,
                tv: 0.0,
                lr: 0.1,
            })
        }
        let r = Reconstruction {
            trials: Vec::new(),
            best: 1,
            trace: trace(&flat, 0).chain(trace(&falling, 1)).collect(),
        };
        assert!(!r.converged());
        let r = Reconstruction { best: 0, ..r };
        assert!(r.converged());
    }

    #[test]
    fn learning_rate_drops_at_three_eighths_five_eighths_seven_eighths() {
        let c = InversionConfig {
            iterations: 800,
            ..Default::default()
        };
        assert_eq!(c.lr_at(0), 0.1);
        assert_eq!(c.lr_at(299), 0.1);
        assert!((c.lr_at(300) - 0.01).abs() < 1e-15);
        assert!((c.lr_at(500) - 0.001).abs() < 1e-15);
        assert!((c.lr_at(700) - 0.0001).abs() < 1e-15);
        let flat = InversionConfig {
            lr_decay: false,
            ..c
        };
        assert_eq!(flat.lr_at(799), 0.1);
    }

    #[test]
    fn adam_matches_the_update_rule_by_hand() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::new(&[1.0f64, -2.0], &dev).unwrap();
        let mut adam = Adam::new(&x).unwrap();
        let g = Tensor::new(&[0.5f64, -4.0], &dev).unwrap();
        // first step: m̂ = g, v̂ = g², update = g/(|g| + ε) ≈ sign(g)
        let x1 = adam.step(&x, &g, 0.1).unwrap().to_vec1::<f64>().unwrap();
        assert!((x1[0] - (1.0 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-12);
        assert!((x1[1] - (-2.0 + 0.1 * 4.0 / (4.0 + 1e-8))).abs() < 1e-12);
        // second step with gradient 0: m = 0.09·g... by hand for element 0
        let zero = Tensor::new(&[0.0f64, 0.0], &dev).unwrap();
        let x1t = Tensor::new(&x1[..], &dev).unwrap();
        let x2 = adam
            .step(&x1t, &zero, 0.1)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let m = 0.9 * 0.1 * 0.5 / (1.0 - 0.81);
        let v = 0.999 * 0.001 * 0.25 / (1.0 - 0.999f64.powi(2));
        assert!((x2[0] - (x1[0] - 0.1 * m / (v.sqrt() + 1e-8))).abs() < 1e-12);
    }
}
