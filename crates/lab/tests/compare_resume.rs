//! A comparison stopped in the middle of a cell resumes it: the cell's pretraining (trained
//! model and its record) and its finished attacks are read back, the unfinished attacks run,
//! and the results equal an uninterrupted run's. An attack is only read back when it was
//! written for the very same update: a folder whose recorded update digest differs is
//! attacked again. The interruption is made by hand — the cell's `cell.json` and one attack's
//! `metrics.json` removed, as a run killed during that attack leaves them — and reuse is told
//! from recomputation by the bytes of `metrics.json` (which record the attack's wall time).

use candle_core::Device;
use serde_json::Value;
use std::path::Path;
use synfed_lab::comparison::{run, CompareConfig, Quiet, RunOptions};

/// The paper's protocol on a width-8 mlp trained for 2 epochs, two batches of one image,
/// two attackers.
const INVERSION: &str = r#"
kind = "inversion"
data = "demo-mnist"
held_out = 8
batches = 2
batch_size = 1
attack_iterations = 8
attacks = ["ig", "analytic"]
methods = ["none"]
lr_factors = []
width_matched = false
pretrain_epochs = 2
[[models]]
arch = "mlp"
width = 8
[learning]
lr = 0.05
batch_size = 20
"#;

/// A federation whose trained state starts from a model pretrained for 2 epochs.
const PRIVACY: &str = r#"
kind = "privacy"
data = "demo-mnist"
eval_limit = 40
clients = 2
batches = 2
rounds = 0
batch_size = 1
pretrain_epochs = 2
attack_iterations = 8
attacks = ["ig", "analytic"]
methods = ["none"]
lr_factors = []
width_matched = false
[[models]]
arch = "mlp"
width = 8
[learning]
lr = 0.05
batch_size = 20
"#;

fn run_comparison(text: &str, out: &Path) {
    let config: CompareConfig = toml::from_str(text).unwrap();
    run(&config, out, &RunOptions::default(), &Device::Cpu, &Quiet).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap()
}

/// The attack records of a finished cell, without their wall times.
fn records(cell: &Path) -> Vec<Value> {
    let mut records = json(&cell.join("cell.json"))["attacks"]
        .as_array()
        .unwrap()
        .clone();
    for r in &mut records {
        r.as_object_mut().unwrap().remove("seconds");
    }
    records
}

/// Interrupts `cell` as a kill during the attack in `unfinished` leaves it, spoils the
/// digest recorded in `foreign`, reruns, and checks what was reused and what recomputed.
fn interrupt_and_resume(
    text: &str,
    out: &Path,
    cell: &Path,
    pretraining: &Path,
    kept: &str,
    unfinished: &str,
    foreign: &str,
) {
    let before = records(cell);
    let training_seconds = json(&cell.join("cell.json"))["training_seconds"].clone();
    assert!(training_seconds.as_f64().unwrap() > 0.0);
    let record = read(&pretraining.join("pretraining.json"));
    let kept_metrics = read(&cell.join(kept).join("metrics.json"));
    let unfinished_metrics = json(&cell.join(unfinished).join("metrics.json"));

    std::fs::remove_file(cell.join("cell.json")).unwrap();
    std::fs::remove_file(cell.join(unfinished).join("metrics.json")).unwrap();
    let foreign_path = cell.join(foreign).join("metrics.json");
    let mut spoiled = json(&foreign_path);
    spoiled["update_digest"] = Value::String(format!("sha256:{}", "0".repeat(64)));
    let spoiled_text = serde_json::to_string_pretty(&spoiled).unwrap();
    std::fs::write(&foreign_path, &spoiled_text).unwrap();

    run_comparison(text, out);

    // the pretraining was reused, not redone: its record is the same file, and the cell
    // reports the original training time
    assert_eq!(read(&pretraining.join("pretraining.json")), record);
    assert_eq!(
        json(&cell.join("cell.json"))["training_seconds"],
        training_seconds
    );
    // the finished attack was read back (its metrics, wall time included, are the same bytes)
    assert_eq!(read(&cell.join(kept).join("metrics.json")), kept_metrics);
    // the unfinished one ran again, to the same result
    let again = json(&cell.join(unfinished).join("metrics.json"));
    for key in ["mse", "mse_normalized", "ssim", "labels"] {
        assert_eq!(again[key], unfinished_metrics[key], "{key}");
    }
    // the one recorded for another update was attacked again (and records its real update)
    let redone = json(&foreign_path);
    let digest = redone["update_digest"].as_str().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 7 + 64,
        "{digest}"
    );
    assert_ne!(redone["update_digest"], spoiled["update_digest"]);
    // and the cell's records equal the uninterrupted run's
    assert_eq!(records(cell), before);
}

#[test]
fn an_interrupted_inversion_cell_reuses_its_pretraining_and_finished_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_comparison(INVERSION, &out);
    let cell = out.join("cells/mlp-w8/none/trained");
    interrupt_and_resume(
        INVERSION,
        &out,
        &cell,
        &cell,
        "attack/ig/batch-0",
        "attack/ig/batch-1",
        "attack/analytic/batch-0",
    );
}

#[test]
fn an_interrupted_federated_cell_reuses_its_pretraining_and_finished_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_comparison(PRIVACY, &out);
    let cell = out.join("cells/mlp-w8/none");
    interrupt_and_resume(
        PRIVACY,
        &out,
        &cell,
        &cell.join("pretraining"),
        "attack/ig/trained-client-0",
        "attack/ig/trained-client-1",
        "attack/analytic/untrained-client-0",
    );
}
