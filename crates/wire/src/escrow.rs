//! Escrow: the ground truth of a capture — the images and labels the client's update was
//! computed on. Only the scoring step reads it; the attack never sees this file.
//!
//! A safetensors file with tensors `images` (`[B, C, H, W]` F32, normalised as the model saw
//! them) and `labels` (`[B]` U32), and one header metadata key, [`META_KEY`], holding a JSON
//! object: `format` ([`FORMAT`]), `version` ([`VERSION`]), `round`, `client` and
//! `update_digest`.
//!
//! Round, client and batch size do not say which update an escrow is the truth of: the same
//! client can compute twice in a round (two runs, a retried task), and an attack scored against
//! another batch's images measures nothing. Version 2 escrows carry the [`UpdateDigest`] of the
//! update the client sent (after its defence), the capture the digest of the update the server
//! received, and [`Escrow::check_matches`] refuses a pair whose digests differ. Version 1
//! escrows have no digest: they are still read, and the check reports the binding as
//! [`Binding::Unchecked`] for the caller to warn about.

use crate::capture::{Capture, CaptureMeta};
use crate::digest::UpdateDigest;
use crate::error::{FileKind, Problem, Result, WireError};
use crate::{all_finite, dtype_name, invalid, IN_MEMORY};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Value of the header's `format` field.
pub const FORMAT: &str = "synfed-escrow";
/// Version written by this crate for an escrow with a digest (2: the header carries
/// `update_digest`; an escrow without one is written as version 1, the format it is).
pub const VERSION: u64 = 2;
/// Versions this crate reads.
pub const SUPPORTED_VERSIONS: &[u64] = &[1, 2];
/// The one safetensors metadata key, holding the header JSON.
pub const META_KEY: &str = "synfed-escrow";
/// Name of the images tensor.
pub const IMAGES: &str = "images";
/// Name of the labels tensor.
pub const LABELS: &str = "labels";

const KIND: FileKind = FileKind::Escrow;

/// Which update the escrow belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowMeta {
    /// Federation round.
    pub round: u64,
    /// Client id.
    pub client: String,
    /// Digest of the update computed on this batch, as the client sent it (None: a version 1
    /// escrow, which cannot be bound to its capture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_digest: Option<UpdateDigest>,
}

/// What [`Escrow::check_matches`] could establish about an escrow and a capture.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Both digests are there and equal: the escrow is the truth of this very update.
    Verified(UpdateDigest),
    /// The metadata match, but the escrow (version 1) has no digest: it may belong to another
    /// capture of the same client, round and batch size.
    Unchecked(String),
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    format: &'static str,
    version: u64,
    #[serde(flatten)]
    meta: &'a EscrowMeta,
}

/// The ground truth of one capture.
#[derive(Clone, Debug)]
pub struct Escrow {
    pub meta: EscrowMeta,
    /// `[B, C, H, W]` F32, normalised as the model saw them.
    pub images: Tensor,
    /// `[B]` U32.
    pub labels: Tensor,
}

impl Escrow {
    /// An escrow of `images` (converted to F32) and `labels` (U32), validated and copied.
    pub fn new(meta: EscrowMeta, images: &Tensor, labels: &Tensor) -> Result<Self> {
        let images = images.detach().to_dtype(DType::F32)?.copy()?;
        let labels = labels.detach().copy()?;
        check_tensors(&images, &labels).map_err(|p| invalid(KIND, IN_MEMORY, p))?;
        Ok(Self {
            meta,
            images,
            labels,
        })
    }

    /// The labels as a vector.
    pub fn labels_vec(&self) -> Result<Vec<u32>> {
        Ok(self.labels.to_vec1::<u32>()?)
    }

