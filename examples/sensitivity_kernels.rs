//! The kernels of `quantscope sensitivity --no-end-to-end`, timed alone and summed over the layers it
//! measures, with the weights already in memory: what the command cannot go below.
//! - the calibration pass's products: `X·Wᵀ` on the calibration tokens for every linear weight;
//! - per layer, once: Σw², the importance-weighted Σw² and the output energy ‖X·Wᵀ‖² on the kept rows;
//! - per layer and candidate: the quantizer, W − Ŵ, its weighted Σ and the error energy ‖X·(W − Ŵ)ᵀ‖².
//!
//! The inputs are random (the kernels' time does not depend on the values), with as many rows as the
//! command keeps (`Keep::within_budget`) and as many tokens as its calibration windows (4 × 128).
//! `tools/bench_whole_model.py` divides the command's time by the sum.
//!
//!     cargo run --release --example sensitivity_kernels MODEL SPEC[,SPEC...]

use quantscope::activations::lm::Keep;
use quantscope::kernels::gemm::xwt;
use quantscope::model::{rows_and_cols, Model};
use quantscope::plan::sensitivity::default_layers;
use quantscope::quant::{quantize, Spec};
use quantscope::stats::sum_squares;
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// Calibration tokens of the command's defaults (`--calib-windows 4 --ctx 128`).
const TOKENS: usize = 4 * 128;

fn random(n: usize, seed: u64) -> Vec<f32> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            // a hash of the index: reproducible, no state shared between threads
            let h = (i as u64 ^ seed)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(31)
                .wrapping_mul(0xbf58_476d_1ce4_e5b9);
            (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: sensitivity_kernels MODEL SPEC[,SPEC...]";
    let path = args.next().expect(usage);
    let specs: Vec<Spec> = args
        .next()
        .expect(usage)
        .split(',')
        .map(|s| Spec::parse(s).expect("a valid spec"))
        .collect();
    let model = Model::open(std::path::Path::new(&path)).expect("model opens");
    let rows = Keep::within_budget(&model).rows;
    let (mut forward, mut signal) = (Duration::ZERO, Duration::ZERO);
    let (mut quant, mut error) = (Duration::ZERO, Duration::ZERO);
    let mut sum = 0f64;
    for ti in default_layers(&model) {
        let t = &model.tensors[ti];
        let (_, k) = rows_and_cols(&t.shape);
        let out = t.numel() / k;
        let w = model.read_f32(t).expect("reads");
        model.release(t);
        let (tokens, x) = (random(TOKENS * k, 1), random(rows * k, 2));
        let imp: Vec<f32> = x.chunks_exact(k).next().expect("a row").to_vec();
        // an embedding is a lookup in the forward pass, every other weight a product
        if !t.name.contains("embed") {
            let s = Instant::now();
            sum += xwt(&tokens, TOKENS, k, &w, out, None)[0] as f64;
            forward += s.elapsed();
        }
        let s = Instant::now();
        sum += sum_squares(&w, None) + sum_squares(&w, Some(&imp));
        sum += sum_squares(&xwt(&x, rows, k, &w, out, None), None);
        signal += s.elapsed();
        for spec in &specs {
            let s = Instant::now();
            let q = quantize(&w, &t.shape, spec).expect("quantizes");
            quant += s.elapsed();
            let s = Instant::now();
            let e: Vec<f32> = w.par_iter().zip(&q.dequant).map(|(a, b)| a - b).collect();
            sum += sum_squares(&e, Some(&imp));
            sum += sum_squares(&xwt(&x, rows, k, &e, out, None), None);
            error += s.elapsed();
        }
    }
    let total = forward + signal + quant + error;
    println!(
        "{{\"seconds\": {:.3}, \"calibration_products\": {:.3}, \"signals\": {:.3}, \"quantizers\": {:.3}, \
         \"errors\": {:.3}, \"rows\": {rows}, \"tokens\": {TOKENS}, \"sum\": {sum}}}",
        total.as_secs_f64(),
        forward.as_secs_f64(),
        signal.as_secs_f64(),
        quant.as_secs_f64(),
        error.as_secs_f64(),
    );
}
