//! Captures: round trips of a real update (ResNet20, I+II+III, true gradients), the attacker's
//! rebuilt model, update order, and rejection of every kind of invalid file.

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use synfed_data::Normalization;
use synfed_models::{Arch, InputShape, Model, ModelSpec, Update};
use synfed_synapse::{MethodSet, Mode, Role};
use synfed_wire::capture::{self, META_KEY};
use synfed_wire::{Capture, CaptureMeta, FileKind, Problem, UpdateKind, WireError};

#[path = "../../models/tests/common/bits.rs"]
mod bits;

use bits::bits;

const INPUT: InputShape = InputShape::new(3, 8, 8);
const CLASSES: usize = 10;
const BATCH: usize = 4;

fn spec() -> ModelSpec {
    ModelSpec::new(Arch::ResNet20, INPUT, CLASSES, MethodSet::ALL, 7).with_width(4)
}

/// `n` images with values in (−1, 1) from a fixed linear congruential stream.
fn images(n: usize, seed: u64) -> Tensor {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n * INPUT.elem_count())
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(
        v,
        (n, INPUT.channels, INPUT.height, INPUT.width),
        &Device::Cpu,
    )
    .unwrap()
}

fn labels() -> Vec<u32> {
    (0..BATCH).map(|i| (i * 3 % CLASSES) as u32).collect()
}

fn meta(kind: UpdateKind) -> CaptureMeta {
    let fedavg = kind == UpdateKind::FedAvg;
    CaptureMeta {
        spec: spec(),
        round: 3,
        client: "client-2".into(),
        examples: BATCH,
        batch_size: BATCH,
        kind,
        local_steps: fedavg.then_some(5),
        local_lr: fedavg.then_some(0.1),
        mode: Mode::TrainFrozenStats,
        normalization: Normalization {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.247, 0.2435, 0.2616],
        },
        labels: Some(labels()),
        fuzzy_at: Default::default(),
        imprint: None,
    }
}

/// The global model (running statistics drifted by an earlier training forward pass), the
/// true gradient of one batch in trainable order, and their capture.
fn setup() -> (Model, Vec<Tensor>, Capture) {
    let model = Model::build(&spec(), DType::F32, &Device::Cpu).unwrap();
    model.forward(&images(8, 1), Mode::Train).unwrap();
    let y = Tensor::new(labels(), &Device::Cpu).unwrap();
    let grads = model
        .loss(&images(BATCH, 2), &y, Mode::TrainFrozenStats)
        .unwrap()
        .backward()
        .unwrap();
    let update: Vec<Tensor> = model
        .params()
        .trainable()
        .map(|p| {
            grads
                .get(p.var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {}", p.name))
                .clone()
        })
        .collect();
    let capture = Capture::new(meta(UpdateKind::FedSgd), &model, update.clone()).unwrap();
    (model, update, capture)
}

fn assert_same(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert_eq!(ta.dims(), tb.dims(), "{na}");
        assert_eq!(bits(ta), bits(tb), "{na}");
    }
}

/// The header JSON of capture bytes.
fn header_of(bytes: &[u8]) -> Value {
    let (_, m) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let m = m.metadata().as_ref().unwrap();
    assert_eq!(m.len(), 1, "one metadata key: {:?}", m.keys());
    serde_json::from_str(&m[META_KEY]).unwrap()
}

