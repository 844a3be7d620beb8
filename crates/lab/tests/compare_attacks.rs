//! A comparison of several attacks: every batch attacked by each, each attack in its own
//! folder and rows, attacks that do not apply skipped with their reason, and the worst case per
//! image — checked against the closed form's exact recovery and against a per-image maximum
//! computed here from the attacks' own rows. Also: unknown attack names are refused naming
//! the field, and folders of single-attack comparisons (no `attacks` key, records without
//! attack names or per-image scores) still resume and merge.

use candle_core::Device;
use serde_json::Value;
use std::path::Path;
use synfed_lab::comparison::{merge, run, CompareConfig, Quiet, RunOptions};

/// An untrained width-16 mlp on demo MNIST, two batches of one image, a few ig iterations:
/// analytic recovers batch-1 images exactly, ig in 8 iterations does not.
const TWO_ATTACKS: &str = r#"
kind = "inversion"
data = "demo-mnist"
held_out = 8
batches = 2
batch_size = 1
attack_iterations = 8
attacks = ["ig", "analytic", "bn-prior"]
methods = ["none", "III"]
lr_factors = []
width_matched = false
[[models]]
arch = "mlp"
width = 16
"#;

fn run_comparison(text: &str, out: &Path) {
    let config: CompareConfig = toml::from_str(text).unwrap();
    run(&config, out, &RunOptions::default(), &Device::Cpu, &Quiet).unwrap();
}

fn rows(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("results.json")).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    value["rows"].as_array().unwrap().clone()
}

/// A PSNR of `per_image` (`null`: exact, infinite).
fn psnr(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::INFINITY)
}

#[test]
fn the_worst_case_per_image_is_the_best_attack_on_each_image() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_comparison(TWO_ATTACKS, &out);

    // each attack in its own folder
    for variant in ["none", "III"] {
        for attack in ["ig", "analytic"] {
            let metrics = out.join(format!(
                "cells/mlp-w16/{variant}/untrained/attack/{attack}/batch-1/metrics.json"
            ));
            let metrics: Value =
                serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
            assert_eq!(metrics["attack"], attack);
        }
        assert!(!out
            .join(format!("cells/mlp-w16/{variant}/untrained/attack/bn-prior"))
            .exists());
    }

    let rows = rows(&out);
    // 3 sections (ig, analytic, worst case) × 3 variants (none, III and the lr × Γ control of
    // splitting, untrained: none's twin) × 1 state; bn-prior has no rows
    assert_eq!(rows.len(), 9, "{rows:?}");
    let row = |attack: &str, variant: &str| -> &Value {
        rows.iter()
            .find(|r| r["attack"] == attack && r["variant"] == variant)
            .unwrap_or_else(|| panic!("{attack} {variant}"))
    };
    for variant in ["none", "III", "none lr×2"] {
        let (ig, analytic, worst) = (
            row("ig", variant),
            row("analytic", variant),
            row("worst-case", variant),
        );
        let images = |r: &Value| r["per_image"].as_array().unwrap().clone();
        let (ig, analytic, worst_images) = (images(ig), images(analytic), images(worst));
        assert_eq!(worst_images.len(), 2, "two batches of one image");
        let mut batch_psnr = Vec::new();
        for ((i, a), w) in ig.iter().zip(&analytic).zip(&worst_images) {
            assert_eq!(i["client"], w["client"]);
            assert_eq!(a["client"], w["client"]);
            // analytic is exact on a single image (≥ 100 dB or exact), ig's 8 steps are not
            assert!(psnr(&a["psnr"]) >= 100.0, "{a}");
            assert!(psnr(&i["psnr"]) < 40.0, "{i}");
            // the attacker's best per measure, computed here from the attacks' rows
            let best_psnr = psnr(&i["psnr"]).max(psnr(&a["psnr"]));
            assert_eq!(psnr(&w["psnr"]), best_psnr, "{w}");
            assert_eq!(psnr(&w["psnr"]), psnr(&a["psnr"]));
            let best_ssim = i["ssim"].as_f64().unwrap().max(a["ssim"].as_f64().unwrap());
            assert_eq!(w["ssim"].as_f64().unwrap(), best_ssim);
            let best_mse = i["mse"].as_f64().unwrap().min(a["mse"].as_f64().unwrap());
            assert_eq!(w["mse"].as_f64().unwrap(), best_mse);
            batch_psnr.push(best_psnr.min(100.0));
        }
        // the statistics over the worst case: the median of two batches is their mean, at the
        // 100 dB ceiling for exact reconstructions
        let median = worst["psnr_spread"]["median"].as_f64().unwrap();
        assert_eq!(median, (batch_psnr[0] + batch_psnr[1]) / 2.0);
        assert_eq!(worst["k"], 2);
        assert_eq!(worst["success"]["rate"], 1.0);
    }

    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains(",state,attack,k,"));
    assert_eq!(
        csv.lines().filter(|l| l.contains(",worst-case,")).count(),
        3
    );

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in [
        "## Attack `ig`",
        "## Attack `analytic`",
        "## Worst case per image",
        "| analytic | 6 | 6 | 6 |",
        "| ig | 0 | 0 | 0 |",
        "## Attacks not run",
        "| mlp-w16 | none | bn-prior | bn-prior needs BatchNorm layers",
        "### Attack success",
        "grid-mlp-w16-untrained-analytic.png",
    ] {
        assert!(report.contains(part), "{part}\n{report}");
    }
    assert!(out.join("pictures/grid-mlp-w16-untrained-ig.png").is_file());
}

