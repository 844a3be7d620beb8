//! Which attacker runs on a capture.
//!
//! A mechanism that defeats one optimisation attack can still leak everything to another, so a
//! privacy evaluation needs more than one attacker. All of them share the capture → model →
//! labels path of [`pipeline`](crate::pipeline) and return the same
//! [`Reconstruction`](crate::inversion::Reconstruction), so scoring, matching and pictures are
//! the same for every attack.

use crate::error::{AttackError, Result};
use std::fmt;
use std::str::FromStr;

/// The attacker.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AttackKind {
    /// Geiping et al.'s *Inverting Gradients* ([`inversion`](crate::inversion)): cosine
    /// distance + total variation, signed Adam in the pixel box.
    #[default]
    Ig,
    /// Closed-form reconstruction from a fully connected first layer with bias
    /// ([`analytic`](crate::analytic)): ∂L/∂W_i / ∂L/∂b_i, no iterations.
    Analytic,
    /// Zhu et al.'s *Deep Leakage from Gradients* ([`dlg`](crate::dlg)): squared L2 distance
    /// minimised with L-BFGS.
    Dlg,
    /// Inverting Gradients plus the BatchNorm statistics-matching prior of
    /// See-through-Gradients / GradInversion ([`bn_prior`](crate::bn_prior)), for models with
    /// BatchNorm and train-mode FedSGD clients.
    #[serde(rename = "bn-prior")]
    BnPrior,
    /// A **malicious** server's attack (Fowl et al., *Robbing the Fed*): the client computed
    /// its update on a model whose fully connected first layer the server rewrote into bins
    /// of brightness (`synfed_server::imprint`), and the bins are read back in closed form
    /// ([`imprint_readout`](crate::imprint_readout)). It needs a capture of such an update
    /// (one that records its imprint); the others read what an honest server receives.
    Imprint,
}

impl AttackKind {
    /// Every attack, in the order of the command line's help.
    pub const ALL: [AttackKind; 5] = [
        AttackKind::Ig,
        AttackKind::Analytic,
        AttackKind::Dlg,
        AttackKind::BnPrior,
        AttackKind::Imprint,
    ];

    /// The lowercase name (`ig`, `analytic`, `dlg`, `bn-prior`, `imprint`).
    pub fn as_str(self) -> &'static str {
        match self {
            AttackKind::Ig => "ig",
            AttackKind::Analytic => "analytic",
            AttackKind::Dlg => "dlg",
            AttackKind::BnPrior => "bn-prior",
            AttackKind::Imprint => "imprint",
        }
    }

    /// Whether the attacker is a malicious server that changes the model it sends (only
    /// `imprint`), not an honest-but-curious one that reads what it receives. The two are
    /// different threat models: a comparison reports the malicious one apart and leaves it
    /// out of the honest-but-curious worst case.
    pub fn is_malicious(self) -> bool {
        self == AttackKind::Imprint
    }
}

impl fmt::Display for AttackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttackKind {
    type Err = AttackError;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase();
        AttackKind::ALL
            .into_iter()
            .find(|k| k.as_str() == wanted)
            .ok_or_else(|| {
                AttackError::BadOption(format!(
                    "`{s}` is not an attack; one of: {}",
                    AttackKind::ALL.map(AttackKind::as_str).join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_bad_names_are_named() {
        for k in AttackKind::ALL {
            assert_eq!(k.to_string().parse::<AttackKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<AttackKind>(&json).unwrap(), k);
        }
        assert_eq!(" DLG ".parse::<AttackKind>().unwrap(), AttackKind::Dlg);
        assert_eq!(
            "BN-Prior".parse::<AttackKind>().unwrap(),
            AttackKind::BnPrior
        );
        assert_eq!(
            serde_json::to_string(&AttackKind::BnPrior).unwrap(),
            "\"bn-prior\""
        );
        assert_eq!(AttackKind::default(), AttackKind::Ig);
        assert_eq!(
            AttackKind::ALL.map(AttackKind::is_malicious),
            [false, false, false, false, true]
        );
        let err = "rgap".parse::<AttackKind>().unwrap_err().to_string();
        assert!(
            err.contains("`rgap`") && err.contains("ig, analytic, dlg, bn-prior, imprint"),
            "{err}"
        );
    }
}
