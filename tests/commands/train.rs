//! `quantscope train`, run as a user runs it: the real binary on the digits sample model (short runs).

use crate::common::{json, quantscope};

use serde_json::Value;

const DIGITS: &str = "sample_models/digits_mlp.safetensors";

#[test]
fn qat_writes_a_model_that_eval_reads_back_with_the_same_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("int2.safetensors");
    let out_s = out.to_str().unwrap();
    let (ok, stdout, stderr) = quantscope(&[
        "train",
        DIGITS,
        "--qat",
        "int2",
        "--act",
        "uint8",
        "--epochs",
        "3",
        "--max-rows",
        "500",
        "--out",
        out_s,
        "--json",
    ]);
    assert!(ok, "{stderr}");
    // progress on stderr, one line per epoch (and epoch 0)
    assert_eq!(stderr.matches(" epoch ").count(), 4, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["mode"], "int2");
    assert_eq!(v["ptq_spec"], "int2");
    assert_eq!(v["epochs_run"], 3);
    assert_eq!(v["stopped"], false);
    assert_eq!(v["history"].as_array().unwrap().len(), 4);
    let before = v["before"]["held_out_accuracy"].as_f64().unwrap();
    let after = v["after"]["held_out_accuracy"].as_f64().unwrap();
    assert!(after > before + 0.1, "{before} -> {after}");

    // epoch 0 is `eval --spec int2 --act uint8` of the source model
    let ptq = json(&["eval", DIGITS, "--spec", "int2", "--act", "uint8", "--json"]);
    assert_eq!(ptq["quantized"]["accuracy"].as_f64().unwrap(), before);
    // the saved model is a sample model: eval finds the trained accuracy with and without --act
    let e = json(&["eval", out_s, "--act", "uint8", "--json"]);
    assert_eq!(e["quantized"]["accuracy"].as_f64().unwrap(), after);
    assert_eq!(
        e["float"]["accuracy"].as_f64().unwrap(),
        v["weights_only"]["accuracy"].as_f64().unwrap()
    );
    // its weights are already on the int2 grid: quantizing them again changes nothing
    let again = json(&["eval", out_s, "--spec", "int2", "--json"]);
    assert_eq!(
        again["quantized"]["accuracy"].as_f64(),
        again["float"]["accuracy"].as_f64()
    );
    let inspect = json(&["inspect", out_s, "--json"]);
    assert_eq!(inspect["tensors"].as_array().unwrap().len(), 6);
}

#[test]
fn kmeans_fine_tuning_improves_on_plain_kmeans() {
    let v = json(&[
        "train",
        DIGITS,
        "--kmeans-finetune",
        "2",
        "--epochs",
        "3",
        "--max-rows",
        "600",
        "--json",
    ]);
    assert_eq!(v["mode"], "k-means 2-bit");
    let before = v["before"]["held_out_accuracy"].as_f64().unwrap();
    let after = v["after"]["held_out_accuracy"].as_f64().unwrap();
    // the start is exactly `eval --spec kmeans2`
    let ptq = json(&["eval", DIGITS, "--spec", "kmeans2", "--json"]);
    assert_eq!(ptq["quantized"]["accuracy"].as_f64().unwrap(), before);
    assert!(after > before, "{before} -> {after}");
    for l in v["layers"].as_array().unwrap() {
        assert_eq!(l["codebook"].as_array().unwrap().len(), 4);
        assert!(l["distinct_values"].as_u64().unwrap() <= 4);
    }
}

#[test]
fn binary_and_ternary_flags_are_their_specs() {
    let (ok, stdout, stderr) = quantscope(&[
        "train",
        DIGITS,
        "--ternary",
        "ttq",
        "--epochs",
        "1",
        "--max-rows",
        "200",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ternary TTQ"), "{stdout}");
    assert!(stdout.contains("W^p"), "{stdout}");
    let a = json(&[
        "train",
        DIGITS,
        "--binary",
        "--epochs",
        "1",
        "--max-rows",
        "200",
        "--json",
    ]);
    let b = json(&[
        "train",
        DIGITS,
        "--qat",
        "binary",
        "--epochs",
        "1",
        "--max-rows",
        "200",
        "--json",
    ]);
    assert_eq!(a["mode"], "binary (XNOR)");
    assert_eq!(a["after"], b["after"], "--binary is --qat binary");
    let t = json(&[
        "train",
        DIGITS,
        "--ternary",
        "twn",
        "--epochs",
        "1",
        "--max-rows",
        "200",
        "--json",
    ]);
    assert_eq!(t["mode"], "ternary TWN");
}

#[test]
fn compare_prints_one_row_per_method() {
    let v = json(&[
        "train",
        DIGITS,
        "--compare",
        "--epochs",
        "1",
        "--max-rows",
        "150",
        "--json",
    ]);
    let rows = v["rows"].as_array().unwrap();
    let methods: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        [
            "int8",
            "int4",
            "int3",
            "int2",
            "k-means 3-bit",
            "k-means 2-bit",
            "ternary TWN",
            "ternary TTQ",
            "binary (XNOR)"
        ]
    );
    for r in rows {
        assert!(r["ptq_accuracy"].as_f64().is_some() && r["trained_accuracy"].as_f64().is_some());
    }
}

#[test]
fn bad_input_is_a_one_line_error() {
    for (args, want) in [
        (vec!["train", DIGITS], "required"),
        (vec!["train", DIGITS, "--qat", "int9"], "int9"),
        (vec!["train", DIGITS, "--qat", "none"], "QAT needs"),
        (vec!["train", DIGITS, "--kmeans-finetune", "9"], "1..8"),
        (vec!["train", DIGITS, "--ternary", "xyz"], "twn or ttq"),
        (
            vec!["train", DIGITS, "--qat", "int4", "--act", "nvfp4"],
            "activations",
        ),
        (
            vec!["train", DIGITS, "--qat", "int4", "--batch", "0"],
            "batch",
        ),
        (
            vec!["train", DIGITS, "--qat", "int4", "--optimizer", "lbfgs"],
            "optimizer",
        ),
        (
            vec!["train", DIGITS, "--qat", "int4", "--out", DIGITS],
            "never overwritten",
        ),
        (
            vec!["train", "/nonexistent.safetensors", "--qat", "int4"],
            "nonexistent",
        ),
    ] {
        let (ok, _, stderr) = quantscope(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // a model without a network or data to train on
    let (ok, _, stderr) = quantscope(&[
        "train",
        "tests/data/inspect_ref.safetensors",
        "--qat",
        "int4",
    ]);
    assert!(!ok && stderr.contains("not a runnable"), "{stderr}");
}
