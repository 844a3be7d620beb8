//! The three sums a cosine similarity of two tensors needs — ⟨g, t⟩, ‖g‖², ‖t‖² — as one op
//! reading both once, and its gradient as one op writing once.
//!
//! The attack's objective compares every parameter gradient with the observed one (ConvNet:
//! 2.9 M values). As candle ops that is a product, a square and three sums per tensor, and
//! their backward pass adds about ten more passes over the 2.9 M values (broadcasts, products,
//! and the accumulation of each node's gradient), all on one thread. [`dot_and_squares`] is a
//! single parallel pass; its gradient `u₀·t + 2u₁·g` (for `g`; `u₀·g + 2u₂·t` for `t`) is one
//! [`axpby`] pass. `axpby`'s own gradient is composed of candle ops: it is only needed by a
//! third derivative. Sums are accumulated per fixed-size chunk and the chunks added in order
//! in f64, so the result does not depend on the number of threads.

use super::backward::needs_gradient;
use super::cpu::buffer::par_build;
use super::cpu::{items_per_task, Scalar};
use super::custom_op::{apply, values, CpuKernel, Forward, Gradients, Input};
use super::dispatch::compute;
use candle_core::{bail, Result, Shape, Tensor};
use rayon::prelude::*;

/// `[⟨g, t⟩, ‖g‖², ‖t‖²]` (a `[3]` tensor) of two tensors of the same shape.
pub fn dot_and_squares(g: &Tensor, t: &Tensor) -> Result<Tensor> {
    if g.shape() != t.shape() {
        bail!("dot and squares: {:?} against {:?}", g.dims(), t.dims());
    }
    compute(
        g,
        || apply(DotAndSquares, [g, t]),
        || {
            Tensor::stack(
                &[
                    (g * t)?.sum_all()?,
                    g.sqr()?.sum_all()?,
                    t.sqr()?.sum_all()?,
                ],
                0,
            )
        },
    )
}

/// `c₀·a + c₁·b` for two tensors of the same shape and a `[2]` tensor of coefficients.
pub fn axpby(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() || c.dims() != [2] {
        bail!(
            "axpby: {:?} and {:?} with coefficients {:?} (want [2])",
            a.dims(),
            b.dims(),
            c.dims()
        );
    }
    compute(
        a,
        || apply(Axpby, [a, b, c]),
        || {
            let coefficient = |i| c.narrow(0, i, 1)?.reshape(());
            a.broadcast_mul(&coefficient(0)?)? + b.broadcast_mul(&coefficient(1)?)?
        },
    )
}

/// Elements per partial sum: the unit of work and of the summation order.
const CHUNK: usize = 1 << 14;

#[derive(Clone, Copy, Debug)]
struct DotAndSquares;

