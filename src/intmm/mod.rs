//! The integer-only linear layer (Jacob et al. 2018, arXiv 1712.05877; MIT 6.5940 lecture 5), on a real
//! layer and its real calibration inputs: `Y = X·Wᵀ + b` computed with 8-bit integer multiplies and
//! 32-bit accumulation, the zero-point correction terms, the bias folded in at scale `S_W·S_X`, and the
//! requantization of the int32 accumulator to the 8-bit output by the fixed-point multiplier
//! `M = S_W·S_X/S_Y = 2^−n·M0` ([`fixedpoint`]).
//!
//! With `r = S·(q − Z)` for weights, inputs and outputs, output element `(r, i)` (row `r` of the
//! input, output channel `i`) is
//!
//! ```text
//! q_Y = Z_Y + M(i) · ( Σ_k q_W(i,k)·q_X(r,k) − Z_X·a_W(i) − Z_W(i)·a_X(r) + K·Z_W(i)·Z_X + q_b(i) )
//!       a_W(i) = Σ_k q_W(i,k),  a_X(r) = Σ_k q_X(r,k),  q_b(i) = round(b(i) / (S_W(i)·S_X))
//! ```
//!
//! rounded, and clamped to the output codes (a fused ReLU is just the lower clamp at `Z_Y`). The core
//! sum is the `O(rows·out·K)` work; `a_W`, `q_b` and `K·Z_W·Z_X` are known offline and fold into one
//! int32 bias per channel; `a_X(r)` is per input and needed only when the weights have a zero point.
//!
//! The lab checks the integer path two ways: against an f64 evaluation of the same quantized math
//! (`Σ x̂·ŵ + b̂` rounded to the output grid: they agree within one output step, the fixed-point
//! multiplier's only freedom), and against the float layer, within a bound derived per element:
//!
//! ```text
//! |ŷ − f(y)| ≤ S_Y·(½ + ½·2^−n + |M·acc|·2^−31)           output rounding by the fixed-point multiplier
//!            + Σ_k |w(i,k)|·e_X(r,k)                      input quantization, propagated
//!            + Σ_k |x̂(r,k)|·e_W(i,k)                      weight quantization, propagated
//!            + S_W(i)·S_X/2                               bias rounding
//!            + dist(f(y), output range)                   clipping of the output
//!            + γ_{K+1}·(Σ_k |x||w| + |b|)                 f32 rounding of the float reference itself
//! ```
//!
//! where `f` is the identity or ReLU, `e = max(S/2, distance of the value outside its grid's range)` is
//! the most a value moves when quantized (nearest rounding inside the range, clamping outside), and
//! `γ_m = m·u/(1 − m·u)`, `u = 2^−24`. It follows from `x̂ŵ − xw = x̂(ŵ − w) + w(x̂ − x)`, the
//! multiplier's error (`FixedMultiplier::error_bound`) and clamping being 1-Lipschitz (and
//! `clamp∘ReLU = clamp` when the clamp range is non-negative).

pub mod fixedpoint;
pub mod lab;

pub use fixedpoint::{
    rounding_divide_by_pot, saturating_rounding_doubling_high_mul, FixedMultiplier,
};

use crate::kernels::gemm::xwt;
use crate::quant::fixed::FixedQuant;
use crate::quant::{quantize, Family, Granularity, QuantError, Spec};
use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum IntMmError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Quant(#[from] QuantError),
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    #[error("int32 overflow: {0}")]
    Overflow(String),
}

fn invalid<T>(s: impl Into<String>) -> Result<T, IntMmError> {
    Err(IntMmError::Invalid(s.into()))
}

/// An 8-bit activation type: the layer's output is either; its input is always uint8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    /// Asymmetric, codes 0..255 with a zero point.
    Uint8,
    /// Symmetric, codes −127..127, zero point 0 (docs/DESIGN.md §2's intN).
    Int8,
}