#[test]
fn round_trip_of_a_real_gradient_with_deterministic_bytes() {
    let (model, update, capture) = setup();
    // The gradient is not trivially zero, and every tensor of the model is there.
    assert!(update.iter().any(|u| bits(u).iter().any(|b| *b != 0)));
    assert_eq!(capture.global.len(), model.params().len());
    assert_eq!(capture.update.len(), model.params().trainable().count());
    assert!(capture
        .global
        .iter()
        .any(|(n, _)| n.ends_with("running_var")));

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    capture.save(&a).unwrap();
    capture.save(&b).unwrap();
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(
        bytes,
        std::fs::read(&b).unwrap(),
        "saving twice gives other bytes"
    );
    assert_eq!(bytes, capture.to_bytes().unwrap());
    // Only the two files: no temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

    let loaded = Capture::load(&a, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta, capture.meta);
    assert_same(&loaded.global, &capture.global);
    assert_same(&loaded.update, &capture.update);
    for ((_, t), u) in loaded.update.iter().zip(&update) {
        assert_eq!(bits(t), bits(u));
    }
    // Saving what was loaded gives the same bytes again.
    assert_eq!(loaded.to_bytes().unwrap(), bytes);

    let header = header_of(&bytes);
    assert_eq!(header["format"], "synfed-capture");
    assert_eq!(header["version"], 3);
    assert_eq!(
        header["update_digest"],
        loaded.update_digest().unwrap().as_str()
    );
    assert_eq!(header["kind"], "fedsgd");
    assert_eq!(header["mode"], "train-frozen-stats");
    assert_eq!(header["spec"]["methods"], "I+II+III");
    assert_eq!(header["spec"]["width"], 4);
    assert_eq!(header["local_steps"], Value::Null);
    assert_eq!(header["labels"], json!(labels()));
    assert_eq!(
        header["normalization"]["std"][1].as_f64().unwrap() as f32,
        0.2435
    );
}

#[test]
fn fedavg_round_trip_without_labels() {
    let (model, update, _) = setup();
    let mut m = meta(UpdateKind::FedAvg);
    m.labels = None;
    m.examples = 40;
    let capture = Capture::new(m, &model, update).unwrap();
    let bytes = capture.to_bytes().unwrap();
    let header = header_of(&bytes);
    assert_eq!(header["kind"], "fedavg");
    assert_eq!(header["local_steps"], 5);
    assert_eq!(header["local_lr"], 0.1);
    assert_eq!(header["labels"], Value::Null);
    let loaded = Capture::from_bytes(&bytes, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta, capture.meta);
    assert_same(&loaded.update, &capture.update);
}

#[test]
fn capture_copies_the_model_state() {
    let (model, _, capture) = setup();
    let before: Vec<_> = capture.global.iter().map(|(_, t)| bits(t)).collect();
    // Training the client's model further (running statistics and weights change in place)
    // does not change the capture.
    model.forward(&images(8, 9), Mode::Train).unwrap();
    let w = &model.params().trainable().next().unwrap().var;
    w.set(&w.as_tensor().zeros_like().unwrap()).unwrap();
    let after: Vec<_> = capture.global.iter().map(|(_, t)| bits(t)).collect();
    assert_eq!(before, after);
}

#[test]
fn model_reproduces_global_parameters_and_running_stats() {
    let (model, _, capture) = setup();
    let bytes = capture.to_bytes().unwrap();
    let loaded = Capture::from_bytes(&bytes, &Device::Cpu).unwrap();
    let attacker = loaded.model(DType::F32, &Device::Cpu).unwrap();
    let fresh = Model::build(&spec(), DType::F32, &Device::Cpu).unwrap();

    let mut stats_checked = 0;
    for ((p, q), f) in model
        .params()
        .iter()
        .zip(attacker.params().iter())
        .zip(fresh.params().iter())
    {
        assert_eq!(p.name, q.name);
        assert_eq!(
            bits(p.var.as_tensor()),
            bits(q.var.as_tensor()),
            "{}",
            p.name
        );
        // Fuzzy factors are part of what the spec determines.
        assert_eq!(
            p.fuzzy.as_ref().map(bits),
            q.fuzzy.as_ref().map(bits),
            "{}",
            p.name
        );
        if matches!(p.role, Role::RunningMean | Role::RunningVar) {
            // The drifted statistics, not the initial ones, were restored.
            assert_ne!(
                bits(q.var.as_tensor()),
                bits(f.var.as_tensor()),
                "{}",
                p.name
            );
            stats_checked += 1;
        }
    }
    assert!(stats_checked > 10);

    // Same forward pass in eval mode (running statistics matter there).
    let x = images(2, 5);
    let a = model.forward(&x, Mode::Eval).unwrap();
    let b = attacker.forward(&x, Mode::Eval).unwrap();
    assert_eq!(bits(&a), bits(&b));

    // The attacker's copy shares nothing: overwriting it leaves the capture and the client's
    // model alone.
    let global_before: Vec<_> = loaded.global.iter().map(|(_, t)| bits(t)).collect();
    for p in attacker.params().iter() {
        p.var.set(&p.var.as_tensor().zeros_like().unwrap()).unwrap();
    }
    attacker.forward(&x, Mode::Train).unwrap();
    let global_after: Vec<_> = loaded.global.iter().map(|(_, t)| bits(t)).collect();
    assert_eq!(global_before, global_after);
    assert_eq!(bits(&model.forward(&x, Mode::Eval).unwrap()), bits(&a));
    // A second copy starts from the capture again.
    let again = loaded.model(DType::F32, &Device::Cpu).unwrap();
    assert_eq!(bits(&again.forward(&x, Mode::Eval).unwrap()), bits(&a));

    // Other dtypes work too.
    let f64_model = loaded.model(DType::F64, &Device::Cpu).unwrap();
    let p = f64_model.params().iter().next().unwrap();
    assert_eq!(p.var.dtype(), DType::F64);
}

