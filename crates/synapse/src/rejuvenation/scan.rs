//! Rejuvenation of a weight slice in place, deciding most weights with one integer comparison.
//!
//! The definition ([`rejuvenate_values`](super::rejuvenate_values)) is sequential: weight i reads
//! the next word of the stream, and a reset weight reads two more for its new value, so which
//! word a weight reads depends on every reset before it. What does not depend on the stream is
//! the weight's *threshold*: with u = word·2⁻³², a weight in table bin b is certainly kept when
//! u ≥ P_re(z_b), i.e. when word ≥ ⌈P_re(z_b)·2³²⌉. Those thresholds are computed for all
//! weights in parallel; the sequential part then compares consecutive words with consecutive
//! thresholds, eight at a time, and only a word below its threshold (a few percent: about the
//! reset rate) takes the exact path of the definition. Same words, same decisions, same new
//! values, same final stream position — in a few milliseconds per ten million weights.

use super::keystream::Keystream;
use super::{inverse_sigma, ResetTable, WeightValue, BINS};
use rand::RngCore;
use rayon::prelude::*;

/// Weights whose thresholds are computed before they are scanned (bounds the scratch memory).
const SEGMENT: usize = 1 << 20;
/// Weights per parallel task when computing thresholds.
const TASK: usize = 1 << 12;

/// Rejuvenates `values` in place with the words of `stream`; returns how many were reset and
/// leaves `stream` where the sequential definition leaves its generator. `max_abs` is
/// max |w| over `values` (all finite). `thresholds` is scratch space.
pub(crate) fn rejuvenate_in_place<T: WeightValue>(
    values: &mut [T],
    max_abs: f64,
    d_re: f64,
    stream: &mut Keystream,
    thresholds: &mut Vec<u32>,
    fresh: &mut dyn FnMut(&mut Keystream) -> f64,
) -> usize {
    let inv_sigma = inverse_sigma(max_abs, d_re);
    let mut reset = 0;
    for segment in values.chunks_mut(SEGMENT) {
        thresholds.resize(segment.len(), 0);
        fill_all_thresholds(segment, thresholds, max_abs, d_re);
        reset += scan_segment(segment, thresholds, inv_sigma, stream, fresh);
    }
    reset
}

/// [`rejuvenate_in_place`] with every weight's threshold already in `thresholds` (as long as
/// `values`; each at least the weight's own, as [`fill_all_thresholds`] gives them).
pub(crate) fn rejuvenate_with_thresholds<T: WeightValue>(
    values: &mut [T],
    thresholds: &[u32],
    max_abs: f64,
    d_re: f64,
    stream: &mut Keystream,
    fresh: &mut dyn FnMut(&mut Keystream) -> f64,
) -> usize {
    let inv_sigma = inverse_sigma(max_abs, d_re);
    values
        .chunks_mut(SEGMENT)
        .zip(thresholds.chunks(SEGMENT))
        .map(|(segment, thresholds)| scan_segment(segment, thresholds, inv_sigma, stream, fresh))
        .sum()
}

/// Writes the threshold of each of `values` (max|w| = `max_abs`) into `thresholds`, in parallel.
pub(crate) fn fill_all_thresholds<T: WeightValue>(
    values: &[T],
    thresholds: &mut [u32],
    max_abs: f64,
    d_re: f64,
) {
    let table = ResetTable::get();
    // the bin estimate is off by at most one, so the bin below it is never above the true one;
    // where the bins per unit of |w| are not a normal f32 (σ beyond f32's range), every
    // weight gets the highest threshold instead and the exact path decides
    let scale = (inverse_sigma(max_abs, d_re) * table.inv_step) as f32;
    let estimable = scale == 0.0 || scale.is_normal();
    values
        .par_chunks(TASK)
        .zip(thresholds.par_chunks_mut(TASK))
        .for_each(|(w, h)| {
            if estimable {
                fill_thresholds(w, h, scale, &table.keep)
            } else {
                h.fill(table.keep[0])
            }
        });
}

