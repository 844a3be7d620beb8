//! Norm bounding: every update is scaled down to L2 norm at most C before the rule (Sun et al.
//! 2019, "Can You Really Backdoor Federated Learning?").
//!
//! With the plain mean, one client's share of the step is then at most wₖ·C / Σ w, whatever it
//! sends. One update of 1e38 everywhere moves each coordinate by at most C·wₖ / Σ w, and a
//! sign-flipped ×100 gradient counts as one of norm C. It costs honest clients whose updates
//! are longer than C part of their step, so C should be near the honest norms (FedSGD: the norm
//! of a batch's gradient). The norm covers the whole update, every tensor a client sends.

/// The L2 norm of `values`, without overflow for any finite values (scaled by the largest
/// magnitude first).
pub fn norm(values: &[f64]) -> f64 {
    let largest = values.iter().fold(0f64, |m, v| m.max(v.abs()));
    if largest == 0.0 || !largest.is_finite() {
        return largest;
    }
    let scaled: f64 = values.iter().map(|v| (v / largest) * (v / largest)).sum();
    largest * scaled.sqrt()
}

/// The factor that brings an update of norm `norm` to at most `bound`: 1 when it is within.
pub fn factor(norm: f64, bound: f64) -> f64 {
    if norm > bound {
        bound / norm
    } else {
        1.0
    }
}

/// Scales `values` to L2 norm at most `bound`; returns the factor applied (1: unchanged).
pub fn clip(values: &mut [f64], bound: f64) -> f64 {
    let k = factor(norm(values), bound);
    if k < 1.0 {
        for v in values.iter_mut() {
            *v *= k;
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_long_updates_and_leaves_short_ones() {
        let mut long = vec![3.0, 4.0];
        assert_eq!(norm(&long), 5.0);
        assert_eq!(clip(&mut long, 1.0), 0.2);
        assert_eq!(long, vec![0.6000000000000001, 0.8]);
        assert!((norm(&long) - 1.0).abs() < 1e-15);

        let mut short = vec![0.3, -0.4];
        assert_eq!(clip(&mut short, 1.0), 1.0);
        assert_eq!(short, vec![0.3, -0.4]);
        let mut zero = vec![0.0; 3];
        assert_eq!(clip(&mut zero, 1.0), 1.0);
    }

    #[test]
    fn the_norm_of_huge_values_does_not_overflow() {
        // 10⁴ values of 1e300: ‖·‖ = 1e302 (the naive sum of squares is inf)
        let mut huge = vec![1e300; 10_000];
        let n = norm(&huge);
        assert!((n / 1e302 - 1.0).abs() < 1e-12, "{n}");
        let k = clip(&mut huge, 2.0);
        assert!(k > 0.0);
        assert!((norm(&huge) - 2.0).abs() < 1e-12);
        // the 1e38 attacker, as f32 values
        let mut attack = vec![f64::from(1e38f32); 12_730];
        clip(&mut attack, 5.0);
        assert!((norm(&attack) - 5.0).abs() < 1e-12);
    }
}
