//! The integer-only layer as a lab a student can poke at: one layer of a model, its calibration
//! inputs, every term of the integer computation with its value (which are precomputed offline and
//! which are per input), the fixed-point multiplier, and the integer result against the float layer
//! (error statistics, a scatter plot, an error histogram, the derived bound). The CLI
//! (`quantscope lab matmul`) prints it; the window's Labs tab draws it.

use super::{ActQuant, IntForward, IntLinear, IntMmError, OutputType};
use crate::activations::ranges::{range, Method};
use crate::activations::LayerActivations;
use crate::intmm::FixedMultiplier;
use crate::kernels::gemm::xwt;
use crate::model::Model;
use crate::quant::{Metrics, Spec};
use crate::stats::{histogram, Histogram};
use serde::Serialize;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct LabOptions {
    /// The weight spec (see [`super::parse_weights`]).
    pub weights: Spec,
    /// How the input range is calibrated.
    pub input_method: Method,
    pub output: OutputType,
    /// Fuse a ReLU: the output clamp starts at the zero point.
    pub relu: bool,
    /// How many of the calibration rows to run (evenly spread; 0: all of them).
    pub rows: usize,
    /// The output element whose terms are shown, `(row, output channel)`; `None`: the one with the
    /// largest error against the float layer.
    pub pick: Option<(usize, usize)>,
    /// At most this many (float, integer) pairs for the scatter plot.
    pub scatter_points: usize,
    pub hist_bins: usize,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            weights: Spec::parse("int8").expect("int8 parses"),
            input_method: Method::MinMax,
            output: OutputType::Uint8,
            relu: false,
            rows: 0,
            pick: None,
            scatter_points: 4000,
            hist_bins: 61,
        }
    }
}

/// When a term is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Once, when the model is converted (from the weights, the bias and the calibrated scales).
    Offline,
    /// For every input.
    PerInput,
    /// The result, and what it is compared with.
    Result,
}

impl When {
    pub fn label(&self) -> &'static str {
        match self {
            When::Offline => "offline",
            When::PerInput => "per input",
            When::Result => "result",
        }
    }
}

/// One term of the computation of the picked output element.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Term {
    pub name: String,
    pub formula: String,
    pub value: f64,
    /// An integer (int32) value, as opposed to a real one.
    pub integer: bool,
    pub when: When,
    pub note: String,
}

impl Term {
    pub fn value_text(&self) -> String {
        if self.integer {
            format!("{}", self.value as i64)
        } else if self.value != 0.0 && self.value.abs() < 0.01 {
            format!("{:.4e}", self.value)
        } else {
            format!("{:.6}", self.value)
        }
    }
}

/// Error statistics of one result against the float layer (docs/DESIGN.md §3), and in output steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorStats {
    pub max_abs: f64,
    pub mse: f64,
    pub sqnr_db: f64,
    pub cosine: f64,
    /// `max |ŷ − y| / S_Y`.
    pub max_lsb: f64,
    pub mean_abs_lsb: f64,
}

/// The derived bound, summarised over all elements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoundSummary {
    /// The largest per-element bound, and in output steps.
    pub max: f64,
    pub max_lsb: f64,
    /// The largest `|ŷ − f(y)| / bound` over the elements (≤ 1 when the bound holds).
    pub worst_ratio: f64,
    /// Elements whose error exceeds their bound (0 when the derivation is right).
    pub violations: usize,
    /// The mean of each part over the elements, in output steps.
    pub mean_parts_lsb: Vec<Part>,
    /// Each part at the picked element, in output steps.
    pub pick_parts_lsb: Vec<Part>,
    pub pick_total_lsb: f64,
}

/// One part of the bound, in output steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    pub name: String,
    pub lsb: f64,
}

