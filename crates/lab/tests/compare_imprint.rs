//! The malicious server (`imprint`) as an attack of `synfed compare`: its own column (rows,
//! folders, a report section saying what it assumes), kept out of the honest-but-curious
//! worst case, in inversion and in federated comparisons.
//!
//! Independent expectations, from the imprint's construction: an image alone in its bin comes
//! back exactly, and a batch of one image is always alone, so every `imprint` attack on a
//! batch of one is exact (≥ 100 dB) — with weight splitting (III) too, since every replica of
//! an imprinted unit receives the unit's gradient, and with fuzzy learning rates applied on the
//! server (they scale the server's step, not what the client sends). Where the client scales
//! its own update by private factors (`fuzzy_at = "client"`), the ratio of weight and bias
//! gradients is off by the factors, so the readout is not exact there.

use candle_core::Device;
use serde_json::Value;
use std::path::Path;
use synfed_lab::comparison::{run, CompareConfig, Quiet, RunOptions};
use synfed_wire::Capture;

fn run_comparison(text: &str, out: &Path) {
    let config: CompareConfig = toml::from_str(text).unwrap();
    run(&config, out, &RunOptions::default(), &Device::Cpu, &Quiet).unwrap();
}

fn rows(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("results.json")).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    value["rows"].as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [Value], attack: &str, variant: &str, state: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["attack"] == attack && r["variant"] == variant && r["state"] == state)
        .unwrap_or_else(|| panic!("no row {attack} {variant} {state} in {rows:?}"))
}

/// The PSNR of every image of a row (`null`: exact, infinite).
fn image_psnr(row: &Value) -> Vec<f64> {
    row["per_image"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["psnr"].as_f64().unwrap_or(f64::INFINITY))
        .collect()
}

/// The paper's protocol with an untrained width-16 mlp on demo MNIST, two batches of one image.
const INVERSION: &str = r#"
kind = "inversion"
data = "demo-mnist"
held_out = 8
batches = 2
batch_size = 1
attack_iterations = 8
attacks = ["ig", "analytic", "imprint"]
methods = ["none", "III"]
lr_factors = []
width_matched = false
[[models]]
arch = "mlp"
width = 16
"#;

#[test]
fn an_inversion_comparison_reports_the_malicious_server_apart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_comparison(INVERSION, &out);

    let rows = rows(&out);
    for variant in ["none", "III"] {
        // exact on every batch of one, splitting or not
        let imprint = image_psnr(row(&rows, "imprint", variant, "untrained"));
        assert_eq!(imprint.len(), 2);
        assert!(
            imprint.iter().all(|&p| p >= 100.0),
            "{variant}: {imprint:?}"
        );
        let metrics = out.join(format!(
            "cells/mlp-w16/{variant}/untrained/attack/imprint/batch-0/metrics.json"
        ));
        let metrics: Value =
            serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
        assert_eq!(metrics["attack"], "imprint");

        // the worst case is the best of ig and analytic alone, image by image
        let (ig, analytic, worst) = (
            image_psnr(row(&rows, "ig", variant, "untrained")),
            image_psnr(row(&rows, "analytic", variant, "untrained")),
            image_psnr(row(&rows, "worst-case", variant, "untrained")),
        );
        for ((i, a), w) in ig.iter().zip(&analytic).zip(&worst) {
            assert_eq!(*w, i.max(*a));
        }
    }

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in [
        "## Attack `imprint`: a malicious server",
        "Threat model: the server is **malicious**",
        "the brightness of the training split's images",
        "left out of the worst case per image",
        "(a malicious server's `imprint` is not among them)",
        "| analytic |",
    ] {
        assert!(report.contains(part), "{part}\n{report}");
    }
    // the wins of the worst case name the honest attacks only
    assert!(!report.contains("| imprint |"), "{report}");
}

/// A federation: two clients, batches of one image, one round of training; `none`, `I` with
/// its factors on the server and on the clients, and `III`.
const FEDERATED: &str = r#"
clients = 2
batches = 2
batch_size = 1
rounds = 1
eval_limit = 20
attack_iterations = 4
attacks = ["ig", "imprint"]
methods = ["none", "I", "III"]
fuzzy_at = ["server", "client"]
lr_factors = []
width_matched = false
[[models]]
arch = "mlp"
width = 16
"#;

#[test]
fn a_federated_comparison_runs_the_malicious_server_federations() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_comparison(FEDERATED, &out);

    // the malicious server's own federations: the targeted clients' captures record the
    // imprint, the honest ones do not
    let cell = out.join("cells/mlp-w16/none");
    for (run, round, imprinted) in [
        ("run", 1, false),
        ("run-imprint", 1, true),
        ("run-trained-imprint", 2, true),
    ] {
        let path = cell
            .join(run)
            .join("captures")
            .join(synfed_wire::capture_file_name(round, "client-0"));
        let capture = Capture::load(&path, &Device::Cpu).unwrap();
        assert_eq!(capture.meta.imprint.is_some(), imprinted, "{run}");
    }
    for state in ["untrained", "trained"] {
        for client in ["client-0", "client-1"] {
            let metrics = cell.join(format!("attack/imprint/{state}-{client}/metrics.json"));
            assert!(metrics.is_file(), "{}", metrics.display());
        }
    }

    let rows = rows(&out);
    for state in ["untrained", "trained"] {
        for variant in ["none", "I", "III"] {
            let imprint = image_psnr(row(&rows, "imprint", variant, state));
            assert!(
                imprint.iter().all(|&p| p >= 100.0),
                "{variant} {state}: {imprint:?}"
            );
        }
        // the client's private factors scale what it sends: no longer exact
        let client_side = image_psnr(row(&rows, "imprint", "I @client", state));
        assert!(
            client_side.iter().all(|&p| p < 100.0),
            "I @client {state}: {client_side:?}"
        );
    }
    // one honest attack: no worst case
    assert!(rows.iter().all(|r| r["attack"] != "worst-case"));

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in [
        "## Attack `imprint`: a malicious server",
        "runs its federations again with `[tap] mode = \"imprint\"`",
        "## Attack `ig`",
    ] {
        assert!(report.contains(part), "{part}\n{report}");
    }
}

#[test]
fn imprint_is_skipped_on_a_model_without_a_fully_connected_first_layer() {
    let text = INVERSION
        .replace(
            "attacks = [\"ig\", \"analytic\", \"imprint\"]",
            "attacks = [\"ig\", \"imprint\"]",
        )
        .replace("methods = [\"none\", \"III\"]", "methods = [\"none\"]")
        .replace("arch = \"mlp\"\nwidth = 16", "arch = \"lenet\"\nwidth = 2")
        .replace("attack_iterations = 8", "attack_iterations = 2");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_comparison(&text, &out);
    let rows = rows(&out);
    assert!(rows.iter().all(|r| r["attack"] == "ig"), "{rows:?}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| imprint | imprint rewrites a fully connected first layer"),
        "{report}"
    );
}
