//! An escrow is bound to the capture of the update it is the truth of: the digest the client
//! computes over what it sends equals the server's over what it receives (through the chunked
//! wire format and the capture file), and an escrow crossed with another capture of the same
//! client, round and batch size is refused.

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use synfed_data::Normalization;
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::{MethodSet, Mode};
use synfed_wire::chunks::{encode_all, Assembler, TensorLayout};
use synfed_wire::{
    capture, escrow, Binding, Capture, CaptureMeta, Escrow, EscrowMeta, Problem, UpdateDigest,
    WireError,
};

const B: usize = 2;
const INPUT: InputShape = InputShape::new(1, 9, 9);

fn model() -> Model {
    let spec = ModelSpec::new(Arch::ConvNet, INPUT, 10, MethodSet::NONE, 3);
    Model::build(&spec, DType::F32, &Device::Cpu).unwrap()
}

fn batch(seed: u32) -> (Tensor, Tensor) {
    let v: Vec<f32> = (0..(B * INPUT.elem_count()) as u32)
        .map(|i| ((i * 31 + seed * 17) % 23) as f32 / 11.0 - 1.0)
        .collect();
    let x = Tensor::from_vec(v, (B, 1, 9, 9), &Device::Cpu).unwrap();
    let y = Tensor::new(&[seed % 10, (seed + 3) % 10], &Device::Cpu).unwrap();
    (x, y)
}

/// What the client sends: its gradient on `batch(seed)`, named by trainable parameter.
fn client_update(model: &Model, seed: u32) -> Vec<(String, Tensor)> {
    let (x, y) = batch(seed);
    let grads = model.gradients(&x, &y, Mode::Train).unwrap();
    model
        .params()
        .trainable()
        .map(|p| p.name.clone())
        .zip(grads)
        .collect()
}

/// What the server receives: `sent` encoded, cut into small chunks and reassembled.
fn through_the_wire(sent: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    let encoded = encode_all(sent).unwrap();
    let layout = sent
        .iter()
        .map(|(n, t)| TensorLayout::of(n.clone(), t))
        .collect();
    let mut assembler = Assembler::new(layout);
    for e in &encoded {
        for chunk in e.chunks(40) {
            assembler.push(chunk).unwrap();
        }
    }
    assembler.finish(&Device::Cpu).unwrap()
}

fn meta() -> CaptureMeta {
    CaptureMeta::fedsgd(
        model().spec().clone(),
        4,
        "c-1",
        B,
        Normalization::identity(1),
        None,
    )
}

/// The server's capture of the update it received for `seed`, written and read back, and the
/// client's escrow of the same batch.
fn pair(model: &Model, seed: u32) -> (Capture, Escrow) {
    let sent = client_update(model, seed);
    let received = through_the_wire(&sent);
    let tensors = received.into_iter().map(|(_, t)| t).collect();
    let capture = Capture::new(meta(), model, tensors).unwrap();
    let capture = Capture::from_bytes(&capture.to_bytes().unwrap(), &Device::Cpu).unwrap();
    let (x, y) = batch(seed);
    let kept = EscrowMeta {
        round: 4,
        client: "c-1".into(),
        update_digest: Some(UpdateDigest::of(&sent).unwrap()),
    };
    let escrow = Escrow::new(kept, &x, &y).unwrap();
    let escrow = Escrow::from_bytes(&escrow.to_bytes().unwrap(), &Device::Cpu).unwrap();
    (capture, escrow)
}

#[test]
fn digest_is_sha256_of_the_documented_framing() {
    // Computed independently with Python's hashlib over the framing the module documents.
    let t = |v: &[f32], shape: &[usize]| Tensor::from_slice(v, shape, &Device::Cpu).unwrap();
    let tensors = [
        ("w".to_string(), t(&[1.0, -2.5], &[1, 2])),
        ("b".to_string(), t(&[0.5], &[1])),
    ];
    assert_eq!(
        UpdateDigest::of(&tensors).unwrap().as_str(),
        "sha256:83f2b6dff8c493e7fdf6b498b1b1afe9dae99abe6939249474b649883e53b3af"
    );
    // One bit of one value, or the order, changes it.
    let flipped = [
        tensors[0].clone(),
        (
            "b".to_string(),
            t(&[f32::from_bits(0.5f32.to_bits() ^ 1)], &[1]),
        ),
    ];
    assert_ne!(
        UpdateDigest::of(&flipped).unwrap(),
        UpdateDigest::of(&tensors).unwrap()
    );
    let swapped = [tensors[1].clone(), tensors[0].clone()];
    assert_ne!(
        UpdateDigest::of(&swapped).unwrap(),
        UpdateDigest::of(&tensors).unwrap()
    );
}

