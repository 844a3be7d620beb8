//! Tensors on the wire: cut into chunks of at most [`MAX_CHUNK_BYTES`], reassembled with every
//! check a server needs before it lets a peer's bytes near its model.
//!
//! gRPC messages have a size limit (4 MiB by default) and the CIFAR `mlp` alone is ~74 MB, so
//! every tensor travels as consecutive chunks, each naming the tensor, its dtype and shape, the
//! total byte length, where the chunk starts and the CRC-32 of the whole tensor. The receiving
//! side ([`Assembler`]) knows which tensors it expects ([`TensorLayout`]) and refuses, with a
//! specific [`ChunkProblem`], anything else: unknown or repeated tensors, wrong dtype, shape or
//! length, oversized or empty chunks, gaps or overlaps, checksum mismatches and non-finite
//! values.
//!
//! A stream as a whole is bounded too ([`StreamBudget`], counted by a [`StreamMeter`]): it may
//! carry only the messages and bytes the expected tensors need, plus a small slack for framing,
//! so a peer cannot keep a server reading (100,000 empty chunks, names of megabytes) once what
//! it owes has arrived.

use crate::proto;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The largest chunk payload either side sends or accepts.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// The gRPC message size limit both sides set: one chunk plus its envelope.
pub const MAX_MESSAGE_BYTES: usize = MAX_CHUNK_BYTES + 64 * 1024;

/// HTTP/2 flow-control window of one stream, set by the server and the client: two chunks in
/// flight, so the sender does not wait for window updates within a chunk (at the 1 MiB
/// default a 4 MiB chunk waits four times). It bounds what a peer can send that the receiver
/// has not read yet.
pub const STREAM_WINDOW: u32 = 2 * MAX_MESSAGE_BYTES as u32;
/// HTTP/2 flow-control window of one connection: two streams' windows (an upload beside a
/// model download or a poll).
pub const CONNECTION_WINDOW: u32 = 2 * STREAM_WINDOW;
/// Largest HTTP/2 DATA frame either side accepts: 1 MiB instead of 16 KiB, so a 4 MiB chunk
/// crosses in four frames, not 256.
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;

/// What a tensor must look like: its name, element type and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorLayout {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorLayout {
    /// The layout of `tensor` under `name`.
    pub fn of(name: impl Into<String>, tensor: &Tensor) -> Self {
        Self {
            name: name.into(),
            dtype: tensor.dtype(),
            shape: tensor.dims().to_vec(),
        }
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Byte length on the wire.
    pub fn byte_len(&self) -> usize {
        self.elem_count() * self.dtype.size_in_bytes()
    }
}

/// The wire name of a dtype (only f32 and f64 travel).
pub fn wire_dtype(dtype: DType) -> Option<proto::DataType> {
    match dtype {
        DType::F32 => Some(proto::DataType::F32),
        DType::F64 => Some(proto::DataType::F64),
        _ => None,
    }
}

fn dtype_of_wire(value: i32) -> Option<DType> {
    match proto::DataType::try_from(value).ok()? {
        proto::DataType::F32 => Some(DType::F32),
        proto::DataType::F64 => Some(DType::F64),
        proto::DataType::Unspecified => None,
    }
}

/// Why a tensor could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("tensor `{name}` has dtype {dtype:?}; only f32 and f64 travel")]
    UnsupportedDType { name: String, dtype: DType },
    #[error("tensor `{name}`: {source}")]
    Candle {
        name: String,
        #[source]
        source: candle_core::Error,
    },
}

/// One tensor in wire form: little-endian bytes and their checksum, ready to be chunked any
/// number of times (the server encodes the global model once per round and streams it to
/// every client).
#[derive(Clone, Debug)]
pub struct EncodedTensor {
    pub layout: TensorLayout,
    pub bytes: Arc<[u8]>,
    pub crc32: u32,
}

