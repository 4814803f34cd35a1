//! `quantscope lab matmul`, run as a user runs it: the real binary on the bundled sample models. The
//! terms it prints are checked against values recomputed here from the model file and the calibration
//! rows (independently of the engine's integer code).

use crate::common::{fails_in_one_line, json, quantscope, sample_model};

use quantscope::activations::{capture, pack};
use quantscope::model::Model;
use serde_json::Value;

fn term(v: &Value, name: &str) -> f64 {
    v["terms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no term {name}"))["value"]
        .as_f64()
        .unwrap()
}

fn when(v: &Value, name: &str) -> String {
    v["terms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()["when"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_terms_of_a_cnn_layer_add_up_and_match_an_independent_recomputation() {
    let path = sample_model("mnist_cnn.safetensors");
    let p = path.to_str().unwrap();
    let v = json(&[
        "lab", "matmul", p, "--layer", "fc1", "--rows", "128", "--relu", "--pick", "5,7", "--json",
    ]);
    assert_eq!(v["layer"], "fc1");
    assert_eq!((v["k"].as_u64(), v["out"].as_u64()), (Some(784), Some(64)));
    assert_eq!(v["rows"], 128);
    assert_eq!(v["pick"], serde_json::json!([5, 7]));
    assert_eq!(v["model_applies_relu_after"], true);
    // which terms are offline and which per input
    for t in [
        "a_W(i)",
        "q_b(i)",
        "-Z_X a_W(i)",
        "K Z_W Z_X",
        "Q_bias(i)",
        "M(i)",
        "M0 (Q31)",
        "n",
    ] {
        assert_eq!(when(&v, t), "offline", "{t}");
    }
    for t in [
        "sum q_W q_X",
        "a_X(r)",
        "-Z_W a_X(r)",
        "acc",
        "SRDHM(acc, M0)",
        "RDBP(., n)",
        "q_Y",
    ] {
        assert_eq!(when(&v, t), "per_input", "{t}");
    }
    // the accumulator is the sum of its terms
    let acc = term(&v, "acc");
    assert_eq!(
        acc,
        term(&v, "sum q_W q_X") + term(&v, "Q_bias(i)") + term(&v, "-Z_W a_X(r)")
    );
    assert_eq!(
        term(&v, "Q_bias(i)"),
        term(&v, "q_b(i)") + term(&v, "-Z_X a_W(i)") + term(&v, "K Z_W Z_X")
    );
    // symmetric weights: no weight zero point terms
    assert_eq!(term(&v, "K Z_W Z_X"), 0.0);
    assert_eq!(term(&v, "-Z_W a_X(r)"), 0.0);
    // M = 2^-n M0 with M0 in [0.5, 1) as a Q31 integer
    let (m, m0, n) = (term(&v, "M(i)"), term(&v, "M0 (Q31)"), term(&v, "n"));
    assert!((2f64.powi(30)..2f64.powi(31)).contains(&m0), "{m0}");
    assert!((m0 / 2f64.powi(31) * 2f64.powi(-(n as i32)) - m).abs() <= m * 2f64.powi(-31));
    // requantization: round(acc·M0/2^31) then round(·/2^n), both within ½ of the real value
    let high = term(&v, "SRDHM(acc, M0)");
    assert!((high - acc * m0 / 2f64.powi(31)).abs() <= 0.5);
    let shifted = term(&v, "RDBP(., n)");
    assert!((shifted - high / 2f64.powi(n as i32)).abs() <= 0.5);
    let zy = v["output"]["zero"].as_f64().unwrap();
    let q = term(&v, "q_Y");
    assert_eq!(
        q,
        (zy + shifted).clamp(zy, 255.0),
        "fused ReLU: the clamp starts at Z_Y"
    );
    assert!((q - term(&v, "q_Y (f64 reference)")).abs() <= 1.0);

    // recompute from the file and the calibration rows, without the engine's integer code:
    // weights int8 per channel: S = amax/127, q = round_ties_even(w/S)
    let m_ = Model::open(&path).unwrap();
    let w = m_
        .read_f32(&m_.tensors[m_.find("fc1.weight").unwrap()])
        .unwrap();
    let b = m_
        .read_f32(&m_.tensors[m_.find("fc1.bias").unwrap()])
        .unwrap();
    let (k, i) = (784, 7);
    let row_w = &w[i * k..(i + 1) * k];
    let sw = row_w.iter().fold(0f32, |a, &x| a.max(x.abs())) / 127.0;
    let qw: Vec<i64> = row_w
        .iter()
        .map(|&x| (x / sw).round_ties_even() as i64)
        .collect();
    assert_eq!(term(&v, "a_W(i)"), qw.iter().sum::<i64>() as f64);
    assert!((v["w_scales"][i].as_f64().unwrap() - sw as f64).abs() <= 1e-12);
    // the row the CLI ran as row 5 of 128: calibration row 5·available/128
    let cal = capture(&m_, 512, 32).unwrap();
    let l = cal.layer("fc1").unwrap();
    let r = 5 * l.row_count() / 128;
    let x = &l.rows[r * k..(r + 1) * k];
    let (sx, zx) = (
        v["input"]["scale"].as_f64().unwrap() as f32,
        v["input"]["zero"].as_i64().unwrap(),
    );
    let qx: Vec<i64> = x
        .iter()
        .map(|&v| ((v / sx).round_ties_even() as i64 + zx).clamp(0, 255))
        .collect();
    let core: i64 = qw.iter().zip(&qx).map(|(a, b)| a * b).sum();
    assert_eq!(term(&v, "sum q_W q_X"), core as f64);
    assert_eq!(term(&v, "a_X(r)"), qx.iter().sum::<i64>() as f64);
    let qb = (b[i] as f64 / (sw as f64 * sx as f64)).round_ties_even();
    assert_eq!(term(&v, "q_b(i)"), qb);
    let y: f64 = x
        .iter()
        .zip(row_w)
        .map(|(&a, &c)| a as f64 * c as f64)
        .sum::<f64>()
        + b[i] as f64;
    assert!((term(&v, "relu(y) float") - y.max(0.0)).abs() < 1e-4);

    // against the float layer: within the derived bound, a few output steps at most
    assert_eq!(v["bound"]["violations"], 0);
    assert!(v["bound"]["worst_ratio"].as_f64().unwrap() <= 1.0);
    let max_lsb = v["vs_float"]["max_lsb"].as_f64().unwrap();
    assert!(max_lsb <= v["bound"]["max_lsb"].as_f64().unwrap());
    assert!(max_lsb < 3.0, "{max_lsb}");
    assert!(v["vs_float"]["sqnr_db"].as_f64().unwrap() > 30.0);
    assert!(v["max_code_diff"].as_i64().unwrap() <= 1);
    assert_eq!(v["multipliers"].as_array().unwrap().len(), 64);
    assert!(v.get("scatter").is_none(), "scatter only when asked");
}

#[test]
fn asymmetric_weights_have_every_zero_point_term_and_text_shows_them() {
    let path = sample_model("digits_mlp.safetensors");
    let p = path.to_str().unwrap();
    let v = json(&[
        "lab",
        "matmul",
        p,
        "--layer",
        "fc3",
        "--weights",
        "uint8:tensor",
        "--output",
        "int8",
        "--rows",
        "64",
        "--scatter",
        "50",
        "--json",
    ]);
    assert_eq!(v["per_channel"], false);
    // the inputs of fc3 come out of a ReLU: Z_X = 0, so K·Z_W·Z_X vanishes but −Z_W·a_X does not
    let (zx, zw) = (
        v["input"]["zero"].as_f64().unwrap(),
        v["w_zeros"][0].as_f64().unwrap(),
    );
    assert_eq!(zx, 0.0);
    assert!(
        zw > 0.0,
        "asymmetric weights with negative values have Z_W > 0"
    );
    assert_eq!(term(&v, "K Z_W Z_X"), 64.0 * zw * zx);
    assert_eq!(term(&v, "-Z_W a_X(r)"), -zw * term(&v, "a_X(r)"));
    assert_ne!(term(&v, "-Z_W a_X(r)"), 0.0);
    assert_eq!(v["output"]["zero"], 0, "int8 outputs are symmetric");
    // every 12th of the 640 outputs: 54 pairs
    assert_eq!(
        v["scatter"].as_array().unwrap().len(),
        640usize.div_ceil(640 / 50)
    );
    assert_eq!(v["bound"]["violations"], 0);
    let (ok, text, err) = quantscope(&["lab", "matmul", p, "--layer", "fc1", "--rows", "32"]);
    assert!(ok, "{err}");
    for needle in [
        "M0 (Q31)",
        "offline",
        "per input",
        "SRDHM",
        "SQNR",
        "Derived bound",
        "--relu fuses it",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn a_calibration_pack_feeds_the_lab() {
    let path = sample_model("mnist_cnn.safetensors");
    let m = Model::open(&path).unwrap();
    let cal = capture(&m, 64, 32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pk = dir.path().join("cal.safetensors");
    pack::write(&cal, &pk).unwrap();
    let v = json(&[
        "lab",
        "matmul",
        path.to_str().unwrap(),
        "--layer",
        "conv2.weight",
        "--data",
        pk.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["layer"], "conv2");
    assert_eq!(v["k"], 72);
    assert_eq!(
        v["rows_available"].as_u64(),
        Some(cal.layer("conv2").unwrap().row_count() as u64)
    );
    assert_eq!(v["bound"]["violations"], 0);
}

#[test]
fn bad_input_is_one_line_not_a_panic() {
    let path = sample_model("mnist_cnn.safetensors");
    let p = path.to_str().unwrap();
    fails_in_one_line(
        &["lab", "matmul", p, "--layer", "fc9"],
        "layers: conv1, conv2, fc1, fc2",
    );
    fails_in_one_line(
        &[
            "lab",
            "matmul",
            p,
            "--layer",
            "fc1",
            "--weights",
            "fp8_e4m3",
        ],
        "intN or uintN",
    );
    fails_in_one_line(
        &["lab", "matmul", p, "--layer", "fc1", "--output", "int4"],
        "uint8 or int8",
    );
    fails_in_one_line(
        &["lab", "matmul", p, "--layer", "fc1", "--pick", "3"],
        "ROW,OUT",
    );
    fails_in_one_line(
        &[
            "lab", "matmul", p, "--layer", "fc1", "--rows", "8", "--pick", "9,0",
        ],
        "outside",
    );
    fails_in_one_line(
        &["lab", "matmul", p, "--layer", "fc1", "--range", "zz"],
        "unknown range method",
    );
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.safetensors");
    std::fs::copy(sample_model("digits_mlp.safetensors"), &plain).unwrap();
    fails_in_one_line(
        &[
            "lab",
            "matmul",
            p,
            "--layer",
            "fc1",
            "--data",
            plain.to_str().unwrap(),
        ],
        "not a calibration pack",
    );
}