impl OutputType {
    pub fn parse(s: &str) -> Result<OutputType, IntMmError> {
        match s.trim() {
            "uint8" => Ok(OutputType::Uint8),
            "int8" => Ok(OutputType::Int8),
            other => invalid(format!("output type '{other}': use uint8 or int8")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            OutputType::Uint8 => "uint8",
            OutputType::Int8 => "int8",
        }
    }
}

/// A weight spec the integer layer takes: `intN` (symmetric) or `uintN` (asymmetric), N ≤ 8, per
/// channel or per tensor (`int8`, `int8:tensor`, `uint8`, `uint8:tensor`, also `int4`, `:clip=mse`, ...).
pub fn parse_weights(s: &str) -> Result<Spec, IntMmError> {
    let spec = Spec::parse(s).map_err(|e| IntMmError::Invalid(e.to_string()))?;
    let ok_family = matches!(spec.family, Family::Int(b) | Family::Uint(b) if b <= 8);
    let ok_gran = matches!(spec.granularity, Granularity::Tensor | Granularity::Channel);
    if !ok_family || !ok_gran || spec.vsq || spec.adaround {
        return invalid(format!(
            "weights '{s}': the integer layer takes intN or uintN (N <= 8) per channel or per tensor, \
             e.g. int8, int8:tensor, uint8, uint8:tensor"
        ));
    }
    Ok(spec)
}

/// A fixed-range quantizer of activations (inputs or outputs): `r = S·(q − Z)`, `q ∈ [qmin, qmax]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActQuant {
    pub scale: f32,
    pub zero: i32,
    pub qmin: i32,
    pub qmax: i32,
    /// The calibrated range it was made for.
    pub range: (f32, f32),
    /// The values its codes cover, `[S·(qmin − Z), S·(qmax − Z)]`.
    pub grid: (f32, f32),
    /// How the range was chosen.
    pub method: String,
}

impl ActQuant {
    /// uint8 or int8 for `[lo, hi]`, with `quant::fixed::FixedQuant`'s (docs/DESIGN.md §2) scale and zero point.
    pub fn new(t: OutputType, lo: f32, hi: f32, method: &str) -> Result<ActQuant, IntMmError> {
        let spec = Spec::parse(t.name()).expect("uint8 and int8 parse");
        let f = FixedQuant::new(&spec, lo, hi)?;
        let (qmin, qmax) = match t {
            OutputType::Uint8 => (0, 255),
            OutputType::Int8 => (-127, 127),
        };
        Ok(ActQuant {
            scale: f.scale,
            zero: f.zero,
            qmin,
            qmax,
            range: (lo, hi),
            grid: f.range,
            method: method.to_string(),
        })
    }

    /// The code of `x`: the same f32 arithmetic as `FixedQuant::apply` (round to nearest even, clamp).
    #[inline]
    pub fn code(&self, x: f32) -> i32 {
        let (s, z) = (self.scale, self.zero as f32);
        let (qmin, qmax) = (self.qmin as f32, self.qmax as f32);
        ((x / s)
            .clamp(qmin - z - 1.0, qmax - z + 1.0)
            .round_ties_even()
            + z)
            .clamp(qmin, qmax) as i32
    }

    #[inline]
    pub fn value(&self, q: i32) -> f64 {
        self.scale as f64 * (q - self.zero) as f64
    }

    /// The most `x` moves when quantized (slightly inflated for the f32 rounding of `x/S`).
    #[inline]
    fn error_bound(&self, x: f32) -> f32 {
        let out = (self.grid.0 - x).max(x - self.grid.1).max(0.0);
        (0.5 * self.scale).max(out) * (1.0 + 1e-4)
    }
}

/// The weight codes, stored as the 8-bit integers they are.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightCodes {
    I8(Vec<i8>),
    U8(Vec<u8>),
}

impl WeightCodes {
    fn get(&self, j: usize) -> i32 {
        match self {
            WeightCodes::I8(v) => v[j] as i32,
            WeightCodes::U8(v) => v[j] as i32,
        }
    }
}