#[test]
fn update_comes_back_in_trainable_order() {
    let (model, update, mut capture) = setup();
    // Whatever order the capture holds its update in.
    capture.update.reverse();
    let ordered = capture.update_in_param_order(&model).unwrap();
    assert_eq!(ordered.len(), update.len());
    for ((p, got), want) in model.params().trainable().zip(&ordered).zip(&update) {
        assert_eq!(got.dims(), p.var.dims(), "{}", p.name);
        assert_eq!(bits(got), bits(want), "{}", p.name);
    }
    // Converted to the model's dtype.
    let f64_model = capture.model(DType::F64, &Device::Cpu).unwrap();
    let ordered = capture.update_in_param_order(&f64_model).unwrap();
    assert!(ordered.iter().all(|t| t.dtype() == DType::F64));

    // Another model does not fit.
    let other = Model::build(&spec().with_width(8), DType::F32, &Device::Cpu).unwrap();
    let err = capture.update_in_param_order(&other).unwrap_err();
    assert!(matches!(err, WireError::Mismatch(_)), "{err}");
    assert!(err.to_string().contains("shape"), "{err}");
    let mlp = Model::build(
        &ModelSpec::new(Arch::Mlp, INPUT, CLASSES, MethodSet::NONE, 1).with_width(4),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    assert!(capture.update_in_param_order(&mlp).is_err());
}

#[test]
fn new_refuses_updates_that_do_not_fit_the_model() {
    let (model, mut update, _) = setup();
    let err = Capture::new(meta(UpdateKind::FedSgd), &model, update[1..].to_vec()).unwrap_err();
    assert!(err.to_string().contains("trainable"), "{err}");
    update.swap(0, 1);
    assert!(Capture::new(meta(UpdateKind::FedSgd), &model, update.clone()).is_err());
    update.swap(0, 1);
    let mut m = meta(UpdateKind::FedSgd);
    m.spec.seed += 1;
    assert!(Capture::new(m, &model, update).is_err());
}

#[test]
fn a_capture_of_a_whole_update_keeps_its_gradients_as_update_and_its_statistics_as_running() {
    let (model, trainable, reference) = setup();
    // The whole update as a server receives it: the gradients, and a change of every
    // running statistic (here, the statistic itself: non-zero, so that a mix-up would show).
    let mut gradients = trainable.into_iter();
    let whole: Vec<Tensor> = model
        .params()
        .iter()
        .map(|p| match p.role {
            Role::RunningMean | Role::RunningVar => p.var.as_tensor().copy().unwrap(),
            _ => gradients.next().unwrap(),
        })
        .collect();
    assert!(gradients.next().is_none());
    let update = Update::with_roles_of(model.params(), whole).unwrap();
    assert!(
        update.trainable().count() < update.len(),
        "ResNet20 has buffers"
    );
    let capture = Capture::of_update(meta(UpdateKind::FedSgd), model.params().tensors(), &update);
    assert_same(&capture.update, &reference.update);
    assert_same(&capture.global, &reference.global);
    let buffers: Vec<(String, Tensor)> = model
        .params()
        .iter()
        .filter(|p| matches!(p.role, Role::RunningMean | Role::RunningVar))
        .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
        .collect();
    assert!(!buffers.is_empty(), "ResNet20 has BatchNorm layers");
    assert_same(&capture.running, &buffers);
    let with_running = reference
        .with_running_change(&model, buffers.iter().map(|(_, t)| t.clone()).collect())
        .unwrap();
    assert_eq!(
        capture.to_bytes().unwrap(),
        with_running.to_bytes().unwrap()
    );
}

#[test]
fn the_running_statistics_change_round_trips_all_or_nothing() {
    let (model, _, reference) = setup();
    let buffers: Vec<Tensor> = model
        .params()
        .iter()
        .filter(|p| !p.role.is_trainable())
        .map(|p| (p.var.as_tensor() * 0.25).unwrap())
        .collect();
    let capture = reference
        .clone()
        .with_running_change(&model, buffers.clone())
        .unwrap();
    let bytes = capture.to_bytes().unwrap();
    let loaded = Capture::from_bytes(&bytes, &Device::Cpu).unwrap();
    assert_eq!(loaded.running.len(), buffers.len());
    for ((_, got), want) in loaded.running.iter().zip(&buffers) {
        assert_eq!(bits(got), bits(want));
    }
    let (before, change) = loaded.running_pair("bn1.running_var").unwrap();
    assert_eq!(bits(change), bits(&(before * 0.25).unwrap()));
    // the update digest covers the update only: the statistics do not change it
    assert_eq!(
        loaded.update_digest().unwrap(),
        reference.update_digest().unwrap()
    );
    // a capture without them reads with none
    assert!(
        Capture::from_bytes(&reference.to_bytes().unwrap(), &Device::Cpu)
            .unwrap()
            .running
            .is_empty()
    );

    // wrong count or shape at construction
    let err = reference
        .clone()
        .with_running_change(&model, buffers[1..].to_vec())
        .unwrap_err();
    assert!(err.to_string().contains("running"), "{err}");
    let mut swapped = buffers.clone();
    let last = swapped.len() - 1;
    swapped.swap(0, last);
    if swapped[0].dims() != buffers[0].dims() {
        assert!(reference
            .clone()
            .with_running_change(&model, swapped)
            .is_err());
    }

    // a file with some of them only is refused, naming one that is missing
    let (mut tensors, header) = parts(&capture);
    let first = capture.running[0].0.clone();
    for (n, t) in capture.running.iter().skip(1) {
        tensors.push((format!("running/{n}"), t.clone()));
    }
    let (problem, message) = reject(&assemble(&tensors, &header));
    assert!(matches!(problem, Problem::MissingTensor(_)), "{message}");
    assert!(message.contains(&format!("running/{first}")), "{message}");

    // a version 2 file cannot carry them
    let (mut tensors, mut header) = parts(&capture);
    for (n, t) in &capture.running {
        tensors.push((format!("running/{n}"), t.clone()));
    }
    assert!(Capture::from_bytes(&assemble(&tensors, &header), &Device::Cpu).is_ok());
    header["version"] = json!(2);
    let (problem, message) = reject(&assemble(&tensors, &header));
    assert!(matches!(problem, Problem::BadMeta(_)), "{message}");
    assert!(message.contains("version 2"), "{message}");
}

// ---- invalid files -------------------------------------------------------------------------

/// The capture's tensors under their file names, and its header.
fn parts(capture: &Capture) -> (Vec<(String, Tensor)>, Value) {
    let bytes = capture.to_bytes().unwrap();
    let header = header_of(&bytes);
    let mut tensors: Vec<(String, Tensor)> = capture
        .global
        .iter()
        .map(|(n, t)| (format!("global/{n}"), t.clone()))
        .collect();
    tensors.extend(
        capture
            .update
            .iter()
            .map(|(n, t)| (format!("update/{n}"), t.clone())),
    );
    (tensors, header)
}

fn assemble(tensors: &[(String, Tensor)], header: &Value) -> Vec<u8> {
    let meta = HashMap::from([(META_KEY.to_string(), header.to_string())]);
    safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta)).unwrap()
}

