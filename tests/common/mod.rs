//! Running the real binary, shared by the CLI test files.

#![allow(dead_code)]

#[cfg(feature = "gui")]
pub mod gui;

use serde_json::Value;
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
