//! BatchNorm's input gradient as one op, with its own derivatives.
//!
//! With batch statistics, the gradient of BatchNorm with respect to its input is
//! `∂x = γr·P(u)`, `P(u) = u − mean(u) − x̂·mean(u ⊙ x̂)` per channel (r = 1/√(σ² + ε),
//! x̂ = (x − μ)·r, means over N, H, W). Composed of channel ops it is a dozen activation-sized
//! nodes, each of which the attack's second backward pass differentiates and accumulates
//! again; as one op it is one node. Its derivatives, for an upstream gradient `v`:
//!
//! * in `u`: `γr·P(v)` — P is a symmetric projection, so this is the op again;
//! * in `γ`: `r·m·(c − ab)` per channel;
//! * in `x`: `γr²·((3ab − c)·x̂ − b·(u − ū) − a·(v − v̄))`,
//!
//! with m the values per channel, `a = mean(u ⊙ x̂)`, `b = mean(v ⊙ x̂)`,
//! `c = mean(u ⊙ v) − ū·v̄` (differentiate ⟨v, ∂x⟩ = γ·r·m·(c − ab), using
//! ∂r/∂xᵢ = −r²x̂ᵢ/m and ∂a/∂xᵢ = r·(uᵢ − ū − a·x̂ᵢ)/m). Where gradients are final that is one
//! fused kernel; otherwise the same formula composed of differentiable ops.

use super::affine::{channel_affine, channel_center};
use super::backward::{gradients_are_final, needs_gradient};
use super::batch_norm::{batch_norm, batch_stats, fused_operands, planes};
use super::channel::channel_sum;
use super::cpu::buffer::par_build;
use super::cpu::gemm::Element;
use super::cpu::lanes::lane_sums;
use super::cpu::{items_per_task, per_channel, Scalar};
use super::custom_op::{
    apply, constant, read, values, CpuKernel, CpuRead, Forward, Gradients, Input,
};
use super::dispatch::compute;
use candle_core::{bail, Result, Shape, Tensor};

/// `∂x` of BatchNorm with batch statistics, `γr·(u − mean(u) − x̂·mean(u ⊙ x̂))`, for the input
/// `x` `[N, C, H, W]`, scale `γ` `[C]` and upstream gradient `u` (shaped like `x`).
pub fn batch_norm_input_grad(x: &Tensor, gamma: &Tensor, u: &Tensor, eps: f64) -> Result<Tensor> {
    let c = x.dims4()?.1;
    if gamma.dims1()? != c || u.shape() != x.shape() {
        bail!(
            "batch norm input gradient: input {:?}, γ {:?}, gradient {:?}",
            x.dims(),
            gamma.dims(),
            u.dims()
        );
    }
    require_values(x, "batch norm input gradient")?;
    compute(
        x,
        || apply(InputGrad { eps }, [x, gamma, u]),
        || composed(x, gamma, u, eps),
    )
}

/// `∂γ` of BatchNorm with batch statistics, `Σ u ⊙ x̂` per channel (`[C]`), for the input `x`
/// `[N, C, H, W]` and the upstream gradient `u` (shaped like `x`).
///
/// As one op it replaces the normalisation recomputed for x̂, the product `u ⊙ x̂` and the
/// channel sum — three nodes the attack's second pass would differentiate, two of them
/// activation-sized — by one node: the scale's gradient, which the attack matches, in one pass
/// over x and u. Its derivatives for an upstream `v` `[C]` are BatchNorm ops again: in u,
/// `v ⊙ x̂` (the normalisation with γ = v, β = 0); in x, `∂⟨v, Σ u ⊙ x̂⟩/∂x = v·r·P(u)`, the
/// input gradient with γ = v.
pub fn batch_norm_scale_grad(x: &Tensor, u: &Tensor, eps: f64) -> Result<Tensor> {
    if u.shape() != x.shape() {
        bail!(
            "batch norm scale gradient: input {:?}, gradient {:?}",
            x.dims(),
            u.dims()
        );
    }
    require_values(x, "batch norm scale gradient")?;
    compute(
        x,
        || apply(ScaleGrad { eps }, [x, u]),
        || channel_sum(&(u * normalized(x, eps)?.0)?),
    )
}

