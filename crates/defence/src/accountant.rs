//! A Rényi-DP accountant of the sampled Gaussian mechanism.
//!
//! A `dp:` defence makes each round's update a sampled Gaussian mechanism: an example takes
//! part with probability `q`, its contribution is clipped to C and Gaussian noise of standard
//! deviation σC is added. This module says what (ε, δ)-differential privacy `steps` such rounds
//! give, so that a simulated attack's success can be set against the formal guarantee of the
//! same setting.
//!
//! The computation is the one of Mironov, Talwar and Zhang 2019, "Rényi Differential Privacy
//! of the Sampled Gaussian Mechanism" (arXiv:1908.10530), as TensorFlow Privacy's
//! `rdp_accountant.compute_rdp` does it: the RDP of order α of one step is log(A_α)/(α − 1),
//! with A_α a finite binomial sum for integer α and a converging series of two erfc-weighted
//! sums for fractional α, everything in log space (log-add-exp, log binomials via lgamma).
//! RDP composes additively over steps; the conversion to (ε, δ) takes the best order, either
//! with the classic bound ε = rdp − ln δ/(α − 1) (Mironov 2017, TF Privacy's original
//! `get_privacy_spent`) or the improved one of Balle et al. 2020 / Canonne, Kamath, Steinke
//! 2020 (what `dp_accounting` uses today). [`epsilon`] uses the classic one.

/// What is wrong with an accounting query.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AccountantError {
    #[error("the sampling rate q must be in [0, 1], got {0}")]
    SamplingRate(f64),
    #[error("the noise multiplier sigma must be a number ≥ 0, got {0}")]
    Sigma(f64),
    #[error("delta must be in (0, 1), got {0}")]
    Delta(f64),
    #[error("RDP orders must be numbers > 1, got {0}")]
    Order(f64),
    #[error("no RDP orders")]
    NoOrders,
    #[error("{orders} orders but {rdp} RDP values")]
    Lengths { orders: usize, rdp: usize },
    #[error("RDP values must be numbers ≥ 0, got {0}")]
    Rdp(f64),
    #[error("the series of order {0} went negative (numerical failure)")]
    Numerical(f64),
}

pub type Result<T, E = AccountantError> = std::result::Result<T, E>;

/// How RDP is converted to (ε, δ)-DP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Conversion {
    /// ε = rdp − ln δ / (α − 1) (Mironov 2017, Proposition 3; TF Privacy up to 2020).
    #[default]
    Classic,
    /// ε = rdp + ln(1 − 1/α) − ln(δ α)/(α − 1) (Balle et al. 2020, Theorem 21; what
    /// `dp_accounting` and current TF Privacy use); 0 when δ² + expm1(−rdp) ≥ 0, ∞ for α ≤ 1.01.
    Improved,
}

/// The standard orders: 1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 5..63, 128, 256, 512 (TF
/// Privacy's `compute_dp_sgd_privacy`).
pub fn default_orders() -> Vec<f64> {
    let mut orders = vec![1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5];
    orders.extend((5..64).map(f64::from));
    orders.extend([128., 256., 512.]);
    orders
}

/// The orders of TF Privacy's MNIST tutorial and of Opacus: 1.1, 1.2, …, 10.9, 12..63.
pub fn tutorial_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((12..64).map(f64::from));
    orders
}

/// (ε, best order) of `steps` steps of the sampled Gaussian mechanism with sampling rate `q`
/// and noise multiplier `sigma` at `delta`, over [`default_orders`] with the classic conversion.
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> Result<(f64, f64)> {
    epsilon_with(
        q,
        sigma,
        steps,
        delta,
        &default_orders(),
        Conversion::Classic,
    )
}

/// [`epsilon`] over chosen orders and conversion.
pub fn epsilon_with(
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    orders: &[f64],
    conversion: Conversion,
) -> Result<(f64, f64)> {
    let rdp = compute_rdp(q, sigma, steps, orders)?;
    privacy_spent(orders, &rdp, delta, conversion)
}

