//! The paper's Table 3 protocol: captures in either BatchNorm mode, and a whole study state
//! (training, capture, attack) on held-out batches.

use candle_core::{DType, Device, Tensor};
use synfed_data::{DatasetName, Splits};
use synfed_lab::{capture_batch, AttackOptions, CentralizedInversion, Pretraining};
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::{MethodSet, Mode};

fn spec(arch: Arch, width: usize, splits: &Splits) -> ModelSpec {
    let s = splits.train.shape();
    ModelSpec::new(
        arch,
        InputShape::new(s.channels, s.height, s.width),
        splits.train.num_classes(),
        MethodSet::NONE,
        3,
    )
    .with_width(width)
}

fn max_abs_diff(a: &[Tensor], b: &[Tensor]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .fold(0.0, f32::max)
}

/// In eval mode BatchNorm uses running statistics, so a batch's gradient is the mean of its
/// images' gradients; in train mode the batch statistics couple the images and it is not.
/// The capture records the mode, and a train-mode capture leaves the running statistics alone.
#[test]
fn eval_mode_capture_is_the_mean_of_per_image_gradients() {
    let splits = DatasetName::DemoCifar10.load(None).unwrap();
    let model = Model::build(&spec(Arch::ResNet20, 4, &splits), DType::F32, &Device::Cpu).unwrap();
    let before: Vec<(String, Tensor)> = model.params().tensors();
    let grads_of = |indices: &[usize], mode| {
        let (capture, escrow) = capture_batch(
            &model,
            &splits.test,
            &splits.normalization,
            indices,
            mode,
            false,
            "batch-0",
        )
        .unwrap();
        assert_eq!(capture.meta.mode, mode);
        assert_eq!(escrow.labels_vec().unwrap().len(), indices.len());
        capture.update_in_param_order(&model).unwrap()
    };
    let pair = grads_of(&[0, 1], Mode::Eval);
    let first = grads_of(&[0], Mode::Eval);
    let second = grads_of(&[1], Mode::Eval);
    let mean: Vec<Tensor> = first
        .iter()
        .zip(&second)
        .map(|(a, b)| ((a + b).unwrap() / 2.0).unwrap())
        .collect();
    assert!(max_abs_diff(&pair, &mean) < 1e-5);
    let pair_train = grads_of(&[0, 1], Mode::Train);
    assert!(max_abs_diff(&pair_train, &mean) > 1e-3);
    // neither capture moved the running statistics
    for ((name, a), (_, b)) in before.iter().zip(model.params().tensors()) {
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{name}"
        );
    }
}

/// A small MLP on held-out MNIST digits: the untrained state is inverted almost exactly at
/// batch 1 (an MLP's first layer gives the image away), training lifts the test accuracy far
/// above chance, and a rerun reuses the trained model and reproduces the scores bit for bit.
#[test]
fn a_study_state_trains_once_and_attacks_held_out_batches() {
    let whole = DatasetName::DemoMnist.load_test(None).unwrap();
    let splits = Splits::held_out(&whole, 20).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let attack = AttackOptions {
        iterations: 200,
        ..AttackOptions::default()
    };
    let untrained = CentralizedInversion {
        spec: spec(Arch::Mlp, 32, &splits),
        pretraining: None,
        batches: 2,
        batch_size: 1,
        mode: Mode::Eval,
        expose_labels: true,
        attack: attack.clone(),
    };
    let state = untrained
        .run(
            &splits,
            &dir.path().join("untrained"),
            &Device::Cpu,
            |_, _| {},
            |_, _, _, _| {},
        )
        .unwrap();
    assert_eq!(state.attacks.len(), 2);
    assert_eq!(state.attacks[1].indices, [1]);
    for a in &state.attacks {
        assert!(a.outcome.scores.psnr > 25.0, "{}", a.outcome.scores.psnr);
        let files = dir.path().join("untrained/attack").join(&a.name);
        assert!(files.join("metrics.json").is_file() && files.join("grid.png").is_file());
    }
    assert!(state.test_accuracy < 0.5);

    let trained = CentralizedInversion {
        pretraining: Some(Pretraining {
            epochs: 3,
            lr: 0.05,
            batch_size: 20,
        }),
        batches: 1,
        ..untrained
    };
    let trained_dir = dir.path().join("trained");
    let first = trained
        .run(
            &splits,
            &trained_dir,
            &Device::Cpu,
            |_, _| {},
            |_, _, _, _| {},
        )
        .unwrap();
    let trained_for = first.training_seconds.unwrap();
    assert!(trained_for > 0.0);
    assert!(first.test_accuracy > 0.5, "{}", first.test_accuracy);
    assert!(trained_dir.join("trained.safetensors").is_file());
    let mut epochs = 0;
    let again = trained
        .run(
            &splits,
            &trained_dir,
            &Device::Cpu,
            |_, _| epochs += 1,
            |_, _, _, _| {},
        )
        .unwrap();
    assert_eq!(epochs, 0, "the trained model is reused");
    // the reused model reports the time recorded beside it, not zero
    assert_eq!(again.training_seconds, Some(trained_for));
    assert_eq!(again.test_accuracy, first.test_accuracy);
    assert_eq!(
        again.attacks[0].outcome.scores.mse.to_bits(),
        first.attacks[0].outcome.scores.mse.to_bits()
    );

    let too_many = CentralizedInversion {
        batches: 30,
        ..trained
    };
    let err = too_many
        .run(
            &splits,
            dir.path(),
            &Device::Cpu,
            |_, _| {},
            |_, _, _, _| {},
        )
        .unwrap_err();
    assert!(err.to_string().contains("test split has 20"), "{err}");
}

