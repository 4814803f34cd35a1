//! The mixed-precision commands (sensitivity, search, export, apply), run as a user runs them: the real
//! binary on the bundled sample model.

use crate::common::{fails_in_one_line, json, quantscope, sample_model};

use quantscope::model::Model;
use serde_json::Value;
use std::path::PathBuf;

fn sample() -> PathBuf {
    sample_model("digits_mlp.safetensors")
}

const CANDS: &str = "int8,int4,int2:g16,kmeans2";

#[test]
fn sensitivity_lists_every_layer_and_candidate_in_every_measure() {
    let s = sample();
    let v = json(&[
        "sensitivity",
        s.to_str().unwrap(),
        "--candidates",
        CANDS,
        "--calib-rows",
        "200",
        "--json",
    ]);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(v["candidates"].as_array().unwrap().len(), 4);
    assert_eq!(
        v["measures"],
        serde_json::json!(["weight_sqnr", "imatrix", "output_sqnr", "end_to_end"])
    );
    assert_eq!(v["baseline"]["examples"], 200);
    for l in layers {
        let cells = l["cells"].as_array().unwrap();
        let sq = |i: usize| cells[i]["weight_sqnr_db"].as_f64().unwrap();
        let kl = |i: usize| cells[i]["end_to_end"]["kl"].as_f64().unwrap();
        assert!(sq(0) > sq(1) && sq(1) > sq(2), "{l}");
        assert!(kl(0) < kl(1), "{l}");
        // output SQNR on the model's own calibration activations: int8 above int4 above int2:g16
        let out = |i: usize| cells[i]["output_sqnr_db"].as_f64().unwrap();
        assert!(out(0) > out(1) && out(1) > out(2), "{l}");
    }
    fails_in_one_line(
        &["sensitivity", s.to_str().unwrap(), "--candidates", "int9"],
        "int9",
    );
    fails_in_one_line(
        &[
            "sensitivity",
            s.to_str().unwrap(),
            "--candidates",
            "int8",
            "--layers",
            "nope",
        ],
        "no layer",
    );
}

#[test]
fn search_keeps_the_budget_beats_or_ties_greedy_and_writes_a_loadable_plan() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    let v = json(&[
        "search",
        s.to_str().unwrap(),
        "--candidates",
        CANDS,
        "--budget-bits",
        "3.5",
        "--calib-rows",
        "200",
        "--out",
        plan.to_str().unwrap(),
        "--json",
    ]);
    let bpw = v["plan"]["bits_per_weight"].as_f64().unwrap();
    assert!(bpw <= 3.5 && bpw > 2.0, "{bpw}");
    assert_eq!(v["measure"], "end_to_end");
    assert_eq!(v["solver"]["exact"], true);
    let (dp, greedy) = (
        v["plan"]["cost"].as_f64().unwrap(),
        v["greedy"]["cost"].as_f64().unwrap(),
    );
    assert!(greedy >= dp * (1.0 - 1e-12), "{greedy} < {dp}");
    for l in v["layers"].as_array().unwrap() {
        assert!(!l["why"].as_str().unwrap().is_empty(), "{l}");
    }
    // the front is sorted, smaller is worse
    let front = v["front"].as_array().unwrap();
    assert!(front.len() >= 3);
    for w in front.windows(2) {
        assert!(w[0]["bits_per_weight"].as_f64() < w[1]["bits_per_weight"].as_f64());
        assert!(w[0]["cost"].as_f64() > w[1]["cost"].as_f64());
    }
    // the written plan is a valid plan for the model: eval reads it and gets what search reported
    let e = json(&[
        "eval",
        s.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        e["quantized"]["accuracy"],
        v["held_out"]["plan"]["accuracy"]
    );
    let text = std::fs::read_to_string(&plan).unwrap();
    let p: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(p["budget"]["bits_per_weight"], 3.5);
    assert_eq!(p["layers"].as_object().unwrap().len(), 3);

    // pins and exclusions
    let v = json(&[
        "search",
        s.to_str().unwrap(),
        "--candidates",
        CANDS,
        "--budget-bits",
        "6",
        "--no-end-to-end",
        "--pin",
        "fc3\\.weight=int2:g16",
        "--exclude",
        "fc1\\..*",
        "--json",
    ]);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers[0]["excluded"], true);
    assert_eq!(layers[2]["pinned"], true);
    assert!(layers[2]["spec"].as_str().unwrap().starts_with("int2:g16"));
    assert_eq!(v["measure"], "weight_sqnr");

    fails_in_one_line(
        &[
            "search",
            s.to_str().unwrap(),
            "--candidates",
            CANDS,
            "--budget-bits",
            "0.5",
        ],
        "nothing fits",
    );
    fails_in_one_line(
        &[
            "search",
            s.to_str().unwrap(),
            "--candidates",
            CANDS,
            "--budget-bits",
            "4",
            "--pin",
            "fc3",
        ],
        "REGEX=SPEC",
    );
    fails_in_one_line(
        &[
            "search",
            s.to_str().unwrap(),
            "--candidates",
            CANDS,
            "--budget-bits",
            "4",
            "--pin",
            "zz=int8",
        ],
        "matches no",
    );
    fails_in_one_line(
        &[
            "search",
            s.to_str().unwrap(),
            "--candidates",
            CANDS,
            "--budget-bits",
            "4",
            "--no-end-to-end",
            "--measure",
            "output_sqnr",
        ],
        "not available",
    );
}

