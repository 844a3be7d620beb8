//! How close a reconstruction is to the image it reconstructs: MSE, PSNR and SSIM.
//!
//! Gradient-inversion papers compare attacks by these numbers, so they must mean exactly what the
//! literature means. [`mse`], [`psnr`] and [`ssim`] score images that are already de-normalised
//! and clamped to [0, 1] (peak value, or data range, `L = 1`), given as flat `[C, H, W]` slices
//! plus an [`ImageShape`]; values outside [0, 1] are an error rather than a silently inflated
//! score. [`mse_normalized`] is the exception: it measures the error in the normalised space the
//! attack optimises in. The `*_batch` functions score `[B, C, H, W]` candle tensors image by
//! image, and [`mse_matrix`] builds the cost matrix for [`assign`](crate::assignment::assign).
//!
//! Conventions (Wang et al., "Image quality assessment: from error visibility to structural
//! similarity", IEEE TIP 2004, as implemented by scikit-image):
//!
//! - PSNR is `10 · log10(1 / MSE)` per image. Identical images have MSE 0 and PSNR
//!   [`f64::INFINITY`], as in Geiping et al.'s `inversefed.metrics.psnr`.
//! - SSIM equals scikit-image's
//!   `structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
//!   data_range=1, channel_axis=0)`: an 11×11 Gaussian window with σ = 1.5 (scipy's truncation
//!   at 3.5 σ gives radius 5), weighted (population) variances and covariance, `C1 = (0.01·L)²`,
//!   `C2 = (0.03·L)²`. The SSIM map is evaluated only where the window lies entirely inside the
//!   image ('valid' convolution; scikit-image filters with padding but then crops the 5-pixel
//!   border, which leaves exactly these positions) and averaged over those positions and over
//!   the channels. This differs from pytorch-ssim, which zero-pads and averages over every pixel.
//!   Images smaller than 11×11 have no valid position and are an error.

use candle_core::Tensor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{AttackError, Result};
use crate::shape::{check_finite, check_unit_range, HostBatch, ImageShape};

/// Side of the square SSIM window.
pub const SSIM_WINDOW: usize = 11;
/// Standard deviation of the SSIM window's Gaussian weights, in pixels.
pub const SSIM_SIGMA: f64 = 1.5;
/// `C1 = (K1 · L)²` with `K1 = 0.01` and data range `L = 1`.
pub const SSIM_C1: f64 = 0.01 * 0.01;
/// `C2 = (K2 · L)²` with `K2 = 0.03` and data range `L = 1`.
pub const SSIM_C2: f64 = 0.03 * 0.03;

/// The three standard scores of one reconstruction against its ground truth.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageScores {
    /// Mean squared error, see [`mse`].
    pub mse: f64,
    /// Peak signal-to-noise ratio in dB, see [`psnr`]. JSON has no infinity, so the
    /// [`f64::INFINITY`] of a perfect reconstruction is written as `null` and read back as
    /// infinity.
    #[serde(with = "infinity_as_null")]
    pub psnr: f64,
    /// Structural similarity, see [`ssim`].
    pub ssim: f64,
}

/// Mean squared error between two images with values in [0, 1], over all channels and pixels.
pub fn mse(x: &[f32], y: &[f32], shape: ImageShape) -> Result<f64> {
    check_pair(x, y, shape, check_unit_range)?;
    Ok(mean_squared_error(x, y))
}

/// Peak signal-to-noise ratio in dB of two images with values in [0, 1]: `10 · log10(1 / MSE)`.
///
/// Identical images give [`f64::INFINITY`].
pub fn psnr(x: &[f32], y: &[f32], shape: ImageShape) -> Result<f64> {
    mse(x, y, shape).map(psnr_from_mse)
}

/// Structural similarity of two images with values in [0, 1] (see the [module](self) docs for
/// the exact convention). Symmetric, at most 1, and 1 exactly when `x == y`.
pub fn ssim(x: &[f32], y: &[f32], shape: ImageShape) -> Result<f64> {
    check_pair(x, y, shape, check_ssim_input)?;
    Ok(ssim_unchecked(x, y, shape))
}

