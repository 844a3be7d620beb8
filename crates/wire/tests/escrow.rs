//! Escrows: round trip, pairing with a capture's metadata, and rejection of invalid files.

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use synfed_data::Normalization;
use synfed_models::{Arch, InputShape, ModelSpec};
use synfed_synapse::{MethodSet, Mode};
use synfed_wire::escrow::META_KEY;
use synfed_wire::{CaptureMeta, Escrow, EscrowMeta, FileKind, Problem, UpdateKind, WireError};

const B: usize = 3;

fn images() -> Tensor {
    let v: Vec<f32> = (0..B * 2 * 4 * 4)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
        .collect();
    Tensor::from_vec(v, (B, 2, 4, 4), &Device::Cpu).unwrap()
}

fn labels() -> Tensor {
    Tensor::new(&[4u32, 0, 9], &Device::Cpu).unwrap()
}

fn escrow() -> Escrow {
    let meta = EscrowMeta {
        round: 7,
        client: "c-1".into(),
        update_digest: None,
    };
    Escrow::new(meta, &images(), &labels()).unwrap()
}

fn capture_meta() -> CaptureMeta {
    CaptureMeta {
        spec: ModelSpec::new(
            Arch::ConvNet,
            InputShape::new(2, 4, 4),
            10,
            MethodSet::NONE,
            1,
        ),
        round: 7,
        client: "c-1".into(),
        examples: B,
        batch_size: B,
        kind: UpdateKind::FedSgd,
        local_steps: None,
        local_lr: None,
        mode: Mode::Train,
        normalization: Normalization::identity(2),
        labels: None,
        fuzzy_at: Default::default(),
        imprint: None,
    }
}

fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

#[test]
fn round_trip_with_deterministic_bytes() {
    let e = escrow();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.escrow"), dir.path().join("b.escrow"));
    e.save(&a).unwrap();
    e.save(&b).unwrap();
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

    let loaded = Escrow::load(&a, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta, e.meta);
    assert_eq!(loaded.images.dims(), [B, 2, 4, 4]);
    assert_eq!(f32_bits(&loaded.images), f32_bits(&images()));
    assert_eq!(loaded.labels.dtype(), DType::U32);
    assert_eq!(loaded.labels_vec().unwrap(), [4, 0, 9]);
    assert_eq!(loaded.to_bytes().unwrap(), bytes);

    // The labels are stored as U32, the images as F32, and the header is one JSON key.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.tensor("labels").unwrap().dtype(),
        safetensors::Dtype::U32
    );
    assert_eq!(
        st.tensor("images").unwrap().dtype(),
        safetensors::Dtype::F32
    );
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let m = m.metadata().as_ref().unwrap();
    assert_eq!(m.len(), 1);
    let header: Value = serde_json::from_str(&m[META_KEY]).unwrap();
    assert_eq!(
        header,
        json!({"format": "synfed-escrow", "version": 1, "round": 7, "client": "c-1"})
    );
}

