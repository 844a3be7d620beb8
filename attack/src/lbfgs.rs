//! A small limited-memory BFGS minimiser (Nocedal & Wright, Algorithm 7.4/7.5), the optimiser
//! of Zhu et al.'s *Deep Leakage from Gradients* ([`dlg`](crate::dlg)).
//!
//! The reference implementation calls `torch.optim.LBFGS(lr=1)`: history 100, no line search
//! (every step has length `lr`, the first scaled by min(1, 1/‖g‖₁)), up to 20 inner
//! iterations per call. A fixed unit step on a gradient-matching objective computed in f32
//! can overshoot and climb; here every step is instead accepted by a **backtracking (Armijo)
//! line search** — start at `lr` (the first iteration at lr·min(1, 1/‖g‖₁) as in PyTorch),
//! halve until f(x + t·d) ≤ f(x) + 10⁻⁴·t·∇f·d — so the objective never rises. Curvature
//! pairs with yᵀs ≤ 10⁻¹⁰ are not stored (PyTorch's rule), which keeps the inverse-Hessian
//! estimate positive definite without the strong-Wolfe curvature test. When no step along the
//! L-BFGS direction decreases the objective, the history is dropped and steepest descent is
//! tried once before giving up.
//!
//! Stopping rules are PyTorch's: max |∇f| ≤ `tolerance_grad`, or a change of the objective or
//! of every coordinate below `tolerance_change`, or `max_iterations` iterations. Vectors are
//! plain `f64` slices: the objective may compute in any precision on any device.

use crate::error::{AttackError, Result};

/// Settings of [`minimize`] (defaults: PyTorch's `LBFGS(lr=1)` where it has them).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LbfgsConfig {
    /// Number of curvature pairs (s, y) remembered.
    pub history: usize,
    /// Iterations (directions, each with its line search).
    pub max_iterations: usize,
    /// First trial step length of every line search.
    pub lr: f64,
    /// Stop when max |∇f| is at most this.
    pub tolerance_grad: f64,
    /// Stop when the objective, or every coordinate, changes by less than this in a step.
    pub tolerance_change: f64,
    /// Halvings of the step before a line search gives up.
    pub max_backtracks: usize,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self {
            history: 100,
            max_iterations: 300,
            lr: 1.0,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            max_backtracks: 30,
        }
    }
}

/// Why [`minimize`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// `max_iterations` were done.
    Iterations,
    /// The gradient vanished (`tolerance_grad`).
    Gradient,
    /// The objective or the iterate stopped changing (`tolerance_change`).
    Change,
    /// Not even a steepest-descent step decreased the objective (numerical floor).
    LineSearch,
}

