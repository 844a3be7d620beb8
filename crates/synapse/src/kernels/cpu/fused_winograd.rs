//! 3×3 "same" convolutions of few channels (ResNet's 16–64) by Winograd's F(2×2, 3×3), fused:
//! transform, multiply and fold back one strip of tiles at a time, the products in registers.
//!
//! The direct tiles (`direct`) run at the machine's multiply-add rate, so only fewer
//! multiply-adds make a layer faster: F(2×2, 3×3) needs 16·C per 2×2 output tile instead of
//! 36·C (see `winograd` for the algorithm). With separate passes (`winograd`, for ≥ 128
//! channels) the transformed tiles make a round trip through memory and the products are
//! matrix products with a short inner dimension (C = 16–64), which cost more than the
//! multiply-adds saved. Here:
//!
//! * **Split planes.** Each input plane is copied once into a zero-bordered plane whose lines
//!   are split into even and odd padded columns: the 4×4 input window of tile (ty, tx) is, on
//!   each of its four lines, `even[tx]`, `odd[tx]`, `even[tx + 1]`, `odd[tx + 1]` — four
//!   contiguous runs along a row of tiles, so the input transform runs along whole vectors.
//! * **Strips.** Tiles are taken 16 at a time in raster order (a strip; the last one padded
//!   with zeros): `V = Bᵀ·d·B` of a strip for all input channels is 16·C·16 values (16 KiB at
//!   16 channels), laid out `[ξ][C][16 tiles]`.
//! * **Products in registers.** For each block of 6 (or 4) output channels and each of the 16
//!   transform positions ξ, `M_ξ = U_ξ·V_ξ` for the strip's 16 tiles is one register tile of
//!   the direct kernels with a single tap (`Direct::forward_tile`): twelve accumulators over
//!   the C input channels, never stored until complete.
//! * **Fold.** `y = Aᵀ·M·A` per tile straight from those 16 register tiles into the output
//!   planes (dropping outputs past an odd edge).
//!
//! The input gradient is the same computation on the upstream gradient with the flipped,
//! channel-swapped kernel, whose transform is `U` transposed with ξ permuted (see
//! `winograd::conv3x3_input_grad`); the weight gradient stays direct (`direct`). These are the
//! same linear maps as the direct convolutions — only rounding differs, by a few units in the
//! last place (the transforms' coefficients are 0, ±½ and ±1) — so the three convolution ops
//! keep their adjoint relations and every derivative stays exact. Each output value is
//! computed by one task in one fixed order, so results do not depend on the number of threads.

use super::buffer::{par_build_on, per_image, Threads, Written};
#[cfg(target_arch = "x86_64")]
use super::direct::avx2_available;
use super::direct::{blocks, Block, Direct, OB, OB_NARROW, QB};
use super::im2col::ConvGeometry;
use super::winograd::Tiles;
use super::{items_per_task, worth_splitting};
use candle_core::{bail, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Positions ξ of a transformed 4×4 tile.
const XI: usize = 16;
/// Tiles per strip: the positions of a register tile.
const STRIP: usize = QB;
/// `π = (3 1 2 0)`: the kernel transform of the flipped kernel reads ξ = (r, s) at (πr, πs).
const FLIP: [usize; 4] = [3, 1, 2, 0];

/// Whether `g` is a convolution this file computes: a 3×3 kernel, stride 1, padding 1.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    (g.kernel_h, g.kernel_w, g.stride, g.padding) == (3, 3, 1, 1)
}

/// The tiles taken 16 at a time (strips), and the split planes of their windows.
impl Tiles {
    fn strips(&self) -> usize {
        self.count().div_ceil(STRIP)
    }

    /// Values per half line of a split plane: padded columns `0, 2, …` (even) or `1, 3, …`
    /// (odd), one pair per tile column and one more for the last window's right half.
    fn half(&self) -> usize {
        self.cols + 1
    }

    /// Values per split plane: the zero line above, the lines (zeros past an odd height) and
    /// the zero line below, each an even half then an odd half.
    fn split_plane(&self) -> usize {
        (2 * self.rows + 2) * 2 * self.half()
    }

