//! What the block cache of the end-to-end measure saves: each tensor's cell is run as sensitivity runs
//! it (from its own block, on the kept float inputs) and from the embedding, with the same quantized
//! weights; both answers are checked equal and both times summed. Every `EVERY`-th block is timed
//! (and the embedding, the last block and an untied head), and the per-block times are summed over all
//! blocks by the linear cost of a cell in block i, `head + (blocks - i) · block`, fitted to them.
//!
//!     cargo run --release --example block_cache MODEL [SPEC] [EVERY] [WINDOWS] [CTX]

use quantscope::model::Model;
use quantscope::quant::{quantize, Spec};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or_else(|| {
        anyhow::anyhow!("usage: block_cache MODEL [SPEC] [EVERY] [WINDOWS] [CTX]")
    })?;
    let spec = Spec::parse(args.get(1).map_or("int4:g64", |s| s.as_str()))?;
    let every: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let windows: usize = args.get(3).map_or(Ok(4), |s| s.parse())?;
    let ctx: usize = args.get(4).map_or(Ok(128), |s| s.parse())?;
    let model = Model::open(std::path::Path::new(dir))?;
    let progress = quantscope::jobs::Progress::default();
    let t0 = Instant::now();
    let (lm, _) =
        quantscope::plan::lm::prepare(&model, None, ctx, windows, true, &|_| false, &progress)
            .map_err(anyhow::Error::msg)?;
    let lm = lm.ok_or_else(|| anyhow::anyhow!("{dir} is not a transformer decoder"))?;
    let blocks = lm.net.blocks.len();
    println!(
        "{dir}: {blocks} blocks, {windows} windows of {ctx} tokens, {spec}; float pass kept in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let block_of = |name: &str| {
        lm.net
            .blocks
            .iter()
            .position(|b| b.linears().contains(&name))
    };
    // (first block a cell reruns, cached seconds, full seconds) of every timed tensor
    let mut timed: Vec<(usize, f64, f64)> = Vec::new();
    let (mut per_block, mut embed, mut head) = (vec![0usize; blocks], 0usize, 0usize);
    for name in lm.tensors() {
        let first = match block_of(&name) {
            Some(i) => {
                per_block[i] += 1;
                i
            }
            None if name == lm.net.embed => {
                embed += 1;
                0
            }
            None => {
                head += 1;
                blocks
            }
        };
        let chosen =
            name == lm.net.embed || first == blocks || first % every == 0 || first + 1 == blocks;
        if !chosen {
            continue;
        }
        let t = model
            .find(&name)
            .map(|i| &model.tensors[i])
            .ok_or_else(|| anyhow::anyhow!("{name} not in the model"))?;
        let x = model.read_f32(t)?;
        let q = quantize(&x, &t.shape, &spec)?;
        let s = Instant::now();
        let cached = lm.run(&name, q.dequant.clone())?;
        let c = s.elapsed().as_secs_f64();
        let s = Instant::now();
        let full = lm.run_from_embedding(&name, q.dequant.clone())?;
        let f = s.elapsed().as_secs_f64();
        anyhow::ensure!(
            (cached.kl - full.kl).abs() <= 1e-9 * full.kl.abs().max(1e-6),
            "{name}: cached KL {} but full pass {}",
            cached.kl,
            full.kl
        );
        println!(
            "  {name:<48} block {first:>3}  cached {c:6.2} s  full {f:6.2} s  KL {:.4}",
            cached.kl
        );
        if name != lm.net.embed {
            timed.push((first, c, f));
        }
    }
    // least squares of cached seconds on (blocks - first): a cell costs head + n · block
    let pts: Vec<(f64, f64)> = timed
        .iter()
        .map(|&(i, c, _)| ((blocks - i) as f64, c))
        .collect();
    let n = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
    let sxx: f64 = pts.iter().map(|p| p.0 * p.0).sum();
    let sxy: f64 = pts.iter().map(|p| p.0 * p.1).sum();
    let block = (n * sxy - sx * sy) / (n * sxx - sx * sx);
    let head_s = (sy - block * sx) / n;
    let full_mean = timed.iter().map(|t| t.2).sum::<f64>() / timed.len() as f64;
    let cell = |i: usize| head_s + (blocks - i) as f64 * block;
    let cached_total: f64 = per_block
        .iter()
        .enumerate()
        .map(|(i, &k)| k as f64 * cell(i))
        .sum::<f64>()
        + (embed as f64) * full_mean
        + head as f64 * cell(blocks);
    let cells = per_block.iter().sum::<usize>() + embed + head;
    let full_total = cells as f64 * full_mean;
    println!(
        "fit: a cell in block i costs {head_s:.3} s + ({blocks} - i) x {block:.3} s; a full pass {full_mean:.2} s"
    );
    println!(
        "all {cells} tensors, one candidate: {cached_total:.0} s with the block cache, {full_total:.0} s without ({:.0} % saved)",
        100.0 * (1.0 - cached_total / full_total)
    );
    Ok(())
}
