//! Deterministic synthetic weights, shared by the benchmarks and the window's timing test (included
//! with `#[path]`): standard normals by Box–Muller over a xorshift generator, with no dependency.
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
