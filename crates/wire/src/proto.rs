//! The generated gRPC code of `proto/synfed.proto` (package `synfed.v1`): messages, the
//! `Federation` client and the server trait. See the `.proto` for the protocol's design.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("synfed.v1");

/// Whether `chunk` belongs to `task` (clients refuse a model download of another task).
pub fn model_chunk_is_for(chunk: &ModelChunk, task: &TaskRef) -> bool {
    chunk.r#ref.as_ref() == Some(task)
}
