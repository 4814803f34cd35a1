//! The command-line tool: argument parsing and printing; the work is done by the engine.

mod apply;
mod calibrate;
mod cast;
mod eval;
mod export;
mod formats;
mod forward;
mod inspect;
mod lab;
mod mixed;
mod progress;
mod quantize;
mod train;

use clap::{Parser, Subcommand};
pub use progress::{progress_bar, with_progress};

#[derive(Parser, Debug)]
#[command(
    name = "quantscope",
    version,
    about = "Explore neural-network quantization: number formats, quantizers, per-layer error.",
    long_about = "Explore neural-network quantization. With no sub-command, opens the window \
                  (on MODEL, or on the bundled sample model).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A model to open in the window: a .safetensors file, a shard index, or a model folder.
    pub model: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The number-format catalog; one format's layout, constants and every value; or encode a value.
    Formats(formats::FormatsArgs),
    /// Every float tensor of a safetensors file through a format and back to its dtype (no scaling).
    Cast(cast::CastArgs),
    /// Tensors, shapes, dtypes and statistics of a model.
    Inspect(inspect::InspectArgs),
    /// Quantize a model's weights with one spec: per-layer error and size; --out writes the result.
    Quantize(quantize::QuantizeArgs),
    /// Accuracy and loss of a runnable sample model on its held-out data, float and quantized.
    Eval(eval::EvalArgs),
    /// Activation ranges per layer from calibration data (min-max, percentile, MSE, KL, EMA), and
    /// with --spec the weight-space vs output-space error.
    Calibrate(calibrate::CalibrateArgs),
    /// Per layer x candidate spec: the error when only that layer is quantized (weight SQNR; end to end
    /// for models that run).
    Sensitivity(mixed::SensitivityArgs),
    /// The best per-layer plan under a size budget (exact DP; greedy and the trade-off curve for
    /// comparison), with the reason for every choice.
    Search(mixed::SearchArgs),
    /// Write the model with a plan applied: fake-quantized weights, config and tokenizer, plan, report.
    Apply(apply::ApplyArgs),
    /// A plan in another tool's config format (compressed-tensors, llama.cpp).
    Export(export::ExportArgs),
    /// One forward pass of a transformer (Llama family, Gemma 3, BERT) on a text or token ids, written
    /// to a safetensors file: the ids and logits (or an encoder's hidden states and embedding).
    Forward(forward::ForwardArgs),
    /// Teaching labs: `lab matmul` runs a layer as integer-only inference, term by term.
    Lab(lab::LabArgs),
    /// Train a sample model with quantized weights: QAT with the straight-through estimator, k-means
    /// fine-tuning, binary and ternary (TWN, TTQ); --compare for the PTQ-vs-trained table.
    Train(train::TrainArgs),
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Formats(a) => formats::run(a),
        Command::Cast(a) => cast::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Sensitivity(a) => mixed::run_sensitivity(a),
        Command::Search(a) => mixed::run_search(a),
        Command::Apply(a) => apply::run(a),
        Command::Export(a) => export::run(a),
        Command::Forward(a) => forward::run(a),
        Command::Lab(a) => lab::run_lab(a),
        Command::Train(a) => train::run(a),
    }
}

/// JSON for a number: NaN and infinities as the strings "nan", "inf", "-inf".
pub fn json_num(x: f64) -> serde_json::Value {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        serde_json::json!(x)
    }
}

pub fn json_opt(x: Option<f64>) -> serde_json::Value {
    x.map(json_num).unwrap_or(serde_json::Value::Null)
}

pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `--layers REGEX`, parsed with a message that says which option is wrong.
pub fn layer_filter(pattern: Option<&str>) -> anyhow::Result<Option<regex::Regex>> {
    pattern
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--layers is not a valid regular expression: {e}"))
}

/// A transformer's text and its windows, for `eval` and `calibrate`.
#[derive(clap::Args, Debug)]
pub struct TextArgs {
    /// A transformer's text: plain text, or JSONL with a `text` field (default: the bundled English
    /// text). Calibration windows come from its first half, evaluation windows from its second.
    #[arg(long)]
    pub text: Option<std::path::PathBuf>,
    /// Tokens per window (a transformer).
    #[arg(long, default_value_t = 256)]
    pub ctx: usize,
    /// Windows to run (a transformer): calibration windows for `calibrate`, evaluation ones for `eval`.
    #[arg(long, default_value_t = 16)]
    pub windows: usize,
}

impl TextArgs {
    /// The text's windows for `model`: `calib` calibration and `eval` evaluation windows.
    pub fn split(
        &self,
        model: &quantscope::model::Model,
        net: &quantscope::nn::transformer::Transformer,
        calib: usize,
        eval: usize,
    ) -> anyhow::Result<quantscope::nn::text::Split> {
        let text = self
            .text
            .as_deref()
            .map(quantscope::nn::text::read_text)
            .transpose()?;
        Ok(quantscope::plan::score::windows(
            model,
            net,
            text.as_ref(),
            self.ctx,
            calib,
            eval,
        )?)
    }
}
