//! Statistics for paired attack outcomes: what a comparison may claim from K attacked images.
//!
//! Every variant of a comparison attacks the same K images, so the design is paired, and an
//! inversion either converges or gets stuck, so per-image scores are bimodal: a mean with a
//! Student-t interval describes neither mode. These are the statistics that fit — each tested
//! against SciPy's or hand-computed values:
//!
//! * [`Spread`]: median and quartiles (linear interpolation between order statistics, NumPy's
//!   default), and the mean;
//! * [`bootstrap_mean_interval`]: a percentile-bootstrap confidence interval of the mean,
//!   resampled from a seeded ChaCha stream (the same seed gives the same interval);
//! * [`SuccessRate`]: the share of images reconstructed above a threshold, with Wilson's
//!   score interval;
//! * [`wilcoxon_signed_rank`]: the paired test of one variant against another — the median
//!   of the differences and the two-sided p-value of Wilcoxon's signed-rank test (zero
//!   differences dropped; exact distribution for up to 50 pairs without ties, otherwise the
//!   normal approximation with the tie correction, as SciPy's `wilcoxon` computes it);
//! * [`holm`]: Holm's step-down adjustment of the p-values of all rows of a table, so that
//!   "significant" holds for the table as a whole.

use rand::{Rng, SeedableRng};

/// Median, quartiles and mean of a sample.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spread {
    pub n: usize,
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub mean: f64,
}

impl Spread {
    /// The spread of the finite values of `values` (`None` if there are none).
    pub fn of(values: &[f64]) -> Option<Self> {
        let sorted = finite_sorted(values);
        if sorted.is_empty() {
            return None;
        }
        Some(Self {
            n: sorted.len(),
            median: quantile(&sorted, 0.5),
            q1: quantile(&sorted, 0.25),
            q3: quantile(&sorted, 0.75),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        })
    }
}

fn finite_sorted(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The `p`-quantile of sorted data, interpolating linearly between order statistics
/// (NumPy's default, Hyndman–Fan type 7).
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let h = (n - 1) as f64 * p.clamp(0.0, 1.0);
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        }
    }
}

/// A confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// Percentile-bootstrap interval at `level` (e.g. 0.95) of the mean of the finite `values`,
/// from `resamples` resamples drawn from the ChaCha stream of `seed`. `None` without values.
pub fn bootstrap_mean_interval(
    values: &[f64],
    level: f64,
    resamples: usize,
    seed: u64,
) -> Option<Interval> {
    let v = finite_sorted(values);
    if v.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = v.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| v[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    Some(Interval {
        lo: quantile(&means, tail),
        hi: quantile(&means, 1.0 - tail),
    })
}

/// The share of attacks that succeeded (score ≥ threshold) with Wilson's 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SuccessRate {
    pub successes: usize,
    pub n: usize,
    pub rate: f64,
    pub interval: Interval,
}

impl SuccessRate {
    /// Counts the finite `scores` at or above `threshold`; `None` without finite scores.
    pub fn of(scores: &[f64], threshold: f64) -> Option<Self> {
        let v = finite_sorted(scores);
        if v.is_empty() {
            return None;
        }
        let successes = v.iter().filter(|s| **s >= threshold).count();
        Some(Self {
            successes,
            n: v.len(),
            rate: successes as f64 / v.len() as f64,
            interval: wilson(successes, v.len(), 1.959_963_984_540_054),
        })
    }
}

/// Wilson's score interval for `k` successes in `n` trials at normal quantile `z`.
pub fn wilson(k: usize, n: usize, z: f64) -> Interval {
    if n == 0 {
        return Interval { lo: 0.0, hi: 1.0 };
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Interval {
        lo: (centre - half).max(0.0),
        hi: (centre + half).min(1.0),
    }
}

/// Wilcoxon's signed-rank test of paired samples.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Wilcoxon {
    /// Pairs with a nonzero difference (the test's n).
    pub n: usize,
    /// Median of the differences x − y over all finite pairs, zeros included.
    pub median_difference: f64,
    /// min(W₊, W₋): the smaller sum of the ranks of |x − y|.
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Whether the p-value comes from the exact distribution (else the normal approximation).
    pub exact: bool,
}

/// Pairs up to which (without ties) the exact distribution is used, as SciPy does.
const EXACT_MAX_PAIRS: usize = 50;