/// MSE in the normalised space: the mean over all channels and pixels of
/// `((x − y) / std[c])²`, which is the MSE between `normalize(x)` and `normalize(y)` for the
/// per-channel normalisation `v ↦ (v − mean[c]) / std[c]` (the means cancel, so only `std` is
/// needed; pass the data set's `Normalization::std`).
///
/// `x` and `y` are on the [0, 1] pixel scale but need not lie in [0, 1]; they only have to be
/// finite. This is the `test_mse` of Geiping et al.'s `reconstruct_image.py`,
/// `(output - ground_truth).pow(2).mean()` on normalised tensors, when `x` is the *unclamped*
/// de-normalised reconstruction; pass the clamped one to score the image actually shown. The
/// value is dimensionless (in units of the channel variance), which is why it is reported as a
/// plain fraction or a percentage rather than in pixel units.
pub fn mse_normalized(x: &[f32], y: &[f32], shape: ImageShape, std: &[f32]) -> Result<f64> {
    check_pair(x, y, shape, check_finite)?;
    check_std(std, shape.channels)?;
    Ok(mse_normalized_unchecked(x, y, shape, std))
}

/// [`mse`], [`psnr`] and [`ssim`] of two images with values in [0, 1].
pub fn score(x: &[f32], y: &[f32], shape: ImageShape) -> Result<ImageScores> {
    check_pair(x, y, shape, check_ssim_input)?;
    Ok(score_unchecked(x, y, shape))
}

/// [`mse`] of each pair of images of two `[B, C, H, W]` tensors of equal shape.
pub fn mse_batch(x: &Tensor, y: &Tensor) -> Result<Vec<f64>> {
    per_image(x, y, check_unit_range, |a, b, _| mean_squared_error(a, b))
}

/// [`psnr`] of each pair of images of two `[B, C, H, W]` tensors of equal shape.
pub fn psnr_batch(x: &Tensor, y: &Tensor) -> Result<Vec<f64>> {
    per_image(x, y, check_unit_range, |a, b, _| {
        psnr_from_mse(mean_squared_error(a, b))
    })
}

/// [`ssim`] of each pair of images of two `[B, C, H, W]` tensors of equal shape.
pub fn ssim_batch(x: &Tensor, y: &Tensor) -> Result<Vec<f64>> {
    per_image(x, y, check_ssim_input, ssim_unchecked)
}

/// [`mse_normalized`] of each pair of images of two `[B, C, H, W]` tensors of equal shape.
pub fn mse_normalized_batch(x: &Tensor, y: &Tensor, std: &[f32]) -> Result<Vec<f64>> {
    let check = |what: &str, values: &[f32], shape: ImageShape| {
        check_finite(what, values, shape)?;
        check_std(std, shape.channels)
    };
    per_image(x, y, check, |a, b, shape| {
        mse_normalized_unchecked(a, b, shape, std)
    })
}

/// [`score`] of each pair of images of two `[B, C, H, W]` tensors of equal shape.
pub fn score_batch(x: &Tensor, y: &Tensor) -> Result<Vec<ImageScores>> {
    per_image(x, y, check_ssim_input, score_unchecked)
}

/// The matrix of [`mse`] between every reconstruction (row) and every ground-truth image
/// (column): the cost matrix for [`assign`](crate::assignment::assign), which matches
/// reconstructions to the images they most likely reconstruct. Both are `[B, C, H, W]` tensors
/// of images in [0, 1] with the same `[C, H, W]`; the batch sizes may differ.
pub fn mse_matrix(reconstructions: &Tensor, truths: &Tensor) -> Result<Vec<Vec<f64>>> {
    let recon = HostBatch::from_tensor("reconstructions", reconstructions)?;
    let truth = HostBatch::from_tensor("truths", truths)?;
    if recon.shape() != truth.shape() {
        return Err(AttackError::ShapeMismatch {
            what: format!(
                "reconstructions are {} images but truths are {}",
                recon.shape(),
                truth.shape()
            ),
        });
    }
    let shape = recon.shape();
    for (i, image) in recon.images().enumerate() {
        check_unit_range(&format!("reconstructions[{i}]"), image, shape)?;
    }
    for (j, image) in truth.images().enumerate() {
        check_unit_range(&format!("truths[{j}]"), image, shape)?;
    }
    Ok(recon
        .images()
        .map(|r| truth.images().map(|t| mean_squared_error(r, t)).collect())
        .collect())
}

type Check = fn(&str, &[f32], ImageShape) -> Result<()>;