    /// The runs of a strip's tiles along rows of tiles: `(ty, tx, len, lane)` — `len` tiles
    /// from (ty, tx) on are lanes `lane ..` of strip `s`.
    fn runs(&self, s: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        let (first, cols) = (s * STRIP, self.cols.max(1));
        let last = (first + STRIP).min(self.count());
        let mut t = first;
        std::iter::from_fn(move || {
            if t >= last {
                return None;
            }
            let (ty, tx) = (t / cols, t % cols);
            let len = (cols - tx).min(last - t);
            let run = (ty, tx, len, t - first);
            t += len;
            Some(run)
        })
    }
}

/// `y = conv(x, w)` for `x` `[N, C, H, W]` (contiguous) and the transform `u` of a kernel `w`
/// `[O, C, 3, 3]` (`winograd::transform_kernel`, `[O][16][C]`), stride 1, padding 1:
/// `[N, O, H, W]`.
pub(crate) fn conv3x3<E: Direct>(x: &[E], u: &[E], g: &ConvGeometry) -> Result<Vec<E>> {
    let (o, c) = (g.out_channels, g.in_channels);
    check(u.len(), XI * o * c, "transformed kernel", g)?;
    let blocks = blocks(o, XI * c);
    // block row k, ξ, input channel: U[first + k][ξ][c], each output channel's row in order
    let packed = pack(&blocks, XI * c, |b, part| {
        for k in 0..b.rows {
            let row = &u[(b.first + k) * XI * c..][..XI * c];
            for (v, dst) in row.iter().zip(part.chunks_exact_mut(b.width)) {
                dst[k] = *v;
            }
        }
    });
    fold(x, &packed, &blocks, c, o, g)
}

/// The input gradient of [`conv3x3`] with the transform `u` of kernel `w` `[O, C, 3, 3]`, for
/// the upstream gradient `gy` `[N, O, H, W]`: `∂x` `[N, C, H, W]` (`g` is the forward
/// convolution's geometry). The flipped, channel-swapped kernel's transform is `U` transposed
/// with ξ = (r, s) read at (πr, πs).
pub(crate) fn conv3x3_input_grad<E: Direct>(gy: &[E], u: &[E], g: &ConvGeometry) -> Result<Vec<E>> {
    let (o, c) = (g.out_channels, g.in_channels);
    check(u.len(), XI * o * c, "transformed kernel", g)?;
    let blocks = blocks(c, XI * o);
    // block row k (input channel first + k), ξ, output channel: U[oc][πξ][first + k], the
    // block's input channels contiguous in U
    let packed = pack(&blocks, XI * o, |b, part| {
        for xi in 0..XI {
            let flipped = FLIP[xi / 4] * 4 + FLIP[xi % 4];
            for oc in 0..o {
                let src = &u[(oc * XI + flipped) * c + b.first..][..b.rows];
                part[(xi * o + oc) * b.width..][..b.rows].copy_from_slice(src);
            }
        }
    });
    fold(gy, &packed, &blocks, o, c, g)
}

fn check(len: usize, expected: usize, what: &str, g: &ConvGeometry) -> Result<()> {
    if !applies(g) || len != expected {
        bail!("fused winograd 3×3 convolution: {len} {what} values where {g:?} needs {expected}");
    }
    Ok(())
}

/// A transformed kernel packed for the register tiles of `blocks` whose rows have `per_row`
/// values (16 × inputs): per block `[16][inputs][width]`, written by `fill(block, part)` into
/// its part (zeroed, so unused rows stay zero); blocks in parallel when that is worth it.
fn pack<E: Direct>(
    blocks: &[Block],
    per_row: usize,
    fill: impl Fn(&Block, &mut [E]) + Sync,
) -> Vec<E> {
    let len = blocks.last().map_or(0, |b| b.offset + per_row * b.width);
    let mut packed = vec![E::ZERO; len];
    let mut parts = Vec::with_capacity(blocks.len());
    let mut rest = &mut packed[..];
    for b in blocks {
        let (part, tail) = rest.split_at_mut(per_row * b.width);
        parts.push((b, part));
        rest = tail;
    }
    if worth_splitting(len) {
        parts.into_par_iter().for_each(|(b, part)| fill(b, part));
    } else {
        parts.into_iter().for_each(|(b, part)| fill(b, part));
    }
    packed
}

/// The register tiles of one strip and block: `M_ξ` for the 16 ξ, `OB` rows (a narrow block
/// uses the first `OB_NARROW`).
type Products<E> = [[[E; STRIP]; OB]; XI];

