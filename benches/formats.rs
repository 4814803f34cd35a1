//! Encoding throughput of the exact format engine: 1 Mi f32 values (a normal distribution scaled to
//! each format's range) rounded into a format and decoded back. Compare with numpy/ml_dtypes using
//! `python3 tools/bench_formats_vs_numpy.py` after `cargo bench --bench formats`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quantscope::formats::{lookup, Overflow};
use std::hint::black_box;

#[path = "../tests/common/synthetic.rs"]
mod synthetic;

fn bench(c: &mut Criterion) {
    let n = 1 << 20;
    let xs: Vec<f32> = synthetic::normals().take(n).map(|g| g as f32).collect();
    let mut group = c.benchmark_group("encode_1Mi");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    for name in ["fp8_e4m3", "fp4_e2m1", "bf16", "fp16", "int8", "nf4"] {
        let f = lookup(name).unwrap().format;
        // spread the values over the format's range, as a scaled quantizer would
        let scale = (f.constants().max / 4.0).min(1e4);
        let scaled: Vec<f64> = xs.iter().map(|&x| x as f64 * scale).collect();
        group.bench_function(name, |b| {
            let mut out = vec![0f32; n];
            b.iter(|| {
                for (o, &x) in out.iter_mut().zip(&scaled) {
                    *o = f.encode(x, Overflow::Saturate).value as f32;
                }
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
