//! Register-tiled 3×3 "same" convolution kernels (stride 1, padding 1): the tile that the fused
//! Winograd products run on, and the weight gradient of ResNet's 16-, 32- and 64-channel
//! layers computed directly, without unfolding.
//!
//! Through `im2col` every input value is copied nine times into a column matrix before a
//! matrix product reads it back: a quarter of a ResNet20 training step was spent copying, for
//! products whose inner dimension (9·C = 144 to 576) is short. Here each product reads the
//! input where it lies:
//!
//! * **Register tiles** ([`Direct::forward_tile`]): `R = 6` (or 4) output rows × `QB = 16`
//!   positions, for each input channel and tap two vector loads, six broadcast weights and
//!   twelve multiply-adds into twelve accumulators that stay in registers for the whole sum
//!   (AVX2 + FMA: 12 of the 16 vector registers). Tiles of 4 rows fill up channel counts that
//!   are not multiples of 6 ([`blocks`]: 16 = 6 + 6 + 4). The fused Winograd convolution
//!   (`fused_winograd`) runs its products `U_ξ·V_ξ` on these tiles with a single tap; they
//!   computed the forward pass and input gradient directly (9 taps on padded planes) until
//!   that replaced them with 2.25× fewer multiply-adds.
//! * **Padded planes.** For the weight gradient each input plane is copied once into a
//!   zero-bordered plane: a zero line above and below, and one zero after each line (which is
//!   also the zero before the next line's first value). Lines are `W + 1` values apart, so with
//!   `q = y·(W + 1) + x` tap (i, j) of output position (y, x) reads value `q + i·(W + 1) + j`:
//!   one fixed offset per tap, and consecutive positions read consecutive values, also across
//!   line ends (the extra column is computed and dropped).
//! * **Weight gradient.** `∂w[o, c, i, j] = Σ_images Σ_q gy[o, q] · x̃[c, q + offset(i, j)]`
//!   with the upstream gradient on that wide grid (zero in the extra column): for four output
//!   channels, one input channel and one kernel row, twelve vector accumulators over the
//!   positions of every image, summed across lanes at the end.
//!
//! Each output element is computed by one task in one fixed order (input channels, then taps;
//! for the weight gradient images, then positions by lane), so results do not depend on the
//! number of threads. The f32 tiles use AVX2 and FMA where the processor has them (detected at
//! run time); elsewhere, and for f64 (the finite-difference checks), the same loops in portable
//! code. The weight gradient is the same linear map as the unfolded product, so the three
//! convolution ops keep their adjoint relations and every derivative stays exact.

use super::buffer::{par_build_on, Threads};
use super::gemm::Element;
use super::im2col::ConvGeometry;
use super::{items_per_task, worth_splitting};
use candle_core::{bail, Result};
use rayon::prelude::*;

/// Output channels of a forward tile; narrower tiles of `OB_NARROW` fill up channel counts
/// that are not multiples of `OB` (16 = 6 + 6 + 4, 32 = 4·6 + 2·4), so that no row of a tile
/// is computed for nothing.
pub(crate) const OB: usize = 6;
pub(crate) const OB_NARROW: usize = 4;
/// Positions of a forward tile (two 8-lane vectors).
pub(crate) const QB: usize = 16;
/// Output channels of a weight-gradient task.
const WB: usize = 4;
/// Taps per kernel.
const TAPS: usize = 9;

/// Whether `g` is a convolution this file computes: a 3×3 kernel, stride 1, padding 1.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    (g.kernel_h, g.kernel_w, g.stride, g.padding) == (3, 3, 1, 1)
}

/// The padded planes and the wide grid of one image size.
#[derive(Clone, Copy, Debug)]
struct Grid {
    h: usize,
    w: usize,
    /// Values per padded line, `W + 1`: a line's zero after its last value is also the zero
    /// before the next line's first.
    line: usize,
    /// Tiles of `QB` positions covering the wide grid.
    tiles: usize,
    /// Values per padded plane: a leading zero, the zero line above, the lines, the zero line
    /// below, and zeros on to the farthest value any tile reads.
    plane: usize,
}

impl Grid {
    fn of(h: usize, w: usize) -> Self {
        let line = w + 1;
        let tiles = (h * line).div_ceil(QB);
        let plane = (1 + (h + 2) * line).max(tiles * QB + 2 * line + 2);
        Self {
            h,
            w,
            line,
            tiles,
            plane,
        }
    }

