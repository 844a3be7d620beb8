//! End-to-end tests of `synfed simulate`: the built binary runs a small federation over
//! loopback gRPC, attacks the tap's captures and writes the run folder and its report; a bad
//! run configuration is refused with a message naming the field.

mod common;

use common::{assert_png, synfed_err, synfed_ok};

#[test]
fn simulate_writes_the_run_folder_captures_attacks_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sim");
    synfed_ok(&[
        "simulate",
        "--out",
        out.to_str().unwrap(),
        "--rounds",
        "2",
        "--clients",
        "2",
        "--attack-iterations",
        "20",
        "--device",
        "cpu",
    ]);

    let rounds = std::fs::read_to_string(out.join("rounds.csv")).unwrap();
    let rows: Vec<&str> = rounds.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{rounds}");
    assert!(out.join("config.toml").exists());

    // the tap: client-0 in the first and the last round, each capture with its escrow
    for name in ["round-0001-client-0", "round-0002-client-0"] {
        let captures = out.join("captures");
        assert!(
            captures
                .join(format!("{name}.capture.safetensors"))
                .exists(),
            "{name}"
        );
        assert!(
            captures.join(format!("{name}.escrow.safetensors")).exists(),
            "{name}"
        );
        let attack = out.join("attack").join(name);
        assert_png(&attack.join("grid.png"));
        let metrics: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(attack.join("metrics.json")).unwrap())
                .unwrap();
        let psnr = metrics["psnr"].as_f64().expect("psnr is a number");
        assert!(psnr.is_finite(), "{psnr}");
        assert_eq!(metrics["iterations"], 20);
    }
    let captured: Vec<_> = std::fs::read_dir(out.join("captures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(captured.len(), 4, "{captured:?}");

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("](attack/round-0001-client-0/grid.png)"),
        "{report}"
    );
    assert!(
        report.contains("](attack/round-0002-client-0/grid.png)"),
        "{report}"
    );
    assert!(report.contains("| 2 | 2 |"), "{report}");
}

#[test]
fn simulate_refuses_a_bad_configuration_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (text, field) in [
        ("[training]\nlr = -1.0\n", "training.lr"),
        ("roundz = 3\n", "roundz"),
    ] {
        let config = tmp.path().join("run.toml");
        std::fs::write(&config, text).unwrap();
        let out = tmp.path().join("never");
        let stderr = synfed_err(&[
            "simulate",
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(stderr.contains(field), "{field}: {stderr}");
        assert!(stderr.contains("run.toml"), "{stderr}");
        assert!(!out.exists(), "a refused run must not create its folder");
    }
}
