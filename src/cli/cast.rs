//! `quantscope cast`: every tensor of a file through a number format and back, element by element.

use super::print_json;
use quantscope::formats::{fmt_short, lookup, Overflow};
use quantscope::model::cast_file;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CastArgs {
    /// The format every element goes through, e.g. fp8_e4m3, bf16, fp4_e2m1.
    #[arg(long)]
    pub format: String,
    /// The source .safetensors file (never modified).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// The output .safetensors file (written to a temporary file, then renamed).
    #[arg(long)]
    pub out: PathBuf,
    /// Overflow becomes Inf/NaN (IEEE) instead of clamping to ±max.
    #[arg(long)]
    pub no_saturate: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CastArgs) -> anyhow::Result<()> {
    let f = lookup(&a.format)?;
    let overflow = if a.no_saturate {
        Overflow::NoSaturate
    } else {
        Overflow::Saturate
    };
    let report = cast_file(&a.input, &a.out, &f.name, &f.format, overflow)?;
    if a.json {
        return print_json(&serde_json::to_value(&report)?);
    }
    println!(
        "{:<48} {:>6} {:>10} {:>10} {:>9} {:>9} {:>9} {:>12}",
        "tensor", "dtype", "numel", "changed", "saturated", "overflow", "underflow", "max |err|"
    );
    for t in &report.tensors {
        if !t.cast {
            println!(
                "{:<48} {:>6} {:>10}  (copied unchanged: not a float dtype)",
                t.name, t.dtype, t.numel
            );
            continue;
        }
        println!(
            "{:<48} {:>6} {:>10} {:>10} {:>9} {:>9} {:>9} {:>12}",
            t.name,
            t.dtype,
            t.numel,
            t.changed,
            t.saturated,
            t.overflowed,
            t.underflowed,
            fmt_short(t.max_abs_err)
        );
    }
    let n: usize = report.tensors.iter().map(|t| t.numel).sum();
    let changed: usize = report.tensors.iter().map(|t| t.changed).sum();
    println!(
        "{} tensors, {n} elements, {changed} changed → {}",
        report.tensors.len(),
        a.out.display()
    );
    Ok(())
}
