//! Whole-model commands keep memory near one tensor, not the model: each runs over a model many
//! times larger than a set limit, and the peak resident memory the kernel reports for that process
//! (`wait4`) must stay under it. Not timed. A binary of its own: a child started with `posix_spawn`
//! reports the larger of its own peak and its parent's, so no other test may share this process.

#![cfg(target_os = "linux")]

use std::process::Command;

/// Tensors of the synthetic model, each `ROWS × COLS` bf16.
const TENSORS: usize = 256;
const ROWS: usize = 512;
const COLS: usize = 1024;
/// The limit: a quarter of the model's 256 MiB, well above one tensor's f32 copy (2 MiB) and the
/// program itself.
const LIMIT_MIB: usize = 64;

/// A sharded bf16 checkpoint (two files and an index) of `TENSORS` matrices of small random values,
/// written a tensor at a time: this process's own peak stays small, and a child started with
/// `posix_spawn` reports the larger of its parent's peak and its own.
fn write_model(dir: &std::path::Path) {
    use std::io::Write;
    let mut state = 7u64;
    let mut weight_map = serde_json::Map::new();
    let per = TENSORS / 2;
    let nbytes = ROWS * COLS * 2;
    for shard in 0..2 {
        let file = format!("model-{:05}-of-00002.safetensors", shard + 1);
        let mut header = serde_json::Map::new();
        for i in 0..per {
            let name = format!("model.layers.{}.mlp.up_proj.weight", shard * per + i);
            weight_map.insert(name.clone(), file.clone().into());
            header.insert(
                name,
                serde_json::json!({"dtype": "BF16", "shape": [ROWS, COLS],
                                   "data_offsets": [i * nbytes, (i + 1) * nbytes]}),
            );
        }
        let mut h = serde_json::Value::Object(header).to_string().into_bytes();
        h.resize(h.len().div_ceil(8) * 8, b' ');
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(&file)).unwrap());
        f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
        f.write_all(&h).unwrap();
        for _ in 0..per {
            let t: Vec<u8> = (0..ROWS * COLS)
                .flat_map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let v = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
                    half::bf16::from_f32(v).to_le_bytes()
                })
                .collect();
            f.write_all(&t).unwrap();
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Run `quantscope ARGS` to completion; its peak resident memory in MiB.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also reports its usage
fn peak_mib(args: &[&str]) -> usize {
    let child = Command::new(env!("CARGO_BIN_EXE_quantscope"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run quantscope");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for; both pointers are to live locals
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{args:?} failed"
    );
    usage.ru_maxrss as usize / 1024
}

#[test]
fn whole_model_commands_stay_under_a_limit_far_below_the_model() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path());
    let model = dir.path().to_str().unwrap();
    let out = dir.path().join("q.safetensors");
    let size: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        size as usize > (4 * LIMIT_MIB) << 20,
        "the model is {size} bytes"
    );
    let peaks: Vec<(String, usize)> = [
        vec!["inspect", model],
        vec!["quantize", model, "--spec", "int4:g128"],
        vec![
            "quantize",
            model,
            "--spec",
            "int8",
            "--out",
            out.to_str().unwrap(),
        ],
        vec!["sensitivity", model, "--candidates", "int8,nvfp4"],
    ]
    .iter()
    .map(|args| (args.join(" "), peak_mib(args)))
    .collect();
    for (args, peak) in &peaks {
        assert!(
            *peak < LIMIT_MIB,
            "{args}: peak {peak} MiB over a {} MiB model (all: {peaks:?})",
            size >> 20
        );
    }
}

/// One tensor whose f32 copy (128 MiB) is larger than the limit (96 MiB): quantize and sensitivity read,
/// quantize and measure it a block of rows at a time.
#[test]
fn a_tensor_larger_than_the_limit_is_quantized_a_block_of_rows_at_a_time() {
    use std::io::Write;
    const R: usize = 4096;
    const C: usize = 8192;
    const LIMIT: usize = 96;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    let header = serde_json::json!({"embed_tokens.weight": {"dtype": "BF16", "shape": [R, C],
                                    "data_offsets": [0, R * C * 2]}});
    let mut h = header.to_string().into_bytes();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&h).unwrap();
    let mut state = 11u64;
    // a row at a time, so this process's own peak stays small
    for _ in 0..R {
        let row: Vec<u8> = (0..C)
            .flat_map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                half::bf16::from_f32(((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1)
                    .to_le_bytes()
            })
            .collect();
        f.write_all(&row).unwrap();
    }
    drop(f);
    let model = path.to_str().unwrap();
    for args in [
        vec!["quantize", model, "--spec", "int4:g128"],
        vec!["quantize", model, "--spec", "nvfp4"],
        vec!["sensitivity", model, "--candidates", "int8,mxfp4"],
    ] {
        let peak = peak_mib(&args);
        assert!(
            peak < LIMIT,
            "{args:?}: peak {peak} MiB for a tensor of {} MiB as f32",
            (R * C * 4) >> 20
        );
    }
}
