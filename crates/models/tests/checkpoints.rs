//! Checkpoints: a round trip restores weights, running statistics, fuzzy factors, spec and
//! state exactly, and bad files (random bytes, foreign or missing metadata, wrong versions,
//! specs or tensors) and degenerate specs are typed errors, never panics.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use synfed_models::checkpoint::{self, FORMAT, VERSION};
use synfed_models::{Arch, InputShape, Model, ModelError, ModelSpec};
use synfed_synapse::{MethodSet, Mode, SynapticSgd};

fn checkpoint_spec() -> ModelSpec {
    ModelSpec::new(
        Arch::ResNet20,
        InputShape::new(3, 8, 8),
        10,
        MethodSet::ALL,
        31,
    )
    .with_width(4)
}

/// A model with all three mechanisms that has moved away from its initial state: three SGD
/// steps in train mode (weights, running statistics, rejuvenation) and fuzzy factors that are
/// not the ones the seed would give.
fn trained_model() -> Model {
    let spec = checkpoint_spec();
    let mut model = build(&spec);
    let name = "layer2.0.conv1.weight";
    let custom = (model.params().get(name).unwrap().fuzzy.clone().unwrap() * 1.01).unwrap();
    model.params_mut().set_fuzzy(name, &custom).unwrap();
    let mut opt = SynapticSgd::new(model.params(), 0.1, 2);
    let x = images(4, spec.input, 3, DType::F32);
    let y = labels(4, 10);
    for _ in 0..3 {
        let grads = model.loss(&x, &y, Mode::Train).unwrap().backward().unwrap();
        opt.step(&grads).unwrap();
    }
    model
}

fn state() -> serde_json::Value {
    serde_json::json!({ "round": 17, "lr": 0.01, "rng": "340282366920938463463374607431768211455",
        "history": [1.5, 2.25] })
}

#[test]
fn checkpoint_round_trip_restores_everything() {
    let model = trained_model();
    let fresh = build(&checkpoint_spec());
    // precondition: the trained state is not what the spec rebuilds
    let trained = snapshot(&model);
    let initial = snapshot(&fresh);
    let differ = |name: &str| {
        let a = &trained.iter().find(|(n, _)| n == name).unwrap().1;
        let b = &initial.iter().find(|(n, _)| n == name).unwrap().1;
        a != b
    };
    for name in [
        "conv1.weight",
        "bn1.weight",
        "bn1.running_mean",
        "layer3.2.bn2.running_var",
        "fc.bias",
        "layer2.0.conv1.weight.fuzzy",
    ] {
        assert!(differ(name), "training did not change `{name}`");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    checkpoint::save(&model, Some(&state()), &path).unwrap();
    let loaded = checkpoint::load(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(loaded.model.spec(), model.spec());
    assert_eq!(loaded.state, Some(state()));
    assert_eq!(snapshot(&loaded.model), trained);
    // roles and fuzzy presence survive too
    for (p, q) in model.params().iter().zip(loaded.model.params().iter()) {
        assert_eq!(
            (&p.name, p.role, p.fuzzy.is_some()),
            (&q.name, q.role, q.fuzzy.is_some())
        );
    }
    // and the restored model computes the same function
    let x = images(2, checkpoint_spec().input, 8, DType::F32);
    assert_eq!(
        bits(&model.forward(&x, Mode::Eval).unwrap()),
        bits(&loaded.model.forward(&x, Mode::Eval).unwrap())
    );

    // no state, and in memory
    let bytes = std::fs::read(&path).unwrap();
    checkpoint::save(&model, None, &path).unwrap();
    let no_state = checkpoint::load(&path, DType::F32, &Device::Cpu).unwrap();
    assert!(no_state.state.is_none());
    let mem = checkpoint::from_bytes(&bytes, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(snapshot(&mem.model), trained);
    assert_eq!(checkpoint::read_spec(&bytes).unwrap(), checkpoint_spec());
    // no partial file is left behind
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1);
}

/// Decodes a checkpoint into its tensors and the fields of its `synfed` header, each as JSON
/// text (`format` as the bare string).
fn decode(bytes: &[u8]) -> (HashMap<String, Tensor>, HashMap<String, String>) {
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let meta = meta.metadata().clone().unwrap_or_default();
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&meta[checkpoint::META_KEY]).unwrap();
    let fields = header
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    (tensors, fields)
}

/// Encodes tensors and header fields (JSON text, or a bare string) as `decode` returns them.
fn encode(tensors: HashMap<String, Tensor>, fields: Option<HashMap<String, String>>) -> Vec<u8> {
    let mut list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = fields.map(|fields| {
        let header: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(k, v)| {
                let value = serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v));
                (k, value)
            })
            .collect();
        HashMap::from([(
            checkpoint::META_KEY.to_string(),
            serde_json::Value::Object(header).to_string(),
        )])
    });
    safetensors::serialize(list, meta).unwrap()
}