    /// Length of a weight-gradient stream: the wide grid rounded up to whole tiles.
    fn width(&self) -> usize {
        self.tiles * QB
    }
}

/// `channels` planes `[H, W]` copied into padded planes, in parallel on [`Threads::All`].
fn pad<E: Element>(x: &[E], channels: usize, grid: &Grid, threads: Threads) -> Vec<E> {
    let (h, w) = (grid.h, grid.w);
    par_build_on(
        channels * grid.plane,
        grid.plane,
        items_per_task(grid.plane),
        threads,
        |c, dst| {
            if w == 0 {
                return;
            }
            for (y, line) in x[c * h * w..][..h * w].chunks_exact(w).enumerate() {
                dst[1 + (y + 1) * grid.line..][..w].copy_from_slice(line);
            }
        },
    )
}

/// The element types with direct tiles: f32 (vectorised where the processor allows) and f64.
pub(crate) trait Direct: Element {
    /// The `R × QB` tile of output positions `q0 .. q0 + QB` where `x` starts at position
    /// `q0` of the first of `channels` padded planes `plane` apart, and `w` holds the packed
    /// weights of `R` output channels for `K` taps at `offsets` (`[channels][K][R]`). (The
    /// fused Winograd products are the one-tap case: `fused_winograd`.) Written into `out`.
    fn forward_tile<const R: usize, const K: usize>(
        x: &[Self],
        plane: usize,
        channels: usize,
        w: &[Self],
        offsets: &[usize; K],
        out: &mut [[Self; QB]; R],
    );

    /// `Σ_images Σ_{q < width} gy[k][q] · x[q + j]` for `WB` upstream-gradient rows `k` (`gy`
    /// at the first image's first row, rows `width` apart, images `gy_image` apart) and
    /// `j = 0, 1, 2` (`x` at the first image's line, images `x_image` apart).
    fn weight_taps(stream: &Stream<'_, Self>) -> [[Self; 3]; WB];
}

/// The operands of one weight-gradient task (see [`Direct::weight_taps`]).
pub(crate) struct Stream<'a, E> {
    gy: &'a [E],
    gy_image: usize,
    x: &'a [E],
    x_image: usize,
    images: usize,
    width: usize,
}

impl<E> Stream<'_, E> {
    /// Whether every value the task reads lies inside its slices.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn fits(&self) -> bool {
        let last = self.images.saturating_sub(1);
        self.width % QB == 0
            && (self.images == 0
                || (self.gy.len() >= last * self.gy_image + WB * self.width
                    && self.x.len() >= last * self.x_image + self.width + 2))
    }
}

impl Direct for f64 {
    fn forward_tile<const R: usize, const K: usize>(
        x: &[f64],
        plane: usize,
        channels: usize,
        w: &[f64],
        offsets: &[usize; K],
        out: &mut [[f64; QB]; R],
    ) {
        portable::forward_tile(x, plane, channels, w, offsets, out)
    }

    fn weight_taps(stream: &Stream<'_, f64>) -> [[f64; 3]; WB] {
        portable::weight_taps(stream)
    }
}

impl Direct for f32 {
    fn forward_tile<const R: usize, const K: usize>(
        x: &[f32],
        plane: usize,
        channels: usize,
        w: &[f32],
        offsets: &[usize; K],
        out: &mut [[f32; QB]; R],
    ) {
        #[cfg(target_arch = "x86_64")]
        if avx2_available() && tile_fits(x, plane, channels, w, offsets, R) {
            // SAFETY: the processor has AVX2 and FMA, and every value the tile reads lies
            // inside `x` and `w` (checked just above).
            return unsafe { avx2::forward_tile(x, plane, channels, w, offsets, out) };
        }
        portable::forward_tile(x, plane, channels, w, offsets, out)
    }

    fn weight_taps(stream: &Stream<'_, f32>) -> [[f32; 3]; WB] {
        #[cfg(target_arch = "x86_64")]
        if avx2_available() && stream.fits() {
            // SAFETY: as above, with the stream's extent checked by `fits`.
            return unsafe { avx2::weight_taps(stream) };
        }
        portable::weight_taps(stream)
    }
}

/// Whether every value a forward tile reads lies inside `x` and `w`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn tile_fits<E, const K: usize>(
    x: &[E],
    plane: usize,
    channels: usize,
    w: &[E],
    offsets: &[usize; K],
    rows: usize,
) -> bool {
    let farthest = offsets.iter().copied().max().unwrap_or(0);
    channels == 0
        || (x.len() >= (channels - 1) * plane + farthest + QB && w.len() >= channels * K * rows)
}