#[inline]
fn dot<T: Copy + Into<i32>>(w: &[T], x: &[u8]) -> i32 {
    // int8/uint8 × uint8 products, int32 accumulation (no overflow: checked when the layer is built)
    w.iter()
        .zip(x)
        .fold(0i32, |acc, (&a, &b)| acc + a.into() * b as i32)
}

/// A linear layer prepared for integer-only inference: every value here is computed offline, once.
#[derive(Debug, Clone)]
pub struct IntLinear {
    pub out: usize,
    pub k: usize,
    pub weight_spec: String,
    /// The float weights, `[out, k]`.
    pub w: Vec<f32>,
    /// One scale and zero point per output channel (the same value repeated for a per-tensor spec).
    pub per_channel: bool,
    pub codes: WeightCodes,
    pub w_scale: Vec<f32>,
    pub w_zero: Vec<i32>,
    /// Per channel: the range the codes cover, `[S(qmin − Z), S(qmax − Z)]`.
    w_grid: Vec<(f32, f32)>,
    pub input: ActQuant,
    pub output: ActQuant,
    pub relu: bool,
    /// The output clamp in codes: `[qmin, qmax]`, or `[max(qmin, Z_Y), qmax]` with a fused ReLU.
    pub clamp: (i32, i32),
    pub bias: Vec<f32>,
    /// `a_W(i) = Σ_k q_W(i,k)`.
    pub a_w: Vec<i32>,
    /// `q_b(i) = round(b(i) / (S_W(i)·S_X))`.
    pub q_bias: Vec<i32>,
    /// `K·Z_W(i)·Z_X`.
    pub kzz: Vec<i32>,
    /// The folded offline term `Q_bias(i) = q_b(i) − Z_X·a_W(i) + K·Z_W(i)·Z_X`.
    pub folded: Vec<i32>,
    /// `M(i) = S_W(i)·S_X/S_Y` in fixed point.
    pub multipliers: Vec<FixedMultiplier>,
}

/// What the integer path computed for a batch of rows (all `[rows, out]` row-major, except `qx`
/// `[rows, k]` and `a_x` `[rows]`).
#[derive(Debug, Clone)]
pub struct IntForward {
    pub rows: usize,
    pub qx: Vec<u8>,
    /// `a_X(r) = Σ_k q_X(r,k)`.
    pub a_x: Vec<i32>,
    /// `Σ_k q_W(i,k)·q_X(r,k)`.
    pub core: Vec<i32>,
    /// The int32 accumulator with every correction term and the bias.
    pub acc: Vec<i32>,
    /// The output codes.
    pub q: Vec<i32>,
}

