//! Chunk reassembly on a hostile peer's stream of chunks.
//!
//! Input: length-delimited protobuf `TensorChunk` messages, as a peer would put them on a
//! push stream, fed to an [`Assembler`] expecting three small tensors (f32 [3, 4], f64 [5],
//! an empty f32 [0]). The stream ends at the first message that does not decode or the first
//! chunk refused (as the server ends the call). Contract: never a panic; bytes accepted never
//! exceed what the expected tensors hold; tensors that assemble are exactly the expected
//! ones, finite, and bit for bit the concatenation of the chunk payloads the peer sent for
//! them.

#![no_main]

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::collections::HashMap;
use synfed_wire::proto::TensorChunk;
use synfed_wire::{Assembler, TensorLayout};

fn layouts() -> Vec<TensorLayout> {
    vec![
        TensorLayout {
            name: "w".into(),
            dtype: DType::F32,
            shape: vec![3, 4],
        },
        TensorLayout {
            name: "b".into(),
            dtype: DType::F64,
            shape: vec![5],
        },
        TensorLayout {
            name: "e".into(),
            dtype: DType::F32,
            shape: vec![0],
        },
    ]
}

fuzz_target!(|data: &[u8]| {
    let expected = layouts();
    let capacity: usize = expected.iter().map(TensorLayout::byte_len).sum();
    let mut assembler = Assembler::new(expected.clone());
    let mut sent: HashMap<String, Vec<u8>> = HashMap::new();
    let mut buf = data;
    let mut refused = false;
    while !buf.is_empty() {
        let Ok(chunk) = TensorChunk::decode_length_delimited(&mut buf) else {
            break;
        };
        let (name, payload) = (chunk.name.clone(), chunk.data.clone());
        if assembler.push(chunk).is_err() {
            refused = true;
            break;
        }
        sent.entry(name).or_default().extend_from_slice(&payload);
        assert!(assembler.bytes_received() <= capacity);
    }
    let Ok(tensors) = assembler.finish(&Device::Cpu) else {
        return;
    };
    assert!(!refused, "a refused stream never finishes");
    assert_eq!(tensors.len(), expected.len());
    for ((name, tensor), layout) in tensors.iter().zip(&expected) {
        assert_eq!(name, &layout.name);
        assert_eq!(tensor.dtype(), layout.dtype);
        assert_eq!(tensor.dims(), layout.shape.as_slice());
        let bytes: Vec<u8> = match layout.dtype {
            DType::F32 => tensor
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("f32")
                .iter()
                .inspect(|v| assert!(v.is_finite()))
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            _ => tensor
                .flatten_all()
                .and_then(|t| t.to_vec1::<f64>())
                .expect("f64")
                .iter()
                .inspect(|v| assert!(v.is_finite()))
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        assert_eq!(sent.get(name).cloned().unwrap_or_default(), bytes, "`{name}`");
    }
});
