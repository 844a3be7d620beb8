//! The digest of an update: what binds an escrow (the truth a client kept) to the capture
//! (what the server received) it belongs to.
//!
//! Round, client and batch size do not identify an update: a client that computes twice in a
//! round, or two runs with the same names, produce different captures with equal metadata, and
//! scoring an attack against the wrong escrow would silently compare it with the wrong images.
//! Both sides therefore hash the update itself — the client over the tensors it sends (after
//! its defence), the server over the tensors it received — and the two agree bit for bit
//! exactly when the capture holds the update the escrow's batch produced.
//!
//! The digest is SHA-256 over, for every trainable tensor in parameter order: the name's
//! length (u64 little-endian) and UTF-8 bytes, the dtype's name's length and bytes, the rank
//! and every dimension (u64 little-endian), then the element bytes (little-endian). It is
//! written `sha256:` followed by 64 lowercase hexadecimal digits.

use crate::error::{Result, WireError};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Prefix of a digest's text form.
const PREFIX: &str = "sha256:";

/// The SHA-256 digest of an update's trainable tensors (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UpdateDigest(String);

impl UpdateDigest {
    /// The digest of `tensors` (`(name, tensor)`, trainable ones in parameter order, any
    /// device). F32, F64 and integer tensors are hashed by their little-endian bytes, F16 and
    /// BF16 ones by those of their exact F32 widening.
    pub fn of(tensors: &[(String, Tensor)]) -> Result<Self> {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        for (name, tensor) in tensors {
            field(name.as_bytes());
            field(dtype_tag(tensor.dtype()).as_bytes());
            let dims: Vec<u8> = std::iter::once(tensor.rank() as u64)
                .chain(tensor.dims().iter().map(|&d| d as u64))
                .flat_map(u64::to_le_bytes)
                .collect();
            field(&dims);
            let body = le_bytes(name, tensor)?;
            field(&body);
        }
        Ok(Self(format!("{PREFIX}{}", hex(&hasher.finalize()))))
    }

    /// The text form, `sha256:<64 hex digits>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UpdateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for UpdateDigest {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        let well_formed = text.strip_prefix(PREFIX).is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if well_formed {
            Ok(Self(text))
        } else {
            let shown: String = text.chars().take(80).filter(|c| !c.is_control()).collect();
            Err(format!(
                "update digest `{shown}` is not `{PREFIX}` followed by 64 lowercase hex digits"
            ))
        }
    }
}

impl From<UpdateDigest> for String {
    fn from(d: UpdateDigest) -> String {
        d.0
    }
}

/// The element bytes of `tensor`, little-endian, in row-major order.
fn le_bytes(name: &str, tensor: &Tensor) -> Result<Vec<u8>> {
    let flat = tensor.flatten_all()?;
    Ok(match tensor.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        // widening to f32 is exact, and the dtype's name is hashed as well
        DType::F16 | DType::BF16 => flat
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::U32 => flat
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::U8 => flat.to_vec1::<u8>()?,
        DType::I64 => flat
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => {
            return Err(WireError::Mismatch(format!(
                "cannot digest `{name}`: dtype {other:?} is not supported"
            )))
        }
    })
}

/// The dtype's name as hashed, fixed here so that digests do not depend on a library's
/// spelling.
fn dtype_tag(dtype: DType) -> &'static str {
    match dtype {
        DType::U8 => "u8",
        DType::U32 => "u32",
        DType::I64 => "i64",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F32 => "f32",
        DType::F64 => "f64",
        _ => "other",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
