//! The per-channel affine map `y[n, c] = x[n, c] · a[c] + b[c]` as one op.
//!
//! BatchNorm is two of these (centring, then scale and shift) and a convolution bias one.
//! Composed of a broadcast, a product, another broadcast and a sum, each such map puts four
//! activation-sized tensors into the graph, and candle's backward pass allocates and adds a
//! zero tensor for each of them; as one op it is one pass and one node. Its gradients are
//! written with differentiable ops — ∂x = affine(u, a, 0), ∂a = Σ x ⊙ u, ∂b = Σ u per
//! channel — so gradients of gradients stay exact.

use super::backward::needs_gradient;
use super::channel::channel_sum;
use super::cpu::buffer::par_build;
use super::cpu::{items_per_task, Scalar};
use super::custom_op::{apply, values, CpuKernel, Forward, Gradients, Input};
use super::dispatch::compute;
use candle_core::{bail, Result, Shape, Tensor};

/// `x · a + b` per channel of `x` `[N, C, H, W]`, with `a` and `b` of length C.
pub fn channel_affine(x: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dims = x.dims4()?;
    let (ca, cb) = (a.dims1()?, b.dims1()?);
    if ca != dims.1 || cb != dims.1 {
        bail!(
            "channel affine: {} channels, scale of {ca}, shift of {cb}",
            dims.1
        );
    }
    compute(
        x,
        || apply(ChannelAffine(dims), [x, a, b]),
        || {
            let x = x.broadcast_mul(&a.reshape((1, ca, 1, 1))?)?;
            x.broadcast_add(&b.reshape((1, cb, 1, 1))?)
        },
    )
}

#[derive(Clone, Copy, Debug)]
struct ChannelAffine((usize, usize, usize, usize));

impl CpuKernel<3> for ChannelAffine {
    fn name(&self) -> &'static str {
        "synfed-channel-affine"
    }

    fn forward<T: Scalar>(&self, inputs: [Input<'_, T>; 3]) -> Forward<T> {
        let [x, a, b] = values(&inputs)?;
        let (n, c, h, w) = self.0;
        let plane = h * w;
        let y = par_build(n * c * plane, plane, items_per_task(plane), |i, dst| {
            let (scale, shift) = (a[i % c], b[i % c]);
            for (d, &v) in dst.iter_mut().zip(&x[i * plane..]) {
                *d = v * scale + shift;
            }
        });
        Ok((y, Shape::from(self.0)))
    }

    fn backward(&self, [x, a, b]: [&Tensor; 3], _res: &Tensor, u: &Tensor) -> Gradients<3> {
        // an argument that is neither a variable nor computed from one (the ones of a
        // centring) needs no gradient
        let dx = needs_gradient(x)
            .then(|| channel_affine(u, a, &b.zeros_like()?))
            .transpose()?;
        let da = needs_gradient(a)
            .then(|| channel_sum(&(x * u)?))
            .transpose()?;
        let db = needs_gradient(b).then(|| channel_sum(u)).transpose()?;
        Ok([dx, da, db])
    }
}

/// `x − μ` per channel, `channel_affine(x, 1, −μ)`.
pub fn channel_center(x: &Tensor, mean: &Tensor) -> Result<Tensor> {
    channel_affine(x, &mean.ones_like()?, &mean.neg()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{max_diff, seeded};
    use candle_core::DType;
    use candle_core::Var;

    fn reference(x: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        let c = a.dims1().unwrap();
        x.broadcast_mul(&a.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
    }

    #[test]
    fn equals_broadcast_multiply_add_bit_for_bit() {
        let x = seeded(&[2, 3, 4, 5], 1).to_dtype(DType::F32).unwrap();
        let a = seeded(&[3], 2).to_dtype(DType::F32).unwrap();
        let b = seeded(&[3], 3).to_dtype(DType::F32).unwrap();
        let ours: Vec<f32> = channel_affine(&x, &a, &b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let theirs: Vec<f32> = reference(&x, &a, &b)
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ours, theirs);
        assert!(channel_affine(&x, &seeded(&[2], 1), &b).is_err());
    }

    /// First and second derivatives with respect to all three arguments equal candle's
    /// broadcasting composition: S = Σ(∂L/∂x)³ + Σ(∂L/∂a)² + Σ(∂L/∂b)² for
    /// L = Σ c ⊙ tanh(affine(x², a, b)).
    #[test]
    fn gradients_to_second_order_match_candles_composition() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let (x0, a0, b0) = (seeded(&[2, 3, 4, 5], 4), seeded(&[3], 5), seeded(&[3], 6));
        let c = seeded(&[2, 3, 4, 5], 7);
        let run = |ours: bool| {
            let (x, a, b) = (
                Var::from_tensor(&x0).unwrap(),
                Var::from_tensor(&a0).unwrap(),
                Var::from_tensor(&b0).unwrap(),
            );
            let (xt, at, bt) = (x.as_tensor(), a.as_tensor(), b.as_tensor());
            let sq = xt.sqr().unwrap();
            let pre = if ours {
                channel_affine(&sq, at, bt).unwrap()
            } else {
                reference(&sq, at, bt)
            };
            let l = (pre.tanh().unwrap() * &c).unwrap().sum_all().unwrap();
            let g = l.backward().unwrap();
            let grads: Vec<Tensor> = [xt, at, bt]
                .iter()
                .map(|t| g.get(t).unwrap().clone())
                .collect();
            let s = ((grads[0].powf(3.0).unwrap().sum_all().unwrap()
                + grads[1].sqr().unwrap().sum_all().unwrap())
            .unwrap()
                + grads[2].sqr().unwrap().sum_all().unwrap())
            .unwrap();
            let h = s.backward().unwrap();
            let second: Vec<Tensor> = [xt, at, bt]
                .iter()
                .map(|t| h.get(t).unwrap().clone())
                .collect();
            (grads, second)
        };
        let ((g1, h1), (g2, h2)) = (run(true), run(false));
        for (p, q) in g1.iter().zip(&g2).chain(h1.iter().zip(&h2)) {
            assert!(max_diff(p, q) < 1e-10, "{}", max_diff(p, q));
        }
    }
}
