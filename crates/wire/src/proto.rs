//! The generated gRPC code of `proto/synfed.proto` (package `synfed.v1`): messages, the
//! `Federation` client and the server trait. See the `.proto` for the protocol's design.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("synfed.v1");

/// The metadata key of a registration's session secret ([`RegisterReply::session_secret`]),
/// sent by the client on every call after Register.
pub const SESSION_METADATA: &str = "x-synfed-session";

/// Whether `chunk` belongs to `task` (clients refuse a model download of another task).
pub fn model_chunk_is_for(chunk: &ModelChunk, task: &TaskRef) -> bool {
    chunk.r#ref.as_ref() == Some(task)
}

impl From<synfed_synapse::BnMode> for BatchNormMode {
    fn from(bn: synfed_synapse::BnMode) -> Self {
        match bn {
            synfed_synapse::BnMode::Train => BatchNormMode::Train,
            synfed_synapse::BnMode::Eval => BatchNormMode::Eval,
        }
    }
}

impl Task {
    /// The BatchNorm mode the task asks the client to compute in. Unset (a server that
    /// predates the field) is `train`; a value this build does not know is `Err` with the
    /// value, for the client to refuse the task. (prost's generated `batch_norm_mode()` getter
    /// would silently turn an unknown value into "unset", i.e. train.)
    pub fn bn_mode(&self) -> Result<synfed_synapse::BnMode, i32> {
        match BatchNormMode::try_from(self.batch_norm_mode) {
            Ok(BatchNormMode::Unspecified | BatchNormMode::Train) => {
                Ok(synfed_synapse::BnMode::Train)
            }
            Ok(BatchNormMode::Eval) => Ok(synfed_synapse::BnMode::Eval),
            Err(_) => Err(self.batch_norm_mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synfed_synapse::BnMode;

    #[test]
    fn a_task_carries_its_bn_mode_and_an_unknown_one_is_reported() {
        let mut task = Task::default();
        assert_eq!(task.bn_mode(), Ok(BnMode::Train), "unset is train");
        for bn in [BnMode::Train, BnMode::Eval] {
            task.batch_norm_mode = BatchNormMode::from(bn) as i32;
            assert_eq!(task.bn_mode(), Ok(bn));
        }
        task.batch_norm_mode = 7;
        assert_eq!(task.bn_mode(), Err(7));
    }

    #[test]
    fn the_bn_mode_survives_encoding() {
        use prost::Message;
        let task = Task {
            batch_norm_mode: BatchNormMode::Eval as i32,
            ..Task::default()
        };
        let decoded = Task::decode(task.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.bn_mode(), Ok(BnMode::Eval));
    }
}
