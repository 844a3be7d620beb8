//! Everything of synfed that crosses a process boundary.
//!
//! The simulator plays several parties: clients that train, a server that aggregates, an
//! attacker that sees what the server (or the network) sees, and a scorer that knows the truth.
//! Keeping what passes between them in files (and later on the wire) with a fixed, validated
//! format keeps the attack honest: it can only use what a real honest-but-curious server would
//! receive, and the ground truth lives in a separate file that only the scoring step reads.
//!
//! - [`Capture`]: one intercepted client update — the global parameters the client started
//!   from, the update it sent (a FedSGD gradient or a FedAvg difference) and the public facts
//!   of the round (model spec, batch size, BatchNorm mode, normalisation, optionally labels).
//! - [`Escrow`]: the images and labels the update was computed on, for scoring only, bound
//!   to its capture by the [`UpdateDigest`] of the update both headers carry.
//!
//! Both are safetensors files with all metadata in one JSON-valued header key (safetensors
//! writes its metadata map in hash order, so several keys would make equal files differ), are
//! written atomically (temporary file + rename) and are fully validated when read: a hostile or
//! corrupt file yields a [`WireError`] naming the file and the problem, never a panic.
//!
//! - [`proto`]: the federation's gRPC protocol (`proto/synfed.proto`, package `synfed.v1`),
//!   and [`chunks`]: tensors cut into ≤ 4 MiB checksummed chunks and reassembled with checks.

pub mod capture;
pub mod chunks;
pub mod digest;
pub mod error;
pub mod escrow;
pub mod peer_text;
pub mod proto;

pub use capture::{Capture, CaptureMeta, ImprintRecord, UpdateKind};
pub use chunks::{
    Assembler, ChunkProblem, EncodedTensor, TensorLayout, MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES,
};
pub use digest::UpdateDigest;
pub use error::{FileKind, Problem, Result, WireError};
pub use escrow::{Binding, Escrow, EscrowMeta};

use candle_core::{DType, Tensor};
use safetensors::SafeTensors;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a capture file's name ends ([`capture_file_name`]).
pub const CAPTURE_SUFFIX: &str = ".capture.safetensors";
/// How an escrow file's name ends ([`escrow_file_name`]).
pub const ESCROW_SUFFIX: &str = ".escrow.safetensors";

/// The file name of the capture of `client`'s update in `round`:
/// `round-RRRR-CLIENT.capture.safetensors` (client names are restricted to file-safe
/// characters by the server).
pub fn capture_file_name(round: u64, client: &str) -> String {
    format!("round-{round:04}-{client}{CAPTURE_SUFFIX}")
}

/// The file name of the escrow matching [`capture_file_name`]:
/// `round-RRRR-CLIENT.escrow.safetensors`.
pub fn escrow_file_name(round: u64, client: &str) -> String {
    format!("round-{round:04}-{client}{ESCROW_SUFFIX}")
}

/// The `path` of errors about bytes that did not come from a file.
pub const IN_MEMORY: &str = "(in memory)";

/// Builds the error for `problem` in a `kind` file at `path`.
pub(crate) fn invalid(kind: FileKind, path: &str, problem: Problem) -> WireError {
    WireError::Invalid {
        kind,
        path: path.to_string(),
        problem,
    }
}

/// Writes `bytes` to `path` atomically: to a temporary file in the same directory, flushed to
/// disk, then renamed over `path`. A crash or a concurrent reader never sees a torn file.
pub(crate) fn write_atomic(kind: FileKind, path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io = |action: &'static str, source: std::io::Error| WireError::Io {
        kind,
        path: path.display().to_string(),
        action,
        source,
    };
    let name = path.file_name().ok_or_else(|| {
        io(
            "write",
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path has no file name",
            ),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}.{}.partial",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp).map_err(|e| io("create a temporary file", e))?;
        file.write_all(bytes).map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("flush to disk", e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| io("move into place", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads `path` whole.
pub(crate) fn read_file(kind: FileKind, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| WireError::Io {
        kind,
        path: path.display().to_string(),
        action: "read",
        source,
    })
}

/// Replaces the path of an [`WireError::Invalid`] read from bytes by the file's.
pub(crate) fn with_path(e: WireError, path: &Path) -> WireError {
    match e {
        WireError::Invalid { kind, problem, .. } => WireError::Invalid {
            kind,
            path: path.display().to_string(),
            problem,
        },
        other => other,
    }
}

/// Parses a safetensors buffer and its header key `key`, checks `format` and `version`, and
/// returns the parsed tensors, the header object minus those two fields, and the version.
pub(crate) fn open<'a>(
    kind: FileKind,
    origin: &str,
    bytes: &'a [u8],
    key: &'static str,
    format: &'static str,
    versions: &'static [u64],
) -> Result<(
    SafeTensors<'a>,
    serde_json::Map<String, serde_json::Value>,
    u64,
)> {
    let bad = |problem| invalid(kind, origin, problem);
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| bad(Problem::NotSafetensors(e.to_string())))?;
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(Problem::NotSafetensors(e.to_string())))?;
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(key))
        .ok_or_else(|| bad(Problem::MissingHeader { key, kind }))?;
    let malformed = |reason: String| bad(Problem::MalformedHeader { key, reason });
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let serde_json::Value::Object(mut header) = value else {
        return Err(malformed("not a JSON object".into()));
    };
    match header.remove("format") {
        Some(serde_json::Value::String(f)) if f == format => {}
        Some(serde_json::Value::String(f)) => {
            return Err(bad(Problem::WrongFormat {
                found: f,
                expected: format,
            }))
        }
        Some(other) => {
            return Err(bad(Problem::WrongFormat {
                found: other.to_string(),
                expected: format,
            }))
        }
        None => return Err(malformed("no `format`".into())),
    }
    let version = match header.remove("version") {
        Some(v) if v.as_u64().is_some_and(|v| versions.contains(&v)) => v.as_u64().unwrap_or(0),
        Some(v) => {
            return Err(bad(Problem::UnsupportedVersion {
                found: v.to_string(),
                supported: versions,
            }))
        }
        None => return Err(malformed("no `version`".into())),
    };
    Ok((st, header, version))
}

/// Whether every value of a floating-point tensor is finite (x − x is 0 exactly for finite x
/// and NaN otherwise, and NaN survives the sum).
#[allow(clippy::eq_op)] // x − x is the point
pub(crate) fn all_finite(t: &Tensor) -> Result<bool> {
    if t.elem_count() == 0 {
        return Ok(true);
    }
    let t = if t.dtype() == DType::F64 {
        t.clone()
    } else {
        t.to_dtype(DType::F32)?
    };
    let s = (&t - &t)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(s == 0.0)
}

/// The name of a safetensors dtype.
pub(crate) fn dtype_name(d: safetensors::Dtype) -> String {
    format!("{d:?}")
}
