//! `quantscope lab ...`: the teaching labs, run headless. `lab matmul` is the integer-only linear layer.

use super::{json_num, print_json};
use quantscope::activations::ranges::Method;
use quantscope::intmm::lab::{followed_by_relu, run, LabOptions, MatmulLab, When};
use quantscope::intmm::{parse_weights, OutputType};
use quantscope::model::Model;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub lab: Lab,
}

#[derive(clap::Subcommand, Debug)]
pub enum Lab {
    /// The integer-only linear layer: 8-bit multiplies, int32 accumulation, zero-point terms, the bias
    /// at S_W*S_X, the fixed-point multiplier M = 2^-n*M0; every term's value, and the error vs float.
    Matmul(MatmulArgs),
}

#[derive(clap::Args, Debug)]
pub struct MatmulArgs {
    /// The model: a runnable sample model, or any model with a calibration pack (--data).
    pub model: PathBuf,
    /// The layer (module name, e.g. fc1, or its weight, fc1.weight).
    #[arg(long)]
    pub layer: String,
    /// How many of the calibration rows to run, evenly spread (0: all the calibration kept).
    #[arg(long, default_value_t = 0)]
    pub rows: usize,
    /// Weights: int8 (symmetric, per channel), int8:tensor, uint8 (asymmetric, per channel),
    /// uint8:tensor; any intN/uintN with N <= 8.
    #[arg(long, default_value = "int8")]
    pub weights: String,
    /// Fuse a ReLU: the output clamp starts at the output zero point.
    #[arg(long)]
    pub relu: bool,
    /// The output type: uint8 (asymmetric) or int8 (symmetric).
    #[arg(long, default_value = "uint8")]
    pub output: String,
    /// How the uint8 input range is calibrated: minmax, pP (e.g. p99.99), mse, kl, ema.
    #[arg(long, default_value = "minmax")]
    pub range: String,
    /// The output element whose terms are listed, ROW,OUT (default: the one with the largest error).
    #[arg(long)]
    pub pick: Option<String>,
    /// A calibration pack (tools/capture_activations.py) for a model the engine cannot run.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Sample models: calibration examples and batch size.
    #[arg(long, default_value_t = 512)]
    pub examples: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// With --json: include this many (float, integer) pairs for a scatter plot.
    #[arg(long, default_value_t = 0)]
    pub scatter: usize,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run_lab(a: LabArgs) -> anyhow::Result<()> {
    match a.lab {
        Lab::Matmul(m) => matmul(m),
    }
}

fn parse_pick(s: &str) -> anyhow::Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("--pick '{s}': use ROW,OUT, e.g. 0,3");
    let (r, i) = s.split_once(',').ok_or_else(bad)?;
    Ok((
        r.trim().parse().map_err(|_| bad())?,
        i.trim().parse().map_err(|_| bad())?,
    ))
}