impl CpuKernel<2> for DotAndSquares {
    fn name(&self) -> &'static str {
        "synfed-dot-and-squares"
    }

    fn forward<T: Scalar>(&self, inputs: [Input<'_, T>; 2]) -> Forward<T> {
        let [g, t] = values(&inputs)?;
        let partial = |(a, b): (&[T], &[T])| {
            // eight lanes per sum (vectorisable), combined in a fixed order
            let mut acc = [[T::ZERO; 8]; 3];
            let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
            let (ra, rb) = (ca.remainder(), cb.remainder());
            for (x, y) in ca.zip(cb) {
                for lane in 0..8 {
                    acc[0][lane] += x[lane] * y[lane];
                    acc[1][lane] += x[lane] * x[lane];
                    acc[2][lane] += y[lane] * y[lane];
                }
            }
            let mut sums = acc.map(|lanes| lanes.iter().map(|v| v.to_f64()).sum::<f64>());
            for (&x, &y) in ra.iter().zip(rb) {
                sums[0] += (x * y).to_f64();
                sums[1] += (x * x).to_f64();
                sums[2] += (y * y).to_f64();
            }
            sums
        };
        let partials: Vec<[f64; 3]> = g
            .par_chunks(CHUNK)
            .zip(t.par_chunks(CHUNK))
            .map(partial)
            .collect();
        let mut total = [0.0f64; 3];
        for p in &partials {
            for (s, v) in total.iter_mut().zip(p) {
                *s += v;
            }
        }
        Ok((total.map(T::from_f64).to_vec(), Shape::from(3)))
    }

    /// With u = (u₀, u₁, u₂): ∂g = u₀·t + 2u₁·g, ∂t = u₀·g + 2u₂·t.
    fn backward(&self, [g, t]: [&Tensor; 2], _res: &Tensor, u: &Tensor) -> Gradients<2> {
        let pick = |i| u.narrow(0, i, 1);
        let coefficients = |own| Tensor::cat(&[pick(0)?, (pick(own)? * 2.0)?], 0);
        let dg = needs_gradient(g)
            .then(|| axpby(t, g, &coefficients(1)?))
            .transpose()?;
        let dt = needs_gradient(t)
            .then(|| axpby(g, t, &coefficients(2)?))
            .transpose()?;
        Ok([dg, dt])
    }
}

#[derive(Clone, Copy, Debug)]
struct Axpby;

