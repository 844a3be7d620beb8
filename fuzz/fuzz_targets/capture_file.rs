//! Capture files (safetensors + a JSON header) on hostile bytes.
//!
//! Contract: never a panic and nothing allocated past the model budget; a capture that parses
//! has a spec within the budget, metadata within its declared bounds, every tensor finite and
//! of the shape its model has, and writes back to bytes that parse to the same capture.

#![no_main]

use candle_core::{DType, Device, Tensor};
use libfuzzer_sys::fuzz_target;
use synfed_wire::capture::{MAX_BATCH_SIZE, MAX_LOCAL_STEPS};
use synfed_wire::{Capture, UpdateKind};

fn finite(t: &Tensor) -> bool {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .map(|v| v.iter().all(|x| x.is_finite()))
        .unwrap_or(false)
}

fuzz_target!(|data: &[u8]| {
    let Ok(capture) = Capture::from_bytes(data, &Device::Cpu) else {
        return;
    };
    let meta = &capture.meta;
    meta.spec.check_budget().expect("a parsed capture's spec is within budget");
    assert!(meta.examples > 0);
    assert!((1..=MAX_BATCH_SIZE).contains(&meta.batch_size));
    match meta.kind {
        UpdateKind::FedAvg => {
            assert!((1..=MAX_LOCAL_STEPS).contains(&meta.local_steps.expect("fedavg steps")));
            assert!(meta.local_lr.is_some_and(|lr| lr.is_finite() && lr > 0.0));
        }
        UpdateKind::FedSgd => assert!(meta.local_steps.is_none() && meta.local_lr.is_none()),
    }
    if let Some(labels) = &meta.labels {
        assert_eq!(labels.len(), meta.batch_size);
        assert!(labels.iter().all(|&l| (l as usize) < meta.spec.classes));
    }
    for (name, t) in capture.global.iter().chain(&capture.update) {
        assert!(finite(t), "tensor `{name}` is finite");
    }
    for (name, u) in &capture.update {
        let (_, g) = capture
            .global
            .iter()
            .find(|(n, _)| n == name)
            .expect("every update has a global value");
        assert_eq!(u.dims(), g.dims(), "`{name}`");
    }
    let bytes = capture.to_bytes().expect("a parsed capture writes back");
    let again = Capture::from_bytes(&bytes, &Device::Cpu).expect("and reads again");
    assert_eq!(again.meta, capture.meta);
    assert_eq!(again.to_bytes().expect("writes again"), bytes, "same bytes twice");
});
