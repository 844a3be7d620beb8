//! The binned readout of an imprinted first layer (Fowl et al., *Robbing the Fed*, ICLR 2022):
//! the analytic attack on a capture whose model a malicious server rewrote.
//!
//! Why its own readout: the imprint rows 0..k all measure the same statistic s(x) of the
//! input, with increasing thresholds t_i, so unit i fires for every image with s > t_i and
//! the plain ratio ∂L/∂W_i / ∂L/∂b_i of [`crate::analytic`] is an average of all the images
//! above t_i. With the next layer passing the same gradient g_b to every imprint unit (the
//! server made it so), the difference of neighbouring bins isolates bin i:
//!
//! ```text
//! x̂_i = (∂L/∂W_i − ∂L/∂W_{i+1}) / (∂L/∂b_i − ∂L/∂b_{i+1}) = Σ_{b in bin i} g_b x_b / Σ_{b in bin i} g_b
//! ```
//!
//! (for the last bin, the unit alone). An image alone in its bin comes back exactly; two in
//! one bin come back as one mixture, and the batch then has fewer distinct candidates than
//! images. Empty bins have a difference of (near) zero and are skipped: bins whose bias
//! difference is below [`RELATIVE_THRESHOLD`] of the largest. The B bins with the largest
//! |bias difference| are returned in bin order, repeated when fewer than B bins are occupied,
//! clamped to the pixel box.

use crate::analytic::first_layer;
use crate::error::{AttackError, Result};
use crate::inversion::{evaluate, InversionConfig, Reconstruction, Target, Trial};
use crate::objective::{Distance, LayerWeighting};
use candle_core::{DType, Tensor, Var};

/// Bins whose bias-gradient difference is smaller than this share of the largest are empty.
pub const RELATIVE_THRESHOLD: f64 = 1e-4;

/// What the binned readout recovered.
pub struct Readout {
    /// `[B, C, H, W]`, normalised, clamped to the pixel box.
    pub images: Tensor,
    /// Occupied bins (at most B distinct images).
    pub occupied: usize,
}

/// Reads the batch of `shape = [B, C, H, W]` out of the first `bins` rows of `target`'s
/// imprinted first layer.
pub fn invert(target: &Target, shape: [usize; 4], bins: usize) -> Result<Readout> {
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
    if bins == 0 || bins > layer.units {
        return Err(AttackError::Shape(format!(
            "the capture says {bins} imprint bins for a first layer of {} units",
            layer.units
        )));
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
    let d = layer.features;
    let gw = fetch(layer.weight, "weight")?;
    let gb = fetch(layer.bias, "bias")?;
    if gw.len() != layer.units * d || gb.len() != layer.units {
        return Err(AttackError::Shape(format!(
            "first-layer gradients of {} and {} values for {} units of {d} inputs",
            gw.len(),
            gb.len(),
            layer.units
        )));
    }
    // bin i: unit i minus unit i + 1 (the last bin: its unit alone)
    let row = |i: usize| &gw[i * d..(i + 1) * d];
    let difference = |i: usize| -> (Vec<f64>, f64) {
        if i + 1 < bins {
            let w = row(i).iter().zip(row(i + 1)).map(|(a, b)| a - b).collect();
            (w, gb[i] - gb[i + 1])
        } else {
            (row(i).to_vec(), gb[i])
        }
    };
    let diffs: Vec<(Vec<f64>, f64)> = (0..bins).map(difference).collect();
    let largest = diffs.iter().fold(0.0f64, |m, (_, b)| m.max(b.abs()));
    if largest <= 0.0 {
        return Err(AttackError::NoSignal(
            "every imprint bin's bias gradient difference is zero".into(),
        ));
    }
    let mut occupied: Vec<usize> = (0..bins)
        .filter(|&i| diffs[i].1.abs() > RELATIVE_THRESHOLD * largest)
        .collect();
    if occupied.len() > batch {
        occupied.sort_by(|&a, &b| {
            diffs[b]
                .1
                .abs()
                .total_cmp(&diffs[a].1.abs())
                .then(a.cmp(&b))
        });
        occupied.truncate(batch);
        occupied.sort_unstable();
    }
    let pixels = height * width;
    let mut values = Vec::with_capacity(batch * d);
    for k in 0..batch {
        let (w, b) = &diffs[occupied[k % occupied.len()]];
        values.extend(w.iter().enumerate().map(|(p, v)| {
            let (lo, hi) = target.bounds[p / pixels];
            (v / b).max(lo).min(hi)
        }));
    }
    let images = Tensor::from_vec(values, shape.as_slice(), target.model.device())?
        .to_dtype(target.gradient[layer.weight].dtype())?;
    Ok(Readout {
        images,
        occupied: occupied.len(),
    })
}

/// The binned readout as a [`Reconstruction`]: one trial, no iterations, whose `distance` is
/// the gradient distance of the recovered batch.
pub fn reconstruct(
    target: &Target,
    shape: [usize; 4],
    bins: usize,
    distance: Distance,
    weighting: LayerWeighting,
) -> Result<Reconstruction> {
    let readout = invert(target, shape, bins)?;
    let config = InversionConfig {
        tv: 0.0,
        distance,
        weighting,
        ..InversionConfig::default()
    };
    let x = Var::from_tensor(&readout.images)?;
    let eval = evaluate(target, &config, x.as_tensor())?;
    Ok(Reconstruction {
        trials: vec![Trial {
            images: readout.images,
            distance: eval.distance,
            stopped_at: None,
        }],
        best: 0,
        trace: Vec::new(),
    })
}