/// The "same" 3×3 correlation of `x` (`inputs` channels) with a packed transformed kernel
/// ([`pack`]) into `outputs` channels in `blocks`: images in parallel (one thread each), a
/// single image's blocks in parallel.
fn fold<E: Direct>(
    x: &[E],
    packed: &[E],
    blocks: &[Block],
    inputs: usize,
    outputs: usize,
    g: &ConvGeometry,
) -> Result<Vec<E>> {
    let tiles = Tiles::of(g.in_h, g.in_w);
    let (n, plane) = (g.batch, g.in_h * g.in_w);
    check(x.len(), n * inputs * plane, "input", g)?;
    let covered = blocks.last().map_or(0, |b| b.first + b.rows);
    let len = blocks
        .last()
        .map_or(0, |b| b.offset + XI * inputs * b.width);
    check(packed.len(), len, "packed kernel", g)?;
    if covered != outputs {
        bail!(
            "fused winograd 3×3 convolution: blocks cover {covered} of {outputs} output channels"
        );
    }
    let strip_len = XI * inputs * STRIP;
    per_image(n, outputs * plane, |image, dst, threads| {
        let split = split(
            &x[image * inputs * plane..][..inputs * plane],
            inputs,
            &tiles,
            threads,
        );
        // one strip's transform `v` times a block's kernels, folded into the block's channels
        let strip = |b: &Block, rows: &mut [MaybeUninit<E>], v: &[E], m: &mut Products<E>, s| {
            let weights = &packed[b.offset..][..XI * inputs * b.width];
            products(v, weights, inputs, b.width, m);
            fold_strip(m, rows, &tiles, s);
        };
        // each block's channels of the output
        let mut parts = Vec::with_capacity(blocks.len());
        let mut rest = &mut *dst;
        for b in blocks {
            let (part, tail) = rest.split_at_mut(b.rows * plane);
            parts.push((b, part));
            rest = tail;
        }
        let work = outputs * tiles.count() * XI * inputs;
        if threads == Threads::All && worth_splitting(work) {
            // every strip's transform first, then the blocks in parallel
            let v = par_build_on(
                tiles.strips() * strip_len,
                strip_len,
                items_per_task(strip_len),
                threads,
                |s, dst| transform_strip(&split, inputs, &tiles, s, dst),
            );
            parts.into_par_iter().for_each(|(b, rows)| {
                let mut m = [[[E::ZERO; STRIP]; OB]; XI];
                for s in 0..tiles.strips() {
                    strip(b, rows, &v[s * strip_len..][..strip_len], &mut m, s);
                }
            });
        } else {
            // every block of a strip before the next strip: the strip's transform stays in
            // the core's cache while the packed kernels stream past
            let mut v = vec![E::ZERO; strip_len];
            let mut m = [[[E::ZERO; STRIP]; OB]; XI];
            for s in 0..tiles.strips() {
                transform_strip(&split, inputs, &tiles, s, &mut v);
                for (b, rows) in parts.iter_mut() {
                    strip(b, rows, &v, &mut m, s);
                }
            }
        }
        // SAFETY: the blocks cover `dst` (their rows add up to `outputs`, checked above); each
        // block's strips cover every tile, and `fold_strip` writes each output position of
        // each tile that lies inside the plane, for each of the block's channels.
        Ok(unsafe { Written::new(dst) })
    })
}

/// `channels` planes `[H, W]` copied into split planes ([`Tiles::split_plane`]): padded
/// column `p` of line `i` holds `x[i − 1, p − 1]`, the even `p` in the first half of the
/// line and the odd in the second.
fn split<E: Direct>(x: &[E], channels: usize, tiles: &Tiles, threads: Threads) -> Vec<E> {
    let (w, half, len) = (tiles.w, tiles.half(), tiles.split_plane());
    par_build_on(
        channels * len,
        len,
        items_per_task(len),
        threads,
        |c, dst| {
            if w == 0 {
                return;
            }
            for (y, line) in x[c * tiles.h * w..][..tiles.h * w]
                .chunks_exact(w)
                .enumerate()
            {
                let (even, odd) = dst[(y + 1) * 2 * half..][..2 * half].split_at_mut(half);
                split_line(line, even, odd);
            }
        },
    )
}

