//! Calibration from the command line: activation ranges, output-space error, packs, and W8A8 eval.

use crate::common::{json, quantscope};

const CNN: &str = "sample_models/mnist_cnn.safetensors";
const MLP: &str = "sample_models/digits_mlp.safetensors";

#[test]
fn calibrate_lists_every_method_per_layer_and_the_output_error() {
    let v = json(&[
        "calibrate",
        CNN,
        "--spec",
        "int4",
        "--examples",
        "256",
        "--json",
    ]);
    let layers = v["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["conv1", "conv2", "fc1", "fc2"]);
    assert_eq!(v["examples"], 256);
    for l in layers {
        let methods: Vec<&str> = l["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["minmax", "p99.99", "mse", "kl", "ema"]);
        let max = l["max"].as_f64().unwrap();
        for r in l["ranges"].as_array().unwrap() {
            let hi = r["hi"].as_f64().unwrap();
            assert!(hi > 0.0 && hi <= max + 1e-6, "{l}");
        }
        // an output-space error is computed (and is finite: int4 weights change the output)
        assert!(l["output_sqnr_db"].as_f64().unwrap() > 5.0, "{l}");
    }
    // the first layer sees the image pixels in [0, 1]
    assert_eq!(layers[0]["min"], 0.0);
    assert_eq!(layers[0]["max"], 1.0);
}

#[test]
fn a_saved_pack_gives_the_same_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("cal.safetensors");
    let p = pack.to_str().unwrap();
    let a = json(&[
        "calibrate",
        MLP,
        "--method",
        "mse",
        "--examples",
        "128",
        "--save-pack",
        p,
        "--json",
    ]);
    let b = json(&["calibrate", MLP, "--method", "mse", "--data", p, "--json"]);
    assert_eq!(a["layers"], b["layers"]);
    // a model the engine cannot run needs a pack, and says so
    let (ok, _, err) = quantscope(&["calibrate", p]);
    assert!(!ok && err.contains("capture_activations.py"), "{err}");
    let (ok, _, err) = quantscope(&["calibrate", MLP, "--method", "median"]);
    assert!(!ok && err.contains("unknown range method"), "{err}");
    let (ok, _, err) = quantscope(&["calibrate", MLP, "--act", "nvfp4"]);
    assert!(
        !ok && err.contains("activations are quantized with"),
        "{err}"
    );
}

#[test]
fn w8a8_keeps_accuracy_and_a2_loses_it() {
    let acc = |args: &[&str]| {
        let mut all = vec!["eval", CNN, "--json"];
        all.extend_from_slice(args);
        let v = json(&all);
        (
            v["float"]["accuracy"].as_f64().unwrap(),
            v["quantized"]["accuracy"].as_f64().unwrap(),
        )
    };
    let (f, w8a8) = acc(&["--spec", "int8", "--act", "uint8"]);
    assert!(f >= 0.97, "the CNN reaches 97 %: {f}");
    assert!((f - w8a8).abs() <= 0.005, "W8A8 {w8a8} vs float {f}");
    let (_, w8a2) = acc(&["--spec", "int8", "--act", "uint2"]);
    assert!(w8a2 < f - 0.05, "A2 costs accuracy: {w8a2}");
}

#[test]
fn adaround_beats_nearest_at_3_bits_on_held_out_data() {
    let acc = |spec: &str| {
        let v = json(&["eval", CNN, "--spec", spec, "--json"]);
        v["quantized"]["accuracy"].as_f64().unwrap()
    };
    let (near, ada) = (acc("int3"), acc("int3:round=adaround"));
    assert!(ada > near + 0.05, "AdaRound {ada} vs nearest {near}");
    // round=adaround needs activations: quantize (weights only) says so
    let (ok, _, err) = quantscope(&["quantize", CNN, "--spec", "int4:round=adaround"]);
    assert!(!ok && err.contains("calibration inputs"), "{err}");
    let (ok, _, err) = quantscope(&["calibrate", CNN, "--spec", "nvfp4:round=adaround"]);
    assert!(!ok && err.contains("intN and uintN"), "{err}");
    // calibrate reports both roundings per layer
    let v = json(&[
        "calibrate",
        MLP,
        "--spec",
        "int3:round=adaround",
        "--examples",
        "256",
        "--json",
    ]);
    for l in v["layers"].as_array().unwrap() {
        let (a, n) = (
            l["output_sqnr_db"].as_f64().unwrap(),
            l["output_sqnr_db_nearest"].as_f64().unwrap(),
        );
        assert!(a > n, "{l}");
    }
}