/// The minimiser's result.
#[derive(Clone, Debug)]
pub struct Minimum {
    /// The best point found (the last iterate: the objective never rises).
    pub x: Vec<f64>,
    /// The objective there.
    pub value: f64,
    /// Iterations done.
    pub iterations: usize,
    /// Objective evaluations, the first included.
    pub evaluations: usize,
    pub stop: Stop,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// One stored curvature pair.
struct Pair {
    s: Vec<f64>,
    y: Vec<f64>,
    rho: f64,
}

/// −H·g by the two-loop recursion, with H₀ = (sᵀy / yᵀy)·I from the newest pair.
fn direction(history: &[Pair], g: &[f64]) -> Vec<f64> {
    let mut q = g.to_vec();
    let mut alpha = vec![0.0; history.len()];
    for (k, p) in history.iter().enumerate().rev() {
        alpha[k] = p.rho * dot(&p.s, &q);
        q.iter_mut().zip(&p.y).for_each(|(q, y)| *q -= alpha[k] * y);
    }
    if let Some(p) = history.last() {
        let gamma = dot(&p.s, &p.y) / dot(&p.y, &p.y);
        q.iter_mut().for_each(|v| *v *= gamma);
    }
    for (k, p) in history.iter().enumerate() {
        let beta = p.rho * dot(&p.y, &q);
        q.iter_mut()
            .zip(&p.s)
            .for_each(|(r, s)| *r += s * (alpha[k] - beta));
    }
    q.iter_mut().for_each(|v| *v = -*v);
    q
}

/// Minimises `f` from `x0`. `f(x)` returns the objective and its gradient;
/// `on_iteration(iteration, value, step)` is called after every iteration with the objective
/// *before* it (so the first call reports f(x0)) and the accepted step length.
///
/// Errors: a non-finite objective or gradient at `x0` ([`AttackError::Diverged`]), an
/// invalid setting, or whatever `f` returns. Non-finite values at trial points only shorten the
/// step.
pub fn minimize(
    x0: Vec<f64>,
    config: &LbfgsConfig,
    mut f: impl FnMut(&[f64]) -> Result<(f64, Vec<f64>)>,
    mut on_iteration: impl FnMut(usize, f64, f64),
) -> Result<Minimum> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if config.history == 0 || config.max_iterations == 0 || !positive(config.lr) {
        return Err(AttackError::BadOption(
            "L-BFGS needs history ≥ 1, iterations ≥ 1 and a positive step".into(),
        ));
    }
    let mut x = x0;
    let (mut value, mut g) = f(&x)?;
    let mut evaluations = 1;
    let finite = |v: f64, g: &[f64]| v.is_finite() && g.iter().all(|x| x.is_finite());
    if !finite(value, &g) || g.len() != x.len() {
        return Err(AttackError::Diverged {
            trial: 0,
            iteration: 0,
        });
    }
    let mut history: Vec<Pair> = Vec::new();
    let done = |stop, x, value, iterations, evaluations| {
        Ok(Minimum {
            x,
            value,
            iterations,
            evaluations,
            stop,
        })
    };
    if max_abs(&g) <= config.tolerance_grad {
        return done(Stop::Gradient, x, value, 0, evaluations);
    }
    for iteration in 0..config.max_iterations {
        // a direction and a step that decreases the objective, or none
        let mut accepted = None;
        for attempt in 0..2 {
            if attempt == 1 {
                if history.is_empty() {
                    break;
                }
                history.clear();
            }
            let mut d = direction(&history, &g);
            let mut slope = dot(&g, &d);
            if slope.is_nan() || slope >= 0.0 {
                history.clear();
                d = g.iter().map(|v| -v).collect();
                slope = -dot(&g, &g);
            }
            let mut t = if history.is_empty() {
                let l1: f64 = g.iter().map(|v| v.abs()).sum();
                config.lr * (1.0f64 / l1).min(1.0)
            } else {
                config.lr
            };
            for _ in 0..=config.max_backtracks {
                let trial: Vec<f64> = x.iter().zip(&d).map(|(x, d)| x + t * d).collect();
                let (v, tg) = f(&trial)?;
                evaluations += 1;
                if finite(v, &tg) && tg.len() == x.len() && v <= value + 1e-4 * t * slope {
                    accepted = Some((trial, v, tg, t, d, history.is_empty()));
                    break;
                }
                t *= 0.5;
            }
            if accepted.is_some() {
                break;
            }
        }
        let Some((next, next_value, next_g, t, d, fresh)) = accepted else {
            return done(Stop::LineSearch, x, value, iteration, evaluations);
        };
        on_iteration(iteration, value, t);
        let s: Vec<f64> = d.iter().map(|d| t * d).collect();
        let y: Vec<f64> = next_g.iter().zip(&g).map(|(a, b)| a - b).collect();
        let ys = dot(&y, &s);
        if ys > 1e-10 {
            if history.len() == config.history {
                history.remove(0);
            }
            history.push(Pair {
                s,
                y,
                rho: 1.0 / ys,
            });
        }
        let change = (value - next_value).abs();
        let moved = max_abs(&d) * t;
        x = next;
        value = next_value;
        g = next_g;
        if max_abs(&g) <= config.tolerance_grad {
            return done(Stop::Gradient, x, value, iteration + 1, evaluations);
        }
        if change < config.tolerance_change || moved <= config.tolerance_change {
            if fresh {
                return done(Stop::Change, x, value, iteration + 1, evaluations);
            }
            // the quasi-Newton model has gone stale (a kink of a ReLU network's objective, or
            // rounding): forget it and let steepest descent decide whether to stop
            history.clear();
        }
    }
    done(
        Stop::Iterations,
        x,
        value,
        config.max_iterations,
        evaluations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(iterations: usize) -> LbfgsConfig {
        LbfgsConfig {
            max_iterations: iterations,
            tolerance_change: 1e-15,
            tolerance_grad: 1e-10,
            ..Default::default()
        }
    }

    #[test]
    fn quadratic_reaches_the_solution_of_its_linear_system() {
        // f(x) = ½ xᵀAx − bᵀx with A = [[4, 1, 0], [1, 3, 1], [0, 1, 2]], b = (1, 2, 3):
        // the minimum solves Ax = b: x* = (2/9, 1/9, 13/9), checked by substitution below
        let a = [[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]];
        let b = [1.0, 2.0, 3.0];
        let want = [2.0 / 9.0, 1.0 / 9.0, 13.0 / 9.0];
        for (row, bi) in a.iter().zip(&b) {
            assert!((dot(row, &want) - bi).abs() < 1e-14, "x* solves Ax = b");
        }
        let mut calls = 0;
        let m = minimize(
            vec![5.0, -3.0, 8.0],
            &config(100),
            |x| {
                calls += 1;
                let ax: Vec<f64> = a.iter().map(|r| dot(r, x)).collect();
                let value = 0.5 * dot(x, &ax) - dot(&b, x);
                Ok((value, ax.iter().zip(&b).map(|(ax, b)| ax - b).collect()))
            },
            |_, _, _| {},
        )
        .unwrap();
        for (got, want) in m.x.iter().zip(&want) {
            assert!((got - want).abs() < 1e-8, "{:?}", m.x);
        }
        // a 3-dimensional quadratic takes a handful of iterations, not hundreds
        assert!(m.iterations <= 20, "{} iterations", m.iterations);
        assert_eq!(m.evaluations, calls);
    }

    #[test]
    fn rosenbrock_reaches_one_one_and_never_climbs() {
        // f(x, y) = (1 − x)² + 100 (y − x²)², minimum 0 at (1, 1), from the classic (−1.2, 1)
        let mut values = Vec::new();
        let m = minimize(
            vec![-1.2, 1.0],
            &config(500),
            |v| {
                let (x, y) = (v[0], v[1]);
                let f = (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2);
                let gx = -2.0 * (1.0 - x) - 400.0 * x * (y - x * x);
                let gy = 200.0 * (y - x * x);
                Ok((f, vec![gx, gy]))
            },
            |_, value, _| values.push(value),
        )
        .unwrap();
        assert!(
            (m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6,
            "{:?} after {} iterations ({:?})",
            m.x,
            m.iterations,
            m.stop
        );
        assert!(m.value < 1e-12);
        assert!(values.windows(2).all(|w| w[1] <= w[0]), "monotone");
        assert!((values[0] - 24.2).abs() < 1e-12, "f(−1.2, 1) = 24.2");
    }

    #[test]
    fn a_long_quadratic_with_short_history_still_converges() {
        // 50 dimensions, diagonal curvatures 1 … 50, history 5
        let n = 50;
        let m = minimize(
            vec![1.0; n],
            &LbfgsConfig {
                history: 5,
                ..config(500)
            },
            |x| {
                let g: Vec<f64> = x
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i + 1) as f64 * v)
                    .collect();
                Ok((0.5 * dot(x, &g), g))
            },
            |_, _, _| {},
        )
        .unwrap();
        assert!(max_abs(&m.x) < 1e-6, "{:?}", m.stop);
    }

    #[test]
    fn bad_settings_and_a_non_finite_start_are_errors() {
        let quad = |x: &[f64]| Ok((dot(x, x), x.iter().map(|v| 2.0 * v).collect()));
        for bad in [
            LbfgsConfig {
                history: 0,
                ..Default::default()
            },
            LbfgsConfig {
                max_iterations: 0,
                ..Default::default()
            },
            LbfgsConfig {
                lr: f64::NAN,
                ..Default::default()
            },
        ] {
            assert!(minimize(vec![1.0], &bad, quad, |_, _, _| {}).is_err());
        }
        let nan = |_: &[f64]| Ok((f64::NAN, vec![0.0]));
        assert!(matches!(
            minimize(vec![1.0], &LbfgsConfig::default(), nan, |_, _, _| {}),
            Err(AttackError::Diverged { .. })
        ));
        // already at the minimum: nothing to do
        let m = minimize(vec![0.0], &LbfgsConfig::default(), quad, |_, _, _| {}).unwrap();
        assert_eq!((m.iterations, m.stop), (0, Stop::Gradient));
    }
}