/// Column 2m of `line` into `odd[m]` (padded column 2m + 1), column 2m + 1 into `even[m + 1]`
/// (padded column 2m + 2).
fn split_line<E: Direct>(line: &[E], even: &mut [E], odd: &mut [E]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_available() {
        // SAFETY: the processor has AVX2 and FMA.
        return unsafe { split_line_avx2(line, even, odd) };
    }
    split_line_in(line, even, odd)
}

/// [`split_line`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn split_line_avx2<E: Direct>(line: &[E], even: &mut [E], odd: &mut [E]) {
    split_line_in(line, even, odd)
}

#[inline(always)]
fn split_line_in<E: Direct>(line: &[E], even: &mut [E], odd: &mut [E]) {
    let pairs = line.chunks_exact(2);
    if let Some(&last) = pairs.remainder().first() {
        odd[line.len() / 2] = last;
    }
    for ((pair, o), e) in pairs.zip(odd.iter_mut()).zip(even[1..].iter_mut()) {
        *o = pair[0];
        *e = pair[1];
    }
}

/// `V = Bᵀ·d·B` of strip `s`'s tiles for every channel, into `dst` (`[16][channels][STRIP]`,
/// zeroed): `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`, ξ = 4r + s.
fn transform_strip<E: Direct>(
    split: &[E],
    channels: usize,
    tiles: &Tiles,
    s: usize,
    dst: &mut [E],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2_available() {
        // SAFETY: the processor has AVX2 and FMA.
        return unsafe { transform_strip_avx2(split, channels, tiles, s, dst) };
    }
    transform_strip_in(split, channels, tiles, s, dst)
}

/// [`transform_strip`] compiled for AVX2 (the lanes of a strip in two or four vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_strip_avx2<E: Direct>(
    split: &[E],
    channels: usize,
    tiles: &Tiles,
    s: usize,
    dst: &mut [E],
) {
    transform_strip_in(split, channels, tiles, s, dst)
}

#[inline(always)]
fn transform_strip_in<E: Direct>(
    split: &[E],
    channels: usize,
    tiles: &Tiles,
    s: usize,
    dst: &mut [E],
) {
    let (half, len) = (tiles.half(), tiles.split_plane());
    let mut runs = [(0, 0, 0, 0); STRIP];
    let mut count = 0;
    for (slot, run) in runs.iter_mut().zip(tiles.runs(s)) {
        *slot = run;
        count += 1;
    }
    // a strip that is one run along a row of tiles (planes 32 wide and more) reads its four
    // sources per line where they lie; others gather them by lane first (lanes past the last
    // tile stay zero)
    let whole = match runs[..count] {
        [(_, _, run, _)] => run == STRIP,
        _ => false,
    };
    let mut d = [[[E::ZERO; STRIP]; 4]; 4];
    let mut e = [[[E::ZERO; STRIP]; 4]; 4];
    for c in 0..channels {
        // d·B along each of the windows' four lines: e[i][s]
        for &(ty, tx, run, lane) in &runs[..count] {
            for (i, (ei, di)) in e.iter_mut().zip(d.iter_mut()).enumerate() {
                let line = &split[c * len + (2 * ty + i) * 2 * half..][..2 * half];
                let (even, odd) = line.split_at(half);
                let sources = [&even[tx..], &odd[tx..], &even[tx + 1..], &odd[tx + 1..]];
                if let (true, [Some(d0), Some(d1), Some(d2), Some(d3)]) =
                    (whole, sources.map(|v| v.first_chunk::<STRIP>()))
                {
                    line_transform(ei, d0, d1, d2, d3);
                    continue;
                }
                for (dij, src) in di.iter_mut().zip(sources) {
                    copy_run(&mut dij[lane..], src, run);
                }
                if whole {
                    let [d0, d1, d2, d3] = &*di;
                    line_transform(ei, d0, d1, d2, d3);
                }
            }
        }
        if !whole {
            for (ei, [d0, d1, d2, d3]) in e.iter_mut().zip(&d) {
                line_transform(ei, d0, d1, d2, d3);
            }
        }
        // Bᵀ· down the four lines, into V[ξ = 4r + col][c]
        let [l0, l1, l2, l3] = &e;
        for (col, (((e0, e1), e2), e3)) in l0.iter().zip(l1).zip(l2).zip(l3).enumerate() {
            let at = |r: usize| ((4 * r + col) * channels + c) * STRIP;
            combine(&mut dst[at(0)..][..STRIP], e0, e2, |a, b| a - b);
            combine(&mut dst[at(1)..][..STRIP], e1, e2, |a, b| a + b);
            combine(&mut dst[at(2)..][..STRIP], e2, e1, |a, b| a - b);
            combine(&mut dst[at(3)..][..STRIP], e1, e3, |a, b| a - b);
        }
    }
}