impl CpuKernel<3> for Axpby {
    fn name(&self) -> &'static str {
        "synfed-axpby"
    }

    fn forward<T: Scalar>(&self, inputs: [Input<'_, T>; 3]) -> Forward<T> {
        let [a, b, c] = values(&inputs)?;
        let (ca, cb) = match c {
            [ca, cb] => (*ca, *cb),
            _ => bail!("axpby: {} coefficients", c.len()),
        };
        let out = par_build(a.len(), CHUNK, items_per_task(CHUNK), |i, dst: &mut [T]| {
            let start = i * CHUNK;
            for ((d, &x), &y) in dst.iter_mut().zip(&a[start..]).zip(&b[start..]) {
                *d = ca * x + cb * y;
            }
        });
        Ok((out, inputs[0].shape().clone()))
    }

    /// With upstream v: ∂a = c₀·v, ∂b = c₁·v, ∂c = (⟨v, a⟩, ⟨v, b⟩).
    fn backward(&self, [a, b, c]: [&Tensor; 3], _res: &Tensor, v: &Tensor) -> Gradients<3> {
        let coefficient = |i| c.narrow(0, i, 1)?.reshape(());
        let da = needs_gradient(a)
            .then(|| v.broadcast_mul(&coefficient(0)?))
            .transpose()?;
        let db = needs_gradient(b)
            .then(|| v.broadcast_mul(&coefficient(1)?))
            .transpose()?;
        let dc = needs_gradient(c)
            .then(|| Tensor::stack(&[(v * a)?.sum_all()?, (v * b)?.sum_all()?], 0))
            .transpose()?;
        Ok([da, db, dc])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{max_diff, seeded};
    use candle_core::DType;
    use candle_core::Var;

    fn composed(g: &Tensor, t: &Tensor) -> Tensor {
        Tensor::stack(
            &[
                (g * t).unwrap().sum_all().unwrap(),
                g.sqr().unwrap().sum_all().unwrap(),
                t.sqr().unwrap().sum_all().unwrap(),
            ],
            0,
        )
        .unwrap()
    }

    /// By hand, and against candle's ops for sizes around the chunk and lane boundaries.
    #[test]
    fn sums_match_hand_values_and_candles_ops() {
        let g = Tensor::new(&[1.0f64, 2.0, -3.0], &candle_core::Device::Cpu).unwrap();
        let t = Tensor::new(&[4.0f64, 0.5, 2.0], &candle_core::Device::Cpu).unwrap();
        let s = dot_and_squares(&g, &t).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(s, vec![4.0 + 1.0 - 6.0, 1.0 + 4.0 + 9.0, 16.0 + 0.25 + 4.0]);
        for n in [1, 7, 8, 9, CHUNK - 1, CHUNK + 5, 3 * CHUNK + 17] {
            let (g, t) = (seeded(&[n], 1), seeded(&[n], 2));
            let ours = dot_and_squares(&g, &t).unwrap();
            assert!(max_diff(&ours, &composed(&g, &t)) < 1e-9 * n as f64, "{n}");
            let f32s = dot_and_squares(
                &g.to_dtype(DType::F32).unwrap(),
                &t.to_dtype(DType::F32).unwrap(),
            )
            .unwrap();
            assert!(max_diff(&f32s, &ours) < 1e-5 * n as f64, "{n} f32");
        }
        let c = Tensor::new(&[0.5f64, -2.0], &candle_core::Device::Cpu).unwrap();
        let combined = axpby(&g, &t, &c).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(combined, vec![0.5 - 8.0, 1.0 - 1.0, -1.5 - 4.0]);
    }

    /// S = Σ (∂L/∂x)² with L = w·s(g(x), t(x)), g = tanh(x), t = x³, s = the three sums: the
    /// first and second derivatives equal those of candle's composition.
    #[test]
    fn gradients_to_second_order_match_candles_composition() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let x0 = seeded(&[3, 1000], 3);
        let w = Tensor::new(&[0.7f64, -1.3, 0.4], &candle_core::Device::Cpu).unwrap();
        let run = |ours: bool| {
            let x = Var::from_tensor(&x0).unwrap();
            let xt = x.as_tensor();
            let (g, t) = (xt.tanh().unwrap(), xt.powf(3.0).unwrap());
            let s = if ours {
                dot_and_squares(&g, &t).unwrap()
            } else {
                composed(&g, &t)
            };
            let l = (s * &w).unwrap().sum_all().unwrap();
            let dx = l.backward().unwrap().get(xt).unwrap().clone();
            let second = dx.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            (dx, second.get(xt).unwrap().clone())
        };
        let (a, b) = (run(true), run(false));
        assert!(max_diff(&a.0, &b.0) < 1e-9);
        assert!(max_diff(&a.1, &b.1) < 1e-8);
    }

    /// axpby's own gradients (the composed ones) in all three operands, against candle.
    #[test]
    fn axpby_gradients_match_candles_composition() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let (a0, b0) = (seeded(&[40], 4), seeded(&[40], 5));
        let c0 = Tensor::new(&[0.3f64, -0.9], &candle_core::Device::Cpu).unwrap();
        let weights = seeded(&[40], 6);
        let run = |ours: bool| {
            let (a, b, c) = (
                Var::from_tensor(&a0).unwrap(),
                Var::from_tensor(&b0).unwrap(),
                Var::from_tensor(&c0).unwrap(),
            );
            let (at, bt, ct) = (a.as_tensor(), b.as_tensor(), c.as_tensor());
            let y = if ours {
                axpby(at, bt, ct).unwrap()
            } else {
                let k = |i| ct.narrow(0, i, 1).unwrap().reshape(()).unwrap();
                (at.broadcast_mul(&k(0)).unwrap() + bt.broadcast_mul(&k(1)).unwrap()).unwrap()
            };
            let l = (y.tanh().unwrap() * &weights).unwrap().sum_all().unwrap();
            let grads = l.backward().unwrap();
            [at, bt, ct].map(|v| grads.get(v).unwrap().clone())
        };
        let (ours, theirs) = (run(true), run(false));
        for (o, t) in ours.iter().zip(&theirs) {
            assert!(max_diff(o, t) < 1e-12);
        }
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let (g, t) = (seeded(&[4], 1), seeded(&[5], 2));
        assert!(dot_and_squares(&g, &t).is_err());
        assert!(axpby(&g, &g, &seeded(&[3], 3)).is_err());
        assert!(axpby(&g, &t, &seeded(&[2], 3)).is_err());
    }
}
