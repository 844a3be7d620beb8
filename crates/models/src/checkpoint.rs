//! Checkpoints: one safetensors file with every tensor of a model, its fuzzy factors and, in
//! the header's metadata, its [`ModelSpec`] and any state the caller wants to keep.
//!
//! Tensors are stored under their parameter names (`layer1.0.conv1.weight`, BatchNorm running
//! statistics included); fuzzy factors under `<name>.fuzzy`. The header's metadata has one key,
//! `synfed`, holding a JSON object with `format` (`synfed-checkpoint`), `version` (1), `spec`
//! and optionally `state`. (One key, because safetensors writes its metadata map in hash order:
//! several keys would make the bytes of equal checkpoints differ from run to run.) Loading
//! rebuilds the model from the spec and checks that every tensor is present with the right
//! shape, that there is no unexpected one, and that all values are finite.

use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::spec::ModelSpec;
use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use synfed_synapse::param::fuzzy_name;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "synfed-checkpoint";
/// Current version of the format.
pub const VERSION: u32 = 1;

/// The metadata key holding the [`Header`].
pub const META_KEY: &str = "synfed";

/// What the header's metadata says about the checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    format: String,
    version: u32,
    spec: Option<ModelSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<serde_json::Value>,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub model: Model,
    /// The caller's state saved with the model.
    pub state: Option<serde_json::Value>,
}

/// Writes `model` (and `state`) to `path`, atomically: a crash never leaves a torn file.
pub fn save(model: &Model, state: Option<&serde_json::Value>, path: &Path) -> Result<()> {
    let err = |problem: String| ModelError::Checkpoint {
        path: path.display().to_string(),
        problem,
    };
    let mut tensors: Vec<(String, Tensor)> = model.params().tensors();
    tensors.extend(model.params().fuzzy_tensors());
    let header = Header {
        format: FORMAT.to_string(),
        version: VERSION,
        spec: Some(model.spec().clone()),
        state: state.cloned(),
    };
    let meta = HashMap::from([(
        META_KEY.to_string(),
        serde_json::to_string(&header).map_err(|e| err(e.to_string()))?,
    )]);
    let bytes = safetensors::serialize(tensors, Some(meta)).map_err(|e| err(e.to_string()))?;
    let tmp = path.with_extension("safetensors.partial");
    std::fs::write(&tmp, bytes).map_err(|e| err(format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| err(format!("cannot move into place: {e}")))?;
    Ok(())
}

/// Reads a checkpoint written by [`save`], building the model with `dtype` on `device`.
pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::Checkpoint {
        path: path.display().to_string(),
        problem: format!("cannot read: {e}"),
    })?;
    from_bytes(&bytes, dtype, device).map_err(|e| match e {
        ModelError::Checkpoint { problem, .. } => ModelError::Checkpoint {
            path: path.display().to_string(),
            problem,
        },
        other => other,
    })
}

/// Reads the spec stored in a checkpoint without building the model.
pub fn read_spec(bytes: &[u8]) -> Result<ModelSpec> {
    spec_of(&header(bytes)?)
}

fn bad(problem: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: String::new(),
        problem: problem.into(),
    }
}

fn header(bytes: &[u8]) -> Result<Header> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| {
            bad(format!(
                "no `{META_KEY}` metadata: not a synfed checkpoint (no format)"
            ))
        })?;
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| bad(format!("malformed `{META_KEY}` metadata: {e}")))?;
    let field = |name: &str| value.get(name).filter(|v| !v.is_null());
    let format = field("format").and_then(|v| v.as_str()).unwrap_or("");
    if format != FORMAT {
        return Err(bad(format!("format is `{format}`, expected `{FORMAT}`")));
    }
    match field("version").map(|v| v.as_u64()) {
        Some(Some(v)) if v == VERSION as u64 => {}
        Some(Some(v)) => {
            return Err(bad(format!(
                "version {v} is not supported (this synfed reads version {VERSION})"
            )))
        }
        _ => return Err(bad("missing or malformed `version`")),
    }
    let spec = match field("spec") {
        Some(v) => {
            Some(ModelSpec::deserialize(v).map_err(|e| bad(format!("malformed spec: {e}")))?)
        }
        None => None,
    };
    Ok(Header {
        format: format.to_string(),
        version: VERSION,
        spec,
        state: field("state").cloned(),
    })
}

fn spec_of(header: &Header) -> Result<ModelSpec> {
    let spec = header
        .spec
        .clone()
        .ok_or_else(|| bad("the header has no `spec`"))?;
    spec.hyper.validate()?;
    Ok(spec)
}

/// Parses a checkpoint held in memory.
pub fn from_bytes(bytes: &[u8], dtype: DType, device: &Device) -> Result<Checkpoint> {
    let header = header(bytes)?;
    let spec = spec_of(&header)?;
    let state = header.state;
    let stored = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
        .map_err(|e| bad(e.to_string()))?;
    let mut model = Model::build(&spec, dtype, device)?;
    let mut expected = HashSet::new();
    let names: Vec<(String, bool)> = model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.fuzzy.is_some()))
        .collect();
    for (name, has_fuzzy) in names {
        let value = fetch(&stored, &name)?;
        model.params().set(&name, &value)?;
        expected.insert(name.clone());
        if has_fuzzy {
            let fname = fuzzy_name(&name);
            let factors = fetch(&stored, &fname)?;
            model.params_mut().set_fuzzy(&name, &factors)?;
            expected.insert(fname);
        }
    }
    if let Some(extra) = stored.keys().find(|k| !expected.contains(*k)) {
        return Err(bad(format!(
            "unexpected tensor `{extra}` for a {} model",
            spec.arch
        )));
    }
    Ok(Checkpoint { model, state })
}

fn fetch(stored: &HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    let t = stored
        .get(name)
        .ok_or_else(|| bad(format!("missing tensor `{name}`")))?;
    let finite = t
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?
        .iter()
        .all(|v| v.is_finite());
    if !finite {
        return Err(bad(format!("tensor `{name}` holds NaN or infinite values")));
    }
    Ok(t.clone())
}
