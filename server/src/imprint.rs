//! The malicious server's imprint module (Fowl et al., *Robbing the Fed*, ICLR 2022).
//!
//! Why: the tap measures an honest-but-curious server, which only reads what clients send. A
//! server that also changes what it *sends* can make a fully connected first layer leak every
//! image of a batch exactly. This file builds that model; `synfed_attack::imprint_readout`
//! reads it back.
//!
//! Construction, for a first layer z = W x + b on the flattened, normalised image x ∈ ℝᴰ
//! followed by a ReLU, with k bins (k ≤ the layer's units):
//! - rows 0..k of W all measure the same statistic, the mean of the normalised input:
//!   W_i = (1/D, …, 1/D), so z_i = s(x) − t_i with s(x) = mean(x) and b_i = −t_i;
//! - the thresholds t_1 ≤ … ≤ t_{k−1} are the i/k quantiles of the statistic's
//!   distribution, so that each bin is equally likely; t_0 lies below the smallest statistic
//!   any image can have (every image fires unit 0). Unit i fires for the images with
//!   s > t_i; bin i holds the images with t_i < s ≤ t_{i+1} (bin k − 1 is open above);
//! - the distribution is the statistic over the server's own held-out split (the test images
//!   it evaluates on): public to the server, drawn from the clients' distribution. Its
//!   empirical quantiles are used when it has at least k images, the Gaussian quantiles
//!   μ + σ·Φ⁻¹(i/k) of its mean and standard deviation otherwise. (Fowl et al. assume a
//!   Gaussian; the normalisation alone fixes μ ≈ 0 but not σ, which depends on how correlated
//!   the pixels are, and MNIST's mean brightness is skewed: equally likely bins need the
//!   empirical quantiles.)
//! - the next layer's columns 0..k are all set to its column 0: every imprinted unit then
//!   passes the same gradient g_b back for image b, ∂L/∂z_bi = g_b·[s_b > t_i], and
//!   ∂L/∂W_i − ∂L/∂W_{i+1} = Σ_{b in bin i} g_b x_bᵀ, ∂L/∂b_i − ∂L/∂b_{i+1} = Σ_{b in bin i} g_b:
//!   their ratio is the image alone in its bin, exactly. (Left as they were, the columns differ
//!   and the differences mix the images of all bins above; Fowl et al.'s block has a
//!   following layer built for it too.) The rest of the model is left as it is.
//!
//! Rows k.. of the first layer (when k is below its units) keep their weights.
//!
//! Weight splitting (III) does not stop the server: unit n of a split layer is the sum of the
//! pre-activations of its Γ replica rows n + γ·N/Γ (`synfed_synapse::splitting`), and its
//! activation is tiled into the Γ columns n + γ·N/Γ of the next layer. So with Γ > 1 bin i is
//! unit i (k ≤ N/Γ): each of its replica rows gets W_i/Γ and bias −t_i/Γ (their sum is the
//! imprint row), and every next-layer column of an imprinted unit is set to column 0 (each unit
//! then passes Γ·g_b back, the same for all of them). Every replica row receives the gradient
//! of its unit, so rows 0..k hold the bins exactly as without splitting and the readout is
//! unchanged.

use crate::error::{Result, ServerError};
use candle_core::{DType, Tensor};
use synfed_data::{Dataset, Normalization};
use synfed_wire::ImprintRecord;

/// The statistic s(x) over a sample of images: what the server knows of its distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct Statistic {
    /// s of every sampled image, ascending.
    pub sorted: Vec<f64>,
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
}

