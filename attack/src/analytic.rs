//! Closed-form reconstruction from a fully connected first layer with bias (Phong et al. 2017;
//! the input-recovery proposition for fully connected layers in Geiping et al. 2020), with no
//! optimisation at all.
//!
//! Why: a mechanism that defeats an optimisation attack can still leak everything in closed
//! form. For a first layer z = W x + b on the flattened, normalised images x_b of a batch,
//! ∂L/∂W_i = Σ_b δ_bi x_bᵀ and ∂L/∂b_i = Σ_b δ_bi with δ_bi = ∂L/∂z_bi, so every unit i with
//! ∂L/∂b_i ≠ 0 yields
//!
//! ```text
//! x̂_i = ∂L/∂W_i / ∂L/∂b_i = Σ_b δ_bi x_b / Σ_b δ_bi,
//! ```
//!
//! the δ-weighted average of the images that activated it. For one image that is the image,
//! to rounding. Weight splitting (method III) does not help: unit n of a split layer sums the
//! pre-activations of its Γ replicas (`synfed_synapse::splitting`), whose weight rows are
//! stored as ordinary rows of the `[N, D]` weight and each receive δ_n·xᵀ (bias: δ_n), so every
//! replica gives the same ratio. Neither do fuzzy learning rates (they scale steps, not
//! gradients) or rejuvenation (it changes weights, not the gradient's structure).
//!
//! For a batch of B: a ReLU unit that only one image activated (δ_bi = 0 for the others, exact
//! zeros from the ReLU's backward pass) returns that image exactly, and typically several units
//! do; a unit activated by several images returns a mixture that no other unit reproduces.
//! The selection, documented choice:
//! 1. candidates from every unit with |∂L/∂b_i| > [`RELATIVE_THRESHOLD`]·max_j |∂L/∂b_j|;
//! 2. candidates closer than [`SAME_IMAGE`] (relative L2) are one cluster; its representative
//!    is the member with the largest |∂L/∂b_i| (the best-conditioned ratio);
//! 3. B clusters are picked greedily by (a) how many distinct units gave them (replicas of a
//!    split unit, which share its bias gradient exactly, count once) — a true image usually
//!    recurs, a mixture essentially never does — then (b) whether none of the images already
//!    picked activates the cluster's unit (a unit of a new image alone does not see the
//!    others; a mixture with a picked image does), then (c) whether they lie in the valid
//!    pixel box (a true image does; a mixture with weights of both signs usually does not),
//!    then (d) the largest distance to the clusters already picked;
//! 4. reshaped to `[B, C, H, W]` (normalised input space) and clamped to the pixel box.
//!
//! An image that activated no unit on its own has no exact candidate and comes back as the
//! best mixture (measured on untrained `mlp` with III, B = 8: 7 of 8 digits exact, the
//! eighth 36 dB). When the batch gives fewer distinct candidates than B, the picked ones are
//! repeated. The
//! attack needs a model whose **first** trainable parameters are a linear layer's weight
//! `[N, C·H·W]` and bias `[N]` (the zoo's `mlp`); anything else is
//! [`AttackError::NoFullyConnectedInput`]. It reads only the first layer's gradient, so it
//! works on FedAvg differences too: −η Σ_steps of the same sums, whose ratio is again a
//! weighted average of the images, and a unit that only one image activated in every step
//! still returns it exactly (with fuzzy learning rates, I, each weight's step carries its
//! factor η̂, which the attacker's model holds and divides out). Rejuvenation (II) during a
//! FedAvg client's local steps redraws weights privately; those entries of the difference are
//! not gradients, and the images come back with errors there.

use crate::error::{AttackError, Result};
use crate::inversion::{evaluate, InversionConfig, Reconstruction, Target, Trial};
use crate::objective::{Distance, LayerWeighting};
use candle_core::{DType, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use synfed_models::Model;
use synfed_synapse::param::Role;

/// Units whose bias gradient is smaller than this share of the largest are not used: their
/// ratio divides by (near) zero.
pub const RELATIVE_THRESHOLD: f64 = 1e-4;

/// Candidates closer than this relative L2 distance, ‖x̂_i − x̂_j‖ / ‖x̂_j‖, are the same image.
/// Single-image units agree to f32 rounding (~1e-7); mixtures differ at order 1.
pub const SAME_IMAGE: f64 = 1e-4;

/// Where the first layer's gradients are in the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstLayer {
    /// Index of the weight `[units, features]` in `model.params().trainable()` order.
    pub weight: usize,
    /// Index of the bias `[units]`.
    pub bias: usize,
    pub units: usize,
    pub features: usize,
}