#[test]
fn export_writes_configs_and_says_what_does_not_fit() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    json(&[
        "search",
        s.to_str().unwrap(),
        "--candidates",
        "int8,int4:g16,kmeans2",
        "--budget-bits",
        "4",
        "--no-end-to-end",
        "--out",
        plan.to_str().unwrap(),
        "--json",
    ]);
    // kmeans2 and groups of 16 break vLLM's rules: refused (one line per rule), unless --lenient
    let (ok, _, stderr) = quantscope(&[
        "export",
        plan.to_str().unwrap(),
        "--to",
        "compressed-tensors",
    ]);
    assert!(!ok && stderr.contains("2 rule(s) of vllm"), "{stderr}");
    assert!(
        stderr.contains("kmeans2") && stderr.contains("(fc2.weight)"),
        "{stderr}"
    );
    let v = json(&[
        "export",
        plan.to_str().unwrap(),
        "--to",
        "compressed-tensors",
        "--lenient",
        "--json",
    ]);
    assert!(!v["broken_rules"].as_array().unwrap().is_empty());
    let cfg = &v["config"];
    assert_eq!(cfg["quant_method"], "compressed-tensors");
    let targets: Vec<String> = cfg["config_groups"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|g| {
            g["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(targets.len(), 3, "{cfg}");
    assert!(targets.contains(&"fc1".to_string()));
    // stdout holds only the config; notes go to stderr
    let (ok, stdout, stderr) = quantscope(&[
        "export",
        plan.to_str().unwrap(),
        "--to",
        "compressed-tensors",
        "--lenient",
    ]);
    assert!(ok);
    assert!(serde_json::from_str::<Value>(&stdout).is_ok());
    assert!(
        stderr.contains("tensors for compressed-tensors"),
        "{stderr}"
    );
    // the sample MLP has no GGUF names
    fails_in_one_line(
        &["export", plan.to_str().unwrap(), "--to", "llama.cpp"],
        "no GGUF name",
    );
    fails_in_one_line(
        &["export", plan.to_str().unwrap(), "--to", "onnx"],
        "unknown export format",
    );
    let other = dir.path().join("bad.json");
    std::fs::write(
        &other,
        r#"{"quantscope_plan": 1, "default": "int8", "layers": {"fc1.weight": {"spec": "int12"}}}"#,
    )
    .unwrap();
    fails_in_one_line(
        &[
            "export",
            other.to_str().unwrap(),
            "--to",
            "compressed-tensors",
        ],
        "fc1.weight",
    );
}

#[test]
fn apply_writes_a_model_that_runs_and_a_packed_form_that_reads_back() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    let v = json(&[
        "search",
        s.to_str().unwrap(),
        "--candidates",
        "int8,int4,nvfp4,kmeans3",
        "--budget-bits",
        "4.5",
        "--calib-rows",
        "200",
        "--out",
        plan.to_str().unwrap(),
        "--json",
    ]);
    let out = dir.path().join("applied");
    let a = json(&[
        "apply",
        s.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--packed",
        "--json",
    ]);
    assert_eq!(a["layers"].as_array().unwrap().len(), 3);
    let weights = out.join("digits_mlp.safetensors");
    for f in [
        "quantscope_plan.json",
        "quantscope_report.json",
        "quantscope_packed.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // the applied model runs unchanged, with the accuracy search predicted for its plan
    let e = json(&["eval", weights.to_str().unwrap(), "--json"]);
    assert_eq!(e["float"]["accuracy"], v["held_out"]["plan"]["accuracy"]);
    // same names, shapes, dtypes; the biases untouched
    let (orig, applied) = (Model::open(&s).unwrap(), Model::open(&weights).unwrap());
    assert_eq!(orig.header_fingerprint(), applied.header_fingerprint());
    let read = |m: &Model, n: &str| m.read_f32(&m.tensors[m.find(n).unwrap()]).unwrap();
    assert_eq!(read(&orig, "fc1.bias"), read(&applied, "fc1.bias"));
    assert_ne!(read(&orig, "fc1.weight"), read(&applied, "fc1.weight"));
    // the packed form decodes to the written weights, bit for bit
    let packed =
        quantscope::plan::apply::read_packed(&out.join("quantscope_packed.safetensors")).unwrap();
    assert_eq!(packed.len(), 3);
    for (name, values) in packed {
        let w = read(&applied, &name);
        assert!(
            values
                .iter()
                .zip(&w)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}"
        );
    }
    // the source is never a destination; a folder of other things is refused
    fails_in_one_line(
        &[
            "apply",
            s.to_str().unwrap(),
            "--plan",
            plan.to_str().unwrap(),
            "--out",
            s.parent().unwrap().to_str().unwrap(),
        ],
        "holds the model",
    );
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    fails_in_one_line(
        &[
            "apply",
            s.to_str().unwrap(),
            "--plan",
            plan.to_str().unwrap(),
            "--out",
            busy.to_str().unwrap(),
        ],
        "not empty",
    );
    // re-applying into an earlier output is fine
    json(&[
        "apply",
        s.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
}