/// Parses `bytes`, which must fail as an invalid capture; returns the problem and message.
fn reject(bytes: &[u8]) -> (Problem, String) {
    match Capture::from_bytes(bytes, &Device::Cpu) {
        Ok(_) => panic!("an invalid capture was accepted"),
        Err(WireError::Invalid {
            kind,
            problem,
            path,
        }) => {
            assert_eq!(kind, FileKind::Capture);
            let message = WireError::Invalid {
                kind,
                path,
                problem: problem.clone(),
            }
            .to_string();
            assert!(message.starts_with("capture "), "{message}");
            (problem, message)
        }
        Err(other) => panic!("not an Invalid error: {other}"),
    }
}

/// Rejects the capture whose header was edited by `edit`.
fn reject_header(edit: impl FnOnce(&mut Value)) -> (Problem, String) {
    let (_, _, capture) = setup();
    let (tensors, mut header) = parts(&capture);
    edit(&mut header);
    reject(&assemble(&tensors, &header))
}

/// Rejects the capture whose tensors were edited by `edit`.
fn reject_tensors(edit: impl FnOnce(&mut Vec<(String, Tensor)>)) -> (Problem, String) {
    let (_, _, capture) = setup();
    let (mut tensors, header) = parts(&capture);
    edit(&mut tensors);
    reject(&assemble(&tensors, &header))
}