fn matmul(a: MatmulArgs) -> anyhow::Result<()> {
    // check every option before any work
    let opts = LabOptions {
        weights: parse_weights(&a.weights)?,
        input_method: Method::parse(&a.range).map_err(anyhow::Error::msg)?,
        output: OutputType::parse(&a.output)?,
        relu: a.relu,
        rows: a.rows,
        pick: a.pick.as_deref().map(parse_pick).transpose()?,
        scatter_points: a.scatter.max(1),
        ..LabOptions::default()
    };
    let model = Model::open(&a.model)?;
    let bar = super::progress_bar(0, "calibrate");
    let cal = quantscope::activations::load(&model, a.data.as_deref(), a.examples, a.batch)
        .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    let layer = cal.layer(&a.layer).ok_or_else(|| {
        anyhow::anyhow!(
            "no layer '{}' in the calibration; layers: {}",
            a.layer,
            cal.layers
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let lab = run(&model, layer, &opts)?;
    let relu_hint = !a.relu && followed_by_relu(&model, &layer.name);
    if a.json {
        let mut v = serde_json::to_value(&lab)?;
        let o = v.as_object_mut().expect("an object");
        o.insert("model".into(), json!(model.source.display().to_string()));
        o.insert("data".into(), json!(cal.data));
        for key in ["vs_float", "reference_vs_float"] {
            o[key]["sqnr_db"] = json_num(match key {
                "vs_float" => lab.vs_float.sqnr_db,
                _ => lab.reference_vs_float.sqnr_db,
            });
        }
        if a.scatter > 0 {
            o.insert("scatter".into(), json!(lab.scatter));
        }
        o.insert(
            "model_applies_relu_after".into(),
            json!(followed_by_relu(&model, &layer.name)),
        );
        return print_json(&v);
    }
    print_text(&model, &cal.data, &lab, relu_hint);
    Ok(())
}

fn range_of(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    })
}

fn print_text(model: &Model, data: &str, l: &MatmulLab, relu_hint: bool) {
    println!(
        "{}  layer {} ({} [{}, {}]), {} of {} calibration rows",
        model.source.display(),
        l.layer,
        l.weight,
        l.out,
        l.k,
        l.rows,
        l.rows_available
    );
    println!("  calibration: {data}");
    println!("\nQuantization (r = S (q - Z))");
    let (smin, smax) = range_of(l.w_scales.iter().map(|&s| s as f64));
    let (zmin, zmax) = range_of(l.w_zeros.iter().map(|&z| z as f64));
    println!(
        "  weights  {}  S_W {}  Z_W {}",
        l.weights,
        if l.per_channel {
            format!("per channel in [{smin:.4e}, {smax:.4e}]")
        } else {
            format!("{smin:.4e}")
        },
        if zmin == zmax {
            format!("{zmin}")
        } else {
            format!("in [{zmin}, {zmax}]")
        }
    );
    println!(
        "  inputs   {:<14} S_X {:.4e}  Z_X {}  range [{:.4}, {:.4}] ({})",
        "uint8", l.input.scale, l.input.zero, l.input.range.0, l.input.range.1, l.input.method
    );
    println!(
        "  outputs  {:<14} S_Y {:.4e}  Z_Y {}  range [{:.4}, {:.4}] ({}); clamp [{}, {}]{}",
        l.output_type.name(),
        l.output.scale,
        l.output.zero,
        l.output.range.0,
        l.output.range.1,
        l.output.method,
        l.clamp.0,
        l.clamp.1,
        if l.relu { " = the fused ReLU" } else { "" }
    );
    if !l.has_bias {
        println!("  (the layer has no bias)");
    }
    let (mmin, mmax) = range_of(l.multipliers.iter().map(|m| m.real));
    let (nmin, nmax) = range_of(l.multipliers.iter().map(|m| m.n() as f64));
    let m = &l.multipliers[l.pick.1];
    println!(
        "  M = S_W S_X / S_Y {}: M(i) for i = {}: {:.6e} = 2^-{} * M0, M0 = {} / 2^31 = {:.9}",
        if l.per_channel {
            format!("per channel in [{mmin:.4e}, {mmax:.4e}], n in [{nmin}, {nmax}]")
        } else {
            "for the tensor".to_string()
        },
        l.pick.1,
        m.real,
        m.n(),
        m.m0,
        m.m0 as f64 / 2f64.powi(31)
    );
    if relu_hint {
        println!(
            "  note: the model applies a ReLU after {}; --relu fuses it into the output clamp",
            l.layer
        );
    }
    println!(
        "\nOutput element (row {}, output {}) -- every term, in the order an integer engine computes them",
        l.pick.0, l.pick.1
    );
    println!(
        "  {:<10} {:<22} {:>16}  formula; note",
        "when", "term", "value"
    );
    for t in &l.terms {
        println!(
            "  {:<10} {:<22} {:>16}  {}; {}",
            t.when.label(),
            t.name,
            t.value_text(),
            t.formula,
            t.note
        );
    }
    let offline = l.terms.iter().filter(|t| t.when == When::Offline).count();
    let per_input = l.terms.iter().filter(|t| t.when == When::PerInput).count();
    println!("  ({offline} terms precomputed offline, {per_input} computed per input)");
    let e = |s: &quantscope::intmm::lab::ErrorStats| {
        format!(
            "max |err| {:.4e} ({:.3} LSB)  mean |err| {:.3} LSB  MSE {:.4e}  SQNR {:.2} dB  cosine {:.6}",
            s.max_abs, s.max_lsb, s.mean_abs_lsb, s.mse, s.sqnr_db, s.cosine
        )
    };
    println!(
        "\nAgainst the float layer ({} outputs; LSB = S_Y)",
        l.elements
    );
    println!("  integer path    {}", e(&l.vs_float));
    println!("  f64 reference   {}", e(&l.reference_vs_float));
    println!(
        "  integer vs f64 reference: max {} code(s) apart; {} of {} codes differ",
        l.max_code_diff, l.codes_differing, l.elements
    );
    println!(
        "  clipped: {} inputs outside the input grid, {} float outputs outside the output grid",
        l.clipped_inputs, l.clipped_outputs
    );
    let b = &l.bound;
    println!(
        "\nDerived bound |y^ - f(y)| <= S_Y(1/2 + 2^-(n+1) + |M acc| 2^-31) + sum|w| e_X + sum|x^| e_W + S_W S_X/2 + clip + float"
    );
    println!(
        "  largest bound {:.4e} ({:.3} LSB); error/bound at most {:.3}; {} elements above their bound",
        b.max, b.max_lsb, b.worst_ratio, b.violations
    );
    let parts = |p: &[quantscope::intmm::lab::Part]| {
        p.iter()
            .map(|p| format!("{} {:.3}", p.name, p.lsb))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  mean parts (LSB): {}", parts(&b.mean_parts_lsb));
    println!(
        "  at the element: {} = {:.3} LSB",
        parts(&b.pick_parts_lsb),
        b.pick_total_lsb
    );
}
