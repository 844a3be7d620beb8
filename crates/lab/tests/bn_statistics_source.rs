//! Where the `bn-prior` attack's target statistics come from: a train-mode client's capture
//! carries the change of the running statistics, from which the server recovers the batch's
//! statistics (checked against those of the true images); an eval-mode capture carries none.

use candle_core::{DType, Device};
use synfed_attack::bn_prior::{exact_statistics, statistics_of_capture};
use synfed_attack::AttackKind;
use synfed_data::DatasetName;
use synfed_lab::{attack_and_write, capture_batch, AttackOptions, BnStatistics};
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::{MethodSet, Mode};

#[test]
fn a_train_mode_capture_gives_the_batch_statistics_away_and_bn_prior_uses_them() {
    let splits = DatasetName::DemoCifar10.load(None).unwrap();
    let s = splits.train.shape();
    let spec = ModelSpec::new(
        Arch::ResNet20,
        InputShape::new(s.channels, s.height, s.width),
        splits.train.num_classes(),
        MethodSet::NONE,
        3,
    )
    .with_width(4);
    let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let global = model.params().tensors();
    let capture_in = |mode| {
        capture_batch(
            &model,
            &splits.test,
            &splits.normalization,
            &[0, 1, 2, 3],
            mode,
            true,
            "batch-0",
        )
        .unwrap()
    };

    let (eval, _) = capture_in(Mode::Eval);
    assert!(eval.running.is_empty(), "an eval-mode step moves nothing");
    let (capture, escrow) = capture_in(Mode::Train);
    let buffers = model
        .params()
        .iter()
        .filter(|p| !p.role.is_trainable())
        .count();
    assert_eq!(capture.running.len(), buffers);
    // the attacked model itself is left as it was
    for ((_, a), (_, b)) in model.params().tensors().iter().zip(&global) {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    }

    let truth = exact_statistics(&model, &escrow.images).unwrap();
    let recovered = statistics_of_capture(&capture).unwrap();
    assert_eq!(recovered.len(), truth.len());
    let mut worst = 0f64;
    for (got, want) in recovered.iter().zip(&truth) {
        assert_eq!(got.layer, want.layer);
        for (g, w) in got.statistics.mean.iter().zip(&want.statistics.mean).chain(
            got.statistics
                .variance
                .iter()
                .zip(&want.statistics.variance),
        ) {
            worst = worst.max((g - w).abs() / (1.0 + w.abs()));
        }
    }
    assert!(worst < 1e-4, "recovered vs true statistics: {worst}");

    // bn-prior records which source it used
    let dir = tempfile::tempdir().unwrap();
    for (choice, capture, expected) in [
        (BnStatistics::Auto, &capture, "update"),
        (BnStatistics::Escrow, &capture, "escrow"),
        (BnStatistics::Auto, &eval, "escrow"),
    ] {
        let options = AttackOptions {
            attack: AttackKind::BnPrior,
            iterations: 2,
            bn_statistics: choice,
            ..AttackOptions::default()
        };
        let out = dir
            .path()
            .join(format!("{choice:?}-{:?}", capture.meta.mode));
        let result = attack_and_write(
            &options,
            capture,
            &escrow,
            &out,
            &Device::Cpu,
            &"test",
            |_, _, _| {},
        );
        if capture.meta.mode == Mode::Eval {
            // bn-prior needs batch statistics in the client's forward pass
            assert!(result.is_err());
            continue;
        }
        result.unwrap();
        let metrics: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(metrics["bn_statistics"], expected, "{choice:?}");
    }
    // asking for the update's statistics where there are none is an error naming the reason
    let options = AttackOptions {
        attack: AttackKind::BnPrior,
        iterations: 2,
        bn_statistics: BnStatistics::Update,
        ..AttackOptions::default()
    };
    let mut bare = capture.clone();
    bare.running.clear();
    let err = attack_and_write(
        &options,
        &bare,
        &escrow,
        &dir.path().join("bare"),
        &Device::Cpu,
        &"test",
        |_, _, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("running statistics"), "{err}");
}
