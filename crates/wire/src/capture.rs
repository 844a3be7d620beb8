//! Captures: one intercepted client update, i.e. what an honest-but-curious server (or a
//! network attacker) sees of one client in one round.
//!
//! A capture is a safetensors file with
//! - `global/<param>` for every tensor of the model (trainable parameters and BatchNorm
//!   running statistics, [`ParamStore::iter`](synfed_synapse::ParamStore::iter)): the global
//!   model the client started from;
//! - `update/<param>` for every trainable parameter
//!   ([`ParamStore::trainable`](synfed_synapse::ParamStore::trainable)): what the client sent, a
//!   gradient for FedSGD, θ_local − θ_global for FedAvg;
//! - `running/<param>` for every BatchNorm running statistic (every tensor that is not
//!   trainable) when the client reported their change (version 3; all of them or none): what a
//!   train-mode client's step did to them, `m·(batch − before)`. A server sees this change with
//!   every update, and it gives away the batch's per-channel statistics
//!   (the `bn-prior` attack's threat model), so an honest capture keeps it;
//! - one header metadata key, [`META_KEY`], holding a JSON object: `format` ([`FORMAT`]),
//!   `version` ([`VERSION`]), the fields of [`CaptureMeta`] and `update_digest`, the
//!   [`UpdateDigest`] of the `update/` tensors (version 2 on; version 1 files have none). The
//!   digest is what an [`Escrow`](crate::Escrow) is checked against: it binds the truth a
//!   client kept to the update the server received.
//!
//! Reading validates everything an attacker's code would otherwise trip over: the header, the
//! spec (bounded before any model is built from it), every tensor's presence, shape and
//! finiteness against the model the spec describes, and the consistency of the metadata.

use crate::digest::UpdateDigest;
use crate::error::{FileKind, Problem, Result, WireError};
use crate::{all_finite, dtype_name, invalid, IN_MEMORY};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use synfed_data::Normalization;
use synfed_models::{Model, ModelSpec, Update};
use synfed_synapse::{FuzzyPlacement, Mode};

/// Value of the header's `format` field.
pub const FORMAT: &str = "synfed-capture";
/// Version written by this crate (2: the header carries `update_digest`; 3: the file may carry
/// the change of the running statistics, `running/`).
pub const VERSION: u64 = 3;
/// Versions this crate reads (1: no digest, so no escrow can be bound to it; 1 and 2: no
/// running statistics).
pub const SUPPORTED_VERSIONS: &[u64] = &[1, 2, 3];
/// The header field holding the update's digest.
pub const DIGEST_KEY: &str = "update_digest";
/// The one safetensors metadata key, holding the header JSON.
pub const META_KEY: &str = "synfed-capture";
/// Prefix of the global parameters' tensor names.
pub const GLOBAL_PREFIX: &str = "global/";
/// Prefix of the update's tensor names.
pub const UPDATE_PREFIX: &str = "update/";
/// Prefix of the running statistics' changes (version 3).
pub const RUNNING_PREFIX: &str = "running/";

/// Largest `width` a capture's spec may have (checked before building the model).
pub const MAX_WIDTH: usize = 4096;
/// Largest number of classes a capture's spec may have.
pub const MAX_CLASSES: usize = 100_000;
/// Largest input C·H·W a capture's spec may have.
pub const MAX_INPUT_ELEMS: usize = 16 * 1024 * 1024;
/// Largest splitting Γ a capture's spec may have (Γ multiplies every synaptic weight).
pub const MAX_GAMMA: usize = 64;
/// Most local SGD steps a FedAvg capture may declare (an attacker unrolls every one of them).
pub const MAX_LOCAL_STEPS: usize = 100_000;
/// Largest batch size a capture may declare (the attacker optimises one image per example).
pub const MAX_BATCH_SIZE: usize = 65_536;

const KIND: FileKind = FileKind::Capture;

/// How the update was computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateKind {
    /// One gradient of the loss on one batch (`fedsgd`).
    FedSgd,
    /// θ_local − θ_global after `local_steps` SGD steps of `local_lr` (`fedavg`).
    FedAvg,
}

