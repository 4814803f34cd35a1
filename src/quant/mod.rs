//! Quantizers: every format family of the spec grammar (docs/DESIGN.md §2), at every granularity, with
//! clipping and rounding, returning the dequantized tensor, the codes, the scales, and the metrics of
//! docs/DESIGN.md §3.
//!
//! Layout: output channels are dimension 0, the rest is flattened into the input dimension, so a weight
//! is a row-major `[rows, cols]` matrix. A group is a contiguous run of one row (`gK`), a whole row
//! (`channel`) or the whole tensor (`tensor`); groups are numbered row by row.

pub mod adaround;
mod binary;
mod binned;
mod blocks;
mod bucketed;
pub use crate::kernels::buffers;
pub mod fixed;
mod kmeans;
mod linear;
pub mod metrics;
pub mod report;
pub mod rounder;
pub mod rows;
pub mod spec;

pub use kmeans::kmeans_1d;
pub use metrics::Metrics;
use rayon::prelude::*;

pub use spec::{Clip, Family, Granularity, RoundMode, ScaleType, Spec, SpecError};

/// `Err(NotFinite(count))` if `x` holds NaN or ±Inf (one parallel pass).
pub(crate) fn all_finite(x: &[f32]) -> Result<(), QuantError> {
    let bad: usize = x
        .par_chunks(1 << 16)
        .map(crate::stats::count_non_finite)
        .sum();
    match bad {
        0 => Ok(()),
        n => Err(QuantError::NotFinite(n)),
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("the tensor has {0} NaN/Inf values: quantization needs finite weights")]
    NotFinite(usize),
    #[error("the tensor is empty")]
    Empty,
    #[error("{0}")]
    Shape(String),
    #[error("{0}")]
    Unsupported(String),
}

/// Rows × columns as the quantizer sees a tensor, and how it is cut into groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub rows: usize,
    pub cols: usize,
    /// Elements per group within a row (the whole row for `channel`; for `tensor`, rows·cols with one row).
    pub group: usize,
}

impl Layout {
    pub fn new(shape: &[usize], granularity: Granularity) -> Layout {
        let n: usize = shape.iter().product();
        let (rows, cols) = crate::model::rows_and_cols(shape);
        match granularity {
            Granularity::Tensor => Layout {
                rows: 1,
                cols: n,
                group: n.max(1),
            },
            Granularity::Channel => Layout {
                rows,
                cols,
                group: cols.max(1),
            },
            Granularity::Group(k) => Layout {
                rows,
                cols,
                group: k.min(cols.max(1)),
            },
        }
    }

    pub fn groups_per_row(&self) -> usize {
        self.cols.div_ceil(self.group)
    }

    pub fn groups(&self) -> usize {
        self.rows * self.groups_per_row()
    }
}

/// Everything a quantizer produced for one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub spec: Spec,
    pub layout: Layout,
    /// The fake-quantized values (what a deployment computes with), same order as the input.
    pub dequant: Vec<f32>,
    /// Per element: the integer (int/uint), the element code (float formats), the codebook index
    /// (k-means, NF4), the sign (binary: 0/1) or the ternary value (−1, 0, 1).
    pub codes: Vec<i16>,
    /// The stored scale of each group (after rounding to its storage type).
    pub scales: Vec<f32>,
    /// Zero points (uint), one per group.
    pub zero_points: Vec<i32>,
    /// The second level: VS-Quant's per-channel scale, or NVFP4's per-tensor scale.
    pub outer_scales: Vec<f32>,
    /// Codebook values (k-means; NF4's table).
    pub codebook: Vec<f32>,
    /// The clip threshold of each group (symmetric: the magnitude mapped to the top code; asymmetric:
    /// `[lo, hi]` pairs flattened; binary/ternary: the threshold under which weights become 0/−).
    pub thresholds: Vec<f32>,
    pub metrics: Metrics,
}

impl Quantized {
    /// The dequantized values, keeping them (a plain move out of a `Quantized` is not allowed: it
    /// gives its buffers back when dropped).
    pub fn into_dequant(mut self) -> Vec<f32> {
        std::mem::take(&mut self.dequant)
    }
}

