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

impl From<synfed_synapse::FuzzyPlacement> for FuzzyPlacement {
    fn from(placement: synfed_synapse::FuzzyPlacement) -> Self {
        match placement {
            synfed_synapse::FuzzyPlacement::Server => FuzzyPlacement::Server,
            synfed_synapse::FuzzyPlacement::Client => FuzzyPlacement::Client,
        }
    }
}

impl Task {
    /// Where the task's fuzzy learning rates act. Unset (a server that predates the field) is
    /// `server`; a value this build does not know is `Err` with the value, for the client to
    /// refuse the task (as [`bn_mode`](Self::bn_mode)).
    pub fn fuzzy_at(&self) -> Result<synfed_synapse::FuzzyPlacement, i32> {
        match FuzzyPlacement::try_from(self.fuzzy_placement) {
            Ok(FuzzyPlacement::Unspecified | FuzzyPlacement::Server) => {
                Ok(synfed_synapse::FuzzyPlacement::Server)
            }
            Ok(FuzzyPlacement::Client) => Ok(synfed_synapse::FuzzyPlacement::Client),
            Err(_) => Err(self.fuzzy_placement),
        }
    }

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
    fn a_task_carries_its_fuzzy_placement_and_an_unknown_one_is_reported() {
        use synfed_synapse::FuzzyPlacement as At;
        let mut task = Task::default();
        assert_eq!(task.fuzzy_at(), Ok(At::Server), "unset is server");
        for at in [At::Server, At::Client] {
            task.fuzzy_placement = FuzzyPlacement::from(at) as i32;
            let decoded = {
                use prost::Message;
                Task::decode(task.encode_to_vec().as_slice()).unwrap()
            };
            assert_eq!(decoded.fuzzy_at(), Ok(at));
        }
        task.fuzzy_placement = 9;
        assert_eq!(task.fuzzy_at(), Err(9));
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