/// The tiles in plain Rust (indexing checked), for f64 and processors without AVX2.
mod portable {
    use super::{Element, Stream, QB, WB};

    pub(super) fn forward_tile<E: Element, const R: usize, const K: usize>(
        x: &[E],
        plane: usize,
        channels: usize,
        w: &[E],
        offsets: &[usize; K],
        acc: &mut [[E; QB]; R],
    ) {
        *acc = [[E::ZERO; QB]; R];
        for c in 0..channels {
            let weights = &w[c * K * R..][..K * R];
            for (t, &offset) in offsets.iter().enumerate() {
                let values = &x[c * plane + offset..][..QB];
                for (row, &wk) in acc.iter_mut().zip(&weights[t * R..][..R]) {
                    for (a, &v) in row.iter_mut().zip(values) {
                        *a += wk * v;
                    }
                }
            }
        }
    }

    pub(super) fn weight_taps<E: Element>(s: &Stream<'_, E>) -> [[E; 3]; WB] {
        let mut acc = [[E::ZERO; 3]; WB];
        for image in 0..s.images {
            let gy = &s.gy[image * s.gy_image..];
            let x = &s.x[image * s.x_image..][..s.width + 2];
            for (k, row) in acc.iter_mut().enumerate() {
                let gy = &gy[k * s.width..][..s.width];
                for (j, a) in row.iter_mut().enumerate() {
                    for (&g, &v) in gy.iter().zip(&x[j..]) {
                        *a += g * v;
                    }
                }
            }
        }
        acc
    }
}

/// Whether this processor has AVX2 and FMA (detected once, then cached by `std`); also gates
/// the AVX2 builds of `fused_winograd`'s transforms.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// The tiles with AVX2 and FMA intrinsics (f32, 8 lanes).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Stream, QB, WB};
    use std::arch::x86_64::*;

    /// # Safety
    /// The processor must have AVX2 and FMA, and `x` and `w` must hold every value the tile
    /// reads ([`super::tile_fits`]).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward_tile<const R: usize, const K: usize>(
        x: &[f32],
        plane: usize,
        channels: usize,
        w: &[f32],
        offsets: &[usize; K],
        out: &mut [[f32; QB]; R],
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for c in 0..channels {
            let xc = x.as_ptr().add(c * plane);
            let wc = w.as_ptr().add(c * K * R);
            for (t, &offset) in offsets.iter().enumerate() {
                let lo = _mm256_loadu_ps(xc.add(offset));
                let hi = _mm256_loadu_ps(xc.add(offset + 8));
                let wt = wc.add(t * R);
                for (k, a) in acc.iter_mut().enumerate() {
                    let wk = _mm256_broadcast_ss(&*wt.add(k));
                    a[0] = _mm256_fmadd_ps(wk, lo, a[0]);
                    a[1] = _mm256_fmadd_ps(wk, hi, a[1]);
                }
            }
        }
        for (row, a) in out.iter_mut().zip(&acc) {
            _mm256_storeu_ps(row.as_mut_ptr(), a[0]);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), a[1]);
        }
    }

    /// # Safety
    /// The processor must have AVX2 and FMA, and the stream must fit its slices
    /// ([`Stream::fits`]).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_taps(s: &Stream<'_, f32>) -> [[f32; 3]; WB] {
        let mut acc = [[_mm256_setzero_ps(); 3]; WB];
        for image in 0..s.images {
            let gy = s.gy.as_ptr().add(image * s.gy_image);
            let x = s.x.as_ptr().add(image * s.x_image);
            for q in (0..s.width).step_by(8) {
                let xs = [
                    _mm256_loadu_ps(x.add(q)),
                    _mm256_loadu_ps(x.add(q + 1)),
                    _mm256_loadu_ps(x.add(q + 2)),
                ];
                for (k, a) in acc.iter_mut().enumerate() {
                    let g = _mm256_loadu_ps(gy.add(k * s.width + q));
                    for (aj, &xj) in a.iter_mut().zip(&xs) {
                        *aj = _mm256_fmadd_ps(g, xj, *aj);
                    }
                }
            }
        }
        let mut out = [[0.0f32; 3]; WB];
        for (row, a) in out.iter_mut().zip(&acc) {
            for (v, &aj) in row.iter_mut().zip(a) {
                *v = lane_sum(aj);
            }
        }
        out
    }

    /// The sum of a vector's lanes, in a fixed order.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lane_sum(v: __m256) -> f32 {
        let halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
        _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)))
    }
}

