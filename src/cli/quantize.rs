//! `quantscope quantize`: every chosen tensor under one spec, with its metrics; `--out` writes the
//! fake-quantized model through the same writer pieces as `plan apply`.

use super::{json_num, print_json, progress_bar};
use quantscope::formats::fmt_short;
use quantscope::model::{write_safetensors, Model};
use quantscope::plan::apply::{quantize_tensor, tensor_entries, Store};
use quantscope::quant::rows::Keep;
use quantscope::quant::{Quantized, Spec};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// A .safetensors file, a *.safetensors.index.json, or a model folder.
    pub model: PathBuf,
    /// How to quantize, e.g. int8, int4:g128, uint4:g64:clip=mse, fp8_e4m3:tensor, mxfp4, nvfp4, nf4, kmeans4.
    #[arg(long)]
    pub spec: String,
    /// Only tensors whose name matches this regular expression (default: every float tensor with two or
    /// more dimensions). A 1-D tensor is quantized only when it matches explicitly.
    #[arg(long)]
    pub layers: Option<String>,
    /// Clip method, added to the spec: minmax, pP (e.g. p99.9), mse or kl.
    #[arg(long)]
    pub clip: Option<String>,
    /// Write the fake-quantized (dequantized) tensors here, under their original names and dtypes;
    /// tensors not quantized are copied unchanged. Written to a temporary file, then renamed.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What is printed of one tensor: its metrics and quantizer details, not its values, so memory stays
/// near one tensor whatever the model's size.
struct Row {
    tensor: usize,
    spec: String,
    metrics: quantscope::quant::Metrics,
    groups: usize,
    details: serde_json::Value,
    /// the dequantized values after storing them in the tensor's own dtype (what --out holds)
    stored_max_err: Option<f64>,
}

impl Row {
    fn new(tensor: usize, q: &Quantized, stored_max_err: Option<f64>) -> Row {
        Row {
            tensor,
            spec: q.spec.to_string(),
            metrics: q.metrics,
            groups: q.scales.len(),
            details: details(q),
            stored_max_err,
        }
    }
}

