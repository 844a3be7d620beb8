//! `--kind privacy` with `pretrain_epochs`: the trained state is a federation started from a
//! centrally pretrained model. Checked independently of the comparison's own bookkeeping: the
//! trained capture's global model is, weight for weight, the saved pretrained model; the
//! untrained capture's is the seed's fresh initialisation; the reported test accuracy is the
//! pretrained model's, evaluated here on the run's evaluation images, and far above chance;
//! the report describes that trained state and shows its accuracy and the privacy-utility plot.

use candle_core::{DType, Device};
use serde_json::Value;
use synfed_lab::comparison::{run, CompareConfig, Quiet, RunOptions};
use synfed_models::{checkpoint, evaluate, Model};

const PRETRAINED: &str = r#"
kind = "privacy"
data = "demo-mnist"
eval_limit = 200
clients = 2
batches = 1
rounds = 0
batch_size = 1
pretrain_epochs = 2
attack_iterations = 2
methods = ["none"]
lr_factors = []
width_matched = false
[[models]]
arch = "mlp"
width = 16
[learning]
lr = 0.05
batch_size = 20
"#;

fn weights(model: &Model) -> Vec<(String, Vec<f32>)> {
    model
        .params()
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn the_trained_state_federates_the_pretrained_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config: CompareConfig = toml::from_str(PRETRAINED).unwrap();
    config.validate().unwrap();
    assert_eq!(config.states(), ["untrained", "trained"]);
    run(&config, &out, &RunOptions::default(), &Device::Cpu, &Quiet).unwrap();

    let cell = out.join("cells/mlp-w16/none");
    let saved = checkpoint::load(
        &cell.join("pretraining/trained.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
    .model;
    let capture = |run: &str| {
        let path = cell
            .join(run)
            .join("captures")
            .join(synfed_wire::capture_file_name(1, "client-0"));
        synfed_wire::Capture::load(&path, &Device::Cpu)
            .unwrap()
            .model(DType::F32, &Device::Cpu)
            .unwrap()
    };
    // the trained federation's round 1 sent the pretrained weights
    assert_eq!(weights(&capture("run-trained")), weights(&saved));
    // the untrained state is the seed's initialisation, not the pretrained model
    let untrained = capture("run");
    let fresh = Model::build(untrained.spec(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(weights(&untrained), weights(&fresh));
    assert_ne!(weights(&untrained), weights(&saved));

    // the reported accuracy is the pretrained model's on the run's evaluation images
    let splits = synfed_data::load("demo-mnist", None).unwrap();
    let shown: Vec<usize> = (0..200).collect();
    let accuracy = evaluate(&saved, &splits.test, &shown, &splits.normalization, 50)
        .unwrap()
        .accuracy();
    assert!(accuracy > 0.6, "two epochs on demo MNIST: {accuracy}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let reported = results["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|r| r["test_accuracy"].as_f64())
        .expect("a trained row with its test accuracy");
    assert!(
        (reported - accuracy).abs() < 1e-9,
        "{reported} vs {accuracy}"
    );
    // both states were attacked
    for state in ["untrained", "trained"] {
        assert!(cell
            .join(format!("attack/{state}-client-0/metrics.json"))
            .is_file());
    }
    // the report says where the trained state comes from and shows its accuracy and the
    // privacy-utility plot, although no federated round trained it (rounds = 0)
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in [
        "in round 1 of a federation started from the cell's model pretrained for 2 centralized epochs",
        "## Utility: test accuracy of the trained state",
        &format!("| none | {:.2} % |", 100.0 * accuracy),
        "![privacy against utility](pictures/privacy_utility.png)",
    ] {
        assert!(report.contains(part), "{part}\n{report}");
    }
    assert!(!report.contains("after 0 rounds"), "{report}");
    assert!(out.join("pictures/privacy_utility.png").is_file());
}