#[derive(Clone, Copy, Debug)]
struct ScaleGrad {
    eps: f64,
}

impl CpuKernel<2> for ScaleGrad {
    fn name(&self) -> &'static str {
        "synfed-batch-norm-scale-grad"
    }

    fn forward<T: Scalar>(&self, inputs: [Input<'_, T>; 2]) -> Forward<T> {
        let [x, u] = values(&inputs)?;
        let (n, c, plane) = planes(inputs[0].shape())?;
        let per_channel_values = (n * plane) as f64;
        // Σ u ⊙ x̂ = m·mean(u ⊙ x̂)
        let sums = moments(x, u, None, (n, c, plane), self.eps)
            .iter()
            .map(|k| T::from_f64(k.a * per_channel_values))
            .collect();
        Ok((sums, Shape::from(c)))
    }

    fn backward(&self, [x, u]: [&Tensor; 2], _res: &Tensor, v: &Tensor) -> Gradients<2> {
        let dx = needs_gradient(x)
            .then(|| batch_norm_input_grad(x, v, u, self.eps))
            .transpose()?;
        let du = needs_gradient(u)
            .then(|| Ok::<_, candle_core::Error>(batch_norm(x, v, &v.zeros_like()?, self.eps)?.0))
            .transpose()?;
        Ok([dx, du])
    }
}

/// x̂ = (x − μ)·r and r = 1/√(σ² + ε) `[C]`, of differentiable channel ops.
fn normalized(x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let m = values_per_channel(x)?;
    let mean = (channel_sum(x)? / m)?;
    let centered = channel_center(x, &mean)?;
    let var = (channel_sum(&centered.sqr()?)? / m)?;
    let r = (var + eps)?.sqrt()?.recip()?;
    Ok((channel_affine(&centered, &r, &r.zeros_like()?)?, r))
}

/// Batch statistics need at least one value per channel.
fn require_values(x: &Tensor, op: &str) -> Result<()> {
    if values_per_channel(x)? == 0.0 {
        bail!("{op}: no values per channel in {:?}", x.dims());
    }
    Ok(())
}

fn values_per_channel(x: &Tensor) -> Result<f64> {
    let (n, _, h, w) = x.dims4()?;
    Ok((n * h * w) as f64)
}

/// The op composed of channel ops (off the CPU, and the tests' reference).
fn composed(x: &Tensor, gamma: &Tensor, u: &Tensor, eps: f64) -> Result<Tensor> {
    let m = values_per_channel(x)?;
    let (normed, r) = normalized(x, eps)?;
    let u_mean = (channel_sum(u)? / m)?;
    let a = (channel_sum(&(u * &normed)?)? / m)?;
    let gr = (gamma * &r)?;
    let shift = (&gr * &u_mean)?.neg()?;
    let zero = gr.zeros_like()?;
    channel_affine(u, &gr, &zero)? + channel_affine(&normed, &(&gr * &a)?.neg()?, &shift)?
}

#[derive(Clone, Copy, Debug)]
struct InputGrad {
    eps: f64,
}

/// Per channel: r, and the means the formulas need.
#[derive(Clone, Copy)]
struct Moments<T> {
    mean: T,
    r: f64,
    /// mean(u), mean(u ⊙ x̂)
    u_mean: T,
    a: f64,
    /// mean(v), mean(v ⊙ x̂), mean(u ⊙ v) (the derivatives only)
    v_mean: T,
    b: f64,
    uv: f64,
}