#[test]
fn the_unmodified_parts_are_accepted() {
    // The helpers below change only what each test says.
    let (_, _, capture) = setup();
    let (tensors, header) = parts(&capture);
    Capture::from_bytes(&assemble(&tensors, &header), &Device::Cpu).unwrap();
}

#[test]
fn rejects_what_is_not_safetensors() {
    let (_, _, capture) = setup();
    let bytes = capture.to_bytes().unwrap();
    for bad in [
        &b""[..],
        b"hello, world",
        &bytes[..bytes.len() / 2],
        &bytes[..12],
    ] {
        let (problem, message) = reject(bad);
        assert!(matches!(problem, Problem::NotSafetensors(_)), "{message}");
        assert!(message.contains("not a safetensors file"), "{message}");
    }
}

#[test]
fn rejects_missing_or_malformed_headers() {
    let (_, _, capture) = setup();
    let (tensors, header) = parts(&capture);
    let serialize = |meta: Option<HashMap<String, String>>| {
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), meta).unwrap()
    };
    for meta in [
        None,
        Some(HashMap::from([("synfed".to_string(), header.to_string())])),
    ] {
        let (problem, message) = reject(&serialize(meta));
        assert!(
            matches!(problem, Problem::MissingHeader { .. }),
            "{message}"
        );
        assert!(message.contains("synfed-capture"), "{message}");
    }
    for text in ["{not json", "[1, 2]", "{\"version\": 1}"] {
        let meta = HashMap::from([(META_KEY.to_string(), text.to_string())]);
        let (problem, message) = reject(&serialize(Some(meta)));
        assert!(
            matches!(problem, Problem::MalformedHeader { .. }),
            "{text}: {message}"
        );
        assert!(message.contains("malformed"), "{message}");
    }
    // Unknown, missing or mistyped fields.
    let (problem, message) = reject_header(|h| h["local_step"] = json!(3));
    assert!(
        matches!(problem, Problem::MalformedHeader { .. }),
        "{message}"
    );
    assert!(message.contains("local_step"), "{message}");
    let (problem, message) = reject_header(|h| {
        h.as_object_mut().unwrap().remove("round");
    });
    assert!(
        matches!(problem, Problem::MalformedHeader { .. }),
        "{message}"
    );
    assert!(message.contains("round"), "{message}");
    let (_, message) = reject_header(|h| h["mode"] = json!("training"));
    assert!(message.contains("training"), "{message}");
    let (_, message) = reject_header(|h| h["kind"] = json!("fedprox"));
    assert!(message.contains("fedprox"), "{message}");
}

#[test]
fn rejects_another_format() {
    let (problem, message) = reject_header(|h| h["format"] = json!("synfed-checkpoint"));
    assert!(matches!(problem, Problem::WrongFormat { .. }), "{message}");
    assert!(
        message.contains("synfed-checkpoint") && message.contains("expected `synfed-capture`"),
        "{message}"
    );
    let (problem, _) = reject_header(|h| h["format"] = json!(1));
    assert!(matches!(problem, Problem::WrongFormat { .. }));
}

#[test]
fn rejects_unknown_versions_saying_which_are_supported() {
    for v in [json!(4), json!(0), json!("1"), json!(1.5)] {
        let (problem, message) = reject_header(|h| h["version"] = v.clone());
        assert!(
            matches!(problem, Problem::UnsupportedVersion { .. }),
            "{message}"
        );
        assert!(
            message.contains(&format!("version {v} is not supported"))
                && message.contains("supported versions: 1"),
            "{message}"
        );
    }
}