/// The public facts of an intercepted update, stored in the capture's header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureMeta {
    /// The model, from which the attacker rebuilds the architecture (and whatever the spec
    /// determines, such as fuzzy factors).
    pub spec: ModelSpec,
    /// Federation round.
    pub round: u64,
    /// Client id.
    pub client: String,
    /// Number of examples the update is computed on.
    pub examples: usize,
    /// Batch size of the client's steps.
    pub batch_size: usize,
    pub kind: UpdateKind,
    /// Local SGD steps (FedAvg only).
    pub local_steps: Option<usize>,
    /// Local learning rate (FedAvg only).
    pub local_lr: Option<f64>,
    /// The BatchNorm mode the client computed in.
    pub mode: Mode,
    /// The normalisation the client's images went through.
    pub normalization: Normalization,
    /// Labels of the batch, when the scenario exposes them.
    pub labels: Option<Vec<u32>>,
    /// Where the run's fuzzy learning rates act. `client`: the update was scaled by the
    /// client's private factors, which the attacker does not know, so [`Capture::model`]
    /// replays with factors of one (their mean). Left out of the header while it is `server`
    /// (files from before the field read as `server`).
    #[serde(default, skip_serializing_if = "is_server")]
    pub fuzzy_at: FuzzyPlacement,
    /// Set when a malicious server sent this client an imprinted model (`[tap] mode =
    /// "imprint"`): the capture's global model is the one the client received, whose first
    /// layer's rows `0..bins` are the imprint rows. Left out of the header otherwise (files
    /// from before the field read as an honest server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imprint: Option<ImprintRecord>,
}

/// What a malicious server wrote into the first layer it sent a targeted client (Fowl et al.,
/// *Robbing the Fed*, ICLR 2022): the attacker of such a capture is that server, so it knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImprintRecord {
    /// Rows `0..bins` of the first layer's weight all measure the same statistic (the mean of
    /// the normalised input) and their biases are minus increasing thresholds: row i fires for
    /// images whose statistic exceeds threshold i. Bin i lies between thresholds i and i + 1
    /// (the last bin is open above).
    pub bins: usize,
    /// Mean of the statistic's distribution the thresholds were placed on.
    pub mean: f64,
    /// Standard deviation of that distribution.
    pub std: f64,
}

fn is_server(placement: &FuzzyPlacement) -> bool {
    *placement == FuzzyPlacement::Server
}

impl CaptureMeta {
    /// The metadata of a FedSGD update: the gradient of one batch of `batch_size` examples at
    /// the global weights, computed with BatchNorm on batch statistics (train mode).
    pub fn fedsgd(
        spec: ModelSpec,
        round: u64,
        client: impl Into<String>,
        batch_size: usize,
        normalization: Normalization,
        labels: Option<Vec<u32>>,
    ) -> Self {
        Self {
            spec,
            round,
            client: client.into(),
            examples: batch_size,
            batch_size,
            kind: UpdateKind::FedSgd,
            local_steps: None,
            local_lr: None,
            mode: Mode::Train,
            normalization,
            labels,
            fuzzy_at: FuzzyPlacement::Server,
            imprint: None,
        }
    }
}

/// The header as written: `format` and `version` first, then the metadata and the digest.
#[derive(Serialize)]
struct HeaderOut<'a> {
    format: &'static str,
    version: u64,
    #[serde(flatten)]
    meta: &'a CaptureMeta,
    update_digest: UpdateDigest,
}

/// One intercepted client update.
#[derive(Clone, Debug)]
pub struct Capture {
    pub meta: CaptureMeta,
    /// Every tensor of the global model, by parameter name (without the `global/` prefix).
    pub global: Vec<(String, Tensor)>,
    /// The update of every trainable parameter, by parameter name (without `update/`).
    pub update: Vec<(String, Tensor)>,
    /// The change the client reported for every BatchNorm running statistic, by parameter name
    /// (without `running/`), in parameter order; empty when the capture has none (a model
    /// without BatchNorm, a capture made without them, or a version 1–2 file).
    pub running: Vec<(String, Tensor)>,
}

