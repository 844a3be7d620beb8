//! 3×3 "same" convolutions (stride 1, padding 1) by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray, *Fast Algorithms for Convolutional Neural Networks*, 2016).
//!
//! Almost every convolution of ResNet20 and ConvNet is of this kind, and so are all seven
//! products per layer of an attack iteration (the forward pass, the two gradients and the four
//! products of their derivatives): the input gradient of a stride-1, padding-1 3×3
//! convolution is the same kind of convolution of the upstream gradient with the flipped,
//! channel-swapped kernel, and the weight gradient is the adjoint of the same algorithm. With
//! im2col each output pixel costs 9·C multiply-adds; F(2×2, 3×3) computes a 2×2 output tile
//! from a 4×4 input tile with 16·C, 2.25× fewer, at the price of linear transforms of the
//! tiles:
//!
//! * kernel:  `U = G·w·Gᵀ`   (4×4 per output and input channel)
//! * input:   `V = Bᵀ·d·B`   (4×4 per input channel and tile; tiles overlap by two pixels)
//! * product: `M_ξ = U_ξ · V_ξ` for each of the 16 positions ξ of the 4×4 tile, an
//!   `[O, C]·[C, tiles]` matrix product over every tile of every image at once
//! * output:  `y = Aᵀ·M·A`   (2×2 per output channel and tile)
//! * weight gradient: `∂U_ξ = (A·gy·Aᵀ)_ξ · V_ξᵀ` over all tiles, `∂w = Gᵀ·∂U·G`
//!
//! The kernel's transform is computed by the caller ([`transform_kernel`]) so that the
//! products on one kernel can share it (`convolution.rs`).
//!
//! The result is the same linear map of (x, w) as the direct convolution — only rounding
//! differs (F(2×2, 3×3)'s transforms use coefficients 0, ±½ and ±1, so f32 results stay within
//! a few units in the last place of the direct sum's error) — so the three convolution ops keep
//! their exact adjoint relations and every derivative stays exact. Products run one ξ per task
//! (each on one thread, independent of the thread count); transforms run per channel.

use super::buffer::{per_image, write_copy, Written};
use super::gemm::{matmul_write, Element, Matrix};
use super::im2col::ConvGeometry;
use candle_core::{bail, Result};
use std::mem::MaybeUninit;

/// Input and output channels from which the transforms pay for themselves. Below, the
/// products are too small for the saved multiply-adds to outweigh transforming every tile:
/// measured on ResNet20, whose 16-, 32- and 64-channel layers were 5–25 % slower with it
/// (the 64-channel stage alone: no faster); ConvNet's 128–256-channel layers are ~2× faster.
const MIN_CHANNELS: usize = 128;

/// Positions of a 4×4 transformed tile: 16 matrix products per convolution.
const XI: usize = 16;

/// Whether `g` is a convolution this file computes: a 3×3 kernel, stride 1, padding 1, with
/// enough channels in and out.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    (g.kernel_h, g.kernel_w, g.stride, g.padding) == (3, 3, 1, 1)
        && g.in_channels >= MIN_CHANNELS
        && g.out_channels >= MIN_CHANNELS
}

/// `y = conv(x, w)` for `x` `[N, C, H, W]` (contiguous) and the transform `u` of a kernel `w`
/// `[O, C, 3, 3]` ([`transform_kernel`]), stride 1, padding 1: `[N, O, H, W]`.
pub(crate) fn conv3x3<T: Element>(x: &[T], u: &[T], g: &ConvGeometry) -> Result<Vec<T>> {
    check(x, u, g, g.in_channels)?;
    let (o, c) = (g.out_channels, g.in_channels);
    multiply_and_fold(x, g, CHUNK_BYTES, |xi| {
        Matrix::new(&u[xi * c..], o, c, XI * c, 1)
    })
}