/// A dropped result gives its large buffers back for the next quantizer (see [`buffers`]).
impl Drop for Quantized {
    fn drop(&mut self) {
        buffers::give_f32(std::mem::take(&mut self.dequant));
        buffers::give_i16(std::mem::take(&mut self.codes));
    }
}

/// Quantize `x` (row-major, `shape`) with `spec`.
pub fn quantize(x: &[f32], shape: &[usize], spec: &Spec) -> Result<Quantized, QuantError> {
    check(x.len(), shape, spec)?;
    let (mut q, acc) = parts(x, shape, spec, None)?;
    let bits = bits_of(&q, x.len());
    q.metrics = match acc {
        Some(a) => a.finish(x.len(), bits),
        None => Metrics::compute(x, &q.dequant, bits),
    };
    Ok(q)
}

/// The checks every quantization starts with: `len` elements for `shape`, not empty, no AdaRound.
fn check(len: usize, shape: &[usize], spec: &Spec) -> Result<(), QuantError> {
    let n: usize = shape.iter().product();
    if n != len {
        return Err(QuantError::Shape(format!(
            "shape {shape:?} has {n} elements but the data has {len}"
        )));
    }
    if n == 0 {
        return Err(QuantError::Empty);
    }
    if spec.adaround {
        return Err(QuantError::Unsupported(
            "round=adaround learns each weight's rounding from its layer's calibration inputs: use it \
             where activations exist (calibrate --spec, eval on a sample model, the Activations view)"
                .into(),
        ));
    }
    Ok(())
}

/// The quantizer's result without its metrics, and the metrics' running sums where the quantizer adds
/// them up as it goes. `nvfp4_amax`: see [`blocks::nvfp4`].
fn parts(
    x: &[f32],
    shape: &[usize],
    spec: &Spec,
    nvfp4_amax: Option<f32>,
) -> Result<(Quantized, Option<metrics::Acc>), QuantError> {
    let layout = Layout::new(shape, spec.granularity);
    // the scaled quantizers check for NaN/Inf on their way through the tensor; the others first
    if !matches!(
        spec.family,
        Family::Int(_) | Family::Uint(_) | Family::Float(_)
    ) {
        all_finite(x)?;
    }
    Ok(match spec.family {
        Family::Int(_) | Family::Uint(_) | Family::Float(_) => {
            let (q, a) = linear::quantize(x, layout, spec).map_err(QuantError::NotFinite)?;
            (q, Some(a))
        }
        Family::Nf4 => some(blocks::nf4(x, layout, spec)),
        Family::Mx(e) => some(blocks::mx(x, layout, spec, e)),
        Family::Nvfp4 => some(blocks::nvfp4(x, layout, spec, nvfp4_amax)),
        Family::MicroExp(m) => some(blocks::micro_exponent(x, layout, spec, m)),
        Family::Kmeans(bits) => (kmeans::quantize(x, layout, spec, bits), None),
        Family::Binary => some(binary::binary(x, layout, spec)),
        Family::Ternary => some(binary::ternary(x, layout, spec)),
        Family::Bf16 | Family::Fp16 | Family::None => (cast(x, layout, spec), None),
    })
}

fn some((q, a): (Quantized, metrics::Acc)) -> (Quantized, Option<metrics::Acc>) {
    (q, Some(a))
}

