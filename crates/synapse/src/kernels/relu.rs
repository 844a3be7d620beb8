//! ReLU and its gradient mask as two ops, each differentiated by the second.
//!
//! candle differentiates `relu` as `u ⊙ (x ≥ 0 as float)`: a comparison, a conversion and a
//! product, three activation-sized passes (plus their own nodes when the attack differentiates
//! again). Here the backward pass is one op, [`relu_mask`] `(u, x) ↦ u ⊙ [x > 0]`, which is
//! linear in `u` and piecewise constant in `x`, so its own gradient is itself applied to the
//! upstream gradient (and zero for `x`). At exactly 0 the gradient is 0 (PyTorch's convention;
//! candle's `ge` would pass it).
//!
//! [`add_relu`] is a residual connection's `max(a + b, 0)` as one node (candle's addition is a
//! node of its own, whose gradient the backward pass accumulates once more); its gradient
//! for both summands is the upstream gradient masked by the output's sign.

use super::backward::needs_gradient;
use super::cpu::buffer::par_build;
use super::cpu::{items_per_task, Scalar};
use super::custom_op::{apply, values, CpuKernel, Forward, Gradients, Input};
use super::dispatch::compute;
use candle_core::{bail, Result, Tensor};

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    compute(x, || apply(Relu, [x]), || x.relu())
}

/// `u ⊙ [x > 0]`: the gradient of [`relu`] at `x` for the upstream gradient `u`.
pub fn relu_mask(u: &Tensor, x: &Tensor) -> Result<Tensor> {
    if u.shape() != x.shape() {
        bail!(
            "relu mask: gradient {:?} for input {:?}",
            u.dims(),
            x.dims()
        );
    }
    compute(
        u,
        || apply(ReluMask, [u, x]),
        || u.mul(&x.gt(0.0)?.to_dtype(u.dtype())?),
    )
}

/// `max(a + b, 0)`.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        bail!("add relu: summands {:?} and {:?}", a.dims(), b.dims());
    }
    compute(a, || apply(AddRelu, [a, b]), || (a + b)?.relu())
}

/// `f(start, chunk)` over chunks of one task's length, in parallel.
fn map<T: Scalar>(out_len: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) -> Vec<T> {
    let chunk = items_per_task(1);
    par_build(out_len, chunk, 1, |i, dst| f(i * chunk, dst))
}

#[derive(Clone, Copy, Debug)]
struct Relu;

impl CpuKernel<1> for Relu {
    fn name(&self) -> &'static str {
        "synfed-relu"
    }

    fn forward<T: Scalar>(&self, [x]: [Input<'_, T>; 1]) -> Forward<T> {
        let shape = x.shape().clone();
        let x = x.values()?;
        let y = map(x.len(), |start, dst: &mut [T]| {
            for (d, &v) in dst.iter_mut().zip(&x[start..]) {
                *d = if v > T::ZERO { v } else { T::ZERO };
            }
        });
        Ok((y, shape))
    }

    fn backward(&self, [x]: [&Tensor; 1], _res: &Tensor, u: &Tensor) -> Gradients<1> {
        Ok([Some(relu_mask(u, x)?)])
    }
}

#[derive(Clone, Copy, Debug)]
struct AddRelu;

impl CpuKernel<2> for AddRelu {
    fn name(&self) -> &'static str {
        "synfed-add-relu"
    }

    fn forward<T: Scalar>(&self, inputs: [Input<'_, T>; 2]) -> Forward<T> {
        let [a, b] = values(&inputs)?;
        let y = map(a.len(), |start, dst: &mut [T]| {
            for ((d, &p), &q) in dst.iter_mut().zip(&a[start..]).zip(&b[start..]) {
                let v = p + q;
                *d = if v > T::ZERO { v } else { T::ZERO };
            }
        });
        Ok((y, inputs[0].shape().clone()))
    }

    /// Both summands get the upstream gradient where the output is positive.
    fn backward(&self, [a, b]: [&Tensor; 2], res: &Tensor, u: &Tensor) -> Gradients<2> {
        let (need_a, need_b) = (needs_gradient(a), needs_gradient(b));
        if !(need_a || need_b) {
            return Ok([None, None]);
        }
        let g = relu_mask(u, res)?;
        Ok([need_a.then(|| g.clone()), need_b.then_some(g)])
    }
}

#[derive(Clone, Copy, Debug)]
struct ReluMask;