impl IntLinear {
    /// Quantize the weights (`[out, k]` row-major, `shape = (out, k)`) with `spec`, fold the bias and the zero-point terms,
    /// and make the fixed-point multipliers, for inputs quantized by `input` and outputs by `output`.
    pub fn new(
        w: &[f32],
        bias: &[f32],
        (out, k): (usize, usize),
        spec: &Spec,
        input: ActQuant,
        output: ActQuant,
        relu: bool,
    ) -> Result<IntLinear, IntMmError> {
        if out == 0 || k == 0 || w.len() != out * k {
            return invalid(format!(
                "the weight has {} values, not out {out} x k {k}",
                w.len()
            ));
        }
        if bias.len() != out {
            return invalid(format!("{} bias values for {out} outputs", bias.len()));
        }
        if input.zero < input.qmin || input.qmin < 0 || input.qmax > 255 {
            return invalid("inputs are quantized to uint8 codes");
        }
        let q = quantize(w, &[out, k], spec)?;
        let per_channel = spec.granularity == Granularity::Channel;
        let group = |i: usize| if q.scales.len() == 1 { 0 } else { i };
        let w_scale: Vec<f32> = (0..out).map(|i| q.scales[group(i)]).collect();
        let w_zero: Vec<i32> = (0..out)
            .map(|i| q.zero_points.get(group(i)).copied().unwrap_or(0))
            .collect();
        let (qmin_w, qmax_w) = match spec.family {
            Family::Int(b) => (-((1i32 << (b - 1)) - 1), (1i32 << (b - 1)) - 1),
            Family::Uint(b) => (0, (1i32 << b) - 1),
            _ => unreachable!("parse_weights admits int and uint only"),
        };
        let w_grid = (0..out)
            .map(|i| {
                let (s, z) = (w_scale[i], w_zero[i]);
                (s * (qmin_w - z) as f32, s * (qmax_w - z) as f32)
            })
            .collect();
        let codes = match spec.family {
            Family::Int(_) => WeightCodes::I8(q.codes.iter().map(|&c| c as i8).collect()),
            _ => WeightCodes::U8(q.codes.iter().map(|&c| c as u8).collect()),
        };
        // a priori: the core sum cannot overflow int32
        let worst = k as i64 * qmax_w.max(-qmin_w) as i64 * input.qmax as i64;
        if worst > i32::MAX as i64 {
            return Err(IntMmError::Overflow(format!(
                "K = {k} products of up to {} x {} could exceed 2^31 - 1 in the int32 accumulator",
                qmax_w.max(-qmin_w),
                input.qmax
            )));
        }
        let a_w: Vec<i32> = (0..out)
            .map(|i| (0..k).map(|j| codes.get(i * k + j)).sum())
            .collect();
        let sx = input.scale as f64;
        let mut q_bias = Vec::with_capacity(out);
        let mut kzz = Vec::with_capacity(out);
        let mut folded = Vec::with_capacity(out);
        let mut multipliers = Vec::with_capacity(out);
        for i in 0..out {
            let sw = w_scale[i] as f64;
            let qb = (bias[i] as f64 / (sw * sx)).round_ties_even();
            if !qb.is_finite() || qb.abs() > i32::MAX as f64 {
                return Err(IntMmError::Overflow(format!(
                    "bias {} of channel {i} is {qb:e} steps of S_W*S_X = {:e}",
                    bias[i],
                    sw * sx
                )));
            }
            let qb = qb as i32;
            let t = k as i64 * w_zero[i] as i64 * input.zero as i64;
            let f = qb as i64 - input.zero as i64 * a_w[i] as i64 + t;
            if t.abs() > i32::MAX as i64 || f.abs() > i32::MAX as i64 {
                return Err(IntMmError::Overflow(format!(
                    "the folded bias of channel {i} ({f}) does not fit int32"
                )));
            }
            q_bias.push(qb);
            kzz.push(t as i32);
            folded.push(f as i32);
            multipliers.push(FixedMultiplier::new(sw * sx / output.scale as f64));
        }
        let clamp = if relu {
            (output.qmin.max(output.zero), output.qmax)
        } else {
            (output.qmin, output.qmax)
        };
        Ok(IntLinear {
            out,
            k,
            weight_spec: spec.to_string(),
            w: w.to_vec(),
            per_channel,
            codes,
            w_scale,
            w_zero,
            w_grid,
            input,
            output,
            relu,
            clamp,
            bias: bias.to_vec(),
            a_w,
            q_bias,
            kzz,
            folded,
            multipliers,
        })
    }

    /// The dequantized weight `ŵ(i,k) = S_W(i)·(q_W − Z_W(i))`, `[out, k]`.
    pub fn w_hat(&self) -> Vec<f64> {
        (0..self.out * self.k)
            .map(|j| {
                let i = j / self.k;
                self.w_scale[i] as f64 * (self.codes.get(j) - self.w_zero[i]) as f64
            })
            .collect()
    }

    /// Requantize one accumulator of channel `i`: (high multiply, shifted, output code).
    pub fn requantize(&self, acc: i32, i: usize) -> (i32, i32, i32) {
        let (high, shifted) = self.multipliers[i].apply_steps(acc);
        let q = self
            .output
            .zero
            .saturating_add(shifted)
            .clamp(self.clamp.0, self.clamp.1);
        (high, shifted, q)
    }

