//! Reading candle's CPU storage as typed slices, the one place the kernels match on dtypes.

use super::gemm::Element;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result};

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

/// Evaluates `body` with the type name `$t` standing for the element type of `dtype` (f32 or
/// f64), or fails naming the op: the dtype dispatch of every kernel.
macro_rules! by_dtype {
    ($dtype:expr, $op:expr, $t:ident => $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $t = f64;
                $body
            }
            dtype => candle_core::bail!("{}: unsupported dtype {dtype:?}", $op),
        }
    };
}
pub(crate) use by_dtype;
