//! A differentiable replay of a client's local SGD: what an attacker of FedAvg updates needs.
//!
//! A FedAvg client sends θ_K − θ_0 after K local steps θₖ₊₁ = θₖ − η·(η̂ ⊙ ∇θL(Bₖ; θₖ)) on
//! batches Bₖ of its data. Geiping et al.'s FedAvg attack optimises candidate images so that
//! replaying those steps on them reproduces the observed difference; the gradient of the match
//! with respect to the images must flow through every step. [`unrolled_update`] computes the
//! replayed difference as a graph-carrying tensor: each step evaluates the model with the
//! current parameters substituted ([`synfed_synapse::substitution`]) and takes the parameter
//! gradient through a zero "probe" variable added to them (candle keeps gradients of variables
//! only), so with `CANDLE_GRAD_DO_NOT_DETACH=1` the result stays differentiable in the images.
//!
//! What the attacker cannot replay: rejuvenation (II) draws from the client's private random
//! stream, so it is left out; the order of the client's batches is unknown, so step k uses
//! images `[k·b mod n, …)` of the candidate set in sequence (any permutation of the candidates
//! is as good, since the scoring matches reconstructions to the truth). BatchNorm uses batch
//! statistics without touching the running ones (`TrainFrozenStats` for `Train`).

use crate::error::Result;
use crate::model::Model;
use candle_core::{Tensor, Var};
use std::collections::HashMap;
use synfed_synapse::substitution::with_values;
use synfed_synapse::Mode;

/// The local training to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LocalSteps {
    /// Number of SGD steps.
    pub steps: usize,
    /// Examples per step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Learning rate η.
    pub lr: f64,
}

/// θ_K − θ_0 of `steps` SGD steps (with the model's fuzzy factors) from the model's current
/// parameters on `images`/`labels`, one tensor per trainable parameter in
/// `params().trainable()` order, differentiable with respect to `images`.
pub fn unrolled_update(
    model: &Model,
    images: &Tensor,
    labels: &Tensor,
    local: LocalSteps,
    mode: Mode,
) -> Result<Vec<Tensor>> {
    let mode = match mode {
        Mode::Train => Mode::TrainFrozenStats,
        other => other,
    };
    let n = images.dim(0)?;
    let batch = local.batch_size.clamp(1, n.max(1));
    let params: Vec<_> = model.params().trainable().cloned().collect();
    let initial: Vec<Tensor> = params.iter().map(|p| p.var.as_tensor().clone()).collect();
    let mut current = initial.clone();
    let batches_per_epoch = n.div_ceil(batch);
    for step in 0..local.steps {
        let start = (step % batches_per_epoch) * batch;
        let len = batch.min(n - start);
        let (x, y) = (images.narrow(0, start, len)?, labels.narrow(0, start, len)?);
        let probes: Vec<Var> = current
            .iter()
            .map(|t| Var::zeros(t.dims(), t.dtype(), t.device()))
            .collect::<candle_core::Result<_>>()?;
        let values: HashMap<_, _> = params
            .iter()
            .zip(&current)
            .zip(&probes)
            .map(|((p, t), probe)| Ok((p.var.as_tensor().id(), (t + probe.as_tensor())?)))
            .collect::<candle_core::Result<_>>()?;
        let loss = with_values(values, || model.loss(&x, &y, mode))?;
        let grads = loss.backward()?;
        current = params
            .iter()
            .zip(&current)
            .zip(&probes)
            .map(|((p, t), probe)| {
                let g = match grads.get(probe.as_tensor()) {
                    Some(g) => g.clone(),
                    None => t.zeros_like()?,
                };
                let g = match &p.fuzzy {
                    Some(factors) => g.mul(factors)?,
                    None => g,
                };
                t - (g * local.lr)?
            })
            .collect::<candle_core::Result<_>>()?;
    }
    Ok(current
        .iter()
        .zip(&initial)
        .map(|(t, t0)| t - t0)
        .collect::<candle_core::Result<_>>()?)
}