/// The statistic s(x) = mean of the normalised pixels over the images of `data` (normalised
/// with `normalization`).
pub fn statistic_distribution(data: &Dataset, normalization: &Normalization) -> Result<Statistic> {
    let shape = data.shape();
    if normalization.mean.len() != shape.channels || normalization.std.len() != shape.channels {
        return Err(ServerError::Config(format!(
            "tap.mode = \"imprint\": a normalisation of {} channels for images of {}",
            normalization.mean.len(),
            shape.channels
        )));
    }
    if data.is_empty() {
        return Err(ServerError::Config(
            "tap.mode = \"imprint\" places its bins on the held-out split, which is empty".into(),
        ));
    }
    let plane = shape.height * shape.width;
    let mut sorted = Vec::with_capacity(data.len());
    for index in 0..data.len() {
        let image = data
            .image(index)
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        sorted.push(statistic_of(image, plane, normalization));
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let std = (sorted.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    Ok(Statistic { sorted, mean, std })
}

/// s(x) of one raw image (channel-major `u8` planes of `plane` pixels).
fn statistic_of(image: &[u8], plane: usize, normalization: &Normalization) -> f64 {
    let total: f64 = image
        .chunks_exact(plane)
        .zip(normalization.mean.iter().zip(&normalization.std))
        .map(|(channel, (&m, &s))| {
            let raw: f64 = channel.iter().map(|&p| f64::from(p) / 255.0).sum();
            (raw - plane as f64 * f64::from(m)) / f64::from(s)
        })
        .sum();
    total / image.len().max(1) as f64
}

/// Γ of the first layer of a model built from `spec`: its split factor under weight splitting
/// (III), 1 otherwise.
pub fn split_factor(spec: &synfed_models::ModelSpec) -> usize {
    if spec.methods.splitting {
        spec.hyper.gamma.max(1)
    } else {
        1
    }
}

/// The smallest statistic any image can have: every pixel 0.
fn lowest_statistic(normalization: &Normalization) -> f64 {
    let channels = normalization.mean.len().max(1) as f64;
    normalization
        .mean
        .iter()
        .zip(&normalization.std)
        .map(|(&m, &s)| -f64::from(m) / f64::from(s))
        .sum::<f64>()
        / channels
}

/// The k thresholds t_0 ≤ t_1 ≤ … ≤ t_{k−1}: t_i for i ≥ 1 is the i/k quantile of
/// `statistic` — empirical (midway between the neighbouring sorted samples) when there are at
/// least k samples, mean + std·Φ⁻¹(i/k) otherwise; t_0 lies one below the lowest possible
/// statistic. Equal thresholds (tied samples) only leave a bin empty.
pub fn thresholds(bins: usize, statistic: &Statistic, normalization: &Normalization) -> Vec<f64> {
    let n = statistic.sorted.len();
    let mut t = Vec::with_capacity(bins);
    for i in 0..bins {
        t.push(if i == 0 {
            0.0
        } else if n >= bins {
            let j = i * n / bins;
            0.5 * (statistic.sorted[j - 1] + statistic.sorted[j])
        } else {
            statistic.mean + statistic.std * inverse_normal_cdf(i as f64 / bins as f64)
        });
    }
    if bins > 0 {
        let above = if bins > 1 { t[1] } else { statistic.mean };
        t[0] = (lowest_statistic(normalization) - 1.0).min(above - 1.0);
    }
    t
}

/// Φ⁻¹(p) for p in (0, 1): Acklam's rational approximation (relative error below 1.2e-9).
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let low = 0.02425;
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -inverse_normal_cdf(1.0 - p)
    }
}

