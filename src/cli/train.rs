//! `quantscope train`: quantization-aware training, k-means fine-tuning and binary / ternary training
//! of a runnable sample model (`nn::train`).

use super::print_json;
use quantscope::model::Model;
use quantscope::nn::train::{
    comparison_modes, train, CompareRow, Mode, Optimizer, TrainConfig, TrainEvent, Trained,
};
use quantscope::quant::Spec;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("mode")
        .required(true)
        .args(["qat", "kmeans_finetune", "binary", "ternary", "compare"])
))]
pub struct TrainArgs {
    /// A runnable sample model (its metadata describes the network, its data and held-out split).
    pub model: PathBuf,
    /// Quantization-aware training: fake-quantize the weights with this spec in the forward pass,
    /// straight-through estimator backward (int2..int8, uint*, fp*, binary, ternary; kmeansN = k-means
    /// fine-tuning).
    #[arg(long, value_name = "SPEC")]
    pub qat: Option<String>,
    /// Deep Compression: cluster every layer into 2^N centroids and fine-tune the centroids.
    #[arg(long, value_name = "N")]
    pub kmeans_finetune: Option<u32>,
    /// Binary weights: BinaryConnect with XNOR-Net's per-channel scale (= --qat binary).
    #[arg(long)]
    pub binary: bool,
    /// Ternary weights: twn (Ternary Weight Networks, = --qat ternary) or ttq (Trained Ternary
    /// Quantization, learned positive and negative scales, t = 0.05).
    #[arg(long, value_name = "twn|ttq")]
    pub ternary: Option<String>,
    /// Train every method of the comparison table (int8, int4, int3, int2, k-means 3 and 2 bits,
    /// ternary TWN and TTQ, binary) and print PTQ vs trained accuracy side by side.
    #[arg(long, conflicts_with = "out")]
    pub compare: bool,
    /// Quantize every layer's input too, with this format (e.g. uint8), over min-max ranges from the
    /// calibration rows, recalibrated after every epoch.
    #[arg(long, value_name = "SPEC")]
    pub act: Option<String>,
    #[arg(long, default_value_t = 8)]
    pub epochs: usize,
    /// Peak learning rate; it decays to 0 along a cosine over the run.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// adam or sgd (momentum 0.9).
    #[arg(long, default_value = "adam")]
    pub optimizer: String,
    /// Keep the biases as they are: train only the quantized weights (or the codebooks and scales).
    #[arg(long)]
    pub freeze_bias: bool,
    /// Train on at most this many training rows (an even stride over the file).
    #[arg(long, value_name = "N")]
    pub max_rows: Option<usize>,
    /// Write the trained model (a sample model like the input: `quantscope eval` and the window open it).
    #[arg(long, value_name = "M.safetensors")]
    pub out: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

fn mode_of(a: &TrainArgs) -> anyhow::Result<Option<Mode>> {
    let m = if let Some(s) = &a.qat {
        Mode::parse(s).map_err(|e| anyhow::anyhow!("--qat: {e}"))?
    } else if let Some(n) = a.kmeans_finetune {
        if !(1..=8).contains(&n) {
            anyhow::bail!("--kmeans-finetune takes 1..8 bits (2^N centroids), not {n}");
        }
        Mode::Kmeans(n)
    } else if a.binary {
        Mode::parse("binary").map_err(anyhow::Error::msg)?
    } else if let Some(t) = &a.ternary {
        match t.trim().to_ascii_lowercase().as_str() {
            "twn" => Mode::parse("twn").map_err(anyhow::Error::msg)?,
            "ttq" => Mode::Ttq,
            _ => anyhow::bail!("--ternary takes twn or ttq, not '{t}'"),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(m))
}

fn pct(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

/// Run one training with progress on stderr (a bar on a terminal, a line per epoch always).
fn run_one(model: &Model, cfg: &TrainConfig, tag: &str) -> anyhow::Result<Trained> {
    let bar = super::progress_bar(0, tag);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let epochs = cfg.epochs;
    let t = train(model, cfg, &mut |e| {
        match e {
            TrainEvent::Step {
                epoch,
                step,
                steps_per_epoch,
                loss,
                ..
            } => {
                bar.set_length((steps_per_epoch * epochs) as u64);
                bar.set_position(((epoch - 1) * steps_per_epoch + step) as u64);
                bar.set_message(format!("epoch {epoch}/{epochs} loss {loss:.4}"));
            }
            TrainEvent::Epoch(s) => {
                let train = match (s.train_loss, s.train_accuracy) {
                    (Some(l), Some(a)) => format!("train loss {l:.4} acc {}  ", pct(a)),
                    _ => "before training  ".into(),
                };
                bar.suspend(|| {
                    eprintln!(
                        "{tag} epoch {}/{epochs}  {train}held-out acc {} loss {:.4}",
                        s.epoch,
                        pct(s.held_out_accuracy),
                        s.held_out_loss
                    )
                });
            }
        }
        true
    })?;
    bar.finish_and_clear();
    Ok(t)
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let model = Model::open(&a.model)?;
    let act = a.act.as_deref().map(Spec::parse).transpose()?;
    let optimizer = Optimizer::parse(&a.optimizer).map_err(anyhow::Error::msg)?;
    let base = |mode: Mode| TrainConfig {
        mode,
        act,
        epochs: a.epochs,
        lr: a.lr,
        batch: a.batch,
        seed: a.seed,
        optimizer,
        max_rows: a.max_rows,
        freeze_bias: a.freeze_bias,
    };
    if a.compare {
        return compare(&model, &a, &base);
    }
    let mode = mode_of(&a)?.expect("clap requires a mode");
    let cfg = base(mode);
    let t = run_one(&model, &cfg, &mode.label())?;
    if let Some(out) = &a.out {
        if std::fs::canonicalize(out).ok() == std::fs::canonicalize(&a.model).ok() {
            anyhow::bail!("--out is the input model; the source is never overwritten");
        }
        t.save(&model, out)?;
    }
    if a.json {
        let mut v = t.to_json();
        v["model"] = json!(model.source);
        v["out"] = json!(a.out);
        return print_json(&v);
    }
    println!(
        "{}: {} ({} training rows, {} held out)",
        model.source.display(),
        t.describe(),
        t.train_rows,
        t.held_out_rows
    );
    let what = match mode.ptq_spec() {
        Some(s) => format!("before (PTQ {s})"),
        None => "before (TTQ's initial scales)".into(),
    };
    println!(
        "{:<28} held-out accuracy {:>8}  loss {:.4}",
        what,
        pct(t.before().held_out_accuracy),
        t.before().held_out_loss
    );
    println!(
        "{:<28} held-out accuracy {:>8}  loss {:.4}  ({:+.2} points){}",
        "after",
        pct(t.after().held_out_accuracy),
        t.after().held_out_loss,
        100.0 * (t.after().held_out_accuracy - t.before().held_out_accuracy),
        if t.stopped { "  [stopped early]" } else { "" }
    );
    for l in &t.layers {
        let extra = match (mode, l.threshold) {
            (Mode::Ttq, Some(d)) => format!(
                "  W^n {:.4}  W^p {:.4}  threshold {:.4} (latent)",
                l.codebook[0], l.codebook[1], d
            ),
            (Mode::Kmeans(_), _) => format!(
                "  centroids [{}]",
                l.codebook
                    .iter()
                    .map(|c| format!("{c:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        };
        println!(
            "  {:<8} {:>4} distinct values{extra}",
            l.name, l.distinct_values
        );
    }
    if let Some(out) = &a.out {
        println!(
            "saved {} (weights only, float activations: accuracy {})",
            out.display(),
            pct(t.weights_only.0)
        );
    }
    Ok(())
}

fn compare(model: &Model, a: &TrainArgs, base: &dyn Fn(Mode) -> TrainConfig) -> anyhow::Result<()> {
    let modes = comparison_modes();
    let mut rows: Vec<CompareRow> = Vec::new();
    for (i, &m) in modes.iter().enumerate() {
        let tag = format!("[{}/{}] {}", i + 1, modes.len(), m.label());
        let t = run_one(model, &base(m), &tag)?;
        rows.push(CompareRow::from_trained(&t));
    }
    let act = a.act.clone().unwrap_or("float".into());
    if a.json {
        return print_json(&json!({
            "model": model.source, "act": act, "epochs": a.epochs, "lr": a.lr, "batch": a.batch,
            "seed": a.seed, "rows": rows,
        }));
    }
    println!(
        "{}: weights quantized, activations {act}; PTQ = the quantizer applied to the float model, \
         trained = {} epochs from it",
        model.source.display(),
        a.epochs
    );
    println!(
        "{:<16} {:>4}  {:>10}  {:>10}  {:>8}",
        "method", "bits", "PTQ", "trained", "change"
    );
    for r in &rows {
        println!(
            "{:<16} {:>4}  {:>10}  {:>10}  {:>+8.2}",
            r.method,
            r.bits,
            pct(r.ptq_accuracy),
            pct(r.trained_accuracy),
            100.0 * (r.trained_accuracy - r.ptq_accuracy)
        );
    }
    Ok(())
}