impl EncodedTensor {
    /// Encodes `tensor` (f32 or f64, any device) under `name`.
    pub fn new(name: impl Into<String>, tensor: &Tensor) -> Result<Self, EncodeError> {
        let name = name.into();
        let candle = |source| EncodeError::Candle {
            name: name.clone(),
            source,
        };
        let flat = tensor.flatten_all().map_err(candle)?;
        let bytes: Vec<u8> = match tensor.dtype() {
            DType::F32 => le_bytes(&flat.to_vec1::<f32>().map_err(candle)?, f32::to_le_bytes),
            DType::F64 => le_bytes(&flat.to_vec1::<f64>().map_err(candle)?, f64::to_le_bytes),
            dtype => return Err(EncodeError::UnsupportedDType { name, dtype }),
        };
        Ok(Self {
            layout: TensorLayout::of(name, tensor),
            crc32: crc32fast::hash(&bytes),
            bytes: bytes.into(),
        })
    }

    /// Number of chunks of at most `max_chunk` bytes (an empty tensor is one empty chunk, so
    /// its layout still arrives).
    pub fn chunk_count(&self, max_chunk: usize) -> usize {
        self.bytes
            .len()
            .div_ceil(max_chunk.clamp(1, MAX_CHUNK_BYTES))
            .max(1)
    }

    /// Chunk `index` of [`chunk_count`](Self::chunk_count) chunks of at most `max_chunk` bytes.
    pub fn chunk(&self, index: usize, max_chunk: usize) -> proto::TensorChunk {
        let max_chunk = max_chunk.clamp(1, MAX_CHUNK_BYTES);
        let start = (index * max_chunk).min(self.bytes.len());
        let end = (start + max_chunk).min(self.bytes.len());
        proto::TensorChunk {
            name: self.layout.name.clone(),
            dtype: wire_dtype(self.layout.dtype).map_or(0, |d| d as i32),
            shape: self.layout.shape.iter().map(|&d| d as u64).collect(),
            total_bytes: self.bytes.len() as u64,
            offset: start as u64,
            data: self.bytes[start..end].to_vec(),
            crc32: self.crc32,
        }
    }

    /// The tensor as consecutive chunks of at most `max_chunk` bytes.
    pub fn chunks(&self, max_chunk: usize) -> impl Iterator<Item = proto::TensorChunk> + '_ {
        (0..self.chunk_count(max_chunk)).map(move |i| self.chunk(i, max_chunk))
    }
}

/// Encodes every `(name, tensor)`.
pub fn encode_all(tensors: &[(String, Tensor)]) -> Result<Vec<EncodedTensor>, EncodeError> {
    tensors
        .iter()
        .map(|(name, t)| EncodedTensor::new(name.clone(), t))
        .collect()
}

/// What was wrong with a stream of chunks. Each maps to a specific gRPC status
/// ([`ChunkProblem::code`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ChunkProblem {
    #[error("unknown tensor `{name}`")]
    UnknownTensor { name: String },
    #[error("tensor `{name}` sent twice")]
    DuplicateTensor { name: String },
    #[error("tensor `{name}` started before `{unfinished}` was complete")]
    Interleaved { name: String, unfinished: String },
    #[error("tensor `{name}` has dtype {got}, expected {expected:?}")]
    WrongDType {
        name: String,
        expected: DType,
        got: String,
    },
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<u64>,
    },
    #[error("tensor `{name}` claims {got} bytes, its shape and dtype need {expected}")]
    WrongByteLength {
        name: String,
        expected: usize,
        got: u64,
    },
    #[error("chunk of `{name}` has {len} bytes, more than the limit of {max}")]
    ChunkTooLarge {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("chunk of `{name}` starts at byte {got}, expected {expected} (gap or overlap)")]
    BadOffset {
        name: String,
        expected: usize,
        got: u64,
    },
    #[error("chunk of `{name}` runs past the tensor's {total} bytes")]
    Overrun { name: String, total: usize },
    #[error("chunks of `{name}` disagree about the tensor's header (shape, length or checksum)")]
    InconsistentHeader { name: String },
    #[error("checksum mismatch in tensor `{name}`: got {got:08x}, header says {expected:08x}")]
    Checksum {
        name: String,
        expected: u32,
        got: u32,
    },
    #[error("tensor `{name}` holds a non-finite value at element {index}")]
    NonFinite { name: String, index: usize },
    #[error("tensor `{name}` is incomplete: {received} of {total} bytes")]
    Incomplete {
        name: String,
        received: usize,
        total: usize,
    },
    #[error("missing tensors: {}", names.join(", "))]
    Missing { names: Vec<String> },
    #[error("an empty chunk of `{name}`, a tensor of {total} bytes")]
    EmptyChunk { name: String, total: usize },
    #[error(
        "the stream went past its limit of {max} messages (the update's chunks + {} more)",
        MESSAGE_SLACK
    )]
    TooManyMessages { max: usize },
    #[error("the stream went past its limit of {max} bytes (the update's tensors + framing)")]
    TooManyBytes { max: usize },
}

