//! Matrix products with either factor transposed, whose gradients are products of the same kind.
//!
//! A fully connected layer computes `x · Wᵀ` with `W` stored `[out, in]` (PyTorch's layout,
//! which captures and checkpoints keep). Through candle's `matmul` of a transposed view, the
//! backward pass produces `∂W` as a transposed view too, and adding it into the gradient store
//! walks a 9 M-element matrix column by column (~80 ms per layer on the CIFAR MLP). Here the
//! transposition is a flag of the product instead: `gemm` reads either factor with any strides,
//! and each gradient is written directly in its parameter's layout. The gradient of every
//! product is again a [`matmul`], so the attack's second-order gradients stay exact.

use super::backward::needs_gradient;
use super::cpu::gemm::{matmul_new, Matrix};
use super::cpu::Scalar;
use super::custom_op::{apply, CpuKernel, Forward, Gradients, Input};
use super::dispatch::compute;
use candle_core::{bail, Result, Shape, Tensor};

/// `op(a) · op(b)` for 2-D tensors, where `op` transposes when its flag is set.
///
/// On the CPU this is one `gemm` call on the operands' own strides (no copies); elsewhere it is
/// candle's `matmul` of the transposed views.
pub fn matmul(a: &Tensor, transpose_a: bool, b: &Tensor, transpose_b: bool) -> Result<Tensor> {
    let (ar, ac) = a.dims2()?;
    let (br, bc) = b.dims2()?;
    let inner_a = if transpose_a { ar } else { ac };
    let inner_b = if transpose_b { bc } else { br };
    if inner_a != inner_b {
        bail!(
            "matmul: inner dimensions differ ({:?}{} · {:?}{})",
            a.dims(),
            if transpose_a { "ᵀ" } else { "" },
            b.dims(),
            if transpose_b { "ᵀ" } else { "" }
        );
    }
    let op = MatMul {
        transpose_a,
        transpose_b,
    };
    compute(
        a,
        || apply(op, [a, b]),
        || {
            let a = if transpose_a { a.t()? } else { a.clone() };
            let b = if transpose_b { b.t()? } else { b.clone() };
            a.matmul(&b)
        },
    )
}

/// The custom op behind [`matmul`].
#[derive(Clone, Copy, Debug)]
struct MatMul {
    transpose_a: bool,
    transpose_b: bool,
}

/// An operand as a `gemm` matrix on its own strides, transposed when `transpose` is set.
fn view<'a, T: Scalar>(input: &Input<'a, T>, transpose: bool) -> Result<Matrix<'a, T>> {
    let (data, layout) = input.strided()?;
    let (rows, cols) = layout.shape().dims2()?;
    let stride = layout.stride();
    let m = Matrix::new(data, rows, cols, stride[0], stride[1])?;
    Ok(if transpose { m.t() } else { m })
}

impl CpuKernel<2> for MatMul {
    const READS_STRIDES: bool = true;