/// Total stored bits: elements, every scale, zero point, codebook entry and tensor-level constant.
fn bits_of(q: &Quantized, n: usize) -> u64 {
    let s = &q.spec;
    let elem: u64 = match s.family {
        Family::Int(b) | Family::Uint(b) => b as u64,
        Family::Float(f) => f.bits() as u64,
        Family::Nf4 | Family::Nvfp4 => 4,
        Family::Mx(spec::MxElem::Float(f)) => f.bits() as u64,
        Family::Mx(spec::MxElem::Int8) => 8,
        // sign + mantissa, plus the shared micro-exponent bit per pair
        Family::MicroExp(m) => (1 + m.mantissa_bits()) as u64,
        Family::Kmeans(b) => b as u64,
        Family::Binary => 1,
        Family::Ternary => 2,
        Family::Bf16 | Family::Fp16 => 16,
        Family::None => 32,
    };
    let groups = q.scales.len() as u64;
    let scale_bits: u64 = match s.family {
        Family::Nvfp4 => 8,                       // E4M3 block scales
        Family::Mx(_) | Family::MicroExp(_) => 8, // E8M0
        Family::Kmeans(_) | Family::Bf16 | Family::Fp16 | Family::None => 0,
        _ if s.vsq => 4, // VS-Quant's unsigned 4-bit per-vector scale
        _ => s.scale.bits() as u64,
    };
    let mut total = elem * n as u64 + groups * scale_bits;
    if let Family::Uint(b) = s.family {
        total += groups * b as u64; // zero points stored in N bits
    }
    if let Family::MicroExp(_) = s.family {
        total += (n as u64).div_ceil(2); // one micro-exponent bit per pair
    }
    total += q.outer_scales.len() as u64
        * if s.family == Family::Nvfp4 {
            32
        } else {
            s.scale.bits() as u64
        };
    if let Family::Kmeans(_) = s.family {
        total += q.codebook.len() as u64 * 32;
    }
    total
}

fn cast(x: &[f32], layout: Layout, spec: &Spec) -> Quantized {
    let dequant: Vec<f32> = match spec.family {
        Family::Bf16 => x
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect(),
        Family::Fp16 => x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
        _ => x.to_vec(),
    };
    Quantized {
        spec: *spec,
        layout,
        dequant,
        codes: Vec::new(),
        scales: Vec::new(),
        zero_points: Vec::new(),
        outer_scales: Vec::new(),
        codebook: Vec::new(),
        thresholds: Vec::new(),
        metrics: Metrics::default(),
    }
}

/// Round a scale to its storage type; the stored value is the one used to quantize and dequantize.
/// A positive scale never becomes 0 or infinite: it saturates to the type's smallest positive or
/// largest finite value (a tiny group in fp16 would otherwise divide by zero).
pub fn store_scale(s: f32, t: ScaleType) -> f32 {
    let saturate = |v: f32, min_pos: f32, max: f32| {
        if v == 0.0 && s > 0.0 {
            min_pos
        } else if v.is_infinite() {
            max
        } else {
            v
        }
    };
    match t {
        ScaleType::Fp32 => s,
        ScaleType::Fp16 => saturate(
            half::f16::from_f32(s).to_f32(),
            f32::from_bits(0x3380_0000), /* 2^-24 */
            65504.0,
        ),
        ScaleType::Bf16 => saturate(
            half::bf16::from_f32(s).to_f32(),
            f32::from_bits(0x0001_0000), /* 2^-133 */
            3.389_531_4e38,
        ),
        // the smallest power of two that is at least s, so the range is kept (clamped to E8M0's range)
        ScaleType::E8m0 => {
            if s <= 0.0 || !s.is_finite() {
                return f32::from_bits(0x0040_0000); // 2^-127
            }
            let e = s.log2().ceil().clamp(-127.0, 127.0) as i32;
            let p = f64::from_bits(((e + 1023) as u64) << 52) as f32; // 2^e, exact
            if p < s && e < 127 {
                p * 2.0
            } else {
                p
            }
        }
    }
}

