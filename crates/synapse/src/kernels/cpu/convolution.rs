//! The CPU algorithms of the three convolution ops ([`super::super::convolution`]): which one
//! computes a product, given its geometry, and the im2col + `gemm` products for everything the
//! specialised 3×3 algorithms do not cover.
//!
//! Wide 3×3 "same" convolutions (stride 1, padding 1, ≥ 128 channels in and out: ConvNet's)
//! compute all three by Winograd's F(2×2, 3×3) ([`winograd`]); narrower 3×3 "same" convolutions
//! (ResNet's 16–64 channels) compute their forward pass and input gradient by the same
//! algorithm fused strip by strip into register tiles ([`fused_winograd`]), and their weight
//! gradient directly over zero-padded planes ([`direct`]). Every other geometry unfolds each
//! image ([`im2col`]) and multiplies: each image is one task — unfold, product, fold — and the
//! images run in parallel, reading and writing the tensors' own `[N, C, P]` layout, each
//! product on one thread; a single image's product uses all threads. `gemm` splits products
//! over the output, never the inner dimension, so results do not depend on the number of
//! threads.

use super::buffer::per_image;
use super::gemm::{matmul_new_on, matmul_write, Element, Matrix};
use super::im2col::{col2im_into, im2col, ConvGeometry};
use super::storage::Operand;
use super::{direct, fused_winograd, winograd, Scalar};
use candle_core::{bail, CpuStorage, Layout, Result};
use std::sync::{Arc, OnceLock};

/// A kernel's Winograd transform ([`winograd::transform_kernel`]), computed by the first op
/// that needs it. In an attack iteration a wide layer's kernel W enters four products — the
/// forward pass, the input gradient and both again in the gradient of the gradient — and
/// the upstream gradient u that the weight gradient's backward pass uses as a kernel enters
/// two; each transform reads the kernel and writes 16/9 of its size, which was a tenth of a
/// ConvNet iteration when every product transformed its kernel afresh. The ops that share a
/// transform share the very kernel tensor (an operand of both), so it cannot be stale.
#[derive(Clone, Debug, Default)]
pub(crate) struct Transformed(Arc<OnceLock<CpuStorage>>);

impl Transformed {
    /// The transform of `w` (`[O, C, 3, 3]`), computed now unless already kept.
    pub(crate) fn of<T: Operand>(&self, w: &[T], o: usize, c: usize, op: &str) -> Result<&[T]> {
        if self.0.get().is_none() {
            // only one op computes (an op's forward runs once), so a lost race is impossible;
            // were it to happen, the kept transform is the same values
            let _ = self.0.set(T::wrap(winograd::transform_kernel(w, o, c)?));
        }
        let len = winograd::transformed_len(o, c);
        let Some(storage) = self.0.get() else {
            bail!("{op}: the kernel's transform was not kept");
        };
        match T::slice(storage, &Layout::contiguous(len), op)?.get(..len) {
            Some(u) => Ok(u),
            None => bail!("{op}: the kept kernel transform is not {len} values"),
        }
    }
}

/// One of the three products, with the kernel's kept Winograd transform for the two that take
/// the kernel W as their second operand.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Product<'a> {
    /// (x, W) → y `[N, O, Ho, Wo]`
    Forward(&'a Transformed),
    /// (gy, W) → ∂x `[N, C, H, W]`
    InputGrad(&'a Transformed),
    /// (x, gy) → ∂W `[O, C, kh, kw]`
    WeightGrad,
}

/// `product(a, b)` for the geometry `g`, by the algorithm that fits it (`op` names the op in
/// errors).
pub(crate) fn compute<'a, T: Scalar>(
    product: Product<'a>,
    a: &[T],
    b: &[T],
    g: &ConvGeometry,
    op: &str,
) -> Result<Vec<T>> {
    let transformed = |kernel: &'a Transformed| kernel.of(b, g.out_channels, g.in_channels, op);
    match product {
        Product::Forward(kernel) if winograd::applies(g) => {
            winograd::conv3x3(a, transformed(kernel)?, g)
        }
        Product::InputGrad(kernel) if winograd::applies(g) => {
            winograd::conv3x3_input_grad(a, transformed(kernel)?, g)
        }
        Product::WeightGrad if winograd::applies(g) => winograd::conv3x3_weight_grad(a, b, g),
        Product::Forward(kernel) if fused_winograd::applies(g) => {
            fused_winograd::conv3x3(a, transformed(kernel)?, g)
        }
        Product::InputGrad(kernel) if fused_winograd::applies(g) => {
            fused_winograd::conv3x3_input_grad(a, transformed(kernel)?, g)
        }
        Product::WeightGrad if direct::applies(g) => direct::conv3x3_weight_grad(a, b, g),
        Product::Forward(_) => unfolded_forward(a, b, g),
        Product::InputGrad(_) => unfolded_input_grad(a, b, g),
        Product::WeightGrad => unfolded_weight_grad(a, b, g),
    }
}

