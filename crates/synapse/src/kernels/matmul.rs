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
use super::gemm::{matmul_new, Matrix};
use super::storage::{by_dtype, Operand};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

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
    if !a.device().is_cpu() || !matches!(a.dtype(), DType::F32 | DType::F64) {
        let a = if transpose_a { a.t()? } else { a.clone() };
        let b = if transpose_b { b.t()? } else { b.clone() };
        return a.matmul(&b);
    }
    a.apply_op2(
        b,
        MatMul {
            transpose_a,
            transpose_b,
        },
    )
}

/// The custom op behind [`matmul`].
#[derive(Clone, Copy, Debug)]
struct MatMul {
    transpose_a: bool,
    transpose_b: bool,
}

impl MatMul {
    fn view<'a, T: Operand>(
        storage: &'a CpuStorage,
        layout: &Layout,
        transpose: bool,
    ) -> Result<Matrix<'a, T>> {
        let (rows, cols) = layout.shape().dims2()?;
        let stride = layout.stride();
        let m = Matrix::new(
            T::slice(storage, layout, "matmul")?,
            rows,
            cols,
            stride[0],
            stride[1],
        )?;
        Ok(if transpose { m.t() } else { m })
    }

    fn run<T: Operand>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = Self::view::<T>(s1, l1, self.transpose_a)?;
        let b = Self::view::<T>(s2, l2, self.transpose_b)?;
        let (m, n) = (a.rows(), b.cols());
        let out = matmul_new(a, b)?;
        Ok((T::wrap(out), Shape::from((m, n))))
    }
}

impl CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "synfed-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_dtype!(s1.dtype(), self.name(), self.run(s1, l1, s2, l2))
    }

    /// For C = op(A)·op(B) with upstream gradient G:
    /// A·B → (G·Bᵀ, Aᵀ·G); A·Bᵀ → (G·B, Gᵀ·A); Aᵀ·B → (B·Gᵀ, A·G); Aᵀ·Bᵀ → (Bᵀ·Gᵀ, Gᵀ·Aᵀ).
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
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
        Ok((da, db))
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
