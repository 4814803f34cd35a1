//! Plans for a runtime on the tiny Llama of tests/data/lm: fused layers searched and edited together,
//! runtime rules enforced by `export`, llama.cpp's row-size fallback, and the compressed-tensors
//! checkpoint of `apply --format compressed-tensors` decoding to the fake-quantized weights bit for bit.
//! (tools/check_compressed.py and tools/check_llamacpp.py run the real programs on SmolLM2.)

use crate::common::{fails_with, json, lm, quantscope};
use quantscope::model::Model;
use quantscope::plan::compressed::unpack_int32;
use serde_json::Value;
use std::path::Path;

fn layers(plan: &Path) -> serde_json::Map<String, Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(plan).unwrap()).unwrap();
    v["layers"].as_object().unwrap().clone()
}

fn spec<'a>(l: &'a serde_json::Map<String, Value>, name: &str) -> &'a str {
    l[name]["spec"].as_str().unwrap()
}

#[test]
fn a_search_for_vllm_ties_fused_layers_and_exports_what_it_loads() {
    let m = lm("llama");
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    let v = json(&[
        "search",
        m.to_str().unwrap(),
        "--candidates",
        "int8,int4,nvfp4",
        "--budget-bits",
        "6",
        "--no-end-to-end",
        "--target",
        "vllm",
        "--out",
        plan.to_str().unwrap(),
        "--json",
    ]);
    assert!(v["plan"]["bits_per_weight"].as_f64().unwrap() <= 6.0);
    // no cell ran the model, but the whole plans do before one is kept: the lowest KL of them
    let whole = v["whole_plans_on_calibration"].as_array().unwrap();
    assert!(
        whole.len() >= 2 && whole[0]["name"] == "searched plan",
        "{whole:?}"
    );
    let kl = |w: &Value| w["result"]["kl"].as_f64().unwrap();
    let best = whole.iter().min_by(|a, b| kl(a).total_cmp(&kl(b))).unwrap();
    assert_eq!(v["kept"], best["name"]);
    assert!(v["evaluation"].is_object(), "judged on held-out text too");
    let l = layers(&plan);
    for b in 0..2 {
        let p = |s: &str| format!("model.layers.{b}.{s}.weight");
        let q = spec(&l, &p("self_attn.q_proj"));
        assert_eq!(q, spec(&l, &p("self_attn.k_proj")));
        assert_eq!(q, spec(&l, &p("self_attn.v_proj")));
        assert_eq!(spec(&l, &p("mlp.gate_proj")), spec(&l, &p("mlp.up_proj")));
        // one NVFP4 global scale per fused layer in vLLM: never on a tied group
        assert!(!q.starts_with("nvfp4") && !spec(&l, &p("mlp.gate_proj")).starts_with("nvfp4"));
        // scales in the weights' dtype, as compressed-tensors keeps them
        assert!(q == "none" || q.contains("scale=bf16"), "{q}");
        assert!(l[&p("self_attn.q_proj")]["why"]
            .as_str()
            .unwrap()
            .contains("qkv_proj"));
    }
    // the embedding table is kept (not searched, so not listed)
    assert!(l
        .get("model.embed_tokens.weight")
        .is_none_or(|e| e["spec"] == "none"));
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(file["target"], "vllm");
    // the plan exports to compressed-tensors without --lenient
    let ex = json(&[
        "export",
        plan.to_str().unwrap(),
        "--to",
        "compressed-tensors",
        "--model",
        m.to_str().unwrap(),
        "--json",
    ]);
    assert!(ex["broken_rules"].as_array().unwrap().is_empty());
    assert!(ex["config"]["ignore"]
        .as_array()
        .unwrap()
        .contains(&Value::from("model.embed_tokens")));

    // a plan whose q/k/v differ, with a quantized embedding, is refused with the layers named
    let mut broken = file.clone();
    broken["layers"]["model.layers.0.self_attn.k_proj.weight"]["spec"] = "int8".into();
    broken["layers"]["model.layers.0.self_attn.q_proj.weight"]["spec"] = "int4".into();
    broken["layers"]["model.embed_tokens.weight"]["spec"] = "int8".into();
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, broken.to_string()).unwrap();
    let err = fails_with(
        &[
            "export",
            bad.to_str().unwrap(),
            "--to",
            "compressed-tensors",
            "--model",
            m.to_str().unwrap(),
        ],
        "qkv_proj of model.layers.0.self_attn",
    );
    assert!(
        err.contains("model.layers.0.self_attn.k_proj.weight"),
        "{err}"
    );
    assert!(err.contains("model.embed_tokens.weight"), "{err}");
    // the same refusal without the model, from the plan file alone
    fails_with(
        &[
            "export",
            bad.to_str().unwrap(),
            "--to",
            "compressed-tensors",
        ],
        "qkv_proj",
    );
    // a candidate vLLM cannot load is refused before anything is measured
    fails_with(
        &[
            "search",
            m.to_str().unwrap(),
            "--candidates",
            "int8,nf4",
            "--budget-bits",
            "6",
            "--target",
            "vllm",
        ],
        "vLLM cannot load nf4",
    );
}