/// `d·B` of one line of the windows, lane by lane: `[d0 − d2, d1 + d2, d2 − d1, d1 − d3]`.
#[inline(always)]
fn line_transform<E: Direct>(
    e: &mut [[E; STRIP]; 4],
    d0: &[E; STRIP],
    d1: &[E; STRIP],
    d2: &[E; STRIP],
    d3: &[E; STRIP],
) {
    let [e0, e1, e2, e3] = e;
    combine(e0, d0, d2, |a, b| a - b);
    combine(e1, d1, d2, |a, b| a + b);
    combine(e2, d2, d1, |a, b| a - b);
    combine(e3, d1, d3, |a, b| a - b);
}

/// `out[l] = f(a[l], b[l])` along a strip's lanes.
#[inline(always)]
fn combine<E: Direct>(out: &mut [E], a: &[E; STRIP], b: &[E; STRIP], f: impl Fn(E, E) -> E) {
    for (o, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = f(a, b);
    }
}

const _: () = assert!(OB_NARROW <= OB, "narrow tiles fit in a wide tile's rows");

/// `M_ξ = U_ξ·V_ξ` for the 16 tiles of a strip's transform `v` and the `width` output
/// channels of a block (`w`: `[16][inputs][width]`), each ξ one register tile, into `m`.
fn products<E: Direct>(v: &[E], w: &[E], inputs: usize, width: usize, m: &mut Products<E>) {
    for (xi, mx) in m.iter_mut().enumerate() {
        let (v, w) = (&v[xi * inputs * STRIP..], &w[xi * inputs * width..]);
        if width == OB {
            E::forward_tile(v, STRIP, inputs, w, &[0], mx);
        } else if let Some(narrow) = mx.first_chunk_mut::<OB_NARROW>() {
            // always there: a narrow tile's rows are the first of a wide one's (asserted below)
            E::forward_tile(v, STRIP, inputs, w, &[0], narrow);
        }
    }
}

/// `y = Aᵀ·M·A` of strip `s`'s tiles, `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`, written into the
/// block's channels (`rows` is `[channels][H][W]`, the first rows of `m`), without the
/// outputs past an odd edge.
fn fold_strip<E: Direct>(m: &Products<E>, rows: &mut [MaybeUninit<E>], tiles: &Tiles, s: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx2_available() {
        // SAFETY: the processor has AVX2 and FMA.
        return unsafe { fold_strip_avx2(m, rows, tiles, s) };
    }
    fold_strip_in(m, rows, tiles, s)
}

/// [`fold_strip`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fold_strip_avx2<E: Direct>(
    m: &Products<E>,
    rows: &mut [MaybeUninit<E>],
    tiles: &Tiles,
    s: usize,
) {
    fold_strip_in(m, rows, tiles, s)
}