/// A reproducible uniform number in [0, 1) for element `i` (SplitMix64 of the seed and the index), so
/// stochastic rounding gives the same result however the work is split across threads.
#[inline]
pub fn uniform(seed: u64, i: u64) -> f32 {
    let mut z = seed
        .wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let l = Layout::new(&[4, 2, 3, 3], Granularity::Channel);
        assert_eq!((l.rows, l.cols, l.group, l.groups()), (4, 18, 18, 4));
        let l = Layout::new(&[4, 256], Granularity::Group(128));
        assert_eq!(l.groups(), 8);
        let l = Layout::new(&[4, 100], Granularity::Group(32));
        assert_eq!((l.groups_per_row(), l.groups()), (4, 16));
        let l = Layout::new(&[4, 100], Granularity::Tensor);
        assert_eq!((l.rows, l.cols, l.groups()), (1, 400, 1));
        let l = Layout::new(&[7], Granularity::Channel);
        assert_eq!((l.rows, l.cols), (1, 7));
    }

    #[test]
    fn e8m0_scales_round_up_to_a_power_of_two() {
        assert_eq!(store_scale(0.3, ScaleType::E8m0), 0.5);
        assert_eq!(store_scale(0.25, ScaleType::E8m0), 0.25);
        assert_eq!(
            store_scale(3.0e-3, ScaleType::Fp16),
            half::f16::from_f32(3.0e-3).to_f32()
        );
    }

    #[test]
    fn uniform_numbers_are_uniform_and_repeatable() {
        let n = 100_000;
        let mean = (0..n).map(|i| uniform(7, i) as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01);
        assert_eq!(uniform(7, 123), uniform(7, 123));
        assert_ne!(uniform(7, 123), uniform(8, 123));
    }

    #[test]
    fn bad_tensors_are_errors_not_panics() {
        let s = Spec::parse("int8").unwrap();
        assert_eq!(
            quantize(&[1.0, f32::NAN], &[2], &s).unwrap_err(),
            QuantError::NotFinite(1)
        );
        assert_eq!(quantize(&[], &[0, 4], &s).unwrap_err(), QuantError::Empty);
        assert!(matches!(
            quantize(&[1.0; 3], &[2, 2], &s),
            Err(QuantError::Shape(_))
        ));
        for spec in [
            "int4",
            "uint4",
            "fp4_e2m1",
            "nf4",
            "mxfp4",
            "nvfp4",
            "smx4",
            "kmeans2",
            "binary",
            "ternary",
            "int4:g16:vsq",
            "int8:clip=mse",
            "int8:clip=kl",
            "uint8:clip=p99",
        ] {
            let s = Spec::parse(spec).unwrap();
            for x in [vec![0.0f32; 64], vec![0.37f32; 64], vec![-2.0f32]] {
                let shape = [x.len()];
                let q = quantize(&x, &shape, &s)
                    .unwrap_or_else(|e| panic!("{spec} on {:?}: {e}", &x[..1]));
                assert!(
                    q.dequant.iter().all(|v| v.is_finite()),
                    "{spec}: {:?}",
                    &q.dequant[..1]
                );
                if x.iter().all(|&v| v == 0.0) {
                    assert!(
                        q.dequant.iter().all(|&v| v == 0.0),
                        "{spec}: zeros stay zero"
                    );
                    assert_eq!(q.metrics.sqnr_db, f64::INFINITY);
                }
            }
        }
        // the MSE searches per row (bucketed from 2,048 values, exhaustive below, early-stopping)
        // on zero, constant and one-sided rows
        for spec in [
            "int4:channel:clip=mse",
            "uint4:channel:clip=mse",
            "int8:channel:clip=mse",
            "fp8_e4m3:channel:clip=mse",
            "int4:g128:clip=mse:scale=fp32",
        ] {
            let s = Spec::parse(spec).unwrap();
            for v in [0.0f32, 0.37, -2.0, 1e-30] {
                let mut x = vec![v; 2 * 2048];
                x[2048..].iter_mut().for_each(|a| *a = v.abs() * 0.5);
                let q = quantize(&x, &[2, 2048], &s)
                    .unwrap_or_else(|e| panic!("{spec} on rows of {v}: {e}"));
                assert!(q.dequant.iter().all(|a| a.is_finite()), "{spec} {v}");
                if v == 0.0 {
                    assert!(q.dequant.iter().all(|&a| a == 0.0), "{spec}");
                } else if v.abs() > 1e-6 {
                    // a constant row is represented exactly (its magnitude is the top level; the
                    // scales are fp32 here, the default fp16 of groups would round them)
                    assert!(q.metrics.max_abs_err <= 1e-6 * v.abs() as f64, "{spec} {v}");
                }
            }
        }
    }
}
