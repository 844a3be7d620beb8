//! Sums over long runs of values with independent accumulators.
//!
//! A loop `s += term(i)` is one chain of dependent additions: floating-point addition is not
//! associative, so the compiler may not split it, and every addition waits for the previous
//! one (four cycles each here) — BatchNorm's per-channel sums ran at a quarter of a value per
//! cycle and were a fifth of a ResNet20 attack iteration. Here each sum keeps `LANES`
//! accumulators, lane `l` taking every `LANES`-th term, combined at the end in a fixed tree:
//! the additions vectorise, and the result is the same for any machine state and thread count
//! (it differs from the serial sum only in rounding).

use super::gemm::Element;

/// Accumulators per sum: one 8-lane f32 vector, two f64 vectors.
const LANES: usize = 8;

/// `K` sums over the positions of `S` slices: at each position `term` maps the slices' values
/// there to `K` terms. The slices must have equal lengths (the shortest one's is used).
pub(crate) fn lane_sums<T: Element, const S: usize, const K: usize>(
    slices: [&[T]; S],
    term: impl Fn([T; S]) -> [T; K],
) -> [T; K] {
    let len = slices.iter().map(|s| s.len()).min().unwrap_or(0);
    let mut acc = [[T::ZERO; LANES]; K];
    let mut start = 0;
    while start + LANES <= len {
        let chunks: [[T; LANES]; S] = std::array::from_fn(|s| {
            let mut chunk = [T::ZERO; LANES];
            chunk.copy_from_slice(&slices[s][start..start + LANES]);
            chunk
        });
        for lane in 0..LANES {
            let terms = term(std::array::from_fn(|s| chunks[s][lane]));
            for (a, t) in acc.iter_mut().zip(terms) {
                a[lane] += t;
            }
        }
        start += LANES;
    }
    for (lane, position) in (start..len).enumerate() {
        let terms = term(std::array::from_fn(|s| slices[s][position]));
        for (a, t) in acc.iter_mut().zip(terms) {
            a[lane] += t;
        }
    }
    acc.map(|a| ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])))
}

/// `Σ v` over a slice.
pub(crate) fn sum<T: Element>(v: &[T]) -> T {
    lane_sums([v], |[x]| [x])[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Integer-valued terms (exact in f64 whatever the order) against the serial sums, for
    /// lengths around the lane count and with remainders.
    #[test]
    fn sums_equal_the_serial_sums() {
        for len in [0, 1, 7, 8, 9, 16, 17, 100, 1027] {
            let a: Vec<f64> = (0..len).map(|i| (i % 13) as f64 - 6.0).collect();
            let b: Vec<f64> = (0..len).map(|i| (i % 7) as f64).collect();
            let [s, sab, sbb] = lane_sums([&a, &b], |[x, y]| [x, x * y, y * y]);
            assert_eq!(s, a.iter().sum::<f64>(), "{len}");
            assert_eq!(
                sab,
                a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>(),
                "{len}"
            );
            assert_eq!(sbb, b.iter().map(|y| y * y).sum::<f64>(), "{len}");
            assert_eq!(sum(&a), s);
        }
    }

    /// The lanes make the sum more accurate, not less: 0.1 added 10⁶ times in f32, against
    /// the serial sum.
    #[test]
    fn single_precision_sums_are_closer_than_the_serial_sum() {
        let v = vec![0.1f32; 1_000_000];
        let exact = 0.1f32 as f64 * 1e6;
        let serial = v.iter().fold(0.0f32, |a, &x| a + x) as f64;
        let lanes = sum(&v) as f64;
        assert!((lanes - exact).abs() < (serial - exact).abs() / 4.0);
    }
}
