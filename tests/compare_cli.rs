//! `synfed compare` end to end on a tiny grid: outputs, resuming after a kill, shards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TINY: &str = r#"
clients = 2
batches = 2
rounds = 1
attack_iterations = 60
eval_limit = 50
methods = ["none", "III"]
defences = ["dp:C=1,sigma=1,per-example"]
[[models]]
arch = "mlp"
width = 16
"#;

fn synfed() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_synfed"));
    c.env("CANDLE_GRAD_DO_NOT_DETACH", "1")
        .arg("--log")
        .arg("warn");
    c
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("compare.toml");
    std::fs::write(&path, TINY).unwrap();
    path
}

fn compare(config: &Path, out: &Path, extra: &[&str]) {
    let output = synfed()
        .args(["compare", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The rows of results.json (the command line differs between runs).
fn rows(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("results.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["rows"].clone()
}

fn cell_files(out: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let cells = out.join("cells");
    for model in std::fs::read_dir(&cells).into_iter().flatten().flatten() {
        for variant in std::fs::read_dir(model.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let f = variant.path().join("cell.json");
            if f.exists() {
                files.push(f);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn a_tiny_comparison_writes_tables_pictures_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    compare(&config(dir.path()), &out, &[]);
    // none, III, the LR sweep (lr × 0.5, lr × Γ), the width-matched baseline, DP; two states each
    let rows = rows(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 6 * 2);
    let labels: Vec<&str> = rows
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .step_by(2)
        .collect();
    assert_eq!(
        labels,
        [
            "none",
            "III",
            "none lr×0.5",
            "none lr×2",
            "none width/2",
            "none + dp:C=1,sigma=1,per-example"
        ]
    );
    for r in rows {
        assert_eq!(r["k"], 2);
        let psnr = r["psnr"]["mean"].as_f64().unwrap();
        assert!(psnr > 0.0 && psnr < 100.0, "{r}");
        assert!(r["psnr"]["ci95"].as_f64().unwrap() >= 0.0);
        assert!(r["test_accuracy"].as_f64().unwrap() > 0.0);
        // two batches: the median is the mean, the quartiles and the bootstrap interval of
        // the mean lie between the two values
        let spread = &r["psnr_spread"];
        assert!(
            (spread["median"].as_f64().unwrap() - psnr).abs() < 1e-9,
            "{r}"
        );
        let (lo, hi) = (
            r["psnr_bootstrap"]["lo"].as_f64().unwrap(),
            r["psnr_bootstrap"]["hi"].as_f64().unwrap(),
        );
        let (q1, q3) = (
            spread["q1"].as_f64().unwrap(),
            spread["q3"].as_f64().unwrap(),
        );
        assert!(lo <= psnr && psnr <= hi && q1 <= psnr && psnr <= q3, "{r}");
        let rate = r["success"]["rate"].as_f64().unwrap();
        assert!([0.0, 0.5, 1.0].contains(&rate), "{r}");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 12);
    assert!(csv.starts_with("variant,") && csv.lines().next().unwrap().contains(",psnr_median,"));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "PSNR of the reconstructions",
        "| none width/2 |",
        "**",
        "test accuracy after 1 rounds",
        "pictures/grid-mlp-w16-untrained.png",
        "### mlp-w16 untrained: against `none` on the same batches",
        "### mlp-w16 trained: against `none` on the same batches",
        "### Against the matched controls",
        "### mlp-w16 trained: against `none lr×2` on the same batches",
        "### mlp-w16 untrained: against `none width/2` on the same batches",
    ] {
        assert!(report.contains(needle), "report.md lacks `{needle}`");
    }
    // K = 2 paired batches: Wilcoxon's smallest two-sided p is 2/2² = 0.5, so no variant can
    // differ detectably from `none`, and no table value may be bolded as most private
    let paired: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| III |") && l.contains("/2 ("))
        .collect();
    // against none, none lr×2 and none width/2, untrained and trained
    assert_eq!(paired.len(), 6, "{report}");
    for line in paired {
        assert!(line.ends_with("| no detectable difference |"), "{line}");
        assert!(
            line.contains("| 0.500 |") || line.contains("| 1.000 |"),
            "{line}"
        );
    }
    assert!(!report.contains("harder to invert"), "{report}");
    let tables = &report[..report.find("## Paired tests").unwrap()];
    assert!(
        !tables
            .lines()
            .any(|l| l.starts_with("| ") && l.contains("**")),
        "a value is bolded without a significant difference: {tables}"
    );
    for picture in [
        "grid-mlp-w16-untrained.png",
        "grid-mlp-w16-trained.png",
        "accuracy-mlp-w16.png",
        "accuracy-mlp-w16.svg",
    ] {
        let bytes = std::fs::read(out.join("pictures").join(picture)).unwrap();
        assert!(bytes.len() > 100, "{picture}");
    }
    let grid = image::open(out.join("pictures/grid-mlp-w16-untrained.png"))
        .unwrap()
        .to_rgb8();
    // truth row + 6 variants, images of 28 px (scaled ×3), under a title
    let (width, height) = grid.dimensions();
    assert!((7 * 84..7 * 84 + 150).contains(&height), "{height}");
    // each row labelled in a column left of its tiles: the longest label (DP, a lower row)
    // reaches far left, well below the title
    let dark = (height / 3..height)
        .any(|y| (0..width / 4).any(|x| grid.get_pixel(x, y).0.iter().all(|&c| c < 128)));
    assert!(dark, "no label left of the grid's rows");
}

#[test]
fn a_killed_comparison_resumes_without_redoing_finished_cells() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let out = dir.path().join("out");
    let mut child = synfed()
        .args(["compare", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while cell_files(&out).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no cell finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished = cell_files(&out);
    assert!(
        !out.join("report.md").exists(),
        "killed too late: the test needs slower cells"
    );
    let before: Vec<(String, std::time::SystemTime)> = finished
        .iter()
        .map(|f| {
            (
                std::fs::read_to_string(f).unwrap(),
                std::fs::metadata(f).unwrap().modified().unwrap(),
            )
        })
        .collect();

    compare(&config, &out, &[]);
    assert_eq!(cell_files(&out).len(), 6);
    for (file, (text, modified)) in finished.iter().zip(before) {
        assert_eq!(std::fs::read_to_string(file).unwrap(), text);
        assert_eq!(
            std::fs::metadata(file).unwrap().modified().unwrap(),
            modified,
            "{} was recomputed",
            file.display()
        );
    }
    // and the resumed comparison equals an uninterrupted one
    let fresh = dir.path().join("fresh");
    compare(&config, &fresh, &[]);
    assert_eq!(rows(&out), rows(&fresh));
}

#[test]
fn shards_merged_equal_one_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let whole = dir.path().join("whole");
    compare(&config, &whole, &[]);
    let (a, b) = (dir.path().join("shard0"), dir.path().join("shard1"));
    compare(&config, &a, &["--shard", "0/2"]);
    compare(&config, &b, &["--shard", "1/2"]);
    assert_eq!(cell_files(&a).len(), 3);
    assert_eq!(cell_files(&b).len(), 3);
    let merged = dir.path().join("merged");
    let output = synfed()
        .args(["compare", "--merge"])
        .arg(&a)
        .arg(&b)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(rows(&merged), rows(&whole));
    // a shard alone cannot be merged into a full report
    let output = synfed()
        .args(["compare", "--merge"])
        .arg(&a)
        .arg("--out")
        .arg(dir.path().join("half"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not finished"));
}

#[test]
fn the_learning_comparison_tabulates_accuracy_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("learning.toml");
    std::fs::write(
        &path,
        "methods = [\"none\", \"I\"]\n[[models]]\narch = \"mlp\"\nwidth = 16\n[learning]\nfolds = 2\nepochs = 2\nbatch_size = 100\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    compare(&path, &out, &["--kind", "learning"]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| mlp-w16 | none |") && report.contains("| mlp-w16 | I |"),
        "{report}"
    );
    // the learning-rate control (default lr_factors = [0.5]) trains at learning.lr × 0.5
    assert!(report.contains("| mlp-w16 | none lr×0.5 |"), "{report}");
    let control = out.join("learning/mlp-w16/none_lr_0.5/summary.json");
    let control: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(control).unwrap()).unwrap();
    assert_eq!(control["config"]["lr"], 0.005);
    assert_eq!(control["config"]["methods"], "none");
    let rows = rows(&out);
    assert_eq!(rows.as_array().unwrap().len(), 3);
    for r in rows.as_array().unwrap() {
        let acc = r["accuracy_mean"].as_f64().unwrap();
        assert!(acc > 0.1 && acc <= 1.0, "{r}");
        let epoch = r["epoch_mean"].as_f64().unwrap();
        assert!((1.0..=2.0).contains(&epoch), "{r}");
    }
}

const INVERSION: &str = r#"
kind = "inversion"
data = "demo-mnist"
held_out = 8
batches = 2
batch_size = 2
attack_iterations = 40
methods = ["none", "I", "III"]
lr_factors = []
width_matched = false
pretrain_epochs = 2
expose_labels = true
bn_mode = "eval"
[[models]]
arch = "mlp"
width = 16
[learning]
lr = 0.05
batch_size = 50
"#;

/// The paper's Table 3 protocol: untrained cells that only differ by I or the learning rate
/// are not recomputed (bit-identical before training), trained ones are; training lifts the
/// held-out accuracy; a shard's interim report lists what is missing.
#[test]
fn the_inversion_comparison_attacks_held_out_batches_before_and_after_training() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inversion.toml");
    std::fs::write(&path, INVERSION).unwrap();
    let out = dir.path().join("out");
    compare(&path, &out, &[]);
    let cells = out.join("cells/mlp-w16");
    for ran in [
        "none/untrained",
        "III/untrained",
        "none/trained",
        "I/trained",
        "III/trained",
        "none_lr_2/trained",
    ] {
        assert!(cells.join(ran).join("cell.json").is_file(), "{ran}");
    }
    assert!(cells.join("none/trained/trained.safetensors").is_file());
    assert!(!cells.join("I/untrained").exists());
    assert!(!cells.join("none_lr_2/untrained").exists());

    let rows = rows(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 8, "4 variants × 2 states");
    let row = |variant: &str, state: &str| {
        rows.iter()
            .find(|r| r["variant"] == variant && r["state"] == state)
            .unwrap_or_else(|| panic!("{variant} {state}"))
            .clone()
    };
    assert_eq!(
        row("I", "untrained")["psnr"],
        row("none", "untrained")["psnr"]
    );
    assert_eq!(row("I", "untrained")["k"], 2);
    assert_ne!(row("I", "trained")["psnr"], row("none", "trained")["psnr"]);
    assert_ne!(
        row("III", "untrained")["psnr"],
        row("none", "untrained")["psnr"]
    );
    let trained = row("none", "trained")["test_accuracy"].as_f64().unwrap();
    assert!(trained > 0.3, "{trained}");

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in [
        "Protocol of the paper's Table 3",
        "`eval` mode",
        "## Convergence of the attacks",
        "## Utility: test accuracy of the attacked models",
    ] {
        assert!(report.contains(part), "{part}\n{report}");
    }
    // the report's prose is prose: no escaped line breaks from a source string
    assert!(!report.contains("\\n"), "{report}");
    let metrics = cells.join("III/trained/attack/batch-1/metrics.json");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(metrics).unwrap()).unwrap();
    assert_eq!(metrics["mode"], "eval");
    assert_eq!(metrics["args"]["test_indices"], serde_json::json!([2, 3]));
    assert!(metrics["converged"].is_boolean());

    // one shard of two, then an interim report of what it finished
    let shard = dir.path().join("shard");
    compare(&path, &shard, &["--shard", "0/2"]);
    let merged = dir.path().join("merged");
    let output = synfed()
        .args(["compare", "--merge"])
        .arg(&shard)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(!output.status.success(), "missing cells without --partial");
    let output = synfed()
        .args(["compare", "--partial", "--merge"])
        .arg(&shard)
        .arg("--out")
        .arg(&merged)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(report.contains("Interim report: "), "{report}");
}
