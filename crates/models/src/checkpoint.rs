//! Checkpoints: one safetensors file with every tensor of a model, its fuzzy factors and, in
//! the header's metadata, its [`ModelSpec`] and any state the caller wants to keep.
//!
//! Tensors are stored under their parameter names (`layer1.0.conv1.weight`, BatchNorm running
//! statistics included); fuzzy factors under `<name>.fuzzy`. Metadata keys: `format`
//! (`synfed-checkpoint`), `version` (1), `spec` (JSON) and optionally `state` (JSON). Loading
//! rebuilds the model from the spec and checks that every tensor is present with the right
//! shape, that there is no unexpected one, and that all values are finite.

use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::spec::ModelSpec;
use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use synfed_synapse::param::fuzzy_name;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "synfed-checkpoint";
/// Current version of the format.
pub const VERSION: u32 = 1;

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
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("version".to_string(), VERSION.to_string());
    meta.insert(
        "spec".to_string(),
        serde_json::to_string(model.spec()).map_err(|e| err(e.to_string()))?,
    );
    if let Some(state) = state {
        meta.insert("state".to_string(), state.to_string());
    }
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
    let meta = metadata(bytes)?;
    spec_of(&meta)
}

fn bad(problem: impl Into<String>) -> ModelError {
    ModelError::Checkpoint {
        path: String::new(),
        problem: problem.into(),
    }
}

fn metadata(bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    match meta.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        Some(other) => return Err(bad(format!("format is `{other}`, expected `{FORMAT}`"))),
        None => return Err(bad("no `format` metadata: not a synfed checkpoint")),
    }
    match meta.get("version").map(|v| v.parse::<u32>()) {
        Some(Ok(VERSION)) => Ok(meta),
        Some(Ok(v)) => Err(bad(format!(
            "version {v} is not supported (this synfed reads version {VERSION})"
        ))),
        _ => Err(bad("missing or malformed `version` metadata")),
    }
}

fn spec_of(meta: &HashMap<String, String>) -> Result<ModelSpec> {
    let json = meta.get("spec").ok_or_else(|| bad("no `spec` metadata"))?;
    let spec: ModelSpec =
        serde_json::from_str(json).map_err(|e| bad(format!("malformed spec: {e}")))?;
    spec.hyper.validate()?;
    Ok(spec)
}

/// Parses a checkpoint held in memory.
pub fn from_bytes(bytes: &[u8], dtype: DType, device: &Device) -> Result<Checkpoint> {
    let meta = metadata(bytes)?;
    let spec = spec_of(&meta)?;
    let state = match meta.get("state") {
        Some(s) => Some(serde_json::from_str(s).map_err(|e| bad(format!("malformed state: {e}")))?),
        None => None,
    };
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