/// Finds the fully connected first layer with bias of `model`, or says why there is none.
pub fn first_layer(model: &Model) -> Result<FirstLayer> {
    let spec = model.spec();
    let features = spec.input.elem_count();
    let first: Vec<_> = model.params().trainable().take(2).collect();
    let refuse = || AttackError::NoFullyConnectedInput {
        arch: spec.arch.to_string(),
        input: features,
        first: first
            .iter()
            .map(|p| format!("`{}` {:?}", p.name, p.var.dims()))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let [w, b] = first.as_slice() else {
        return Err(refuse());
    };
    let same_layer = w.name.strip_suffix("weight").is_some()
        && w.name.strip_suffix("weight") == b.name.strip_suffix("bias");
    match (w.var.dims(), b.var.dims()) {
        (&[units, f], &[bias_units])
            if w.role == Role::SynapticWeight
                && b.role == Role::Bias
                && same_layer
                && f == features
                && bias_units == units =>
        {
            Ok(FirstLayer {
                weight: 0,
                bias: 1,
                units,
                features,
            })
        }
        _ => Err(refuse()),
    }
}

/// What the closed form recovered, and from how much evidence.
pub struct Analytic {
    /// `[B, C, H, W]`, normalised, clamped to the pixel box.
    pub images: Tensor,
    /// Units whose bias gradient passed the threshold (candidates).
    pub units: usize,
    /// Distinct candidates.
    pub clusters: usize,
    /// Per returned image, how many distinct units gave it (replicas of a split unit count
    /// once); a true image usually has more than one, a mixture one.
    pub support: Vec<usize>,
}

/// A group of candidates that are one image.
struct Cluster {
    /// The member with the largest |∂L/∂b|.
    representative: usize,
    /// Members (indices of candidates).
    members: Vec<usize>,
    /// Distinct units among the members: the replicas of a split unit share its bias gradient
    /// δ_n exactly, distinct units have different δ.
    units: usize,
    /// The representative's replicas (itself included): members with its bias gradient. Their
    /// pre-activations sum to the unit's (one term for an unsplit layer).
    replicas: Vec<usize>,
    /// Key of the first member (for the sweep).
    key: f64,
    norm: f64,
}

/// Bias gradients this close (relative) are one unit's replicas.
const SAME_UNIT: f64 = 1e-6;

/// Reconstructs the batch of `shape = [B, C, H, W]` from the observed update in `target`
/// (only its model, gradient and pixel bounds are read).
pub fn invert(target: &Target, shape: [usize; 4]) -> Result<Analytic> {
    let layer = first_layer(target.model)?;
    let [batch, channels, height, width] = shape;
    if batch == 0 {
        return Err(AttackError::Empty {
            what: "the attacked batch".into(),
        });
    }
    if channels * height * width != layer.features || target.bounds.len() != channels {
        return Err(AttackError::ShapeMismatch {
            what: format!(
                "a {shape:?} batch with {} channel bounds for a first layer of {} inputs",
                target.bounds.len(),
                layer.features
            ),
        });
    }
    let fetch = |i: usize, what: &str| -> Result<Vec<f64>> {
        let g = target
            .gradient
            .get(i)
            .ok_or_else(|| AttackError::Shape(format!("the update has no {what} gradient")))?;
        let values = g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(AttackError::NoSignal(format!(
                "the first layer's {what} gradient is not finite"
            )));
        }
        Ok(values)
    };
    let (d, n) = (layer.features, layer.units);
    let mut gw = fetch(layer.weight, "weight")?;
    // FedAvg with fuzzy learning rates (I): the client stepped weight j of unit i by
    // η·η̂_ij·g_ij and the bias by η·g_i; the factors travel with the model, so undo them
    if target.local_steps.is_some() {
        let weight = target.model.params().trainable().nth(layer.weight);
        if let Some(factors) = weight.and_then(|p| p.fuzzy.as_ref()) {
            let factors = factors
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            if factors.len() != gw.len() || factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
                return Err(AttackError::Shape(
                    "the first layer's fuzzy factors are not positive numbers of its shape".into(),
                ));
            }
            gw.iter_mut().zip(&factors).for_each(|(g, f)| *g /= f);
        }
    }
    let gb = fetch(layer.bias, "bias")?;
    if gw.len() != n * d || gb.len() != n {
        return Err(AttackError::Shape(format!(
            "first-layer gradients of {} and {} values for {n} units of {d} inputs",
            gw.len(),
            gb.len()
        )));
    }
    let largest = gb.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if largest <= 0.0 {
        return Err(AttackError::NoSignal(
            "every bias gradient of the first layer is zero".into(),
        ));
    }
    let used: Vec<usize> = (0..n)
        .filter(|&i| gb[i].abs() > RELATIVE_THRESHOLD * largest)
        .collect();
    let candidates: Vec<Vec<f64>> = used
        .iter()
        .map(|&i| gw[i * d..(i + 1) * d].iter().map(|w| w / gb[i]).collect())
        .collect();
    let bias: Vec<f64> = used.iter().map(|&i| gb[i]).collect();
    let clusters = cluster(&candidates, &bias);
    let pixels = height * width;
    let violation = |c: &[f64]| -> f64 {
        c.iter()
            .enumerate()
            .map(|(k, v)| {
                let (lo, hi) = target.bounds[k / pixels];
                ((lo - v).max(v - hi).max(0.0)) / (hi - lo).abs().max(f64::MIN_POSITIVE)
            })
            .fold(0.0, f64::max)
    };
    let in_box: Vec<bool> = clusters
        .iter()
        .map(|c| violation(&candidates[c.representative]) <= 1e-3)
        .collect();
    // the attacker's own first layer, to tell which picked images activate a unit
    let weights = |i: usize| -> Result<Vec<f64>> {
        let p = target
            .model
            .params()
            .trainable()
            .nth(i)
            .ok_or_else(|| AttackError::Shape("the model lost its first layer".into()))?;
        Ok(p.var
            .as_tensor()
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?)
    };
    let (w, b) = (weights(layer.weight)?, weights(layer.bias)?);
    // pre-activation of the (possibly split) unit behind cluster c for image x
    let pre_activation = |c: &Cluster, x: &[f64]| -> f64 {
        c.replicas
            .iter()
            .map(|&m| {
                let i = used[m];
                b[i] + w[i * d..(i + 1) * d]
                    .iter()
                    .zip(x)
                    .map(|(w, x)| w * x)
                    .sum::<f64>()
            })
            .sum()
    };
    // greedy pick: most distinct units, then units no picked image activates, then inside the
    // box, then farthest from the picked ones
    let mut picked: Vec<usize> = Vec::new();
    let mut nearest = vec![f64::INFINITY; clusters.len()];
    let mut clean = vec![true; clusters.len()];
    while picked.len() < batch.min(clusters.len()) {
        let next = (0..clusters.len())
            .filter(|c| !picked.contains(c))
            .max_by(|&x, &y| {
                clusters[x]
                    .units
                    .cmp(&clusters[y].units)
                    .then(clean[x].cmp(&clean[y]))
                    .then(in_box[x].cmp(&in_box[y]))
                    .then(nearest[x].total_cmp(&nearest[y]))
                    .then(y.cmp(&x))
            })
            .ok_or_else(|| AttackError::NoSignal("no candidate left".into()))?;
        picked.push(next);
        let chosen = &candidates[clusters[next].representative];
        for (c, cluster) in clusters.iter().enumerate() {
            let dist = distance(&candidates[cluster.representative], chosen);
            nearest[c] = nearest[c].min(dist);
            if clean[c] && pre_activation(cluster, chosen) > 0.0 {
                clean[c] = false;
            }
        }
    }
    let mut values = Vec::with_capacity(batch * d);
    let mut support = Vec::with_capacity(batch);
    for k in 0..batch {
        let cluster = &clusters[picked[k % picked.len()]];
        support.push(cluster.units);
        values.extend(
            candidates[cluster.representative]
                .iter()
                .enumerate()
                .map(|(p, v)| {
                    let (lo, hi) = target.bounds[p / pixels];
                    v.max(lo).min(hi)
                }),
        );
    }
    let device = target.model.device();
    let images = Tensor::from_vec(values, shape.as_slice(), device)?
        .to_dtype(target.gradient[layer.weight].dtype())?;
    Ok(Analytic {
        images,
        units: used.len(),
        clusters: clusters.len(),
        support,
    })
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Groups candidates within [`SAME_IMAGE`] of each other. Candidates are swept in the order of
/// their projection on a fixed random direction u (‖u‖ = 1): two candidates closer than τ
/// have projections closer than τ, so each candidate is compared only with the clusters whose
/// keys lie near its own, not with all of them (1 000 units of mixtures would otherwise cost
/// half a million comparisons of whole images).
fn cluster(candidates: &[Vec<f64>], bias: &[f64]) -> Vec<Cluster> {
    let Some(d) = candidates.first().map(Vec::len) else {
        return Vec::new();
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
    let mut u: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
    let norm_u = u.iter().map(|v| v * v).sum::<f64>().sqrt();
    u.iter_mut().for_each(|v| *v /= norm_u);
    let keys: Vec<f64> = candidates
        .iter()
        .map(|c| c.iter().zip(&u).map(|(a, b)| a * b).sum())
        .collect();
    let norms: Vec<f64> = candidates
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    let widest = SAME_IMAGE * norms.iter().fold(0.0f64, |m, v| m.max(*v));
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]).then(a.cmp(&b)));
    let mut clusters: Vec<Cluster> = Vec::new();
    for &i in &order {
        // clusters were opened in key order; a member lies within `widest` of its
        // representative, which lies within `widest` of the cluster's first key
        let mut found = None;
        for k in (0..clusters.len()).rev() {
            let c = &clusters[k];
            if keys[i] - c.key > 2.0 * widest {
                break;
            }
            let rep = &candidates[c.representative];
            if distance(&candidates[i], rep) <= SAME_IMAGE * c.norm.max(f64::MIN_POSITIVE) {
                found = Some(k);
                break;
            }
        }
        match found {
            Some(k) => {
                let c = &mut clusters[k];
                c.members.push(i);
                if bias[i].abs() > bias[c.representative].abs() {
                    c.representative = i;
                }
            }
            None => clusters.push(Cluster {
                representative: i,
                members: vec![i],
                units: 1,
                replicas: vec![i],
                key: keys[i],
                norm: norms[i],
            }),
        }
    }
    let same = |a: f64, b: f64| (a - b).abs() <= SAME_UNIT * a.abs().max(b.abs());
    for c in &mut clusters {
        let mut values: Vec<f64> = c.members.iter().map(|&m| bias[m]).collect();
        values.sort_by(f64::total_cmp);
        c.units = 1 + values.windows(2).filter(|w| !same(w[0], w[1])).count();
        let own = bias[c.representative];
        c.replicas = c
            .members
            .iter()
            .copied()
            .filter(|&m| same(bias[m], own))
            .collect();
    }
    clusters
}

/// The closed form as a [`Reconstruction`]: one trial, no iterations, whose `distance` is the
/// gradient distance (`distance`, `weighting`) of the recovered batch — how well it explains
/// the whole observed gradient, not only the first layer's.
pub fn reconstruct(
    target: &Target,
    shape: [usize; 4],
    distance: Distance,
    weighting: LayerWeighting,
) -> Result<Reconstruction> {
    let analytic = invert(target, shape)?;
    let config = InversionConfig {
        tv: 0.0,
        distance,
        weighting,
        ..InversionConfig::default()
    };
    let x = Var::from_tensor(&analytic.images)?;
    let eval = evaluate(target, &config, x.as_tensor())?;
    Ok(Reconstruction {
        trials: vec![Trial {
            images: analytic.images,
            distance: eval.distance,
            stopped_at: None,
        }],
        best: 0,
        trace: Vec::new(),
    })
}
