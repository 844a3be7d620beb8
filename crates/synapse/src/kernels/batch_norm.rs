//! BatchNorm with batch statistics as one op, its backward pass made of differentiable ops.
//!
//! Written with [`channel_sum`], [`channel_center`] and [`channel_affine`], batch
//! normalisation puts four activation-sized tensors into the graph (centred, squared, output,
//! and the input's use), each of which candle's backward pass accumulates as `zeros + g`. As
//! one op the forward pass is one kernel (two passes over the input for the statistics, one
//! to write) and one node. Its gradient is the textbook formula
//! `∂x = γr·(u − mean(u) − x̂·mean(u ⊙ x̂))`, `∂γ = Σ u ⊙ x̂`, `∂β = Σ u` (r = 1/√(σ² + ε),
//! x̂ = (x − μ)·r), built from differentiable ops — ∂x as [`batch_norm_input_grad`], ∂γ as
//! [`batch_norm_scale_grad`] — so the attack's second-order gradients stay exact. The op
//! reports the batch mean and (biased) variance it used, for the running statistics.
//!
//! [`batch_norm_relu`] is the same op followed by ReLU (the pair every convolution of ResNet and
//! ConvNet ends with), one node instead of two; its backward pass masks the upstream gradient
//! with the output's sign first. Where gradients are final ([`super::backward_final`]) the
//! backward pass is one fused kernel instead — two passes over the input and the upstream
//! gradient, no graph.

use super::affine::{channel_affine, channel_center};
use super::backward::{gradients_are_final, needs_gradient};
use super::batch_norm_grad::{batch_norm_input_grad, batch_norm_scale_grad};
use super::channel::channel_sum;
use super::cpu::buffer::par_build;
use super::cpu::gemm::Element;
use super::cpu::lanes::{self, lane_sums};
use super::cpu::storage::Operand;
use super::cpu::{items_per_task, per_channel, Scalar};
use super::custom_op::{
    apply, constant, read, values, CpuKernel, CpuRead, Forward, Gradients, Input,
};
use super::dispatch::compute;
use super::relu::relu_mask;
use candle_core::{bail, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// The batch statistics a normalisation used: per-channel mean and biased variance `[C]`
/// (detached).
pub struct BatchStats {
    pub mean: Tensor,
    pub var: Tensor,
}

/// `(x − μ)·γ/√(σ² + ε) + β` per channel of `x` `[N, C, H, W]`, with μ and σ² the batch
/// statistics over (N, H, W); also returns those statistics.
pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    normalize(x, gamma, beta, eps, false)
}

/// `max(0, batch_norm(x, γ, β))` as one op; also returns the batch statistics.
pub fn batch_norm_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    normalize(x, gamma, beta, eps, true)
}

fn normalize(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchStats)> {
    let (n, c, h, w) = x.dims4()?;
    if gamma.dims1()? != c || beta.dims1()? != c {
        bail!(
            "batch norm: {c} channels, γ {:?}, β {:?}",
            gamma.dims(),
            beta.dims()
        );
    }
    if n * h * w == 0 {
        bail!("batch norm: no values per channel in {:?}", x.dims());
    }
    compute(
        x,
        || {
            let report = Arc::new(Mutex::new(None));
            BatchNorm { eps, relu, report }.run(x, gamma, beta)
        },
        || {
            let (y, mean, var) = composed(x, gamma, beta, eps)?;
            let stats = BatchStats {
                mean: mean.detach(),
                var: var.detach(),
            };
            let y = if relu { y.relu()? } else { y };
            Ok((y, stats))
        },
    )
}

/// The (mean, variance) pairs the forward kernel reported.
fn reported(report: &Report) -> Result<Vec<(f64, f64)>> {
    report
        .lock()
        .map_err(|_| candle_core::Error::Msg("batch norm: statistics lock poisoned".into()))?
        .clone()
        .ok_or_else(|| candle_core::Error::Msg("batch norm: no statistics reported".into()))
}