/// The input gradient of [`conv3x3`] with the transform `u` of kernel `w` `[O, C, 3, 3]`, for
/// the upstream gradient `gy` `[N, O, H, W]`: `∂x` `[N, C, H, W]` (`g` is the forward
/// convolution's geometry).
///
/// That is the convolution of `gy` with the flipped, channel-swapped kernel
/// `w'[c, o, i, j] = w[o, c, 2 − i, 2 − j]`. Flipping a kernel reverses `G`'s rows but for the
/// middle two (`G·J = P·G`, P swapping rows 0 and 3), so `U(w') = Uᵀ` with ξ = (r, s) read at
/// (π r, π s), π = (3 1 2 0): no flipped kernel is built, the products read `U` transposed.
pub(crate) fn conv3x3_input_grad<T: Element>(
    gy: &[T],
    u: &[T],
    g: &ConvGeometry,
) -> Result<Vec<T>> {
    let (o, c) = (g.out_channels, g.in_channels);
    let swapped = ConvGeometry {
        in_channels: o,
        out_channels: c,
        ..*g
    };
    check(gy, u, &swapped, o)?;
    const PI: [usize; 4] = [3, 1, 2, 0];
    multiply_and_fold(gy, &swapped, CHUNK_BYTES, |xi| {
        let flipped = PI[xi / 4] * 4 + PI[xi % 4];
        Ok(Matrix::new(&u[flipped * c..], o, c, XI * c, 1)?.t())
    })
}

/// The weight gradient of [`conv3x3`] for the input `x` `[N, C, H, W]` and the upstream
/// gradient `gy` `[N, O, H, W]`: `∂w` `[O, C, 3, 3]`, summed over the images.
///
/// The adjoint of the forward pass in `w`: with `Z = A·gy·Aᵀ` per output tile (4×4 from 2×2),
/// `∂U_ξ = Σ_tiles Z_ξ ⊙ V_ξ` — per ξ an `[O, tiles] · [tiles, C]` product — and
/// `∂w = Gᵀ·∂U·G`. Again 16 instead of 36 multiply-adds per tile, output and input channel.
pub(crate) fn conv3x3_weight_grad<T: Element>(
    x: &[T],
    gy: &[T],
    g: &ConvGeometry,
) -> Result<Vec<T>> {
    weight_grad_in_chunks(x, gy, g, CHUNK_BYTES)
}

fn weight_grad_in_chunks<T: Element>(
    x: &[T],
    gy: &[T],
    g: &ConvGeometry,
    budget: usize,
) -> Result<Vec<T>> {
    let (n, c, o) = (g.batch, g.in_channels, g.out_channels);
    let (h, w) = (g.in_h, g.in_w);
    if (g.kernel_h, g.kernel_w, g.stride, g.padding) != (3, 3, 1, 1)
        || x.len() != n * c * h * w
        || gy.len() != n * o * h * w
    {
        bail!(
            "winograd weight gradient: {} input and {} gradient values for {g:?}",
            x.len(),
            gy.len()
        );
    }
    let tiles = Tiles::of(h, w);
    if n * tiles.count() == 0 {
        return Ok(vec![T::ZERO; o * c * 9]);
    }
    let (plane, mut total) = (h * w, Vec::new());
    // the chunks' sums added in image order (the same for any number of threads)
    for (first, images) in chunks::<T>(n, c.max(o), tiles, budget) {
        let x = &x[first * c * plane..][..images * c * plane];
        let gy = &gy[first * o * plane..][..images * o * plane];
        let columns = images * tiles.count();
        let v = transform_input(x, images, c, h, w, tiles)?;
        let z = transform_output_grad(gy, images, o, h, w, tiles)?;
        // ∂U_ξ = Z_ξ · V_ξᵀ: Z is [O][16][columns], V is [C][16][columns]
        let du = per_image(XI, o * c, |xi, dst, threads| {
            let lhs = Matrix::new(&z[xi * columns..], o, columns, XI * columns, 1)?;
            let rhs = Matrix::new(&v[xi * columns..], c, columns, XI * columns, 1)?.t();
            matmul_write(dst, lhs, rhs, threads)
        })?;
        if total.is_empty() {
            total = du;
        } else {
            total.iter_mut().zip(&du).for_each(|(t, &d)| *t += d);
        }
    }
    untransform_kernel(&total, o, c)
}

