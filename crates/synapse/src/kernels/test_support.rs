//! Shared helpers of the kernels' tests: deterministic inputs and the largest difference.

use super::cpu::im2col::ConvGeometry;
use candle_core::{DType, Device, Tensor};

/// Deterministic f64 values in [−1, 1) of shape `dims`, different for each seed.
pub(crate) fn seeded(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|i| (((i as u64 + 1) * 2654435761 + seed * 7919) % 1000) as f64 / 500.0 - 1.0)
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("seeded tensor")
}

/// max |a − b| over all elements, in f64 (shapes must agree).
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let f = |t: &Tensor| t.to_dtype(DType::F64).expect("to f64");
    (f(a) - f(b))
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f64>())
        .expect("max difference")
}

/// [`max_diff`] relative to the reference `b`'s largest magnitude (at least 1).
pub(crate) fn relative_diff(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b
        .abs()
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.max(0))
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_scalar::<f64>())
        .expect("largest magnitude")
        .max(1.0);
    max_diff(a, b) / scale
}

/// Deterministic values in [−1, 1), different for each seed (the slice form of [`seeded`]).
pub(crate) fn seeded_values(len: usize, seed: u64) -> Vec<f64> {
    (0..len)
        .map(|i| (((i as u64 + 1) * 2654435761 + seed * 7919) % 1000) as f64 / 500.0 - 1.0)
        .collect()
}

/// max |a − b| over two equally long slices.
pub(crate) fn max_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// A 3×3 convolution with stride 1 and padding 1 ("same").
pub(crate) fn same3x3(n: usize, c: usize, o: usize, h: usize, w: usize) -> ConvGeometry {
    ConvGeometry {
        batch: n,
        in_channels: c,
        out_channels: o,
        in_h: h,
        in_w: w,
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 1,
    }
}

/// "Same" 3×3 convolutions that exercise the register-tiled kernels' edges: channel counts
/// that leave partial blocks, planes that are not whole numbers of tiles, 1×1 and single-line
/// planes, a single image and several.
pub(crate) fn same3x3_cases() -> Vec<ConvGeometry> {
    vec![
        same3x3(1, 1, 1, 1, 1),
        same3x3(2, 3, 4, 6, 5),
        same3x3(3, 7, 13, 9, 11),
        same3x3(1, 16, 16, 8, 8),
        same3x3(2, 5, 6, 1, 17),
        same3x3(1, 2, 9, 12, 3),
        same3x3(2, 6, 7, 7, 28),
    ]
}

/// Deterministic operands of the convolution `g`: input `x`, kernel `w` and an upstream
/// gradient `gy`, drawn with seeds `seed`, `seed + 1`, `seed + 2`.
pub(crate) fn conv_operands(g: &ConvGeometry, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let plane = g.in_h * g.in_w;
    (
        seeded_values(g.batch * g.in_channels * plane, seed),
        seeded_values(g.out_channels * g.in_channels * 9, seed + 1),
        seeded_values(g.batch * g.out_channels * plane, seed + 2),
    )
}

/// The values rounded to f32.
pub(crate) fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

/// The values widened to f64.
pub(crate) fn from_f32(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

/// ⟨a, b⟩
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// The definition of a "same" 3×3 convolution:
/// y[n, o, y, x] = Σ_c Σ_ij w[o, c, i, j]·x[n, c, y + i − 1, x + j − 1].
pub(crate) fn conv3x3_definition(x: &[f64], w: &[f64], g: &ConvGeometry) -> Vec<f64> {
    let (n, c, o, h, wd) = (g.batch, g.in_channels, g.out_channels, g.in_h, g.in_w);
    let mut y = vec![0.0; n * o * h * wd];
    for img in 0..n {
        for oc in 0..o {
            for py in 0..h {
                for px in 0..wd {
                    let mut sum = 0.0;
                    for ic in 0..c {
                        for i in 0..3 {
                            for j in 0..3 {
                                let (sy, sx) = (py + i, px + j);
                                if sy < 1 || sx < 1 || sy > h || sx > wd {
                                    continue;
                                }
                                sum += w[((oc * c + ic) * 3 + i) * 3 + j]
                                    * x[((img * c + ic) * h + sy - 1) * wd + sx - 1];
                            }
                        }
                    }
                    y[((img * o + oc) * h + py) * wd + px] = sum;
                }
            }
        }
    }
    y
}
