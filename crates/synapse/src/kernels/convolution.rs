//! 2-D convolution as three candle custom ops over `gemm` — forward, input gradient and weight
//! gradient — each of whose gradients is expressed with the three again.
//!
//! candle 0.11's CPU convolution computes its input gradient with a direct `conv_transpose2d`
//! loop, which dominates a ResNet training step and, twice over, an attack iteration. Here all
//! three are an unfolding ([`im2col`]) and matrix products:
//!
//! * forward       `yᵢ = W · col(xᵢ)`             `[O, K] · [K, P]`
//! * input grad    `∂xᵢ = fold(Wᵀ · gᵢ)`          `[K, O] · [O, P]`
//! * weight grad   `∂Wᵀ = Σᵢ col(xᵢ) · gᵢᵀ`       `[K, P] · [P, O]`, summed in image order
//!
//! (K = C·kh·kw taps, P output positions per image.) The three are one bilinear form seen
//! from each of its arguments, ⟨conv(x, W), g⟩ = ⟨x, input_grad(g, W)⟩ = ⟨W, weight_grad(x, g)⟩,
//! so the derivative of each with respect to either argument is one of the others — that
//! closure is what keeps the attack's gradient-of-a-gradient exact. 3×3 "same" convolutions
//! compute the same linear maps by Winograd's F(2×2, 3×3) or register-tiled direct kernels;
//! which algorithm computes a product is the CPU side's choice (`cpu::convolution`).
//! Off the CPU the public functions use candle's own convolution kernels.

use super::backward::needs_gradient;
use super::cpu::convolution::{self as cpu, Product, Transformed};
use super::cpu::im2col::ConvGeometry;
use super::cpu::Scalar;
use super::custom_op::{apply, values, CpuKernel, Forward, Gradients, Input};
use super::dispatch::compute;
use candle_core::{bail, Result, Shape, Tensor};

/// Stride and zero padding of a square-stepped convolution (dilation 1, one group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    pub stride: usize,
    pub padding: usize,
}

/// Cross-correlation of `x` `[N, C, H, W]` with `weight` `[O, C, kh, kw]` → `[N, O, Ho, Wo]`,
/// PyTorch's `conv2d` without bias.
pub fn conv2d(x: &Tensor, weight: &Tensor, p: ConvParams) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (o, wc, kh, kw) = weight.dims4()?;
    if c != wc {
        bail!(
            "conv2d: input has {c} channels, the kernel {:?} expects {wc}",
            weight.dims()
        );
    }
    let geometry = geometry(p, n, c, o, (h, w), (kh, kw))?;
    compute(
        x,
        || product(x, weight, Conv::Forward(geometry, Transformed::default())),
        || candle_conv2d(x, weight, p),
    )
}

/// The gradient of [`conv2d`] with respect to its input, for the upstream gradient `g`
/// `[N, O, Ho, Wo]`, an input of spatial size `input_hw`.
pub fn conv2d_input_grad(
    g: &Tensor,
    weight: &Tensor,
    input_hw: (usize, usize),
    p: ConvParams,
) -> Result<Tensor> {
    let (n, o, gh, gw) = g.dims4()?;
    let (wo, c, kh, kw) = weight.dims4()?;
    let geometry = geometry(p, n, c, o, input_hw, (kh, kw))?;
    if wo != o || (gh, gw) != (geometry.out_h(), geometry.out_w()) {
        bail!(
            "conv2d input gradient: gradient {:?} does not match kernel {:?} on a {input_hw:?} input",
            g.dims(),
            weight.dims()
        );
    }
    compute(
        g,
        || product(g, weight, Conv::InputGrad(geometry, Transformed::default())),
        || candle_conv2d_input_grad(g, weight, &geometry),
    )
}

/// The gradient of [`conv2d`] with respect to its `[O, C, kh, kw]` kernel, for the input `x`
/// and the upstream gradient `g`.
pub fn conv2d_weight_grad(
    x: &Tensor,
    g: &Tensor,
    kernel_hw: (usize, usize),
    p: ConvParams,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (gn, o, gh, gw) = g.dims4()?;
    let geometry = geometry(p, n, c, o, (h, w), kernel_hw)?;
    if gn != n || (gh, gw) != (geometry.out_h(), geometry.out_w()) {
        bail!(
            "conv2d weight gradient: gradient {:?} does not match input {:?} with a {kernel_hw:?} kernel",
            g.dims(),
            x.dims()
        );
    }
    compute(
        x,
        || product(x, g, Conv::WeightGrad(geometry)),
        || candle_conv2d_weight_grad(x, g, &geometry),
    )
}

