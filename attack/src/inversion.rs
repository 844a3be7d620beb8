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
use std::time::Instant;
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
    /// The iteration at which the objective stopped being finite, if it did: the trial ended
    /// there and kept its last iterate with a finite objective (for instead of NaN images
    /// or an aborted comparison: e.g. a candidate whose ReLUs are all dead has a zero
    /// gradient, whose cosine distance is undefined).
    pub stopped_at: Option<usize>,
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

    /// Whether the best trial's objective had stopped falling (see [`STILL_FALLING`]); never
    /// for a trial that stopped on a non-finite objective (it did not run its iterations).
    pub fn converged(&self) -> bool {
        let stopped = self
            .trials
            .get(self.best)
            .is_some_and(|t| t.stopped_at.is_some());
        !stopped && self.final_descent() <= STILL_FALLING
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
    let mut trials = Vec::new();
    let mut trace = Vec::with_capacity(config.iterations * config.restarts.max(1));
    for k in 0..config.restarts.max(1) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(k as u64);
        let n: usize = shape.iter().product();
        let noise: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        let x =
            Var::from_tensor(&Tensor::from_vec(noise, shape.to_vec(), &device)?.to_dtype(dtype)?)?;
        let mut step = ImageStep::new(&target.bounds, shape, config)?;
        let started = Instant::now();
        let Descent {
            stopped_at,
            last_finite,
        } = descend(
            k,
            &x,
            &mut step,
            config,
            &mut trace,
            &mut on_iteration,
            |x| evaluate_with_prior(target, config, prior, x),
        )?;
        let seconds = started.elapsed().as_secs_f64();
        let ran = stopped_at.unwrap_or(config.iterations);
        tracing::info!(
            "trial {k}: {ran} iterations in {seconds:.2} s, {:.1} ms per iteration",
            1e3 * seconds / ran.max(1) as f64
        );
        let (images, distance) = match (stopped_at, last_finite) {
            (None, _) => {
                let terms = objective(target, config, prior, x.as_tensor())?;
                tracing::debug!(
                    "trial {k}: final gradient distance in {:.3} s",
                    started.elapsed().as_secs_f64() - seconds
                );
                (
                    x.as_tensor().detach(),
                    terms.distance.to_dtype(DType::F64)?.to_scalar()?,
                )
            }
            (Some(_), Some((images, distance))) => (images, distance),
            // not finite at the start: the initial candidates, the worst of distances
            (Some(_), None) => (x.as_tensor().detach(), f64::INFINITY),
        };
        trials.push(Trial {
            images,
            distance,
            stopped_at,
        });
    }
    Ok(Reconstruction::from_trials(trials, trace))
}

/// Where one trial's descent ended.
struct Descent {
    /// The iteration whose objective was not finite (the descent stopped there), if any.
    stopped_at: Option<usize>,
    /// The last iterate whose objective was finite, and its gradient distance.
    last_finite: Option<(Tensor, f64)>,
}

