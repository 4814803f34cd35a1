//! The command-line tool, run as a user runs it: the real binary on real files.

use crate::common::{json, quantscope};

#[test]
fn formats_json_lists_every_value_of_fp4() {
    let v = json(&["formats", "fp4_e2m1", "--json"]);
    assert_eq!(v["name"], "fp4_e2m1");
    assert_eq!(v["bits"], 4);
    assert_eq!(v["kind"], "float");
    assert_eq!(v["max"], 6.0);
    assert_eq!(v["min_normal"], 1.0);
    assert_eq!(v["min_subnormal"], 0.5);
    let values: Vec<f64> = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_f64().unwrap())
        .collect();
    assert_eq!(
        values,
        [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
    );
}

#[test]
fn formats_json_writes_nan_and_inf_as_strings() {
    let v = json(&["formats", "fp8_e5m2", "--json"]);
    let values = v["values"].as_array().unwrap();
    assert_eq!(values.len(), 256);
    assert_eq!(values[0x7c]["value"], "inf");
    assert_eq!(values[0xfc]["value"], "-inf");
    assert_eq!(values[0x7f]["value"], "nan");
    assert_eq!(values[0x7b]["value"], 57344.0);
}

#[test]
fn formats_table_names_the_catalog() {
    let v = json(&["formats", "--json"]);
    let names: Vec<&str> = v["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for want in [
        "fp32",
        "fp16",
        "bf16",
        "fp8_e4m3",
        "fp8_e5m2",
        "fp8_e4m3fnuz",
        "fp6_e3m2",
        "fp4_e2m1",
        "fp4_e1m2",
        "fp4_e3m0",
        "e8m0",
        "nf4",
        "int8",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let (ok, text, _) = quantscope(&["formats"]);
    assert!(ok && text.contains("fp8_e4m3") && text.contains("448"));
}

#[test]
fn encode_reports_bits_value_error_and_rounding() {
    let v = json(&["formats", "fp8_e4m3", "--encode", "0.3", "--json"]);
    assert_eq!(v["bits"], "0 0101 010");
    assert_eq!(v["value"], 0.3125);
    assert_eq!(v["rounding"], "away_from_zero");
    assert_eq!(v["flipped_bits"], "0 0000 011");
    let v = json(&["formats", "fp8_e4m3", "--encode", "1000", "--json"]);
    assert_eq!(
        (v["value"].as_f64(), v["rounding"].as_str()),
        (Some(448.0), Some("saturated"))
    );
    let v = json(&[
        "formats",
        "fp8_e4m3",
        "--encode",
        "1000",
        "--no-saturate",
        "--json",
    ]);
    assert_eq!(
        (v["value"].as_str(), v["rounding"].as_str()),
        (Some("nan"), Some("overflow_to_nan"))
    );
    let (ok, text, _) = quantscope(&["formats", "int4", "--encode", "-2.5"]);
    assert!(ok && text.contains("tie"), "{text}");
}

#[test]
fn bad_input_is_one_line_and_a_failure() {
    for args in [
        &["formats", "fp5"][..],
        &["formats", "int4", "--encode", "abc"],
        &["formats", "e4m3_bogus"],
        &[
            "cast",
            "--format",
            "fp8_e4m3",
            "--in",
            "/nonexistent/x.safetensors",
            "--out",
            "/tmp/never.safetensors",
        ],
    ] {
        let (ok, _, stderr) = quantscope(args);
        assert!(!ok, "{args:?} should fail");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

#[test]
fn cast_to_bf16_matches_the_half_crate_and_keeps_the_source() {
    use safetensors::{serialize_to_file, Dtype, SafeTensors};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.safetensors");
    let dst = dir.path().join("out.safetensors");
    // a deterministic spread of f32 bit patterns: normals, subnormals, huge, and an integer tensor
    let xs: Vec<f32> = (0..4096u32)
        .map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B1) & 0x7f7f_ffff))
        .collect();
    let f32_bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
    let ints: Vec<u8> = (0..16i32).flat_map(|i| i.to_le_bytes()).collect();
    let w = safetensors::tensor::TensorView::new(Dtype::F32, vec![64, 64], &f32_bytes).unwrap();
    let n = safetensors::tensor::TensorView::new(Dtype::I32, vec![16], &ints).unwrap();
    serialize_to_file(vec![("w", w), ("n", n)], None, &src).unwrap();
    let before = std::fs::read(&src).unwrap();

    let v = json(&[
        "cast",
        "--format",
        "bf16",
        "--in",
        src.to_str().unwrap(),
        "--out",
        dst.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 2);
    assert_eq!(
        std::fs::read(&src).unwrap(),
        before,
        "the source is never modified"
    );

    let out = std::fs::read(&dst).unwrap();
    let st = SafeTensors::deserialize(&out).unwrap();
    let got = st.tensor("w").unwrap();
    assert_eq!(got.dtype(), Dtype::F32);
    for (i, x) in xs.iter().enumerate() {
        let want = half::bf16::from_f32(*x).to_f32();
        let g = f32::from_le_bytes(got.data()[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(g.to_bits(), want.to_bits(), "element {i}: {x:e}");
    }
    assert_eq!(
        st.tensor("n").unwrap().data(),
        &ints[..],
        "integer tensors are copied unchanged"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary file left behind");
}

#[test]
fn quantize_reports_every_layer_and_writes_a_loadable_model() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sample_models/digits_mlp.safetensors"
    );
    for spec in [
        "int8",
        "int4:g16",
        "uint4:g32:clip=mse",
        "fp8_e4m3:tensor",
        "mxfp4",
        "nvfp4",
        "nf4",
        "kmeans4",
        "ternary",
        "binary",
        "int4:g16:vsq",
        "smx6",
        "bf16",
    ] {
        let v = json(&["quantize", sample, "--spec", spec, "--json"]);
        let layers = v["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3, "{spec}: the three 2-D weights");
        for l in layers {
            for field in [
                "name",
                "shape",
                "spec",
                "mse",
                "sqnr_db",
                "cosine",
                "max_abs_err",
                "bits_per_weight",
                "bytes",
            ] {
                assert!(l.get(field).is_some(), "{spec}: no {field}");
            }
            assert!(l["cosine"].as_f64().unwrap() > 0.5, "{spec}: {l}");
        }
        let total = &v["total"];
        assert_eq!(total["numel"], 8192 + 8192 + 640);
        assert!(total["bits_per_weight"].as_f64().unwrap() > 0.9);
    }
    // --layers takes a 1-D tensor when asked for explicitly; the default does not
    let v = json(&[
        "quantize",
        sample,
        "--spec",
        "int8:tensor",
        "--layers",
        "fc1\\.(weight|bias)",
        "--json",
    ]);
    assert_eq!(v["layers"].as_array().unwrap().len(), 2);

    // --out: quantized tensors as the engine computed them, the rest unchanged, the source untouched
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.safetensors");
    let before = std::fs::read(sample).unwrap();
    let v = json(&[
        "quantize",
        sample,
        "--spec",
        "int4:g16",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(std::fs::read(sample).unwrap(), before);
    let src = quantscope::model::Model::open(std::path::Path::new(sample)).unwrap();
    let q = quantscope::model::Model::open(&out).unwrap();
    assert_eq!(q.tensors.len(), src.tensors.len());
    let spec = quantscope::quant::Spec::parse("int4:g16").unwrap();
    for t in &src.tensors {
        let u = &q.tensors[q.find(&t.name).unwrap()];
        assert_eq!((u.dtype, &u.shape), (t.dtype, &t.shape));
        let x = src.read_f32(t).unwrap();
        let y = q.read_f32(u).unwrap();
        if t.quantizable() {
            let want = quantscope::quant::quantize(&x, &t.shape, &spec)
                .unwrap()
                .into_dequant();
            assert_eq!(y, want, "{}", t.name);
        } else {
            assert_eq!(y, x, "{} is copied unchanged", t.name);
        }
    }
    assert_eq!(
        q.metadata().unwrap()["held_out_accuracy"],
        src.metadata().unwrap()["held_out_accuracy"]
    );
    assert!(v["out"].as_str().unwrap().ends_with("q.safetensors"));
}

#[test]
fn quantize_rejects_bad_specs_in_one_line() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sample_models/digits_mlp.safetensors"
    );
    for (spec, want) in [
        ("int9", "2 to 8 bits"),
        ("float7", "mxfp4"),
        ("int4:g0", "at least one element"),
        ("mxfp4:g64", "fixed blocks"),
    ] {
        let (ok, _, stderr) = quantscope(&["quantize", sample, "--spec", spec]);
        assert!(!ok);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{spec}: {stderr}");
    }
    let (ok, _, stderr) = quantscope(&[
        "quantize",
        sample,
        "--spec",
        "int8",
        "--layers",
        "nothing_here",
    ]);
    assert!(!ok && stderr.contains("no tensor"), "{stderr}");
}

#[test]
fn eval_runs_the_sample_model_float_and_quantized() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sample_models/digits_mlp.safetensors"
    );
    let v = json(&["eval", sample, "--spec", "binary", "--json"]);
    assert_eq!(v["examples"], 359);
    assert!((v["float"]["accuracy"].as_f64().unwrap() - 0.9694).abs() < 1e-4);
    assert!(v["quantized"]["accuracy"].as_f64().unwrap() < 0.9);
    // a plan file works too
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("p.json");
    let model = quantscope::model::Model::open(std::path::Path::new(sample)).unwrap();
    let p = quantscope::plan::Plan {
        default: quantscope::plan::Choice::parse("int8").unwrap(),
        ..Default::default()
    };
    p.save(&plan, &model, None).unwrap();
    let v = json(&["eval", sample, "--plan", plan.to_str().unwrap(), "--json"]);
    assert!(v["quantized"]["accuracy"].as_f64().unwrap() > 0.95);
    let (ok, _, stderr) = quantscope(&[
        "eval",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/inspect_ref.safetensors"
        ),
    ]);
    assert!(
        !ok && stderr.contains("not a runnable sample model"),
        "{stderr}"
    );
}