/// [`conv2d`] by candle's convolution (operands already checked).
fn candle_conv2d(x: &Tensor, weight: &Tensor, p: ConvParams) -> Result<Tensor> {
    x.conv2d(weight, p.padding, p.stride, 1, 1)
}

/// [`conv2d_input_grad`] by candle's transposed convolution (operands already checked).
fn candle_conv2d_input_grad(g: &Tensor, weight: &Tensor, geo: &ConvGeometry) -> Result<Tensor> {
    let (_, _, gh, gw) = g.dims4()?;
    let (h, w, s, pad) = (geo.in_h, geo.in_w, geo.stride, geo.padding);
    // The transposed convolution yields (g − 1)·s + k − 2p rows; rows a stride dropped at the
    // end still receive gradient, which candle's output padding computes.
    let out_h = (gh - 1) * s + geo.kernel_h - 2 * pad;
    let out_w = (gw - 1) * s + geo.kernel_w - 2 * pad;
    let extra = (h - out_h).max(w - out_w);
    let dx = g.conv_transpose2d(weight, pad, extra, s, 1)?;
    dx.narrow(2, 0, h)?.narrow(3, 0, w)
}

/// [`conv2d_weight_grad`] by candle's convolution (operands already checked): ∂W[o, c] =
/// Σₙ x[n, c] ⋆ g[n, o], a convolution with batch and channels swapped.
fn candle_conv2d_weight_grad(x: &Tensor, g: &Tensor, geo: &ConvGeometry) -> Result<Tensor> {
    let dw = x
        .transpose(0, 1)?
        .contiguous()?
        .conv2d(
            &g.transpose(0, 1)?.contiguous()?,
            geo.padding,
            1,
            geo.stride,
            1,
        )?
        .transpose(0, 1)?;
    dw.narrow(2, 0, geo.kernel_h)?
        .narrow(3, 0, geo.kernel_w)?
        .contiguous()
}

fn geometry(
    p: ConvParams,
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    (in_h, in_w): (usize, usize),
    (kernel_h, kernel_w): (usize, usize),
) -> Result<ConvGeometry> {
    if p.stride == 0 {
        bail!("conv2d: stride 0");
    }
    if kernel_h == 0
        || kernel_w == 0
        || in_h + 2 * p.padding < kernel_h
        || in_w + 2 * p.padding < kernel_w
    {
        bail!(
            "conv2d: a {kernel_h}×{kernel_w} kernel does not fit a {in_h}×{in_w} input with padding {}",
            p.padding
        );
    }
    Ok(ConvGeometry {
        batch,
        in_channels,
        out_channels,
        in_h,
        in_w,
        kernel_h,
        kernel_w,
        stride: p.stride,
        padding: p.padding,
    })
}

/// One of the ops on contiguous operands.
fn product(a: &Tensor, b: &Tensor, op: Conv) -> Result<Tensor> {
    apply(op, [a, b])
}

/// The three ops; each carries the full geometry so that its backward pass can build the
/// others. The two that take the kernel as their second operand carry its Winograd transform
/// once computed, shared with the ops their backward passes build on the same kernel.
#[derive(Clone, Debug)]
enum Conv {
    /// (x, W) → y
    Forward(ConvGeometry, Transformed),
    /// (g, W) → ∂x
    InputGrad(ConvGeometry, Transformed),
    /// (x, g) → ∂W
    WeightGrad(ConvGeometry),
}

impl Conv {
    fn geometry(&self) -> ConvGeometry {
        match self {
            Conv::Forward(g, _) | Conv::InputGrad(g, _) | Conv::WeightGrad(g) => *g,
        }
    }
}

