//! Reading candle's CPU storage as typed slices, the one place the kernels match on dtypes.

use super::gemm::Element;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor};

/// A typed view of one operand: its elements from the layout's start offset on.
pub(crate) trait Operand: Element {
    fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [Self]>;
    fn wrap(data: Vec<Self>) -> CpuStorage;
    fn slice_mut<'a>(
        storage: &'a mut CpuStorage,
        layout: &Layout,
        op: &str,
    ) -> Result<&'a mut [Self]>;
}

macro_rules! operand {
    ($t:ty, $variant:ident) => {
        impl Operand for $t {
            fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [Self]> {
                match storage {
                    CpuStorage::$variant(v) => v.get(layout.start_offset()..).ok_or_else(|| {
                        candle_core::Error::Msg(format!("{op}: offset past the storage"))
                    }),
                    other => bail!(
                        "{op}: operands must all be {:?}, got {:?}",
                        stringify!($t),
                        other.dtype()
                    ),
                }
            }

            fn wrap(data: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(data)
            }

            fn slice_mut<'a>(
                storage: &'a mut CpuStorage,
                layout: &Layout,
                op: &str,
            ) -> Result<&'a mut [Self]> {
                let dtype = storage.dtype();
                match storage {
                    CpuStorage::$variant(v) => {
                        v.get_mut(layout.start_offset()..).ok_or_else(|| {
                            candle_core::Error::Msg(format!("{op}: offset past the storage"))
                        })
                    }
                    _ => bail!(
                        "{op}: operands must all be {:?}, got {dtype:?}",
                        stringify!($t)
                    ),
                }
            }
        }
    };
}

operand!(f32, F32);
operand!(f64, F64);

/// The elements of a contiguous operand, exactly `layout.shape().elem_count()` of them.
pub(crate) fn contiguous<'a, T: Operand>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [T]> {
    if !layout.is_contiguous() {
        bail!("{op}: operand is not contiguous");
    }
    let n = layout.shape().elem_count();
    T::slice(storage, layout, op)?
        .get(..n)
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: storage shorter than its shape")))
}

/// Runs `recv.method::<T>(args…)` with `T` the element type of `dtype` (f32 or f64), or fails
/// naming the op: the dtype dispatch every kernel's `cpu_fwd` does.
macro_rules! by_dtype {
    ($dtype:expr, $op:expr, $recv:ident . $method:ident ( $($arg:expr),* )) => {
        match $dtype {
            candle_core::DType::F32 => $recv.$method::<f32>($($arg),*),
            candle_core::DType::F64 => $recv.$method::<f64>($($arg),*),
            dtype => candle_core::bail!("{}: unsupported dtype {dtype:?}", $op),
        }
    };
}
pub(crate) use by_dtype;

/// Runs `f` on the CPU storages and layouts of (contiguous) `tensors`: for the fused backward
/// kernels, which read tensors outside a custom op's forward pass.
pub(crate) fn with_cpu_storage<R, const K: usize>(
    tensors: [&Tensor; K],
    op: &str,
    f: impl FnOnce([(&CpuStorage, &Layout); K]) -> Result<R>,
) -> Result<R> {
    let owned = tensors
        .iter()
        .map(|t| t.contiguous())
        .collect::<Result<Vec<Tensor>>>()?;
    let guards: Vec<_> = owned.iter().map(Tensor::storage_and_layout).collect();
    let mut parts = Vec::with_capacity(K);
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cpu(s) => parts.push((s, *layout)),
            _ => bail!("{op}: tensors off the CPU"),
        }
    }
    let parts: [(&CpuStorage, &Layout); K] = parts
        .try_into()
        .map_err(|_| candle_core::Error::Msg(format!("{op}: operand count")))?;
    f(parts)
}