    /// The file's bytes: identical for equal escrows.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.to_bytes_at(IN_MEMORY)
    }

    fn to_bytes_at(&self, origin: &str) -> Result<Vec<u8>> {
        let bad = |problem| invalid(KIND, origin, problem);
        check_tensors(&self.images, &self.labels).map_err(bad)?;
        let version = if self.meta.update_digest.is_some() {
            VERSION
        } else {
            1
        };
        let json = serde_json::to_string(&HeaderOut {
            format: FORMAT,
            version,
            meta: &self.meta,
        })
        .map_err(|e| {
            bad(Problem::MalformedHeader {
                key: META_KEY,
                reason: e.to_string(),
            })
        })?;
        let meta = HashMap::from([(META_KEY.to_string(), json)]);
        safetensors::serialize([(IMAGES, &self.images), (LABELS, &self.labels)], Some(meta))
            .map_err(|e| bad(Problem::NotSafetensors(e.to_string())))
    }

    /// Writes the escrow to `path` atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes_at(&path.display().to_string())?;
        crate::write_atomic(KIND, path, &bytes)
    }

    /// Reads and validates the escrow at `path`, with its tensors on `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::read_file(KIND, path)?;
        Self::from_bytes(&bytes, device).map_err(|e| crate::with_path(e, path))
    }

    /// Parses and validates an escrow held in memory, with its tensors on `device`.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        parse(bytes, device, IN_MEMORY)
    }

    /// Checks that this escrow is the ground truth of `capture`: the metadata match
    /// ([`check_matches_meta`](Self::check_matches_meta)) and the escrow's update digest is
    /// the digest of the capture's update. A differing digest is an error naming both; an
    /// escrow without a digest (version 1) gives [`Binding::Unchecked`].
    pub fn check_matches(&self, capture: &Capture) -> Result<Binding> {
        self.check_matches_meta(&capture.meta)?;
        let Some(kept) = &self.meta.update_digest else {
            return Ok(Binding::Unchecked(format!(
                "the escrow of round {} client `{}` has no update digest (a version 1 file): \
                 it cannot be told apart from another capture's of the same client, round and \
                 batch size",
                self.meta.round, self.meta.client
            )));
        };
        let received = capture.update_digest()?;
        if *kept != received {
            return Err(WireError::Mismatch(format!(
                "the escrow is the truth of update {kept}, the capture holds update {received} \
                 (another capture of round {} client `{}`)",
                self.meta.round, self.meta.client
            )));
        }
        Ok(Binding::Verified(received))
    }

    /// Checks that this escrow fits the capture described by `capture`: same round and
    /// client, a batch of `batch_size` images of the spec's input shape, labels that are
    /// classes of the model and, when the capture exposes labels, the same ones. This alone
    /// cannot tell two captures of the same client, round and batch size apart: see
    /// [`check_matches`](Self::check_matches).
    pub fn check_matches_meta(&self, capture: &CaptureMeta) -> Result<()> {
        let mismatch = |what: String| Err(WireError::Mismatch(what));
        if (self.meta.round, &self.meta.client) != (capture.round, &capture.client) {
            return mismatch(format!(
                "the escrow is of round {} client `{}`, the capture of round {} client `{}`",
                self.meta.round, self.meta.client, capture.round, capture.client
            ));
        }
        let input = capture.spec.input;
        let want = [
            capture.batch_size,
            input.channels,
            input.height,
            input.width,
        ];
        if self.images.dims() != want {
            return mismatch(format!(
                "the escrow's images have shape {:?}, the capture's batch {want:?}",
                self.images.dims()
            ));
        }
        let labels = self.labels_vec()?;
        if let Some(l) = labels.iter().find(|l| **l as usize >= capture.spec.classes) {
            return mismatch(format!(
                "escrowed label {l} is not a class of the capture's {}-class model",
                capture.spec.classes
            ));
        }
        if capture.labels.as_ref().is_some_and(|c| *c != labels) {
            return mismatch("the escrowed labels differ from the capture's".into());
        }
        Ok(())
    }
}

/// Shapes, dtypes and finiteness of an escrow's tensors.
fn check_tensors(images: &Tensor, labels: &Tensor) -> std::result::Result<(), Problem> {
    if images.dtype() != DType::F32 {
        return Err(Problem::BadDtype {
            name: IMAGES.into(),
            found: format!("{:?}", images.dtype()),
            expected: "F32",
        });
    }
    if labels.dtype() != DType::U32 {
        return Err(Problem::BadDtype {
            name: LABELS.into(),
            found: format!("{:?}", labels.dtype()),
            expected: "U32",
        });
    }
    check_shapes(images.dims(), labels.dims())?;
    if !all_finite(images).map_err(|e| Problem::BadMeta(e.to_string()))? {
        return Err(Problem::NonFinite(IMAGES.into()));
    }
    Ok(())
}

fn check_shapes(images: &[usize], labels: &[usize]) -> std::result::Result<(), Problem> {
    if images.len() != 4 || images.contains(&0) {
        return Err(Problem::BadMeta(format!(
            "`images` has shape {images:?}, expected [B, C, H, W] with no zero dimension"
        )));
    }
    if labels != [images[0]] {
        return Err(Problem::ShapeMismatch {
            name: LABELS.into(),
            found: labels.to_vec(),
            expected: vec![images[0]],
        });
    }
    Ok(())
}

fn parse(bytes: &[u8], device: &Device, origin: &str) -> Result<Escrow> {
    let bad = |problem| invalid(KIND, origin, problem);
    let (st, header, version) =
        crate::open(KIND, origin, bytes, META_KEY, FORMAT, SUPPORTED_VERSIONS)?;
    let malformed = |reason: String| {
        bad(Problem::MalformedHeader {
            key: META_KEY,
            reason,
        })
    };
    let meta = EscrowMeta::deserialize(serde_json::Value::Object(header))
        .map_err(|e| malformed(e.to_string()))?;
    match (version, &meta.update_digest) {
        (1, Some(_)) => {
            return Err(malformed(
                "a version 1 escrow has no `update_digest`".into(),
            ))
        }
        (1, None) | (_, Some(_)) => {}
        (_, None) => return Err(malformed("no `update_digest`".into())),
    }
    let mut views = Vec::with_capacity(2);
    for (name, dtype, expected) in [
        (IMAGES, safetensors::Dtype::F32, "F32"),
        (LABELS, safetensors::Dtype::U32, "U32"),
    ] {
        let view = st
            .tensor(name)
            .map_err(|_| bad(Problem::MissingTensor(name.into())))?;
        if view.dtype() != dtype {
            return Err(bad(Problem::BadDtype {
                name: name.into(),
                found: dtype_name(view.dtype()),
                expected,
            }));
        }
        views.push(view);
    }
    let mut names = st.names();
    names.sort_unstable();
    if let Some(extra) = names.into_iter().find(|n| *n != IMAGES && *n != LABELS) {
        return Err(bad(Problem::UnexpectedTensor(extra.to_string())));
    }
    check_shapes(views[0].shape(), views[1].shape()).map_err(bad)?;
    let images = views[0].load(&Device::Cpu)?;
    let labels = views[1].load(&Device::Cpu)?;
    check_tensors(&images, &labels).map_err(bad)?;
    Ok(Escrow {
        meta,
        images: images.to_device(device)?,
        labels: labels.to_device(device)?,
    })
}
