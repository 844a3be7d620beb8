//! BatchNorm with batch statistics as one op, its backward pass composed of the channel ops.
//!
//! Written with [`channel_sum`], [`channel_center`] and [`channel_affine`], batch
//! normalisation puts four activation-sized tensors into the graph (centred, squared, output,
//! and the input's use), each of which candle's backward pass accumulates as `zeros + g`. As
//! one op the forward pass is one kernel (two passes over the input for the statistics, one
//! to write) and one node. Its gradient is the textbook formula
//! `∂x = γr·(u − mean(u) − x̂·mean(u ⊙ x̂))`, `∂γ = Σ u ⊙ x̂`, `∂β = Σ u` (r = 1/√(σ² + ε),
//! x̂ = (x − μ)·r), built from differentiable ops of `x`, `γ` and `u`, so the attack's
//! second-order gradients stay exact. The op reports the batch mean and (biased) variance it
//! used, for the running statistics.

use super::buffer::par_build;
use super::affine::{channel_affine, channel_center};
use super::channel::channel_sum;
use super::constants::needs_gradient;
use super::gemm::Element;
use super::items_per_task;
use super::storage::{by_dtype, contiguous, Operand};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
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
    if !(x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)) {
        let (y, mean, var) = composed(x, gamma, beta, eps)?;
        let stats = BatchStats {
            mean: mean.detach(),
            var: var.detach(),
        };
        return Ok((y, stats));
    }
    let report: Report = Arc::new(Mutex::new(None));
    let op = BatchNorm {
        eps,
        report: report.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let stats = report
        .lock()
        .map_err(|_| candle_core::Error::Msg("batch norm: statistics lock poisoned".into()))?
        .take()
        .ok_or_else(|| candle_core::Error::Msg("batch norm: no statistics reported".into()))?;
    let (mean, var): (Vec<f64>, Vec<f64>) = stats;
    let to = |v: Vec<f64>| Tensor::from_vec(v, c, x.device())?.to_dtype(x.dtype());
    Ok((
        y,
        BatchStats {
            mean: to(mean)?,
            var: to(var)?,
        },
    ))
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

/// (mean, variance) per channel, written by the forward kernel for the caller.
type Report = Arc<Mutex<Option<(Vec<f64>, Vec<f64>)>>>;

struct BatchNorm {
    eps: f64,
    report: Report,
}

impl BatchNorm {
    #[allow(clippy::too_many_arguments)]
    fn run<T: Operand>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = "batch norm";
        let (x, gamma, beta) = (
            contiguous::<T>(s1, l1, name)?,
            contiguous::<T>(s2, l2, name)?,
            contiguous::<T>(s3, l3, name)?,
        );
        let (n, c, h, w) = l1.shape().dims4()?;
        let plane = h * w;
        let m = T::from_f64((n * plane) as f64);
        let eps = T::from_f64(self.eps);
        let planes = |ch: usize| (0..n).map(move |i| (i * c + ch) * plane);
        // statistics per channel: mean, then the mean squared deviation (two passes)
        let stats: Vec<(T, T)> = (0..c)
            .into_par_iter()
            .with_min_len(items_per_task(n * plane))
            .map(|ch| {
                let mut sum = T::ZERO;
                for start in planes(ch) {
                    sum += x[start..start + plane].iter().fold(T::ZERO, |a, &v| a + v);
                }
                let mean = div(sum, m);
                let mut squares = T::ZERO;
                for start in planes(ch) {
                    squares += x[start..start + plane]
                        .iter()
                        .fold(T::ZERO, |a, &v| a + (v - mean) * (v - mean));
                }
                (mean, div(squares, m))
            })
            .collect();
        let y = par_build(x.len(), plane, items_per_task(plane), |i, dst| {
            let ch = i % c;
            let (mean, var) = stats[ch];
            let scale = div(gamma[ch], sqrt(var + eps));
            for (d, &v) in dst.iter_mut().zip(&x[i * plane..]) {
                *d = (v - mean) * scale + beta[ch];
            }
        });
        let report = (
            stats.iter().map(|s| s.0.to_f64()).collect(),
            stats.iter().map(|s| s.1.to_f64()).collect(),
        );
        *self.report.lock().map_err(|_| {
            candle_core::Error::Msg("batch norm: statistics lock poisoned".into())
        })? = Some(report);
        Ok((T::wrap(y), l1.shape().clone()))
    }
}

fn div<T: Element>(a: T, b: T) -> T {
    T::from_f64(a.to_f64() / b.to_f64())
}

fn sqrt<T: Element>(v: T) -> T {
    T::from_f64(v.to_f64().sqrt())
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "synfed-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1.dtype(), self.name(), self.run(s1, l1, s2, l2, s3, l3))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        u: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, _, h, w) = x.dims4()?;
        let m = (n * h * w) as f64;
        let mean = (channel_sum(x)? / m)?;
        let centered = channel_center(x, &mean)?;
        let var = (channel_sum(&centered.sqr()?)? / m)?;
        let r = (&var + self.eps)?.sqrt()?.recip()?;
        let normed = channel_affine(&centered, &r, &r.zeros_like()?)?;
        let d_beta = channel_sum(u)?;
        let d_gamma = channel_sum(&(u * &normed)?)?;
        let dx = if needs_gradient(x) {
            let gr = (gamma * &r)?;
            let shift = ((&gr * &d_beta)? / m)?;
            let slope = ((&gr * &d_gamma)? / m)?;
            let zero = gr.zeros_like()?;
            Some((channel_affine(u, &gr, &zero)? - channel_affine(&normed, &slope, &shift)?)?)
        } else {
            None
        };
        Ok((dx, Some(d_gamma), Some(d_beta)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{max_diff, seeded};
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

    /// First and second derivatives in x, γ, β equal those of the composition (an independent
    /// differentiation by the ops' own backward passes), with S = Σ(∂L/∂x)³ + Σ(∂L/∂γ)² + Σ(∂L/∂β)²
    /// for L = Σ c ⊙ tanh(bn(x²)).
    #[test]
    fn gradients_to_second_order_match_the_composition() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let c = seeded(&[2, 3, 4, 5], 7);
        let run = |fused: bool| {
            let x = Var::from_tensor(&seeded(&[2, 3, 4, 5], 4)).unwrap();
            let g = Var::from_tensor(&seeded(&[3], 5)).unwrap();
            let b = Var::from_tensor(&seeded(&[3], 6)).unwrap();
            let sq = x.as_tensor().sqr().unwrap();
            let y = if fused {
                batch_norm(&sq, g.as_tensor(), b.as_tensor(), 1e-5)
                    .unwrap()
                    .0
            } else {
                composed(&sq, g.as_tensor(), b.as_tensor(), 1e-5).unwrap().0
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
        let ((f1, s1), (f2, s2)) = (run(true), run(false));
        for (a, b) in f1.iter().zip(&f2).chain(s1.iter().zip(&s2)) {
            let scale = b
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                .max(1.0);
            assert!(
                max_diff(a, b) < 1e-9 * scale,
                "{} (scale {scale})",
                max_diff(a, b)
            );
        }
    }
}
