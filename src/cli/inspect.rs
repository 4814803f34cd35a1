//! `quantscope inspect`: every tensor of a model with its shape, dtype and statistics.

use super::{json_num, print_json, progress_bar};
use quantscope::formats::fmt_short;
use quantscope::model::{group_layers, Model};
use quantscope::stats::summarize_tensors;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// A .safetensors file, a *.safetensors.index.json, or a model folder.
    pub model: PathBuf,
    /// Only tensors whose name matches this regular expression.
    #[arg(long)]
    pub layers: Option<String>,
    /// Histogram bins (included in --json).
    #[arg(long, default_value_t = 64)]
    pub bins: usize,
    /// Only names, dtypes and shapes from the headers: no tensor data is read (instant on any size).
    #[arg(long)]
    pub no_stats: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    let filter = super::layer_filter(a.layers.as_deref())?;
    let model = Model::open(&a.model)?;
    let chosen: Vec<usize> = (0..model.tensors.len())
        .filter(|&i| {
            filter
                .as_ref()
                .is_none_or(|r| r.is_match(&model.tensors[i].name))
        })
        .collect();
    if chosen.is_empty() && filter.is_some() {
        anyhow::bail!(
            "--layers matches none of the {} tensors",
            model.tensors.len()
        );
    }
    if a.no_stats {
        return headers_only(&model, &chosen, a.json);
    }
    let bar = progress_bar(
        chosen
            .iter()
            .map(|&i| model.tensors[i].nbytes() as u64)
            .sum(),
        "reading",
    );
    let layers = group_layers(&model.tensors);
    let role_of = |ti: usize| role(&layers, ti);
    let mut rows = Vec::new();
    let mut failed = None;
    summarize_tensors(&model, &chosen, a.bins, |i, s| {
        let t = &model.tensors[i];
        bar.set_message(t.name.clone());
        bar.inc(t.nbytes() as u64);
        match s {
            Ok(s) => rows.push((i, s)),
            Err(e) => failed = Some(e),
        }
        failed.is_none()
    });
    bar.finish_and_clear();
    if let Some(e) = failed {
        return Err(e.into());
    }

    if a.json {
        let tensors: Vec<_> = rows
            .iter()
            .map(|(i, s)| {
                let t = &model.tensors[*i];
                let st = &s.stats;
                json!({
                    "name": t.name, "dtype": format!("{:?}", t.dtype), "shape": t.shape, "numel": t.numel(),
                    "role": role_of(*i), "quantizable": t.quantizable(),
                    "min": json_num(st.min), "max": json_num(st.max), "mean": json_num(st.mean),
                    "std": json_num(st.std), "absmax": json_num(st.absmax), "nan": st.nan, "inf": st.inf,
                    "zeros": st.zeros, "kurtosis": json_num(st.kurtosis),
                    "p99": json_num(s.p99), "p99_9": json_num(s.p99_9), "p99_99": json_num(s.p99_99),
                    "histogram": {"lo": s.histogram.lo, "hi": s.histogram.hi, "counts": s.histogram.counts},
                })
            })
            .collect();
        return print_json(&json!({
            "model": model_json(&model),
            "tensors": tensors,
        }));
    }
    println!("{}", model_line(&model));
    if let Some(w) = &model.config_warning {
        eprintln!("warning: {w}");
    }
    println!(
        "{:<52} {:>5} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7}",
        "tensor",
        "dtype",
        "shape",
        "min",
        "max",
        "mean",
        "std",
        "absmax",
        "p99.9|x|",
        "kurtosis",
        "nan/inf"
    );
    for (i, s) in &rows {
        let t = &model.tensors[*i];
        let st = &s.stats;
        println!(
            "{:<52} {:>5} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7}",
            t.name,
            format!("{:?}", t.dtype),
            format!("{:?}", t.shape),
            fmt_short(st.min),
            fmt_short(st.max),
            fmt_short(st.mean),
            fmt_short(st.std),
            fmt_short(st.absmax),
            fmt_short(s.p99_9),
            format!("{:.2}", st.kurtosis),
            format!("{}/{}", st.nan, st.inf)
        );
    }
    Ok(())
}

fn headers_only(model: &Model, chosen: &[usize], as_json: bool) -> anyhow::Result<()> {
    let layers = group_layers(&model.tensors);
    let role_of = |ti: usize| role(&layers, ti);
    if as_json {
        let tensors: Vec<_> = chosen
            .iter()
            .map(|&i| {
                let t = &model.tensors[i];
                json!({"name": t.name, "dtype": format!("{:?}", t.dtype), "shape": t.shape, "numel": t.numel(),
                       "role": role_of(i), "quantizable": t.quantizable()})
            })
            .collect();
        return print_json(&json!({
            "model": model_json(model),
            "tensors": tensors,
        }));
    }
    println!("{}", model_line(model));
    for &i in chosen {
        let t = &model.tensors[i];
        println!(
            "{:<60} {:>5} {:>20} {:>12} {}",
            t.name,
            format!("{:?}", t.dtype),
            format!("{:?}", t.shape),
            t.numel(),
            role_of(i)
        );
    }
    Ok(())
}

fn role(layers: &[quantscope::model::Layer], tensor: usize) -> &'static str {
    layers
        .iter()
        .find(|l| l.tensors.contains(&tensor))
        .map(|l| l.role.as_str())
        .unwrap_or("other")
}

fn model_json(model: &Model) -> serde_json::Value {
    json!({
        "source": model.source, "kind": model.kind, "config": model.config,
        "tensors": model.tensors.len(), "parameters": model.parameters(), "file_bytes": model.file_bytes(),
        "shards": model.shards.len(),
    })
}

/// `SOURCE: N tensors, P parameters, B bytes in F file(s), ARCHITECTURE`
fn model_line(model: &Model) -> String {
    format!(
        "{}: {} tensors, {} parameters, {} bytes in {} file(s){}",
        model.source.display(),
        model.tensors.len(),
        model.parameters(),
        model.file_bytes(),
        model.shards.len(),
        model
            .config
            .as_ref()
            .and_then(|c| c.architecture.clone().or(c.model_type.clone()))
            .map(|a| format!(", {a}"))
            .unwrap_or_default()
    )
}