/// The normalisation composed of the channel ops (the backward pass's formula and the path
/// off the CPU): output, batch mean and biased variance.
fn composed(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, _, h, w) = x.dims4()?;
    let m = (n * h * w) as f64;
    let mean = (channel_sum(x)? / m)?;
    let centered = channel_center(x, &mean)?;
    let var = (channel_sum(&centered.sqr()?)? / m)?;
    let scale = (gamma / (&var + eps)?.sqrt()?)?;
    Ok((channel_affine(&centered, &scale, beta)?, mean, var))
}

/// (mean, biased variance) per channel, written by the forward kernel for the caller and the
/// fused backward kernel.
type Report = Arc<Mutex<Option<Vec<(f64, f64)>>>>;

struct BatchNorm {
    eps: f64,
    /// followed by ReLU
    relu: bool,
    report: Report,
}

impl BatchNorm {
    /// The normalisation as this one op, with the statistics its forward pass reported.
    fn run(self, x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<(Tensor, BatchStats)> {
        let c = gamma.dims1()?;
        let report = self.report.clone();
        let y = apply(self, [x, gamma, beta])?;
        let stats = reported(&report)?;
        let to = |v: Vec<f64>| Tensor::from_vec(v, c, x.device())?.to_dtype(x.dtype());
        Ok((
            y,
            BatchStats {
                mean: to(stats.iter().map(|s| s.0).collect())?,
                var: to(stats.iter().map(|s| s.1).collect())?,
            },
        ))
    }
}

impl CpuKernel<3> for BatchNorm {
    fn name(&self) -> &'static str {
        "synfed-batch-norm"
    }