#[inline(always)]
fn fold_strip_in<E: Direct>(m: &Products<E>, rows: &mut [MaybeUninit<E>], tiles: &Tiles, s: usize) {
    let (h, w) = (tiles.h, tiles.w);
    let plane = h * w;
    if plane == 0 {
        return;
    }
    let channels = rows.len() / plane;
    for k in 0..channels.min(OB) {
        // Aᵀ· down each column s of the 4×4 tile: t[a][s]
        let mut t = [[[E::ZERO; STRIP]; 4]; 2];
        for col in 0..4 {
            let [m0, m1, m2, m3] = [&m[col][k], &m[4 + col][k], &m[8 + col][k], &m[12 + col][k]];
            for l in 0..STRIP {
                t[0][col][l] = m0[l] + m1[l] + m2[l];
                t[1][col][l] = m1[l] - m2[l] - m3[l];
            }
        }
        // ·A along: y[a][b]
        let mut y = [[[E::ZERO; STRIP]; 2]; 2];
        for (ya, ta) in y.iter_mut().zip(&t) {
            for l in 0..STRIP {
                ya[0][l] = ta[0][l] + ta[1][l] + ta[2][l];
                ya[1][l] = ta[1][l] - ta[2][l] - ta[3][l];
            }
        }
        let out = &mut rows[k * plane..][..plane];
        for (ty, tx, run, lane) in tiles.runs(s) {
            // whole 2-wide tiles, then the left column of a tile past an odd right edge
            let pairs = run.min((w / 2).saturating_sub(tx));
            for (a, ya) in y.iter().enumerate() {
                let line = 2 * ty + a;
                if line >= h {
                    break;
                }
                let dst = &mut out[line * w + 2 * tx..][..2 * run - (run - pairs)];
                let (left, right) = (&ya[0][lane..][..run], &ya[1][lane..][..run]);
                interleave(&mut dst[..2 * pairs], &left[..pairs], &right[..pairs]);
                if pairs < run {
                    dst[2 * pairs].write(left[pairs]);
                }
            }
        }
    }
}

/// `dst = [left[0], right[0], left[1], right[1], …]`.
#[inline(always)]
fn interleave<E: Direct>(dst: &mut [MaybeUninit<E>], left: &[E], right: &[E]) {
    for ((pair, &l), &r) in dst.chunks_exact_mut(2).zip(left).zip(right) {
        pair[0].write(l);
        pair[1].write(r);
    }
}