impl CpuKernel<2> for Conv {
    fn name(&self) -> &'static str {
        match self {
            Conv::Forward(..) => "synfed-conv2d",
            Conv::InputGrad(..) => "synfed-conv2d-input-grad",
            Conv::WeightGrad(_) => "synfed-conv2d-weight-grad",
        }
    }

    fn forward<T: Scalar>(&self, inputs: [Input<'_, T>; 2]) -> Forward<T> {
        let [a, b] = values(&inputs)?;
        let g = self.geometry();
        let (n, c, o) = (g.batch, g.in_channels, g.out_channels);
        let (product, shape) = match self {
            Conv::Forward(_, kernel) => (
                Product::Forward(kernel),
                Shape::from((n, o, g.out_h(), g.out_w())),
            ),
            Conv::InputGrad(_, kernel) => (
                Product::InputGrad(kernel),
                Shape::from((n, c, g.in_h, g.in_w)),
            ),
            Conv::WeightGrad(_) => (
                Product::WeightGrad,
                Shape::from((o, c, g.kernel_h, g.kernel_w)),
            ),
        };
        Ok((cpu::compute(product, a, b, &g, self.name())?, shape))
    }

    /// With upstream gradient `u` (shaped like the op's result):
    /// y = conv(x, W):      ∂x = input_grad(u, W),  ∂W = weight_grad(x, u)
    /// ∂x = input_grad(g, W): ∂g = conv(u, W),      ∂W = weight_grad(u, g)
    /// ∂W = weight_grad(x, g): ∂x = input_grad(g, u), ∂g = conv(x, u)
    fn backward(&self, [a, b]: [&Tensor; 2], _res: &Tensor, u: &Tensor) -> Gradients<2> {
        let g = self.geometry();
        let p = ConvParams {
            stride: g.stride,
            padding: g.padding,
        };
        let kernel_hw = (g.kernel_h, g.kernel_w);
        // an operand that is neither a variable nor computed from one (the images of a
        // training step), or is declared constant, needs no gradient
        let (need_a, need_b) = (needs_gradient(a), needs_gradient(b));
        // the products on the same kernel share its transform (the operands are the op's
        // own, so the shapes are the geometry's)
        let (da, db) = match self {
            Conv::Forward(_, kernel) => (
                need_a.then(|| product(u, b, Conv::InputGrad(g, kernel.clone()))),
                need_b.then(|| conv2d_weight_grad(a, u, kernel_hw, p)),
            ),
            Conv::InputGrad(_, kernel) => (
                need_a.then(|| product(u, b, Conv::Forward(g, kernel.clone()))),
                need_b.then(|| conv2d_weight_grad(u, a, kernel_hw, p)),
            ),
            Conv::WeightGrad(_) => {
                let kernel = Transformed::default();
                (
                    need_a.then(|| product(b, u, Conv::InputGrad(g, kernel.clone()))),
                    need_b.then(|| product(a, u, Conv::Forward(g, kernel))),
                )
            }
        };
        Ok([da.transpose()?, db.transpose()?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{max_diff, seeded};
    use candle_core::DType;
    use candle_core::Var;

    /// Deterministic values in [−1, 1).
    /// (input dims, kernel dims, params): 3×3 same/strided, 1×1 shortcuts, 5×5, rectangular,
    /// and a stride that drops rows (the input gradient must restore them).
    fn cases() -> Vec<([usize; 4], [usize; 4], ConvParams)> {
        let p = |stride, padding| ConvParams { stride, padding };
        vec![
            ([2, 3, 6, 5], [4, 3, 3, 3], p(1, 1)),
            ([2, 3, 7, 6], [4, 3, 3, 3], p(2, 1)),
            ([3, 4, 6, 6], [2, 4, 1, 1], p(2, 0)),
            ([1, 2, 8, 8], [3, 2, 5, 5], p(2, 2)),
            ([2, 2, 5, 7], [3, 2, 2, 3], p(3, 0)),
            ([1, 1, 4, 4], [2, 1, 3, 3], p(1, 0)),
            ([2, 3, 7, 7], [4, 3, 3, 3], p(2, 1)),
            ([2, 3, 7, 7], [2, 3, 1, 1], p(2, 0)),
            // stride 1: 1×1, 5×5, padding from 0 to k − 1, a non-square kernel
            ([2, 3, 5, 6], [2, 3, 1, 1], p(1, 0)),
            ([1, 2, 7, 6], [3, 2, 5, 5], p(1, 2)),
            ([1, 2, 5, 5], [2, 2, 3, 3], p(1, 2)),
            ([2, 2, 5, 6], [3, 2, 2, 3], p(1, 1)),
            // 3×3 "same" below Winograd's separate passes (fused Winograd tiles, direct weight
            // gradient): channel counts that leave partial register tiles
            ([3, 7, 9, 11], [13, 7, 3, 3], p(1, 1)),
            // wide enough for Winograd's F(2×2, 3×3) (forward and input gradient), odd width
            ([2, 128, 4, 5], [128, 128, 3, 3], p(1, 1)),
        ]
    }

    #[test]
    fn forward_matches_candles_convolution() {
        for (xd, wd, p) in cases() {
            let (x, w) = (seeded(&xd, 1), seeded(&wd, 2));
            let ours = conv2d(&x, &w, p).unwrap();
            let theirs = candle_conv2d(&x, &w, p).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-12, "{xd:?} {wd:?} {p:?}");
            let f32s = conv2d(
                &x.to_dtype(DType::F32).unwrap(),
                &w.to_dtype(DType::F32).unwrap(),
                p,
            )
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
            assert!(max_diff(&f32s, &theirs) < 1e-5);
        }
    }

    /// The gradient ops against candle's (transposed convolution for ∂x, a convolution with
    /// batch and channels swapped for ∂W), which is also the CUDA path's code.
    #[test]
    fn gradient_ops_match_candles_formulation() {
        for (xd, wd, p) in cases() {
            let (x, w) = (seeded(&xd, 3), seeded(&wd, 4));
            let y = conv2d(&x, &w, p).unwrap();
            let g = seeded(y.dims(), 5);
            let hw = (xd[2], xd[3]);
            let kernel = (wd[2], wd[3]);
            let geo = geometry(p, xd[0], xd[1], wd[0], hw, kernel).unwrap();
            let dx = conv2d_input_grad(&g, &w, hw, p).unwrap();
            let dx_ref = candle_conv2d_input_grad(&g, &w, &geo).unwrap();
            assert!(max_diff(&dx, &dx_ref) < 1e-12, "∂x {xd:?} {wd:?} {p:?}");
            let dw = conv2d_weight_grad(&x, &g, kernel, p).unwrap();
            let dw_ref = candle_conv2d_weight_grad(&x, &g, &geo).unwrap();
            assert!(max_diff(&dw, &dw_ref) < 1e-12, "∂W {xd:?} {wd:?} {p:?}");
        }
    }

    /// S(x, W) = ‖∂L/∂x‖² + Σ (∂L/∂W)³ with L = Σ c ⊙ tanh(conv(x, W)): a function of the
    /// first-order gradients, as the attack's objective is. Returns S and its gradients.
    fn second_order(x: &Tensor, w: &Tensor, c: &Tensor, p: ConvParams) -> (f64, Tensor, Tensor) {
        second_order_by(conv2d, x, w, c, p)
    }

    /// [`second_order`] with `conv` computing the convolution.
    fn second_order_by(
        conv: fn(&Tensor, &Tensor, ConvParams) -> Result<Tensor>,
        x: &Tensor,
        w: &Tensor,
        c: &Tensor,
        p: ConvParams,
    ) -> (f64, Tensor, Tensor) {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
        let l = (conv(xv.as_tensor(), wv.as_tensor(), p)
            .unwrap()
            .tanh()
            .unwrap()
            * c)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = l.backward().unwrap();
        let (gx, gw) = (
            g.get(xv.as_tensor()).unwrap(),
            g.get(wv.as_tensor()).unwrap(),
        );
        let s = (gx.sqr().unwrap().sum_all().unwrap() + gw.powf(3.0).unwrap().sum_all().unwrap())
            .unwrap();
        let h = s.backward().unwrap();
        (
            s.to_scalar::<f64>().unwrap(),
            h.get(xv.as_tensor()).unwrap().clone(),
            h.get(wv.as_tensor()).unwrap().clone(),
        )
    }

    /// Central differences in f64 along a fixed direction, for x and for W: the exact
    /// second-order gradient (through all three ops and their backward passes) agrees.
    #[test]
    fn second_order_gradients_match_finite_differences() {
        for (xd, wd, p) in cases() {
            let (x, w) = (seeded(&xd, 6), seeded(&wd, 7));
            let c = seeded(conv2d(&x, &w, p).unwrap().dims(), 8);
            let (_, hx, hw) = second_order(&x, &w, &c, p);
            let (vx, vw) = (seeded(&xd, 9), seeded(&wd, 10));
            let eps = 1e-5;
            let along = |dx: f64, dw: f64| {
                let x = (&x + (&vx * dx).unwrap()).unwrap();
                let w = (&w + (&vw * dw).unwrap()).unwrap();
                second_order(&x, &w, &c, p).0
            };
            let dot = |a: &Tensor, b: &Tensor| {
                (a * b)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            for (analytic, numeric) in [
                (
                    dot(&hx, &vx),
                    (along(eps, 0.0) - along(-eps, 0.0)) / (2.0 * eps),
                ),
                (
                    dot(&hw, &vw),
                    (along(0.0, eps) - along(0.0, -eps)) / (2.0 * eps),
                ),
            ] {
                let scale = analytic.abs().max(1.0);
                assert!(
                    (analytic - numeric).abs() < 1e-6 * scale,
                    "{xd:?} {wd:?} {p:?}: {analytic} vs {numeric}"
                );
            }
        }
    }

    /// The same second-order gradients through candle's own convolution (independent code).
    #[test]
    fn second_order_gradients_match_candles() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        // candle's own backward pass mis-shapes the input gradient when the stride drops
        // rows (its transposed convolution is not given the output padding), so only the
        // geometries it handles
        let exact = |xd: &[usize; 4], wd: &[usize; 4], p: &ConvParams| {
            (xd[2] + 2 * p.padding - wd[2]) % p.stride == 0
                && (xd[3] + 2 * p.padding - wd[3]) % p.stride == 0
        };
        for (xd, wd, p) in cases().into_iter().filter(|(x, w, p)| exact(x, w, p)) {
            let (x, w) = (seeded(&xd, 11), seeded(&wd, 12));
            let c = seeded(conv2d(&x, &w, p).unwrap().dims(), 13);
            let (s, hx, hw) = second_order(&x, &w, &c, p);
            let (s_ref, hx_ref, hw_ref) = second_order_by(candle_conv2d, &x, &w, &c, p);
            assert!((s - s_ref).abs() < 1e-9 * s.abs().max(1.0));
            assert!(max_diff(&hx, &hx_ref) < 1e-9, "{xd:?} {p:?}");
            assert!(max_diff(&hw, &hw_ref) < 1e-9, "{wd:?} {p:?}");
        }
    }

    /// A constant input (a training step's images) gets no gradient, and the kernel's is the
    /// same as when the input is a variable.
    #[test]
    fn constant_operands_are_skipped_without_changing_the_others() {
        let (xd, wd, p) = cases()[1];
        let (x, w0) = (seeded(&xd, 21), seeded(&wd, 22));
        let w = Var::from_tensor(&w0).unwrap();
        let g = conv2d(&x, w.as_tensor(), p)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&x).is_none());
        let xv = Var::from_tensor(&x).unwrap();
        let w2 = Var::from_tensor(&w0).unwrap();
        let g2 = conv2d(xv.as_tensor(), w2.as_tensor(), p)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(
            max_diff(
                g.get(w.as_tensor()).unwrap(),
                g2.get(w2.as_tensor()).unwrap()
            ),
            0.0
        );
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let x = seeded(&[1, 3, 4, 4], 1);
        let p = ConvParams {
            stride: 1,
            padding: 0,
        };
        assert!(conv2d(&x, &seeded(&[2, 2, 3, 3], 2), p).is_err());
        assert!(conv2d(&x, &seeded(&[2, 3, 5, 5], 2), p).is_err());
        assert!(conv2d(
            &x,
            &seeded(&[2, 3, 3, 3], 2),
            ConvParams {
                stride: 0,
                padding: 0
            }
        )
        .is_err());
        let w = seeded(&[2, 3, 3, 3], 2);
        assert!(conv2d_input_grad(&seeded(&[1, 2, 3, 3], 3), &w, (4, 4), p).is_err());
        assert!(conv2d_weight_grad(&x, &seeded(&[1, 2, 3, 3], 3), (3, 3), p).is_err());
    }
}