impl ChunkProblem {
    /// The gRPC status code the server answers this problem with.
    pub fn code(&self) -> tonic::Code {
        match self {
            ChunkProblem::Checksum { .. } => tonic::Code::DataLoss,
            ChunkProblem::ChunkTooLarge { .. }
            | ChunkProblem::TooManyMessages { .. }
            | ChunkProblem::TooManyBytes { .. } => tonic::Code::ResourceExhausted,
            ChunkProblem::BadOffset { .. } | ChunkProblem::Overrun { .. } => {
                tonic::Code::OutOfRange
            }
            _ => tonic::Code::InvalidArgument,
        }
    }
}

impl From<ChunkProblem> for tonic::Status {
    fn from(problem: ChunkProblem) -> Self {
        tonic::Status::new(problem.code(), problem.to_string())
    }
}

/// A tensor's values as they are decoded from its chunks' little-endian bytes.
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Values {
    fn with_capacity(dtype: DType, elems: usize) -> Self {
        match dtype {
            DType::F64 => Values::F64(Vec::with_capacity(elems)),
            _ => Values::F32(Vec::with_capacity(elems)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }

    /// Appends the values of `bytes`, whole elements only (a multiple of the element size);
    /// returns the index of the first non-finite value appended, if any.
    fn extend(&mut self, bytes: &[u8]) -> Option<usize> {
        let start = self.len();
        match self {
            Values::F32(v) => {
                v.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                first_non_finite(&v[start..], f32::is_finite).map(|i| start + i)
            }
            Values::F64(v) => {
                v.extend(
                    bytes.chunks_exact(8).map(|b| {
                        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                    }),
                );
                first_non_finite(&v[start..], f64::is_finite).map(|i| start + i)
            }
        }
    }

    fn into_tensor(self, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Values::F32(v) => Tensor::from_vec(v, shape, device),
            Values::F64(v) => Tensor::from_vec(v, shape, device),
        }
    }
}

/// The tensor being received: its values so far, the bytes of an element split between two
/// chunks, and the running checksum.
struct Partial {
    index: usize,
    crc32: u32,
    hasher: crc32fast::Hasher,
    /// Bytes accepted so far.
    filled: usize,
    values: Values,
    /// The first bytes of an element whose rest is in the next chunk.
    split: [u8; 8],
    split_len: usize,
    /// The first non-finite element seen; reported once the checksum has been verified, so a
    /// corrupted byte is a checksum error whatever value it made.
    non_finite: Option<usize>,
}

impl Partial {
    /// Takes a chunk's payload (already checked to fit the tensor).
    fn take(&mut self, mut data: &[u8], elem: usize) {
        self.hasher.update(data);
        self.filled += data.len();
        if self.split_len > 0 {
            let need = (elem - self.split_len).min(data.len());
            self.split[self.split_len..self.split_len + need].copy_from_slice(&data[..need]);
            self.split_len += need;
            data = &data[need..];
            if self.split_len == elem {
                let element = self.split;
                let found = self.values.extend(&element[..elem]);
                self.note(found);
                self.split_len = 0;
            }
        }
        let whole = data.len() - data.len() % elem;
        let found = self.values.extend(&data[..whole]);
        self.note(found);
        let rest = &data[whole..];
        self.split[..rest.len()].copy_from_slice(rest);
        self.split_len += rest.len();
    }

    fn note(&mut self, non_finite: Option<usize>) {
        if self.non_finite.is_none() {
            self.non_finite = non_finite;
        }
    }
}

/// The index of the first value of `values` that is not finite. Scans blocks without an
/// early exit (so the compiler vectorises the scan) and looks inside a block only when it
/// holds one.
fn first_non_finite<T: Copy>(values: &[T], finite: fn(T) -> bool) -> Option<usize> {
    const BLOCK: usize = 1024;
    values
        .chunks(BLOCK)
        .enumerate()
        .find(|(_, block)| !block.iter().fold(true, |all, &v| all & finite(v)))
        .and_then(|(k, block)| Some(k * BLOCK + block.iter().position(|&v| !finite(v))?))
}

/// `values` as little-endian bytes.
fn le_bytes<T: Copy, const N: usize>(values: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    let mut bytes = vec![0u8; values.len() * N];
    for (out, &v) in bytes.chunks_exact_mut(N).zip(values) {
        out.copy_from_slice(&to_le(v));
    }
    bytes
}

/// Reassembles and checks a stream of chunks against the tensors it expects.
pub struct Assembler {
    expected: Vec<TensorLayout>,
    index_of: HashMap<String, usize>,
    done: Vec<Option<Values>>,
    current: Option<Partial>,
    max_chunk: usize,
    received: usize,
}

impl Assembler {
    /// Expects exactly the tensors of `expected`, each once, in any order.
    pub fn new(expected: Vec<TensorLayout>) -> Self {
        let index_of = expected
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.clone(), i))
            .collect();
        let done = expected.iter().map(|_| None).collect();
        Self {
            expected,
            index_of,
            done,
            current: None,
            max_chunk: MAX_CHUNK_BYTES,
            received: 0,
        }
    }

    /// Payload bytes accepted so far.
    pub fn bytes_received(&self) -> usize {
        self.received
    }

    /// Takes one chunk.
    pub fn push(&mut self, chunk: proto::TensorChunk) -> Result<(), ChunkProblem> {
        // the peer's name as it may be shown; the tensors' own names are short and plain
        let name = crate::peer_text::peer_text(&chunk.name);
        if chunk.data.len() > self.max_chunk {
            return Err(ChunkProblem::ChunkTooLarge {
                name,
                len: chunk.data.len(),
                max: self.max_chunk,
            });
        }
        let continues =
            matches!(&self.current, Some(p) if self.expected[p.index].name == chunk.name);
        if !continues {
            if let Some(p) = &self.current {
                return Err(ChunkProblem::Interleaved {
                    name,
                    unfinished: self.expected[p.index].name.clone(),
                });
            }
            let index = *self
                .index_of
                .get(&chunk.name)
                .ok_or_else(|| ChunkProblem::UnknownTensor { name: name.clone() })?;
            if self.done[index].is_some() {
                return Err(ChunkProblem::DuplicateTensor { name });
            }
            self.check_header(index, &chunk)?;
            let layout = &self.expected[index];
            self.current = Some(Partial {
                index,
                crc32: chunk.crc32,
                hasher: crc32fast::Hasher::new(),
                filled: 0,
                values: Values::with_capacity(layout.dtype, layout.elem_count()),
                split: [0; 8],
                split_len: 0,
                non_finite: None,
            });
        }
        let Some(partial) = self.current.as_mut() else {
            unreachable!("a current tensor was set above")
        };
        let layout = &self.expected[partial.index];
        let total = layout.byte_len();
        if chunk.crc32 != partial.crc32 || chunk.total_bytes != total as u64 {
            return Err(ChunkProblem::InconsistentHeader { name });
        }
        if chunk.data.is_empty() && total > 0 {
            return Err(ChunkProblem::EmptyChunk { name, total });
        }
        if chunk.offset != partial.filled as u64 {
            return Err(ChunkProblem::BadOffset {
                name,
                expected: partial.filled,
                got: chunk.offset,
            });
        }
        if partial.filled + chunk.data.len() > total {
            return Err(ChunkProblem::Overrun { name, total });
        }
        partial.take(&chunk.data, layout.dtype.size_in_bytes());
        self.received += chunk.data.len();
        if partial.filled == total {
            let Some(partial) = self.current.take() else {
                unreachable!("checked above")
            };
            let got = partial.hasher.finalize();
            if got != partial.crc32 {
                return Err(ChunkProblem::Checksum {
                    name,
                    expected: partial.crc32,
                    got,
                });
            }
            if let Some(index) = partial.non_finite {
                return Err(ChunkProblem::NonFinite { name, index });
            }
            self.done[partial.index] = Some(partial.values);
        }
        Ok(())
    }

    fn check_header(&self, index: usize, chunk: &proto::TensorChunk) -> Result<(), ChunkProblem> {
        let layout = &self.expected[index];
        let name = layout.name.clone();
        if dtype_of_wire(chunk.dtype) != Some(layout.dtype) {
            let got = proto::DataType::try_from(chunk.dtype)
                .map(|d| d.as_str_name().to_string())
                .unwrap_or_else(|_| format!("code {}", chunk.dtype));
            return Err(ChunkProblem::WrongDType {
                name,
                expected: layout.dtype,
                got,
            });
        }
        let same_shape = chunk.shape.len() == layout.shape.len()
            && chunk
                .shape
                .iter()
                .zip(&layout.shape)
                .all(|(&a, &b)| a == b as u64);
        if !same_shape {
            return Err(ChunkProblem::WrongShape {
                name,
                expected: layout.shape.clone(),
                got: chunk.shape.clone(),
            });
        }
        if chunk.total_bytes != layout.byte_len() as u64 {
            return Err(ChunkProblem::WrongByteLength {
                name,
                expected: layout.byte_len(),
                got: chunk.total_bytes,
            });
        }
        Ok(())
    }

    /// The names of tensors not (completely) received.
    pub fn missing(&self) -> Vec<String> {
        self.expected
            .iter()
            .zip(&self.done)
            .filter(|(_, d)| d.is_none())
            .map(|(l, _)| l.name.clone())
            .collect()
    }

    /// Every expected tensor, in the order given to [`new`](Self::new), on `device`.
    pub fn finish(self, device: &Device) -> Result<Vec<(String, Tensor)>, AssembleError> {
        if let Some(p) = &self.current {
            return Err(ChunkProblem::Incomplete {
                name: self.expected[p.index].name.clone(),
                received: p.filled,
                total: self.expected[p.index].byte_len(),
            }
            .into());
        }
        let missing = self.missing();
        if !missing.is_empty() {
            return Err(ChunkProblem::Missing { names: missing }.into());
        }
        self.expected
            .into_iter()
            .zip(self.done)
            .map(|(layout, values)| {
                let values = values.unwrap_or_else(|| Values::with_capacity(layout.dtype, 0));
                let tensor = values.into_tensor(&layout.shape, device)?;
                Ok((layout.name, tensor))
            })
            .collect()
    }
}