impl CpuKernel<2> for ReluMask {
    fn name(&self) -> &'static str {
        "synfed-relu-mask"
    }

    fn forward<T: Scalar>(&self, inputs: [Input<'_, T>; 2]) -> Forward<T> {
        let [u, x] = values(&inputs)?;
        let y = map(u.len(), |start, dst: &mut [T]| {
            for ((d, &g), &v) in dst.iter_mut().zip(&u[start..]).zip(&x[start..]) {
                *d = if v > T::ZERO { g } else { T::ZERO };
            }
        });
        Ok((y, inputs[0].shape().clone()))
    }

    /// Linear in `u` with the same mask; constant (almost everywhere) in `x`.
    fn backward(&self, [u, x]: [&Tensor; 2], _res: &Tensor, v: &Tensor) -> Gradients<2> {
        let du = needs_gradient(u).then(|| relu_mask(v, x)).transpose()?;
        Ok([du, None])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::seeded;
    use candle_core::{Device, Var};

    #[test]
    fn values_and_mask_by_hand() {
        let x = Tensor::new(&[-2f32, -0.0, 0.0, 0.5, 3.0], &Device::Cpu).unwrap();
        assert_eq!(
            relu(&x).unwrap().to_vec1::<f32>().unwrap(),
            [0., 0., 0., 0.5, 3.]
        );
        let u = Tensor::new(&[1f32, 2., 3., 4., 5.], &Device::Cpu).unwrap();
        assert_eq!(
            relu_mask(&u, &x).unwrap().to_vec1::<f32>().unwrap(),
            [0., 0., 0., 4., 5.]
        );
        assert!(relu_mask(&u, &x.narrow(0, 0, 2).unwrap()).is_err());
    }

    #[test]
    fn add_relu_by_hand() {
        let a = Tensor::new(&[-2f32, 1.0, 0.5, 3.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1f32, -1.0, 0.25, -4.0], &Device::Cpu).unwrap();
        assert_eq!(
            add_relu(&a, &b).unwrap().to_vec1::<f32>().unwrap(),
            [0., 0., 0.75, 0.]
        );
        assert!(add_relu(&a, &b.narrow(0, 0, 3).unwrap()).is_err());
    }

    /// First and second derivatives of `add_relu` equal candle's `relu(a + b)`'s:
    /// S = Σ (∂L/∂a)² + Σ (∂L/∂b)³, L = Σ c ⊙ add_relu(a ⊙ w, b)².
    #[test]
    fn add_relu_gradients_to_second_order_match_candles() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let c = seeded(&[2, 3, 7], 6);
        let run = |ours: bool| {
            let a = Var::from_tensor(&seeded(&[2, 3, 7], 4)).unwrap();
            let w = Var::from_tensor(&seeded(&[2, 3, 7], 7)).unwrap();
            let b = Var::from_tensor(&seeded(&[2, 3, 7], 5)).unwrap();
            let aw = (a.as_tensor() * w.as_tensor()).unwrap();
            let r = if ours {
                add_relu(&aw, b.as_tensor()).unwrap()
            } else {
                (&aw + b.as_tensor()).unwrap().relu().unwrap()
            };
            let l = (r.sqr().unwrap() * &c).unwrap().sum_all().unwrap();
            let g = l.backward().unwrap();
            let (ga, gb) = (
                g.get(a.as_tensor()).unwrap().clone(),
                g.get(b.as_tensor()).unwrap().clone(),
            );
            let s = (ga.sqr().unwrap().sum_all().unwrap()
                + gb.powf(3.0).unwrap().sum_all().unwrap())
            .unwrap();
            let h = s.backward().unwrap();
            [
                &ga,
                &gb,
                h.get(a.as_tensor()).unwrap(),
                h.get(w.as_tensor()).unwrap(),
                h.get(b.as_tensor()).unwrap(),
            ]
            .map(|t| t.flatten_all().unwrap().to_vec1::<f64>().unwrap())
        };
        let (ours, theirs) = (run(true), run(false));
        for (p, q) in ours.iter().zip(&theirs) {
            for (u, v) in p.iter().zip(q) {
                assert!((u - v).abs() < 1e-12 * u.abs().max(1.0), "{u} vs {v}");
            }
        }
    }

    /// First and second derivatives equal candle's relu composition away from 0 (where both
    /// are defined the same): S = Σ (∂L/∂x)² + Σ (∂L/∂w)³, L = Σ c ⊙ relu(x ⊙ w)².
    #[test]
    fn gradients_to_second_order_match_candles_relu() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let c = seeded(&[2, 3, 7], 3);
        let run = |ours: bool| {
            let x = Var::from_tensor(&seeded(&[2, 3, 7], 1)).unwrap();
            let w = Var::from_tensor(&seeded(&[2, 3, 7], 2)).unwrap();
            let z = (x.as_tensor() * w.as_tensor()).unwrap();
            let r = if ours {
                relu(&z).unwrap()
            } else {
                z.relu().unwrap()
            };
            let l = (r.sqr().unwrap() * &c).unwrap().sum_all().unwrap();
            let g = l.backward().unwrap();
            let (gx, gw) = (
                g.get(x.as_tensor()).unwrap().clone(),
                g.get(w.as_tensor()).unwrap().clone(),
            );
            let s = (gx.sqr().unwrap().sum_all().unwrap()
                + gw.powf(3.0).unwrap().sum_all().unwrap())
            .unwrap();
            let h = s.backward().unwrap();
            let out: Vec<Vec<f64>> = [
                &gx,
                &gw,
                h.get(x.as_tensor()).unwrap(),
                h.get(w.as_tensor()).unwrap(),
            ]
            .iter()
            .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
            .collect();
            out
        };
        let (a, b) = (run(true), run(false));
        for (p, q) in a.iter().zip(&b) {
            for (u, v) in p.iter().zip(q) {
                assert!((u - v).abs() < 1e-12 * u.abs().max(1.0), "{u} vs {v}");
            }
        }
    }
}