#[test]
fn crossed_escrows_of_the_same_client_round_and_batch_size_are_refused() {
    let model = model();
    let (capture_a, escrow_a) = pair(&model, 1);
    let (capture_b, escrow_b) = pair(&model, 2);
    // Same client, round and batch size: the metadata alone cannot tell them apart.
    assert_eq!(capture_a.meta, capture_b.meta);
    escrow_b.check_matches_meta(&capture_a.meta).unwrap();

    // The client's digest of what it sent is the server's of what it received.
    let a = capture_a.update_digest().unwrap();
    let b = capture_b.update_digest().unwrap();
    assert_ne!(a, b);
    assert_eq!(
        escrow_a.check_matches(&capture_a).unwrap(),
        Binding::Verified(a.clone())
    );
    assert_eq!(
        escrow_b.check_matches(&capture_b).unwrap(),
        Binding::Verified(b.clone())
    );

    for (escrow, capture, kept, held) in [
        (&escrow_a, &capture_b, &a, &b),
        (&escrow_b, &capture_a, &b, &a),
    ] {
        let err = escrow.check_matches(capture).unwrap_err();
        assert!(matches!(err, WireError::Mismatch(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(kept.as_str()) && text.contains(held.as_str()),
            "{text}"
        );
    }
}

/// Rewrites the JSON header of a safetensors file with `edit`.
fn edit_header(bytes: &[u8], key: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let (_, m) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut header: Value = serde_json::from_str(&m.metadata().as_ref().unwrap()[key]).unwrap();
    edit(&mut header);
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .names()
        .into_iter()
        .map(|n| (n.to_string(), st.tensor(n).unwrap()))
        .collect();
    let meta = HashMap::from([(key.to_string(), header.to_string())]);
    safetensors::serialize(tensors, Some(meta)).unwrap()
}

#[test]
fn a_capture_whose_digest_is_not_its_update_is_refused() {
    let model = model();
    let (capture_a, _) = pair(&model, 1);
    let (capture_b, _) = pair(&model, 2);
    let other = capture_b.update_digest().unwrap().to_string();
    let forged = edit_header(&capture_a.to_bytes().unwrap(), capture::META_KEY, |h| {
        h["update_digest"] = json!(other)
    });
    let err = Capture::from_bytes(&forged, &Device::Cpu).unwrap_err();
    assert!(matches!(err.problem(), Some(Problem::BadMeta(_))), "{err}");
    assert!(err.to_string().contains(&other), "{err}");

    for (version, digest, why) in [
        (json!(2), None, "no `update_digest`"),
        (json!(2), Some(json!("md5:00")), "not `sha256:`"),
        (json!(1), Some(json!(other)), "version 1"),
    ] {
        let bad = edit_header(&capture_a.to_bytes().unwrap(), capture::META_KEY, |h| {
            h["version"] = version;
            match digest {
                Some(d) => h["update_digest"] = d,
                None => {
                    h.as_object_mut().unwrap().remove("update_digest");
                }
            }
        });
        let err = Capture::from_bytes(&bad, &Device::Cpu).unwrap_err();
        assert!(
            matches!(err.problem(), Some(Problem::MalformedHeader { .. })),
            "{err}"
        );
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
}

#[test]
fn version_1_files_are_read_and_their_binding_reported_unchecked() {
    let model = model();
    let (capture, escrow) = pair(&model, 1);
    let old_capture = edit_header(&capture.to_bytes().unwrap(), capture::META_KEY, |h| {
        h["version"] = json!(1);
        h.as_object_mut().unwrap().remove("update_digest");
    });
    let old_capture = Capture::from_bytes(&old_capture, &Device::Cpu).unwrap();
    // the digest is recomputed from a version 1 capture's tensors: a version 2 escrow binds
    assert!(matches!(
        escrow.check_matches(&old_capture).unwrap(),
        Binding::Verified(_)
    ));

    let old_escrow = edit_header(&escrow.to_bytes().unwrap(), escrow::META_KEY, |h| {
        h["version"] = json!(1);
        h.as_object_mut().unwrap().remove("update_digest");
    });
    let old_escrow = Escrow::from_bytes(&old_escrow, &Device::Cpu).unwrap();
    assert_eq!(old_escrow.meta.update_digest, None);
    match old_escrow.check_matches(&capture).unwrap() {
        Binding::Unchecked(reason) => assert!(reason.contains("version 1"), "{reason}"),
        other => panic!("a version 1 escrow cannot be verified: {other:?}"),
    }
    // ... and a version 2 escrow must carry its digest.
    let bad = edit_header(&escrow.to_bytes().unwrap(), escrow::META_KEY, |h| {
        h.as_object_mut().unwrap().remove("update_digest");
    });
    let err = Escrow::from_bytes(&bad, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("no `update_digest`"), "{err}");
}