#[test]
fn an_unknown_attack_is_refused_naming_the_field() {
    let err = toml::from_str::<CompareConfig>("attacks = [\"ig\", \"rgap\"]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("attacks") && err.contains("`rgap`"), "{err}");
    for (text, field) in [
        ("attacks = []", "attacks"),
        ("attacks = [\"ig\", \"IG\"]", "twice"),
    ] {
        let c: CompareConfig = toml::from_str(text).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{text}: {err}");
    }
}

/// One attack: the layout, the saved configuration and the records of comparisons that knew
/// only Inverting Gradients.
const ONE_ATTACK: &str = r#"
kind = "inversion"
data = "demo-mnist"
held_out = 4
batches = 2
batch_size = 1
attack_iterations = 4
methods = ["none"]
lr_factors = []
width_matched = false
[[models]]
arch = "mlp"
width = 8
"#;

#[test]
fn single_attack_folders_keep_their_layout_and_old_ones_resume_and_merge() {
    // a committed comparison's configuration still reads back as the same text (a resume
    // compares the texts)
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/table3/compare.toml");
    if let Ok(text) = std::fs::read_to_string(&committed) {
        let config: CompareConfig = toml::from_str(&text).unwrap();
        assert_eq!(toml::to_string(&config).unwrap(), text);
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_comparison(ONE_ATTACK, &out);
    let saved = std::fs::read_to_string(out.join("compare.toml")).unwrap();
    assert!(!saved.contains("attacks"), "{saved}");
    let cell = out.join("cells/mlp-w8/none/untrained");
    assert!(cell.join("attack/batch-0/metrics.json").is_file());
    let before = rows(&out);

    // make the records what older comparisons wrote: no attack names, no per-image scores
    let path = cell.join("cell.json");
    let mut old: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for a in old["attacks"].as_array_mut().unwrap() {
        let a = a.as_object_mut().unwrap();
        assert!(a.remove("attack").is_some() && a.remove("images").is_some());
    }
    let old_text = serde_json::to_string_pretty(&old).unwrap();
    std::fs::write(&path, &old_text).unwrap();

    // a rerun resumes it (nothing recomputed), a merge reads it; the rows are `ig`'s
    run_comparison(ONE_ATTACK, &out);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), old_text);
    let merged = dir.path().join("merged");
    merge(&[out.clone()], &merged, false, "merge").unwrap();
    let after = rows(&merged);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["attack"], "ig");
    assert_eq!(after[0]["psnr"], before[0]["psnr"]);
    assert!(after[0].get("per_image").is_none());
    assert!(std::fs::read_to_string(merged.join("report.md"))
        .unwrap()
        .contains("![grid-mlp-w8-untrained.png]"));
}

/// A federation's captures attacked by two attacks, before and after a round of training.
const FEDERATED: &str = r#"
clients = 2
batches = 2
batch_size = 1
rounds = 1
eval_limit = 20
attack_iterations = 4
attacks = ["analytic", "ig"]
methods = ["none"]
lr_factors = []
width_matched = false
[[models]]
arch = "mlp"
width = 8
"#;

#[test]
fn a_federated_comparison_attacks_every_capture_with_every_attack() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    run_comparison(FEDERATED, &out);
    let cell = out.join("cells/mlp-w8/none");
    for attack in ["ig", "analytic"] {
        for state in ["untrained", "trained"] {
            for client in ["client-0", "client-1"] {
                let metrics = cell.join(format!("attack/{attack}/{state}-{client}/metrics.json"));
                assert!(metrics.is_file(), "{}", metrics.display());
            }
        }
    }
    let rows = rows(&out);
    // (analytic, ig, worst case) × 2 states, in the order of `attacks`
    let attacks: Vec<&str> = rows.iter().map(|r| r["attack"].as_str().unwrap()).collect();
    assert_eq!(
        attacks,
        [
            "analytic",
            "analytic",
            "ig",
            "ig",
            "worst-case",
            "worst-case"
        ]
    );
    for r in &rows {
        if r["attack"] != "ig" {
            // batch-1 FedSGD updates of an mlp: analytic is exact, so is the worst case
            assert_eq!(r["psnr_spread"]["median"], 100.0, "{r}");
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in [
        "## Worst case per image",
        "worst case per image: per attacked image, the highest PSNR",
        "**mlp-w8 trained, `ig`**",
    ] {
        assert!(report.contains(part), "{part}\n{report}");
    }
    assert!(out.join("pictures/privacy_utility.png").is_file());
}
