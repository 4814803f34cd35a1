//! `quantscope export`: a plan in another tool's config format (`plan::export`).

use super::print_json;
use quantscope::model::Model;
use quantscope::plan::export::{export_checked, export_plan, fit_counts, Entry, Target};
use quantscope::plan::Plan;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A plan file (quantscope_plan 1).
    pub plan: PathBuf,
    /// compressed-tensors (a quantization_config, also read by llm-compressor) or llama.cpp (lines
    /// REGEX=TYPE for llama-quantize --tensor-type-file).
    #[arg(long)]
    pub to: String,
    /// The model the plan was made for: checks the plan against it and gives kept tensors their dtype.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Write the config here (a temporary file renamed at the end) instead of printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write a plan that breaks the target runtime's rules (vLLM's fused layers and schemes) anyway,
    /// with the broken rules as notes.
    #[arg(long)]
    pub lenient: bool,
    /// Machine-readable output on stdout: the config, every tensor's mapping and the notes.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let target = Target::parse(&a.to).map_err(anyhow::Error::msg)?;
    let (ex, broken) = match &a.model {
        Some(m) => {
            let model = Model::open(m)?;
            let plan = Plan::load(&a.plan, &model)?;
            export_plan(&plan, &model, target, a.lenient)?
        }
        None => {
            let text = std::fs::read_to_string(&a.plan)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.plan.display()))?;
            let entries: Vec<Entry> = Plan::read_listing(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.plan.display()))?
                .layers
                .into_iter()
                .map(|(tensor, choice, _)| Entry {
                    tensor,
                    choice,
                    dtype: None,
                    shape: None,
                })
                .collect();
            export_checked(&entries, target, None, a.lenient)?
        }
    };
    if let Some(out) = &a.out {
        quantscope::model::write_atomic(out, &ex.text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    }
    if a.json {
        let config = match target {
            Target::CompressedTensors => serde_json::from_str(&ex.text)?,
            Target::LlamaCpp => json!(ex.text),
        };
        return print_json(&json!({
            "format": target.name(),
            "config": config,
            "tensors": ex.rows,
            "fit": fit_counts(&ex.rows),
            "notes": ex.notes(),
            "broken_rules": broken,
            "target_bits_per_weight": ex.target_bits_per_weight(),
            "out": a.out,
        }));
    }
    let counts = fit_counts(&ex.rows);
    let mut summary = format!(
        "{} tensors for {}: {}",
        ex.rows.len(),
        target.name(),
        counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(b) = ex.target_bits_per_weight() {
        summary.push_str(&format!(
            "; {b:.3} bits per weight in {} (the types it will really store)",
            target.name()
        ));
    }
    for b in &broken {
        eprintln!("breaks a rule (--lenient): {b}");
    }
    match &a.out {
        Some(out) => {
            println!("wrote {} ({summary})", out.display());
            for n in ex.notes() {
                println!("note: {n}");
            }
        }
        None => {
            // the config alone on stdout (so it can be redirected to a file); the notes on stderr
            print!("{}", ex.text);
            eprintln!("{summary}");
            for n in ex.notes() {
                eprintln!("note: {n}");
            }
        }
    }
    Ok(())
}