/// Output channels `first .. first + rows` computed by tiles of `width` (`OB` or `OB_NARROW`)
/// rows, whose packed weights start at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) first: usize,
    pub(crate) rows: usize,
    pub(crate) width: usize,
    pub(crate) offset: usize,
}

/// The tile blocks of `outputs` output channels: `OB` rows each and one or two of `OB_NARROW`
/// where that covers the channels exactly (any even count from 4 on is 6a + 4b), one narrow
/// block for at most `OB_NARROW` channels; otherwise the last block has unused rows. Each
/// row's packed weights are `per_row` values (`inputs · TAPS` here).
pub(crate) fn blocks(outputs: usize, per_row: usize) -> Vec<Block> {
    let narrow = match outputs % OB {
        _ if outputs == 0 => 0,
        _ if outputs <= OB_NARROW => 1,
        4 => 1,
        2 if outputs >= 2 * OB_NARROW => 2,
        _ => 0,
    };
    let wide = outputs.saturating_sub(narrow * OB_NARROW).div_ceil(OB);
    let mut out = Vec::with_capacity(wide + narrow);
    let (mut first, mut offset) = (0, 0);
    for width in std::iter::repeat_n(OB, wide).chain(std::iter::repeat_n(OB_NARROW, narrow)) {
        let rows = width.min(outputs - first);
        out.push(Block {
            first,
            rows,
            width,
            offset,
        });
        first += rows;
        offset += per_row * width;
    }
    out
}

fn check(len: usize, expected: usize, what: &str, g: &ConvGeometry) -> Result<()> {
    if !applies(g) || len != expected {
        bail!("direct 3×3 convolution: {len} {what} values where {g:?} needs {expected}");
    }
    Ok(())
}