pub fn run(a: QuantizeArgs) -> anyhow::Result<()> {
    let spec_text = match &a.clip {
        Some(c) => format!("{}:clip={c}", a.spec),
        None => a.spec.clone(),
    };
    let spec = Spec::parse(&spec_text)?;
    let filter = super::layer_filter(a.layers.as_deref())?;
    let model = Model::open(&a.model)?;
    let chosen: Vec<usize> = (0..model.tensors.len())
        .filter(|&i| {
            let t = &model.tensors[i];
            match &filter {
                Some(r) => r.is_match(&t.name) && t.is_float() && t.numel() > 0,
                None => t.quantizable(),
            }
        })
        .collect();
    if chosen.is_empty() {
        anyhow::bail!(
            "no tensor to quantize{} (float tensors with data; by default only those with two or more dimensions)",
            if filter.is_some() { " matches --layers" } else { "" }
        );
    }
    if let Some(out) = &a.out {
        let same = std::fs::canonicalize(out)
            .ok()
            .zip(std::fs::canonicalize(&a.model).ok())
            .is_some_and(|(x, y)| x == y);
        if same || out.is_dir() {
            anyhow::bail!(
                "--out must be a new .safetensors file, not the model itself or a folder"
            );
        }
    }
    let bar = progress_bar(
        chosen
            .iter()
            .map(|&i| model.tensors[i].nbytes() as u64)
            .sum(),
        "quantizing",
    );
    let mut rows: Vec<Row> = Vec::new();
    // a tensor at a time, a block of its rows at a time: memory follows a block, not the model
    let one = |i: usize, store: bool| -> anyhow::Result<(Quantized, f64, Option<Vec<u8>>)> {
        let t = &model.tensors[i];
        bar.set_message(t.name.clone());
        let store = if store { Store::Bytes } else { Store::Nothing };
        let r = quantize_tensor(&model, t, &spec, Keep::Nothing, store)?;
        bar.inc(t.nbytes() as u64);
        Ok(r)
    };
    match &a.out {
        None => {
            for &i in &chosen {
                let (q, _, _) = one(i, false)?;
                rows.push(Row::new(i, &q, None));
            }
        }
        Some(out) => {
            let mut order: Vec<usize> = (0..model.tensors.len()).collect();
            order.sort_by_key(|&i| (model.tensors[i].shard, model.tensors[i].start));
            let entries = tensor_entries(&model, &order);
            let mut meta = model.metadata().cloned().unwrap_or_default();
            meta.insert("quantscope_quantize".into(), spec.to_string());
            let mut failure = None;
            write_safetensors(out, Some(&meta), &entries, |k| {
                let i = order[k];
                let t = &model.tensors[i];
                if chosen.binary_search(&i).is_err() {
                    return Ok(model.bytes(t).to_vec());
                }
                match one(i, true) {
                    Ok((q, max_err, bytes)) => {
                        rows.push(Row::new(i, &q, Some(max_err)));
                        Ok(bytes.expect("stored"))
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        failure = Some(e);
                        Err(quantscope::model::ModelError::Other(msg))
                    }
                }
            })
            .map_err(|e| failure.take().unwrap_or_else(|| e.into()))?;
        }
    }
    bar.finish_and_clear();
    // `chosen` is in tensor order
    rows.sort_by_key(|r| r.tensor);

    let numel: u64 = rows
        .iter()
        .map(|r| model.tensors[r.tensor].numel() as u64)
        .sum();
    let bytes: u64 = rows.iter().map(|r| r.metrics.bytes).sum();
    let original: u64 = rows
        .iter()
        .map(|r| model.tensors[r.tensor].nbytes() as u64)
        .sum();
    let bpw = rows
        .iter()
        .map(|r| r.metrics.bits_per_weight * model.tensors[r.tensor].numel() as f64)
        .sum::<f64>()
        / numel as f64;
    if a.json {
        let layers: Vec<_> = rows
            .iter()
            .map(|r| {
                let t = &model.tensors[r.tensor];
                let m = &r.metrics;
                json!({
                    "name": t.name, "shape": t.shape, "dtype": format!("{:?}", t.dtype), "numel": t.numel(),
                    "spec": r.spec,
                    "mse": json_num(m.mse), "sqnr_db": json_num(m.sqnr_db), "cosine": json_num(m.cosine),
                    "max_abs_err": json_num(m.max_abs_err), "bits_per_weight": m.bits_per_weight, "bytes": m.bytes,
                    "groups": r.groups,
                    "stored_max_abs_err": r.stored_max_err.map(json_num),
                    "compression_ratio": t.dtype.bitsize() as f64 / m.bits_per_weight,
                    "details": r.details,
                })
            })
            .collect();
        return print_json(&json!({
            "spec": spec.to_string(),
            "layers": layers,
            "total": {"numel": numel, "bytes": bytes, "bits_per_weight": bpw, "original_bytes": original},
            "out": a.out,
        }));
    }
    println!("spec {spec}");
    println!(
        "{:<52} {:>14} {:>9} {:>10} {:>9} {:>10} {:>7} {:>11}",
        "tensor", "shape", "SQNR dB", "MSE", "cosine", "max|err|", "bits/w", "bytes"
    );
    for r in &rows {
        let t = &model.tensors[r.tensor];
        let m = &r.metrics;
        println!(
            "{:<52} {:>14} {:>9} {:>10} {:>9} {:>10} {:>7.3} {:>11}",
            t.name,
            format!("{:?}", t.shape),
            if m.sqnr_db.is_finite() {
                format!("{:.2}", m.sqnr_db)
            } else {
                "inf".into()
            },
            fmt_short(m.mse),
            format!("{:.6}", m.cosine),
            fmt_short(m.max_abs_err),
            m.bits_per_weight,
            m.bytes
        );
    }
    println!(
        "total: {} tensors, {numel} weights, {bytes} bytes at {bpw:.3} bits/weight (was {original} bytes: {:.2}× smaller)",
        rows.len(),
        original as f64 / bytes.max(1) as f64
    );
    if let Some(out) = &a.out {
        println!("wrote the fake-quantized model to {}", out.display());
    }
    Ok(())
}

/// What a person wants to see of a quantizer's own numbers: the range of its scales, its codebook,
/// thresholds and the share of exact zeros.
fn details(q: &Quantized) -> serde_json::Value {
    let mut d = serde_json::Map::new();
    if !q.scales.is_empty() {
        let (lo, hi) = q
            .scales
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        d.insert("scale_min".into(), json!(lo));
        d.insert("scale_max".into(), json!(hi));
    }
    if !q.zero_points.is_empty() {
        let (lo, hi) = q
            .zero_points
            .iter()
            .fold((i32::MAX, i32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        d.insert("zero_point_min".into(), json!(lo));
        d.insert("zero_point_max".into(), json!(hi));
    }
    if !q.codebook.is_empty() {
        d.insert("codebook".into(), json!(q.codebook));
    }
    if !q.outer_scales.is_empty() {
        let key = if q.outer_scales.len() == 1 {
            "tensor_scale"
        } else {
            "channel_scales"
        };
        let v = if q.outer_scales.len() == 1 {
            json!(q.outer_scales[0])
        } else {
            json!(q.outer_scales.len())
        };
        d.insert(key.into(), v);
    }
    if !q.thresholds.is_empty() {
        let mean = q.thresholds.iter().map(|&v| v as f64).sum::<f64>() / q.thresholds.len() as f64;
        d.insert("threshold_mean".into(), json_num(mean));
    }
    let zeros = q.dequant.iter().filter(|&&v| v == 0.0).count();
    d.insert(
        "zero_fraction".into(),
        json!(zeros as f64 / q.dequant.len().max(1) as f64),
    );
    serde_json::Value::Object(d)
}