/// The lab's result for one layer.
#[derive(Debug, Clone, Serialize)]
pub struct MatmulLab {
    pub layer: String,
    pub weight: String,
    pub k: usize,
    pub out: usize,
    /// Rows run, and rows the calibration kept.
    pub rows: usize,
    pub rows_available: usize,
    pub weights: String,
    pub per_channel: bool,
    pub has_bias: bool,
    pub input: ActQuant,
    pub output: ActQuant,
    pub output_type: OutputType,
    pub relu: bool,
    /// The output clamp in codes.
    pub clamp: (i32, i32),
    pub w_scales: Vec<f32>,
    pub w_zeros: Vec<i32>,
    pub multipliers: Vec<FixedMultiplier>,
    /// `(row, output channel)` of the element whose terms are listed.
    pub pick: (usize, usize),
    pub terms: Vec<Term>,
    /// The integer path against the float layer.
    pub vs_float: ErrorStats,
    /// The f64 evaluation of the same quantized math against the float layer.
    pub reference_vs_float: ErrorStats,
    /// The integer path against the f64 reference, in output codes.
    pub max_code_diff: i32,
    pub codes_differing: usize,
    pub elements: usize,
    pub bound: BoundSummary,
    /// Inputs outside the calibrated input grid, and float outputs outside the output grid.
    pub clipped_inputs: usize,
    pub clipped_outputs: usize,
    /// (float, integer-path dequantized) pairs, evenly sampled.
    #[serde(skip)]
    pub scatter: Vec<[f32; 2]>,
    /// `(ŷ − f(y)) / S_Y` over the elements, leaving out those a fused ReLU sets to exactly 0 on
    /// both paths (after a ReLU they are most of them, and their error is exactly 0).
    pub error_hist_lsb: Histogram,
    /// How many elements the histogram leaves out for that reason.
    pub relu_zeros: usize,
}

/// Whether the model's architecture (a sample model's metadata) applies a ReLU right after `layer`.
pub fn followed_by_relu(model: &Model, layer: &str) -> bool {
    let Some(arch) = model.metadata().and_then(|m| m.get("architecture")) else {
        return false;
    };
    let Ok(ops) = serde_json::from_str::<Vec<serde_json::Value>>(arch) else {
        return false;
    };
    ops.iter()
        .position(|o| o.get("name").and_then(|n| n.as_str()) == Some(layer))
        .and_then(|p| ops.get(p + 1))
        .and_then(|o| o.get("op"))
        .and_then(|o| o.as_str())
        == Some("relu")
}

/// A layer's float weight and bias as the model stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// `[out, k]` row-major.
    pub w: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub out: usize,
}

/// The weight (`[out, k]`) and bias of the layer the calibration names, from `model`.
pub fn layer_weights(model: &Model, layer: &LayerActivations) -> Result<LayerWeights, IntMmError> {
    let i = model.find(&layer.weight).ok_or_else(|| {
        IntMmError::Invalid(format!(
            "the calibration names weight '{}', which {} does not have",
            layer.weight,
            model.source.display()
        ))
    })?;
    let t = &model.tensors[i];
    if t.shape.len() < 2 {
        return Err(IntMmError::Invalid(format!(
            "'{}' has shape {:?}: not a weight matrix",
            layer.weight, t.shape
        )));
    }
    let out = t.shape[0];
    let k: usize = t.shape[1..].iter().product();
    if k != layer.k {
        return Err(IntMmError::Invalid(format!(
            "'{}' has shape {:?} ({k} input columns) but the calibration rows have {}",
            layer.weight, t.shape, layer.k
        )));
    }
    let w = model.read_f32(t)?;
    let bias_name = match layer.weight.strip_suffix(".weight") {
        Some(stem) => format!("{stem}.bias"),
        None => format!("{}.bias", layer.name),
    };
    let bias = match model.find(&bias_name) {
        Some(b) => {
            let b = model.read_f32(&model.tensors[b])?;
            if b.len() != out {
                return Err(IntMmError::Invalid(format!(
                    "'{bias_name}' has {} values for {out} outputs",
                    b.len()
                )));
            }
            Some(b)
        }
        None => None,
    };
    if w.iter()
        .chain(bias.iter().flatten())
        .any(|v| !v.is_finite())
    {
        return Err(IntMmError::Invalid(format!(
            "'{}' or its bias holds NaN or Inf values",
            layer.weight
        )));
    }
    Ok(LayerWeights { w, bias, out })
}

