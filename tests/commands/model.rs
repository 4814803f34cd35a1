//! Opening models: statistics against numpy, sharded checkpoints and folders, and a corpus of broken
//! files that must each give a clear error naming the file — never a panic.

use crate::common::data;
use crate::common::synthetic::write_f32;
use quantscope::model::{group_layers, Model, SourceKind};
use quantscope::stats::summarize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn close(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs())
}

#[test]
fn statistics_match_numpy() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(data("inspect_ref.json")).unwrap()).unwrap();
    let model = Model::open(&data("inspect_ref.safetensors")).unwrap();
    assert_eq!(model.tensors.len(), 7);
    for (name, want) in reference["tensors"].as_object().unwrap() {
        let t = &model.tensors[model.find(name).unwrap_or_else(|| panic!("{name} missing"))];
        let x = model.read_f32(t).unwrap();
        let s = summarize(&x, t.channels().0, 16);
        assert_eq!(
            s.stats.numel as u64,
            want["numel"].as_u64().unwrap(),
            "{name} numel"
        );
        assert_eq!(
            s.stats.nan as u64,
            want["nan"].as_u64().unwrap(),
            "{name} nan"
        );
        assert_eq!(
            s.stats.inf as u64,
            want["inf"].as_u64().unwrap(),
            "{name} inf"
        );
        if want.get("min").is_none() {
            continue; // no finite values
        }
        for (field, got, rel) in [
            ("min", s.stats.min, 0.0),
            ("max", s.stats.max, 0.0),
            ("absmax", s.stats.absmax, 0.0),
            ("mean", s.stats.mean, 1e-12),
            ("std", s.stats.std, 1e-12),
            ("kurtosis", s.stats.kurtosis, 1e-9),
            ("p99", s.p99, 1e-12),
            ("p99_9", s.p99_9, 1e-12),
            ("p99_99", s.p99_99, 1e-12),
        ] {
            let w = want[field].as_f64().unwrap();
            assert!(close(got, w, rel), "{name} {field}: ours {got}, numpy {w}");
        }
        let hist: Vec<u64> = want["histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(s.histogram.counts, hist, "{name} histogram");
    }
    // the high-kurtosis weight stands out
    let w = model.find("layer.weight").unwrap();
    let s = summarize(&model.read_f32(&model.tensors[w]).unwrap(), 64, 16);
    assert!(
        s.stats.kurtosis > 100.0,
        "outliers give a large kurtosis: {}",
        s.stats.kurtosis
    );
}

fn ramp(n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * k).sin()).collect()
}

#[test]
fn sharded_checkpoints_and_folders_open_like_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = (
        "model.layers.0.mlp.up_proj.weight",
        vec![8, 4],
        ramp(32, 0.3),
    );
    let b = ("model.layers.0.mlp.up_proj.bias", vec![8], ramp(8, 0.7));
    let c = (
        "model.layers.1.mlp.up_proj.weight",
        vec![8, 4],
        ramp(32, 1.1),
    );
    write_f32(
        &d.join("model-00001-of-00002.safetensors"),
        &[a.clone(), b.clone()],
    );
    write_f32(
        &d.join("model-00002-of-00002.safetensors"),
        std::slice::from_ref(&c),
    );
    std::fs::write(
        d.join("model.safetensors.index.json"),
        r#"{"metadata":{"total_size":288},"weight_map":{
            "model.layers.0.mlp.up_proj.weight":"model-00001-of-00002.safetensors",
            "model.layers.0.mlp.up_proj.bias":"model-00001-of-00002.safetensors",
            "model.layers.1.mlp.up_proj.weight":"model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("config.json"),
        r#"{"architectures":["LlamaForCausalLM"],"hidden_size":4,"num_hidden_layers":2}"#,
    )
    .unwrap();
    let single = d.join("single");
    std::fs::create_dir(&single).unwrap();
    write_f32(&single.join("all.safetensors"), &[a, b, c]);

    for path in [d.to_path_buf(), d.join("model.safetensors.index.json")] {
        let m = Model::open(&path).unwrap();
        assert_eq!(m.kind, SourceKind::Sharded);
        assert_eq!(m.shards.len(), 2);
        assert_eq!(
            m.config.as_ref().unwrap().architecture.as_deref(),
            Some("LlamaForCausalLM")
        );
        assert_eq!(m.parameters(), 72);
        let one = Model::open(&single.join("all.safetensors")).unwrap();
        for t in &one.tensors {
            let u = &m.tensors[m.find(&t.name).unwrap()];
            assert_eq!(
                m.read_f32(u).unwrap(),
                one.read_f32(t).unwrap(),
                "{}",
                t.name
            );
        }
        let layers = group_layers(&m.tensors);
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].tensors.len(), 2);
    }
    // a folder of plain .safetensors files with no index
    let m = Model::open(&single).unwrap();
    assert_eq!((m.kind, m.tensors.len()), (SourceKind::Folder, 3));
}