/// `global` (every tensor of an `mlp`, by name, in parameter order) with its first layer
/// imprinted as the module docs describe: `bins` units (all the layer's N/Γ distinct units
/// when `None`) measuring the mean of the input, biased at the quantiles of the statistic, and
/// the next layer's columns for them made equal. `gamma` is the first layer's split factor Γ
/// (1 without weight splitting). Refuses a model whose first three tensors are not a weight
/// `[N, D]`, its bias `[N]` and a next weight `[M, N]`, a Γ that does not divide N, or more
/// bins than distinct units.
pub fn imprint(
    global: &[(String, Tensor)],
    bins: Option<usize>,
    statistic: &Statistic,
    normalization: &Normalization,
    gamma: usize,
) -> Result<(Vec<(String, Tensor)>, ImprintRecord)> {
    let (mean, std) = (statistic.mean, statistic.std);
    let refuse = |why: String| ServerError::Config(format!("tap.mode = \"imprint\": {why}"));
    let [(w_name, w), (b_name, b), (n_name, next), ..] = global else {
        return Err(refuse("the model has fewer than three tensors".into()));
    };
    let (units, features) = match w.dims() {
        &[units, features] => (units, features),
        dims => {
            return Err(refuse(format!(
                "the first tensor `{w_name}` {dims:?} is not a fully connected weight"
            )))
        }
    };
    if b.dims() != [units] || next.dims().len() != 2 || next.dims()[1] != units {
        return Err(refuse(format!(
            "`{w_name}` {:?}, `{b_name}` {:?}, `{n_name}` {:?} are not a fully connected \
             first layer and the layer after it",
            w.dims(),
            b.dims(),
            next.dims()
        )));
    }
    if gamma == 0 || units % gamma != 0 {
        return Err(refuse(format!(
            "a split factor Γ = {gamma} does not divide the first layer's {units} rows"
        )));
    }
    let distinct = units / gamma;
    let k = bins.unwrap_or(distinct);
    if k == 0 || k > distinct {
        return Err(refuse(format!(
            "tap.bins = {k} must be between 1 and the first layer's {distinct} units"
        )));
    }
    if !(mean.is_finite() && std.is_finite() && std > 0.0) {
        return Err(refuse(format!(
            "the statistic's distribution N({mean}, {std}²) cannot place bins"
        )));
    }
    let dtype = w.dtype();
    let device = w.device().clone();
    let read = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    };
    let mut wv = read(w)?;
    let mut bv = read(b)?;
    let mut nv = read(next)?;
    let t = thresholds(k, statistic, normalization);
    // the rows (and next-layer columns) of imprinted unit i: its Γ replicas
    let replicas = |i: usize| (0..gamma).map(move |g| i + g * distinct);
    let share = gamma as f64;
    for i in 0..k {
        for row in replicas(i) {
            wv[row * features..(row + 1) * features].fill(1.0 / (features as f64 * share));
            bv[row] = -t[i] / share;
        }
    }
    let outputs = next.dims()[0];
    for o in 0..outputs {
        let row = &mut nv[o * units..(o + 1) * units];
        let common = row[0];
        for i in 0..k {
            for column in replicas(i) {
                row[column] = common;
            }
        }
    }
    let build = |values: Vec<f64>, like: &Tensor| -> Result<Tensor> {
        Ok(Tensor::from_vec(values, like.dims(), &device)?.to_dtype(dtype)?)
    };
    let mut out = global.to_vec();
    out[0].1 = build(wv, w)?;
    out[1].1 = build(bv, b)?;
    out[2].1 = build(nv, next)?;
    Ok((out, ImprintRecord { bins: k, mean, std }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn inverse_normal_cdf_matches_tables() {
        // standard normal table values
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_985),
            (0.841_344_746, 1.0),
            (0.001, -3.090_232_306),
            (0.2, -0.841_621_234),
        ] {
            assert!((inverse_normal_cdf(p) - z).abs() < 1e-7, "Φ⁻¹({p})");
        }
    }

    #[test]
    fn thresholds_are_the_quantiles_and_the_first_catches_every_image() {
        let norm = Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        };
        let few = Statistic {
            sorted: vec![0.1],
            mean: 0.1,
            std: 2.0,
        };
        // fewer samples than bins: Gaussian quantiles,
        // Φ⁻¹(1/4) = −0.674490, Φ⁻¹(2/4) = 0, Φ⁻¹(3/4) = 0.674490
        let t = thresholds(4, &few, &norm);
        assert!((t[1] - (0.1 - 2.0 * 0.674_489_75)).abs() < 1e-6);
        assert!((t[2] - 0.1).abs() < 1e-12);
        assert!((t[3] - (0.1 + 2.0 * 0.674_489_75)).abs() < 1e-6);
        // an all-black image has s = (0 − 0.5)/0.25 = −2: it fires unit 0
        assert!(t[0] < -2.0 && t[0] < t[1]);
        // eight samples, four bins: midway between samples 2|3, 4|5, 6|7 (1-based)
        let many = Statistic {
            sorted: vec![-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0],
            mean: 0.5,
            std: 2.29,
        };
        assert_eq!(thresholds(4, &many, &norm)[1..], [-1.5, 0.5, 2.5]);
    }

    #[test]
    fn the_imprinted_layer_measures_the_mean_and_the_next_columns_agree() {
        let dev = Device::Cpu;
        let w = Tensor::arange(0f32, 12.0, &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let b = Tensor::new(&[5f32, 6.0, 7.0], &dev).unwrap();
        let n = Tensor::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap();
        let global = vec![
            ("fc1.weight".to_string(), w),
            ("fc1.bias".to_string(), b),
            ("fc2.weight".to_string(), n),
        ];
        let norm = Normalization::identity(1);
        let statistic = Statistic {
            sorted: vec![0.0],
            mean: 0.0,
            std: 1.0,
        };
        let (out, record) = imprint(&global, Some(2), &statistic, &norm, 1).unwrap();
        assert_eq!(record.bins, 2);
        let w: Vec<Vec<f32>> = out[0].1.to_vec2().unwrap();
        assert_eq!(w[0], vec![0.25; 4]);
        assert_eq!(w[1], vec![0.25; 4]);
        assert_eq!(
            w[2],
            vec![8.0, 9.0, 10.0, 11.0],
            "rows past the bins are kept"
        );
        let b: Vec<f32> = out[1].1.to_vec1().unwrap();
        // t_1 = Φ⁻¹(1/2) = 0; t_0 below the lowest statistic (0 for identity normalisation)
        assert_eq!(b[1], 0.0);
        assert!(b[0] >= 1.0);
        assert_eq!(b[2], 7.0);
        let n: Vec<Vec<f32>> = out[2].1.to_vec2().unwrap();
        assert_eq!(n, vec![vec![1.0, 1.0, 3.0], vec![4.0, 4.0, 6.0]]);
        let err = imprint(&global, Some(4), &statistic, &norm, 1).unwrap_err();
        assert!(err.to_string().contains("tap.bins"), "{err}");
    }

    #[test]
    fn a_split_first_layer_is_imprinted_on_every_replica_of_its_units() {
        let dev = Device::Cpu;
        // 4 rows, Γ = 2: unit 0 = rows 0 + 2, unit 1 = rows 1 + 3; 2 inputs
        let w = Tensor::arange(0f32, 8.0, &dev)
            .unwrap()
            .reshape((4, 2))
            .unwrap();
        let b = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &dev).unwrap();
        let n = Tensor::new(&[[1f32, 2.0, 3.0, 4.0]], &dev).unwrap();
        let global = vec![
            ("fc1.weight".to_string(), w),
            ("fc1.bias".to_string(), b),
            ("fc2.weight".to_string(), n),
        ];
        let norm = Normalization::identity(1);
        let statistic = Statistic {
            sorted: vec![0.0],
            mean: 0.0,
            std: 1.0,
        };
        // one bin: unit 0's replicas (rows 0 and 2) each carry half of (1/2, 1/2) and of −t_0
        let (out, record) = imprint(&global, Some(1), &statistic, &norm, 2).unwrap();
        assert_eq!(record.bins, 1);
        let w: Vec<Vec<f32>> = out[0].1.to_vec2().unwrap();
        assert_eq!(w[0], vec![0.25, 0.25]);
        assert_eq!(w[2], vec![0.25, 0.25]);
        assert_eq!(w[1], vec![2.0, 3.0], "unit 1 keeps its rows");
        assert_eq!(w[3], vec![6.0, 7.0]);
        let b: Vec<f32> = out[1].1.to_vec1().unwrap();
        assert_eq!(b[0], b[2]);
        // the unit's summed bias is −t_0, t_0 one below the lowest statistic 0
        assert!((b[0] + b[2] - 1.0).abs() < 1e-6, "{b:?}");
        assert_eq!((b[1], b[3]), (2.0, 4.0));
        // the next layer's columns of unit 0 (0 and 2) take column 0's value
        let n: Vec<Vec<f32>> = out[2].1.to_vec2().unwrap();
        assert_eq!(n, vec![vec![1.0, 2.0, 1.0, 4.0]]);
        // all distinct units by default; Γ must divide the rows; at most N/Γ bins
        let (_, all) = imprint(&global, None, &statistic, &norm, 2).unwrap();
        assert_eq!(all.bins, 2);
        let err = imprint(&global, Some(3), &statistic, &norm, 2).unwrap_err();
        assert!(err.to_string().contains("2 units"), "{err}");
        let err = imprint(&global, None, &statistic, &norm, 3).unwrap_err();
        assert!(err.to_string().contains("does not divide"), "{err}");
    }
}
