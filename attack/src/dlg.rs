//! Zhu et al.'s *Deep Leakage from Gradients* (NeurIPS 2019), as its reference implementation
//! runs it: dummy images from Gaussian noise, the **squared Euclidean** distance
//! Σ_l ‖∇θL(x', y) − g*‖² between their parameter gradients and the observed ones, minimised
//! over the images with **L-BFGS** (history 100, first trial step 1: `torch.optim.LBFGS(lr=1)`)
//! — no total variation, no sign, no pixel box.
//!
//! It differs from [`inversion`](crate::inversion) (Geiping et al.) in every choice that
//! paper argued about: the distance is magnitude-sensitive, the optimiser is second order and
//! the images are unconstrained. Running both shows whether a mechanism defeats gradient
//! inversion or only one optimiser's path through it.
//!
//! Where this differs from the reference:
//! - labels are iDLG's (Zhao et al. 2020: [`labels`](crate::labels), or the capture's exposed
//!   ones) instead of being optimised as soft dummy labels, as the task's pipeline does for
//!   every attack;
//! - the step of every L-BFGS iteration comes from a backtracking (Armijo) line search (see
//!   [`lbfgs`](crate::lbfgs)), so the objective never rises; the reference takes fixed unit
//!   steps;
//! - `iterations` counts L-BFGS iterations (each one direction and its line search). The
//!   reference's 300 `optimizer.step` calls run up to 20 iterations each; L-BFGS here stops
//!   earlier only on PyTorch's tolerances.
//!
//! The objective and its image gradient are [`evaluate`]'s, the
//! same exact second-order computation the other optimisation attack uses (FedAvg captures:
//! the replayed local steps, as there).

use crate::error::{AttackError, Result};
use crate::inversion::{
    evaluate, validate, InversionConfig, Reconstruction, Target, TraceRow, Trial,
};
use crate::lbfgs::{minimize, LbfgsConfig};
use crate::objective::{Distance, LayerWeighting};
use candle_core::{DType, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// Settings of the DLG attack (defaults: the reference's).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DlgConfig {
    /// L-BFGS iterations per trial.
    pub iterations: usize,
    /// L-BFGS history (curvature pairs remembered).
    pub history: usize,
    /// Trials from different initial noise; the lowest final distance wins.
    pub restarts: usize,
    /// Seed of the initial noise (trial k uses stream k).
    pub seed: u64,
}

impl Default for DlgConfig {
    fn default() -> Self {
        Self {
            iterations: 300,
            history: 100,
            restarts: 1,
            seed: 0,
        }
    }
}

impl DlgConfig {
    /// The objective as [`evaluate`] computes it: squared L2, every layer weighted 1, no TV.
    fn objective(&self) -> InversionConfig {
        InversionConfig {
            iterations: self.iterations,
            restarts: self.restarts,
            lr: 1.0,
            tv: 0.0,
            distance: Distance::L2,
            weighting: LayerWeighting::Equal,
            signed: false,
            boxed: false,
            lr_decay: false,
            seed: self.seed,
        }
    }

    fn lbfgs(&self) -> LbfgsConfig {
        LbfgsConfig {
            history: self.history,
            max_iterations: self.iterations,
            ..LbfgsConfig::default()
        }
    }
}

/// Reconstructs a batch of `shape = [B, C, H, W]` by DLG. `on_iteration(trial, iteration,
/// objective)` reports progress; the trace's `lr` column holds the accepted step length.
pub fn reconstruct(
    target: &Target,
    shape: [usize; 4],
    config: &DlgConfig,
    mut on_iteration: impl FnMut(usize, usize, f64),
) -> Result<Reconstruction> {
    let objective = config.objective();
    validate(target, shape, &objective)?;
    if config.history == 0 {
        return Err(AttackError::BadOption(
            "the L-BFGS history must be at least 1".into(),
        ));
    }
    let device = target.model.device().clone();
    let dtype = target.gradient[0].dtype();
    let n: usize = shape.iter().product();
    let mut trials = Vec::new();
    let mut trace = Vec::new();
    for k in 0..config.restarts.max(1) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(k as u64);
        let noise: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        let f = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let images = Tensor::from_slice(x, shape.as_slice(), &device)?.to_dtype(dtype)?;
            let images = Var::from_tensor(&images)?;
            let eval = evaluate(target, &objective, images.as_tensor())?;
            let gradient = eval
                .gradient
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            Ok((eval.distance, gradient))
        };
        let minimum = minimize(noise, &config.lbfgs(), f, |i, value, step| {
            trace.push(TraceRow {
                trial: k,
                iteration: i,
                objective: value,
                distance: value,
                tv: 0.0,
                lr: step,
            });
            on_iteration(k, i, value);
        })
        .map_err(|e| match e {
            AttackError::Diverged { .. } => AttackError::Diverged {
                trial: k,
                iteration: 0,
            },
            other => other,
        })?;
        trials.push(Trial {
            images: Tensor::from_vec(minimum.x, shape.as_slice(), &device)?.to_dtype(dtype)?,
            distance: minimum.value,
            stopped_at: None,
        });
    }
    Ok(Reconstruction::from_trials(trials, trace))
}