/// Messages a stream may send beyond those its tensors need.
pub const MESSAGE_SLACK: usize = 8;
/// Bytes a message may take beyond its chunk's payload: the tensor's name and shape, offsets,
/// checksum, the client id and the task reference, with room to spare.
pub const FRAMING_BYTES_PER_MESSAGE: usize = 4096;

/// What one stream of tensors may carry: the messages and bytes its tensors need, plus
/// [`MESSAGE_SLACK`] messages and [`FRAMING_BYTES_PER_MESSAGE`] bytes of framing per message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamBudget {
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl StreamBudget {
    /// The budget of a stream of `leading` messages (an update's header) followed by the
    /// tensors of `layout`, each in chunks of at most `max_chunk` bytes (an empty tensor is one
    /// empty chunk).
    pub fn for_tensors(layout: &[TensorLayout], max_chunk: usize, leading: usize) -> Self {
        let max_chunk = max_chunk.clamp(1, MAX_CHUNK_BYTES);
        let chunks: usize = layout
            .iter()
            .map(|l| l.byte_len().div_ceil(max_chunk).max(1))
            .sum();
        let payload: usize = layout.iter().map(TensorLayout::byte_len).sum();
        let max_messages = leading + chunks + MESSAGE_SLACK;
        Self {
            max_messages,
            max_bytes: payload + max_messages * FRAMING_BYTES_PER_MESSAGE,
        }
    }
}