/// Wilcoxon's signed-rank test of `x` against `y` (same length, pairs by position; a pair
/// with a non-finite value is left out). `None` when no pair is left.
pub fn wilcoxon_signed_rank(x: &[f64], y: &[f64]) -> Option<Wilcoxon> {
    let all: Vec<f64> = x
        .iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| a - b)
        .collect();
    if all.is_empty() {
        return None;
    }
    let median_difference = quantile(&finite_sorted(&all), 0.5);
    let d: Vec<f64> = all.into_iter().filter(|d| *d != 0.0).collect();
    let n = d.len();
    if n == 0 {
        return Some(Wilcoxon {
            n,
            median_difference,
            statistic: 0.0,
            p_value: 1.0,
            exact: true,
        });
    }
    let (ranks, tie_sizes) = average_ranks(&d.iter().map(|v| v.abs()).collect::<Vec<_>>());
    let w_plus: f64 = d
        .iter()
        .zip(&ranks)
        .filter(|(v, _)| **v > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total = (n * (n + 1)) as f64 / 2.0;
    let statistic = w_plus.min(total - w_plus);
    let ties = tie_sizes.iter().any(|&t| t > 1);
    let (p_value, exact) = if n <= EXACT_MAX_PAIRS && !ties {
        (exact_two_sided(n, statistic), true)
    } else {
        let mean = total / 2.0;
        let tie_term: f64 = tie_sizes
            .iter()
            .map(|&t| (t * t * t - t) as f64)
            .sum::<f64>()
            / 48.0;
        let var = (n * (n + 1) * (2 * n + 1)) as f64 / 24.0 - tie_term;
        let z = (statistic - mean) / var.sqrt();
        (
            (libm::erfc(z.abs() / std::f64::consts::SQRT_2)).min(1.0),
            false,
        )
    };
    Some(Wilcoxon {
        n,
        median_difference,
        statistic,
        p_value,
        exact,
    })
}

/// Ranks 1…n of `values` (ties get their average rank) and the sizes of the tie groups.
fn average_ranks(values: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut groups = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        groups.push(j - i + 1);
        i = j + 1;
    }
    (ranks, groups)
}

/// 2·P(W ≤ t) under the null hypothesis, W the signed-rank sum of n untied pairs (each of the
/// 2ⁿ sign patterns equally likely), capped at 1.
fn exact_two_sided(n: usize, t: f64) -> f64 {
    let max = n * (n + 1) / 2;
    // ways[s]: sign patterns whose positive ranks sum to s
    let mut ways = vec![0f64; max + 1];
    ways[0] = 1.0;
    for rank in 1..=n {
        for s in (rank..=max).rev() {
            ways[s] += ways[s - rank];
        }
    }
    let t = t.floor() as usize;
    let below: f64 = ways[..=t.min(max)].iter().sum();
    (2.0 * below / 2f64.powi(n as i32)).min(1.0)
}