#[test]
fn llama_cpp_export_says_and_sizes_the_fallback_it_will_get() {
    let m = lm("llama");
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    // rows of 48 and 64 weights: q3_K needs 256, falls back to q4_0 (64) or, not dividing 32 either, f16 (48)
    std::fs::write(
        &plan,
        r#"{"quantscope_plan": 1, "default": "int3:g64", "layers": {}}"#,
    )
    .unwrap();
    let v = json(&[
        "export",
        plan.to_str().unwrap(),
        "--to",
        "llama.cpp",
        "--model",
        m.to_str().unwrap(),
        "--json",
    ]);
    let rows = v["tensors"].as_array().unwrap();
    let row = |gguf: &str| rows.iter().find(|r| r["target_name"] == gguf).unwrap();
    let down = row("blk.0.ffn_down.weight"); // 64 columns
    assert_eq!(down["target"], "q4_0");
    assert!(down["note"]
        .as_str()
        .unwrap()
        .contains("falls back to q4_0"));
    assert_eq!(down["target_bits_per_weight"], 4.5);
    assert_eq!(row("blk.0.attn_q.weight")["target"], "f16"); // 48 columns
    assert!(v["config"]
        .as_str()
        .unwrap()
        .contains(r"^blk\.0\.ffn_down\.weight$=q4_0"));
    // NVFP4 blocks of 64 do not divide rows of 48 and llama-quantize has no fallback: refused
    std::fs::write(
        &plan,
        r#"{"quantscope_plan": 1, "default": "nvfp4", "layers": {}}"#,
    )
    .unwrap();
    fails_with(
        &[
            "export",
            plan.to_str().unwrap(),
            "--to",
            "llama.cpp",
            "--model",
            m.to_str().unwrap(),
        ],
        "llama-quantize would stop",
    );
    // a search for llama.cpp is sized with those types
    let v = json(&[
        "search",
        m.to_str().unwrap(),
        "--candidates",
        "int8,int4:g32,int3:g64",
        "--budget-bits",
        "16",
        "--no-end-to-end",
        "--target",
        "llama.cpp",
        "--json",
    ]);
    // rows of 64: q8_0 8.5, q4_0 4.5, q3_K -> q4_0 4.5; rows of 48: every type falls back to f16
    for l in v["layers"].as_array().unwrap() {
        let b = l["bits_per_weight"].as_f64().unwrap();
        assert!([4.5, 8.5, 16.0].contains(&b), "{l}");
    }
}

/// Decode one module of a compressed-tensors checkpoint to f32 (symmetric packs, NVFP4, MXFP4).
fn decode(ct: &Model, module: &str, shape: &[usize], spec: &str) -> Vec<f32> {
    let read = |suffix: &str| {
        let t = &ct.tensors[ct
            .find(&format!("{module}.{suffix}"))
            .unwrap_or_else(|| panic!("{module}.{suffix}"))];
        (ct.bytes(t).to_vec(), t.shape.clone(), ct.read_f32(t).ok())
    };
    let (rows, cols) = (shape[0], shape[1]);
    let fp4 = |c: u8| {
        let v = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0][(c & 7) as usize];
        if c & 8 != 0 {
            -v
        } else {
            v
        }
    };
    let nibbles =
        |bytes: &[u8]| -> Vec<u8> { bytes.iter().flat_map(|b| [b & 15, b >> 4]).collect() };
    let bf16 = |x: f32| half::bf16::from_f32(x).to_f32();
    if spec.starts_with("nvfp4") {
        let (packed, _, _) = read("weight_packed");
        let (_, _, scale) = read("weight_scale");
        let (_, _, gs) = read("weight_global_scale");
        let (scale, gs) = (scale.unwrap(), gs.unwrap()[0]);
        return nibbles(&packed)
            .iter()
            .enumerate()
            .map(|(i, &c)| bf16(fp4(c) * (scale[i / 16] / gs)))
            .collect();
    }
    if spec.starts_with("mxfp4") {
        let (packed, _, _) = read("weight_packed");
        let (e8m0, _, _) = read("weight_scale");
        return nibbles(&packed)
            .iter()
            .enumerate()
            .map(|(i, &c)| bf16(fp4(c) * 2f32.powi(e8m0[i / 32] as i32 - 127)))
            .collect();
    }
    let bits: u32 = spec[3..].split(':').next().unwrap().parse().expect("intN");
    let (packed, _, _) = read("weight_packed");
    let words: Vec<i32> = packed
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let codes = unpack_int32(&words, rows, cols, bits);
    let (_, sshape, scale) = read("weight_scale");
    let scale = scale.unwrap();
    let groups = sshape[1];
    let per = cols.div_ceil(groups);
    codes
        .iter()
        .enumerate()
        .map(|(i, &c)| bf16(c as f32 * scale[(i / cols) * groups + (i % cols) / per]))
        .collect()
}

