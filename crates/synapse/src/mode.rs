//! How a forward pass treats BatchNorm.
//!
//! Besides PyTorch's train/eval there is a third mode: batch statistics *without* updating the
//! running statistics. A client computing a FedSGD gradient and an attacker replaying that
//! computation thousands of times both need train-mode arithmetic, but must not drift the
//! model's running statistics (cloned BatchNorms share them).
//!
//! [`BnMode`] is the run option that chooses between the two protocols a federation's clients
//! may compute their updates with (batch or running statistics).

/// Forward-pass mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Batch statistics; running statistics are updated (training).
    Train,
    /// Batch statistics; running statistics are left untouched.
    TrainFrozenStats,
    /// Running statistics (evaluation).
    Eval,
}

impl Mode {
    /// Whether BatchNorm normalises with the statistics of the current batch.
    pub fn uses_batch_stats(self) -> bool {
        !matches!(self, Mode::Eval)
    }
}

/// Which BatchNorm statistics a federation's clients compute their updates with: a run option
/// (`training.bn_mode`) the server sends with every task and records in every capture (as the
/// [`Mode`] of [`BnMode::mode`]), so that the attacker replays the model the way the client ran
/// it.
///
/// Federated clients train, so by default they normalise with the statistics of their batch;
/// the reference gradient-inversion attack (inversefed) computes the attacked gradient with
/// the model in eval mode instead (running statistics), and on BatchNorm models the two
/// protocols give very different attack results. Models without BatchNorm are unaffected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BnMode {
    /// Batch statistics, as federated clients train; the client's computation updates the
    /// running statistics ([`Mode::Train`]).
    #[default]
    Train,
    /// Running statistics, left untouched by the client's computation ([`Mode::Eval`]): the
    /// protocol of the reference attack.
    Eval,
}

impl BnMode {
    /// The forward-pass mode a client computes in.
    pub fn mode(self) -> Mode {
        match self {
            BnMode::Train => Mode::Train,
            BnMode::Eval => Mode::Eval,
        }
    }

    /// The text form: `train` or `eval`.
    pub fn as_str(self) -> &'static str {
        match self {
            BnMode::Train => "train",
            BnMode::Eval => "eval",
        }
    }
}

impl From<BnMode> for Mode {
    fn from(bn: BnMode) -> Self {
        bn.mode()
    }
}

impl std::fmt::Display for BnMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BnMode {
    type Err = crate::SynapseError;

    /// `train` or `eval` (any case, surrounding whitespace ignored); anything else is an error
    /// naming the text.
    fn from_str(input: &str) -> crate::Result<Self> {
        match input.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(BnMode::Train),
            "eval" => Ok(BnMode::Eval),
            _ => Err(crate::SynapseError::BadBnMode(input.to_string())),
        }
    }
}

/// Serialised as its text form, and read through [`FromStr`](std::str::FromStr) so that a bad
/// value in a configuration file gets the same message as on the command line.
impl serde::Serialize for BnMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for BnMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bn_mode_text_round_trips_and_maps_to_the_forward_mode() {
        for (text, bn, mode) in [
            ("train", BnMode::Train, Mode::Train),
            ("eval", BnMode::Eval, Mode::Eval),
        ] {
            assert_eq!(text.parse::<BnMode>().unwrap(), bn);
            assert_eq!(bn.to_string(), text);
            assert_eq!(Mode::from(bn), mode);
            let json = serde_json::to_string(&bn).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<BnMode>(&json).unwrap(), bn);
        }
        assert_eq!(" Eval ".parse::<BnMode>().unwrap(), BnMode::Eval);
        assert_eq!(BnMode::default(), BnMode::Train);
    }

    #[test]
    fn an_unknown_bn_mode_is_an_error_naming_it() {
        for bad in ["evaluation", "", "frozen"] {
            let err = bad.parse::<BnMode>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            assert!(err.contains("train") && err.contains("eval"), "{err}");
        }
        let err = serde_json::from_str::<BnMode>("\"evaluation\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`evaluation`"), "{err}");
    }
}