    fn name(&self) -> &'static str {
        "synfed-matmul"
    }

    fn forward<T: Scalar>(&self, [a, b]: [Input<'_, T>; 2]) -> Forward<T> {
        let a = view(&a, self.transpose_a)?;
        let b = view(&b, self.transpose_b)?;
        let (m, n) = (a.rows(), b.cols());
        Ok((matmul_new(a, b)?, Shape::from((m, n))))
    }

    /// For C = op(A)·op(B) with upstream gradient G:
    /// A·B → (G·Bᵀ, Aᵀ·G); A·Bᵀ → (G·B, Gᵀ·A); Aᵀ·B → (B·Gᵀ, A·G); Aᵀ·Bᵀ → (Bᵀ·Gᵀ, Gᵀ·Aᵀ).
    fn backward(&self, [a, b]: [&Tensor; 2], _res: &Tensor, g: &Tensor) -> Gradients<2> {
        // an operand that is neither a variable nor computed from one, or is declared
        // constant, needs no gradient
        let da = match (needs_gradient(a), self.transpose_a, self.transpose_b) {
            (false, _, _) => None,
            (true, false, false) => Some(matmul(g, false, b, true)?),
            (true, false, true) => Some(matmul(g, false, b, false)?),
            (true, true, false) => Some(matmul(b, false, g, true)?),
            (true, true, true) => Some(matmul(b, true, g, true)?),
        };
        let db = match (needs_gradient(b), self.transpose_a, self.transpose_b) {
            (false, _, _) => None,
            (true, false, false) => Some(matmul(a, true, g, false)?),
            (true, false, true) => Some(matmul(g, true, a, false)?),
            (true, true, false) => Some(matmul(a, false, g, false)?),
            (true, true, true) => Some(matmul(g, true, a, true)?),
        };
        Ok([da, db])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{max_diff, seeded};
    use candle_core::Var;

    #[test]
    fn every_transposition_matches_candles_matmul() {
        let a = seeded(&[4, 6], 1);
        let b = seeded(&[6, 5], 2);
        let expected = a.matmul(&b).unwrap();
        let at = a.t().unwrap().contiguous().unwrap();
        let bt = b.t().unwrap().contiguous().unwrap();
        for (x, tx, y, ty) in [
            (&a, false, &b, false),
            (&a, false, &bt, true),
            (&at, true, &b, false),
            (&at, true, &bt, true),
        ] {
            assert!(max_diff(&matmul(x, tx, y, ty).unwrap(), &expected) < 1e-12);
        }
        // a strided operand (a transposed view) is read in place
        assert!(
            max_diff(
                &matmul(&at.t().unwrap(), false, &b, false).unwrap(),
                &expected
            ) < 1e-12
        );
        assert!(matmul(&a, true, &b, false).is_err());
    }

    /// First and second derivatives of every transposition equal those of candle's own
    /// `matmul` composed with `t()` (the independent reference), including the gradient of a
    /// function of the gradient — what the attack differentiates.
    #[test]
    fn first_and_second_order_gradients_match_candles() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = Var::from_tensor(&seeded(if ta { &[6, 4] } else { &[4, 6] }, 3)).unwrap();
            let b = Var::from_tensor(&seeded(if tb { &[5, 6] } else { &[6, 5] }, 4)).unwrap();
            let w = seeded(&[4, 5], 5);
            let reference = |a: &Tensor, b: &Tensor| {
                let a = if ta { a.t().unwrap() } else { a.clone() };
                let b = if tb { b.t().unwrap() } else { b.clone() };
                a.matmul(&b).unwrap()
            };
            let ours = |a: &Tensor, b: &Tensor| matmul(a, ta, b, tb).unwrap();
            let objective = |f: &dyn Fn(&Tensor, &Tensor) -> Tensor| {
                // L = Σ w ⊙ tanh(op(a)·op(b)); then S = ‖∂L/∂a‖² + Σ (∂L/∂b)³
                let l = (f(a.as_tensor(), b.as_tensor()).tanh().unwrap() * &w)
                    .unwrap()
                    .sum_all()
                    .unwrap();
                let g = l.backward().unwrap();
                let ga = g.get(a.as_tensor()).unwrap().clone();
                let gb = g.get(b.as_tensor()).unwrap().clone();
                let s = (ga.sqr().unwrap().sum_all().unwrap()
                    + gb.powf(3.0).unwrap().sum_all().unwrap())
                .unwrap();
                let h = s.backward().unwrap();
                (
                    ga,
                    gb,
                    h.get(a.as_tensor()).unwrap().clone(),
                    h.get(b.as_tensor()).unwrap().clone(),
                )
            };
            let (ga, gb, ha, hb) = objective(&ours);
            let (ra, rb, rha, rhb) = objective(&reference);
            for (x, y) in [(&ga, &ra), (&gb, &rb), (&ha, &rha), (&hb, &rhb)] {
                assert!(max_diff(x, y) < 1e-12, "({ta}, {tb}): {}", max_diff(x, y));
            }
        }
    }
}