/// Holm's step-down adjustment of `p_values` (each compared at the family-wise level by
/// comparing the adjusted value); NaN stays NaN and counts as no test.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p_values.len())
        .filter(|&i| p_values[i].is_finite())
        .collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let m = order.len();
    let mut adjusted = vec![f64::NAN; p_values.len()];
    let mut running = 0.0f64;
    for (k, &i) in order.iter().enumerate() {
        running = running.max(((m - k) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn quantiles_match_numpy() {
        // numpy.percentile([18.7, 21.7, 47.2, 51.6], [25, 50, 75]) = 20.95, 34.45, 48.3
        let s = Spread::of(&[47.2, 21.7, 51.6, 18.7]).unwrap();
        assert!(close(s.q1, 20.95, 1e-12) && close(s.median, 34.45, 1e-12));
        assert!(close(s.q3, 48.3, 1e-12) && close(s.mean, 34.8, 1e-12));
        assert_eq!(Spread::of(&[f64::NAN]), None);
        assert_eq!(Spread::of(&[3.0, f64::INFINITY]).unwrap().n, 1);
    }

    #[test]
    #[allow(clippy::approx_constant)] // 3.14 is a measurement of SciPy's example, not π
    fn wilcoxon_matches_scipy() {
        // scipy.stats.wilcoxon(x, y, method="exact"): statistic 3.0, p 0.625
        let w = wilcoxon_signed_rank(&[47.2, 21.7, 51.6, 18.7], &[37.4, 36.6, 30.2, 18.3]).unwrap();
        assert_eq!((w.n, w.statistic, w.exact), (4, 3.0, true));
        assert!(close(w.p_value, 0.625, 1e-15));
        // median of the differences 9.8, −14.9, 21.4, 0.4
        assert!(close(w.median_difference, 5.1, 1e-12));
        // scipy's documented example (exact): statistic 5.0, p 0.0390625
        let a = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30];
        let b = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29];
        let w = wilcoxon_signed_rank(&a, &b).unwrap();
        assert_eq!(w.statistic, 5.0);
        assert!(close(w.p_value, 0.0390625, 1e-15));
        // zeros dropped, ties: normal approximation (scipy: zero_method="wilcox",
        // correction=False) statistic 17.0, p 0.15383923144709824
        let c = [1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.];
        let e = [1., 1., 5., 2., 2., 8., 3., 3., 2., 20., 4., 4.];
        let w = wilcoxon_signed_rank(&c, &e).unwrap();
        assert_eq!((w.n, w.statistic, w.exact), (11, 17.0, false));
        assert!(
            close(w.p_value, 0.153_839_231_447_098_24, 1e-12),
            "{}",
            w.p_value
        );
        // no difference at all
        let w = wilcoxon_signed_rank(&[1.0, 2.0], &[1.0, 2.0]).unwrap();
        assert_eq!((w.n, w.p_value), (0, 1.0));
        assert_eq!(wilcoxon_signed_rank(&[f64::NAN], &[1.0]), None);
    }

    #[test]
    fn exact_distribution_of_thirty_pairs_matches_scipy() {
        // numpy.random.default_rng(1): u ~ N(0, 1), v = u + N(0.3, 1), 30 pairs;
        // scipy.stats.wilcoxon(u, v, method="exact"): statistic 162.0, p 0.15188691951334476
        let u = [
            0.345584, 0.821618, 0.330437, -1.303157, 0.905356, 0.446375, -0.536953, 0.581118,
            0.364572, 0.294132, 0.028422, 0.546713, -0.736454, -0.16291, -0.482119, 0.598846,
            0.039722, -0.292457, -0.781908, -0.257192, 0.008142, -0.275603, 1.294064, 1.006724,
            -2.711162, -1.889013, -0.174772, -0.42219, 0.213643, 0.217322,
        ];
        let v = [
            2.763423, 0.009597, 0.252832, 1.039614, 1.852059, 1.409438, -0.75096, -0.766957,
            0.832037, 0.703147, -0.89893, 0.163486, -0.508498, -0.807662, -0.280389, 0.994329,
            0.375308, -0.498748, 0.11184, 0.933975, 0.62899, -0.793833, 2.325716, 0.805284,
            -1.532002, -2.660801, 1.039695, -0.142254, -0.735106, 0.203422,
        ];
        let w = wilcoxon_signed_rank(&u, &v).unwrap();
        assert_eq!((w.statistic, w.exact), (162.0, true));
        assert!(
            close(w.p_value, 0.151_886_919_513_344_76, 1e-12),
            "{}",
            w.p_value
        );
    }

    #[test]
    fn holm_by_hand() {
        // sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running
        // maximum 0.02, 0.03, 0.06, 0.06
        let adjusted = holm(&[0.01, 0.04, 0.03, 0.005]);
        let want = [0.03, 0.06, 0.06, 0.02];
        for (a, w) in adjusted.iter().zip(want) {
            assert!(close(*a, w, 1e-15), "{adjusted:?}");
        }
        assert_eq!(holm(&[0.6, 0.9])[1], 1.0);
        assert!(holm(&[f64::NAN, 0.2])[0].is_nan());
        assert_eq!(holm(&[f64::NAN, 0.2])[1], 0.2);
    }

    #[test]
    fn wilson_interval_by_hand() {
        // k = 3 of n = 4, z = 1.96: centre (0.75 + 0.4802) / 1.9604 = 0.62753…,
        // half 1.96 / 1.9604 · √(0.046875 + 0.060025) = 0.32686…
        let i = wilson(3, 4, 1.96);
        assert!(
            close(i.lo, 0.300_636, 1e-5) && close(i.hi, 0.954_414, 1e-5),
            "{i:?}"
        );
        let r = SuccessRate::of(&[0.9, 0.2, 0.8, f64::NAN], 0.5).unwrap();
        assert_eq!((r.successes, r.n), (2, 3));
        assert_eq!(wilson(0, 0, 1.96), Interval { lo: 0.0, hi: 1.0 });
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let v = [47.2, 21.7, 51.6, 18.7, 30.0, 33.3];
        let a = bootstrap_mean_interval(&v, 0.95, 2000, 7).unwrap();
        assert_eq!(a, bootstrap_mean_interval(&v, 0.95, 2000, 7).unwrap());
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            a.lo < mean && mean < a.hi && a.lo >= 18.7 && a.hi <= 51.6,
            "{a:?}"
        );
        // a constant sample has a zero-width interval
        let c = bootstrap_mean_interval(&[2.0; 5], 0.95, 100, 1).unwrap();
        assert_eq!((c.lo, c.hi), (2.0, 2.0));
    }
}