/// Run the lab on `layer` of `model`.
pub fn run(
    model: &Model,
    layer: &LayerActivations,
    opts: &LabOptions,
) -> Result<MatmulLab, IntMmError> {
    let lw = layer_weights(model, layer)?;
    run_on(layer, &lw.w, lw.bias.as_deref(), lw.out, opts)
}

fn stats(y: &[f32], y_hat: &[f32], sy: f64) -> ErrorStats {
    let m = Metrics::compute(y, y_hat, 0);
    let mean_abs = y
        .iter()
        .zip(y_hat)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum::<f64>()
        / y.len().max(1) as f64;
    ErrorStats {
        max_abs: m.max_abs_err,
        mse: m.mse,
        sqnr_db: m.sqnr_db,
        cosine: m.cosine,
        max_lsb: m.max_abs_err / sy,
        mean_abs_lsb: mean_abs / sy,
    }
}

/// Run the lab on a layer given its float weight `[out, k]` and bias.
pub fn run_on(
    layer: &LayerActivations,
    w: &[f32],
    bias: Option<&[f32]>,
    out: usize,
    opts: &LabOptions,
) -> Result<MatmulLab, IntMmError> {
    let k = layer.k;
    let available = layer.row_count();
    if available == 0 || k == 0 {
        return Err(IntMmError::Invalid(format!(
            "{}: the calibration kept no input rows",
            layer.name
        )));
    }
    if layer.rows.iter().any(|v| !v.is_finite()) {
        return Err(IntMmError::Invalid(format!(
            "{}: the calibration rows hold NaN or Inf values",
            layer.name
        )));
    }
    let zeros = vec![0f32; out];
    let b = bias.unwrap_or(&zeros);
    // inputs: uint8 over the calibrated range
    let uint8 = Spec::parse("uint8").expect("uint8 parses");
    let (lo, hi) = range(layer, opts.input_method, &uint8);
    let input = ActQuant::new(OutputType::Uint8, lo, hi, &opts.input_method.name())?;
    // outputs: the float layer's range on all the calibration rows (and the recorded output sample)
    let y_all = xwt(&layer.rows, available, k, w, out, Some(b));
    let (mut ylo, mut yhi) = y_all
        .iter()
        .chain(&layer.outputs)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, c), &v| {
            (a.min(v), c.max(v))
        });
    if opts.relu {
        (ylo, yhi) = (0.0, yhi.max(0.0));
    }
    let output = ActQuant::new(
        opts.output,
        ylo,
        yhi,
        "minmax of the float output on the calibration rows",
    )?;
    let lin = IntLinear::new(
        w,
        b,
        (out, k),
        &opts.weights,
        input.clone(),
        output.clone(),
        opts.relu,
    )?;

    // the rows to run, evenly spread over what the calibration kept
    let rows = if opts.rows == 0 {
        available
    } else {
        opts.rows.min(available)
    };
    let mut x = Vec::with_capacity(rows * k);
    for j in 0..rows {
        let r = j * available / rows;
        x.extend_from_slice(&layer.rows[r * k..(r + 1) * k]);
    }
    let fwd = lin.forward(&x, rows)?;
    let y = xwt(&x, rows, k, w, out, Some(b));
    let fy: Vec<f32> = y.iter().map(|&v| lin.f(v)).collect();
    let y_int: Vec<f32> = fwd.q.iter().map(|&q| output.value(q) as f32).collect();
    let (_, ref_q) = lin.reference(&fwd.qx, rows);
    let y_ref: Vec<f32> = ref_q.iter().map(|&q| output.value(q) as f32).collect();
    let sy = output.scale as f64;
    let vs_float = stats(&fy, &y_int, sy);
    let reference_vs_float = stats(&fy, &y_ref, sy);
    let (mut max_code_diff, mut codes_differing) = (0, 0);
    for (a, r) in fwd.q.iter().zip(&ref_q) {
        let d = (a - r).abs();
        max_code_diff = max_code_diff.max(d);
        codes_differing += usize::from(d != 0);
    }

    // the derived bound
    let parts = lin.bounds(&x, rows, &fwd, &y);
    let n = rows * out;
    let err: Vec<f64> = (0..n)
        .map(|j| (y_int[j] as f64 - fy[j] as f64).abs())
        .collect();
    let (mut bmax, mut worst, mut violations) = (0f64, 0f64, 0usize);
    for (j, &e) in err.iter().enumerate() {
        let t = parts.total(j);
        bmax = bmax.max(t);
        worst = worst.max(if t > 0.0 { e / t } else { 0.0 });
        violations += usize::from(e > t);
    }
    let pick = match opts.pick {
        Some((r, i)) => {
            if r >= rows || i >= out {
                return Err(IntMmError::Invalid(format!(
                    "element ({r}, {i}) is outside the {rows} x {out} output"
                )));
            }
            (r, i)
        }
        None => {
            let j = (0..n)
                .max_by(|&a, &b| err[a].total_cmp(&err[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            (j / out, j % out)
        }
    };
    let pj = pick.0 * out + pick.1;
    let names = [
        "output rounding",
        "input quantization",
        "weight quantization",
        "bias rounding",
        "output clipping",
        "float reference rounding",
    ];
    let cols = [
        &parts.output_rounding,
        &parts.input,
        &parts.weight,
        &parts.bias,
        &parts.clipping,
        &parts.float,
    ];
    let bound = BoundSummary {
        max: bmax,
        max_lsb: bmax / sy,
        worst_ratio: worst,
        violations,
        mean_parts_lsb: names
            .iter()
            .zip(cols)
            .map(|(nm, c)| Part {
                name: nm.to_string(),
                lsb: c.iter().sum::<f64>() / n as f64 / sy,
            })
            .collect(),
        pick_parts_lsb: names
            .iter()
            .zip(cols)
            .map(|(nm, c)| Part {
                name: nm.to_string(),
                lsb: c[pj] / sy,
            })
            .collect(),
        pick_total_lsb: parts.total(pj) / sy,
    };

    let terms = terms(&lin, &fwd, pick, y[pj], ref_q[pj]);
    let step = (n / opts.scatter_points.max(1)).max(1);
    let scatter = (0..n).step_by(step).map(|j| [fy[j], y_int[j]]).collect();
    let both_zero = |j: usize| opts.relu && fy[j] == 0.0 && y_int[j] == 0.0;
    let relu_zeros = (0..n).filter(|&j| both_zero(j)).count();
    let err_lsb: Vec<f32> = (0..n)
        .filter(|&j| !both_zero(j))
        .map(|j| ((y_int[j] as f64 - fy[j] as f64) / sy) as f32)
        .collect();
    let m = err_lsb.iter().fold(0f32, |m, v| m.max(v.abs())).max(0.5);
    let error_hist_lsb = histogram(&err_lsb, opts.hist_bins, Some((-m as f64, m as f64)));
    let clipped_inputs = x
        .iter()
        .filter(|&&v| v < input.grid.0 || v > input.grid.1)
        .count();
    let (olo, ohi) = (
        output.value(lin.clamp.0) as f32,
        output.value(lin.clamp.1) as f32,
    );
    let clipped_outputs = fy.iter().filter(|&&v| v < olo || v > ohi).count();
    Ok(MatmulLab {
        layer: layer.name.clone(),
        weight: layer.weight.clone(),
        k,
        out,
        rows,
        rows_available: available,
        weights: lin.weight_spec.clone(),
        per_channel: lin.per_channel,
        has_bias: bias.is_some(),
        input,
        output,
        output_type: opts.output,
        relu: opts.relu,
        clamp: lin.clamp,
        w_scales: lin.w_scale.clone(),
        w_zeros: lin.w_zero.clone(),
        multipliers: lin.multipliers.clone(),
        pick,
        terms,
        vs_float,
        reference_vs_float,
        max_code_diff,
        codes_differing,
        elements: n,
        bound,
        clipped_inputs,
        clipped_outputs,
        scatter,
        error_hist_lsb,
        relu_zeros,
    })
}

/// Every term of output element `(r, i)`, in the order an integer engine computes them.
fn terms(
    lin: &IntLinear,
    fwd: &IntForward,
    (r, i): (usize, usize),
    y: f32,
    q_ref: i32,
) -> Vec<Term> {
    let out = lin.out;
    let j = r * out + i;
    let (zx, zw, zy) = (lin.input.zero, lin.w_zero[i], lin.output.zero);
    let m = lin.multipliers[i];
    let (high, shifted, q) = lin.requantize(fwd.acc[j], i);
    let y_hat = lin.output.value(q);
    let fy = lin.f(y) as f64;
    let int = |name: &str, formula: String, v: i64, when: When, note: String| Term {
        name: name.into(),
        formula,
        value: v as f64,
        integer: true,
        when,
        note,
    };
    let real = |name: &str, formula: String, v: f64, when: When, note: String| Term {
        name: name.into(),
        formula,
        value: v,
        integer: false,
        when,
        note,
    };
    let sym = zw == 0;
    let wt = match lin.codes {
        super::WeightCodes::I8(_) => "int8",
        super::WeightCodes::U8(_) => "uint8",
    };
    vec![
        int(
            "a_W(i)",
            "sum_k q_W(i,k)".into(),
            lin.a_w[i] as i64,
            When::Offline,
            "row sum of the weight codes".into(),
        ),
        int(
            "q_b(i)",
            "round(b(i) / (S_W(i) S_X))".into(),
            lin.q_bias[i] as i64,
            When::Offline,
            format!(
                "the bias {:.6} as int32 at scale S_W S_X = {:.4e}",
                lin.bias[i],
                lin.w_scale[i] as f64 * lin.input.scale as f64
            ),
        ),
        int(
            "-Z_X a_W(i)",
            format!("-{zx} * {}", lin.a_w[i]),
            -(zx as i64) * lin.a_w[i] as i64,
            When::Offline,
            "input zero point times the weight row sum".into(),
        ),
        int(
            "K Z_W Z_X",
            format!("{} * {zw} * {zx}", lin.k),
            lin.kzz[i] as i64,
            When::Offline,
            if sym {
                "0: symmetric weights have Z_W = 0".into()
            } else {
                "both zero points".into()
            },
        ),
        int(
            "Q_bias(i)",
            "q_b - Z_X a_W + K Z_W Z_X".into(),
            lin.folded[i] as i64,
            When::Offline,
            "everything offline, folded into one int32 bias".into(),
        ),
        int(
            "sum q_W q_X",
            format!("sum_k q_W(i,k) q_X(r,k), K = {}", lin.k),
            fwd.core[j] as i64,
            When::PerInput,
            format!("{} {wt} x uint8 multiplies, int32 accumulation", lin.k),
        ),
        int(
            "a_X(r)",
            "sum_k q_X(r,k)".into(),
            fwd.a_x[r] as i64,
            When::PerInput,
            if sym {
                "not needed: Z_W = 0".into()
            } else {
                "row sum of the input codes".into()
            },
        ),
        int(
            "-Z_W a_X(r)",
            format!("-{zw} * {}", fwd.a_x[r]),
            -(zw as i64) * fwd.a_x[r] as i64,
            When::PerInput,
            if sym {
                "0: skipped with symmetric weights".into()
            } else {
                "weight zero point times the input row sum".into()
            },
        ),
        int(
            "acc",
            "sum q_W q_X + Q_bias - Z_W a_X".into(),
            fwd.acc[j] as i64,
            When::PerInput,
            "the int32 accumulator".into(),
        ),
        real(
            "M(i)",
            "S_W(i) S_X / S_Y".into(),
            m.real,
            When::Offline,
            if lin.per_channel {
                "one multiplier per output channel".into()
            } else {
                "one multiplier for the tensor".into()
            },
        ),
        int(
            "M0 (Q31)",
            "round(M0 * 2^31), M = 2^-n M0, M0 in [0.5, 1)".into(),
            m.m0 as i64,
            When::Offline,
            format!("M0 = {:.9}", m.m0 as f64 / 2f64.powi(31)),
        ),
        int(
            "n",
            "right shift".into(),
            m.n() as i64,
            When::Offline,
            format!("2^-n M0 = {:.9e}", m.value()),
        ),
        int(
            "SRDHM(acc, M0)",
            "round(acc * M0 / 2^31)".into(),
            high as i64,
            When::PerInput,
            "saturating rounding doubling high multiply (gemmlowp, ARM VQRDMULH)".into(),
        ),
        int(
            "RDBP(., n)",
            format!("round({high} / 2^{})", m.n().max(0)),
            shifted as i64,
            When::PerInput,
            format!(
                "rounding right shift; M*acc = {:.4} exactly",
                m.real * fwd.acc[j] as f64
            ),
        ),
        int(
            "q_Y",
            format!("clamp(Z_Y + {shifted}, {}, {})", lin.clamp.0, lin.clamp.1),
            q as i64,
            When::PerInput,
            if lin.relu {
                "the output code; the lower clamp at Z_Y is the fused ReLU".into()
            } else {
                "the output code".into()
            },
        ),
        int(
            "q_Y (f64 reference)",
            "clamp(round((sum x^ w^ + b^) / S_Y) + Z_Y)".into(),
            q_ref as i64,
            When::Result,
            "the same quantized math in f64".into(),
        ),
        real(
            "y^ = S_Y (q_Y - Z_Y)",
            format!("{} * ({q} - {zy})", lin.output.scale),
            y_hat,
            When::Result,
            "the integer path, dequantized".into(),
        ),
        real(
            if lin.relu { "relu(y) float" } else { "y float" },
            "sum_k x w + b (f32)".into(),
            fy,
            When::Result,
            "the float layer".into(),
        ),
        real(
            "error",
            "y^ - y".into(),
            y_hat - fy,
            When::Result,
            format!("{:.3} output steps", (y_hat - fy) / lin.output.scale as f64),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::capture;

    fn digits() -> Model {
        crate::nn::sample_mlp()
    }

    #[test]
    fn the_lab_runs_on_every_layer_within_its_bound() {
        for m in [digits(), crate::activations::tests::cnn()] {
            let cal = capture(&m, 256, 64).unwrap();
            for l in &cal.layers {
                for (w, relu) in [("int8", false), ("int8:tensor", true), ("uint8", false)] {
                    let opts = LabOptions {
                        weights: super::super::parse_weights(w).unwrap(),
                        relu,
                        rows: 128,
                        ..LabOptions::default()
                    };
                    let r = run(&m, l, &opts).unwrap();
                    let what = format!("{} {w} relu={relu}", l.name);
                    assert_eq!(r.bound.violations, 0, "{what}: {:?}", r.bound);
                    assert!(r.bound.worst_ratio <= 1.0, "{what}");
                    assert!(r.max_code_diff <= 1, "{what}: {}", r.max_code_diff);
                    // 8-bit everything: a good layer keeps > 25 dB
                    assert!(r.vs_float.sqnr_db > 25.0, "{what}: {:?}", r.vs_float);
                    assert!(r.vs_float.max_lsb <= r.bound.max_lsb, "{what}");
                    assert!(r.terms.iter().any(|t| t.when == When::Offline));
                    assert!(r.terms.iter().any(|t| t.when == When::PerInput));
                }
            }
        }
    }

    #[test]
    fn the_architecture_says_which_layers_a_relu_follows() {
        let m = crate::activations::tests::cnn();
        assert!(followed_by_relu(&m, "conv1"));
        assert!(followed_by_relu(&m, "fc1"));
        assert!(!followed_by_relu(&m, "fc2"));
        assert!(!followed_by_relu(&m, "nope"));
    }
}