/// The sequential part: compares the stream's words with `thresholds` and takes the
/// definition's exact decision for each word below its weight's threshold.
fn scan_segment<T: WeightValue>(
    segment: &mut [T],
    thresholds: &[u32],
    inv_sigma: f64,
    stream: &mut Keystream,
    fresh: &mut dyn FnMut(&mut Keystream) -> f64,
) -> usize {
    let table = ResetTable::get();
    let mut reset = 0;
    // enough words for the segment and its resets at rates up to 1/16 (more come as needed)
    stream.ensure(segment.len() + segment.len() / 8 + 64);
    let mut i = 0;
    while i < segment.len() {
        let kept = leading_kept(stream.unread(), &thresholds[i..segment.len()]);
        stream.skip(kept);
        i += kept;
        if i == segment.len() {
            break;
        }
        if stream.unread().is_empty() {
            stream.ensure(segment.len() - i + 64);
            continue;
        }
        // the word is below the weight's threshold: the definition's exact decision
        let u = stream.next_u32() as f64 * (1.0 / 4_294_967_296.0);
        if table.resets(segment[i].weight_f64().abs() * inv_sigma, u) {
            segment[i] = T::from_weight_f64(fresh(stream));
            reset += 1;
        }
        i += 1;
    }
    reset
}

/// The threshold of one weight for `scale` bins per unit of |w| (see [`fill_thresholds`]).
#[inline(always)]
pub(crate) fn threshold<T: WeightValue>(w: T, scale: f32, keep: &[u32; BINS + 1]) -> u32 {
    // a float-to-int cast saturates (NaN gives 0): the estimate is never negative
    let estimate = (w.weight_f32().abs() * scale) as i32;
    keep[(estimate.max(1) - 1).min(BINS as i32) as usize]
}

/// Each weight's threshold: the smallest word that certainly keeps it.
///
/// The definition bins z = |w|/σ in f64; here the bin is estimated in f32 from |w|·(bins per
/// unit of |w|), whose relative error (< 2.5·10⁻⁷ over at most 2,049 bins) moves it by at most
/// one, and the threshold of the bin below the estimate is taken. The table's thresholds fall
/// with the bin, so that threshold is at least the weight's own: a word at or above it keeps
/// the weight under the definition too; a word below it takes the exact path.
fn fill_thresholds<T: WeightValue>(w: &[T], h: &mut [u32], scale: f32, keep: &[u32; BINS + 1]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2, checked just above.
        unsafe { fill_thresholds_avx2(w, h, scale, keep) };
        return;
    }
    fill_thresholds_portable(w, h, scale, keep);
}

/// [`fill_thresholds_portable`] compiled for AVX2, where the table lookups become gathers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_thresholds_avx2<T: WeightValue>(
    w: &[T],
    h: &mut [u32],
    scale: f32,
    keep: &[u32; BINS + 1],
) {
    fill_thresholds_portable(w, h, scale, keep);
}

#[inline(always)]
fn fill_thresholds_portable<T: WeightValue>(
    w: &[T],
    h: &mut [u32],
    scale: f32,
    keep: &[u32; BINS + 1],
) {
    for (w, h) in w.iter().zip(h.iter_mut()) {
        *h = threshold(*w, scale, keep);
    }
}

/// How many leading weights are kept for certain: the length of the run of words at or above
/// their thresholds (as far as both slices reach).
fn leading_kept(words: &[u32], thresholds: &[u32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2, checked just above.
        return unsafe { leading_kept_avx2(words, thresholds) };
    }
    leading_kept_portable(words, thresholds)
}

/// [`leading_kept_portable`] compiled for AVX2 (eight comparisons in one instruction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn leading_kept_avx2(words: &[u32], thresholds: &[u32]) -> usize {
    leading_kept_portable(words, thresholds)
}

#[inline(always)]
fn leading_kept_portable(words: &[u32], thresholds: &[u32]) -> usize {
    let n = words.len().min(thresholds.len());
    let (words, thresholds) = (&words[..n], &thresholds[..n]);
    let mut k = 0;
    while k + 8 <= n {
        let mut below = false;
        for j in 0..8 {
            below |= words[k + j] < thresholds[k + j];
        }
        if below {
            break;
        }
        k += 8;
    }
    while k < n && words[k] >= thresholds[k] {
        k += 1;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_kept_stops_at_the_first_word_below_its_threshold() {
        let thresholds = vec![10u32; 20];
        for first_below in [0, 1, 7, 8, 9, 15, 16, 19] {
            let mut words = vec![10u32; 20];
            words[first_below] = 9;
            assert_eq!(leading_kept(&words, &thresholds), first_below);
        }
        assert_eq!(leading_kept(&[10; 20], &thresholds), 20);
        // limited by the shorter slice
        assert_eq!(leading_kept(&[10; 5], &thresholds), 5);
        assert_eq!(leading_kept(&[], &thresholds), 0);
    }
}
