//! Scoring a reconstruction against the escrowed truth.
//!
//! Reconstructions of a batch come back in any order, so they are first matched to the true
//! images by an optimal assignment on MSE (Hungarian). Then, on images de-normalised and
//! clamped to [0, 1]: MSE, PSNR (peak 1) and SSIM per image and their means; `mse_normalized`,
//! the MSE in the model's normalised input space (what the paper's Table 3 reports, in
//! percent, and Geiping et al.'s `test_mse`); the feature MSE of the logits; and the label
//! accuracy.

use crate::assignment::assign;
use crate::error::{AttackError, Result};
use crate::labels::label_accuracy;
use crate::metrics::{mse_matrix, score_batch, ImageScores};
use candle_core::{DType, Tensor};
use synfed_data::Normalization;
use synfed_models::Model;
use synfed_synapse::Mode;

/// Scores of one matched image.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ImageResult {
    /// Index of the true image.
    pub truth: usize,
    /// Index of the reconstruction matched to it.
    pub reconstruction: usize,
    #[serde(flatten)]
    pub scores: ImageScores,
    pub mse_normalized: f64,
}

/// Scores of a reconstructed batch.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// Mean MSE of de-normalised images in [0, 1].
    pub mse: f64,
    /// Mean PSNR in dB (peak 1); `null` in JSON when a reconstruction is exact (read back as
    /// infinity).
    #[serde(
        serialize_with = "finite_or_null",
        deserialize_with = "null_as_infinity"
    )]
    pub psnr: f64,
    pub ssim: f64,
    /// Mean squared error in the normalised input space (the paper's Table 3 quantity).
    pub mse_normalized: f64,
    /// Mean squared difference of the model's logits on reconstruction and truth.
    pub fmse: f64,
    pub label_accuracy: f64,
    pub images: Vec<ImageResult>,
}

fn finite_or_null<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

fn null_as_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// Reorders `reconstructions` (normalised, `[B, C, H, W]`) so that row j is the one matched
/// to true image j; returns the reordered batch and, per true image, the reconstruction index.
pub fn match_to_truth(
    reconstructions: &Tensor,
    truth: &Tensor,
    norm: &Normalization,
) -> Result<(Tensor, Vec<usize>)> {
    let shown = |x: &Tensor| -> Result<Tensor> {
        Ok(norm
            .denormalize(&x.to_dtype(DType::F32)?)?
            .clamp(0f32, 1f32)?)
    };
    let cost = mse_matrix(&shown(reconstructions)?, &shown(truth)?)?;
    let assignment = assign(&cost)?;
    let mut source = vec![0usize; assignment.permutation.len()];
    for (recon, &t) in assignment.permutation.iter().enumerate() {
        source[t] = recon;
    }
    let index = Tensor::new(
        source.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        reconstructions.device(),
    )?;
    Ok((reconstructions.index_select(&index, 0)?, source))
}

/// Scores `reconstructions` against `truth` (both normalised `[B, C, H, W]`).
pub fn score(
    model: &Model,
    mode: Mode,
    reconstructions: &Tensor,
    truth: &Tensor,
    norm: &Normalization,
    recovered_labels: &[u32],
    true_labels: &[u32],
) -> Result<Scores> {
    if reconstructions.dims() != truth.dims() {
        return Err(AttackError::Shape(format!(
            "reconstructions {:?} and truth {:?} differ in shape",
            reconstructions.dims(),
            truth.dims()
        )));
    }
    let truth = truth
        .to_dtype(DType::F32)?
        .to_device(reconstructions.device())?;
    let (matched, source) = match_to_truth(reconstructions, &truth, norm)?;
    let matched = matched.to_dtype(DType::F32)?;
    let shown = |x: &Tensor| -> Result<Tensor> { Ok(norm.denormalize(x)?.clamp(0f32, 1f32)?) };
    let per_image = score_batch(&shown(&matched)?, &shown(&truth)?)?;
    let normalized: Vec<f64> = (matched.clone() - &truth)?
        .sqr()?
        .flatten_from(1)?
        .mean(1)?
        .to_dtype(DType::F64)?
        .to_vec1()?;
    let mode = if mode == Mode::Train {
        Mode::TrainFrozenStats
    } else {
        mode
    };
    let fmse = (model.forward(&matched, mode)? - model.forward(&truth, mode)?)?
        .sqr()?
        .mean_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    let n = per_image.len() as f64;
    let mean = |f: &dyn Fn(&ImageScores) -> f64| per_image.iter().map(f).sum::<f64>() / n;
    Ok(Scores {
        mse: mean(&|s| s.mse),
        psnr: mean(&|s| s.psnr),
        ssim: mean(&|s| s.ssim),
        mse_normalized: normalized.iter().sum::<f64>() / n,
        fmse,
        label_accuracy: label_accuracy(recovered_labels, true_labels),
        images: per_image
            .into_iter()
            .zip(normalized)
            .enumerate()
            .map(|(t, (scores, mse_normalized))| ImageResult {
                truth: t,
                reconstruction: source[t],
                scores,
                mse_normalized,
            })
            .collect(),
    })
}