/// The RDP at each of `orders` of `steps` steps of the sampled Gaussian mechanism (TF
/// Privacy's `compute_rdp`). Compose mechanisms by adding their RDP vectors.
pub fn compute_rdp(q: f64, sigma: f64, steps: u64, orders: &[f64]) -> Result<Vec<f64>> {
    if !(0.0..=1.0).contains(&q) {
        return Err(AccountantError::SamplingRate(q));
    }
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(AccountantError::Sigma(sigma));
    }
    if orders.is_empty() {
        return Err(AccountantError::NoOrders);
    }
    orders
        .iter()
        .map(|&alpha| {
            if alpha.is_nan() || alpha <= 1.0 {
                return Err(AccountantError::Order(alpha));
            }
            let one = rdp_of_order(q, sigma, alpha)?;
            // 0 · ∞ (no steps of a non-private mechanism) is no privacy loss.
            Ok(if steps == 0 { 0.0 } else { one * steps as f64 })
        })
        .collect()
}

/// The RDP of order `alpha` of one step.
fn rdp_of_order(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    if q == 0.0 {
        return Ok(0.0);
    }
    if sigma == 0.0 || alpha.is_infinite() {
        return Ok(f64::INFINITY);
    }
    if q == 1.0 {
        return Ok(alpha / (2.0 * sigma * sigma));
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha)
    } else {
        log_a_frac(q, sigma, alpha)?
    };
    Ok(log_a / (alpha - 1.0))
}

/// ln(e^x + e^y).
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// ln(e^x − e^y), x ≥ y.
fn log_sub(x: f64, y: f64, alpha: f64) -> Result<f64> {
    if x < y {
        return Err(AccountantError::Numerical(alpha));
    }
    if y == f64::NEG_INFINITY {
        return Ok(x);
    }
    if x == y {
        return Ok(f64::NEG_INFINITY);
    }
    let d = (x - y).exp_m1();
    Ok(if d.is_finite() { d.ln() + y } else { x })
}

/// ln Γ(x) and the sign of Γ(x).
fn lgamma(x: f64) -> (f64, f64) {
    let (value, sign) = libm::lgamma_r(x);
    (value, if sign < 0 { -1.0 } else { 1.0 })
}

/// ln |binom(alpha, k)| and its sign, for real alpha > 0 and integer k ≥ 0.
fn log_binomial(alpha: f64, k: f64) -> (f64, f64) {
    let (top, _) = lgamma(alpha + 1.0);
    let (k_fact, _) = lgamma(k + 1.0);
    let rest = alpha - k + 1.0;
    if rest <= 0.0 && rest.fract() == 0.0 {
        // A pole of Γ: the binomial coefficient is 0 (k > alpha for integer alpha).
        return (f64::NEG_INFINITY, 1.0);
    }
    let (bottom, sign) = lgamma(rest);
    (top - k_fact - bottom, sign)
}

/// ln erfc(x), accurate where erfc underflows.
fn log_erfc(x: f64) -> f64 {
    let r = libm::erfc(x);
    if r > 1e-300 {
        r.ln()
    } else {
        // The asymptotic expansion of erfc (Abramowitz & Stegun 7.1.23), as TF Privacy does.
        -std::f64::consts::PI.ln() / 2.0 - x.ln() - x * x - 0.5 * x.powi(-2) + 0.625 * x.powi(-4)
            - 37.0 / 24.0 * x.powi(-6)
            + 353.0 / 64.0 * x.powi(-8)
    }
}