/// The moments of every channel of `x` with the gradients `u` and (optionally) `v`.
fn moments<T: Element>(
    x: &[T],
    u: &[T],
    v: Option<&[T]>,
    (n, c, plane): (usize, usize, usize),
    eps: f64,
) -> Vec<Moments<T>> {
    let stats = batch_stats(x, (n, c, plane));
    let m = (n * plane) as f64;
    per_channel(c, n * plane, |ch| {
        let (mean, var) = stats[ch];
        let (mut su, mut sux, mut sv, mut svx, mut suv) =
            (T::ZERO, T::ZERO, T::ZERO, T::ZERO, T::ZERO);
        for image in 0..n {
            let start = (image * c + ch) * plane;
            let (xs, us) = (&x[start..][..plane], &u[start..][..plane]);
            let [s, sx] = lane_sums([xs, us], |[xi, ui]| [ui, ui * (xi - mean)]);
            su += s;
            sux += sx;
            if let Some(v) = v {
                let [s, sx, suv_] = lane_sums([xs, us, &v[start..][..plane]], |[xi, ui, vi]| {
                    [vi, vi * (xi - mean), ui * vi]
                });
                sv += s;
                svx += sx;
                suv += suv_;
            }
        }
        let r = 1.0 / (var.to_f64() + eps).sqrt();
        Moments {
            mean,
            r,
            u_mean: T::from_f64(su.to_f64() / m),
            a: sux.to_f64() * r / m,
            v_mean: T::from_f64(sv.to_f64() / m),
            b: svx.to_f64() * r / m,
            uv: suv.to_f64() / m,
        }
    })
}

impl CpuKernel<3> for InputGrad {
    fn name(&self) -> &'static str {
        "synfed-batch-norm-input-grad"
    }

    fn forward<T: Scalar>(&self, inputs: [Input<'_, T>; 3]) -> Forward<T> {
        let [x, gamma, u] = values(&inputs)?;
        let (n, c, plane) = planes(inputs[0].shape())?;
        let moments = moments(x, u, None, (n, c, plane), self.eps);
        // γr·(u − ū − (x − μ)·r·a)
        let dx = par_build(x.len(), plane, items_per_task(plane), |i, dst| {
            let ch = i % c;
            let k = moments[ch];
            let gr = gamma[ch].to_f64() * k.r;
            let (scale, slope) = (T::from_f64(gr), T::from_f64(gr * k.r * k.a));
            let start = i * plane;
            for ((d, &ui), &xi) in dst.iter_mut().zip(&u[start..]).zip(&x[start..]) {
                *d = scale * (ui - k.u_mean) - slope * (xi - k.mean);
            }
        });
        Ok((dx, inputs[0].shape().clone()))
    }

    fn backward(&self, [x, gamma, u]: [&Tensor; 3], _res: &Tensor, v: &Tensor) -> Gradients<3> {
        let need_x = needs_gradient(x);
        // linear in u with a symmetric operator: the op itself
        let du = needs_gradient(u)
            .then(|| batch_norm_input_grad(x, gamma, v, self.eps))
            .transpose()?;
        if !(need_x || needs_gradient(gamma)) {
            return Ok([None, None, du]);
        }
        let (dx, d_gamma) = if gradients_are_final() {
            let fused = FusedDerivatives {
                eps: self.eps,
                need_x,
            };
            read(&fused, [x, gamma, u, v])?
        } else {
            self.composed_derivatives(x, gamma, u, v, need_x)?
        };
        Ok([dx, Some(d_gamma), du])
    }
}

/// The derivatives of the input gradient in x and γ as constants, by one fused kernel, for
/// gradients that are final: (∂x when x needs one, ∂γ) from (x, γ, u, the upstream v).
struct FusedDerivatives {
    eps: f64,
    need_x: bool,
}

impl CpuRead<4> for FusedDerivatives {
    type Output = (Option<Tensor>, Tensor);

    const NAME: &'static str = "batch norm input gradient";