    /// The integer path on `rows` input rows `x` (`[rows, k]` f32): quantize the inputs to uint8, then
    /// integers only.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<IntForward, IntMmError> {
        let (k, out) = (self.k, self.out);
        if x.len() != rows * k {
            return invalid(format!(
                "{} input values are not {rows} rows of {k}",
                x.len()
            ));
        }
        let qx: Vec<u8> = x.par_iter().map(|&v| self.input.code(v) as u8).collect();
        let a_x: Vec<i32> = qx
            .par_chunks(k)
            .map(|r| r.iter().map(|&v| v as i32).sum())
            .collect();
        let mut core = vec![0i32; rows * out];
        core.par_chunks_mut(out)
            .zip(qx.par_chunks(k))
            .for_each(|(c, xr)| {
                for (i, ci) in c.iter_mut().enumerate() {
                    *ci = match &self.codes {
                        WeightCodes::I8(w) => dot(&w[i * k..(i + 1) * k], xr),
                        WeightCodes::U8(w) => dot(&w[i * k..(i + 1) * k], xr),
                    };
                }
            });
        let mut acc = vec![0i32; rows * out];
        for (j, a) in acc.iter_mut().enumerate() {
            let (r, i) = (j / out, j % out);
            *a = core[j]
                .checked_add(self.folded[i])
                .and_then(|v| v.checked_sub(self.w_zero[i].checked_mul(a_x[r])?))
                .ok_or_else(|| {
                    IntMmError::Overflow(format!(
                        "the accumulator of row {r}, output {i} leaves int32"
                    ))
                })?;
        }
        let q = acc
            .par_iter()
            .enumerate()
            .map(|(j, &a)| self.requantize(a, j % out).2)
            .collect();
        Ok(IntForward {
            rows,
            qx,
            a_x,
            core,
            acc,
            q,
        })
    }

    /// The same quantized math in f64, without the integer bookkeeping: `ỹ = Σ_k x̂·ŵ + b̂` from the
    /// dequantized values, rounded to the output grid and clamped. Returns `(ỹ, codes)`.
    pub fn reference(&self, qx: &[u8], rows: usize) -> (Vec<f64>, Vec<i32>) {
        let (k, out) = (self.k, self.out);
        let w_hat = self.w_hat();
        let x_hat: Vec<f64> = qx.iter().map(|&q| self.input.value(q as i32)).collect();
        let sy = self.output.scale as f64;
        let mut y = vec![0f64; rows * out];
        y.par_chunks_mut(out)
            .zip(x_hat.par_chunks(k))
            .for_each(|(yr, xr)| {
                for (i, v) in yr.iter_mut().enumerate() {
                    let b_hat =
                        self.w_scale[i] as f64 * self.input.scale as f64 * self.q_bias[i] as f64;
                    *v = w_hat[i * k..(i + 1) * k]
                        .iter()
                        .zip(xr)
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
                        + b_hat;
                }
            });
        let codes = y
            .iter()
            .map(|&v| {
                ((v / sy).round() + self.output.zero as f64)
                    .clamp(self.clamp.0 as f64, self.clamp.1 as f64) as i32
            })
            .collect();
        (y, codes)
    }

    /// Per element, the derived bound on `|ŷ − f(y)|` split into its parts (see the module docs).
    /// `x` are the f32 input rows, `y` the f32 float outputs (with bias, before any ReLU).
    pub fn bounds(&self, x: &[f32], rows: usize, fwd: &IntForward, y: &[f32]) -> BoundParts {
        let (k, out) = (self.k, self.out);
        let ex: Vec<f32> = x.par_iter().map(|&v| self.input.error_bound(v)).collect();
        let x_abs_hat: Vec<f32> = fwd
            .qx
            .par_iter()
            .map(|&q| self.input.value(q as i32).abs() as f32)
            .collect();
        let x_abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let w = &self.w;
        let w_abs: Vec<f32> = w.iter().map(|v| v.abs()).collect();
        let ew: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(j, &v)| {
                let i = j / k;
                let (lo, hi) = self.w_grid[i];
                let outside = (lo - v).max(v - hi).max(0.0);
                (0.5 * self.w_scale[i]).max(outside) * (1.0 + 1e-4)
            })
            .collect();
        // sums of non-negative terms in f32: relative error at most γ_K; inflate by 2γ_K to stay above
        let u = 2f64.powi(-24);
        let gamma = |m: usize| (m as f64 * u) / (1.0 - m as f64 * u);
        let inflate = 1.0 + 2.0 * gamma(k);
        let input = xwt(&ex, rows, k, &w_abs, out, None);
        let weight = xwt(&x_abs_hat, rows, k, &ew, out, None);
        let xw_abs = xwt(&x_abs, rows, k, &w_abs, out, None);
        let sy = self.output.scale as f64;
        let lo = sy * (self.clamp.0 - self.output.zero) as f64;
        let hi = sy * (self.clamp.1 - self.output.zero) as f64;
        let n = rows * out;
        let mut p = BoundParts {
            output_rounding: Vec::with_capacity(n),
            input: Vec::with_capacity(n),
            weight: Vec::with_capacity(n),
            bias: Vec::with_capacity(n),
            clipping: Vec::with_capacity(n),
            float: Vec::with_capacity(n),
        };
        for j in 0..n {
            let i = j % out;
            let fy = self.f(y[j]) as f64;
            p.output_rounding
                .push(sy * self.multipliers[i].error_bound(fwd.acc[j]));
            p.input.push(input[j] as f64 * inflate);
            p.weight.push(weight[j] as f64 * inflate);
            p.bias
                .push(0.5 * self.w_scale[i] as f64 * self.input.scale as f64 * (1.0 + 1e-6));
            p.clipping.push((lo - fy).max(fy - hi).max(0.0));
            p.float
                .push(gamma(k + 1) * (xw_abs[j] as f64 * inflate + self.bias[i].abs() as f64));
        }
        p
    }

    /// The activation the layer is fused with: ReLU or the identity.
    #[inline]
    pub fn f(&self, y: f32) -> f32 {
        if self.relu {
            y.max(0.0)
        } else {
            y
        }
    }
}

