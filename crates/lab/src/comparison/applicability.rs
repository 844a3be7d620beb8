//! Which attacks of a comparison apply to a cell's model. Not every attacker can attack every
//! model: `analytic` reads images off a fully connected first layer with bias, `imprint` (a
//! malicious server) rewrites such a layer before the client computes, and `bn-prior`
//! matches the statistics of BatchNorm layers computed on the client's batch (train mode). A
//! comparison over several models and attacks skips the pairs that do not fit, with the
//! reason in the report, rather than failing the whole run on the first of them.

use super::cell_result::Skipped;
use super::config::CompareConfig;
use synfed_attack::AttackKind;
use synfed_models::Model;
use synfed_synapse::{BnMode, Role};

/// Why `attack` cannot attack updates of `model` computed with BatchNorm in `bn_mode`, or
/// `None` when it can.
pub fn inapplicable(attack: AttackKind, model: &Model, bn_mode: BnMode) -> Option<String> {
    match attack {
        AttackKind::Ig | AttackKind::Dlg => None,
        AttackKind::Analytic => synfed_attack::analytic::first_layer(model)
            .err()
            .map(|e| format!("analytic needs a fully connected first layer with bias: {e}")),
        AttackKind::Imprint => synfed_attack::analytic::first_layer(model).err().map(|e| {
            format!(
                "imprint rewrites a fully connected first layer with bias, which the \
                     model lacks: {e}"
            )
        }),
        AttackKind::BnPrior => {
            let has_batch_norm = model.params().iter().any(|p| p.role == Role::RunningMean);
            if !has_batch_norm {
                Some(format!(
                    "bn-prior needs BatchNorm layers; {} has none",
                    model.spec().arch
                ))
            } else if bn_mode == BnMode::Eval {
                Some(
                    "bn-prior needs batch statistics; the clients normalise with running \
                     statistics (bn_mode = \"eval\")"
                        .into(),
                )
            } else {
                None
            }
        }
    }
}

/// The comparison's attacks that apply to `model` (in the comparison's order), and those that
/// do not, with the reason.
pub fn split_applicable(c: &CompareConfig, model: &Model) -> (Vec<AttackKind>, Vec<Skipped>) {
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for &attack in &c.attacks {
        match inapplicable(attack, model, c.bn_mode) {
            None => runs.push(attack),
            Some(reason) => {
                tracing::info!("{attack} skipped: {reason}");
                skipped.push(Skipped { attack, reason })
            }
        }
    }
    (runs, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use synfed_models::{Arch, InputShape, ModelConfig};

    fn model(arch: Arch) -> Model {
        let spec = ModelConfig {
            arch,
            width: Some(4),
            ..ModelConfig::default()
        }
        .spec(InputShape::new(1, 28, 28), 10, 1);
        Model::build(&spec, DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn analytic_needs_a_dense_first_layer_and_bn_prior_batch_norm_in_train_mode() {
        let mlp = model(Arch::Mlp);
        let resnet = model(Arch::ResNet20);
        for kind in [AttackKind::Ig, AttackKind::Dlg] {
            assert_eq!(inapplicable(kind, &resnet, BnMode::Eval), None);
        }
        assert_eq!(
            inapplicable(AttackKind::Analytic, &mlp, BnMode::Train),
            None
        );
        let conv = inapplicable(AttackKind::Analytic, &resnet, BnMode::Train).unwrap();
        assert!(conv.contains("fully connected"), "{conv}");
        assert_eq!(inapplicable(AttackKind::Imprint, &mlp, BnMode::Eval), None);
        let conv = inapplicable(AttackKind::Imprint, &resnet, BnMode::Train).unwrap();
        assert!(
            conv.contains("imprint rewrites a fully connected"),
            "{conv}"
        );
        let none = inapplicable(AttackKind::BnPrior, &mlp, BnMode::Train).unwrap();
        assert!(none.contains("has none"), "{none}");
        assert_eq!(
            inapplicable(AttackKind::BnPrior, &resnet, BnMode::Train),
            None
        );
        let eval = inapplicable(AttackKind::BnPrior, &resnet, BnMode::Eval).unwrap();
        assert!(eval.contains("eval"), "{eval}");
    }
}