fn check_pair(x: &[f32], y: &[f32], shape: ImageShape, check: Check) -> Result<()> {
    check("x", x, shape)?;
    check("y", y, shape)
}

fn check_ssim_input(what: &str, values: &[f32], shape: ImageShape) -> Result<()> {
    check_unit_range(what, values, shape)?;
    if shape.height < SSIM_WINDOW || shape.width < SSIM_WINDOW {
        return Err(AttackError::TooSmall {
            what: what.to_string(),
            height: shape.height,
            width: shape.width,
            window: SSIM_WINDOW,
        });
    }
    Ok(())
}

fn check_std(std: &[f32], channels: usize) -> Result<()> {
    if std.len() != channels {
        return Err(AttackError::BadStd {
            reason: format!("{} values for {channels}-channel images", std.len()),
        });
    }
    match std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        None => Ok(()),
        Some(c) => Err(AttackError::BadStd {
            reason: format!(
                "channel {c} has std {}, which is not a positive finite number",
                std[c]
            ),
        }),
    }
}

/// Copies two `[B, C, H, W]` tensors to the host, checks that they agree in shape, checks every
/// image with `check`, then applies `metric` to each pair.
fn per_image<T>(
    x: &Tensor,
    y: &Tensor,
    check: impl Fn(&str, &[f32], ImageShape) -> Result<()>,
    metric: impl Fn(&[f32], &[f32], ImageShape) -> T,
) -> Result<Vec<T>> {
    let xs = HostBatch::from_tensor("x", x)?;
    let ys = HostBatch::from_tensor("y", y)?;
    xs.check_same(&ys, ("x", "y"))?;
    let shape = xs.shape();
    xs.images()
        .zip(ys.images())
        .enumerate()
        .map(|(i, (a, b))| {
            check(&format!("x[{i}]"), a, shape)?;
            check(&format!("y[{i}]"), b, shape)?;
            Ok(metric(a, b, shape))
        })
        .collect()
}

fn squared_error_sum(x: &[f32], y: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| {
            let d = f64::from(a) - f64::from(b);
            d * d
        })
        .sum()
}

fn mean_squared_error(x: &[f32], y: &[f32]) -> f64 {
    squared_error_sum(x, y) / x.len() as f64
}

fn psnr_from_mse(mse: f64) -> f64 {
    if mse == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    }
}

fn mse_normalized_unchecked(x: &[f32], y: &[f32], shape: ImageShape, std: &[f32]) -> f64 {
    let plane = shape.plane();
    let total: f64 = x
        .chunks_exact(plane)
        .zip(y.chunks_exact(plane))
        .zip(std)
        .map(|((xc, yc), &s)| squared_error_sum(xc, yc) / (f64::from(s) * f64::from(s)))
        .sum();
    total / x.len() as f64
}

fn score_unchecked(x: &[f32], y: &[f32], shape: ImageShape) -> ImageScores {
    let mse = mean_squared_error(x, y);
    ImageScores {
        mse,
        psnr: psnr_from_mse(mse),
        ssim: ssim_unchecked(x, y, shape),
    }
}

/// The normalised 1-D Gaussian weights of the SSIM window; the 2-D window is their outer
/// product, which is separable and also sums to 1.
fn gaussian_window() -> [f64; SSIM_WINDOW] {
    let radius = (SSIM_WINDOW / 2) as f64;
    let mut weights: [f64; SSIM_WINDOW] = std::array::from_fn(|i| {
        let d = i as f64 - radius;
        (-d * d / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp()
    });
    let total: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= total);
    weights
}

/// Gaussian-weighted local moments of a pair of windows.
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    x: f64,
    y: f64,
    xx: f64,
    yy: f64,
    xy: f64,
}

impl Moments {
    /// Moments of one window row: `Σ w[k] · (x, y, x², y², xy)[k]`.
    fn of_row(weights: &[f64], x: &[f32], y: &[f32]) -> Self {
        let mut m = Self::default();
        for ((&w, &a), &b) in weights.iter().zip(x).zip(y) {
            let (a, b) = (f64::from(a), f64::from(b));
            m.add_scaled(
                w,
                &Self {
                    x: a,
                    y: b,
                    xx: a * a,
                    yy: b * b,
                    xy: a * b,
                },
            );
        }
        m
    }

