//! The SGD update of a synaptic weight, its new max|w| and its reset thresholds in one pass.
//!
//! Rejuvenation needs max|w| of the updated weights (σ_re) before it can decide anything, and
//! a reset threshold per weight (see `scan`). Done apart, the update, the maximum and the
//! thresholds each read all the weights: three passes over memory where one suffices. This
//! pass writes the update exactly as the plain SGD kernel does (`w − ((g·f)·η + 0)`, the same
//! operations in the same order, so the same bits), folds the new |w| into a maximum, and
//! computes each weight's threshold from an *estimate* of σ_re given by the caller (the
//! previous step's maximum with a margin). A threshold only decides which weights certainly
//! stay and which take the exact path, so an estimate that makes z = |w|/σ too small is still
//! correct; the caller checks afterwards that the estimate was on the safe side and otherwise
//! recomputes the thresholds from the true σ.

use super::BINS;
use rayon::prelude::*;

/// Weights per parallel task.
const TASK: usize = 1 << 14;

/// The element types the fused update handles: the SGD arithmetic in the weight's own type.
pub(crate) trait Descent: super::WeightValue + PartialOrd {
    /// `w − ((g·f)·lr + 0)` (`f` = None: `w − (g·lr + 0)`), as the plain descent kernel.
    fn descend(w: Self, g: Self, f: Option<Self>, lr: Self) -> Self;

    /// [`chunk_portable`] or a faster version of it with identical results.
    fn chunk(
        w: &mut [Self],
        g: &[Self],
        f: Option<&[Self]>,
        lr: Self,
        h: &mut [u32],
        scale: Option<f32>,
        keep: &[u32; BINS + 1],
    ) -> u64 {
        chunk_portable(w, g, f, lr, h, scale, keep)
    }
}

impl Descent for f64 {
    #[inline(always)]
    fn descend(w: f64, g: f64, f: Option<f64>, lr: f64) -> f64 {
        match f {
            Some(f) => w - ((g * f) * lr + 0.0),
            None => w - (g * lr + 0.0),
        }
    }
}

impl Descent for f32 {
    #[inline(always)]
    fn descend(w: f32, g: f32, f: Option<f32>, lr: f32) -> f32 {
        match f {
            Some(f) => w - ((g * f) * lr + 0.0),
            None => w - (g * lr + 0.0),
        }
    }

    fn chunk(
        w: &mut [f32],
        g: &[f32],
        f: Option<&[f32]>,
        lr: f32,
        h: &mut [u32],
        scale: Option<f32>,
        keep: &[u32; BINS + 1],
    ) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F, checked just above.
            return unsafe { chunk_avx512(w, g, f, lr, h, scale, keep) };
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the processor has AVX2, checked just above.
            return unsafe { chunk_avx2(w, g, f, lr, h, scale, keep) };
        }
        chunk_portable(w, g, f, lr, h, scale, keep)
    }
}

/// Updates `w` by `g` (scaled by `f`) and learning rate `lr`; returns the largest
/// [`magnitude_bits`](super::WeightValue::magnitude_bits) of the new weights. With `scale`
/// (bins of the reset table per unit of |w|, at most the true one), writes each new weight's
/// threshold into `h` (as long as `w`); without, leaves `h` alone.
pub(crate) fn descend_with_thresholds<T: Descent>(
    w: &mut [T],
    g: &[T],
    f: Option<&[T]>,
    lr: T,
    h: &mut [u32],
    scale: Option<f32>,
    keep: &[u32; BINS + 1],
) -> u64 {
    debug_assert!(g.len() == w.len() && h.len() == w.len());
    debug_assert!(f.is_none_or(|f| f.len() == w.len()));
    if w.len() <= TASK {
        return T::chunk(w, g, f, lr, h, scale, keep);
    }
    w.par_chunks_mut(TASK)
        .zip(h.par_chunks_mut(TASK))
        .enumerate()
        .map(|(k, (w, h))| {
            let at = k * TASK..k * TASK + w.len();
            T::chunk(w, &g[at.clone()], f.map(|f| &f[at]), lr, h, scale, keep)
        })
        .reduce(|| 0, u64::max)
}

/// The definition of one chunk's work, element by element.
#[inline(always)]
fn chunk_portable<T: Descent>(
    w: &mut [T],
    g: &[T],
    f: Option<&[T]>,
    lr: T,
    h: &mut [u32],
    scale: Option<f32>,
    keep: &[u32; BINS + 1],
) -> u64 {
    let mut max = 0u64;
    for i in 0..w.len() {
        let new = T::descend(w[i], g[i], f.map(|f| f[i]), lr);
        w[i] = new;
        max = max.max(new.magnitude_bits());
        if let Some(scale) = scale {
            h[i] = super::scan::threshold(new, scale, keep);
        }
    }
    max
}

/// [`chunk_portable`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn chunk_avx2(
    w: &mut [f32],
    g: &[f32],
    f: Option<&[f32]>,
    lr: f32,
    h: &mut [u32],
    scale: Option<f32>,
    keep: &[u32; BINS + 1],
) -> u64 {
    chunk_portable(w, g, f, lr, h, scale, keep)
}