    fn forward<T: Scalar>(&self, inputs: [Input<'_, T>; 3]) -> Forward<T> {
        let [x, gamma, beta] = values(&inputs)?;
        let shape = inputs[0].shape();
        let (n, c, plane) = planes(shape)?;
        let eps = T::from_f64(self.eps);
        let stats = batch_stats(x, (n, c, plane));
        let y = par_build(x.len(), plane, items_per_task(plane), |i, dst| {
            let ch = i % c;
            let (mean, var) = stats[ch];
            let scale = div(gamma[ch], sqrt(var + eps));
            for (d, &v) in dst.iter_mut().zip(&x[i * plane..]) {
                *d = (v - mean) * scale + beta[ch];
            }
            if self.relu {
                for d in dst.iter_mut() {
                    *d = if *d > T::ZERO { *d } else { T::ZERO };
                }
            }
        });
        let report = stats.iter().map(|s| (s.0.to_f64(), s.1.to_f64())).collect();
        *self.report.lock().map_err(|_| {
            candle_core::Error::Msg("batch norm: statistics lock poisoned".into())
        })? = Some(report);
        Ok((y, shape.clone()))
    }

    fn backward(&self, [x, gamma, _beta]: [&Tensor; 3], res: &Tensor, u: &Tensor) -> Gradients<3> {
        if gradients_are_final() {
            let fused = FusedBackward {
                op: self,
                need_x: needs_gradient(x),
            };
            let (dx, d_gamma, d_beta) = read(&fused, [x, gamma, res, u])?;
            return Ok([dx, Some(d_gamma), Some(d_beta)]);
        }
        // ReLU's gradient first: the output is positive exactly where the normalised value is
        let u = if self.relu {
            relu_mask(u, res)?
        } else {
            u.clone()
        };
        // ∂γ and ∂x as their own ops: a few nodes for a second backward pass to differentiate
        // instead of a dozen
        let d_beta = channel_sum(&u)?;
        let d_gamma = batch_norm_scale_grad(x, &u, self.eps)?;
        let dx = needs_gradient(x)
            .then(|| batch_norm_input_grad(x, gamma, &u, self.eps))
            .transpose()?;
        Ok([dx, Some(d_gamma), Some(d_beta)])
    }
}

/// The values of the fused backward kernels' operands `[x, γ, p, q]` — the input
/// `[N, C, H, W]`, the scale `[C]` and two tensors shaped like the input — and (N, C, H·W).
pub(super) fn fused_operands<'a, T: Operand>(
    inputs: &[Input<'a, T>; 4],
    name: &str,
) -> Result<([&'a [T]; 4], Planes)> {
    let values @ [x, gamma, p, q] = values(inputs)?;
    let shape = inputs[0].shape();
    let (n, c, plane) = planes(shape)?;
    if p.len() != x.len() || q.len() != x.len() || gamma.len() != c {
        bail!("{name}: operands do not match the input {shape:?}");
    }
    Ok((values, (n, c, plane)))
}

/// (N, C, H·W): the images, channels and values per plane that the per-channel kernels loop
/// over.
pub(super) type Planes = (usize, usize, usize);

/// The [`Planes`] of an `[N, C, H, W]` shape.
pub(super) fn planes(shape: &Shape) -> Result<Planes> {
    let (n, c, h, w) = shape.dims4()?;
    Ok((n, c, h * w))
}

/// Per channel of `x` (`[N, C, plane]`): the mean, then the mean squared deviation from it
/// (two passes), over N·plane values.
pub(super) fn batch_stats<T: Element>(
    x: &[T],
    (n, c, plane): (usize, usize, usize),
) -> Vec<(T, T)> {
    let m = T::from_f64((n * plane) as f64);
    let planes = |ch: usize| (0..n).map(move |i| (i * c + ch) * plane);
    per_channel(c, n * plane, |ch| {
        let mut sum = T::ZERO;
        for start in planes(ch) {
            sum += lanes::sum(&x[start..start + plane]);
        }
        let mean = div(sum, m);
        let mut squares = T::ZERO;
        for start in planes(ch) {
            let [s] = lane_sums([&x[start..start + plane]], |[v]| [(v - mean) * (v - mean)]);
            squares += s;
        }
        (mean, div(squares, m))
    })
}

fn div<T: Element>(a: T, b: T) -> T {
    T::from_f64(a.to_f64() / b.to_f64())
}

fn sqrt<T: Element>(v: T) -> T {
    T::from_f64(v.to_f64().sqrt())
}

/// BatchNorm's backward pass as one kernel whose results are constants (no graph), for
/// gradients that are final: (∂x when x needs one, ∂γ, ∂β) from (x, γ, the op's result, u).
struct FusedBackward<'a> {
    op: &'a BatchNorm,
    need_x: bool,
}

impl CpuRead<4> for FusedBackward<'_> {
    type Output = (Option<Tensor>, Tensor, Tensor);

    const NAME: &'static str = "batch norm gradient";

