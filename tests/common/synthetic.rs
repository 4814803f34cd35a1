//! Deterministic synthetic weights for the tests and the benchmarks (which include this file with
//! `#[path]`): standard normals by Box–Muller over a xorshift generator, and a writer of f32
//! safetensors files.
#![allow(dead_code)] // each includer uses part of it

/// An endless stream of standard normal values (the same stream every time).
pub fn normals() -> impl Iterator<Item = f64> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    std::iter::from_fn(move || {
        let (u, v) = (next().max(1e-300), next());
        Some((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos())
    })
}

/// `n` weights like an LLM projection's: a normal body (std 0.02) and every 100,003rd value 40 times
/// larger.
pub fn llm_layer(n: usize) -> Vec<f32> {
    normals()
        .take(n)
        .enumerate()
        .map(|(i, g)| {
            let v = (g * 0.02) as f32;
            if i % 100_003 == 0 {
                v * 40.0
            } else {
                v
            }
        })
        .collect()
}

/// Write f32 tensors (name, shape, values) as a safetensors file.
pub fn write_f32(path: &std::path::Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.2.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            (
                t.0,
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.1.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}
