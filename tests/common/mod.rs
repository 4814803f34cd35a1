//! Test support shared by every test binary and the benchmarks: running the real binary, the paths of
//! the bundled data, synthetic weights ([`synthetic`], which the benchmarks include with `#[path]`) and
//! the window in egui_kittest ([`gui`]).

#![allow(dead_code)] // each binary uses part of it

#[cfg(feature = "gui")]
pub mod gui;
pub mod synthetic;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (success, stdout, stderr) of `quantscope ARGS`.
pub fn quantscope(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quantscope"))
        .args(args)
        .output()
        .expect("run quantscope");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The JSON `quantscope ARGS` prints; fails the test when the command fails.
pub fn json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = quantscope(args);
    assert!(ok, "{args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

/// The error `quantscope ARGS` fails with; fails the test unless it fails and the error says `needle`.
pub fn fails_with(args: &[&str], needle: &str) -> String {
    let (ok, _, stderr) = quantscope(args);
    assert!(!ok, "{args:?} should fail");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    stderr
}

/// [`fails_with`], and the error is one line, not a panic.
pub fn fails_in_one_line(args: &[&str], needle: &str) {
    let stderr = fails_with(args, needle);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"));
}

/// `tests/data/NAME`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `tests/data/lm/NAME`: the tiny transformers.
pub fn lm(name: &str) -> PathBuf {
    data("lm").join(name)
}

/// `sample_models/NAME`.
pub fn sample_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample_models")
        .join(name)
}
