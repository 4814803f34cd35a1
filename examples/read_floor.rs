//! The floor of any whole-model pass: read every float tensor of a model from its memory map and
//! widen it to f32 on all cores, into one reused buffer, doing nothing else (a sum keeps the work
//! from being optimised away). `tools/bench_whole_model.py` divides each command's time by this.
//!
//!     cargo run --release --example read_floor MODEL

use quantscope::model::{decode_f32, Model};
use rayon::prelude::*;
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: read_floor MODEL");
    let model = Model::open(std::path::Path::new(&path)).expect("model opens");
    let start = Instant::now();
    let (mut bytes, mut sum) = (0u64, 0f64);
    for t in model.tensors.iter().filter(|t| t.is_float()) {
        let x = decode_f32(t.dtype, model.bytes(t)).expect("float tensor");
        sum += x
            .par_chunks(1 << 16)
            .map(|c| c.iter().sum::<f32>() as f64)
            .sum::<f64>();
        bytes += t.nbytes() as u64;
        model.release(t);
        quantscope::kernels::buffers::give_f32(x);
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "{{\"seconds\": {s:.3}, \"bytes\": {bytes}, \"gb_per_s\": {:.3}, \"sum\": {sum}}}",
        bytes as f64 / s / 1e9
    );
}
