//! End-to-end tests of `synfed attack`: the self-contained form writes a capture and its escrow,
//! and the capture form attacks those files again with the same result.

mod common;

use common::{read_json, synfed_err, synfed_ok};

#[test]
fn self_contained_attack_then_the_same_from_its_capture() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    synfed_ok(&[
        "attack",
        "--model",
        "lenet",
        "--width",
        "4",
        "--data",
        "demo-cifar10",
        "--methods",
        "III",
        "--batch-size",
        "2",
        "--iterations",
        "30",
        "--seed",
        "4",
        "--out",
        first.to_str().unwrap(),
    ]);
    let m = read_json(&first, "metrics.json");
    for key in [
        "mse",
        "ssim",
        "mse_normalized",
        "fmse",
        "label_accuracy",
        "seconds",
    ] {
        assert!(m[key].is_number(), "{key}: {}", m[key]);
    }
    assert_eq!(m["images"].as_array().unwrap().len(), 2);
    assert_eq!(m["labels_recovered"], true);
    let mut assignment: Vec<u64> = m["assignment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assignment.sort();
    assert_eq!(assignment, [0, 1]);
    let trace = std::fs::read_to_string(first.join("trace.csv")).unwrap();
    assert_eq!(trace.lines().count(), 31);
    for f in [
        "capture.safetensors",
        "escrow.safetensors",
        "grid.png",
        "truth_00.png",
        "recon_01.png",
    ] {
        assert!(first.join(f).exists(), "{f}");
    }
    let second = tmp.path().join("second");
    synfed_ok(&[
        "attack",
        "--capture",
        first.join("capture.safetensors").to_str().unwrap(),
        "--escrow",
        first.join("escrow.safetensors").to_str().unwrap(),
        "--iterations",
        "30",
        "--seed",
        "4",
        "--out",
        second.to_str().unwrap(),
    ]);
    let n = read_json(&second, "metrics.json");
    assert_eq!(
        m["mse"], n["mse"],
        "the same capture and seed give the same reconstruction"
    );
    assert_eq!(m["labels"], n["labels"]);
    assert_eq!(
        std::fs::read(first.join("grid.png")).unwrap(),
        std::fs::read(second.join("grid.png")).unwrap()
    );
}

#[test]
fn mismatched_or_missing_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    for (dir, batch) in [(&a, "1"), (&b, "2")] {
        synfed_ok(&[
            "attack",
            "--model",
            "mlp",
            "--width",
            "8",
            "--data",
            "demo-mnist",
            "--batch-size",
            batch,
            "--iterations",
            "2",
            "--out",
            dir.to_str().unwrap(),
        ]);
    }
    let c = tmp.path().join("c");
    let err = synfed_err(&[
        "attack",
        "--capture",
        a.join("capture.safetensors").to_str().unwrap(),
        "--escrow",
        b.join("escrow.safetensors").to_str().unwrap(),
        "--out",
        c.to_str().unwrap(),
    ]);
    assert!(err.contains("batch"), "{err}");
    let err = synfed_err(&["attack", "--out", c.to_str().unwrap()]);
    assert!(err.contains("--capture"), "{err}");
    let err = synfed_err(&[
        "attack",
        "--capture",
        "/nonexistent.safetensors",
        "--escrow",
        "/x",
        "--out",
        c.to_str().unwrap(),
    ]);
    assert!(err.contains("/nonexistent.safetensors"), "{err}");
}

#[test]
fn analytic_attack_recovers_one_digit_exactly_and_records_the_attack() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("analytic");
    synfed_ok(&[
        "attack",
        "--attack",
        "analytic",
        "--model",
        "mlp",
        "--data",
        "demo-mnist",
        "--batch-size",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let m = read_json(&dir, "metrics.json");
    assert_eq!(m["attack"], "analytic");
    assert_eq!(m["options"]["attack"], "analytic");
    assert_eq!(m["iterations"], 0);
    // an exact reconstruction has infinite PSNR, written as null
    let psnr = &m["psnr"];
    assert!(
        psnr.is_null() || psnr.as_f64().is_some_and(|p| p > 60.0),
        "PSNR {psnr}"
    );
    assert!(m["ssim"].as_f64().unwrap() > 0.999, "{}", m["ssim"]);
    assert!(dir.join("grid.png").exists());
    // a bad attack name is refused with the valid ones
    let err = synfed_err(&[
        "attack",
        "--attack",
        "gradinv",
        "--model",
        "mlp",
        "--data",
        "demo-mnist",
        "--out",
        tmp.path().join("bad").to_str().unwrap(),
    ]);
    assert!(err.contains("gradinv") && err.contains("analytic"), "{err}");
    // a convolutional first layer is a clear error, not a panic
    let err = synfed_err(&[
        "attack",
        "--attack",
        "analytic",
        "--model",
        "lenet",
        "--width",
        "4",
        "--data",
        "demo-cifar10",
        "--out",
        tmp.path().join("lenet").to_str().unwrap(),
    ]);
    assert!(err.contains("fully connected first layer"), "{err}");
}