    fn read<T: Scalar>(&self, inputs: [Input<'_, T>; 4]) -> Result<Self::Output> {
        let ([x, gamma, u, v], (n, c, plane)) = fused_operands(&inputs, Self::NAME)?;
        let moments = moments(x, u, Some(v), (n, c, plane), self.eps);
        let m = (n * plane) as f64;
        let covariance = |k: &Moments<T>| k.uv - k.u_mean.to_f64() * k.v_mean.to_f64();
        let d_gamma: Vec<T> = moments
            .iter()
            .map(|k| T::from_f64(k.r * m * (covariance(k) - k.a * k.b)))
            .collect();
        // γr²·((3ab − c)·(x − μ)·r − b·(u − ū) − a·(v − v̄))
        let dx = self.need_x.then(|| {
            par_build(x.len(), plane, items_per_task(plane), |i, dst| {
                let ch = i % c;
                let k = moments[ch];
                let g2 = gamma[ch].to_f64() * k.r * k.r;
                let slope = T::from_f64(g2 * (3.0 * k.a * k.b - covariance(&k)) * k.r);
                let (bu, av) = (T::from_f64(g2 * k.b), T::from_f64(g2 * k.a));
                let start = i * plane;
                let inputs = x[start..].iter().zip(&u[start..]).zip(&v[start..]);
                for (d, ((&xi, &ui), &vi)) in dst.iter_mut().zip(inputs) {
                    *d = slope * (xi - k.mean) - bu * (ui - k.u_mean) - av * (vi - k.v_mean);
                }
            })
        });
        Ok((
            dx.map(|dx| constant(dx, inputs[0].shape().clone())),
            constant(d_gamma, Shape::from(c)),
        ))
    }
}

impl InputGrad {
    /// The derivatives in x and γ composed of differentiable ops.
    fn composed_derivatives(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        u: &Tensor,
        v: &Tensor,
        need_x: bool,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let m = values_per_channel(x)?;
        let (normed, r) = normalized(x, self.eps)?;
        let mean_of = |t: &Tensor| channel_sum(t)? / m;
        let (u_mean, v_mean) = (mean_of(u)?, mean_of(v)?);
        let a = mean_of(&(u * &normed)?)?;
        let b = mean_of(&(v * &normed)?)?;
        let c = (mean_of(&(u * v)?)? - (&u_mean * &v_mean)?)?;
        let ab = (&a * &b)?;
        let d_gamma = ((&r * m)? * (&c - &ab)?)?;
        let dx = if need_x {
            let g2 = (gamma * r.sqr()?)?;
            let slope = (&g2 * ((ab * 3.0)? - &c)?)?;
            let shift = (&g2 * ((&b * &u_mean)? + (&a * &v_mean)?)?)?;
            let zero = g2.zeros_like()?;
            let bu = channel_affine(u, &(&g2 * &b)?, &zero)?;
            let av = channel_affine(v, &(&g2 * &a)?, &zero)?;
            Some(((channel_affine(&normed, &slope, &shift)? - bu)? - av)?)
        } else {
            None
        };
        Ok((dx, d_gamma))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::backward_final;
    use crate::kernels::test_support::{relative_diff, seeded};
    use candle_core::DType;
    use candle_core::Var;

    #[test]
    fn op_equals_the_composition() {
        let (x, g, u) = (
            seeded(&[3, 4, 5, 6], 1),
            seeded(&[4], 2),
            seeded(&[3, 4, 5, 6], 3),
        );
        let ours = batch_norm_input_grad(&x, &g, &u, 1e-5).unwrap();
        let reference = composed(&x, &g, &u, 1e-5).unwrap();
        assert!(relative_diff(&ours, &reference) < 1e-12);
        assert!(batch_norm_input_grad(&x, &seeded(&[3], 1), &u, 1e-5).is_err());
        assert!(batch_norm_input_grad(&x, &g, &seeded(&[3, 4, 5, 5], 1), 1e-5).is_err());
    }

    /// The scale gradient Σ u ⊙ x̂, its gradients and their gradients (L = Σ c ⊙ tanh(∂γ/20),
    /// then Σ of the squared first gradients), as the op and as the composition of channel
    /// ops, in f64; x = x₀² is computed, not a leaf.
    #[test]
    fn scale_gradient_equals_the_composition_to_second_order() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let (x0, u) = (
            Var::from_tensor(&seeded(&[3, 4, 5, 6], 11)).unwrap(),
            Var::from_tensor(&seeded(&[3, 4, 5, 6], 12)).unwrap(),
        );
        let c = seeded(&[4], 13);
        let run = |op: bool| {
            let x = x0.as_tensor().sqr().unwrap();
            let s = if op {
                batch_norm_scale_grad(&x, u.as_tensor(), 1e-5).unwrap()
            } else {
                channel_sum(&(u.as_tensor() * normalized(&x, 1e-5).unwrap().0).unwrap()).unwrap()
            };
            // scaled into tanh's curved range (Σ over 90 values per channel)
            let l = ((&s * 0.05).unwrap().tanh().unwrap() * &c)
                .unwrap()
                .sum_all()
                .unwrap();
            let g = l.backward().unwrap();
            let (gx, gu) = (
                g.get(x0.as_tensor()).unwrap(),
                g.get(u.as_tensor()).unwrap(),
            );
            for grad in [gx, gu] {
                let size = grad.abs().unwrap().sum_all().unwrap();
                assert!(size.to_scalar::<f64>().unwrap() > 1e-3);
            }
            let second = (gx.sqr().unwrap().sum_all().unwrap()
                + gu.sqr().unwrap().sum_all().unwrap())
            .unwrap();
            let h = second.backward().unwrap();
            [
                s,
                gx.clone(),
                gu.clone(),
                h.get(x0.as_tensor()).unwrap().clone(),
                h.get(u.as_tensor()).unwrap().clone(),
            ]
        };
        for (ours, reference) in run(true).iter().zip(run(false).iter()) {
            assert!(relative_diff(ours, reference) < 1e-10);
        }
        let x = seeded(&[3, 4, 5, 6], 1);
        assert!(batch_norm_scale_grad(&x, &seeded(&[3, 4, 5, 5], 2), 1e-5).is_err());
        assert!(
            batch_norm_scale_grad(&seeded(&[0, 4, 5, 6], 1), &seeded(&[0, 4, 5, 6], 2), 1e-5)
                .is_err()
        );
    }