impl Capture {
    /// A capture of `update` (one tensor per trainable parameter, in
    /// [`trainable`](synfed_synapse::ParamStore::trainable) order) computed from the global
    /// model `model`. Tensors are copied: later training of `model` does not change the capture.
    pub fn new(meta: CaptureMeta, model: &Model, update: Vec<Tensor>) -> Result<Self> {
        if meta.spec != *model.spec() {
            return Err(WireError::Mismatch(
                "the capture's spec is not the model's".into(),
            ));
        }
        let trainable: Vec<_> = model.params().trainable().collect();
        if update.len() != trainable.len() {
            return Err(WireError::Mismatch(format!(
                "{} update tensors for {} trainable parameters",
                update.len(),
                trainable.len()
            )));
        }
        let mut named = Vec::with_capacity(update.len());
        for (p, u) in trainable.iter().zip(update) {
            if u.dims() != p.var.dims() {
                return Err(WireError::Mismatch(format!(
                    "update of `{}` has shape {:?}, the parameter {:?}",
                    p.name,
                    u.dims(),
                    p.var.dims()
                )));
            }
            named.push((p.name.clone(), u.detach().copy()?));
        }
        let global = model
            .params()
            .iter()
            .map(|p| Ok((p.name.clone(), p.var.as_tensor().detach().copy()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            meta,
            global,
            update: named,
            running: Vec::new(),
        })
    }

    /// This capture with the change of `model`'s running statistics that the client reported:
    /// one tensor per non-trainable parameter of `model` (the capture's model), in parameter
    /// order. Refuses another count or shape.
    pub fn with_running_change(mut self, model: &Model, change: Vec<Tensor>) -> Result<Self> {
        let buffers: Vec<_> = model
            .params()
            .iter()
            .filter(|p| !p.role.is_trainable())
            .collect();
        if change.len() != buffers.len() {
            return Err(WireError::Mismatch(format!(
                "{} running-statistic changes for {} running statistics",
                change.len(),
                buffers.len()
            )));
        }
        let mut running = Vec::with_capacity(change.len());
        for (p, c) in buffers.iter().zip(change) {
            if c.dims() != p.var.dims() {
                return Err(WireError::Mismatch(format!(
                    "the change of `{}` has shape {:?}, the statistic {:?}",
                    p.name,
                    c.dims(),
                    p.var.dims()
                )));
            }
            running.push((p.name.clone(), c.detach().copy()?));
        }
        self.running = running;
        Ok(self)
    }

    /// The global value of the running statistic `name` and the change the client reported
    /// for it, when the capture carries that change.
    pub fn running_pair(&self, name: &str) -> Option<(&Tensor, &Tensor)> {
        let change = self.running.iter().find(|(n, _)| n == name)?;
        let before = self.global.iter().find(|(n, _)| n == name)?;
        Some((&before.1, &change.1))
    }

    /// The capture of a received `update` (every model tensor, with its role) computed from
    /// the global model `global` (every tensor, by name): the update's trainable entries, in
    /// parameter order, are the `update/` part, the change of its BatchNorm running statistics
    /// the `running/` part. Tensors share storage with the arguments (the server's are not
    /// changed afterwards).
    pub fn of_update(meta: CaptureMeta, global: Vec<(String, Tensor)>, update: &Update) -> Self {
        Self {
            meta,
            global,
            update: update.named_trainable(),
            running: update
                .iter()
                .filter(|e| !e.is_trainable())
                .map(|e| (e.name.clone(), e.tensor.clone()))
                .collect(),
        }
    }

    /// The file's bytes: identical for equal captures.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.to_bytes_at(IN_MEMORY)
    }

    /// The digest of the update as held (the `update/` tensors, in order): the server's
    /// digest of what it received, written into the header.
    pub fn update_digest(&self) -> Result<UpdateDigest> {
        UpdateDigest::of(&self.update)
    }

    fn to_bytes_at(&self, origin: &str) -> Result<Vec<u8>> {
        let bad = |problem| invalid(KIND, origin, problem);
        check_meta(&self.meta).map_err(bad)?;
        let mut tensors: Vec<(String, &Tensor)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (prefix, list) in [
            (GLOBAL_PREFIX, &self.global),
            (UPDATE_PREFIX, &self.update),
            (RUNNING_PREFIX, &self.running),
        ] {
            for (name, t) in list {
                let full = format!("{prefix}{name}");
                if !seen.insert(full.clone()) {
                    return Err(bad(Problem::BadMeta(format!(
                        "tensor `{full}` appears twice"
                    ))));
                }
                tensors.push((full, t));
            }
        }
        let header = HeaderOut {
            format: FORMAT,
            version: VERSION,
            meta: &self.meta,
            update_digest: self.update_digest()?,
        };
        let json = serde_json::to_string(&header).map_err(|e| {
            bad(Problem::MalformedHeader {
                key: META_KEY,
                reason: e.to_string(),
            })
        })?;
        let meta = HashMap::from([(META_KEY.to_string(), json)]);
        safetensors::serialize(tensors, Some(meta))
            .map_err(|e| bad(Problem::NotSafetensors(e.to_string())))
    }

