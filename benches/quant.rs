//! The quantization engine on one realistic LLM linear layer: 4096 × 4096 f32 (16.8 M weights), the
//! sizes of the targets in the quantization-engine issue. Each quantizer run includes its metrics.
//! `python3 tools/bench_vs_torch.py` times the same operations in PyTorch/numpy and prints the ratios.

use criterion::{criterion_group, criterion_main, Criterion};
use quantscope::calib::{kl_threshold, KL_BINS};
use quantscope::quant::report::{clip_lines, layer_report_with, original_histogram};
use quantscope::quant::{kmeans_1d, quantize, Spec};
use quantscope::stats::{abs_percentiles, histogram};
use std::hint::black_box;

#[path = "../tests/common/synthetic.rs"]
mod synthetic;

const ROWS: usize = 4096;
const COLS: usize = 4096;

fn bench(c: &mut Criterion) {
    let x = synthetic::llm_layer(ROWS * COLS);
    let shape = [ROWS, COLS];
    let mut g = c.benchmark_group("layer_4096x4096");
    g.sample_size(10);
    for spec in [
        "int4:channel",
        "int8:channel",
        "int4:g128",
        "int4:g128:scale=fp32",
        "uint4:g128",
        "fp8_e4m3:channel",
        "nvfp4",
        "mxfp4",
        "nf4",
        "int8:tensor:clip=mse",
        "uint4:tensor:clip=mse",
        "fp8_e4m3:tensor:clip=mse",
        "int4:channel:clip=mse",
        "int8:channel:clip=mse",
        "uint4:channel:clip=mse",
        "fp8_e4m3:channel:clip=mse",
        "int4:g128:clip=mse",
    ] {
        let s = Spec::parse(spec).unwrap();
        g.bench_function(spec, |b| {
            b.iter(|| black_box(quantize(&x, &shape, &s).unwrap().metrics))
        });
    }
    // what the window computes for the selected layer after a spec toggle (96 bins, as it draws)
    let h = original_histogram(&x, 96);
    for spec in ["int8", "int4:g128", "nvfp4"] {
        let s = Spec::parse(spec).unwrap();
        g.bench_function(format!("window_report {spec}"), |b| {
            b.iter(|| black_box(layer_report_with(&x, &shape, &s, 96, Some(&h)).unwrap().0))
        });
    }
    let s = Spec::parse("int8").unwrap();
    g.bench_function("window_clip_lines int8", |b| {
        b.iter(|| black_box(clip_lines(&x, &shape, &s).unwrap()))
    });
    g.bench_function("histogram_2048", |b| {
        b.iter(|| black_box(histogram(&x, 2048, None)))
    });
    g.bench_function("percentiles_abs", |b| {
        b.iter(|| black_box(abs_percentiles(&x, &[99.0, 99.9, 99.99])))
    });
    let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let amax = abs.iter().fold(0f32, |m, &v| m.max(v)) as f64;
    let h = histogram(&abs, KL_BINS, Some((0.0, amax)));
    g.bench_function("kl_threshold_given_histogram", |b| {
        b.iter(|| black_box(kl_threshold(&h.counts, amax)))
    });
    g.bench_function("kmeans16_all_weights", |b| {
        b.iter(|| black_box(kmeans_1d(&x, 16)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