/// A pretraining killed after its second of three epochs continues from its partial checkpoint
/// (only the third epoch runs again) and ends in the same bytes as an uninterrupted one, with
/// all three mechanisms on: fuzzy factors, rejuvenation stream position and split layers all
/// survive the restart.
#[test]
fn an_interrupted_pretraining_resumes_to_the_same_trained_bytes() {
    let whole = DatasetName::DemoMnist.load_test(None).unwrap();
    let splits = Splits::held_out(&whole, 20).unwrap();
    let s = splits.train.shape();
    let study = CentralizedInversion {
        spec: ModelSpec::new(
            Arch::Mlp,
            InputShape::new(s.channels, s.height, s.width),
            splits.train.num_classes(),
            MethodSet::ALL,
            3,
        )
        .with_width(32),
        pretraining: Some(Pretraining {
            epochs: 3,
            lr: 0.05,
            batch_size: 20,
        }),
        batches: 1,
        batch_size: 1,
        mode: Mode::Eval,
        expose_labels: true,
        attack: AttackOptions {
            iterations: 5,
            ..AttackOptions::default()
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let (straight, resumed) = (dir.path().join("straight"), dir.path().join("resumed"));
    study
        .run(&splits, &straight, &Device::Cpu, |_, _| {}, |_, _, _, _| {})
        .unwrap();
    assert!(!straight.join("pretraining.partial.safetensors").exists());

    // the process dies right after epoch 2 (its partial checkpoint is written first)
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        study.run(
            &splits,
            &resumed,
            &Device::Cpu,
            |epoch, _| assert!(epoch < 2, "killed after epoch {epoch}"),
            |_, _, _, _| {},
        )
    }));
    assert!(killed.is_err());
    assert!(resumed.join("pretraining.partial.safetensors").is_file());
    assert!(!resumed.join("trained.safetensors").exists());
    let partial = synfed_models::checkpoint::load(
        &resumed.join("pretraining.partial.safetensors"),
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut state = partial.state.unwrap();
    assert!(
        state["seconds"].as_f64().unwrap() > 0.0,
        "the time of epochs 1 and 2"
    );
    // as if those epochs had taken 1,000 s: the resumed total must carry them
    let before = 1000.0;
    state["seconds"] = serde_json::json!(before);
    synfed_models::checkpoint::save(
        &partial.model,
        Some(&state),
        &resumed.join("pretraining.partial.safetensors"),
    )
    .unwrap();

    let mut epochs = Vec::new();
    let resumed_state = study
        .run(
            &splits,
            &resumed,
            &Device::Cpu,
            |epoch, _| epochs.push(epoch),
            |_, _, _, _| {},
        )
        .unwrap();
    assert_eq!(epochs, [3], "only the epoch not yet done runs");
    let total = resumed_state.training_seconds.unwrap();
    assert!(
        total > before && total < before + 600.0,
        "{total} s must include the {before} s before the stop"
    );
    assert!(!resumed.join("pretraining.partial.safetensors").exists());
    assert_eq!(
        std::fs::read(straight.join("trained.safetensors")).unwrap(),
        std::fs::read(resumed.join("trained.safetensors")).unwrap(),
        "the resumed training ends in other bytes"
    );
}
