//! The exact bits of a tensor's values, so that tests compare byte for byte; shared with the
//! wire crate's tests (`#[path]`), which check that captures keep tensors bit-identical.

use candle_core::{DType, Tensor};

/// The exact bits of a float tensor, so that comparisons are byte-for-byte.
pub fn bits(t: &Tensor) -> Vec<u64> {
    let flat = t.flatten_all().unwrap();
    match t.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .map(f64::to_bits)
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    }
}
