//! The adapter between synfed's kernels and candle's custom-op traits, written once.
//!
//! candle asks each custom op of N operands (`CustomOp1`, `CustomOp2`, `CustomOp3`) for a name,
//! a forward pass over untyped CPU storages and layouts, and a backward pass returning a tuple
//! of N gradients. What every kernel must do first is the same — pick the element type (f32 or
//! f64, anything else an error naming the op), read each operand as a typed slice, wrap the
//! result back into storage — so a kernel implements [`CpuKernel`] instead (a forward pass over
//! typed [`Input`]s, a backward pass over arrays), and [`KernelOp`] turns any of them into the
//! candle op of its arity. [`apply`] is how a public op runs one.
//!
//! The fused backward kernels compute on tensors outside any custom op's forward pass, and
//! return constants rather than graph nodes; they implement [`CpuRead`] and run through
//! [`read`], the same typed access without an op.

use super::cpu::storage::{by_dtype, contiguous, Operand};
use super::cpu::Scalar;
use candle_core::backend::BackendStorage;
use candle_core::op::BackpropOp;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor,
};
use std::marker::PhantomData;

/// What a forward pass returns: the result's values and shape.
pub(crate) type Forward<T> = Result<(Vec<T>, Shape)>;

/// What a backward pass returns: the gradient for each operand, `None` where none is needed.
pub(crate) type Gradients<const N: usize> = Result<[Option<Tensor>; N]>;

/// A kernel of `N` tensor operands: its CPU forward pass, generic over the element type, and
/// its backward pass, written with differentiable ops (usually the kernels again) so that
/// gradients of gradients stay exact.
pub(crate) trait CpuKernel<const N: usize>: Send + Sync + 'static {
    /// Whether [`CpuKernel::forward`] reads its operands through their strides
    /// ([`Input::strided`]); otherwise [`apply`] makes them contiguous first and the forward
    /// pass reads [`Input::values`].
    const READS_STRIDES: bool = false;

    /// candle's name of the op (`synfed-…`), also the prefix of its error messages.
    fn name(&self) -> &'static str;

    /// The result's values and shape.
    fn forward<T: Scalar>(&self, inputs: [Input<'_, T>; N]) -> Forward<T>;

    /// The gradients given the operands, the op's result `res` and the upstream gradient `u`
    /// (shaped like `res`).
    fn backward(&self, operands: [&Tensor; N], res: &Tensor, u: &Tensor) -> Gradients<N>;
}

/// One operand of a kernel's forward pass, read as `T`.
pub(crate) struct Input<'a, T> {
    storage: &'a CpuStorage,
    layout: &'a Layout,
    op: &'static str,
    element: PhantomData<T>,
}

impl<'a, T: Operand> Input<'a, T> {
    fn new(storage: &'a CpuStorage, layout: &'a Layout, op: &'static str) -> Self {
        Self {
            storage,
            layout,
            op,
            element: PhantomData,
        }
    }

    /// The operand's values in row-major order, exactly as many as its shape holds (an error
    /// if it is not contiguous).
    pub(crate) fn values(&self) -> Result<&'a [T]> {
        contiguous(self.storage, self.layout, self.op)
    }

    /// The values from the layout's start offset on, and the layout (shape and strides) to
    /// read them by.
    pub(crate) fn strided(&self) -> Result<(&'a [T], &'a Layout)> {
        Ok((T::slice(self.storage, self.layout, self.op)?, self.layout))
    }

    pub(crate) fn shape(&self) -> &'a Shape {
        self.layout.shape()
    }
}

/// [`Input::values`] of every operand.
pub(crate) fn values<'a, T: Operand, const N: usize>(
    inputs: &[Input<'a, T>; N],
) -> Result<[&'a [T]; N]> {
    let mut out: [&[T]; N] = [&[]; N];
    for (slot, input) in out.iter_mut().zip(inputs) {
        *slot = input.values()?;
    }
    Ok(out)
}

/// A [`CpuKernel`] as the candle custom op of its arity.
pub(crate) struct KernelOp<K>(pub(crate) K);

/// Runs `kernel` on `operands` (made contiguous unless the kernel reads strides) as one node
/// of candle's graph.
pub(crate) fn apply<const N: usize, K: CpuKernel<N>>(
    kernel: K,
    operands: [&Tensor; N],
) -> Result<Tensor>
where
    KernelOp<K>: ApplyOp<N>,
{
    let operands = if K::READS_STRIDES {
        operands.map(Tensor::clone)
    } else {
        let mut owned = operands.map(Tensor::clone);
        for t in owned.iter_mut() {
            *t = t.contiguous()?;
        }
        owned
    };
    KernelOp(kernel).apply_to(operands)
}

