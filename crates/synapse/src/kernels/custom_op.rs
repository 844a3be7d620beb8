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
