//! The floor of a whole-model pass: read every float tensor of a model from its memory map and widen
//! it to f32 on all cores, into reused buffers, doing nothing else (a sum keeps the work from being
//! optimised away). With a spec, also the quantizer's own time summed over the tensors `quantize`
//! would choose: what a `quantize` of the whole model cannot go below.
//! `tools/bench_whole_model.py` divides each command's time by these.
//!
//!     cargo run --release --example read_floor MODEL [SPEC]

use quantscope::model::{decode_f32, Model};
use quantscope::quant::{quantize, Spec};
use rayon::prelude::*;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: read_floor MODEL [SPEC]");
    let spec = args.next().map(|s| Spec::parse(&s).expect("a valid spec"));
    let model = Model::open(std::path::Path::new(&path)).expect("model opens");
    let start = Instant::now();
    let (mut bytes, mut sum, mut kernel) = (0u64, 0f64, Duration::ZERO);
    for t in model.tensors.iter().filter(|t| t.is_float()) {
        let x = decode_f32(t.dtype, model.bytes(t)).expect("float tensor");
        sum += x
            .par_chunks(1 << 16)
            .map(|c| c.iter().sum::<f32>() as f64)
            .sum::<f64>();
        bytes += t.nbytes() as u64;
        model.release(t);
        if let Some(s) = spec.as_ref().filter(|_| t.quantizable()) {
            let k = Instant::now();
            let q = quantize(&x, &t.shape, s).expect("quantizes");
            kernel += k.elapsed();
            sum += q.metrics.mse;
        }
        quantscope::kernels::buffers::give_f32(x);
    }
    let s = start.elapsed().as_secs_f64() - kernel.as_secs_f64();
    println!(
        "{{\"seconds\": {s:.3}, \"bytes\": {bytes}, \"gb_per_s\": {:.3}, \"quantize_seconds\": {:.3}, \"sum\": {sum}}}",
        bytes as f64 / s / 1e9,
        kernel.as_secs_f64()
    );
}