/// `Z = A·b·Aᵀ` of every 2×2 block b of the upstream gradient (zero past an odd edge), the
/// adjoint of [`transform_output`]: `A = [[1, 0], [1, 1], [1, −1], [0, −1]]`, laid out
/// `[O][16][N·tiles]`.
fn transform_output_grad<T: Element>(
    gy: &[T],
    n: usize,
    o: usize,
    h: usize,
    w: usize,
    tiles: Tiles,
) -> Result<Vec<T>> {
    let columns = n * tiles.count();
    let cols = tiles.cols;
    // the plane extended by zeros to whole tiles
    let (eh, ew) = (2 * tiles.rows, 2 * cols);
    per_image(o, XI * columns, |oc, dst, _| {
        let mut extended = vec![T::ZERO; eh * ew];
        // b·Aᵀ along each row: q[s][row·cols + tx]
        let mut q: [Vec<T>; 4] = std::array::from_fn(|_| vec![T::ZERO; eh * cols]);
        let mut rows: Vec<&mut [MaybeUninit<T>]> = dst.chunks_exact_mut(columns).collect();
        for img in 0..n {
            let plane = &gy[(img * o + oc) * h * w..][..h * w];
            for (row, line) in plane.chunks_exact(w).enumerate() {
                extended[row * ew..][..w].copy_from_slice(line);
            }
            for (row, line) in extended.chunks_exact(ew).enumerate() {
                let [q0, q1, q2, q3] = &mut q;
                let at = row * cols;
                let (q0, q1) = (&mut q0[at..at + cols], &mut q1[at..at + cols]);
                let (q2, q3) = (&mut q2[at..at + cols], &mut q3[at..at + cols]);
                for (tx, b) in line.chunks_exact(2).enumerate() {
                    q0[tx] = b[0];
                    q1[tx] = b[0] + b[1];
                    q2[tx] = b[0] - b[1];
                    q3[tx] = T::ZERO - b[1];
                }
            }
            // A· down the two rows of each tile row
            for ty in 0..tiles.rows {
                let first = img * tiles.count() + ty * cols;
                let span = first..first + cols;
                for (s, qs) in q.iter().enumerate() {
                    let (b0, b1) = (
                        &qs[2 * ty * cols..][..cols],
                        &qs[(2 * ty + 1) * cols..][..cols],
                    );
                    combine(&mut rows[s][span.clone()], b0, b0, |a, _| a);
                    combine(&mut rows[4 + s][span.clone()], b0, b1, |a, b| a + b);
                    combine(&mut rows[8 + s][span.clone()], b0, b1, |a, b| a - b);
                    combine(&mut rows[12 + s][span.clone()], b1, b1, |_, b| T::ZERO - b);
                }
            }
        }
        // SAFETY: each of the 16 rows (r, s) got, for every image and row of tiles, the
        // `cols` values from `first` on: all `n·tiles.count()` columns of every row.
        Ok(unsafe { Written::new(dst) })
    })
}