/// candle's `apply_op1/2/3`, by arity.
pub(crate) trait ApplyOp<const N: usize> {
    fn apply_to(self, operands: [Tensor; N]) -> Result<Tensor>;
}

impl<K: CpuKernel<1>> ApplyOp<1> for KernelOp<K> {
    fn apply_to(self, [a]: [Tensor; 1]) -> Result<Tensor> {
        a.apply_op1(self)
    }
}

impl<K: CpuKernel<2>> ApplyOp<2> for KernelOp<K> {
    fn apply_to(self, [a, b]: [Tensor; 2]) -> Result<Tensor> {
        a.apply_op2(&b, self)
    }
}

impl<K: CpuKernel<3>> ApplyOp<3> for KernelOp<K> {
    fn apply_to(self, [a, b, c]: [Tensor; 3]) -> Result<Tensor> {
        a.apply_op3(&b, &c, self)
    }
}

/// The forward pass in the element type of the first operand.
fn forward<const N: usize, K: CpuKernel<N>>(
    kernel: &K,
    operands: [(&CpuStorage, &Layout); N],
) -> Result<(CpuStorage, Shape)> {
    by_dtype!(operands[0].0.dtype(), kernel.name(), T => {
        typed_forward::<T, N, K>(kernel, operands)
    })
}

fn typed_forward<T: Scalar, const N: usize, K: CpuKernel<N>>(
    kernel: &K,
    operands: [(&CpuStorage, &Layout); N],
) -> Result<(CpuStorage, Shape)> {
    let (values, shape) = kernel.forward(inputs(operands, kernel.name()))?;
    Ok((T::wrap(values), shape))
}

/// Every operand as a typed [`Input`] of `op`.
fn inputs<'a, T: Scalar, const N: usize>(
    operands: [(&'a CpuStorage, &'a Layout); N],
    op: &'static str,
) -> [Input<'a, T>; N] {
    operands.map(|(storage, layout)| Input::new(storage, layout, op))
}

/// A computation on the CPU values of `N` tensors outside any custom op (a fused backward
/// kernel), generic over the element type.
pub(crate) trait CpuRead<const N: usize> {
    type Output;

    /// The name its errors carry.
    const NAME: &'static str;

    fn read<T: Scalar>(&self, inputs: [Input<'_, T>; N]) -> Result<Self::Output>;
}

/// Runs `reader` on the values of `tensors` (made contiguous; all on the CPU, in the element
/// type of the first).
pub(crate) fn read<const N: usize, R: CpuRead<N>>(
    reader: &R,
    tensors: [&Tensor; N],
) -> Result<R::Output> {
    let name = R::NAME;
    let owned = tensors
        .iter()
        .map(|t| t.contiguous())
        .collect::<Result<Vec<Tensor>>>()?;
    let guards: Vec<_> = owned.iter().map(Tensor::storage_and_layout).collect();
    let mut parts = Vec::with_capacity(N);
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cpu(s) => parts.push((s, *layout)),
            _ => bail!("{name}: tensors off the CPU"),
        }
    }
    let Ok(parts) = <[(&CpuStorage, &Layout); N]>::try_from(parts) else {
        bail!("{name}: operand count");
    };
    by_dtype!(parts[0].0.dtype(), name, T => reader.read::<T>(inputs(parts, name)))
}

/// Kernel results as a tensor outside the graph: a gradient nobody differentiates again.
pub(crate) fn constant<T: Operand>(values: Vec<T>, shape: Shape) -> Tensor {
    Tensor::from_storage(
        Storage::Cpu(T::wrap(values)),
        shape,
        BackpropOp::none(),
        false,
    )
}

/// `impl CustomOpN for KernelOp<K>` for kernels of N operands: storages, layouts, operand
/// tensors and gradients named per operand, then the tuple candle wants back.
macro_rules! custom_op {
    ($op:ident, $n:literal, $(($s:ident, $l:ident, $t:ident, $d:ident)),+ => $grads:ty, $out:expr) => {
        impl<K: CpuKernel<$n>> $op for KernelOp<K> {
            fn name(&self) -> &'static str {
                self.0.name()
            }

            fn cpu_fwd(&self, $($s: &CpuStorage, $l: &Layout),+) -> Result<(CpuStorage, Shape)> {
                forward(&self.0, [$(($s, $l)),+])
            }

            fn bwd(&self, $($t: &Tensor,)+ res: &Tensor, u: &Tensor) -> Result<$grads> {
                let [$($d),+] = self.0.backward([$($t),+], res, u)?;
                Ok($out)
            }
        }
    };
}

