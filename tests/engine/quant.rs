//! Quantizers against independent oracles: the DESIGN formulas evaluated by numpy on real MiniLM weights
//! (tests/data/quant_ref.*, written by tools/quant_reference.py), ml_dtypes' OCP MX blocks
//! (tests/data/format_golden.json), scikit-learn's KMeans, and a numpy TensorRT-entropy reference.

use quantscope::calib::kl_threshold;
use quantscope::model::Model;
use quantscope::quant::{kmeans_1d, quantize, Spec};
use serde_json::Value;
use std::path::Path;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

struct Ref {
    model: Model,
    json: Value,
}

impl Ref {
    fn load() -> Ref {
        Ref {
            model: Model::open(&data("quant_ref.safetensors")).unwrap(),
            json: serde_json::from_str(&std::fs::read_to_string(data("quant_ref.json")).unwrap())
                .unwrap(),
        }
    }

    fn f32s(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let t = &self.model.tensors[self
            .model
            .find(name)
            .unwrap_or_else(|| panic!("{name} missing"))];
        (self.model.read_f32(t).unwrap(), t.shape.clone())
    }
}

#[test]
fn int_quantizers_match_the_numpy_formulas_bit_for_bit() {
    let r = Ref::load();
    let mut checked_elements = 0;
    for case in r.json["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (x, shape) = r.f32s(case["input"].as_str().unwrap());
        let q = quantize(
            &x,
            &shape,
            &Spec::parse(case["spec"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        let names = &case["tensor_names"];
        let (scales, _) = r.f32s(names["scales"].as_str().unwrap());
        assert_eq!(q.scales.len(), scales.len(), "{name}: number of groups");
        for (g, (a, b)) in q.scales.iter().zip(&scales).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{name}: scale of group {g}: {a} vs {b}"
            );
        }
        if let Some(z) = names.get("zeros").and_then(|v| v.as_str()) {
            let (zeros, _) = r.f32s(z);
            let ours: Vec<f32> = q.zero_points.iter().map(|&v| v as f32).collect();
            assert_eq!(ours, zeros, "{name}: zero points");
        }
        if let Some(e) = names["expected"].as_str() {
            let (want, _) = r.f32s(e);
            for (i, (a, b)) in q.dequant.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{name}: element {i}: {a} vs {b}");
            }
            checked_elements += want.len();
        }
        if let Some(c) = names["codes"].as_str() {
            let (want, _) = r.f32s(c);
            let ours: Vec<f32> = q.codes.iter().map(|&v| v as f32).collect();
            assert_eq!(ours, want, "{name}: codes");
        }
        let m = &q.metrics;
        for (field, ours) in [
            ("mse", m.mse),
            ("sqnr_db", m.sqnr_db),
            ("cosine", m.cosine),
            ("max_abs_err", m.max_abs_err),
        ] {
            let want = case[field].as_f64().unwrap();
            assert!(
                (ours - want).abs() <= 1e-9 * want.abs().max(1e-12),
                "{name} {field}: {ours} vs {want}"
            );
        }
    }
    assert!(checked_elements > 500_000, "{checked_elements}");
}

#[test]
fn sqnr_per_bit_matches_numpy() {
    let r = Ref::load();
    let (x, shape) = r.f32s("w_gauss");
    for row in r.json["sqnr_per_bit"].as_array().unwrap() {
        let b = row["bits"].as_u64().unwrap();
        let q = quantize(&x, &shape, &Spec::parse(&format!("int{b}:tensor")).unwrap()).unwrap();
        let want = row["sqnr_db"].as_f64().unwrap();
        assert!(
            (q.metrics.sqnr_db - want).abs() < 1e-9,
            "int{b}: {} vs {want}",
            q.metrics.sqnr_db
        );
    }
}

#[test]
fn mx_blocks_match_ml_dtypes() {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(data("format_golden.json")).unwrap())
            .unwrap();
    let mut blocks = 0;
    for (golden, spec) in [
        ("float8_e4m3fn", "mxfp8_e4m3"),
        ("float8_e5m2", "mxfp8_e5m2"),
        ("float6_e3m2fn", "mxfp6_e3m2"),
        ("float6_e2m3fn", "mxfp6_e2m3"),
        ("float4_e2m1fn", "mxfp4"),
    ] {
        let bits = quantscope::formats::lookup(golden).unwrap().format.bits();
        let mask = (1u32 << bits) - 1;
        for case in g["mx_reference"]["formats"][golden].as_array().unwrap() {
            let hex = |v: &Value| {
                u32::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
            };
            let x: Vec<f32> = case["inputs_f32_bits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| f32::from_bits(hex(v)))
                .collect();
            let q = quantize(&x, &[1, 32], &Spec::parse(spec).unwrap()).unwrap();
            let label = case["label"].as_str().unwrap();
            let scale_code = case["scale_code"].as_i64().unwrap() as i32;
            let want_scale = quantscope::formats::lookup("e8m0")
                .unwrap()
                .format
                .decode(scale_code as u64) as f32;
            assert_eq!(q.scales, vec![want_scale], "{spec} {label}: scale");
            let codes: Vec<u32> = case["elem_codes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let ours: Vec<u32> = q.codes.iter().map(|&c| (c as u16 as u32) & mask).collect();
            assert_eq!(ours, codes, "{spec} {label}: element codes");
            for (i, v) in case["dequant_f32_bits"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
            {
                assert_eq!(
                    q.dequant[i].to_bits(),
                    hex(v),
                    "{spec} {label}: element {i}"
                );
            }
            blocks += 1;
        }
    }
    assert_eq!(blocks, 80);
}

#[test]
fn kmeans_is_no_worse_than_scikit_learn() {
    let r = Ref::load();
    for row in r.json["kmeans"].as_array().unwrap() {
        let (x, _) = r.f32s(row["input"].as_str().unwrap());
        let k = row["k"].as_u64().unwrap() as usize;
        let (c, mse) = kmeans_1d(&x, k);
        let sk = row["sklearn_mse"].as_f64().unwrap();
        assert_eq!(c.len(), k);
        assert!(
            mse <= sk * (1.0 + 1e-6),
            "{} k={k}: ours {mse:e}, sklearn {sk:e}",
            row["input"]
        );
        eprintln!(
            "{} k={k}: ours {mse:.6e}, sklearn {sk:.6e} ({:+.3} %)",
            row["input"],
            (mse / sk - 1.0) * 100.0
        );
    }
}

#[test]
fn kl_threshold_matches_the_reference_on_the_same_histogram() {
    let r = Ref::load();
    for row in r.json["kl"].as_array().unwrap() {
        let input = row["input"].as_str().unwrap();
        let t = &r.model.tensors[r.model.find(&format!("kl_hist.{input}")).unwrap()];
        let hist: Vec<u64> = r
            .model
            .read_f32(t)
            .unwrap()
            .iter()
            .map(|&v| v as u64)
            .collect();
        let amax = row["amax"].as_f64().unwrap();
        let (thr, i) = kl_threshold(&hist, amax);
        assert_eq!(
            i as u64,
            row["chosen_i"].as_u64().unwrap(),
            "{input}: bins kept"
        );
        let want = row["threshold"].as_f64().unwrap();
        assert!(
            (thr as f64 - want).abs() < 1e-6 * want,
            "{input}: {thr} vs {want}"
        );
        // and from the raw values: the same histogram, so the same threshold
        let (x, _) = r.f32s(input);
        let (t2, i2) = quantscope::calib::kl_threshold_of(&x);
        assert_eq!(i2, i, "{input}: histogram built by the engine");
        assert_eq!(t2, thr);
    }
}