#[test]
fn a_compressed_tensors_checkpoint_decodes_to_the_fake_quantized_weights() {
    let m = lm("llama");
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    let specs = [
        ("model.layers.0.self_attn.q_proj.weight", "int4:scale=bf16"),
        ("model.layers.0.self_attn.k_proj.weight", "int4:scale=bf16"),
        ("model.layers.0.self_attn.v_proj.weight", "int4:scale=bf16"),
        ("model.layers.0.self_attn.o_proj.weight", "nvfp4"),
        ("model.layers.0.mlp.down_proj.weight", "mxfp4"),
        ("model.layers.1.mlp.gate_proj.weight", "int8:scale=bf16"),
        ("model.layers.1.mlp.up_proj.weight", "int8:scale=bf16"),
        (
            "model.layers.1.self_attn.o_proj.weight",
            "int3:g32:scale=bf16",
        ),
    ];
    let layers: serde_json::Map<String, Value> = specs
        .iter()
        .map(|(n, s)| (n.to_string(), serde_json::json!({ "spec": s })))
        .collect();
    std::fs::write(
        &plan,
        serde_json::json!({"quantscope_plan": 1, "default": "none", "layers": layers}).to_string(),
    )
    .unwrap();
    let (fake, comp) = (dir.path().join("fake"), dir.path().join("ct"));
    for (out, extra) in [
        (&fake, vec![]),
        (&comp, vec!["--format", "compressed-tensors"]),
    ] {
        let mut args = vec![
            "apply",
            m.to_str().unwrap(),
            "--plan",
            plan.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let (ok, _, err) = quantscope(&args);
        assert!(ok, "{err}");
    }
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(comp.join("config.json")).unwrap()).unwrap();
    let qc = &cfg["quantization_config"];
    assert_eq!(qc["quantization_status"], "compressed");
    assert_eq!(qc["format"], "mixed-precision");
    let fake_m = Model::open(&fake.join("model.safetensors")).unwrap();
    let ct = Model::open(&comp.join("model.safetensors")).unwrap();
    for (name, spec) in specs {
        let t = &fake_m.tensors[fake_m.find(name).unwrap()];
        let want = fake_m.read_f32(t).unwrap();
        let module = name.strip_suffix(".weight").unwrap();
        let got = decode(&ct, module, &t.shape, spec);
        assert_eq!(got.len(), want.len(), "{name}");
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{name} ({spec}): {differ} values differ");
        assert!(
            ct.find(name).is_none(),
            "{name} is stored packed, not as a weight"
        );
    }
    // untouched tensors are copied as they are
    let e = &ct.tensors[ct.find("model.embed_tokens.weight").unwrap()];
    let f = &fake_m.tensors[fake_m.find("model.embed_tokens.weight").unwrap()];
    assert_eq!(ct.bytes(e), fake_m.bytes(f));

    // scales the checkpoint could not hold are refused, with the spec that would work
    std::fs::write(
        &plan,
        r#"{"quantscope_plan": 1, "default": "none", "layers": {"model.layers.0.mlp.down_proj.weight": {"spec": "int4:g32"}}}"#,
    )
    .unwrap();
    fails_with(
        &[
            "apply",
            m.to_str().unwrap(),
            "--plan",
            plan.to_str().unwrap(),
            "--out",
            dir.path().join("x").to_str().unwrap(),
            "--format",
            "compressed-tensors",
        ],
        "int4:g32:scale=bf16",
    );
    assert!(!dir.path().join("x").exists(), "nothing is written");
}