/// `∂w = Gᵀ·∂U·G` per (o, c), the adjoint of [`transform_kernel`], from `∂U` `[16][O][C]`
/// into `[O, C, 3, 3]`: `Gᵀ = [[1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1]]`.
fn untransform_kernel<T: Element>(du: &[T], o: usize, c: usize) -> Result<Vec<T>> {
    let half = T::from_f64(0.5);
    // Gᵀ applied to four values
    let gt = |u: [T; 4]| {
        [
            u[0] + (u[1] + u[2]) * half,
            (u[1] - u[2]) * half,
            (u[1] + u[2]) * half + u[3],
        ]
    };
    per_image(o, c * 9, |oc, dst, _| {
        let at = |xi: usize, ic: usize| du[xi * o * c + oc * c + ic];
        for (ic, out) in dst.chunks_exact_mut(9).enumerate() {
            // Gᵀ·∂U: three rows of four
            let cols: [[T; 3]; 4] = std::array::from_fn(|s| {
                gt([at(s, ic), at(4 + s, ic), at(8 + s, ic), at(12 + s, ic)])
            });
            for i in 0..3 {
                let row = gt([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
                for (j, v) in row.into_iter().enumerate() {
                    out[i * 3 + j].write(v);
                }
            }
        }
        // SAFETY: every kernel (chunk of 9) got its 3×3 values written.
        Ok(unsafe { Written::new(dst) })
    })
}

fn check<T>(x: &[T], u: &[T], g: &ConvGeometry, in_channels: usize) -> Result<()> {
    if (g.kernel_h, g.kernel_w, g.stride, g.padding) != (3, 3, 1, 1) {
        bail!("winograd: {g:?} is not a 3×3 convolution with stride 1 and padding 1");
    }
    let pixels = g.batch * g.in_h * g.in_w;
    if x.len() != pixels * in_channels || u.len() != transformed_len(g.in_channels, g.out_channels)
    {
        bail!(
            "winograd: {} input and {} transformed kernel values for {g:?}",
            x.len(),
            u.len()
        );
    }
    Ok(())
}

/// The products `M_ξ = U_ξ · V_ξ` and the output transform, for the transformed kernel given
/// per ξ as an `[O, C]` matrix (O = `g.out_channels`).
fn multiply_and_fold<'u, T: Element>(
    x: &[T],
    g: &ConvGeometry,
    budget: usize,
    kernel: impl Fn(usize) -> Result<Matrix<'u, T>> + Sync,
) -> Result<Vec<T>> {
    let (n, c, o) = (g.batch, g.in_channels, g.out_channels);
    let (h, w) = (g.in_h, g.in_w);
    let tiles = Tiles::of(h, w);
    if n * tiles.count() == 0 || o == 0 {
        return Ok(vec![T::ZERO; n * o * h * w]);
    }
    let mut parts = Vec::new();
    for (first, images) in chunks::<T>(n, c.max(o), tiles, budget) {
        let x = &x[first * c * h * w..][..images * c * h * w];
        let columns = images * tiles.count();
        let v = transform_input(x, images, c, h, w, tiles)?;
        // V is [C][16][columns]: the rows of V_ξ lie 16·columns apart
        let m = per_image(XI, o * columns, |xi, dst, threads| {
            let rhs = Matrix::new(&v[xi * columns..], c, columns, XI * columns, 1)?;
            matmul_write(dst, kernel(xi)?, rhs, threads)
        })?;
        parts.push(transform_output(&m, images, o, h, w, tiles)?);
    }
    // one chunk (the common case) without a copy
    Ok(match parts.len() {
        1 => parts.swap_remove(0),
        _ => parts.concat(),
    })
}

/// The transformed tiles of at most this many bytes are held at once (V, and M or Z): larger
/// batches are transformed and multiplied a chunk of images at a time. (ConvNet at batch 64
/// would otherwise hold ~270 MB per transform.)
const CHUNK_BYTES: usize = 32 << 20;

/// `(first image, images)` chunks of a batch of `n`, each of whose transforms of `channels`
/// channels fit `budget` bytes ([`CHUNK_BYTES`]; at least one image per chunk).
fn chunks<T>(n: usize, channels: usize, tiles: Tiles, budget: usize) -> Vec<(usize, usize)> {
    let per_image = XI * channels * tiles.count() * std::mem::size_of::<T>();
    let per_chunk = (budget / per_image.max(1)).max(1);
    (0..n)
        .step_by(per_chunk)
        .map(|first| (first, per_chunk.min(n - first)))
        .collect()
}

/// The 2×2 output tiles covering an `h × w` plane (the last row/column of tiles reaches past
/// an odd edge; those outputs are dropped). `fused_winograd` adds its strips of tiles.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiles {
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl Tiles {
    pub(crate) fn of(h: usize, w: usize) -> Self {
        Self {
            h,
            w,
            rows: h.div_ceil(2),
            cols: w.div_ceil(2),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.rows * self.cols
    }
}

/// Input channels transformed together, in registers' reach.
const KERNEL_LANES: usize = 64;

/// `U = G·w·Gᵀ` for every 3×3 kernel of `w` (`[O][C][9]`),
/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`, laid out `[O][16][C]`: `U_ξ` is the
/// `[O, C]` matrix at offset ξ·C with row stride 16·C. Output channels run in parallel; within
/// one, blocks of input channels are gathered tap-major so that the arithmetic runs along
/// contiguous lanes.
pub(crate) fn transform_kernel<T: Element>(w: &[T], o: usize, c: usize) -> Result<Vec<T>> {
    if w.len() != o * c * 9 {
        bail!(
            "winograd: {} kernel values for {o}×{c} 3×3 kernels",
            w.len()
        );
    }
    let half = T::from_f64(0.5);
    per_image(o, XI * c, |oc, dst, _| {
        let mut taps = [[T::ZERO; KERNEL_LANES]; 9];
        let mut gw = [[[T::ZERO; KERNEL_LANES]; 3]; 4];
        for c0 in (0..c).step_by(KERNEL_LANES) {
            let len = KERNEL_LANES.min(c - c0);
            let kernels = &w[(oc * c + c0) * 9..][..len * 9];
            for (lane, k) in kernels.chunks_exact(9).enumerate() {
                for (t, &v) in k.iter().enumerate() {
                    taps[t][lane] = v;
                }
            }
            // G·w: row r of G applied down the kernel's columns j
            for (r, gw_r) in gw.iter_mut().enumerate() {
                for (j, out) in gw_r.iter_mut().enumerate() {
                    g_row(r, [&taps[j], &taps[3 + j], &taps[6 + j]], out, half);
                }
            }
            // (G·w)·Gᵀ: row s of G applied along the columns
            let mut u = [T::ZERO; KERNEL_LANES];
            for xi in 0..XI {
                let (r, s) = (xi / 4, xi % 4);
                g_row(s, [&gw[r][0], &gw[r][1], &gw[r][2]], &mut u, half);
                write_copy(&mut dst[xi * c + c0..][..len], &u[..len]);
            }
        }
        // SAFETY: for every ξ, the blocks `c0..c0 + len` above tile `0..c`, and `g_row` wrote
        // each lane of each block: all 16·c elements.
        Ok(unsafe { Written::new(dst) })
    })
}

/// Values in the transform of `o × c` kernels.
pub(crate) fn transformed_len(o: usize, c: usize) -> usize {
    XI * o * c
}

/// Row `r` of `G` applied to three lanes of values.
#[inline(always)]
fn g_row<T: Element>(
    r: usize,
    [a, b, d]: [&[T; KERNEL_LANES]; 3],
    out: &mut [T; KERNEL_LANES],
    half: T,
) {
    let lanes = out.iter_mut().zip(a).zip(b).zip(d);
    match r {
        0 => lanes.for_each(|(((o, &a), _), _)| *o = a),
        1 => lanes.for_each(|(((o, &a), &b), &d)| *o = (a + b + d) * half),
        2 => lanes.for_each(|(((o, &a), &b), &d)| *o = (a - b + d) * half),
        _ => lanes.for_each(|(((o, _), _), &d)| *o = d),
    }
}

/// `V = Bᵀ·d·B` of every tile of every image, laid out `[C][16][N·tiles]`:
/// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`. Each channel's
/// transforms are one contiguous block (channels run in parallel); within a plane, a row of
/// tiles is transformed down its four input rows first (whole rows at a time), then along.
fn transform_input<T: Element>(
    x: &[T],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    tiles: Tiles,
) -> Result<Vec<T>> {
    let columns = n * tiles.count();
    // the plane with its one-pixel zero border, extended to cover the last tiles
    let (ph, pw) = (2 * tiles.rows + 2, 2 * tiles.cols + 2);
    let block = XI * columns;
    let plane_len = h * w;
    let cols = tiles.cols;
    per_image(c, block, |ic, dst, _| {
        let mut padded = vec![T::ZERO; ph * pw];
        // d·B along each padded row: p[j][row·cols + tx] for the tile column tx
        let mut p: [Vec<T>; 4] = std::array::from_fn(|_| vec![T::ZERO; ph * cols]);
        let mut rows: Vec<&mut [MaybeUninit<T>]> = dst.chunks_exact_mut(columns).collect();
        for img in 0..n {
            let plane = &x[(img * c + ic) * plane_len..][..plane_len];
            for (row, line) in plane.chunks_exact(w).enumerate() {
                padded[(row + 1) * pw + 1..][..w].copy_from_slice(line);
            }
            for (row, line) in padded.chunks_exact(pw).enumerate() {
                let [p0, p1, p2, p3] = &mut p;
                let at = row * cols;
                let outs = (&mut p0[at..at + cols], &mut p1[at..at + cols]);
                let more = (&mut p2[at..at + cols], &mut p3[at..at + cols]);
                for (tx, e) in line.windows(4).step_by(2).take(cols).enumerate() {
                    outs.0[tx] = e[0] - e[2];
                    outs.1[tx] = e[1] + e[2];
                    more.0[tx] = e[2] - e[1];
                    more.1[tx] = e[1] - e[3];
                }
            }
            // Bᵀ· down the rows of each tile row: contiguous along the tile columns
            for ty in 0..tiles.rows {
                let first = img * tiles.count() + ty * cols;
                for (j, pj) in p.iter().enumerate() {
                    let d: [&[T]; 4] = std::array::from_fn(|i| &pj[(2 * ty + i) * cols..][..cols]);
                    let span = first..first + cols;
                    combine(&mut rows[j][span.clone()], d[0], d[2], |a, b| a - b);
                    combine(&mut rows[4 + j][span.clone()], d[1], d[2], |a, b| a + b);
                    combine(&mut rows[8 + j][span.clone()], d[2], d[1], |a, b| a - b);
                    combine(&mut rows[12 + j][span], d[1], d[3], |a, b| a - b);
                }
            }
        }
        // SAFETY: each of the 16 rows (r, j) got, for every image and row of tiles, the
        // `cols` values from `first` on: all `n·tiles.count()` columns of every row.
        Ok(unsafe { Written::new(dst) })
    })
}

/// `out[i] = f(a[i], b[i])`, initialising `out` (vectorised: same lengths, no bounds checks).
#[inline(always)]
fn combine<T: Element>(out: &mut [MaybeUninit<T>], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        o.write(f(a, b));
    }
}

/// `y = Aᵀ·M·A` per output channel and tile, `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`, from `M`
/// `[16][O][N·tiles]` into `[N, O, H, W]`; a row of tiles at a time, reading each `M_ξ`'s
/// values for that row contiguously.
fn transform_output<T: Element>(
    m: &[T],
    n: usize,
    o: usize,
    h: usize,
    w: usize,
    tiles: Tiles,
) -> Result<Vec<T>> {
    let columns = n * tiles.count();
    per_image(n * o, h * w, |index, dst, _| {
        let (img, oc) = (index / o, index % o);
        let mut q = [vec![T::ZERO; 4 * tiles.cols], vec![T::ZERO; 4 * tiles.cols]];
        for ty in 0..tiles.rows {
            let first = oc * columns + img * tiles.count() + ty * tiles.cols;
            let ms: [&[T]; XI] =
                std::array::from_fn(|xi| &m[xi * o * columns + first..][..tiles.cols]);
            // Aᵀ·M down the rows: q[i][s·cols + tx]
            for s in 0..4 {
                let (m0, m1, m2, m3) = (ms[s], ms[4 + s], ms[8 + s], ms[12 + s]);
                let (q0, q1) = q.split_at_mut(1);
                let q0 = &mut q0[0][s * tiles.cols..][..tiles.cols];
                let q1 = &mut q1[0][s * tiles.cols..][..tiles.cols];
                for tx in 0..tiles.cols {
                    q0[tx] = m0[tx] + m1[tx] + m2[tx];
                    q1[tx] = m1[tx] - m2[tx] - m3[tx];
                }
            }
            // (Aᵀ·M)·A along: the tile's two output columns
            for (i, y) in (2 * ty..(2 * ty + 2).min(h)).enumerate() {
                let qi = &q[i];
                let line = &mut dst[y * w..][..w];
                for tx in 0..tiles.cols {
                    let (a, b, c, d) = (
                        qi[tx],
                        qi[tiles.cols + tx],
                        qi[2 * tiles.cols + tx],
                        qi[3 * tiles.cols + tx],
                    );
                    line[2 * tx].write(a + b + c);
                    if 2 * tx + 1 < w {
                        line[2 * tx + 1].write(b - c - d);
                    }
                }
            }
        }
        // SAFETY: the tiles cover the plane: rows 2·ty, 2·ty + 1 (below h) of every row of
        // tiles, and in each of those lines columns 2·tx, 2·tx + 1 (below w) of every tile.
        Ok(unsafe { Written::new(dst) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::buffer::Threads;
    use crate::kernels::cpu::gemm::matmul_new_on;
    use crate::kernels::cpu::im2col::im2col;
    use crate::kernels::test_support::{conv3x3_definition, max_error, same3x3, seeded_values};

    /// Even and odd sides (partial last tiles), one-pixel planes, single images and batches,
    /// against the definition in f64.
    #[test]
    fn matches_the_definition_on_even_and_odd_planes() {
        for (n, c, o, h, w) in [
            (1, 2, 3, 4, 4),
            (2, 3, 2, 5, 7),
            (3, 1, 1, 1, 1),
            (1, 4, 5, 2, 3),
            (2, 16, 17, 8, 8),
            (1, 5, 4, 9, 6),
        ] {
            let g = same3x3(n, c, o, h, w);
            let x = seeded_values(n * c * h * w, 1);
            let k = seeded_values(o * c * 9, 2);
            let got = conv3x3(&x, &transform_kernel(&k, o, c).unwrap(), &g).unwrap();
            let want = conv3x3_definition(&x, &k, &g);
            let err = max_error(&got, &want);
            assert!(err < 1e-12, "{g:?}: {err}");
        }
    }

    /// Batches larger than the memory budget go a chunk of images at a time: the same outputs
    /// (bit for bit: each output column is its own sum) and the same weight gradient (the
    /// chunks' sums added in order), here one image per chunk.
    #[test]
    fn chunked_batches_give_the_same_results() {
        let (n, c, o, h, w) = (5, 3, 4, 5, 6);
        let g = same3x3(n, c, o, h, w);
        let x = seeded_values(n * c * h * w, 21);
        let k = seeded_values(o * c * 9, 22);
        let gy = seeded_values(n * o * h * w, 23);
        let u = transform_kernel(&k, o, c).unwrap();
        let kernel = |xi: usize| Matrix::new(&u[xi * c..], o, c, XI * c, 1);
        let whole = multiply_and_fold(&x, &g, CHUNK_BYTES, kernel).unwrap();
        let chunked = multiply_and_fold(&x, &g, 1, kernel).unwrap();
        assert_eq!(whole, chunked);
        let want = conv3x3_definition(&x, &k, &g);
        let err = max_error(&whole, &want);
        assert!(err < 1e-12, "{err}");
        let dw = weight_grad_in_chunks(&x, &gy, &g, CHUNK_BYTES).unwrap();
        let dw_chunked = weight_grad_in_chunks(&x, &gy, &g, 1).unwrap();
        let err = max_error(&dw, &dw_chunked);
        assert!(err < 1e-12, "{err}");
        assert_eq!(
            chunks::<f64>(5, 3, Tiles::of(5, 6), 1),
            [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]
        );
        let per_image = XI * 3 * 9 * 8;
        assert_eq!(
            chunks::<f64>(5, 3, Tiles::of(5, 6), 2 * per_image),
            [(0, 2), (2, 2), (4, 1)]
        );
    }

    /// In f32, Winograd's rounding stays as close to the exact result as im2col + gemm's.
    #[test]
    fn single_precision_error_is_that_of_the_direct_product() {
        let g = same3x3(2, 64, 32, 10, 10);
        let x = seeded_values(2 * 64 * 100, 3);
        let k = seeded_values(32 * 64 * 9, 4);
        let exact = conv3x3_definition(&x, &k, &g);
        let (x32, k32): (Vec<f32>, Vec<f32>) = (
            x.iter().map(|&v| v as f32).collect(),
            k.iter().map(|&v| v as f32).collect(),
        );
        let wino = conv3x3(&x32, &transform_kernel(&k32, 32, 64).unwrap(), &g).unwrap();
        // im2col + gemm, image by image, as the convolution op computes it without Winograd
        let one = ConvGeometry { batch: 1, ..g };
        let mut gemm_y = Vec::new();
        for img in 0..2 {
            let col = im2col(&x32[img * 6400..][..6400], &one, Threads::One);
            let lhs = Matrix::row_major(&k32, 32, 576).unwrap();
            let rhs = Matrix::row_major(&col, 576, 100).unwrap();
            gemm_y.extend(matmul_new_on(lhs, rhs, Threads::One).unwrap());
        }
        let err = |y: &[f32]| {
            y.iter()
                .zip(&exact)
                .map(|(&a, b)| (a as f64 - b).abs())
                .fold(0.0, f64::max)
        };
        let (e_wino, e_gemm) = (err(&wino), err(&gemm_y));
        assert!(e_wino < 4.0 * e_gemm.max(1e-6), "{e_wino} vs {e_gemm}");
        assert!(e_wino < 1e-4, "{e_wino}");
    }

    /// The input gradient is the adjoint of the convolution: ⟨conv(x, w), g⟩ = ⟨x, ∂x(g, w)⟩.
    #[test]
    fn input_gradient_is_the_adjoint() {
        let (n, c, o, h, w) = (2, 3, 4, 5, 6);
        let x = seeded_values(n * c * h * w, 5);
        let k = seeded_values(o * c * 9, 6);
        let gy = seeded_values(n * o * h * w, 7);
        let u = transform_kernel(&k, o, c).unwrap();
        let y = conv3x3(&x, &u, &same3x3(n, c, o, h, w)).unwrap();
        let dx = conv3x3_input_grad(&gy, &u, &same3x3(n, c, o, h, w)).unwrap();
        let lhs: f64 = y.iter().zip(&gy).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
        assert!(
            (lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }

    /// ∂w[o, c, i, j] = Σ_n Σ_yx gy[n, o, y, x]·x[n, c, y + i − 1, x + j − 1], against the
    /// definition on even and odd planes, one image and several.
    #[test]
    fn weight_gradient_matches_the_definition() {
        for (n, c, o, h, w) in [
            (1, 2, 3, 4, 4),
            (2, 3, 2, 5, 7),
            (3, 1, 1, 1, 1),
            (2, 4, 5, 3, 6),
        ] {
            let g = same3x3(n, c, o, h, w);
            let x = seeded_values(n * c * h * w, 8);
            let gy = seeded_values(n * o * h * w, 9);
            let got = conv3x3_weight_grad(&x, &gy, &g).unwrap();
            let mut want = vec![0.0; o * c * 9];
            for img in 0..n {
                for oc in 0..o {
                    for ic in 0..c {
                        for t in 0..9 {
                            let (i, j) = (t / 3, t % 3);
                            let mut sum = 0.0;
                            for py in 0..h {
                                for px in 0..w {
                                    let (sy, sx) = (py + i, px + j);
                                    if sy < 1 || sx < 1 || sy > h || sx > w {
                                        continue;
                                    }
                                    sum += gy[((img * o + oc) * h + py) * w + px]
                                        * x[((img * c + ic) * h + sy - 1) * w + sx - 1];
                                }
                            }
                            want[(oc * c + ic) * 9 + t] += sum;
                        }
                    }
                }
            }
            let err = max_error(&got, &want);
            assert!(err < 1e-12, "{g:?}: {err}");
        }
        let g = same3x3(1, 2, 2, 4, 4);
        assert!(conv3x3_weight_grad(&[0.0f64; 31], &[0.0; 32], &g).is_err());
        assert!(conv3x3_weight_grad(&[0.0f64; 32], &[0.0; 33], &g).is_err());
    }

    #[test]
    fn applies_only_to_same_3x3_convolutions_with_enough_channels() {
        let g = same3x3(1, MIN_CHANNELS, MIN_CHANNELS, 8, 8);
        assert!(applies(&g));
        assert!(!applies(&ConvGeometry { stride: 2, ..g }));
        assert!(!applies(&ConvGeometry { padding: 0, ..g }));
        assert!(!applies(&ConvGeometry { kernel_w: 1, ..g }));
        assert!(!applies(&ConvGeometry {
            in_channels: 3,
            ..g
        }));
        assert!(!applies(&ConvGeometry {
            out_channels: MIN_CHANNELS - 1,
            ..g
        }));
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let g = same3x3(1, 2, 2, 4, 4);
        let u = [0.0f64; 64];
        assert!(conv3x3(&[0.0f64; 32], &u, &g).is_ok());
        assert!(conv3x3(&[0.0f64; 31], &u, &g).is_err());
        assert!(conv3x3(&[0.0f64; 32], &u[..63], &g).is_err());
        assert!(conv3x3(&[0.0f64; 32], &u, &ConvGeometry { stride: 2, ..g }).is_err());
        assert!(conv3x3_input_grad(&[0.0f64; 31], &u, &g).is_err());
        assert!(transform_kernel(&[0.0f64; 35], 2, 2).is_err());
    }
}
