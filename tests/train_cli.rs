//! End-to-end tests of `synfed train`: the binary, on the embedded real data.

mod common;

use common::{read_json, synfed_err, synfed_ok};

#[test]
fn mlp_learns_demo_mnist_with_all_methods() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    synfed_ok(&[
        "train",
        "--model",
        "mlp",
        "--data",
        "demo-mnist",
        "--epochs",
        "3",
        "--methods",
        "I+II+III",
        "--lr",
        "0.05",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let s = read_json(&dir, "summary.json");
    let acc = s["test_accuracy"]["mean"].as_f64().unwrap();
    assert!(acc > 0.8, "test accuracy {acc} (chance is 0.1)");
    assert_eq!(s["spec"]["methods"], "I+II+III");
    assert_eq!(s["parameters"], 784 * 1000 + 1000 + 1000 * 10 + 10);
    let best = s["folds"][0]["best_epoch"].as_u64().unwrap();
    assert!((1..=3).contains(&best));
    // rejuvenation happened and was counted
    assert!(s["folds"][0]["rejuvenated_total"].as_u64().unwrap() > 0);
    // one CSV row per epoch, plus the header
    let csv = std::fs::read_to_string(dir.join("epochs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("fold,epoch,train_loss"));
    for file in ["model-fold0.safetensors", "accuracy.png", "accuracy.svg"] {
        assert!(dir.join(file).metadata().unwrap().len() > 100, "{file}");
    }
}

#[test]
fn same_seed_gives_the_same_bytes_and_folds_differ() {
    let out = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let dir = out.path().join(name);
        synfed_ok(&[
            "train",
            "--model",
            "lenet",
            "--data",
            "demo-cifar10",
            "--epochs",
            "2",
            "--folds",
            "2",
            "--methods",
            "I+II",
            "--train-limit",
            "300",
            "--batch-size",
            "50",
            "--seed",
            "5",
            "--device",
            "cpu",
            "--out",
            dir.to_str().unwrap(),
        ]);
        dir
    };
    let (a, b) = (run("a"), run("b"));
    for file in ["model-fold0.safetensors", "model-fold1.safetensors"] {
        assert_eq!(
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
            "{file}"
        );
    }
    assert_ne!(
        std::fs::read(a.join("model-fold0.safetensors")).unwrap(),
        std::fs::read(a.join("model-fold1.safetensors")).unwrap()
    );
    let s = read_json(&a, "summary.json");
    assert_eq!(s["folds"].as_array().unwrap().len(), 2);
    assert!(s["folds"][0]["validation_accuracy"].is_number());
}

#[test]
fn every_architecture_trains_with_every_method_set() {
    let out = tempfile::tempdir().unwrap();
    let sets = [
        "none", "III", "II", "II+III", "I", "I+III", "I+II", "I+II+III",
    ];
    for (model, width) in [
        ("mlp", "16"),
        ("alexnet", "4"),
        ("resnet20", "4"),
        ("resnet32", "2"),
        ("resnet56", "2"),
        ("convnet", "4"),
        ("lenet", "4"),
    ] {
        for methods in sets {
            let dir = out.path().join(format!("{model}-{methods}"));
            synfed_ok(&[
                "train",
                "--model",
                model,
                "--width",
                width,
                "--data",
                "demo-cifar10",
                "--epochs",
                "1",
                "--methods",
                methods,
                "--train-limit",
                "64",
                "--batch-size",
                "32",
                "--out",
                dir.to_str().unwrap(),
            ]);
            let acc = read_json(&dir, "summary.json")["test_accuracy"]["mean"]
                .as_f64()
                .unwrap();
            assert!((0.0..=1.0).contains(&acc));
        }
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("x");
    let d = dir.to_str().unwrap();
    for (args, needle) in [
        (vec!["train", "--model", "vgg", "--out", d], "vgg"),
        (vec!["train", "--methods", "IV", "--out", d], "IV"),
        (vec!["train", "--data", "mnist", "--out", d], "data"),
        (
            vec![
                "train",
                "--data",
                "mnist",
                "--data-dir",
                "/nonexistent/dir",
                "--out",
                d,
            ],
            "/nonexistent/dir",
        ),
        (
            vec![
                "train",
                "--model",
                "resnet20",
                "--width",
                "3",
                "--methods",
                "III",
                "--data",
                "demo-cifar10",
                "--out",
                d,
            ],
            "divisible",
        ),
        (vec!["train", "--device", "tpu", "--out", d], "tpu"),
        (vec!["train", "--lr=-1", "--out", d], "lr"),
        (vec!["train", "--gamma", "0", "--out", d], "gamma"),
        (vec!["train", "--gamma", "65", "--out", d], "gamma"),
        (vec!["train", "--width", "0", "--out", d], "width"),
        (vec!["train", "--tau", "2.5", "--out", d], "tau"),
        (vec!["train", "--d-re", "0", "--out", d], "d_re"),
    ] {
        let stderr = synfed_err(&args);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
