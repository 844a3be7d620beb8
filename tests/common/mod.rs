//! What the binary's end-to-end tests share: running the built `synfed`, requiring that it
//! succeeded (or failed with a message and no panic), and reading what it wrote.
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the built `synfed` with `args`, logging warnings only.
pub fn synfed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synfed"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the synfed binary runs")
}

/// Runs `synfed` with `args` and fails the test, showing the arguments and stderr, unless it
/// succeeded.
pub fn synfed_ok(args: &[&str]) -> Output {
    let output = synfed(args);
    assert!(
        output.status.success(),
        "synfed {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `synfed` with `args`, requires that it failed with an error rather than a panic, and
/// returns its stderr.
pub fn synfed_err(args: &[&str]) -> String {
    let output = synfed(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "synfed {args:?} succeeded");
    assert!(!stderr.contains("panicked"), "synfed {args:?}: {stderr}");
    stderr
}

/// The JSON file `dir/name`.
pub fn read_json(dir: &Path, name: &str) -> serde_json::Value {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fails the test unless `path` is a PNG file.
pub fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
}
