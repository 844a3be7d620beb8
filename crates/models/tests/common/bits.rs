//! Comparing tensors in tests: the exact bits of their values (byte-for-byte equality) and the
//! largest absolute difference of two. Shared through `#[path]` with the tests of the wire
//! crate (captures keep tensors bit-identical), the attack and the federations.
#![allow(dead_code)]

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

/// max |a − b| of two f32 tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