/// ln A_α for integer α: ln Σ_i binom(α, i) q^i (1−q)^(α−i) exp((i² − i)/(2σ²)).
fn log_a_int(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (ln_q, ln_1q) = (q.ln(), (-q).ln_1p());
    let n = alpha as u64;
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=n {
        let i = i as f64;
        let (log_coef, _) = log_binomial(alpha, i);
        let s = log_coef + i * ln_q + (alpha - i) * ln_1q + (i * i - i) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    log_a
}

/// ln A_α for fractional α: the two series of Mironov, Talwar, Zhang 2019 (Section 3.3),
/// summed until their terms fall below e^−30.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (ln_q, ln_1q) = (q.ln(), (-q).ln_1p());
    let s2 = sigma * sigma;
    let z0 = s2 * (1.0 / q - 1.0).ln() + 0.5;
    let half = 0.5f64.ln();
    let root2_sigma = std::f64::consts::SQRT_2 * sigma;
    let mut i = 0.0f64;
    loop {
        let (log_coef, sign) = log_binomial(alpha, i);
        let j = alpha - i;
        let log_t0 = log_coef + i * ln_q + j * ln_1q;
        let log_t1 = log_coef + j * ln_q + i * ln_1q;
        let log_e0 = half + log_erfc((i - z0) / root2_sigma);
        let log_e1 = half + log_erfc((z0 - j) / root2_sigma);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * s2) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * s2) + log_e1;
        if sign > 0.0 {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0, alpha)?;
            log_a1 = log_sub(log_a1, log_s1, alpha)?;
        }
        i += 1.0;
        if log_s0.max(log_s1) < -30.0 {
            break;
        }
        if i > 1e6 {
            return Err(AccountantError::Numerical(alpha));
        }
    }
    Ok(log_add(log_a0, log_a1))
}