/// Trial `k`'s iterations from the images `x`: evaluate, record, step. A non-finite objective
/// ends the trial at that iteration (there is no gradient to step on) instead of failing the
/// attack; the iterate before it is kept.
fn descend(
    k: usize,
    x: &Var,
    step: &mut ImageStep,
    config: &InversionConfig,
    trace: &mut Vec<TraceRow>,
    on_iteration: &mut impl FnMut(usize, usize, f64),
    mut evaluate: impl FnMut(&Tensor) -> Result<Evaluation>,
) -> Result<Descent> {
    let mut last_finite = None;
    for i in 0..config.iterations {
        let eval = evaluate(x.as_tensor())?;
        let value = eval.objective;
        if !value.is_finite() {
            tracing::warn!(
                "trial {k} stopped at iteration {i}: its objective is not finite (the \
                 candidates' gradient vanished, e.g. on a saturated softmax, or overflowed); it \
                 keeps its last iterate with a finite objective"
            );
            return Ok(Descent {
                stopped_at: Some(i),
                last_finite,
            });
        }
        last_finite = Some((x.as_tensor().copy()?, eval.distance));
        let lr = config.lr_at(i);
        step.apply(x, &eval.gradient, lr)?;
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
    Ok(Descent {
        stopped_at: None,
        last_finite,
    })
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

/// Adam's constants (PyTorch's defaults): β₁, β₂, ε.
const ADAM: (f64, f64, f64) = (0.9, 0.999, 1e-8);

/// One iteration's update of the images, in one pass over them: the gradient's sign (when
/// `signed`), Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8; PyTorch's update rule) and the clamp of
/// every channel to its pixel range (when `boxed`). Its moments live here, in f64, between
/// iterations; the images keep their tensor's dtype, rounded as the tensor stores them.
struct ImageStep {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
    signed: bool,
    /// Per element's channel: (lo, hi), or none without the box.
    bounds: Option<Vec<(f64, f64)>>,
    /// Elements per channel plane (H·W) and channels, to find an element's channel.
    plane: usize,
    channels: usize,
}

impl ImageStep {
    fn new(bounds: &[(f64, f64)], shape: [usize; 4], config: &InversionConfig) -> Result<Self> {
        let n: usize = shape.iter().product();
        if bounds.len() != shape[1] {
            return Err(AttackError::Shape(format!(
                "{} channel bounds for {} channels",
                bounds.len(),
                shape[1]
            )));
        }
        Ok(Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            signed: config.signed,
            bounds: config.boxed.then(|| bounds.to_vec()),
            plane: shape[2] * shape[3],
            channels: shape[1],
        })
    }

    /// Moves the images `x` one step against `gradient` with learning rate `lr`.
    fn apply(&mut self, x: &Var, gradient: &Tensor, lr: f64) -> Result<()> {
        let next = match x.dtype() {
            DType::F32 => {
                let mut values = x.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                let g = gradient.flatten_all()?.to_vec1::<f32>()?;
                self.update(&mut values, &g, lr)?;
                Tensor::from_vec(values, x.shape(), x.device())?
            }
            _ => {
                let as_f64 = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>();
                let mut values = as_f64(x.as_tensor())?;
                self.update(&mut values, &as_f64(gradient)?, lr)?;
                Tensor::from_vec(values, x.shape(), x.device())?.to_dtype(x.dtype())?
            }
        };
        x.set(&next)?;
        Ok(())
    }

    /// The fused pass over host values: `x[i] ← box(x[i] − lr · m̂ / (√v̂ + ε))`.
    fn update<T: Element>(&mut self, x: &mut [T], g: &[T], lr: f64) -> Result<()> {
        if x.len() != self.m.len() || g.len() != self.m.len() {
            return Err(AttackError::Shape(format!(
                "an image step over {} values with {} gradients for {} images' values",
                x.len(),
                g.len(),
                self.m.len()
            )));
        }
        let (b1, b2, eps) = ADAM;
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (i, ((x, g), (m, v))) in x
            .iter_mut()
            .zip(g)
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            .enumerate()
        {
            let g = g.to_f64();
            let g = if self.signed { sign(g) } else { g };
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let mut next = x.to_f64() - lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            if let Some(bounds) = &self.bounds {
                let (lo, hi) = bounds[(i / self.plane) % self.channels];
                next = next.max(lo).min(hi);
            }
            *x = T::from_f64(next);
        }
        Ok(())
    }
}

/// candle's and PyTorch's sign: −1, 0 or 1 (0 for NaN).
fn sign(g: f64) -> f64 {
    if g > 0.0 {
        1.0
    } else if g < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// An image element's float type.
trait Element: Copy {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Element for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Element for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
    fn a_non_finite_objective_ends_the_trial_and_keeps_the_iterate_before_it() {
        // objective 1/(i+1) with image gradient +1 everywhere, not finite from iteration 5 on
        let shape = [1, 1, 2, 2];
        let config = InversionConfig {
            iterations: 100,
            ..Default::default()
        };
        let x = Var::from_tensor(&Tensor::zeros(shape.to_vec(), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        let mut step = ImageStep::new(&[(-1.0, 1.0)], shape, &config).unwrap();
        let mut trace = Vec::new();
        let mut seen = Vec::new();
        let mut calls = 0;
        let descent = descend(
            0,
            &x,
            &mut step,
            &config,
            &mut trace,
            &mut |_, i, _| seen.push(i),
            |_| {
                calls += 1;
                let objective = if calls > 5 {
                    f64::NAN
                } else {
                    1.0 / calls as f64
                };
                Ok(Evaluation {
                    objective,
                    distance: objective,
                    tv: 0.0,
                    bn_penalty: 0.0,
                    gradient: Tensor::ones(shape.to_vec(), DType::F32, &Device::Cpu)?,
                })
            },
        )
        .unwrap();
        assert_eq!(descent.stopped_at, Some(5));
        assert_eq!(calls, 6, "no evaluation after the non-finite one");
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(trace.len(), 5);
        // Adam on a constant signed gradient steps by lr (1 − 1e-8) each time: after the 4
        // steps before iteration 4 every pixel is at −0.4, after the 5th at −0.5
        let (images, distance) = descent.last_finite.unwrap();
        assert_eq!(distance, 0.2, "iteration 4's distance");
        for v in images.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            assert!((v + 0.4).abs() < 1e-6, "{v}");
        }
        for v in x
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
        {
            assert!((v + 0.5).abs() < 1e-6, "{v}");
        }
        // a trial that stopped has not converged, whatever its trace says
        let stopped = Reconstruction {
            trials: vec![Trial {
                images,
                distance,
                stopped_at: Some(5),
            }],
            best: 0,
            trace: Vec::new(),
        };
        assert!(!stopped.converged());
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

    fn plain() -> InversionConfig {
        InversionConfig {
            signed: false,
            boxed: false,
            ..Default::default()
        }
    }

    #[test]
    fn adam_matches_the_update_rule_by_hand() {
        let mut step = ImageStep::new(&[(0.0, 0.0)], [1, 1, 1, 2], &plain()).unwrap();
        let x0 = [1.0f64, -2.0];
        let mut x = x0;
        // first step: m̂ = g, v̂ = g², update = g/(|g| + ε) ≈ sign(g)
        step.update(&mut x, &[0.5, -4.0], 0.1).unwrap();
        assert!((x[0] - (1.0 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-12);
        assert!((x[1] - (-2.0 + 0.1 * 4.0 / (4.0 + 1e-8))).abs() < 1e-12);
        // second step with gradient 0: m = 0.1·0.9·g, v = 0.001·0.999·g², bias-corrected
        let x1 = x;
        step.update(&mut x, &[0.0, 0.0], 0.1).unwrap();
        let m = 0.9 * 0.1 * 0.5 / (1.0 - 0.81);
        let v = 0.999 * 0.001 * 0.25 / (1.0 - 0.999f64.powi(2));
        assert!((x[0] - (x1[0] - 0.1 * m / (v.sqrt() + 1e-8))).abs() < 1e-12);
        assert_ne!(x[0], x0[0]);
    }

    /// The sign replaces the gradient before Adam (a gradient of 1e-6 moves as far as one of
    /// 1e6), and every channel is clamped to its own range after the step.
    #[test]
    fn signed_step_then_box_per_channel_by_hand() {
        let config = InversionConfig::default();
        // 2 images × 2 channels × 1×2 pixels; channel 0 in [−1, 1], channel 1 in [0, 0.5]
        let bounds = [(-1.0, 1.0), (0.0, 0.5)];
        let mut step = ImageStep::new(&bounds, [2, 2, 1, 2], &config).unwrap();
        let mut x = [0.0f32, 0.95, 0.45, 0.02, 0.0, -0.97, 0.3, 0.3];
        let g = [1e-6f32, -1e6, -3.0, 2.0, 0.0, 5.0, -1.0, 1.0];
        step.update(&mut x, &g, 0.1).unwrap();
        // first Adam step on a sign s: −lr · s / (1 + ε)
        let d = (0.1 / (1.0 + 1e-8)) as f32;
        let want = [
            -d,                                   // 0 − 0.1 (channel 0)
            1.0,                                  // 0.95 + 0.1 → clamped at 1
            0.5,                                  // 0.45 + 0.1 → clamped at 0.5 (channel 1)
            0.0,                                  // 0.02 − 0.1 → clamped at 0
            0.0,                                  // zero gradient: no move (image 2, channel 0)
            -1.0,                                 // −0.97 − 0.1 → clamped at −1
            (0.3f64 + 0.1 / (1.0 + 1e-8)) as f32, // channel 1, inside
            (0.3f64 - 0.1 / (1.0 + 1e-8)) as f32,
        ];
        for (got, want) in x.iter().zip(want) {
            assert!((got - want).abs() < 1e-7, "{x:?}");
        }
    }

    /// Through a variable: the f32 images are updated in place of the tensor, and a step with
    /// the wrong number of values is an error, not a panic.
    #[test]
    fn applies_to_a_variable_and_checks_lengths() {
        let dev = candle_core::Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[[[[0.25f32, -0.25]]]], &dev).unwrap()).unwrap();
        let mut step = ImageStep::new(&[(-1.0, 1.0)], [1, 1, 1, 2], &plain()).unwrap();
        let g = Tensor::new(&[[[[2.0f32, -2.0]]]], &dev).unwrap();
        step.apply(&x, &g, 0.1).unwrap();
        let got = x
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((got[0] - 0.15).abs() < 1e-6 && (got[1] + 0.15).abs() < 1e-6);
        assert!(step.update(&mut [0.0f32], &[1.0], 0.1).is_err());
        assert!(ImageStep::new(&[(0.0, 1.0)], [1, 3, 2, 2], &plain()).is_err());
    }
}
