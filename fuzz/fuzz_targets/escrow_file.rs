//! Escrow files (safetensors + a JSON header) on hostile bytes.
//!
//! Contract: never a panic and nothing allocated beyond the file's own tensors; an escrow
//! that parses has `[B, C, H, W]` F32 finite images with no zero dimension and `[B]` U32
//! labels, and writes back to bytes that parse to the same escrow.

#![no_main]

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use synfed_wire::Escrow;

fuzz_target!(|data: &[u8]| {
    let Ok(escrow) = Escrow::from_bytes(data, &Device::Cpu) else {
        return;
    };
    let dims = escrow.images.dims().to_vec();
    assert_eq!(dims.len(), 4);
    assert!(!dims.contains(&0));
    assert_eq!(escrow.images.dtype(), DType::F32);
    assert_eq!(escrow.labels.dtype(), DType::U32);
    assert_eq!(escrow.labels.dims(), [dims[0]]);
    // The images' bytes come from the file: no more values than the file has room for.
    assert!(dims.iter().product::<usize>() * 4 <= data.len());
    let values = escrow
        .images
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("F32 images read back");
    assert!(values.iter().all(|v| v.is_finite()));
    let labels = escrow.labels_vec().expect("U32 labels read back");
    let bytes = escrow.to_bytes().expect("a parsed escrow writes back");
    let again = Escrow::from_bytes(&bytes, &Device::Cpu).expect("and reads again");
    assert_eq!(again.meta, escrow.meta);
    assert_eq!(again.labels_vec().expect("labels"), labels);
    assert_eq!(again.to_bytes().expect("writes again"), bytes, "same bytes twice");
});
