//! Per-channel mean/std normalisation computed on the training split.
//!
//! The paper (§4.1) normalises samples "using mean and standard deviation calculated on the
//! training splits". [`Normalization`] is that statistic, over pixel values scaled to [0, 1].
//! It is serialisable so that it can be stored next to results and used to de-normalise
//! reconstructed images for display. Statistics are computed exactly from per-channel
//! 256-bin histograms in `f64`, which is both faster and more accurate than summing floats.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// Per-channel mean and standard deviation of pixel values scaled to [0, 1].
///
/// Normalising maps `x ↦ (x − mean[c]) / std[c]`; de-normalising inverts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Population standard deviation per channel.
    pub std: Vec<f32>,
}

impl Normalization {
    /// Mean 0 and std 1 for `channels` channels: normalising leaves values unchanged.
    pub fn identity(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Computes the statistics of every pixel of `dataset`, per channel.
    ///
    /// The standard deviation is the population one (divide by N). A channel with zero
    /// variance gets std 1, so that normalising stays finite. An empty data set is an error.
    pub fn from_dataset(dataset: &Dataset) -> Result<Self> {
        if dataset.is_empty() {
            return Err(DataError::InvalidDataset {
                reason: format!(
                    "cannot compute normalisation of empty data set `{}`",
                    dataset.name()
                ),
            });
        }
        let shape = dataset.shape();
        let mut histograms = vec![[0u64; 256]; shape.channels];
        for image in dataset.pixels().chunks_exact(shape.numel()) {
            for (plane, histogram) in image.chunks_exact(shape.plane()).zip(&mut histograms) {
                for &p in plane {
                    histogram[usize::from(p)] += 1;
                }
            }
        }
        let (mean, std) = histograms.iter().map(histogram_moments).unzip();
        Ok(Self { mean, std })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Normalises `values` (scaled to [0, 1]) in place. The layout is any number of images of
    /// `channels()` planes of `plane` values each, i.e. `[N, C, plane]` flattened.
    pub fn normalize_slice(&self, values: &mut [f32], plane: usize) -> Result<()> {
        self.for_each_channel(values, plane, |v, mean, std| (v - mean) / std)
    }

    /// Inverse of [`normalize_slice`](Self::normalize_slice): back to [0, 1] pixel scale.
    pub fn denormalize_slice(&self, values: &mut [f32], plane: usize) -> Result<()> {
        self.for_each_channel(values, plane, |v, mean, std| v * std + mean)
    }

    /// Normalises a `[C, H, W]` or `[B, C, H, W]` tensor of values in [0, 1].
    pub fn normalize(&self, x: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.broadcast_stats(x)?;
        Ok(x.broadcast_sub(&mean)?.broadcast_div(&std)?)
    }

    /// Inverse of [`normalize`](Self::normalize): maps normalised values back to [0, 1] scale
    /// (not clamped, so reconstructions outside the pixel range stay visible).
    pub fn denormalize(&self, x: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.broadcast_stats(x)?;
        Ok(x.broadcast_mul(&std)?.broadcast_add(&mean)?)
    }

    /// For each channel, the normalised value of every `u8` pixel, for fast batch building.
    pub(crate) fn lookup_tables(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&mean, &std)| {
                std::array::from_fn(|p| {
                    ((p as f64 / 255.0 - f64::from(mean)) / f64::from(std)) as f32
                })
            })
            .collect()
    }

    /// Checks that `self` describes exactly `found` channels.
    pub(crate) fn check_channels(&self, found: usize) -> Result<()> {
        self.check_consistent()?;
        if self.channels() == found {
            Ok(())
        } else {
            Err(DataError::ChannelMismatch {
                expected: self.channels(),
                found,
            })
        }
    }

    /// The public fields can be set freely; `mean` and `std` must still agree in length.
    fn check_consistent(&self) -> Result<()> {
        if self.mean.len() == self.std.len() {
            Ok(())
        } else {
            Err(DataError::invalid_argument(
                "normalization",
                format!(
                    "mean has {} channel(s) but std has {}",
                    self.mean.len(),
                    self.std.len()
                ),
            ))
        }
    }

    fn for_each_channel(
        &self,
        values: &mut [f32],
        plane: usize,
        f: impl Fn(f32, f32, f32) -> f32,
    ) -> Result<()> {
        self.check_consistent()?;
        let image = plane.checked_mul(self.channels()).unwrap_or(0);
        if image == 0 || values.len() % image != 0 {
            return Err(DataError::invalid_argument(
                "values",
                format!(
                    "{} values are not whole images of {} channel(s) × {plane}",
                    values.len(),
                    self.channels()
                ),
            ));
        }
        // Planes cycle through the channels, image after image.
        for (i, chunk) in values.chunks_exact_mut(plane).enumerate() {
            let c = i % self.channels();
            let (mean, std) = (self.mean[c], self.std[c]);
            chunk.iter_mut().for_each(|v| *v = f(*v, mean, std));
        }
        Ok(())
    }

    /// Mean and std as `[C, 1, 1]` tensors matching `x`'s device and dtype.
    fn broadcast_stats(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let dims = x.dims();
        let found = match dims.len() {
            3 | 4 => dims[dims.len() - 3],
            _ => {
                return Err(DataError::invalid_argument(
                    "x",
                    format!("expected a [C, H, W] or [B, C, H, W] tensor, got shape {dims:?}"),
                ))
            }
        };
        self.check_channels(found)?;
        let stat = |v: &[f32]| -> Result<Tensor> {
            Ok(Tensor::from_slice(v, (found, 1, 1), x.device())?.to_dtype(x.dtype())?)
        };
        Ok((stat(&self.mean)?, stat(&self.std)?))
    }
}

