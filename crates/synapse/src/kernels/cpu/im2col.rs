//! Unfolding images into the columns a convolution multiplies (im2col), and folding column
//! gradients back onto the pixels they came from (col2im).
//!
//! For a batch of N images `[C, H, W]` and a `kh × kw` kernel, the column matrix has one row per
//! kernel tap (c, i, j) and one column per output position of every image (n, oy, ox):
//! `col[(c, i, j), (n, oy, ox)] = x[n, c, oy·s + i − p, ox·s + j − p]`, zero in the padding.
//! Rows are independent, so unfolding runs in parallel over rows; folding runs in parallel over
//! (image, channel) planes, each accumulating its taps in a fixed order (deterministic).

use super::buffer::{par_fill, write_copy, Threads, Written};
use super::gemm::Element;
use super::{items_per_task, worth_splitting};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Sizes of a 2-D convolution over NCHW tensors (dilation 1, one group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kernel_h) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.kernel_w) / self.stride + 1
    }

    /// Output positions per image.
    pub fn positions(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Kernel taps per output channel (rows of the column matrix).
    pub fn taps(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Columns of the column matrix: every output position of every image.
    pub fn columns(&self) -> usize {
        self.batch * self.positions()
    }

    /// The output positions `ox` whose tap `j` reads inside the row `[0, in_w)`.
    fn valid_ox(&self, j: usize) -> std::ops::Range<usize> {
        axis_range(j, self.padding, self.stride, self.in_w, self.out_w())
    }

    fn valid_oy(&self, i: usize) -> std::ops::Range<usize> {
        axis_range(i, self.padding, self.stride, self.in_h, self.out_h())
    }
}

/// Outputs `o` in `[0, out)` with `0 ≤ o·stride + tap − padding < size`.
fn axis_range(
    tap: usize,
    padding: usize,
    stride: usize,
    size: usize,
    out: usize,
) -> std::ops::Range<usize> {
    let lo = padding.saturating_sub(tap).div_ceil(stride);
    // o·stride ≤ size − 1 + padding − tap
    let hi = match (size + padding).checked_sub(tap + 1) {
        Some(limit) => (limit / stride + 1).min(out),
        None => 0,
    };
    lo..hi.max(lo)
}

/// Unfolds `x` (`[N, C, H, W]`, contiguous) into `[taps, columns]`, rows in parallel on
/// [`Threads::All`], in order on the calling thread on [`Threads::One`].
///
/// Every element is written exactly once (padding as explicit zeros), so the buffer is not
/// zeroed first.
pub(crate) fn im2col<T: Element>(x: &[T], g: &ConvGeometry, threads: Threads) -> Vec<T> {
    let (positions, columns) = (g.positions(), g.columns());
    let (oh, ow, plane) = (g.out_h(), g.out_w(), g.in_h * g.in_w);
    let total = g.taps() * columns;
    if columns == 0 || total == 0 {
        return vec![T::ZERO; total];
    }
    let mut col: Vec<T> = Vec::with_capacity(total);
    let unfold_row = |(row, out): (usize, &mut [MaybeUninit<T>])| {
        let (c, i, j) = tap(row, g);
        let (oys, oxs) = (g.valid_oy(i), g.valid_ox(j));
        for n in 0..g.batch {
            let src = &x[(n * g.in_channels + c) * plane..][..plane];
            let dst = &mut out[n * positions..][..positions];
            if g.stride == 1 && ow == g.in_w {
                unfold_aligned(dst, src, g, (i, j), (oys.clone(), oxs.clone()));
                continue;
            }
            for oy in 0..oh {
                let out_line = &mut dst[oy * ow..][..ow];
                if !oys.contains(&oy) {
                    out_line.iter_mut().for_each(|v| {
                        v.write(T::ZERO);
                    });
                    continue;
                }
                let iy = oy * g.stride + i - g.padding;
                let line = &src[iy * g.in_w..][..g.in_w];
                out_line[..oxs.start].iter_mut().for_each(|v| {
                    v.write(T::ZERO);
                });
                out_line[oxs.end..].iter_mut().for_each(|v| {
                    v.write(T::ZERO);
                });
                let inside = &mut out_line[oxs.clone()];
                if g.stride == 1 {
                    let start = oxs.start + j - g.padding;
                    write_copy(inside, &line[start..start + oxs.len()]);
                } else {
                    for (v, ox) in inside.iter_mut().zip(oxs.clone()) {
                        v.write(line[ox * g.stride + j - g.padding]);
                    }
                }
            }
        }
    };
    let rows = &mut col.spare_capacity_mut()[..total];
    if threads == Threads::All && worth_splitting(total) {
        rows.par_chunks_mut(columns)
            .with_min_len(items_per_task(columns))
            .enumerate()
            .for_each(unfold_row);
    } else {
        rows.chunks_mut(columns).enumerate().for_each(unfold_row);
    }
    // SAFETY: the rows above cover all `total` elements (taps × images × output rows × output
    // columns), each written: outside `oys` whole lines of zeros, inside them zeros left and
    // right of `oxs` and the copied pixels in `oxs` (`unfold_aligned` writes the same).
    unsafe { col.set_len(total) };
    col
}

/// One image plane of one tap's row where output and input lines have the same length
/// (stride 1, "same" padding: every 3×3 convolution of ResNet and ConvNet but the strided
/// ones): output position q reads input position q + δ, δ = (i − p)·W + (j − p), so the valid
/// rows are one block copy; the columns that wrapped around to a neighbouring line (or past
/// the plane) are then overwritten with the padding's zeros. Per line that is `|j − p|` writes
/// instead of a copy call, which dominated on 8×8 planes.
fn unfold_aligned<T: Element>(
    dst: &mut [MaybeUninit<T>],
    src: &[T],
    g: &ConvGeometry,
    (i, j): (usize, usize),
    (oys, oxs): (Range<usize>, Range<usize>),
) {
    let w = g.in_w;
    let zero = |part: &mut [MaybeUninit<T>]| {
        part.iter_mut().for_each(|v| {
            v.write(T::ZERO);
        })
    };
    let (block_start, block_end) = (oys.start * w, oys.end * w);
    zero(&mut dst[..block_start]);
    zero(&mut dst[block_end..]);
    if oys.is_empty() {
        return;
    }
    let delta = (i * w + j) as isize - (g.padding * w + g.padding) as isize;
    // block positions whose source lies inside the plane
    let first = (block_start as isize).max(-delta) as usize;
    let last = ((block_end as isize).min(src.len() as isize - delta)).max(first as isize) as usize;
    let from = (first as isize + delta) as usize;
    write_copy(&mut dst[first..last], &src[from..from + (last - first)]);
    for oy in oys {
        let line = &mut dst[oy * w..][..w];
        zero(&mut line[..oxs.start]);
        zero(&mut line[oxs.end..]);
    }
}

/// Folds column gradients back into an image gradient `[N, C, H, W]`: every pixel receives
/// the sum over the taps and positions that read it. The columns come image by image
/// (`[N, taps, positions]`, the layout in which the input gradient's per-image products
/// write them); for one image that is [`im2col`]'s `[taps, columns]`. (The ops fold image by
/// image into their output, [`col2im_into`]; this whole-batch form is the adjoint test's.)
#[cfg(test)]
pub fn col2im<T: Element>(col: &[T], g: &ConvGeometry) -> Vec<T> {
    let len = g.batch * g.in_channels * g.in_h * g.in_w;
    let mut out: Vec<T> = Vec::with_capacity(len);
    col2im_into(col, g, &mut out.spare_capacity_mut()[..len], Threads::All);
    // SAFETY: `col2im_into` initialises all of the `len` elements it is given.
    unsafe { out.set_len(len) };
    out
}

/// [`col2im`] into `dst` (`[N, C, H, W]` elements), initialising all of it, on the given
/// threads.
pub(crate) fn col2im_into<T: Element>(
    col: &[T],
    g: &ConvGeometry,
    dst: &mut [MaybeUninit<T>],
    threads: Threads,
) -> Written {
    let (positions, taps) = (g.positions(), g.taps());
    let (ow, plane) = (g.out_w(), g.in_h * g.in_w);
    let taps_per_channel = g.kernel_h * g.kernel_w;
    par_fill(dst, plane, items_per_task(plane), threads, |nc, dst| {
        let (n, c) = (nc / g.in_channels, nc % g.in_channels);
        for i in 0..g.kernel_h {
            for j in 0..g.kernel_w {
                let row = c * taps_per_channel + i * g.kernel_w + j;
                let src = &col[(n * taps + row) * positions..][..positions];
                let (oys, oxs) = (g.valid_oy(i), g.valid_ox(j));
                for oy in oys {
                    let iy = oy * g.stride + i - g.padding;
                    let line = &mut dst[iy * g.in_w..][..g.in_w];
                    let src_line = &src[oy * ow..][..ow];
                    if g.stride == 1 {
                        let start = oxs.start + j - g.padding;
                        let dst_run = &mut line[start..start + oxs.len()];
                        for (d, &v) in dst_run.iter_mut().zip(&src_line[oxs.clone()]) {
                            *d += v;
                        }
                    } else {
                        for ox in oxs.clone() {
                            line[ox * g.stride + j - g.padding] += src_line[ox];
                        }
                    }
                }
            }
        }
    })
}

/// (channel, kernel row, kernel column) of a row of the column matrix.
fn tap(row: usize, g: &ConvGeometry) -> (usize, usize, usize) {
    let per_channel = g.kernel_h * g.kernel_w;
    (
        row / per_channel,
        (row % per_channel) / g.kernel_w,
        row % g.kernel_w,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(stride: usize, padding: usize, k: (usize, usize)) -> ConvGeometry {
        ConvGeometry {
            batch: 2,
            in_channels: 3,
            out_channels: 1,
            in_h: 5,
            in_w: 6,
            kernel_h: k.0,
            kernel_w: k.1,
            stride,
            padding,
        }
    }

    /// The definition, one element at a time with signed arithmetic.
    fn reference(x: &[f64], g: &ConvGeometry) -> Vec<f64> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut col = vec![0.0; g.taps() * g.columns()];
        for c in 0..g.in_channels {
            for i in 0..g.kernel_h {
                for j in 0..g.kernel_w {
                    let row = (c * g.kernel_h + i) * g.kernel_w + j;
                    for n in 0..g.batch {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let iy = (oy * g.stride + i) as isize - g.padding as isize;
                                let ix = (ox * g.stride + j) as isize - g.padding as isize;
                                let inside = iy >= 0
                                    && ix >= 0
                                    && (iy as usize) < g.in_h
                                    && (ix as usize) < g.in_w;
                                if inside {
                                    col[row * g.columns() + n * oh * ow + oy * ow + ox] =
                                        x[((n * g.in_channels + c) * g.in_h + iy as usize)
                                            * g.in_w
                                            + ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        col
    }

    fn geometries() -> Vec<ConvGeometry> {
        vec![
            geometry(1, 1, (3, 3)),
            geometry(2, 1, (3, 3)),
            geometry(1, 0, (1, 1)),
            geometry(2, 0, (1, 1)),
            geometry(2, 2, (5, 5)),
            geometry(3, 0, (2, 4)),
            geometry(1, 3, (2, 2)),
            // stride 1 with output lines as long as input lines (the block-copy path)
            geometry(1, 2, (5, 5)),
            geometry(1, 1, (4, 3)),
            geometry(1, 2, (2, 5)),
        ]
    }

    #[test]
    fn unfolding_matches_the_definition() {
        for g in geometries() {
            let x: Vec<f64> = (0..g.batch * g.in_channels * g.in_h * g.in_w)
                .map(|v| v as f64 + 1.0)
                .collect();
            assert_eq!(im2col(&x, &g, Threads::All), reference(&x, &g), "{g:?}");
        }
    }

    /// `[taps, N·P]` → `[N, taps, P]`.
    fn image_by_image(col: &[f64], g: &ConvGeometry) -> Vec<f64> {
        let (p, taps) = (g.positions(), g.taps());
        (0..g.batch * taps * p)
            .map(|v| {
                let (n, row, q) = (v / (taps * p), (v / p) % taps, v % p);
                col[row * g.columns() + n * p + q]
            })
            .collect()
    }

    /// col2im is the adjoint of im2col: ⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩ for every x, y.
    #[test]
    fn folding_is_the_adjoint_of_unfolding() {
        for g in geometries() {
            let x: Vec<f64> = (0..g.batch * g.in_channels * g.in_h * g.in_w)
                .map(|v| ((v * 37) % 11) as f64 - 5.0)
                .collect();
            let y: Vec<f64> = (0..g.taps() * g.columns())
                .map(|v| ((v * 53) % 13) as f64 - 6.0)
                .collect();
            let lhs: f64 = im2col(&x, &g, Threads::All)
                .iter()
                .zip(&y)
                .map(|(a, b)| a * b)
                .sum();
            let folded = col2im(&image_by_image(&y, &g), &g);
            let rhs: f64 = x.iter().zip(&folded).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs, "{g:?}");
        }
    }
}