    fn add_scaled(&mut self, w: f64, other: &Self) {
        self.x += w * other.x;
        self.y += w * other.y;
        self.xx += w * other.xx;
        self.yy += w * other.yy;
        self.xy += w * other.xy;
    }

    /// SSIM of the window these moments describe.
    fn ssim(&self) -> f64 {
        let var_x = self.xx - self.x * self.x;
        let var_y = self.yy - self.y * self.y;
        let cov = self.xy - self.x * self.y;
        let luminance =
            (2.0 * self.x * self.y + SSIM_C1) / (self.x * self.x + self.y * self.y + SSIM_C1);
        let structure = (2.0 * cov + SSIM_C2) / (var_x + var_y + SSIM_C2);
        luminance * structure
    }
}

/// SSIM of two checked images at least `SSIM_WINDOW` on each side: a separable 'valid' Gaussian
/// filter (rows, then columns) per channel, the SSIM map, and its mean.
fn ssim_unchecked(x: &[f32], y: &[f32], shape: ImageShape) -> f64 {
    let weights = gaussian_window();
    let out_width = shape.width + 1 - SSIM_WINDOW;
    let out_height = shape.height + 1 - SSIM_WINDOW;
    let plane = shape.plane();
    let mut horizontal = Vec::with_capacity(shape.height * out_width);
    let mut column = vec![Moments::default(); out_width];
    let mut total = 0.0;
    for (xc, yc) in x.chunks_exact(plane).zip(y.chunks_exact(plane)) {
        horizontal.clear();
        for (xr, yr) in xc
            .chunks_exact(shape.width)
            .zip(yc.chunks_exact(shape.width))
        {
            horizontal.extend(
                xr.windows(SSIM_WINDOW)
                    .zip(yr.windows(SSIM_WINDOW))
                    .map(|(xw, yw)| Moments::of_row(&weights, xw, yw)),
            );
        }
        let rows: Vec<&[Moments]> = horizontal.chunks_exact(out_width).collect();
        for band in rows.windows(SSIM_WINDOW) {
            column.fill(Moments::default());
            for (&w, row) in weights.iter().zip(band) {
                for (acc, m) in column.iter_mut().zip(*row) {
                    acc.add_scaled(w, m);
                }
            }
            total += column.iter().map(Moments::ssim).sum::<f64>();
        }
    }
    total / (shape.channels * out_height * out_width) as f64
}