    /// The op's derivatives in x, γ and u — composed (non-final pass) and fused (final pass) —
    /// equal candle's own differentiation of the composition, for L = Σ c ⊙ tanh(∂x) with
    /// x = x₀² (so x is computed, not a leaf).
    #[test]
    fn derivatives_equal_candles_differentiation_of_the_composition() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        for dtype in [DType::F64, DType::F32] {
            let c = seeded(&[2, 3, 4, 5], 7).to_dtype(dtype).unwrap();
            let run = |how: &str| {
                let var = |dims: &[usize], seed| {
                    Var::from_tensor(&seeded(dims, seed).to_dtype(dtype).unwrap()).unwrap()
                };
                let (x0, g, u) = (var(&[2, 3, 4, 5], 4), var(&[3], 5), var(&[2, 3, 4, 5], 6));
                let x = x0.as_tensor().sqr().unwrap();
                let dx = match how {
                    "reference" => composed(&x, g.as_tensor(), u.as_tensor(), 1e-5),
                    _ => batch_norm_input_grad(&x, g.as_tensor(), u.as_tensor(), 1e-5),
                }
                .unwrap();
                let l = (dx.tanh().unwrap() * &c).unwrap().sum_all().unwrap();
                let grads = match how {
                    "final" => backward_final(&l).unwrap(),
                    _ => l.backward().unwrap(),
                };
                [x0.as_tensor(), g.as_tensor(), u.as_tensor()]
                    .map(|t| grads.get(t).unwrap().to_dtype(DType::F64).unwrap())
            };
            let reference = run("reference");
            let tolerance = if dtype == DType::F64 { 1e-10 } else { 2e-4 };
            for how in ["composed", "final"] {
                for (a, b) in run(how).iter().zip(&reference) {
                    let d = relative_diff(a, b);
                    assert!(d < tolerance, "{dtype:?} {how}: {d}");
                }
            }
        }
    }
}