/// Counts a stream's messages and bytes against its [`StreamBudget`].
#[derive(Debug)]
pub struct StreamMeter {
    budget: StreamBudget,
    messages: usize,
    bytes: usize,
}

impl StreamMeter {
    pub fn new(budget: StreamBudget) -> Self {
        Self {
            budget,
            messages: 0,
            bytes: 0,
        }
    }

    /// Counts one message of `bytes` encoded bytes; past the budget it is refused, and the
    /// stream should be read no further.
    pub fn charge(&mut self, bytes: usize) -> Result<(), ChunkProblem> {
        self.messages += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.messages > self.budget.max_messages {
            return Err(ChunkProblem::TooManyMessages {
                max: self.budget.max_messages,
            });
        }
        if self.bytes > self.budget.max_bytes {
            return Err(ChunkProblem::TooManyBytes {
                max: self.budget.max_bytes,
            });
        }
        Ok(())
    }

    /// [`charge`](Self::charge) for `message` at its encoded length.
    pub fn charge_message(&mut self, message: &impl prost::Message) -> Result<(), ChunkProblem> {
        self.charge(message.encoded_len())
    }

    /// Messages counted so far.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Encoded bytes counted so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Why assembled chunks could not become tensors.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Problem(#[from] ChunkProblem),
    #[error("cannot build tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

impl From<AssembleError> for tonic::Status {
    fn from(e: AssembleError) -> Self {
        match e {
            AssembleError::Problem(p) => p.into(),
            AssembleError::Candle(e) => tonic::Status::internal(e.to_string()),
        }
    }
}

impl fmt::Display for TensorLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?} {:?}", self.name, self.dtype, self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(n: usize) -> Tensor {
        let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
        Tensor::from_vec(values, (n / 4, 4), &Device::Cpu).unwrap()
    }

    fn assembler_for(t: &Tensor) -> Assembler {
        Assembler::new(vec![TensorLayout::of("w", t)])
    }

    #[test]
    fn round_trips_through_small_chunks() {
        let t = tensor(1000);
        let enc = EncodedTensor::new("w", &t).unwrap();
        let chunks: Vec<_> = enc.chunks(333).collect();
        assert_eq!(chunks.len(), 4000usize.div_ceil(333));
        let mut asm = assembler_for(&t);
        for c in chunks {
            asm.push(c).unwrap();
        }
        let out = asm.finish(&Device::Cpu).unwrap();
        assert_eq!(out[0].0, "w");
        let diff = (&out[0].1 - &t).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn corrupted_byte_is_a_checksum_error() {
        let t = tensor(64);
        let enc = EncodedTensor::new("w", &t).unwrap();
        let mut chunks: Vec<_> = enc.chunks(100).collect();
        chunks[1].data[3] ^= 0x10;
        let mut asm = assembler_for(&t);
        let err = chunks
            .into_iter()
            .map(|c| asm.push(c))
            .find_map(Result::err)
            .unwrap();
        assert!(matches!(err, ChunkProblem::Checksum { .. }), "{err}");
        assert_eq!(err.code(), tonic::Code::DataLoss);
    }

    #[test]
    fn gaps_overlaps_and_shapes_are_refused() {
        let t = tensor(64);
        let enc = EncodedTensor::new("w", &t).unwrap();
        let chunks: Vec<_> = enc.chunks(100).collect();

        let mut asm = assembler_for(&t);
        asm.push(chunks[0].clone()).unwrap();
        let err = asm.push(chunks[2].clone()).unwrap_err();
        assert!(matches!(
            err,
            ChunkProblem::BadOffset {
                expected: 100,
                got: 200,
                ..
            }
        ));

        let mut bad = chunks[0].clone();
        bad.shape = vec![4, 16];
        let err = assembler_for(&t).push(bad).unwrap_err();
        assert!(matches!(err, ChunkProblem::WrongShape { .. }));

        let mut bad = chunks[0].clone();
        bad.dtype = proto::DataType::F64 as i32;
        let err = assembler_for(&t).push(bad).unwrap_err();
        assert!(matches!(err, ChunkProblem::WrongDType { .. }));

        let mut bad = chunks[0].clone();
        bad.total_bytes = 1 << 40;
        let err = assembler_for(&t).push(bad).unwrap_err();
        assert!(matches!(err, ChunkProblem::WrongByteLength { .. }));

        let mut bad = chunks[0].clone();
        bad.name = "nope".into();
        let err = assembler_for(&t).push(bad).unwrap_err();
        assert!(matches!(err, ChunkProblem::UnknownTensor { .. }));

        let mut bad = chunks[0].clone();
        bad.data = vec![0; MAX_CHUNK_BYTES + 1];
        let err = assembler_for(&t).push(bad).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);

        let mut asm = assembler_for(&t);
        asm.push(chunks[0].clone()).unwrap();
        let err = asm.finish(&Device::Cpu).unwrap_err();
        assert!(matches!(
            err,
            AssembleError::Problem(ChunkProblem::Incomplete {
                received: 100,
                total: 256,
                ..
            })
        ));

        let err = assembler_for(&t).finish(&Device::Cpu).unwrap_err();
        assert!(matches!(
            err,
            AssembleError::Problem(ChunkProblem::Missing { .. })
        ));
    }

    #[test]
    fn non_finite_values_and_duplicates_are_refused() {
        let mut values = vec![1.0f32; 8];
        values[5] = f32::NAN;
        let t = Tensor::from_vec(values, 8, &Device::Cpu).unwrap();
        let enc = EncodedTensor::new("w", &t).unwrap();
        let err = assembler_for(&t)
            .push(enc.chunks(1024).next().unwrap())
            .unwrap_err();
        assert_eq!(
            err,
            ChunkProblem::NonFinite {
                name: "w".into(),
                index: 5
            }
        );

        let t = tensor(8);
        let enc = EncodedTensor::new("w", &t).unwrap();
        let mut asm = assembler_for(&t);
        asm.push(enc.chunks(1024).next().unwrap()).unwrap();
        let err = asm.push(enc.chunks(1024).next().unwrap()).unwrap_err();
        assert!(matches!(err, ChunkProblem::DuplicateTensor { .. }));
    }

    #[test]
    fn a_stream_budget_is_the_chunks_and_bytes_its_tensors_need_plus_slack() {
        // 1000 f32 = 4000 bytes in chunks of 1024: 4 chunks; a 0-element tensor: 1 chunk
        let layout = vec![
            TensorLayout {
                name: "w".into(),
                dtype: DType::F32,
                shape: vec![1000],
            },
            TensorLayout {
                name: "e".into(),
                dtype: DType::F32,
                shape: vec![0],
            },
        ];
        let budget = StreamBudget::for_tensors(&layout, 1024, 1);
        assert_eq!(budget.max_messages, 1 + 4 + 1 + 8);
        assert_eq!(budget.max_bytes, 4000 + 14 * 4096);

        let mut meter = StreamMeter::new(budget);
        for _ in 0..14 {
            meter.charge(10).unwrap();
        }
        let err = meter.charge(10).unwrap_err();
        assert_eq!(err, ChunkProblem::TooManyMessages { max: 14 });
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);

        let mut meter = StreamMeter::new(budget);
        meter.charge(budget.max_bytes).unwrap();
        let err = meter.charge(1).unwrap_err();
        assert_eq!(
            err,
            ChunkProblem::TooManyBytes {
                max: 4000 + 14 * 4096
            }
        );
        assert_eq!((meter.messages(), meter.bytes()), (2, budget.max_bytes + 1));
    }

    #[test]
    fn empty_chunks_of_a_tensor_with_bytes_and_hostile_names_are_refused_bounded() {
        let t = tensor(64);
        let enc = EncodedTensor::new("w", &t).unwrap();
        let mut empty = enc.chunk(0, 100);
        empty.data.clear();
        let err = assembler_for(&t).push(empty).unwrap_err();
        assert_eq!(
            err,
            ChunkProblem::EmptyChunk {
                name: "w".into(),
                total: 256
            }
        );
        // an empty tensor still arrives as its one empty chunk
        let none = Tensor::zeros((0, 4), DType::F32, &Device::Cpu).unwrap();
        let enc_none = EncodedTensor::new("e", &none).unwrap();
        let mut asm = Assembler::new(vec![TensorLayout::of("e", &none)]);
        asm.push(enc_none.chunk(0, 100)).unwrap();
        assert_eq!(asm.finish(&Device::Cpu).unwrap()[0].1.dims(), &[0, 4]);

        let mut named = enc.chunk(0, 100);
        named.name = format!("\u{1b}[2J{}", "n".repeat(1 << 20));
        let err = assembler_for(&t).push(named).unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, ChunkProblem::UnknownTensor { .. }));
        assert!(shown.len() < 200 && !shown.contains('\u{1b}'), "{shown}");
        assert!(
            shown.starts_with("unknown tensor `\\u{1b}[2Jnnn"),
            "{shown}"
        );
    }

    #[test]
    fn values_split_between_chunks_are_decoded_and_checked() {
        // f64 in chunks of 7 bytes: every element but a few straddles two chunks
        let mut values: Vec<f64> = (0..40).map(|i| i as f64 * -0.25 + 1.0e-300).collect();
        let t = Tensor::from_vec(values.clone(), 40, &Device::Cpu).unwrap();
        let enc = EncodedTensor::new("w", &t).unwrap();
        let mut asm = assembler_for(&t);
        for c in enc.chunks(7) {
            asm.push(c).unwrap();
        }
        let out = asm.finish(&Device::Cpu).unwrap();
        assert_eq!(out[0].1.to_vec1::<f64>().unwrap(), values);

        // an infinity at element 17 (bytes 136..144, split 140|141 by chunks of 7): reported
        // with its index once the checksum holds
        values[17] = f64::INFINITY;
        let t = Tensor::from_vec(values, 40, &Device::Cpu).unwrap();
        let enc = EncodedTensor::new("w", &t).unwrap();
        let mut asm = assembler_for(&t);
        let err = enc
            .chunks(7)
            .map(|c| asm.push(c))
            .find_map(Result::err)
            .unwrap();
        assert_eq!(
            err,
            ChunkProblem::NonFinite {
                name: "w".into(),
                index: 17
            }
        );
        // a corrupted byte that makes a value non-finite is a checksum error
        let t = tensor(64);
        let enc = EncodedTensor::new("w", &t).unwrap();
        let mut chunks: Vec<_> = enc.chunks(100).collect();
        chunks[0].data[3] |= 0x7f;
        chunks[0].data[2] |= 0x80;
        let mut asm = assembler_for(&t);
        let err = chunks
            .into_iter()
            .map(|c| asm.push(c))
            .find_map(Result::err)
            .unwrap();
        assert!(matches!(err, ChunkProblem::Checksum { .. }), "{err}");
    }
}