/// The weight gradient of the 3×3 "same" convolution for the input `x` `[N, C, H, W]` and the upstream
/// gradient `gy` `[N, O, H, W]`: `∂w` `[O, C, 3, 3]`, summed over the images. Tasks of `WB`
/// output channels × one input channel run in parallel.
pub(crate) fn conv3x3_weight_grad<E: Direct>(
    x: &[E],
    gy: &[E],
    g: &ConvGeometry,
) -> Result<Vec<E>> {
    let (n, c, o) = (g.batch, g.in_channels, g.out_channels);
    let grid = Grid::of(g.in_h, g.in_w);
    let plane = g.in_h * g.in_w;
    check(x.len(), n * c * plane, "input", g)?;
    check(gy.len(), n * o * plane, "gradient", g)?;
    let padded = pad(x, n * c, &grid, Threads::All);
    let (blocks, width) = (o.div_ceil(WB), grid.width());
    let rows = blocks * WB;
    // the upstream gradient on the wide grid: zero in the extra column, past the end and in
    // the rows past the last output channel
    let wide = par_build_on(
        n * rows * width,
        width,
        items_per_task(width),
        Threads::All,
        |r, dst| {
            let (image, row) = (r / rows, r % rows);
            if row >= o || g.in_w == 0 {
                return;
            }
            let src = &gy[(image * o + row) * plane..][..plane];
            for (y, line) in src.chunks_exact(g.in_w).enumerate() {
                dst[y * grid.line..][..g.in_w].copy_from_slice(line);
            }
        },
    );
    let task = |index: usize| -> [[E; TAPS]; WB] {
        let (b, ci) = (index / c.max(1), index % c.max(1));
        let mut taps = [[E::ZERO; TAPS]; WB];
        for i in 0..3 {
            let stream = Stream {
                gy: &wide[b * WB * width..],
                gy_image: rows * width,
                x: &padded[ci * grid.plane + i * grid.line..],
                x_image: c * grid.plane,
                images: n,
                width,
            };
            let sums = E::weight_taps(&stream);
            for (out, row) in taps.iter_mut().zip(&sums) {
                out[i * 3..][..3].copy_from_slice(row);
            }
        }
        taps
    };
    let tasks = blocks * c;
    let work = n * rows * width * c * TAPS;
    let parts: Vec<[[E; TAPS]; WB]> = if worth_splitting(work) {
        (0..tasks)
            .into_par_iter()
            .with_min_len(items_per_task(n * width * WB * TAPS))
            .map(task)
            .collect()
    } else {
        (0..tasks).map(task).collect()
    };
    let mut dw = vec![E::ZERO; o * c * TAPS];
    for (index, part) in parts.iter().enumerate() {
        let (b, ci) = (index / c.max(1), index % c.max(1));
        for (k, taps) in part.iter().enumerate() {
            let oc = b * WB + k;
            if oc < o {
                dw[(oc * c + ci) * TAPS..][..TAPS].copy_from_slice(taps);
            }
        }
    }
    Ok(dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{
        conv3x3_definition, conv_operands, dot, from_f32, max_error, same3x3, same3x3_cases, to_f32,
    };

    /// Partial blocks of `WB` output channels, wide grids that are not whole numbers of
    /// tiles, and the rest of [`same3x3_cases`].
    fn geometries() -> Vec<ConvGeometry> {
        same3x3_cases()
    }

    fn operands(g: &ConvGeometry) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        conv_operands(g, 1)
    }

    /// ∂w coordinate by coordinate — ∂w[o, c, t] = ⟨conv(x, e_{o,c,t}), gy⟩ — and as a whole,
    /// ⟨w, ∂w⟩ = ⟨conv(x, w), gy⟩: the exact adjoint of the forward pass in the kernel.
    #[test]
    fn weight_gradient_matches_the_definition() {
        for g in geometries() {
            let (x, w, gy) = operands(&g);
            let form = dot(&conv3x3_definition(&x, &w, &g), &gy);
            let dw = conv3x3_weight_grad(&x, &gy, &g).unwrap();
            assert!(
                (dot(&w, &dw) - form).abs() < 1e-9 * form.abs().max(1.0),
                "{g:?}"
            );
            let mut unit = vec![0.0; w.len()];
            for (index, &d) in dw.iter().enumerate() {
                unit[index] = 1.0;
                let expected = dot(&conv3x3_definition(&x, &unit, &g), &gy);
                unit[index] = 0.0;
                assert!(
                    (d - expected).abs() < 1e-9 * expected.abs().max(1.0),
                    "{g:?}"
                );
            }
        }
    }

    /// The f32 tiles (vectorised where the processor allows) agree with the f64 results to
    /// f32 rounding of sums over every position of products of values below 1.
    #[test]
    fn single_precision_matches_double() {
        for g in geometries().into_iter().chain([same3x3(2, 16, 32, 32, 32)]) {
            let (x, _, gy) = operands(&g);
            let (xf, gf) = (to_f32(&x), to_f32(&gy));
            let dw = from_f32(&conv3x3_weight_grad(&xf, &gf, &g).unwrap());
            let dw64 = conv3x3_weight_grad(&x, &gy, &g).unwrap();
            let positions = g.batch * g.in_h * g.in_w;
            assert!(max_error(&dw, &dw64) < positions as f64 * 1e-6, "{g:?}");
        }
    }

    #[test]
    fn blocks_cover_the_channels_without_unused_rows_where_possible() {
        for outputs in 0..80 {
            let b = blocks(outputs, 3 * TAPS);
            assert_eq!(b.iter().map(|b| b.rows).sum::<usize>(), outputs);
            let mut next = (0, 0);
            for block in &b {
                assert_eq!((block.first, block.offset), next);
                assert!(block.rows <= block.width && block.rows > 0);
                next = (
                    block.first + block.rows,
                    block.offset + 3 * TAPS * block.width,
                );
            }
            let unused: usize = b.iter().map(|b| b.width - b.rows).sum();
            if outputs % 2 == 0 && outputs >= OB_NARROW {
                assert_eq!(unused, 0, "{outputs}: {b:?}");
            } else if (1..OB_NARROW).contains(&outputs) {
                assert_eq!(unused, OB_NARROW - outputs, "{outputs}: {b:?}");
            }
        }
        let widths = |o| blocks(o, 1).iter().map(|b| b.width).collect::<Vec<_>>();
        assert_eq!(widths(16), [6, 6, 4]);
        assert_eq!(widths(32), [6, 6, 6, 6, 4, 4]);
        assert_eq!(widths(64).iter().filter(|&&w| w == OB_NARROW).count(), 1);
        assert_eq!(widths(3), [4]);
    }

    #[test]
    fn operands_of_the_wrong_size_are_errors() {
        let g = same3x3(2, 3, 4, 5, 5);
        let (x, _, gy) = operands(&g);
        assert!(conv3x3_weight_grad(&x[1..], &gy, &g).is_err());
        assert!(conv3x3_weight_grad(&x, &gy[1..], &g).is_err());
        let strided = ConvGeometry { stride: 2, ..g };
        assert!(conv3x3_weight_grad(&x, &gy, &strided).is_err());
    }
}