/// A valid checkpoint's bytes.
fn valid_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.safetensors");
    checkpoint::save(&trained_model(), Some(&state()), &path).unwrap();
    std::fs::read(&path).unwrap()
}

/// The bytes of the valid checkpoint after `edit`.
fn corrupt(
    valid: &[u8],
    edit: impl FnOnce(&mut HashMap<String, Tensor>, &mut HashMap<String, String>),
) -> Vec<u8> {
    let (mut tensors, mut meta) = decode(valid);
    edit(&mut tensors, &mut meta);
    encode(tensors, Some(meta))
}

/// Loads `bytes` from a file; it must fail with an error whose text contains every `needle`.
fn assert_rejected(bytes: &[u8], needles: &[&str], what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let err = match checkpoint::load(&path, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e,
    };
    let msg = err.to_string();
    for needle in needles {
        assert!(
            msg.contains(needle),
            "{what}: `{msg}` does not mention `{needle}`"
        );
    }
    if let ModelError::Checkpoint { path: p, .. } = &err {
        assert_eq!(p, &path.display().to_string(), "{what}: {msg}");
    }
    assert!(
        checkpoint::from_bytes(bytes, DType::F32, &Device::Cpu).is_err(),
        "{what}: accepted in memory"
    );
}

#[test]
fn checkpoint_loading_rejects_bad_files_without_panicking() {
    let valid = valid_bytes();
    checkpoint::from_bytes(&valid, DType::F32, &Device::Cpu).unwrap();

    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for len in [0usize, 7, 8, 100, 10_000] {
        let noise: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        assert_rejected(&noise, &["checkpoint"], &format!("{len} random bytes"));
    }
    // a header that claims to be JSON but is not
    let mut fake = 16u64.to_le_bytes().to_vec();
    fake.extend_from_slice(b"{not json at all");
    assert_rejected(&fake, &["checkpoint"], "bad header");

    // a valid safetensors file without synfed metadata, and with foreign metadata
    let (tensors, _) = decode(&valid);
    assert_rejected(&encode(tensors.clone(), None), &["format"], "no metadata");
    let mut foreign = HashMap::new();
    foreign.insert("format".to_string(), "pt".to_string());
    assert_rejected(&encode(tensors, Some(foreign)), &["pt"], "foreign format");

    // versions
    let v2 = corrupt(&valid, |_, m| {
        m.insert("version".into(), (VERSION + 1).to_string());
    });
    assert_rejected(&v2, &["version", &(VERSION + 1).to_string()], "version + 1");
    let v0 = corrupt(&valid, |_, m| {
        m.insert("version".into(), "0".into());
    });
    assert_rejected(&v0, &["version"], "version 0");
    let junk = corrupt(&valid, |_, m| {
        m.insert("version".into(), "one".into());
    });
    assert_rejected(&junk, &["version"], "malformed version");
    let none = corrupt(&valid, |_, m| {
        m.remove("version");
    });
    assert_rejected(&none, &["version"], "no version");

    // spec and state
    let spec = corrupt(&valid, |_, m| {
        m.remove("spec");
    });
    assert_rejected(&spec, &["spec"], "no spec");
    let arch = corrupt(&valid, |_, m| {
        let s = m["spec"].replace("resnet20", "vgg11");
        m.insert("spec".into(), s);
    });
    assert_rejected(&arch, &["spec"], "unknown arch");
    // a header that is not JSON
    let (tensors, _) = decode(&valid);
    let broken = HashMap::from([(
        checkpoint::META_KEY.to_string(),
        "{\"format\": ".to_string(),
    )]);
    let mut list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let st = safetensors::serialize(list, Some(broken)).unwrap();
    assert_rejected(
        &st,
        &["malformed", checkpoint::META_KEY],
        "malformed header",
    );
    // re-encoding without an edit is accepted: the rejections above are due to the edits
    let (_, meta) = decode(&valid);
    assert_eq!(meta["format"], FORMAT);
    checkpoint::from_bytes(&corrupt(&valid, |_, _| {}), DType::F32, &Device::Cpu).unwrap();

    // tensors: missing (a weight, a buffer, fuzzy factors), wrong shape, unexpected extra
    for name in [
        "layer1.1.conv2.weight",
        "bn1.running_var",
        "fc.weight.fuzzy",
    ] {
        let b = corrupt(&valid, |t, _| {
            assert!(t.remove(name).is_some(), "{name}");
        });
        assert_rejected(&b, &["missing", name], &format!("missing {name}"));
    }
    let wrong = corrupt(&valid, |t, _| {
        t.insert(
            "layer2.0.conv1.weight".into(),
            Tensor::zeros((8, 4, 3, 2), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_rejected(&wrong, &["layer2.0.conv1.weight", "shape"], "wrong shape");
    let wrong_fuzzy = corrupt(&valid, |t, _| {
        t.insert(
            "fc.weight.fuzzy".into(),
            Tensor::ones((10, 15), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_rejected(
        &wrong_fuzzy,
        &["fc.weight"],
        "fuzzy factors of the wrong shape",
    );
    let extra = corrupt(&valid, |t, _| {
        t.insert(
            "layer4.0.conv1.weight".into(),
            Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_rejected(
        &extra,
        &["unexpected", "layer4.0.conv1.weight"],
        "extra tensor",
    );
    // fuzzy factors for a tensor that has none (a bias)
    let extra_fuzzy = corrupt(&valid, |t, _| {
        t.insert(
            "fc.bias.fuzzy".into(),
            Tensor::ones(10, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_rejected(&extra_fuzzy, &["fc.bias.fuzzy"], "fuzzy factors of a bias");

    // non-finite values, in a weight, a buffer and fuzzy factors
    for (name, value) in [
        ("layer3.1.conv1.weight", f32::NAN),
        ("bn1.running_var", f32::INFINITY),
        ("conv1.weight.fuzzy", f32::NAN),
    ] {
        let b = corrupt(&valid, |t, _| {
            let old = &t[name];
            let mut v: Vec<f32> = old.flatten_all().unwrap().to_vec1().unwrap();
            let last = v.len() - 1;
            v[last] = value;
            let new = Tensor::from_vec(v, old.dims(), &Device::Cpu).unwrap();
            t.insert(name.to_string(), new);
        });
        assert_rejected(&b, &[name, "NaN"], &format!("{value} in {name}"));
    }

    // truncated files: in the header, in the data, one byte short
    for keep in [4, 40, valid.len() / 2, valid.len() - 1] {
        assert_rejected(
            &valid[..keep],
            &["checkpoint"],
            &format!("first {keep} bytes"),
        );
    }
    // a missing file
    let dir = tempfile::tempdir().unwrap();
    let err = checkpoint::load(
        &dir.path().join("nope.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
}

#[test]
fn degenerate_specs_are_rejected_not_built() {
    for arch in Arch::ALL {
        for (input, classes, width) in [
            (CIFAR, 10, 0usize),
            (CIFAR, 0, 4),
            (InputShape::new(0, 32, 32), 10, 4),
            (InputShape::new(3, 0, 0), 10, 4),
            (InputShape::new(1, 28, 0), 10, 4),
        ] {
            let spec = ModelSpec::new(arch, input, classes, MethodSet::ALL, 0).with_width(width);
            match Model::build(&spec, DType::F32, &Device::Cpu) {
                Err(ModelError::BadInput { arch: a, .. }) => assert_eq!(a, arch),
                Err(other) => panic!("{arch} {input} {classes} {width}: wrong error {other}"),
                Ok(_) => panic!("{arch} {input} {classes} classes width {width}: built"),
            }
        }
    }
    // a checkpoint whose spec is degenerate is an error too, not a panic
    let valid = valid_bytes();
    for (key, value) in [("width", 0), ("classes", 0)] {
        let bytes = corrupt(&valid, |_, m| {
            let mut spec: serde_json::Value = serde_json::from_str(&m["spec"]).unwrap();
            spec[key] = value.into();
            spec["arch"] = "lenet".into();
            m.insert("spec".into(), spec.to_string());
        });
        assert!(
            checkpoint::from_bytes(&bytes, DType::F32, &Device::Cpu).is_err(),
            "{key} = {value}"
        );
    }
    let bytes = corrupt(&valid, |_, m| {
        let mut spec: serde_json::Value = serde_json::from_str(&m["spec"]).unwrap();
        spec["input"]["height"] = 0.into();
        spec["arch"] = "lenet".into();
        m.insert("spec".into(), spec.to_string());
    });
    assert_rejected(&bytes, &["lenet", "0"], "lenet on 0-pixel images");
}