#[test]
fn new_converts_images_to_f32_and_requires_u32_labels() {
    let meta = escrow().meta;
    let e = Escrow::new(
        meta.clone(),
        &images().to_dtype(DType::F64).unwrap(),
        &labels(),
    )
    .unwrap();
    assert_eq!(e.images.dtype(), DType::F32);
    let err = Escrow::new(
        meta.clone(),
        &images(),
        &labels().to_dtype(DType::I64).unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(err.problem(), Some(Problem::BadDtype { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("labels"), "{err}");
    let err = Escrow::new(meta, &images(), &labels().narrow(0, 0, 2).unwrap()).unwrap_err();
    assert!(
        matches!(err.problem(), Some(Problem::ShapeMismatch { .. })),
        "{err}"
    );
}

#[test]
fn pairs_with_its_capture_only() {
    let e = escrow();
    e.check_matches_meta(&capture_meta()).unwrap();
    let mut with_labels = capture_meta();
    with_labels.labels = Some(vec![4, 0, 9]);
    e.check_matches_meta(&with_labels).unwrap();

    type Edit = Box<dyn Fn(&mut CaptureMeta)>;
    let edits: [(&str, Edit); 6] = [
        ("round", Box::new(|m| m.round = 8)),
        ("client", Box::new(|m| m.client = "c-2".into())),
        ("shape", Box::new(|m| m.batch_size = 4)),
        (
            "shape",
            Box::new(|m| m.spec.input = InputShape::new(2, 4, 5)),
        ),
        ("class", Box::new(|m| m.spec.classes = 9)),
        (
            "labels differ",
            Box::new(|m| m.labels = Some(vec![4, 0, 8])),
        ),
    ];
    for (what, edit) in edits {
        let mut m = capture_meta();
        edit(&mut m);
        let err = e.check_matches_meta(&m).unwrap_err();
        assert!(matches!(err, WireError::Mismatch(_)), "{err}");
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
}

// ---- invalid files -------------------------------------------------------------------------

fn header() -> Value {
    json!({"format": "synfed-escrow", "version": 1, "round": 7, "client": "c-1"})
}

fn assemble(tensors: &[(&str, Tensor)], header: Option<&Value>) -> Vec<u8> {
    let meta = header.map(|h| HashMap::from([(META_KEY.to_string(), h.to_string())]));
    safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), meta).unwrap()
}

fn reject(bytes: &[u8]) -> (Problem, String) {
    match Escrow::from_bytes(bytes, &Device::Cpu) {
        Ok(_) => panic!("an invalid escrow was accepted"),
        Err(err) => {
            let message = err.to_string();
            match err {
                WireError::Invalid { kind, problem, .. } => {
                    assert_eq!(kind, FileKind::Escrow);
                    assert!(message.starts_with("escrow "), "{message}");
                    (problem, message)
                }
                other => panic!("not an Invalid error: {other}"),
            }
        }
    }
}

#[test]
fn the_unmodified_parts_are_accepted() {
    let bytes = assemble(
        &[("images", images()), ("labels", labels())],
        Some(&header()),
    );
    Escrow::from_bytes(&bytes, &Device::Cpu).unwrap();
}

#[test]
fn rejects_bad_headers() {
    let good = [("images", images()), ("labels", labels())];
    let (problem, _) = reject(b"not a file");
    assert!(matches!(problem, Problem::NotSafetensors(_)));
    let (problem, message) = reject(&assemble(&good, None));
    assert!(
        matches!(problem, Problem::MissingHeader { .. }),
        "{message}"
    );
    assert!(message.contains("synfed-escrow"), "{message}");

    let mut h = header();
    h["format"] = json!("synfed-capture");
    let (problem, message) = reject(&assemble(&good, Some(&h)));
    assert!(matches!(problem, Problem::WrongFormat { .. }), "{message}");
    assert!(message.contains("expected `synfed-escrow`"), "{message}");

    let mut h = header();
    h["version"] = json!(3);
    let (problem, message) = reject(&assemble(&good, Some(&h)));
    assert!(
        matches!(problem, Problem::UnsupportedVersion { .. }),
        "{message}"
    );
    assert!(message.contains("supported versions: 1"), "{message}");

    for edit in [("label", json!([1])), ("round", json!("seven"))] {
        let mut h = header();
        h[edit.0] = edit.1;
        let (problem, message) = reject(&assemble(&good, Some(&h)));
        assert!(
            matches!(problem, Problem::MalformedHeader { .. }),
            "{message}"
        );
    }
}

#[test]
fn rejects_missing_unexpected_and_mistyped_tensors() {
    let h = header();
    let (problem, message) = reject(&assemble(&[("images", images())], Some(&h)));
    assert_eq!(
        problem,
        Problem::MissingTensor("labels".into()),
        "{message}"
    );
    let (problem, message) = reject(&assemble(&[("labels", labels())], Some(&h)));
    assert_eq!(
        problem,
        Problem::MissingTensor("images".into()),
        "{message}"
    );

    let extra = [
        ("images", images()),
        ("labels", labels()),
        ("secret", labels()),
    ];
    let (problem, message) = reject(&assemble(&extra, Some(&h)));
    assert_eq!(
        problem,
        Problem::UnexpectedTensor("secret".into()),
        "{message}"
    );

    let float_labels = [
        ("images", images()),
        ("labels", labels().to_dtype(DType::F32).unwrap()),
    ];
    let (problem, message) = reject(&assemble(&float_labels, Some(&h)));
    assert!(matches!(problem, Problem::BadDtype { .. }), "{message}");
    assert!(
        message.contains("`labels` has dtype F32, expected U32"),
        "{message}"
    );

    let f64_images = [
        ("images", images().to_dtype(DType::F64).unwrap()),
        ("labels", labels()),
    ];
    let (problem, message) = reject(&assemble(&f64_images, Some(&h)));
    assert!(matches!(problem, Problem::BadDtype { .. }), "{message}");
    assert!(message.contains("images"), "{message}");
}

#[test]
fn rejects_inconsistent_shapes_and_non_finite_images() {
    let h = header();
    let few_labels = [
        ("images", images()),
        ("labels", labels().narrow(0, 0, 2).unwrap()),
    ];
    let (problem, message) = reject(&assemble(&few_labels, Some(&h)));
    assert!(
        matches!(&problem, Problem::ShapeMismatch { name, .. } if name == "labels"),
        "{message}"
    );
    assert!(
        message.contains("[2]") && message.contains("[3]"),
        "{message}"
    );

    let rank3 = [("images", images().get(0).unwrap()), ("labels", labels())];
    let (_, message) = reject(&assemble(&rank3, Some(&h)));
    assert!(
        message.contains("`images` has shape [2, 4, 4]"),
        "{message}"
    );

    let empty = [
        (
            "images",
            Tensor::zeros((0, 2, 4, 4), DType::F32, &Device::Cpu).unwrap(),
        ),
        (
            "labels",
            Tensor::zeros(0, DType::U32, &Device::Cpu).unwrap(),
        ),
    ];
    let (_, message) = reject(&assemble(&empty, Some(&h)));
    assert!(message.contains("no zero dimension"), "{message}");

    let mut v = images().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[5] = f32::NAN;
    let nan = [
        (
            "images",
            Tensor::from_vec(v, (B, 2, 4, 4), &Device::Cpu).unwrap(),
        ),
        ("labels", labels()),
    ];
    let (problem, message) = reject(&assemble(&nan, Some(&h)));
    assert_eq!(problem, Problem::NonFinite("images".into()), "{message}");
}

#[test]
fn errors_of_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r7-c1.escrow");
    std::fs::write(&path, assemble(&[("images", images())], Some(&header()))).unwrap();
    let message = Escrow::load(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("`labels`"),
        "{message}"
    );
}