/// [`chunk_portable`] sixteen weights at a time with AVX-512F: the same operations (a
/// multiplication and an addition, never fused), the maximum of the magnitudes' bits, and the
/// thresholds gathered from the table. A bin estimate that overflows i32 becomes bin 0 here
/// (the highest threshold) rather than the last bin: more weights take the exact path, none
/// is decided differently.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chunk_avx512(
    w: &mut [f32],
    g: &[f32],
    f: Option<&[f32]>,
    lr: f32,
    h: &mut [u32],
    scale: Option<f32>,
    keep: &[u32; BINS + 1],
) -> u64 {
    use std::arch::x86_64::*;
    let n = w.len();
    let lanes = n / 16 * 16;
    let lr_v = _mm512_set1_ps(lr);
    let zero = _mm512_setzero_ps();
    let magnitude = _mm512_set1_epi32(0x7fff_ffff);
    let one = _mm512_set1_epi32(1);
    let last = _mm512_set1_epi32(BINS as i32);
    let scale_v = _mm512_set1_ps(scale.unwrap_or(0.0));
    let mut max = _mm512_setzero_si512();
    let mut i = 0;
    while i < lanes {
        let wv = _mm512_loadu_ps(w.as_ptr().add(i));
        let mut gv = _mm512_loadu_ps(g.as_ptr().add(i));
        if let Some(f) = f {
            gv = _mm512_mul_ps(gv, _mm512_loadu_ps(f.as_ptr().add(i)));
        }
        let new = _mm512_sub_ps(wv, _mm512_add_ps(_mm512_mul_ps(gv, lr_v), zero));
        _mm512_storeu_ps(w.as_mut_ptr().add(i), new);
        let bits = _mm512_and_si512(_mm512_castps_si512(new), magnitude);
        max = _mm512_max_epu32(max, bits);
        if scale.is_some() {
            let estimate = _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_castsi512_ps(bits), scale_v));
            let bin =
                _mm512_min_epi32(_mm512_sub_epi32(_mm512_max_epi32(estimate, one), one), last);
            let threshold = _mm512_i32gather_epi32::<4>(bin, keep.as_ptr().cast());
            _mm512_storeu_si512(h.as_mut_ptr().add(i).cast(), threshold);
        }
        i += 16;
    }
    let head = u64::from(_mm512_reduce_max_epu32(max));
    let tail = chunk_portable(
        &mut w[lanes..],
        &g[lanes..],
        f.map(|f| &f[lanes..]),
        lr,
        &mut h[lanes..],
        scale,
        keep,
    );
    head.max(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejuvenation::ResetTable;

    /// Weights, gradients and factors of every kind of magnitude, including zeros of both
    /// signs and values whose update cancels exactly.
    fn operands(n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let w: Vec<f32> = (0..n)
            .map(|i| match i % 7 {
                0 => 0.0,
                1 => -0.0,
                2 => 1e-30 * i as f32,
                _ => ((i * 7919) % 1013) as f32 / 3000.0 - 0.17,
            })
            .collect();
        let g: Vec<f32> = (0..n)
            .map(|i| match i % 11 {
                0 => 0.0,
                1 => -0.0,
                _ => ((i * 104_729) % 331) as f32 / 31.0 - 5.3,
            })
            .collect();
        let f: Vec<f32> = (0..n).map(|i| 0.955 + (i % 17) as f32 / 180.0).collect();
        (w, g, f)
    }

    #[test]
    fn every_path_gives_the_definitions_bits_maximum_and_thresholds() {
        let keep = &ResetTable::get().keep;
        let n = 3 * TASK + 21;
        let (w0, g, f) = operands(n);
        for factors in [None, Some(f.as_slice())] {
            for scale in [None, Some(2048.0 * 14.0 / 0.2), Some(1e-3)] {
                // the definition, written out: the composed update, then the maximum and the
                // threshold of the bin below the f32 estimate
                let mut want_w = w0.clone();
                let mut want_h = vec![7u32; n];
                let mut want_max = 0u32;
                for i in 0..n {
                    let scaled = match factors {
                        Some(f) => g[i] * f[i],
                        None => g[i],
                    };
                    want_w[i] = w0[i] - (scaled * 0.01 + 0.0);
                    want_max = want_max.max(want_w[i].to_bits() & 0x7fff_ffff);
                    if let Some(s) = scale {
                        let e = (want_w[i].abs() * s) as i32;
                        want_h[i] = keep[(e.max(1) - 1).min(BINS as i32) as usize];
                    }
                }
                let mut w = w0.clone();
                let mut h = vec![7u32; n];
                let max = descend_with_thresholds(&mut w, &g, factors, 0.01, &mut h, scale, keep);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&w), bits(&want_w), "{scale:?}");
                assert_eq!(max, u64::from(want_max));
                assert_eq!(h, want_h, "{scale:?}");
                // the portable path alone agrees too
                let mut w = w0.clone();
                let mut h = vec![7u32; n];
                let max = chunk_portable(&mut w, &g, factors, 0.01, &mut h, scale, keep);
                assert_eq!(
                    (bits(&w), max, h),
                    (bits(&want_w), u64::from(want_max), want_h)
                );
            }
        }
    }

    #[test]
    fn f64_weights_follow_the_same_definition() {
        let keep = &ResetTable::get().keep;
        let w0: Vec<f64> = (0..40_000).map(|i| (i as f64 * 0.37).sin() * 0.2).collect();
        let g: Vec<f64> = (0..40_000).map(|i| (i as f64 * 0.11).cos()).collect();
        let mut w = w0.clone();
        let mut h = vec![0u32; w.len()];
        let max = descend_with_thresholds(&mut w, &g, None, 0.5, &mut h, None, keep);
        for i in 0..w.len() {
            assert_eq!(w[i].to_bits(), (w0[i] - (g[i] * 0.5 + 0.0)).to_bits());
        }
        let want = w.iter().map(|x| x.abs()).fold(0.0, f64::max);
        assert_eq!(max, want.to_bits());
        assert!(h.iter().all(|&x| x == 0), "no thresholds without a scale");
    }
}
