//! `quantscope apply`: write a model with a plan's fake-quantized weights (and optionally its packed form)
//! to a new folder, through `plan::apply`.

use super::{json_num, print_json, progress_bar};
use quantscope::jobs::Progress;
use quantscope::model::Model;
use quantscope::plan::apply::{apply, ApplyOptions};
use quantscope::plan::compressed::write_compressed;
use quantscope::plan::Plan;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// A .safetensors file, a *.safetensors.index.json, or a model folder (only read).
    pub model: PathBuf,
    /// The plan to apply (made for this model).
    #[arg(long)]
    pub plan: PathBuf,
    /// The folder to write: the fake-quantized weights under their original names and dtypes, the files
    /// a Hugging Face folder needs (config, tokenizer), the plan and a per-layer report.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write quantscope_packed.safetensors: codes and scales per tensor.
    #[arg(long)]
    pub packed: bool,
    /// What to write: fake-quant (the weights quantized and stored back in their dtype; loads wherever
    /// the model did) or compressed-tensors (packed codes and scales with a quantization_config, which
    /// transformers and vLLM load as a quantized model).
    #[arg(long, default_value = "fake-quant")]
    pub format: String,
    /// compressed-tensors: write a plan that breaks vLLM's rules (fused layers, schemes) anyway.
    #[arg(long)]
    pub lenient: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ApplyArgs) -> anyhow::Result<()> {
    let model = Model::open(&a.model)?;
    let plan = Plan::load(&a.plan, &model)?;
    let progress = Progress::default();
    let total: u64 = model.tensors.iter().map(|t| t.nbytes() as u64).sum();
    let bar = progress_bar(total, "applying");
    let mut on_tensor = |name: &str| {
        bar.set_position((progress.fraction() as f64 * total as f64) as u64);
        bar.set_message(name.to_string());
    };
    let report = match a.format.as_str() {
        "fake-quant" | "fake" => apply(
            &model,
            &plan,
            &a.out,
            &ApplyOptions { packed: a.packed },
            &progress,
            &mut on_tensor,
        )?,
        "compressed-tensors" | "compressed_tensors" => {
            if a.packed {
                anyhow::bail!("--packed adds quantscope's own packed file to a fake-quant apply; a compressed-tensors checkpoint is packed already");
            }
            write_compressed(&model, &plan, &a.out, a.lenient, &progress, &mut on_tensor)?
        }
        other => anyhow::bail!("--format '{other}': use fake-quant or compressed-tensors"),
    };
    bar.finish_and_clear();
    if a.json {
        return print_json(&json!({
            "out": report.out,
            "files": report.files,
            "layers": report.layers.iter().map(|l| json!({
                "name": l.name, "spec": l.spec, "shape": l.shape, "dtype": l.dtype,
                "mse": json_num(l.mse), "sqnr_db": json_num(l.sqnr_db.unwrap_or(f64::INFINITY)),
                "cosine": json_num(l.cosine), "max_abs_err": json_num(l.max_abs_err),
                "bits_per_weight": l.bits_per_weight, "bytes": l.bytes,
                "stored_max_abs_err": json_num(l.stored_max_abs_err),
            })).collect::<Vec<_>>(),
            "total": {"bits_per_weight": report.summary.bits_per_weight, "bytes": report.summary.bytes,
                      "original_bytes": report.original_bytes},
        }));
    }
    for l in &report.layers {
        println!(
            "{:<52} {:<28} SQNR {:>7} dB  {:>6.3} bits/w",
            l.name,
            l.spec,
            l.sqnr_db
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "inf".into()),
            l.bits_per_weight
        );
    }
    println!(
        "{} tensors quantized: {:.3} bits per weight, {} bytes packed (were {} bytes)",
        report.layers.len(),
        report.summary.bits_per_weight,
        report.summary.bytes,
        report.original_bytes
    );
    println!(
        "wrote {} into {}",
        report.files.join(", "),
        report.out.display()
    );
    Ok(())
}