/// Serde adapter for PSNR: JSON cannot represent infinity, so it is written as `null`.
mod infinity_as_null {
    use super::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_infinite() && value.is_sign_positive() {
            serializer.serialize_none()
        } else {
            serializer.serialize_some(value)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::INFINITY))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn random_image(rng: &mut ChaCha8Rng, shape: ImageShape) -> Vec<f32> {
        (0..shape.numel()).map(|_| rng.random::<f32>()).collect()
    }

    /// SSIM written straight from the definition, independently of the separable
    /// implementation: for each valid window position, the 121 weights
    /// `exp(−(di² + dj²) / 2σ²) / Σ` applied directly to the five moments.
    fn naive_ssim(x: &[f32], y: &[f32], shape: ImageShape) -> f64 {
        let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
        let mut kernel = [[0.0f64; 11]; 11];
        let mut sum = 0.0;
        for (di, row) in kernel.iter_mut().enumerate() {
            for (dj, w) in row.iter_mut().enumerate() {
                let (a, b) = (di as f64 - 5.0, dj as f64 - 5.0);
                *w = (-(a * a + b * b) / (2.0 * 1.5 * 1.5)).exp();
                sum += *w;
            }
        }
        let (h, w) = (shape.height, shape.width);
        let mut total = 0.0;
        let mut count = 0usize;
        for c in 0..shape.channels {
            for i in 0..=h - 11 {
                for j in 0..=w - 11 {
                    let (mut mx, mut my, mut mxx, mut myy, mut mxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                    for (di, row) in kernel.iter().enumerate() {
                        for (dj, &k) in row.iter().enumerate() {
                            let idx = c * h * w + (i + di) * w + (j + dj);
                            let (a, b) = (f64::from(x[idx]), f64::from(y[idx]));
                            let k = k / sum;
                            mx += k * a;
                            my += k * b;
                            mxx += k * a * a;
                            myy += k * b * b;
                            mxy += k * a * b;
                        }
                    }
                    let (vx, vy, cxy) = (mxx - mx * mx, myy - my * my, mxy - mx * my);
                    total += ((2.0 * mx * my + c1) * (2.0 * cxy + c2))
                        / ((mx * mx + my * my + c1) * (vx + vy + c2));
                    count += 1;
                }
            }
        }
        total / count as f64
    }

    #[test]
    fn mse_and_psnr_by_hand() {
        let shape = ImageShape::new(1, 2, 2);
        let x = [0.0, 0.5, 1.0, 0.25];
        let y = [0.5, 0.5, 0.5, 0.25];
        // (0.25 + 0 + 0.25 + 0) / 4 = 0.125; PSNR = 10 log10(8) = 9.0309 dB.
        assert!((mse(&x, &y, shape).unwrap() - 0.125).abs() < 1e-12);
        let expected = 10.0 * 8f64.log10();
        assert!((psnr(&x, &y, shape).unwrap() - expected).abs() < 1e-9);
        // All-black vs all-white: MSE 1, PSNR 0 dB.
        let (black, white) = ([0.0; 4], [1.0; 4]);
        assert_eq!(mse(&black, &white, shape).unwrap(), 1.0);
        assert_eq!(psnr(&black, &white, shape).unwrap(), 0.0);
        // MSE 0.01 → 20 dB.
        let z = [0.1; 4];
        assert!((psnr(&black, &z, shape).unwrap() - 20.0).abs() < 1e-5);
    }

    #[test]
    fn identical_images_have_infinite_psnr() {
        let shape = ImageShape::new(3, 2, 2);
        let x = [0.3; 12];
        assert_eq!(mse(&x, &x, shape).unwrap(), 0.0);
        assert_eq!(psnr(&x, &x, shape).unwrap(), f64::INFINITY);
    }

    #[test]
    fn mse_normalized_divides_by_channel_variance() {
        let shape = ImageShape::new(2, 1, 2);
        let x = [0.0, 0.0, 1.0, 1.0];
        let y = [0.5, 0.5, 0.5, 0.5];
        // Channel 0: ((0.5/0.5)²·2), channel 1: ((0.5/0.25)²·2); mean over 4 values.
        let expected = (2.0 * 1.0 + 2.0 * 4.0) / 4.0;
        let got = mse_normalized(&x, &y, shape, &[0.5, 0.25]).unwrap();
        assert!((got - expected).abs() < 1e-12);
        // Unit std: plain MSE. Values outside [0, 1] are allowed (unclamped reconstructions).
        let w = [-1.0, 2.0, 0.5, 0.5];
        let plain = (1.5f64.powi(2) + 1.5f64.powi(2)) / 4.0;
        assert!((mse_normalized(&w, &y, shape, &[1.0, 1.0]).unwrap() - plain).abs() < 1e-12);
    }

    #[test]
    fn mse_normalized_equals_mse_of_normalised_images() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let shape = ImageShape::new(3, 4, 5);
        let (mean, std) = ([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]);
        let x = random_image(&mut rng, shape);
        let y = random_image(&mut rng, shape);
        let normalise = |v: &[f32]| -> Vec<f64> {
            v.iter()
                .enumerate()
                .map(|(i, &p)| {
                    let c = i / shape.plane();
                    (f64::from(p) - mean[c]) / f64::from(std[c])
                })
                .collect()
        };
        let (nx, ny) = (normalise(&x), normalise(&y));
        let expected = nx
            .iter()
            .zip(&ny)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            / nx.len() as f64;
        let got = mse_normalized(&x, &y, shape, &std).unwrap();
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
    }

    #[test]
    fn ssim_of_an_image_with_itself_is_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for shape in [
            ImageShape::new(1, 11, 11),
            ImageShape::new(3, 32, 32),
            ImageShape::new(1, 28, 13),
        ] {
            let x = random_image(&mut rng, shape);
            assert!((ssim(&x, &x, shape).unwrap() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn ssim_matches_the_direct_formula() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for shape in [
            ImageShape::new(1, 11, 11),
            ImageShape::new(3, 16, 14),
            ImageShape::new(1, 20, 12),
        ] {
            let x = random_image(&mut rng, shape);
            let y = random_image(&mut rng, shape);
            let (got, expected) = (ssim(&x, &y, shape).unwrap(), naive_ssim(&x, &y, shape));
            assert!(
                (got - expected).abs() < 1e-12,
                "{shape}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn ssim_against_a_constant_image_matches_the_direct_formula() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let shape = ImageShape::new(3, 15, 17);
        let x = random_image(&mut rng, shape);
        let grey = vec![0.5; shape.numel()];
        let (got, expected) = (
            ssim(&x, &grey, shape).unwrap(),
            naive_ssim(&x, &grey, shape),
        );
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        assert!(
            got < 0.1,
            "a constant image shares no structure with noise: {got}"
        );
    }

    #[test]
    fn ssim_of_two_constant_images_is_the_luminance_term() {
        let shape = ImageShape::new(1, 12, 12);
        for (a, b) in [
            (0.2f32, 0.7f32),
            (0.0, 1.0),
            (0.5, 0.5),
            (0.9, 0.1),
            (0.0, 0.0),
        ] {
            let (x, y) = (vec![a; shape.numel()], vec![b; shape.numel()]);
            let (a, b) = (f64::from(a), f64::from(b));
            // Both variances and the covariance vanish: the structure term is C2 / C2 = 1.
            let expected = (2.0 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1);
            let got = ssim(&x, &y, shape).unwrap();
            assert!(
                (got - expected).abs() < 1e-9,
                "a={a} b={b}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn ssim_is_symmetric() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let shape = ImageShape::new(3, 13, 21);
        let x = random_image(&mut rng, shape);
        let y = random_image(&mut rng, shape);
        assert_eq!(ssim(&x, &y, shape).unwrap(), ssim(&y, &x, shape).unwrap());
    }

    #[test]
    fn ssim_decreases_with_added_noise() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let shape = ImageShape::new(1, 32, 32);
        // A smooth image, so that its structure is not itself noise.
        let x: Vec<f32> = (0..shape.numel())
            .map(|i| {
                let (r, c) = ((i / 32) as f32, (i % 32) as f32);
                0.5 + 0.4 * (r / 5.0).sin() * (c / 7.0).cos()
            })
            .collect();
        let noise: Vec<f32> = (0..shape.numel())
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        let mut last = 1.0;
        for level in [0.02f32, 0.05, 0.1, 0.2, 0.4] {
            let y: Vec<f32> = x
                .iter()
                .zip(&noise)
                .map(|(&v, &n)| (v + level * n).clamp(0.0, 1.0))
                .collect();
            let s = ssim(&x, &y, shape).unwrap();
            assert!(s < last, "noise {level}: SSIM {s} not below {last}");
            last = s;
        }
        assert!(last < 0.9);
    }

    #[test]
    fn bad_input_is_a_named_error() {
        let shape = ImageShape::new(1, 11, 11);
        let good = vec![0.5; shape.numel()];
        let mut bad = good.clone();
        bad[12] = f32::NAN;
        let err = ssim(&good, &bad, shape).unwrap_err().to_string();
        assert!(
            err.starts_with("y:") && err.contains("row 1, column 1"),
            "{err}"
        );
        bad[12] = 1.01;
        assert!(matches!(
            mse(&bad, &good, shape),
            Err(AttackError::OutOfRange { .. })
        ));
        assert!(matches!(
            mse(&good, &good[1..], shape),
            Err(AttackError::Length { .. })
        ));
        let small = ImageShape::new(1, 10, 12);
        let err = ssim(&[0.0; 120], &[0.0; 120], small).unwrap_err();
        assert!(
            matches!(
                err,
                AttackError::TooSmall {
                    height: 10,
                    width: 12,
                    ..
                }
            ),
            "{err}"
        );
        // PSNR and MSE are fine on small images.
        assert!(psnr(&[0.0; 120], &[0.0; 120], small).is_ok());
        let err = mse_normalized(&good, &good, shape, &[0.5, 0.5]).unwrap_err();
        assert!(matches!(err, AttackError::BadStd { .. }), "{err}");
        let err = mse_normalized(&good, &good, shape, &[0.0]).unwrap_err();
        assert!(err.to_string().contains("channel 0"), "{err}");
        assert!(
            mse_normalized(&good, &bad, shape, &[1.0]).is_ok(),
            "out of [0, 1] is fine"
        );
    }

    #[test]
    fn batch_functions_score_each_image() {
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let shape = ImageShape::new(3, 12, 11);
        let (xs, ys): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (0..3)
            .map(|_| (random_image(&mut rng, shape), random_image(&mut rng, shape)))
            .unzip();
        let tensor = |images: &[Vec<f32>]| {
            Tensor::from_vec(images.concat(), (images.len(), 3, 12, 11), &device).unwrap()
        };
        let (x, y) = (tensor(&xs), tensor(&ys));
        let scores = score_batch(&x, &y).unwrap();
        let (mses, psnrs, ssims) = (
            mse_batch(&x, &y).unwrap(),
            psnr_batch(&x, &y).unwrap(),
            ssim_batch(&x, &y).unwrap(),
        );
        let std = [0.2, 0.3, 0.4];
        let normalised = mse_normalized_batch(&x, &y, &std).unwrap();
        for i in 0..3 {
            let expected = score(&xs[i], &ys[i], shape).unwrap();
            assert_eq!(scores[i], expected);
            assert_eq!(
                (mses[i], psnrs[i], ssims[i]),
                (expected.mse, expected.psnr, expected.ssim)
            );
            assert_eq!(
                normalised[i],
                mse_normalized(&xs[i], &ys[i], shape, &std).unwrap()
            );
        }
        // Other float dtypes are converted.
        let ssims64 = ssim_batch(&x.to_dtype(DType::F64).unwrap(), &y).unwrap();
        assert_eq!(ssims64, ssims);
    }

    #[test]
    fn batch_errors_name_the_image() {
        let device = Device::Cpu;
        let x = Tensor::full(0.5f32, (2, 1, 11, 11), &device).unwrap();
        let y = Tensor::cat(
            &[
                Tensor::full(0.5f32, (1, 1, 11, 11), &device).unwrap(),
                Tensor::full(f32::NAN, (1, 1, 11, 11), &device).unwrap(),
            ],
            0,
        )
        .unwrap();
        let err = ssim_batch(&x, &y).unwrap_err().to_string();
        assert!(err.starts_with("y[1]:"), "{err}");
        let z = Tensor::full(0.5f32, (3, 1, 11, 11), &device).unwrap();
        assert!(matches!(
            mse_batch(&x, &z),
            Err(AttackError::ShapeMismatch { .. })
        ));
        let flat = Tensor::full(0.5f32, (1, 11, 11), &device).unwrap();
        assert!(matches!(
            psnr_batch(&flat, &flat),
            Err(AttackError::Rank { .. })
        ));
        let err = mse_normalized_batch(&x, &x, &[1.0, 1.0]).unwrap_err();
        assert!(matches!(err, AttackError::BadStd { .. }), "{err}");
    }

    #[test]
    fn mse_matrix_holds_every_pairwise_mse() {
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let shape = ImageShape::new(1, 3, 3);
        let recon: Vec<Vec<f32>> = (0..2).map(|_| random_image(&mut rng, shape)).collect();
        let truth: Vec<Vec<f32>> = (0..3).map(|_| random_image(&mut rng, shape)).collect();
        let r = Tensor::from_vec(recon.concat(), (2, 1, 3, 3), &device).unwrap();
        let t = Tensor::from_vec(truth.concat(), (3, 1, 3, 3), &device).unwrap();
        let matrix = mse_matrix(&r, &t).unwrap();
        assert_eq!(matrix.len(), 2);
        for (i, row) in matrix.iter().enumerate() {
            assert_eq!(row.len(), 3);
            for (j, &cost) in row.iter().enumerate() {
                assert_eq!(cost, mse(&recon[i], &truth[j], shape).unwrap());
            }
        }
        let rgb = Tensor::zeros((3, 3, 3, 3), DType::F32, &device).unwrap();
        assert!(matches!(
            mse_matrix(&r, &rgb),
            Err(AttackError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn scores_round_trip_through_json_with_infinite_psnr() {
        let perfect = ImageScores {
            mse: 0.0,
            psnr: f64::INFINITY,
            ssim: 1.0,
        };
        let json = serde_json::to_string(&perfect).unwrap();
        assert_eq!(json, r#"{"mse":0.0,"psnr":null,"ssim":1.0}"#);
        assert_eq!(serde_json::from_str::<ImageScores>(&json).unwrap(), perfect);
        let finite = ImageScores {
            mse: 0.01,
            psnr: 20.0,
            ssim: 0.5,
        };
        let back: ImageScores =
            serde_json::from_str(&serde_json::to_string(&finite).unwrap()).unwrap();
        assert_eq!(back, finite);
    }
}