/// The best (ε, order) at `delta` of the RDP curve `rdp` over `orders` (TF Privacy's
/// `get_privacy_spent` / `dp_accounting`'s `compute_epsilon`).
pub fn privacy_spent(
    orders: &[f64],
    rdp: &[f64],
    delta: f64,
    conversion: Conversion,
) -> Result<(f64, f64)> {
    if orders.is_empty() {
        return Err(AccountantError::NoOrders);
    }
    if orders.len() != rdp.len() {
        return Err(AccountantError::Lengths {
            orders: orders.len(),
            rdp: rdp.len(),
        });
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(AccountantError::Delta(delta));
    }
    let mut best = (f64::INFINITY, orders[0]);
    for (&alpha, &r) in orders.iter().zip(rdp) {
        if alpha.is_nan() || alpha <= 1.0 {
            return Err(AccountantError::Order(alpha));
        }
        if r.is_nan() || r < 0.0 {
            return Err(AccountantError::Rdp(r));
        }
        let eps = match conversion {
            Conversion::Classic => r - delta.ln() / (alpha - 1.0),
            Conversion::Improved => {
                if delta * delta + (-r).exp_m1() >= 0.0 {
                    0.0
                } else if alpha > 1.01 {
                    r + (-1.0 / alpha).ln_1p() - (delta * alpha).ln() / (alpha - 1.0)
                } else {
                    f64::INFINITY
                }
            }
        };
        if eps < best.0 {
            best = (eps, alpha);
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs()
    }

    /// Steps of TF Privacy's MNIST tutorial: `epochs * (60000 // 256)`, q = 256/60000.
    fn tutorial(sigma: f64, epochs: u64) -> (f64, f64) {
        let q = 256.0 / 60000.0;
        epsilon_with(
            q,
            sigma,
            epochs * (60000 / 256),
            1e-5,
            &tutorial_orders(),
            Conversion::Classic,
        )
        .unwrap()
    }

    #[test]
    fn rdp_matches_tf_privacy_and_dp_accounting_test_values() {
        // tensorflow/privacy, tensorflow_privacy/privacy/analysis/rdp_accountant_test.py,
        // test_compute_rdp_scalar: compute_rdp(q=0.1, noise_multiplier=2, steps=10, orders=5)
        // = 0.07737 (to 5 places). Integer order.
        let rdp = compute_rdp(0.1, 2.0, 10, &[5.0]).unwrap()[0];
        eprintln!("rdp(0.1, 2, 10, α=5) = {rdp} vs 0.07737");
        assert!(close(rdp, 0.07737, 1e-4), "{rdp}");

        // google/differential-privacy, python/dp_accounting/rdp/rdp_privacy_accountant_test.py,
        // test_compute_rdp_poisson_sampled_gaussian (also tensorflow/privacy's
        // test_compute_rdp_sequence): q = 0.01, σ = 2.5, 50 steps, orders 1.5, 2.5, 5, 50, 100
        // → 6.5007e-04, 1.0854e-03, 2.1808e-03, 2.3846e-02, 1.6742e+02 (rtol 1e-4 there).
        // Fractional and integer orders, and the large-order regime where the RDP explodes.
        let orders = [1.5, 2.5, 5.0, 50.0, 100.0];
        let want = [6.5007e-04, 1.0854e-03, 2.1808e-03, 2.3846e-02, 1.6742e+02];
        let got = compute_rdp(0.01, 2.5, 50, &orders).unwrap();
        for ((o, g), w) in orders.iter().zip(&got).zip(want) {
            eprintln!("rdp(0.01, 2.5, 50, α={o}) = {g} vs {w}");
            assert!(close(*g, w, 1e-4), "order {o}: {g} vs {w}");
        }
    }

    #[test]
    fn epsilon_matches_the_tf_privacy_mnist_tutorial() {
        // tensorflow/privacy, tutorials/README.md ("Expected Output" and "Select Parameters",
        // ε at δ = 1e-5, from tutorials/mnist_dpsgd_tutorial.py's compute_epsilon: classic
        // get_privacy_spent over orders 1.1..10.9, 12..63, q = 256/60000, 234 steps an epoch):
        //   σ = 1.12, 60 epochs → 2.92;  σ = 0.6, 30 epochs → 9.74;  σ = 1.2, 10 epochs → 1.20;
        //   σ = 1.12, 1 epoch → 1.00;  σ = 1.12, 2 epochs → 1.04.
        for (sigma, epochs, want) in [
            (1.12, 60, 2.92),
            (0.6, 30, 9.74),
            (1.2, 10, 1.20),
            (1.12, 1, 1.00),
            (1.12, 2, 1.04),
        ] {
            let (eps, order) = tutorial(sigma, epochs);
            eprintln!("σ = {sigma}, {epochs} epochs: ε = {eps} (order {order}) vs {want}");
            assert!(
                close(eps, want, 0.01),
                "σ = {sigma}, {epochs} epochs: ε = {eps} (order {order}), published {want}"
            );
        }
    }

    #[test]
    fn composition_matches_tf_privacy_classic_conversion() {
        // tensorflow/privacy, tensorflow_privacy/privacy/analysis/rdp_accountant_test.py,
        // test_check_composition: 40000 steps of (q = 1e-4, σ = 0.4) then 100 steps of
        // (q = 0.1, σ = 2), δ = 1e-5, over its 21 orders: "the old RDP -> approx DP
        // conversion" gives ε = 8.509656 at order 2.5.
        let orders = [
            1.25, 1.5, 1.75, 2., 2.5, 3., 4., 5., 6., 7., 8., 10., 12., 14., 16., 20., 24., 28.,
            32., 64., 256.,
        ];
        let a = compute_rdp(1e-4, 0.4, 40000, &orders).unwrap();
        let b = compute_rdp(0.1, 2.0, 100, &orders).unwrap();
        let rdp: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let (eps, order) = privacy_spent(&orders, &rdp, 1e-5, Conversion::Classic).unwrap();
        eprintln!("composition: ε = {eps} (order {order}) vs 8.509656 (2.5)");
        assert!(close(eps, 8.509656, 1e-5), "{eps}");
        assert_eq!(order, 2.5);
        // The improved conversion is a tighter bound (the test's current assertion).
        let (better, _) = privacy_spent(&orders, &rdp, 1e-5, Conversion::Improved).unwrap();
        assert!(better <= 8.509656 && better < eps);
    }

    #[test]
    fn improved_conversion_matches_dp_accounting() {
        // google/differential-privacy, python/dp_accounting/rdp/rdp_privacy_accountant_test.py,
        // test_compute_epsilon_delta_pure_dp: constant RDP 1.1 over orders 2..32, δ = 1e-5
        // → ε = 1.32783806176 at order 32.
        let orders: Vec<f64> = (2..33).map(f64::from).collect();
        let rdp = vec![1.1; orders.len()];
        let (eps, order) = privacy_spent(&orders, &rdp, 1e-5, Conversion::Improved).unwrap();
        eprintln!("pure DP: ε = {eps} (order {order}) vs 1.32783806176 (32)");
        assert!(close(eps, 1.32783806176, 1e-9), "{eps}");
        assert_eq!(order, 32.0);
        // Same file, test_compute_epsilon_delta_gaussian: q = 1, σ = 4.530877117 over orders
        // 1.000, 1.001, …, 99.999 is exactly (1, 1e-6)-DP. (Order 1 is left out here: this
        // module refuses orders ≤ 1, and the improved conversion gives ε = ∞ for α ≤ 1.01.)
        let orders: Vec<f64> = (1001..100_000).map(|i| 0.001 * f64::from(i)).collect();
        let (eps, _) =
            epsilon_with(1.0, 4.530877117, 1, 1e-6, &orders, Conversion::Improved).unwrap();
        eprintln!("Gaussian: ε = {eps} vs 1");
        assert!(close(eps, 1.0, 1e-6), "{eps}");
    }

    #[test]
    fn properties() {
        // q = 1: the plain Gaussian mechanism, RDP α/(2σ²), for integer and fractional orders.
        let orders = default_orders();
        for sigma in [0.5, 1.0, 3.7] {
            let rdp = compute_rdp(1.0, sigma, 3, &orders).unwrap();
            for (a, r) in orders.iter().zip(rdp) {
                assert!(close(r, 3.0 * a / (2.0 * sigma * sigma), 1e-12));
            }
        }
        // The general series agree with the closed form as q → 1 and with each other across
        // integer and fractional orders (RDP is non-decreasing in α).
        let near = compute_rdp(0.999_999, 1.5, 1, &[3.0, 3.5]).unwrap();
        assert!(close(near[0], 3.0 / (2.0 * 2.25), 1e-4), "{near:?}");
        assert!(close(near[1], 3.5 / (2.0 * 2.25), 1e-4), "{near:?}");
        let curve = compute_rdp(0.05, 1.0, 1, &orders).unwrap();
        for w in curve.windows(2) {
            assert!(w[1] >= w[0] * (1.0 - 1e-9), "{curve:?}");
        }
        // ε decreases with σ, increases with steps and with q.
        let eps = |q: f64, s: f64, t: u64| epsilon(q, s, t, 1e-5).unwrap().0;
        let sigmas = [0.7, 0.9, 1.1, 1.5, 2.0, 4.0];
        for w in sigmas.windows(2) {
            assert!(eps(0.01, w[1], 1000) < eps(0.01, w[0], 1000));
        }
        let steps = [1, 10, 100, 1000, 10_000];
        for w in steps.windows(2) {
            assert!(eps(0.01, 1.1, w[1]) > eps(0.01, 1.1, w[0]));
        }
        assert!(eps(0.02, 1.1, 100) > eps(0.01, 1.1, 100));
        // Degenerate cases: no sampling, no noise, no steps.
        assert_eq!(compute_rdp(0.0, 1.0, 10, &[2.0]).unwrap(), vec![0.0]);
        assert_eq!(eps(0.01, 0.0, 10), f64::INFINITY);
        assert_eq!(compute_rdp(0.01, 0.0, 0, &[2.0]).unwrap(), vec![0.0]);
    }

    #[test]
    fn bad_queries_are_typed_errors() {
        assert_eq!(
            epsilon(1.5, 1.0, 1, 1e-5),
            Err(AccountantError::SamplingRate(1.5))
        );
        assert_eq!(
            epsilon(0.1, -1.0, 1, 1e-5),
            Err(AccountantError::Sigma(-1.0))
        );
        assert!(matches!(
            epsilon(0.1, f64::NAN, 1, 1e-5),
            Err(AccountantError::Sigma(_))
        ));
        assert_eq!(epsilon(0.1, 1.0, 1, 0.0), Err(AccountantError::Delta(0.0)));
        assert_eq!(epsilon(0.1, 1.0, 1, 1.0), Err(AccountantError::Delta(1.0)));
        assert_eq!(
            compute_rdp(0.1, 1.0, 1, &[1.0]),
            Err(AccountantError::Order(1.0))
        );
        assert_eq!(
            compute_rdp(0.1, 1.0, 1, &[]),
            Err(AccountantError::NoOrders)
        );
        assert_eq!(
            privacy_spent(&[2.0], &[1.0, 2.0], 1e-5, Conversion::Classic),
            Err(AccountantError::Lengths { orders: 1, rdp: 2 })
        );
    }
}