/// Mean and population std of the values `v / 255` weighted by `histogram[v]`.
fn histogram_moments(histogram: &[u64; 256]) -> (f32, f32) {
    let n: u64 = histogram.iter().sum();
    let n = n as f64;
    let value = |p: usize| p as f64 / 255.0;
    let mean = histogram
        .iter()
        .enumerate()
        .map(|(p, &k)| k as f64 * value(p))
        .sum::<f64>()
        / n;
    let var = histogram
        .iter()
        .enumerate()
        .map(|(p, &k)| k as f64 * (value(p) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    (mean as f32, if std > 0.0 { std as f32 } else { 1.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ImageShape;
    use candle_core::{DType, Device};

    fn dataset(shape: ImageShape, pixels: Vec<u8>) -> Dataset {
        let n = pixels.len() / shape.numel();
        Dataset::new("t", shape, pixels, vec![0; n], vec!["x".into()]).unwrap()
    }

    #[test]
    fn hand_computed_two_channel_statistics() {
        // Two 1×2 images with two channels:
        //   channel 0 values {0, 255, 255, 0} / 255  → mean 0.5, std 0.5
        //   channel 1 values {51, 51, 51, 51} / 255  → mean 0.2, std 0 → 1
        let ds = dataset(
            ImageShape::new(2, 1, 2),
            vec![0, 255, 51, 51, 255, 0, 51, 51],
        );
        let norm = Normalization::from_dataset(&ds).unwrap();
        assert_eq!(norm.mean, vec![0.5, 0.2]);
        assert_eq!(norm.std, vec![0.5, 1.0]);
    }

    #[test]
    fn hand_computed_uneven_statistics() {
        // One channel, values {0, 0, 0, 255}/255: mean 1/4, var = 3/16 → std √3/4.
        let ds = dataset(ImageShape::new(1, 2, 2), vec![0, 0, 0, 255]);
        let norm = Normalization::from_dataset(&ds).unwrap();
        assert!((norm.mean[0] - 0.25).abs() < 1e-7);
        assert!((norm.std[0] - 3f32.sqrt() / 4.0).abs() < 1e-7);
    }

    #[test]
    fn empty_dataset_is_an_error() {
        let ds = dataset(ImageShape::new(1, 2, 2), vec![]);
        assert!(Normalization::from_dataset(&ds).is_err());
    }

    #[test]
    fn slice_round_trip() {
        let norm = Normalization {
            mean: vec![0.1, 0.2, 0.3],
            std: vec![0.5, 0.25, 2.0],
        };
        let original: Vec<f32> = (0..24).map(|i| i as f32 / 24.0).collect();
        let mut values = original.clone();
        norm.normalize_slice(&mut values, 4).unwrap();
        // Second image, channel 1 (offset 12 + 4).
        assert!((values[16] - (original[16] - 0.2) / 0.25).abs() < 1e-6);
        assert!((values[23] - (original[23] - 0.3) / 2.0).abs() < 1e-6);
        norm.denormalize_slice(&mut values, 4).unwrap();
        for (a, b) in values.iter().zip(&original) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(norm.normalize_slice(&mut values[..10], 4).is_err());
        assert!(norm.normalize_slice(&mut values, 0).is_err());
        assert!(norm.normalize_slice(&mut values, usize::MAX).is_err());
    }

    #[test]
    fn tensor_round_trip_matches_slice() {
        let norm = Normalization {
            mean: vec![0.4, 0.6],
            std: vec![0.2, 0.3],
        };
        let original: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
        let x = Tensor::from_slice(&original, (2, 2, 2, 2), &Device::Cpu).unwrap();
        let y = norm.normalize(&x).unwrap();
        let mut expect = original.clone();
        norm.normalize_slice(&mut expect, 4).unwrap();
        let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in got.iter().zip(&expect) {
            assert!((a - b).abs() < 1e-6);
        }
        let back = norm.denormalize(&y).unwrap();
        let back = back.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in back.iter().zip(&original) {
            assert!((a - b).abs() < 1e-6);
        }
        let half = norm.normalize(&x.to_dtype(DType::BF16).unwrap()).unwrap();
        assert_eq!(half.dtype(), DType::BF16);
        // A single [C, H, W] image works too; wrong channel count or rank does not.
        assert!(norm.normalize(&x.get(0).unwrap()).is_ok());
        let three = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            norm.normalize(&three),
            Err(DataError::ChannelMismatch { .. })
        ));
        let flat = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(norm.denormalize(&flat).is_err());
    }

    #[test]
    fn lookup_tables_match_formula() {
        let norm = Normalization {
            mean: vec![0.1307],
            std: vec![0.3081],
        };
        let table = &norm.lookup_tables()[0];
        assert!((table[0] - (-0.1307 / 0.3081)).abs() < 1e-6);
        assert!((table[255] - (1.0 - 0.1307) / 0.3081).abs() < 1e-6);
    }

    #[test]
    fn serde_round_trip() {
        let norm = Normalization {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.247, 0.2435, 0.2616],
        };
        let json = serde_json::to_string(&norm).unwrap();
        assert_eq!(serde_json::from_str::<Normalization>(&json).unwrap(), norm);
    }
}
