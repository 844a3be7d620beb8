//! Per-channel sums of NCHW tensors and their adjoint, the per-channel broadcast.
//!
//! BatchNorm and convolution biases combine `[N, C, H, W]` activations with `[C]` vectors
//! (their gradients, through [`super::affine`] and [`super::batch_norm`], are built from these
//! two ops). As candle broadcasts, each such op's backward pass sums over dimensions (0, 2, 3), which candle
//! 0.11 does with a division per element and reduced dimension: that summing was ~45 % of a
//! ResNet20 training step. These two ops make the reduction explicit and fast (contiguous
//! planes, eight accumulators), and, being each other's adjoint, are each other's gradient, so
//! any order of differentiation stays on them. Each channel is summed in a fixed order whatever
//! the number of threads.

use super::cpu::buffer::par_build;
use super::cpu::{items_per_task, lanes, per_channel, Scalar};
use super::custom_op::{apply, CpuKernel, Forward, Gradients, Input};
use super::dispatch::compute;
use candle_core::{bail, Result, Shape, Tensor};

/// `[N, C, H, W] → [C]`: the sum of each channel over images and positions.
pub fn channel_sum(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims4()?;
    compute(x, || apply(ChannelOp::Sum(dims), [x]), || x.sum((0, 2, 3)))
}

/// `[C] → [N, C, H, W]`: every position of channel c holds `v[c]` (materialised).
pub fn channel_broadcast(v: &Tensor, dims: (usize, usize, usize, usize)) -> Result<Tensor> {
    let c = v.dims1()?;
    if c != dims.1 {
        bail!("channel broadcast: {c} values for {} channels", dims.1);
    }
    compute(
        v,
        || apply(ChannelOp::Broadcast(dims), [v]),
        || v.reshape((1, c, 1, 1))?.broadcast_as(dims)?.contiguous(),
    )
}

#[derive(Clone, Copy, Debug)]
enum ChannelOp {
    Sum((usize, usize, usize, usize)),
    Broadcast((usize, usize, usize, usize)),
}

impl CpuKernel<1> for ChannelOp {
    fn name(&self) -> &'static str {
        match self {
            ChannelOp::Sum(_) => "synfed-channel-sum",
            ChannelOp::Broadcast(_) => "synfed-channel-broadcast",
        }
    }

    fn forward<T: Scalar>(&self, [src]: [Input<'_, T>; 1]) -> Forward<T> {
        let src = src.values()?;
        match *self {
            ChannelOp::Sum((n, c, h, w)) => {
                let plane = h * w;
                let sums: Vec<T> = per_channel(c, n * plane, |ch| {
                    let mut total = T::ZERO;
                    for image in 0..n {
                        total += lanes::sum(&src[(image * c + ch) * plane..][..plane]);
                    }
                    total
                });
                Ok((sums, Shape::from(c)))
            }
            ChannelOp::Broadcast((n, c, h, w)) => {
                let plane = h * w;
                let out = par_build(n * c * plane, plane, items_per_task(plane), |i, p| {
                    p.fill(src[i % c])
                });
                Ok((out, Shape::from((n, c, h, w))))
            }
        }
    }

    /// ⟨sum(x), u⟩ = ⟨x, broadcast(u)⟩: each op's gradient is the other.
    fn backward(&self, _: [&Tensor; 1], _res: &Tensor, u: &Tensor) -> Gradients<1> {
        Ok([Some(match *self {
            ChannelOp::Sum(dims) => channel_broadcast(u, dims)?,
            ChannelOp::Broadcast(_) => channel_sum(u)?,
        })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{max_diff, seeded};
    use candle_core::Var;

    #[test]
    fn sums_and_broadcasts_match_candle() {
        for dims in [(2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 4, 4), (2, 1, 3, 9)] {
            let x = seeded(&[dims.0, dims.1, dims.2, dims.3], 1);
            assert!(max_diff(&channel_sum(&x).unwrap(), &x.sum((0, 2, 3)).unwrap()) < 1e-12);
            let v = seeded(&[dims.1], 2);
            let expected = v
                .reshape((1, dims.1, 1, 1))
                .unwrap()
                .broadcast_as(dims)
                .unwrap();
            assert_eq!(
                max_diff(&channel_broadcast(&v, dims).unwrap(), &expected),
                0.0
            );
        }
        assert!(channel_broadcast(&seeded(&[3], 1), (1, 2, 2, 2)).is_err());
    }

    /// First and second derivatives through both ops equal those of candle's broadcasting ops:
    /// S = Σ (∂L/∂x)³ + Σ (∂L/∂v)² with L = Σ c ⊙ tanh(x ⊙ broadcast(v) + broadcast(sum(x²))).
    #[test]
    fn gradients_to_second_order_match_candles_broadcasting() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let dims = (2, 3, 4, 5);
        let x0 = seeded(&[2, 3, 4, 5], 3);
        let v0 = seeded(&[3], 4);
        let c = seeded(&[2, 3, 4, 5], 5);
        let run = |ours: bool| {
            let (x, v) = (
                Var::from_tensor(&x0).unwrap(),
                Var::from_tensor(&v0).unwrap(),
            );
            let (xt, vt) = (x.as_tensor(), v.as_tensor());
            let pre = if ours {
                let s = channel_sum(&xt.sqr().unwrap()).unwrap();
                ((xt * channel_broadcast(vt, dims).unwrap()).unwrap()
                    + channel_broadcast(&s, dims).unwrap())
                .unwrap()
            } else {
                let s = xt.sqr().unwrap().sum_keepdim((0, 2, 3)).unwrap();
                xt.broadcast_mul(&vt.reshape((1, 3, 1, 1)).unwrap())
                    .unwrap()
                    .broadcast_add(&s)
                    .unwrap()
            };
            let l = (pre.tanh().unwrap() * &c).unwrap().sum_all().unwrap();
            let g = l.backward().unwrap();
            let (gx, gv) = (g.get(xt).unwrap().clone(), g.get(vt).unwrap().clone());
            let s = (gx.powf(3.0).unwrap().sum_all().unwrap()
                + gv.sqr().unwrap().sum_all().unwrap())
            .unwrap();
            let h = s.backward().unwrap();
            (
                gx,
                gv,
                h.get(xt).unwrap().clone(),
                h.get(vt).unwrap().clone(),
            )
        };
        let (a, b) = (run(true), run(false));
        assert!(max_diff(&a.0, &b.0) < 1e-12);
        assert!(max_diff(&a.1, &b.1) < 1e-12);
        assert!(max_diff(&a.2, &b.2) < 1e-10);
        assert!(max_diff(&a.3, &b.3) < 1e-10);
    }
}
