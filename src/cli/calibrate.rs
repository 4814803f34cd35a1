//! `quantscope calibrate`: the activation ranges of every layer input on calibration data, by each
//! range method (`--act` format), and with `--spec` each layer's error with its weights, then its
//! inputs too, quantized.

use super::{json_num, print_json, with_progress};
use quantscope::activations::lm;
use quantscope::activations::ranges::{act_quantizers, all_ranges, range, Method};
use quantscope::activations::report::OUTLIER_FACTOR;
use quantscope::activations::{load, output::output_metrics, pack};
use quantscope::model::Model;
use quantscope::nn::transformer::{is_transformer, Transformer};
use quantscope::plan::score::ProgressHooks;
use quantscope::quant::adaround::{adaround, AdaRoundConfig};
use quantscope::quant::fixed::FixedQuant;
use quantscope::quant::{quantize, Spec};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// The model: a runnable sample model, a transformer's Hugging Face folder (Llama family, Gemma 3,
    /// BERT), or any model with a calibration pack (--data).
    pub model: PathBuf,
    /// A calibration pack (tools/capture_activations.py). Without it, a sample model runs on its own
    /// calibration rows (training rows, never the held-out ones) and a transformer on the calibration
    /// windows of a text.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The range method to report (and to use for --spec): minmax, pP (e.g. p99.99), mse, kl, ema.
    /// Without it, every method's range is listed.
    #[arg(long)]
    pub method: Option<String>,
    /// The activation format the ranges are for (intN, uintN, fp8_e4m3, ...).
    #[arg(long, default_value = "uint8")]
    pub act: String,
    /// Also show each layer's error with its weights quantized by this spec: in weight space, in output
    /// space (X·Wᵀ vs X·Ŵᵀ), and with the activations quantized too (X̂·Ŵᵀ).
    #[arg(long)]
    pub spec: Option<String>,
    /// Sample models: calibration examples and batch size.
    #[arg(long, default_value_t = 512)]
    pub examples: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[command(flatten)]
    pub text: super::TextArgs,
    /// Write the activations as a calibration pack.
    #[arg(long)]
    pub save_pack: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CalibrateArgs) -> anyhow::Result<()> {
    let model = Model::open(&a.model)?;
    let act = Spec::parse(&a.act)?;
    let method = a
        .method
        .as_deref()
        .map(Method::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let wspec = a.spec.as_deref().map(Spec::parse).transpose()?;
    // refuse a format activations cannot use before doing any work
    FixedQuant::new(&act, 0.0, 1.0)?;
    let cal = if a.data.is_none() && is_transformer(&model) {
        let net = Transformer::from_model(&model)?;
        let split = a.text.split(&model, &net, a.text.windows, 0)?;
        with_progress("calibrating", |p| {
            lm::capture(
                &model,
                &net,
                &split.calibration,
                &split.describe,
                lm::Keep::within_budget(&model),
                &ProgressHooks(p),
            )
        })?
    } else {
        let bar = super::progress_bar(0, "calibrate");
        let cal =
            load(&model, a.data.as_deref(), a.examples, a.batch).map_err(anyhow::Error::msg)?;
        bar.finish_and_clear();
        cal
    };
    if let Some(p) = &a.save_pack {
        pack::write(&cal, p)?;
        eprintln!("wrote {}", p.display());
    }
    let quantizers = act_quantizers(&cal, &act, method.unwrap_or(Method::MinMax))?;
    let mut rows = Vec::new();
    for l in &cal.layers {
        let (lo, hi) = l.min_max();
        let ranges = match method {
            Some(m) => {
                let (lo, hi) = range(l, m, &act);
                vec![quantscope::activations::ranges::Range {
                    method: m.name(),
                    lo,
                    hi,
                }]
            }
            None => all_ranges(l, &act),
        };
        let mut errors = serde_json::Map::new();
        if let Some(ws) = &wspec {
            let i = model.find(&l.weight).ok_or_else(|| {
                anyhow::anyhow!(
                    "the calibration names weight '{}', which {} does not have",
                    l.weight,
                    model.source.display()
                )
            })?;
            let t = &model.tensors[i];
            let w = model.read_f32(t)?;
            let q = if ws.adaround {
                let r = adaround(&w, &t.shape, ws, &l.rows, l.k, &AdaRoundConfig::default())?;
                let near =
                    output_metrics(l, &w, &r.nearest.dequant, None).map_err(anyhow::Error::msg)?;
                errors.insert("output_sqnr_db_nearest".into(), json_num(near.sqnr_db));
                errors.insert("adaround_flipped".into(), json!(r.flipped));
                r.quantized
            } else {
                quantize(&w, &t.shape, ws)?
            };
            let out_w = output_metrics(l, &w, &q.dequant, None).map_err(anyhow::Error::msg)?;
            let out_wa = output_metrics(l, &w, &q.dequant, quantizers.get(&l.name))
                .map_err(anyhow::Error::msg)?;
            errors.insert("weight_sqnr_db".into(), json_num(q.metrics.sqnr_db));
            errors.insert("output_sqnr_db".into(), json_num(out_w.sqnr_db));
            errors.insert("output_sqnr_db_with_act".into(), json_num(out_wa.sqnr_db));
        }
        let ch_max = l.channel_absmax.iter().fold(0f32, |m, &v| m.max(v));
        let mut med = l.channel_absmax.clone();
        med.sort_by(f32::total_cmp);
        let median = med.get(med.len() / 2).copied().unwrap_or(0.0);
        let outliers: Vec<usize> = (0..l.channel_absmax.len())
            .filter(|&c| l.channel_absmax[c] > OUTLIER_FACTOR * median)
            .collect();
        let mut row = json!({
            "name": l.name, "weight": l.weight, "k": l.k, "rows": l.row_count(), "seen": l.seen,
            "min": lo, "max": hi,
            "ranges": ranges,
            "channel_absmax_max": ch_max, "channel_absmax_median": median,
            "outlier_channels": outliers, "importance": !l.importance.is_empty(),
        });
        row.as_object_mut().expect("object").extend(errors);
        rows.push(row);
    }
    if a.json {
        return print_json(&json!({
            "model": cal.model, "data": cal.data, "examples": cal.examples, "batches": cal.batches,
            "act": a.act, "spec": wspec.map(|s| s.to_string()),
            "layers": rows,
        }));
    }
    println!("{}", model.source.display());
    println!(
        "activations of {} examples in {} batches: {}",
        cal.examples, cal.batches, cal.data
    );
    println!("ranges for {} activations", a.act);
    for r in &rows {
        println!(
            "\n{}  (k {}, {} rows kept of {} values seen)  min {:.4}  max {:.4}  channel absmax: max {:.3}, median {:.3}, {} outlier channels",
            r["name"].as_str().unwrap_or(""),
            r["k"],
            r["rows"],
            r["seen"],
            r["min"].as_f64().unwrap_or(f64::NAN),
            r["max"].as_f64().unwrap_or(f64::NAN),
            r["channel_absmax_max"].as_f64().unwrap_or(f64::NAN),
            r["channel_absmax_median"].as_f64().unwrap_or(f64::NAN),
            r["outlier_channels"].as_array().map_or(0, Vec::len),
        );
        for m in r["ranges"].as_array().into_iter().flatten() {
            println!(
                "  {:<8} [{:.4}, {:.4}]",
                m["method"].as_str().unwrap_or(""),
                m["lo"].as_f64().unwrap_or(f64::NAN),
                m["hi"].as_f64().unwrap_or(f64::NAN)
            );
        }
        if r.get("weight_sqnr_db").is_some() {
            let f = |k: &str| {
                r[k].as_f64()
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or("inf".into())
            };
            println!(
                "  SQNR dB: weights {}  output {}  output with {} inputs ({}) {}",
                f("weight_sqnr_db"),
                f("output_sqnr_db"),
                a.act,
                method.unwrap_or(Method::MinMax).name(),
                f("output_sqnr_db_with_act")
            );
            if r.get("output_sqnr_db_nearest").is_some() {
                println!(
                    "  AdaRound: output SQNR {} dB vs {} dB with nearest rounding ({} weights rounded the other way)",
                    f("output_sqnr_db"),
                    f("output_sqnr_db_nearest"),
                    r["adaround_flipped"]
                );
            }
        }
    }
    Ok(())
}