/// `dst[..len] = src[..len]` for the runs of a strip, with fixed-length copies for the common
/// lengths (whole strips, and the rows of tiles of 16- and 8-wide planes) instead of calls to
/// `memcpy` for a few values.
#[inline(always)]
fn copy_run<E: Direct>(dst: &mut [E], src: &[E], len: usize) {
    match len {
        16 => dst[..16].copy_from_slice(&src[..16]),
        8 => dst[..8].copy_from_slice(&src[..8]),
        4 => dst[..4].copy_from_slice(&src[..4]),
        _ => {
            for (d, &v) in dst[..len].iter_mut().zip(&src[..len]) {
                *d = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::winograd::transform_kernel;
    use crate::kernels::test_support::{
        conv3x3_definition, conv_operands, dot, from_f32, max_error, same3x3, same3x3_cases, to_f32,
    };

    /// Odd and even plane sizes (partial tiles at the right and bottom edges), strips that
    /// span several rows of tiles and a partial last strip, channel counts that leave partial
    /// blocks, 1×1 and single-line planes, one image and several ([`same3x3_cases`]), and
    /// more.
    fn geometries() -> Vec<ConvGeometry> {
        let mut cases = same3x3_cases();
        cases.extend([
            same3x3(1, 4, 10, 33, 2),
            // whole strips along rows of 16 tiles and more
            same3x3(1, 2, 3, 6, 32),
            same3x3(2, 3, 5, 5, 35),
        ]);
        cases
    }

    fn operands(g: &ConvGeometry) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        conv_operands(g, 4)
    }

    #[test]
    fn forward_matches_the_definition() {
        for g in geometries() {
            let (x, w, _) = operands(&g);
            let u = transform_kernel(&w, g.out_channels, g.in_channels).unwrap();
            let y = conv3x3(&x, &u, &g).unwrap();
            let error = max_error(&y, &conv3x3_definition(&x, &w, &g));
            assert!(error < 1e-12, "{g:?}: {error}");
        }
    }

    /// ⟨conv(x, w), gy⟩ = ⟨x, ∂x⟩: the input gradient is the exact adjoint of the forward
    /// pass (which matches the definition); and coordinate by coordinate,
    /// ∂x[n, c, y, x] = ⟨conv(e_{n,c,y,x}, w), gy⟩, on the smaller geometries.
    #[test]
    fn input_gradient_matches_the_definition() {
        for (case, g) in geometries().into_iter().enumerate() {
            let (x, w, gy) = operands(&g);
            let u = transform_kernel(&w, g.out_channels, g.in_channels).unwrap();
            let dx = conv3x3_input_grad(&gy, &u, &g).unwrap();
            let form = dot(&conv3x3_definition(&x, &w, &g), &gy);
            assert!(
                (dot(&x, &dx) - form).abs() < 1e-9 * form.abs().max(1.0),
                "{g:?}"
            );
            if case >= 4 {
                continue;
            }
            let mut unit = vec![0.0; x.len()];
            for (index, &d) in dx.iter().enumerate() {
                unit[index] = 1.0;
                let expected = dot(&conv3x3_definition(&unit, &w, &g), &gy);
                unit[index] = 0.0;
                assert!((d - expected).abs() < 1e-12, "{g:?} at {index}");
            }
        }
    }

    /// The f32 path (the direct kernels' vectorised register tiles where the processor allows)
    /// agrees with f64 to f32 rounding of sums of 16·C terms of values below a few units.
    #[test]
    fn single_precision_matches_double() {
        for g in geometries().into_iter().chain([same3x3(2, 16, 32, 32, 32)]) {
            let (x, w, gy) = operands(&g);
            let (o, c) = (g.out_channels, g.in_channels);
            let u = transform_kernel(&w, o, c).unwrap();
            let uf = transform_kernel(&to_f32(&w), o, c).unwrap();
            let scale = |terms: usize| terms as f64 * 4e-6;
            let y = from_f32(&conv3x3(&to_f32(&x), &uf, &g).unwrap());
            let error = max_error(&y, &conv3x3(&x, &u, &g).unwrap());
            assert!(error < scale(16 * c), "{g:?}: {error}");
            let dx = from_f32(&conv3x3_input_grad(&to_f32(&gy), &uf, &g).unwrap());
            let error = max_error(&dx, &conv3x3_input_grad(&gy, &u, &g).unwrap());
            assert!(error < scale(16 * o), "{g:?}: {error}");
        }
    }

    /// The same bits on any number of threads, and for an image alone (all threads on its
    /// blocks) as within a batch (one thread per image).
    #[test]
    fn results_do_not_depend_on_threads_or_batching() {
        let g = same3x3(3, 16, 32, 16, 16);
        let (x, w, gy) = operands(&g);
        let (x, w, gy) = (to_f32(&x), to_f32(&w), to_f32(&gy));
        let u = transform_kernel(&w, g.out_channels, g.in_channels).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                (
                    conv3x3(&x, &u, &g).unwrap(),
                    conv3x3_input_grad(&gy, &u, &g).unwrap(),
                )
            })
        };
        let (y, dx) = run(1);
        assert_eq!(run(3), (y.clone(), dx.clone()));
        let one = ConvGeometry { batch: 1, ..g };
        let (plane, c, o) = (g.in_h * g.in_w, g.in_channels, g.out_channels);
        for image in 0..g.batch {
            let xi = &x[image * c * plane..][..c * plane];
            let gi = &gy[image * o * plane..][..o * plane];
            assert_eq!(
                conv3x3(xi, &u, &one).unwrap(),
                y[image * o * plane..][..o * plane]
            );
            let dxi = conv3x3_input_grad(gi, &u, &one).unwrap();
            assert_eq!(dxi, dx[image * c * plane..][..c * plane]);
        }
    }

    #[test]
    fn runs_cover_each_strip_in_raster_order() {
        for (h, w) in [(1, 1), (5, 6), (9, 11), (33, 2), (32, 32), (8, 8)] {
            let tiles = Tiles::of(h, w);
            let mut next = 0;
            for s in 0..tiles.strips() {
                for (ty, tx, run, lane) in tiles.runs(s) {
                    assert_eq!(ty * tiles.cols + tx, next);
                    assert_eq!(lane, next - s * STRIP);
                    assert!(tx + run <= tiles.cols && lane + run <= STRIP);
                    next += run;
                }
            }
            assert_eq!(next, tiles.count());
        }
    }

    #[test]
    fn operands_of_the_wrong_size_are_errors() {
        let g = same3x3(2, 3, 4, 5, 5);
        let (x, w, gy) = operands(&g);
        let u = transform_kernel(&w, 4, 3).unwrap();
        assert!(conv3x3(&x[1..], &u, &g).is_err());
        assert!(conv3x3(&x, &u[1..], &g).is_err());
        assert!(conv3x3_input_grad(&gy[1..], &u, &g).is_err());
        let strided = ConvGeometry { stride: 2, ..g };
        assert!(conv3x3(&x, &u, &strided).is_err());
    }
}