    /// Writes the capture to `path` atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes_at(&path.display().to_string())?;
        crate::write_atomic(KIND, path, &bytes)
    }

    /// Reads and validates the capture at `path`, with its tensors on `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::read_file(KIND, path)?;
        Self::from_bytes(&bytes, device).map_err(|e| crate::with_path(e, path))
    }

    /// Parses and validates a capture held in memory, with its tensors on `device`.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        parse(bytes, device, IN_MEMORY)
    }

    /// The attacker's copy of the global model: built from the spec with `dtype` on `device`,
    /// every tensor set from [`global`](Self::global). It shares no storage with anything.
    /// Its fuzzy factors are the spec's, or ones where the client applied private factors
    /// (`fuzzy_at = client`): the attacker's best guess of factors it was never told.
    pub fn model(&self, dtype: DType, device: &Device) -> Result<Model> {
        check_spec_size(&self.meta.spec).map_err(|p| invalid(KIND, IN_MEMORY, p))?;
        let mut model = Model::build(&self.meta.spec, dtype, device)?;
        if self.meta.fuzzy_at == FuzzyPlacement::Client {
            synfed_synapse::fuzzy_placement::neutralise(model.params_mut())?;
        }
        let names: BTreeSet<&str> = model.params().iter().map(|p| p.name.as_str()).collect();
        for (name, value) in &self.global {
            model.params().set(name, value)?;
        }
        let given: BTreeSet<&str> = self.global.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(missing) = names.difference(&given).next() {
            return Err(WireError::Mismatch(format!(
                "the capture has no global value of `{missing}`"
            )));
        }
        Ok(model)
    }

    /// The update tensors in `model.params().trainable()` order, converted to each parameter's
    /// dtype and device.
    pub fn update_in_param_order(&self, model: &Model) -> Result<Vec<Tensor>> {
        let by_name: HashMap<&str, &Tensor> =
            self.update.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let trainable: Vec<_> = model.params().trainable().collect();
        if by_name.len() != trainable.len() {
            return Err(WireError::Mismatch(format!(
                "the capture updates {} tensors, the model has {} trainable ones",
                by_name.len(),
                trainable.len()
            )));
        }
        trainable
            .iter()
            .map(|p| {
                let t = by_name.get(p.name.as_str()).ok_or_else(|| {
                    WireError::Mismatch(format!("the capture has no update of `{}`", p.name))
                })?;
                if t.dims() != p.var.dims() {
                    return Err(WireError::Mismatch(format!(
                        "the update of `{}` has shape {:?}, the model's parameter {:?}",
                        p.name,
                        t.dims(),
                        p.var.dims()
                    )));
                }
                Ok(t.to_dtype(p.var.dtype())?.to_device(p.var.device())?)
            })
            .collect()
    }
}

/// Refuses specs whose model would be too large to build (a hostile file must not make the
/// reader allocate gigabytes), before anything is built.
fn check_spec_size(spec: &ModelSpec) -> std::result::Result<(), Problem> {
    let too_large = |what: String| Err(Problem::SpecTooLarge(what));
    if let Some(w) = spec.width.filter(|w| *w > MAX_WIDTH) {
        return too_large(format!("width {w} exceeds {MAX_WIDTH}"));
    }
    if spec.classes > MAX_CLASSES {
        return too_large(format!("{} classes exceed {MAX_CLASSES}", spec.classes));
    }
    let i = spec.input;
    let elems = i
        .channels
        .checked_mul(i.height)
        .and_then(|n| n.checked_mul(i.width));
    if elems.is_none_or(|n| n > MAX_INPUT_ELEMS) {
        return too_large(format!(
            "input {}×{}×{} exceeds {MAX_INPUT_ELEMS} values",
            i.channels, i.height, i.width
        ));
    }
    if spec.hyper.gamma > MAX_GAMMA {
        return too_large(format!(
            "splitting Γ = {} exceeds {MAX_GAMMA}",
            spec.hyper.gamma
        ));
    }
    // The model's own parameter and input budget, from the spec alone.
    spec.check_budget()
        .map_err(|e| Problem::SpecTooLarge(e.to_string()))
}