/// The derived bound's parts, per output element (`[rows, out]`), in the output's units.
#[derive(Debug, Clone, Default)]
pub struct BoundParts {
    pub output_rounding: Vec<f64>,
    pub input: Vec<f64>,
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
    pub clipping: Vec<f64>,
    pub float: Vec<f64>,
}

impl BoundParts {
    pub fn total(&self, j: usize) -> f64 {
        self.output_rounding[j]
            + self.input[j]
            + self.weight[j]
            + self.bias[j]
            + self.clipping[j]
            + self.float[j]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reproducible uniform number in [-1, 1).
    fn u(seed: u64, i: usize) -> f32 {
        crate::quant::uniform(seed, i as u64) * 2.0 - 1.0
    }

    fn layer(
        out: usize,
        k: usize,
        spec: &str,
        relu: bool,
        seed: u64,
    ) -> (IntLinear, Vec<f32>, usize) {
        let w: Vec<f32> = (0..out * k).map(|i| 0.3 * u(seed, i)).collect();
        let b: Vec<f32> = (0..out).map(|i| 0.5 * u(seed + 1, i)).collect();
        let rows = 37;
        // inputs mostly positive with some negative values: a non-zero input zero point
        let x: Vec<f32> = (0..rows * k).map(|i| 1.5 * u(seed + 2, i) + 0.7).collect();
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, c), &v| {
                (a.min(v), c.max(v))
            });
        let input = ActQuant::new(OutputType::Uint8, lo, hi, "minmax").unwrap();
        let y = xwt(&x, rows, k, &w, out, Some(&b));
        let (ylo, yhi) = y
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, c), &v| {
                (a.min(v), c.max(v))
            });
        let ylo = if relu { 0.0 } else { ylo };
        let output = ActQuant::new(OutputType::Uint8, ylo, yhi, "minmax").unwrap();
        let lin = IntLinear::new(
            &w,
            &b,
            (out, k),
            &parse_weights(spec).unwrap(),
            input,
            output,
            relu,
        )
        .unwrap();
        (lin, x, rows)
    }

    #[test]
    fn a_hand_worked_element() {
        // one output, K = 2: w = [0.5, -0.25], b = 0.1; x = [1.0, 2.0]
        // weights int8:tensor: S_W = 0.5/127, q_W = [127, -64] (-0.25·127/0.5 = -63.5 → -64, ties even)
        // inputs uint8 over [0, 2.55]: S_X = 0.01, Z_X = 0, q_X = [100, 200]
        // outputs uint8 over [-1, 1.55]: S_Y = 0.01, Z_Y = 100
        let input = ActQuant::new(OutputType::Uint8, 0.0, 2.55, "m").unwrap();
        let output = ActQuant::new(OutputType::Uint8, -1.0, 1.55, "m").unwrap();
        assert_eq!((input.zero, output.zero), (0, 100));
        let spec = parse_weights("int8:tensor").unwrap();
        let (s_x, s_y) = (input.scale, output.scale);
        let lin =
            IntLinear::new(&[0.5, -0.25], &[0.1], (1, 2), &spec, input, output, false).unwrap();
        assert_eq!(lin.codes, WeightCodes::I8(vec![127, -64]));
        assert_eq!(lin.a_w, vec![63]);
        let sw = 0.5f32 / 127.0;
        // q_b = round(0.1 / (S_W·S_X))
        let qb = (0.1f64 / (sw as f64 * s_x as f64)).round_ties_even() as i32;
        assert_eq!(lin.q_bias, vec![qb]);
        assert_eq!(qb, 2540);
        let f = lin.forward(&[1.0, 2.0], 1).unwrap();
        assert_eq!(f.qx, vec![100, 200]);
        assert_eq!(f.core, vec![127 * 100 - 64 * 200]);
        assert_eq!(f.acc, vec![127 * 100 - 64 * 200 + 2540]);
        // M = S_W·S_X/S_Y; q_Y = 100 + round(M·acc)
        let m = sw as f64 * s_x as f64 / s_y as f64;
        let want = 100 + (m * f.acc[0] as f64).round() as i32;
        assert_eq!(f.q, vec![want]);
        // float: 0.5 − 0.5 + 0.1 = 0.1 → code 110
        assert_eq!(want, 110);
    }

    #[test]
    fn codes_are_the_fake_quantizers_codes() {
        for (t, lo, hi) in [
            (OutputType::Uint8, -0.7f32, 2.3f32),
            (OutputType::Int8, -1.0, 0.4),
        ] {
            let a = ActQuant::new(t, lo, hi, "m").unwrap();
            let f = FixedQuant::new(&Spec::parse(t.name()).unwrap(), lo, hi).unwrap();
            let x: Vec<f32> = (0..2000).map(|i| 4.0 * u(9, i)).collect();
            let mut fq = x.clone();
            f.apply(&mut fq);
            for (v, want) in x.iter().zip(fq) {
                assert_eq!(a.value(a.code(*v)) as f32, want, "{v}");
            }
        }
    }

    #[test]
    fn the_terms_add_up_and_match_a_direct_sum() {
        for spec in ["int8", "int8:tensor", "uint8", "uint8:tensor", "int4"] {
            let (lin, x, rows) = layer(5, 33, spec, false, 7);
            let f = lin.forward(&x, rows).unwrap();
            let (k, out) = (lin.k, lin.out);
            for r in 0..rows {
                for i in 0..out {
                    // Σ (q_W − Z_W)(q_X − Z_X) + q_b, directly, in i64
                    let direct: i64 = (0..k)
                        .map(|j| {
                            (lin.codes.get(i * k + j) - lin.w_zero[i]) as i64
                                * (f.qx[r * k + j] as i32 - lin.input.zero) as i64
                        })
                        .sum::<i64>()
                        + lin.q_bias[i] as i64;
                    assert_eq!(f.acc[r * out + i] as i64, direct, "{spec} ({r}, {i})");
                    let expanded = f.core[r * out + i] as i64
                        - lin.input.zero as i64 * lin.a_w[i] as i64
                        - lin.w_zero[i] as i64 * f.a_x[r] as i64
                        + lin.kzz[i] as i64
                        + lin.q_bias[i] as i64;
                    assert_eq!(expanded, direct);
                }
            }
            if spec.starts_with("int") {
                assert!(lin.w_zero.iter().all(|&z| z == 0));
            } else {
                assert!(lin.w_zero.iter().any(|&z| z != 0), "{spec}");
            }
        }
    }

    #[test]
    fn integer_path_is_within_one_code_of_f64_and_within_the_bound_of_float() {
        for (seed, spec, relu) in [
            (1, "int8", false),
            (2, "int8:tensor", true),
            (3, "uint8", false),
            (4, "uint8:tensor", true),
            (5, "int6", false),
        ] {
            let (lin, x, rows) = layer(9, 70, spec, relu, seed);
            let f = lin.forward(&x, rows).unwrap();
            let (_, q_ref) = lin.reference(&f.qx, rows);
            for (a, b) in f.q.iter().zip(&q_ref) {
                assert!((a - b).abs() <= 1, "{spec}: {a} vs {b}");
            }
            let y = xwt(&x, rows, lin.k, &lin.w, lin.out, Some(&lin.bias));
            let p = lin.bounds(&x, rows, &f, &y);
            for (j, &q) in f.q.iter().enumerate() {
                let e = (lin.output.value(q) - lin.f(y[j]) as f64).abs();
                assert!(e <= p.total(j), "{spec} element {j}: {e} > {}", p.total(j));
                if relu {
                    assert!(q >= lin.output.zero);
                }
            }
        }
    }

    #[test]
    fn inputs_outside_the_calibrated_range_are_clipped_and_still_bounded() {
        let (mut lin, x, rows) = layer(4, 20, "int8", false, 11);
        // calibrate the inputs on a narrower range than the data
        lin = IntLinear::new(
            &lin.w,
            &lin.bias,
            (lin.out, lin.k),
            &parse_weights("int8").unwrap(),
            ActQuant::new(OutputType::Uint8, -0.2, 1.0, "narrow").unwrap(),
            lin.output.clone(),
            false,
        )
        .unwrap();
        let f = lin.forward(&x, rows).unwrap();
        let y = xwt(&x, rows, lin.k, &lin.w, lin.out, Some(&lin.bias));
        let p = lin.bounds(&x, rows, &f, &y);
        let mut big = 0;
        for (j, &q) in f.q.iter().enumerate() {
            let e = (lin.output.value(q) - y[j] as f64).abs();
            assert!(e <= p.total(j));
            big += usize::from(e > lin.output.scale as f64);
        }
        assert!(
            big > 0,
            "clipping the inputs makes errors larger than a step"
        );
    }

    #[test]
    fn bad_layers_are_errors_not_panics() {
        let input = ActQuant::new(OutputType::Uint8, 0.0, 1.0, "m").unwrap();
        let output = ActQuant::new(OutputType::Uint8, 0.0, 1.0, "m").unwrap();
        let s = parse_weights("uint8").unwrap();
        // K·255·255 > 2^31 − 1
        let k = 40_000;
        let e = IntLinear::new(
            &vec![0.1; k],
            &[0.0],
            (1, k),
            &s,
            input.clone(),
            output.clone(),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("int32"), "{e}");
        let e = IntLinear::new(
            &[0.1, 0.2],
            &[0.0],
            (1, 3),
            &s,
            input.clone(),
            output.clone(),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not out 1 x k 3"), "{e}");
        // a bias far beyond int32 at the tiny scale S_W·S_X
        let e =
            IntLinear::new(&[1e-6, 1e-6], &[1e6], (1, 2), &s, input, output, false).unwrap_err();
        assert!(e.to_string().contains("int32"), "{e}");
        for bad in ["fp8_e4m3", "int8:g32", "nf4", "int16"] {
            assert!(parse_weights(bad).is_err(), "{bad}");
        }
        assert!(OutputType::parse("int4").is_err());
    }
}