/// `yᵢ = W · col(xᵢ)` image by image.
fn unfolded_forward<T: Element>(x: &[T], w: &[T], g: &ConvGeometry) -> Result<Vec<T>> {
    let (k, p, o, n) = (g.taps(), g.positions(), g.out_channels, g.batch);
    let one = ConvGeometry { batch: 1, ..*g };
    let image_len = g.in_channels * g.in_h * g.in_w;
    let weight = Matrix::row_major(w, o, k)?;
    per_image(n, o * p, |i, dst, threads| {
        let col = im2col(block(x, i, image_len), &one, threads);
        matmul_write(dst, weight, Matrix::row_major(&col, k, p)?, threads)
    })
}

/// `∂xᵢ = fold(Wᵀ · gᵢ)` image by image.
fn unfolded_input_grad<T: Element>(gy: &[T], w: &[T], g: &ConvGeometry) -> Result<Vec<T>> {
    let (k, p, o, n) = (g.taps(), g.positions(), g.out_channels, g.batch);
    let one = ConvGeometry { batch: 1, ..*g };
    let image_len = g.in_channels * g.in_h * g.in_w;
    let weight_t = Matrix::row_major(w, o, k)?.t();
    per_image(n, image_len, |i, dst, threads| {
        let dcol = matmul_new_on(
            weight_t,
            Matrix::row_major(block(gy, i, o * p), o, p)?,
            threads,
        )?;
        Ok(col2im_into(&dcol, &one, dst, threads))
    })
}

/// `∂Wᵀ = Σᵢ col(xᵢ) · gᵢᵀ`, transposed once at the end.
fn unfolded_weight_grad<T: Element>(x: &[T], gy: &[T], g: &ConvGeometry) -> Result<Vec<T>> {
    let (k, p, o, n) = (g.taps(), g.positions(), g.out_channels, g.batch);
    let one = ConvGeometry { batch: 1, ..*g };
    let image_len = g.in_channels * g.in_h * g.in_w;
    // each image's ∂Wᵀ, `[K, O]`: col(xᵢ) · gᵢᵀ (this orientation is 1.2–3× faster than
    // gᵢ · col(xᵢ)ᵀ on ResNet20's shapes, and `gemm` splits its K rows well over threads when
    // one image has them all); summed over the images, then transposed once
    let parts = per_image(n, k * o, |i, dst, threads| {
        let col = im2col(block(x, i, image_len), &one, threads);
        let col = Matrix::row_major(&col, k, p)?;
        let g_t = Matrix::row_major(block(gy, i, o * p), o, p)?.t();
        matmul_write(dst, col, g_t, threads)
    })?;
    Ok(transpose(&sum_images(&parts, n), k, o))
}

/// Image `i` of a batch whose images are `len` elements each.
fn block<T>(data: &[T], i: usize, len: usize) -> &[T] {
    &data[i * len..][..len]
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose<T: Element>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..cols * rows)
        .map(|v| m[(v % rows) * cols + v / rows])
        .collect()
}

/// `Σᵢ partᵢ` for `n` equal parts back to back, summed in image order (the same for any number
/// of threads).
fn sum_images<T: Element>(parts: &[T], n: usize) -> Vec<T> {
    if n <= 1 {
        return parts.to_vec();
    }
    let len = parts.len() / n;
    let mut total = parts[..len].to_vec();
    for part in parts.chunks_exact(len.max(1)).skip(1).take(n - 1) {
        for (t, &v) in total.iter_mut().zip(part) {
            *t += v;
        }
    }
    total
}