custom_op!(CustomOp1, 1, (s1, l1, a, da) => Option<Tensor>, da);
custom_op!(
    CustomOp2, 2, (s1, l1, a, da), (s2, l2, b, db) => (Option<Tensor>, Option<Tensor>), (da, db)
);
custom_op!(
    CustomOp3, 3, (s1, l1, a, da), (s2, l2, b, db), (s3, l3, c, dc)
        => (Option<Tensor>, Option<Tensor>, Option<Tensor>), (da, db, dc)
);

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// `a + 2b`, element by element: a kernel small enough to check the adapter by hand.
    struct PlusTwice;

    impl CpuKernel<2> for PlusTwice {
        fn forward<T: Scalar>(&self, [a, b]: [Input<'_, T>; 2]) -> Forward<T> {
            let two = T::from_f64(2.0);
            let (shape, a, b) = (a.shape().clone(), a.values()?, b.values()?);
            Ok((a.iter().zip(b).map(|(&a, &b)| a + two * b).collect(), shape))
        }

        fn backward(&self, _: [&Tensor; 2], _res: &Tensor, u: &Tensor) -> Gradients<2> {
            Ok([Some(u.clone()), Some((u * 2.0)?)])
        }

        fn name(&self) -> &'static str {
            "test-plus-twice"
        }
    }

    /// The sum of every value of both operands, in f64.
    struct SumAll;

    impl CpuRead<2> for SumAll {
        type Output = f64;
        const NAME: &'static str = "test-sum-all";

        fn read<T: Scalar>(&self, inputs: [Input<'_, T>; 2]) -> Result<f64> {
            let [a, b] = values(&inputs)?;
            Ok(a.iter().chain(b).map(|v| v.to_f64()).sum())
        }
    }

    fn tensor(v: &[f64], dtype: DType) -> Tensor {
        Tensor::new(v, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    #[test]
    fn forward_runs_in_the_operands_element_type() {
        for dtype in [DType::F32, DType::F64] {
            let (a, b) = (
                tensor(&[1., 2., 3.], dtype),
                tensor(&[10., 20., 30.], dtype),
            );
            let y = apply(PlusTwice, [&a, &b]).unwrap();
            assert_eq!(y.dtype(), dtype);
            let y = y.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            assert_eq!(y, [21., 42., 63.]);
        }
    }

    /// A transposed view is made contiguous before a kernel that does not read strides.
    #[test]
    fn strided_operands_are_made_contiguous() {
        let m = Tensor::new(&[[1f64, 2.], [3., 4.]], &Device::Cpu).unwrap();
        let zero = Tensor::zeros((2, 2), DType::F64, &Device::Cpu).unwrap();
        let y = apply(PlusTwice, [&m.t().unwrap(), &zero]).unwrap();
        assert_eq!(y.to_vec2::<f64>().unwrap(), [[1., 3.], [2., 4.]]);
    }

    /// The backward pass is candle's: ∂/∂a Σ y = 1, ∂/∂b Σ y = 2.
    #[test]
    fn backward_feeds_candles_graph() {
        let a = Var::new(&[1f64, -2.], &Device::Cpu).unwrap();
        let b = Var::new(&[0.5f64, 4.], &Device::Cpu).unwrap();
        let y = apply(PlusTwice, [a.as_tensor(), b.as_tensor()]).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let grad = |v: &Var| grads.get(v.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(grad(&a), [1., 1.]);
        assert_eq!(grad(&b), [2., 2.]);
    }

    #[test]
    fn read_sees_typed_values_and_refuses_mixed_or_other_dtypes() {
        let (a, b) = (tensor(&[1., 2.], DType::F32), tensor(&[3.5], DType::F32));
        assert_eq!(read(&SumAll, [&a, &b]).unwrap(), 6.5);
        let mixed = read(&SumAll, [&a, &tensor(&[3.5], DType::F64)]).unwrap_err();
        assert!(mixed.to_string().contains("test-sum-all"), "{mixed}");
        let half = tensor(&[1.], DType::F16);
        let refused = read(&SumAll, [&half, &half]).unwrap_err();
        assert!(
            refused.to_string().contains("unsupported dtype"),
            "{refused}"
        );
    }
}