/// Every way a file can be broken, each with the words its error must contain.
fn broken_corpus(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    fn header_file(json: &str, data: usize) -> Vec<u8> {
        let mut v = (json.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v.resize(v.len() + data, 7);
        v
    }
    let good = header_file(
        r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
        16,
    );
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.safetensors", vec![], "too short"),
        (
            "truncated_data.safetensors",
            good[..good.len() - 3].to_vec(),
            "truncated",
        ),
        (
            "truncated_header.safetensors",
            good[..20].to_vec(),
            "beyond the end",
        ),
        (
            "huge_header_len.safetensors",
            {
                let mut f = good.clone();
                f[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                f
            },
            "beyond the end",
        ),
        (
            "not_json.safetensors",
            header_file("hello world!", 0),
            "not a JSON object",
        ),
        (
            "not_utf8.safetensors",
            {
                let mut f = header_file("{\"ab\":1}", 0);
                f[10] = 0xfe;
                f
            },
            "not UTF-8",
        ),
        (
            "unknown_dtype.safetensors",
            header_file(
                r#"{"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}"#,
                16,
            ),
            "unknown dtype",
        ),
        (
            "size_mismatch.safetensors",
            header_file(
                r#"{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#,
                16,
            ),
            "needs 20",
        ),
        (
            "out_of_range.safetensors",
            header_file(
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[64,80]}}"#,
                16,
            ),
            "beyond the data",
        ),
        (
            "overlap.safetensors",
            header_file(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
            ),
            "overlap",
        ),
        (
            "duplicate.safetensors",
            header_file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
            ),
            "twice",
        ),
        (
            "overflow_shape.safetensors",
            header_file(
                r#"{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
                16,
            ),
            "too large",
        ),
    ];
    let mut out = Vec::new();
    for (name, bytes, want) in cases.drain(..) {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        out.push((p, want));
    }
    // sharded checkpoints: a missing shard, a tensor listed twice, a tensor in two shards, a name missing from its shard
    let shard = dir.join("s1.safetensors");
    std::fs::write(&shard, &good).unwrap();
    std::fs::write(dir.join("s2.safetensors"), &good).unwrap();
    for (name, json, want) in [
        (
            "missing_shard.index.json",
            r#"{"weight_map":{"w":"nope.safetensors"}}"#,
            "missing",
        ),
        (
            "listed_twice.index.json",
            r#"{"weight_map":{"w":"s1.safetensors","w":"s1.safetensors"}}"#,
            "listed twice",
        ),
        (
            "two_shards.index.json",
            r#"{"weight_map":{"w":"s1.safetensors","v":"s2.safetensors"}}"#,
            "in both",
        ),
        (
            "absent_tensor.index.json",
            r#"{"weight_map":{"w":"s1.safetensors","q":"s1.safetensors"}}"#,
            "not in",
        ),
        (
            "no_weight_map.index.json",
            r#"{"metadata":{}}"#,
            "weight_map",
        ),
        (
            "escaping.index.json",
            r#"{"weight_map":{"w":"../s1.safetensors"}}"#,
            "plain file name",
        ),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, json).unwrap();
        out.push((p, want));
    }
    out
}

#[test]
fn broken_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (path, want) in broken_corpus(dir.path()) {
        let err = match Model::open(&path) {
            Ok(_) => panic!("{} opened but is broken", path.display()),
            Err(e) => e.to_string(),
        };
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(err.contains(want), "{file}: expected '{want}' in: {err}");
        assert!(
            err.contains(&file) || err.contains("s1.safetensors"),
            "{file}: the error names the file: {err}"
        );
    }
}

#[test]
fn broken_files_fail_the_cli_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (path, _) in broken_corpus(dir.path()) {
        let out = Command::new(env!("CARGO_BIN_EXE_quantscope"))
            .arg("inspect")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", path.display());
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{}: {stderr}",
            path.display()
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn legal_oddities_open_and_have_statistics() {
    // zero-size tensors, scalars, NaN and Inf are all legal
    let model = Model::open(&data("inspect_ref.safetensors")).unwrap();
    let empty = &model.tensors[model.find("empty.weight").unwrap()];
    assert_eq!((empty.numel(), empty.quantizable()), (0, false));
    assert!(model.read_f32(empty).unwrap().is_empty());
    let scalar = &model.tensors[model.find("scalar").unwrap()];
    assert_eq!(model.read_f32(scalar).unwrap(), vec![2.5]);
    let out = Command::new(env!("CARGO_BIN_EXE_quantscope"))
        .args([
            "inspect",
            "--json",
            data("inspect_ref.safetensors").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f16 = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "act.f16_with_nan")
        .unwrap();
    assert_eq!(
        (f16["nan"].as_u64(), f16["inf"].as_u64()),
        (Some(1), Some(2))
    );
    for field in [
        "name", "dtype", "shape", "numel", "min", "max", "mean", "std", "absmax", "nan", "inf",
        "p99_9", "kurtosis",
    ] {
        assert!(f16.get(field).is_some(), "inspect --json lacks {field}");
    }
}