#[test]
fn rejects_missing_tensors_by_name() {
    for name in [
        "global/bn1.running_mean",
        "global/layer3.2.conv2.weight",
        "update/fc.weight",
        "update/layer1.0.bn1.bias",
    ] {
        let (problem, message) = reject_tensors(|t| {
            let before = t.len();
            t.retain(|(n, _)| n != name);
            assert_eq!(t.len(), before - 1, "{name} is not a tensor of the capture");
        });
        assert_eq!(problem, Problem::MissingTensor(name.into()), "{message}");
        assert!(
            message.contains(&format!("missing tensor `{name}`")),
            "{message}"
        );
    }
}

#[test]
fn rejects_unexpected_tensors_by_name() {
    for name in [
        "update/bn1.running_mean",
        "global/fc.weight.fuzzy",
        "images",
    ] {
        let (problem, message) = reject_tensors(|t| {
            t.push((
                name.into(),
                Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap(),
            ));
        });
        assert_eq!(problem, Problem::UnexpectedTensor(name.into()), "{message}");
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn rejects_shapes_that_do_not_match_the_spec() {
    let (problem, message) = reject_tensors(|t| {
        let i = t.iter().position(|(n, _)| n == "update/fc.bias").unwrap();
        t[i].1 = Tensor::zeros(CLASSES + 1, DType::F32, &Device::Cpu).unwrap();
    });
    assert!(
        matches!(&problem, Problem::ShapeMismatch { name, .. } if name == "update/fc.bias"),
        "{message}"
    );
    assert!(
        message.contains("[11]") && message.contains("[10]"),
        "{message}"
    );
    // The tensors of a width-4 model under a width-8 spec.
    let (problem, message) = reject_header(|h| h["spec"]["width"] = json!(8));
    assert!(
        matches!(problem, Problem::ShapeMismatch { .. }),
        "{message}"
    );
    assert!(message.contains("global/conv1.weight"), "{message}");
}

#[test]
fn rejects_non_float_tensors() {
    let (problem, message) = reject_tensors(|t| {
        let i = t.iter().position(|(n, _)| n == "global/fc.bias").unwrap();
        t[i].1 = Tensor::zeros(CLASSES, DType::U32, &Device::Cpu).unwrap();
    });
    assert!(matches!(problem, Problem::BadDtype { .. }), "{message}");
    assert!(
        message.contains("global/fc.bias") && message.contains("U32"),
        "{message}"
    );
}

#[test]
fn rejects_non_finite_values_by_tensor() {
    for (name, value) in [
        ("update/layer2.1.conv1.weight", f32::NAN),
        ("global/bn1.running_var", f32::INFINITY),
        ("global/fc.bias", f32::NEG_INFINITY),
    ] {
        let (problem, message) = reject_tensors(|t| {
            let i = t.iter().position(|(n, _)| n == name).unwrap();
            let old = &t[i].1;
            let mut v = old.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let last = v.len() - 1;
            v[last] = value;
            t[i].1 = Tensor::from_vec(v, old.dims(), &Device::Cpu).unwrap();
        });
        assert_eq!(problem, Problem::NonFinite(name.into()), "{message}");
        assert!(
            message.contains(name) && message.contains("NaN or infinite"),
            "{message}"
        );
    }
}

#[test]
fn rejects_labels_that_do_not_fit() {
    let (problem, message) = reject_header(|h| h["labels"] = json!([1, 2, 3]));
    assert_eq!(
        problem,
        Problem::LabelCount {
            found: 3,
            batch_size: BATCH
        },
        "{message}"
    );
    assert!(message.contains("3 labels for a batch of 4"), "{message}");
    let (problem, message) = reject_header(|h| h["labels"] = json!([0, 1, 10, 2]));
    assert_eq!(
        problem,
        Problem::LabelOutOfRange {
            index: 2,
            label: 10,
            classes: CLASSES
        },
        "{message}"
    );
    assert!(message.contains("label 10"), "{message}");
    let (problem, _) = reject_header(|h| h["labels"] = json!([0, 1, -1, 2]));
    assert!(matches!(problem, Problem::MalformedHeader { .. }));
}

#[test]
fn rejects_fedavg_without_its_local_training() {
    for missing in ["local_steps", "local_lr"] {
        let (problem, message) = reject_header(|h| {
            h["kind"] = json!("fedavg");
            h["local_steps"] = json!(5);
            h["local_lr"] = json!(0.1);
            h[missing] = Value::Null;
        });
        assert_eq!(problem, Problem::FedAvgWithout(missing), "{message}");
        assert!(
            message.contains(missing) && message.contains("FedAvg"),
            "{message}"
        );
    }
    for (field, value) in [("local_steps", json!(0)), ("local_lr", json!(-0.1))] {
        let (problem, message) = reject_header(|h| {
            h["kind"] = json!("fedavg");
            h["local_steps"] = json!(5);
            h["local_lr"] = json!(0.1);
            h[field] = value.clone();
        });
        assert!(matches!(problem, Problem::BadMeta(_)), "{message}");
        assert!(message.contains(field), "{message}");
    }
    // And FedSGD with them.
    let (problem, message) = reject_header(|h| h["local_lr"] = json!(0.1));
    assert!(matches!(problem, Problem::BadMeta(_)), "{message}");
    assert!(message.contains("FedSGD"), "{message}");
}

#[test]
fn rejects_an_update_of_no_examples() {
    let (problem, message) = reject_header(|h| h["examples"] = json!(0));
    assert_eq!(problem, Problem::NoExamples, "{message}");
    assert!(message.contains("`examples` is 0"), "{message}");
    let (problem, message) = reject_header(|h| h["batch_size"] = json!(0));
    assert!(matches!(problem, Problem::BadMeta(_)), "{message}");
    assert!(message.contains("batch_size"), "{message}");
}

#[test]
fn rejects_a_normalization_for_other_images() {
    let (problem, message) = reject_header(|h| {
        h["normalization"] = json!({"mean": [0.5], "std": [0.5]});
    });
    assert!(matches!(problem, Problem::BadMeta(_)), "{message}");
    assert!(message.contains("normalization"), "{message}");
    let (_, message) = reject_header(|h| h["normalization"]["std"][0] = json!(0.0));
    assert!(message.contains("stds positive"), "{message}");
}

#[test]
fn rejects_huge_specs_before_building_them() {
    // Each of these would take gigabytes (or overflow) if the model were built.
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: [(&str, Edit); 6] = [
        ("width 4097", Box::new(|h| h["spec"]["width"] = json!(4097))),
        (
            "100001 classes",
            Box::new(|h| h["spec"]["classes"] = json!(100_001)),
        ),
        (
            "input 1×4097×4097",
            Box::new(|h| {
                h["spec"]["input"] = json!({"channels": 1, "height": 4097, "width": 4097})
            }),
        ),
        (
            "input 3×4294967296×4294967296",
            Box::new(|h| {
                h["spec"]["input"] =
                    json!({"channels": 3, "height": 4_294_967_296u64, "width": 4_294_967_296u64})
            }),
        ),
        (
            "input 18446744073709551615×2×1",
            Box::new(|h| {
                h["spec"]["input"] = json!({"channels": u64::MAX, "height": 2, "width": 1})
            }),
        ),
        ("Γ = 65", Box::new(|h| h["spec"]["gamma"] = json!(65))),
    ];
    for (what, edit) in cases {
        let (problem, message) = reject_header(|h| edit(h));
        assert!(
            matches!(problem, Problem::SpecTooLarge(_)),
            "{what}: {message}"
        );
        assert!(message.contains(what), "{what}: {message}");
    }
    // Within the bounds but invalid: a clear error too.
    let (problem, message) = reject_header(|h| h["spec"]["tau"] = json!(5.0));
    assert!(matches!(problem, Problem::BadSpec(_)), "{message}");
    assert!(message.contains("tau"), "{message}");
}

#[test]
fn rejects_specs_over_the_model_budget() {
    // Within the capture's own caps (input ≤ 16 Mi values, width ≤ 4096) but an MLP of
    // 4096·4096 inputs × 1000 hidden units: 16.8 G parameters, refused before building.
    let (problem, message) = reject_header(|h| {
        h["spec"]["input"] = json!({"channels": 1, "height": 4096, "width": 4096})
    });
    assert!(matches!(problem, Problem::SpecTooLarge(_)), "{message}");
    assert!(message.contains("input"), "{message}");
}

#[test]
fn rejects_unbounded_local_steps_and_batch_sizes() {
    let (_, _, capture) = setup();
    let (tensors, mut header) = parts(&capture);
    header["kind"] = json!("fedavg");
    header["local_lr"] = json!(0.1);
    header["local_steps"] = json!(1_000_000_000_000_000u64);
    let (problem, message) = reject(&assemble(&tensors, &header));
    assert!(matches!(problem, Problem::BadMeta(_)), "{message}");
    assert!(message.contains("local_steps"), "{message}");
    let (problem, message) = reject_header(|h| h["batch_size"] = json!(1u64 << 40));
    assert!(matches!(problem, Problem::BadMeta(_)), "{message}");
    assert!(message.contains("batch_size"), "{message}");
}

#[test]
fn errors_of_files_name_the_file() {
    let (_, _, capture) = setup();
    let (mut tensors, header) = parts(&capture);
    tensors.retain(|(n, _)| n != "update/fc.bias");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("round3-client2.safetensors");
    std::fs::write(&path, assemble(&tensors, &header)).unwrap();
    let message = Capture::load(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("update/fc.bias"),
        "{message}"
    );
    let absent = dir.path().join("absent.safetensors");
    let err = Capture::load(&absent, &Device::Cpu).unwrap_err();
    assert!(matches!(err, WireError::Io { .. }), "{err}");
    assert!(err.to_string().contains("absent.safetensors"), "{err}");
}

#[test]
fn save_refuses_invalid_metadata_and_writes_nothing() {
    let (_, _, mut capture) = setup();
    capture.meta.examples = 0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let err = capture.save(&path).unwrap_err();
    assert_eq!(err.problem(), Some(&Problem::NoExamples), "{err}");
    assert!(err.to_string().contains("c.safetensors"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Saving over an existing file replaces it whole.
    capture.meta.examples = BATCH;
    std::fs::write(&path, b"old contents").unwrap();
    capture.save(&path).unwrap();
    Capture::load(&path, &Device::Cpu).unwrap();
    assert_eq!(capture::VERSION, 3);
}

#[test]
fn a_client_placed_capture_records_it_and_the_attacker_replays_with_factors_of_one() {
    let (model, _, capture) = setup();
    // the default placement is not written: headers are those of files before the field
    let bytes = capture.to_bytes().unwrap();
    assert!(header_of(&bytes).get("fuzzy_at").is_none());
    let server_side = Capture::from_bytes(&bytes, &Device::Cpu).unwrap();
    assert_eq!(
        server_side.meta.fuzzy_at,
        synfed_synapse::FuzzyPlacement::Server
    );
    let replay = server_side.model(DType::F32, &Device::Cpu).unwrap();
    // server placement: the attacker knows the global factors (drawn from the spec's seed)
    for (mine, theirs) in replay
        .params()
        .iter()
        .zip(model.params().iter())
        .filter(|(p, _)| p.role == Role::SynapticWeight)
    {
        assert_eq!(
            bits(mine.fuzzy.as_ref().unwrap()),
            bits(theirs.fuzzy.as_ref().unwrap())
        );
    }
    let mut client = capture.clone();
    client.meta.fuzzy_at = synfed_synapse::FuzzyPlacement::Client;
    let bytes = client.to_bytes().unwrap();
    assert_eq!(header_of(&bytes)["fuzzy_at"], "client");
    let read = Capture::from_bytes(&bytes, &Device::Cpu).unwrap();
    assert_eq!(read.meta.fuzzy_at, synfed_synapse::FuzzyPlacement::Client);
    let replay = read.model(DType::F32, &Device::Cpu).unwrap();
    let mut synaptic = 0;
    for p in replay
        .params()
        .iter()
        .filter(|p| p.role == Role::SynapticWeight)
    {
        let f: Vec<f32> = p
            .fuzzy
            .as_ref()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(f.iter().all(|&v| v == 1.0), "{}", p.name);
        synaptic += 1;
    }
    assert!(synaptic > 0);
    // an unknown placement in a header is refused, naming it
    let (tensors, mut header) = parts(&client);
    header["fuzzy_at"] = json!("clients");
    let (_, message) = reject(&assemble(&tensors, &header));
    assert!(message.contains("clients"), "{message}");
}