/// The consistency of the metadata on its own (no tensors, no model built).
fn check_meta(meta: &CaptureMeta) -> std::result::Result<(), Problem> {
    check_spec_size(&meta.spec)?;
    meta.spec
        .hyper
        .validate()
        .map_err(|e| Problem::BadSpec(e.to_string()))?;
    if meta.examples == 0 {
        return Err(Problem::NoExamples);
    }
    if meta.batch_size == 0 {
        return Err(Problem::BadMeta("`batch_size` is 0".into()));
    }
    if meta.batch_size > MAX_BATCH_SIZE {
        return Err(Problem::BadMeta(format!(
            "`batch_size` is {}, more than {MAX_BATCH_SIZE}",
            meta.batch_size
        )));
    }
    match meta.kind {
        UpdateKind::FedAvg => {
            let steps = meta
                .local_steps
                .ok_or(Problem::FedAvgWithout("local_steps"))?;
            let lr = meta.local_lr.ok_or(Problem::FedAvgWithout("local_lr"))?;
            if steps == 0 {
                return Err(Problem::BadMeta("`local_steps` is 0".into()));
            }
            if steps > MAX_LOCAL_STEPS {
                return Err(Problem::BadMeta(format!(
                    "`local_steps` is {steps}, more than {MAX_LOCAL_STEPS}"
                )));
            }
            if !(lr.is_finite() && lr > 0.0) {
                return Err(Problem::BadMeta(format!(
                    "`local_lr` is {lr}, expected a positive number"
                )));
            }
        }
        UpdateKind::FedSgd => {
            if meta.local_steps.is_some() || meta.local_lr.is_some() {
                return Err(Problem::BadMeta(
                    "a FedSGD update has no `local_steps` or `local_lr` (they must be null)".into(),
                ));
            }
        }
    }
    let norm = &meta.normalization;
    let channels = meta.spec.input.channels;
    if norm.mean.len() != channels || norm.std.len() != channels {
        return Err(Problem::BadMeta(format!(
            "the normalization has {} means and {} stds for {channels}-channel images",
            norm.mean.len(),
            norm.std.len()
        )));
    }
    if !norm.mean.iter().all(|m| m.is_finite())
        || !norm.std.iter().all(|s| s.is_finite() && *s > 0.0)
    {
        return Err(Problem::BadMeta(
            "the normalization's means must be finite and its stds positive".into(),
        ));
    }
    if let Some(labels) = &meta.labels {
        if labels.len() != meta.batch_size {
            return Err(Problem::LabelCount {
                found: labels.len(),
                batch_size: meta.batch_size,
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= meta.spec.classes)
        {
            return Err(Problem::LabelOutOfRange {
                index,
                label,
                classes: meta.spec.classes,
            });
        }
    }
    Ok(())
}

fn is_float(d: safetensors::Dtype) -> bool {
    use safetensors::Dtype::*;
    matches!(d, F16 | BF16 | F32 | F64)
}

fn parse(bytes: &[u8], device: &Device, origin: &str) -> Result<Capture> {
    let bad = |problem| invalid(KIND, origin, problem);
    let (st, mut header, version) =
        crate::open(KIND, origin, bytes, META_KEY, FORMAT, SUPPORTED_VERSIONS)?;
    let malformed = |reason: String| {
        bad(Problem::MalformedHeader {
            key: META_KEY,
            reason,
        })
    };
    let declared = match (version, header.remove(DIGEST_KEY)) {
        (1, None) => None,
        (1, Some(_)) => {
            return Err(malformed(format!(
                "a version 1 capture has no `{DIGEST_KEY}`"
            )))
        }
        (_, None) => return Err(malformed(format!("no `{DIGEST_KEY}`"))),
        (_, Some(value)) => {
            Some(UpdateDigest::deserialize(value).map_err(|e| malformed(e.to_string()))?)
        }
    };
    let meta = CaptureMeta::deserialize(serde_json::Value::Object(header)).map_err(|e| {
        bad(Problem::MalformedHeader {
            key: META_KEY,
            reason: e.to_string(),
        })
    })?;
    check_meta(&meta).map_err(bad)?;

    // The model the spec describes tells which tensors, of which shapes, must be there.
    let reference = Model::build(&meta.spec, DType::F32, &Device::Cpu)
        .map_err(|e| bad(Problem::BadSpec(e.to_string())))?;
    let mut expected: Vec<(String, String, Vec<usize>)> = Vec::new();
    for p in reference.params().iter() {
        expected.push((
            format!("{GLOBAL_PREFIX}{}", p.name),
            p.name.clone(),
            p.var.dims().to_vec(),
        ));
    }
    let n_global = expected.len();
    for p in reference.params().trainable() {
        expected.push((
            format!("{UPDATE_PREFIX}{}", p.name),
            p.name.clone(),
            p.var.dims().to_vec(),
        ));
    }
    let n_update = expected.len() - n_global;
    // Version 3 may carry the change of every running statistic: all of them or none.
    let running: Vec<(String, String, Vec<usize>)> = reference
        .params()
        .iter()
        .filter(|p| !p.role.is_trainable())
        .map(|p| {
            (
                format!("{RUNNING_PREFIX}{}", p.name),
                p.name.clone(),
                p.var.dims().to_vec(),
            )
        })
        .collect();
    drop(reference);
    let present = running
        .iter()
        .filter(|(full, _, _)| st.tensor(full).is_ok())
        .count();
    if present > 0 && version < 3 {
        return Err(bad(Problem::BadMeta(format!(
            "a version {version} capture has no `{RUNNING_PREFIX}` tensors"
        ))));
    }
    if present > 0 && present < running.len() {
        let missing = running
            .iter()
            .find(|(full, _, _)| st.tensor(full).is_err())
            .map(|(full, _, _)| full.clone())
            .unwrap_or_default();
        return Err(bad(Problem::MissingTensor(format!(
            "{missing} (a capture carries the change of every running statistic or of none)"
        ))));
    }
    if present > 0 {
        expected.extend(running);
    }

    let mut views = Vec::with_capacity(expected.len());
    for (full, _, shape) in &expected {
        let view = st
            .tensor(full)
            .map_err(|_| bad(Problem::MissingTensor(full.clone())))?;
        if !is_float(view.dtype()) {
            return Err(bad(Problem::BadDtype {
                name: full.clone(),
                found: dtype_name(view.dtype()),
                expected: "a floating-point type (F16, BF16, F32 or F64)",
            }));
        }
        if view.shape() != shape.as_slice() {
            return Err(bad(Problem::ShapeMismatch {
                name: full.clone(),
                found: view.shape().to_vec(),
                expected: shape.clone(),
            }));
        }
        views.push(view);
    }
    let known: BTreeSet<&str> = expected.iter().map(|(f, _, _)| f.as_str()).collect();
    let mut names = st.names();
    names.sort_unstable();
    if let Some(extra) = names.into_iter().find(|n| !known.contains(n)) {
        return Err(bad(Problem::UnexpectedTensor(extra.to_string())));
    }

    let mut global = Vec::with_capacity(n_global);
    let mut update = Vec::with_capacity(n_update);
    let mut running = Vec::with_capacity(expected.len() - n_global - n_update);
    for (i, ((full, name, _), view)) in expected.into_iter().zip(views).enumerate() {
        let t = view.load(&Device::Cpu)?;
        if !all_finite(&t)? {
            return Err(bad(Problem::NonFinite(full)));
        }
        let t = t.to_device(device)?;
        if i < n_global {
            global.push((name, t));
        } else if i < n_global + n_update {
            update.push((name, t));
        } else {
            running.push((name, t));
        }
    }
    if let Some(declared) = declared {
        let computed = UpdateDigest::of(&update)?;
        if computed != declared {
            return Err(bad(Problem::BadMeta(format!(
                "the header's update digest {declared} is not that of the file's update tensors, {computed}"
            ))));
        }
    }
    Ok(Capture {
        meta,
        global,
        update,
        running,
    })
}