    /// With u′ = u (masked by the output's sign after ReLU), per channel Σu′ = ∂β,
    /// Σu′(x − μ)·r = ∂γ, and ∂x = γr·(u′ − Σu′/m − (x − μ)·r²·Σu′(x − μ)/m).
    fn read<T: Scalar>(&self, inputs: [Input<'_, T>; 4]) -> Result<Self::Output> {
        let ([x, gamma, res, u], (n, c, plane)) = fused_operands(&inputs, Self::NAME)?;
        let (eps, relu) = (self.op.eps, self.op.relu);
        let stats = reported(&self.op.report)?;
        if stats.len() != c {
            bail!(
                "{}: statistics for {} channels, not {c}",
                Self::NAME,
                stats.len()
            );
        }
        // u′ of one plane, read lazily: the mask and the gradient side by side
        let masked = move |start: usize| {
            let (u, res) = (&u[start..][..plane], &res[start..][..plane]);
            u.iter()
                .zip(res)
                .map(move |(&g, &y)| if !relu || y > T::ZERO { g } else { T::ZERO })
        };
        let m = (n * plane) as f64;
        // per channel: (γr, Σu′, Σu′(x − μ)) with r = 1/√(σ² + ε)
        let sums: Vec<(T, T, T)> = per_channel(c, n * plane, |ch| {
            let mean = T::from_f64(stats[ch].0);
            let (mut su, mut sux) = (T::ZERO, T::ZERO);
            for image in 0..n {
                let start = (image * c + ch) * plane;
                let (u, res, x) = (
                    &u[start..][..plane],
                    &res[start..][..plane],
                    &x[start..][..plane],
                );
                let [s, sx] = lane_sums([u, res, x], |[g, y, v]| {
                    let g = if !relu || y > T::ZERO { g } else { T::ZERO };
                    [g, g * (v - mean)]
                });
                su += s;
                sux += sx;
            }
            let r = 1.0 / (stats[ch].1 + eps).sqrt();
            (T::from_f64(gamma[ch].to_f64() * r), su, sux)
        });
        let d_beta: Vec<T> = sums.iter().map(|s| s.1).collect();
        let d_gamma: Vec<T> = sums
            .iter()
            .zip(&stats)
            .map(|(s, st)| T::from_f64(s.2.to_f64() / (st.1 + eps).sqrt()))
            .collect();
        let dx = self.need_x.then(|| {
            par_build(x.len(), plane, items_per_task(plane), |i, dst| {
                let ch = i % c;
                let (gr, su, sux) = sums[ch];
                let (mean, var) = stats[ch];
                let shift = T::from_f64(gr.to_f64() * su.to_f64() / m);
                let slope = T::from_f64(gr.to_f64() * sux.to_f64() / ((var + eps) * m));
                let mean = T::from_f64(mean);
                let start = i * plane;
                for ((d, g), &v) in dst.iter_mut().zip(masked(start)).zip(&x[start..]) {
                    *d = gr * g - shift - slope * (v - mean);
                }
            })
        });
        Ok((
            dx.map(|dx| constant(dx, inputs[0].shape().clone())),
            constant(d_gamma, Shape::from(c)),
            constant(d_beta, Shape::from(c)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{max_diff, relative_diff, seeded};
    use candle_core::DType;
    use candle_core::Var;

    #[test]
    fn output_and_statistics_match_the_composition() {
        let (x, g, b) = (seeded(&[3, 4, 5, 6], 1), seeded(&[4], 2), seeded(&[4], 3));
        let (y, stats) = batch_norm(&x, &g, &b, 1e-5).unwrap();
        let (y2, mean, var) = composed(&x, &g, &b, 1e-5).unwrap();
        assert!(max_diff(&y, &y2) < 1e-12);
        assert!(max_diff(&stats.mean, &mean) < 1e-15);
        assert!(max_diff(&stats.var, &var) < 1e-15);
        assert!(batch_norm(&x, &seeded(&[3], 1), &b, 1e-5).is_err());
    }

    #[test]
    fn relu_variant_is_relu_of_the_normalisation() {
        let (x, g, b) = (seeded(&[3, 4, 5, 6], 1), seeded(&[4], 2), seeded(&[4], 3));
        let (y, _) = batch_norm(&x, &g, &b, 1e-5).unwrap();
        let (yr, stats) = batch_norm_relu(&x, &g, &b, 1e-5).unwrap();
        assert_eq!(
            yr.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            y.relu()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        );
        let (_, mean, var) = composed(&x, &g, &b, 1e-5).unwrap();
        assert!(max_diff(&stats.mean, &mean) < 1e-15);
        assert!(max_diff(&stats.var, &var) < 1e-15);
    }

    /// First and second derivatives in x, γ, β equal those of the composition (an independent
    /// differentiation by the ops' own backward passes), with S = Σ(∂L/∂x)³ + Σ(∂L/∂γ)² + Σ(∂L/∂β)²
    /// for L = Σ c ⊙ tanh(bn(x²)) (and with ReLU after the normalisation).
    #[test]
    fn gradients_to_second_order_match_the_composition() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let c = seeded(&[2, 3, 4, 5], 7);
        let run = |fused: bool, relu: bool| {
            let x = Var::from_tensor(&seeded(&[2, 3, 4, 5], 4)).unwrap();
            let g = Var::from_tensor(&seeded(&[3], 5)).unwrap();
            let b = Var::from_tensor(&seeded(&[3], 6)).unwrap();
            let sq = x.as_tensor().sqr().unwrap();
            let (g_, b_) = (g.as_tensor(), b.as_tensor());
            let y = match (fused, relu) {
                (true, false) => batch_norm(&sq, g_, b_, 1e-5).unwrap().0,
                (true, true) => batch_norm_relu(&sq, g_, b_, 1e-5).unwrap().0,
                (false, _) => {
                    let y = composed(&sq, g_, b_, 1e-5).unwrap().0;
                    if relu {
                        y.relu().unwrap()
                    } else {
                        y
                    }
                }
            };
            let l = (y.tanh().unwrap() * &c).unwrap().sum_all().unwrap();
            let grads = l.backward().unwrap();
            let ts = [x.as_tensor(), g.as_tensor(), b.as_tensor()];
            let first: Vec<Tensor> = ts.iter().map(|t| grads.get(t).unwrap().clone()).collect();
            let s = ((first[0].powf(3.0).unwrap().sum_all().unwrap()
                + first[1].sqr().unwrap().sum_all().unwrap())
            .unwrap()
                + first[2].sqr().unwrap().sum_all().unwrap())
            .unwrap();
            let h = s.backward().unwrap();
            let second: Vec<Tensor> = ts.iter().map(|t| h.get(t).unwrap().clone()).collect();
            (first, second)
        };
        for relu in [false, true] {
            let ((f1, s1), (f2, s2)) = (run(true, relu), run(false, relu));
            for (a, b) in f1.iter().zip(&f2).chain(s1.iter().zip(&s2)) {
                let d = relative_diff(a, b);
                assert!(d < 1e-9, "relu {relu}: {d}");
            }
        }
    }

    /// The fused backward kernel of final passes gives the composed formula's gradients, as
    /// constants, with and without ReLU, in f64 and f32, and no ∂x for a constant input.
    #[test]
    fn final_gradients_equal_the_composed_ones() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        for dtype in [DType::F64, DType::F32] {
            for relu in [false, true] {
                let c = seeded(&[3, 4, 5, 3], 8).to_dtype(dtype).unwrap();
                let run = |is_final: bool, x_is_variable: bool| {
                    let x = Var::from_tensor(&seeded(&[3, 4, 5, 3], 9).to_dtype(dtype).unwrap())
                        .unwrap();
                    let g = Var::from_tensor(&seeded(&[4], 10).to_dtype(dtype).unwrap()).unwrap();
                    let b = Var::from_tensor(&seeded(&[4], 11).to_dtype(dtype).unwrap()).unwrap();
                    let input = if x_is_variable {
                        x.as_tensor().clone()
                    } else {
                        x.as_tensor().detach()
                    };
                    let norm = if relu { batch_norm_relu } else { batch_norm };
                    let y = norm(&input, g.as_tensor(), b.as_tensor(), 1e-5).unwrap().0;
                    let l = (y.sqr().unwrap() * &c).unwrap().sum_all().unwrap();
                    let grads = if is_final {
                        crate::kernels::backward_final(&l).unwrap()
                    } else {
                        l.backward().unwrap()
                    };
                    [x.as_tensor(), g.as_tensor(), b.as_tensor()]
                        .map(|t| grads.get(t).map(|g| g.to_dtype(DType::F64).unwrap()))
                };
                let tolerance = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
                let (fused, composed) = (run(true, true), run(false, true));
                for (a, b) in fused.iter().zip(&composed) {
                    let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
                    assert!(!a.track_op(), "a final gradient is a constant");
                    let d = relative_diff(a, b);
                    assert!(d < tolerance, "{dtype:?} relu {relu}: {d}");
                }
                let constant_input = run(true, false);
                assert!(constant_input[0].is_none());
                assert!(
                    relative_diff(
                        constant_input[1].as_ref().unwrap(),
                        composed[1].as_ref().unwrap()
                    ) < tolerance
                );
            }
        }
    }
}
