//! Number formats, modelled exactly.
//!
//! Three families cover everything a quantization tool stores an element in:
//! - [`MiniFloat`]: a binary float with any exponent and mantissa width, bias and special-value policy
//!   (IEEE, OCP "fn", finite-only, FNUZ, and the E8M0 power-of-two scale);
//! - [`IntFormat`]: unsigned, two's-complement and sign-magnitude integers of 1–16 bits, optionally with
//!   fractional bits (fixed point);
//! - [`Codebook`]: a fixed table of values, such as QLoRA's NF4.
//!
//! Every format decodes each of its codes to the exact value (as `f64`, which holds every value of every
//! format here exactly) and encodes any `f32`/`f64` with round-to-nearest-even in one step, saturating
//! or not. The catalog ([`lookup`], [`catalog`]) gives them names.

mod catalog;
mod codebook;
mod integer;
mod minifloat;

pub use catalog::{catalog, catalog_names, lookup, NamedFormat};
pub use codebook::Codebook;
pub use integer::{IntEncoding, IntFormat};
pub use minifloat::{MiniFloat, Specials};

use serde::Serialize;

/// Errors from naming or building a format.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FormatError {
    #[error("unknown format '{name}'; known formats: {known}; parametric: intN, uintN, smintN (N = 1..16), fixN_F, ufixN_F (F fractional bits), eXmY[_ieee|_fn|_fnuz|_finite][_bB]")]
    Unknown { name: String, known: String },
    #[error("invalid format '{name}': {why}")]
    Invalid { name: String, why: String },
}

/// What a code decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Zero,
    Subnormal,
    Normal,
    Inf,
    Nan,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Zero => "zero",
            Class::Subnormal => "subnormal",
            Class::Normal => "normal",
            Class::Inf => "inf",
            Class::Nan => "nan",
        }
    }
}

/// What happened to a value on its way into a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// The value is representable: no rounding.
    Exact,
    /// Rounded to the neighbour nearer zero.
    TowardZero,
    /// Rounded to the neighbour farther from zero.
    AwayFromZero,
    /// Exactly half-way; went to the neighbour with the even code (nearer zero).
    TieTowardZero,
    /// Exactly half-way; went to the neighbour with the even code (farther from zero).
    TieAwayFromZero,
    /// Too small for the smallest non-zero value: became zero (or the smallest value, where there is no zero).
    Underflow,
    /// Too large, or infinite: clamped to the largest finite value.
    Saturated,
    /// Too large, or infinite: became infinity.
    OverflowToInf,
    /// Too large, or infinite, in a format without infinity: became NaN.
    OverflowToNan,
    /// NaN in, NaN out.
    Nan,
    /// The value has no code in this format (NaN or a negative/zero value in a format without it).
    NotRepresentable,
}

impl Rounding {
    pub fn describe(self) -> &'static str {
        match self {
            Rounding::Exact => "exact",
            Rounding::TowardZero => "rounded toward zero (nearest)",
            Rounding::AwayFromZero => "rounded away from zero (nearest)",
            Rounding::TieTowardZero => "tie, rounded to even (toward zero)",
            Rounding::TieAwayFromZero => "tie, rounded to even (away from zero)",
            Rounding::Underflow => "underflow",
            Rounding::Saturated => "saturated to the largest finite value",
            Rounding::OverflowToInf => "overflow to infinity",
            Rounding::OverflowToNan => "overflow to NaN",
            Rounding::Nan => "NaN",
            Rounding::NotRepresentable => "not representable: mapped to a stand-in code",
        }
    }
}

/// The result of encoding one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Encoded {
    /// The bit pattern in the format (low `bits` bits).
    pub code: u64,
    /// What that code decodes to.
    pub value: f64,
    pub rounding: Rounding,
    /// The code that truncation (rounding toward zero, same saturation) would give: `code ^ truncated`
    /// are the bits that rounding flipped.
    pub truncated: u64,
}

/// Overflow policy for encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Values beyond the largest finite value (and ±Inf) clamp to ±max.
    Saturate,
    /// IEEE behaviour: overflow becomes Inf where the format has it, else NaN, else (no NaN either) saturates.
    NoSaturate,
}

/// The kind of one field in a bit layout, most significant first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Sign,
    Exponent,
    Mantissa,
    Integer,
    Fraction,
    Index,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Field {
    pub kind: FieldKind,
    pub width: u32,
}

/// A number format: the union of the three families.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Float(MiniFloat),
    Int(IntFormat),
    Codebook(Codebook),
}

/// The constants a person compares formats by.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Constants {
    pub bits: u32,
    pub kind: &'static str,
    pub max: f64,
    pub min: f64,
    /// Smallest positive normal value (floats); the step for integers and fixed point.
    pub min_normal: Option<f64>,
    /// Smallest positive subnormal value, where the format has subnormals.
    pub min_subnormal: Option<f64>,
    /// Smallest positive value.
    pub min_positive: Option<f64>,
    /// Distance from 1 to the next value (floats: 2^-M); the step for fixed point.
    pub eps: Option<f64>,
    /// 20·log10(max / min_positive).
    pub dynamic_range_db: Option<f64>,
    /// log2(max / min_positive).
    pub binades: Option<f64>,
    /// Codes that decode to a finite value (±0 counted twice where both exist).
    pub finite_codes: u64,
    pub has_inf: bool,
    pub has_nan: bool,
    pub has_neg_zero: bool,
    pub has_subnormals: bool,
}

impl Format {
    pub fn bits(&self) -> u32 {
        match self {
            Format::Float(f) => f.bits(),
            Format::Int(f) => f.bits,
            Format::Codebook(c) => c.bits(),
        }
    }

    pub fn decode(&self, code: u64) -> f64 {
        match self {
            Format::Float(f) => f.decode(code),
            Format::Int(f) => f.decode(code),
            Format::Codebook(c) => c.decode(code),
        }
    }

    pub fn classify(&self, code: u64) -> Class {
        match self {
            Format::Float(f) => f.classify(code),
            Format::Int(f) => class_of_value(f.decode(code)),
            Format::Codebook(c) => class_of_value(c.decode(code)),
        }
    }

    /// Encode a value (an `f32` widens to `f64` exactly, so this serves both).
    pub fn encode(&self, x: f64, overflow: Overflow) -> Encoded {
        match self {
            Format::Float(f) => f.encode(x, overflow),
            Format::Int(f) => f.encode(x),
            Format::Codebook(c) => c.encode(x),
        }
    }

    pub fn fields(&self) -> Vec<Field> {
        match self {
            Format::Float(f) => f.fields(),
            Format::Int(f) => f.fields(),
            Format::Codebook(c) => vec![Field {
                kind: FieldKind::Index,
                width: c.bits(),
            }],
        }
    }

    pub fn constants(&self) -> Constants {
        match self {
            Format::Float(f) => f.constants(),
            Format::Int(f) => f.constants(),
            Format::Codebook(c) => c.constants(),
        }
    }

    /// Every code with its value, for formats of at most 16 bits (`None` for wider ones).
    pub fn values(&self) -> Option<Vec<(u64, f64)>> {
        let bits = self.bits();
        if bits > 16 {
            return None;
        }
        Some((0..(1u64 << bits)).map(|c| (c, self.decode(c))).collect())
    }

    /// The distinct finite values, sorted ascending (−0 folded into +0), for formats of at most 16 bits.
    pub fn finite_values_sorted(&self) -> Option<Vec<f64>> {
        let mut v: Vec<f64> = self
            .values()?
            .into_iter()
            .map(|(_, x)| x)
            .filter(|x| x.is_finite())
            .map(|x| if x == 0.0 { 0.0 } else { x })
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        Some(v)
    }
}

fn class_of_value(v: f64) -> Class {
    if v.is_nan() {
        Class::Nan
    } else if v.is_infinite() {
        Class::Inf
    } else if v == 0.0 {
        Class::Zero
    } else {
        Class::Normal
    }
}

/// `m · 2^k`, exactly, for any integer `m < 2^53` and any `k` that keeps the result representable.
pub(crate) fn ldexp(m: f64, k: i32) -> f64 {
    // 2^k is built from its bits for normal exponents; beyond them the power is applied in two exact steps,
    // so a subnormal result is produced by one final multiplication (exact when the result is representable).
    fn pow2(k: i32) -> f64 {
        debug_assert!((-1022..=1023).contains(&k));
        f64::from_bits(((k + 1023) as u64) << 52)
    }
    if (-1022..=1023).contains(&k) {
        m * pow2(k)
    } else if k < -1022 {
        m * pow2(-1022) * pow2((k + 1022).max(-1022))
    } else {
        m * pow2(1023) * pow2((k - 1023).min(1023))
    }
}

fn range_stats(max: f64, min_positive: Option<f64>) -> (Option<f64>, Option<f64>) {
    match min_positive {
        Some(mp) if max > 0.0 && mp > 0.0 && max.is_finite() => {
            let ratio_log2 = max.log2() - mp.log2();
            (
                Some(20.0 * ratio_log2 * std::f64::consts::LOG10_2),
                Some(ratio_log2),
            )
        }
        _ => (None, None),
    }
}

impl Format {
    /// The code in binary, fields separated by spaces, most significant bit first (`0 0111 110`).
    pub fn bit_string(&self, code: u64) -> String {
        let mut s = String::new();
        let mut pos = self.bits();
        for (i, f) in self.fields().iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            for _ in 0..f.width {
                pos -= 1;
                s.push(if code >> pos & 1 == 1 { '1' } else { '0' });
            }
        }
        s
    }

    /// A short layout such as `S1 E4 M3`, `I8`, `S1 I3`, `I4 F4` or `idx4`.
    pub fn layout(&self) -> String {
        self.fields()
            .iter()
            .map(|f| {
                let tag = match f.kind {
                    FieldKind::Sign => "S",
                    FieldKind::Exponent => "E",
                    FieldKind::Mantissa => "M",
                    FieldKind::Integer => "I",
                    FieldKind::Fraction => "F",
                    FieldKind::Index => "idx",
                };
                format!("{tag}{}", f.width)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The exponent bias, for floats.
    pub fn bias(&self) -> Option<i32> {
        match self {
            Format::Float(f) => Some(f.bias),
            _ => None,
        }
    }

    /// The two representable values around `x` (equal when `x` is representable), for formats of at
    /// most 16 bits; `None` outside the finite range.
    pub fn neighbours(&self, x: f64) -> Option<(f64, f64)> {
        let v = self.finite_values_sorted()?;
        let hi = v.partition_point(|&c| c < x);
        if hi < v.len() && v[hi] == x {
            return Some((x, x));
        }
        (hi > 0 && hi < v.len()).then(|| (v[hi - 1], v[hi]))
    }
}

/// Parse a value a person typed: a decimal, `inf`, `-inf`, `nan`, or `0x…` read as f32 bits.
pub fn parse_value(s: &str) -> Result<f64, String> {
    let t = s.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16)
            .map(|bits| f32::from_bits(bits) as f64)
            .map_err(|_| format!("'{s}' is not a 32-bit hex pattern"));
    }
    t.parse::<f64>().map_err(|_| {
        format!("'{s}' is not a number (use a decimal, inf, -inf, nan, or 0x… f32 bits)")
    })
}

/// A number for people: shortest round-trip digits, in scientific notation when very large or small.
pub fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if x != 0.0 && (x.abs() >= 1e7 || x.abs() < 1e-4) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A number in at most about 10 characters, for tables: 4 significant digits when the exact digits are long.
pub fn fmt_short(x: f64) -> String {
    let exact = fmt_num(x);
    if exact.len() <= 10 {
        return exact;
    }
    let a = x.abs();
    if (1e-3..1e6).contains(&a) {
        // 4 significant digits, trailing zeros dropped: 0.10000000000000009 → 0.1
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{x:.decimals$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        return s;
    }
    let s = format!("{x:.3e}");
    // 1.000e-5 → 1e-5
    match s.split_once('e') {
        Some((m, e)) => format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.')),
        None => s,
    }
}

/// `2^k` when `x` is a power of two.
pub fn power_of_two(x: f64) -> Option<i32> {
    if x <= 0.0 || !x.is_finite() {
        return None;
    }
    let k = x.log2().round() as i32;
    (ldexp(1.0, k) == x).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(name: &str) -> Format {
        lookup(name).unwrap().format
    }

    #[test]
    fn lecture_fp4_tables() {
        // quantization.md §1.4: the three FP4 layouts' non-negative values
        let pos = |name: &str| -> Vec<f64> {
            fmt(name)
                .finite_values_sorted()
                .unwrap()
                .into_iter()
                .filter(|&v| v >= 0.0)
                .collect()
        };
        assert_eq!(pos("fp4_e2m1"), [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(pos("fp4_e1m2"), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
        assert_eq!(pos("fp4_e3m0"), [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]);
    }

    #[test]
    fn published_constants() {
        // quantization.md §1.2–1.3, recomputed there with exact fractions
        let c = fmt("fp16").constants();
        assert_eq!(
            (c.max, c.min_normal, c.min_subnormal),
            (65504.0, Some(ldexp(1.0, -14)), Some(ldexp(1.0, -24)))
        );
        let c = fmt("bf16").constants();
        assert_eq!(c.min_subnormal, Some(ldexp(1.0, -133)));
        assert_eq!(c.max, (2.0 - ldexp(1.0, -7)) * ldexp(1.0, 127));
        let c = fmt("fp32").constants();
        assert_eq!(
            (c.max, c.min_subnormal),
            (f32::MAX as f64, Some(ldexp(1.0, -149)))
        );
        let c = fmt("fp64").constants();
        assert_eq!(
            (c.max, c.min_subnormal),
            (f64::MAX, Some(ldexp(1.0, -1074)))
        );
        assert_eq!(c.finite_codes, 0u64.wrapping_sub(2 << 52)); // 2^64 − 2^53 codes are finite
        assert_eq!(fmt("fp8_e4m3fnuz").constants().max, 240.0);
        assert_eq!(fmt("fp8_e4m3").constants().finite_codes, 254);
        assert_eq!(fmt("fp8_e5m2").constants().finite_codes, 256 - 8);
        let c = fmt("e8m0").constants();
        assert_eq!(
            (c.min_normal, c.max),
            (Some(ldexp(1.0, -127)), ldexp(1.0, 127))
        );
        // dynamic range of E4M3: 448 / 2^-9 → log2 = 17.807 binades
        let b = fmt("fp8_e4m3").constants().binades.unwrap();
        assert!((b - (448f64 * 512.0).log2()).abs() < 1e-12);
    }

    #[test]
    fn nf4_is_the_published_table() {
        let f = fmt("nf4");
        assert_eq!(f.decode(0), -1.0);
        assert_eq!(f.decode(7), 0.0);
        assert_eq!(f.decode(15), 1.0);
        assert_eq!(f.decode(8) as f32, 0.079_580_3);
        // nearest entry, ties toward zero; beyond ±1 clamps
        assert_eq!(f.encode(0.5, Overflow::Saturate).value as f32, 0.440_709_83);
        assert_eq!(f.encode(0.039, Overflow::Saturate).value, 0.0); // the midpoint to 0.0796 is 0.0398
        assert_eq!(
            f.encode(3.0, Overflow::Saturate).rounding,
            Rounding::Saturated
        );
    }

    #[test]
    fn integers_and_fixed_point() {
        let sm = fmt("smint4");
        assert_eq!(sm.decode(0b1000).to_bits(), (-0.0f64).to_bits()); // the second zero
        assert_eq!(sm.decode(0b1111), -7.0);
        assert_eq!(sm.encode(-9.0, Overflow::Saturate).code, 0b1111);
        let q = fmt("fix8_4");
        assert_eq!(q.decode(0x80), -8.0);
        assert_eq!(
            q.encode(0.03125, Overflow::Saturate).rounding,
            Rounding::TieTowardZero
        ); // 0.5 step → 0
        assert_eq!(q.encode(0.09375, Overflow::Saturate).value, 0.125); // 1.5 steps → 2 (even)
        let u = fmt("uint4");
        assert_eq!(u.encode(-3.0, Overflow::Saturate).value, 0.0);
        assert_eq!(fmt("int8").encode(2.5, Overflow::Saturate).value, 2.0);
        assert_eq!(fmt("int8").encode(-2.5, Overflow::Saturate).value, -2.0);
        assert_eq!(fmt("int8").encode(3.5, Overflow::Saturate).value, 4.0);
    }

    #[test]
    fn rounding_events_and_flipped_bits() {
        let f = fmt("fp8_e4m3");
        // 0.3 lies between 0.28125 (0 0101 001) and 0.3125 (0 0101 010), nearer the latter
        let e = f.encode(0.3, Overflow::Saturate);
        assert_eq!((e.value, e.rounding), (0.3125, Rounding::AwayFromZero));
        assert_eq!(f.bit_string(e.code), "0 0101 010");
        assert_eq!(f.bit_string(e.truncated), "0 0101 001");
        assert_eq!(e.code ^ e.truncated, 0b011);
        // a carry into the exponent: 1.96 truncates to 1.875 (0 0111 111) but rounds to 2 (0 1000 000)
        let e = f.encode(1.96, Overflow::Saturate);
        assert_eq!(
            (e.value, f.bit_string(e.code ^ e.truncated)),
            (2.0, "0 1111 111".to_string())
        );
        // 464 is the tie between 448 and the NaN code: even wins; above it overflows
        assert_eq!(
            f.encode(464.0, Overflow::NoSaturate).rounding,
            Rounding::TieTowardZero
        );
        assert_eq!(
            f.encode(465.0, Overflow::NoSaturate).rounding,
            Rounding::OverflowToNan
        );
        assert_eq!(f.encode(465.0, Overflow::Saturate).value, 448.0);
        assert_eq!(
            fmt("fp8_e5m2").encode(1e6, Overflow::NoSaturate).rounding,
            Rounding::OverflowToInf
        );
        assert_eq!(
            f.encode(1e-4, Overflow::Saturate).rounding,
            Rounding::Underflow
        );
        assert_eq!(f.layout(), "S1 E4 M3");
        assert_eq!(f.neighbours(0.3), Some((0.28125, 0.3125)));
    }

    #[test]
    fn short_numbers() {
        assert_eq!(fmt_short(-0.10000000000000009), "-0.1");
        assert_eq!(fmt_short(0.001953125), "0.001953");
        assert_eq!(fmt_short(0.015625), "0.015625");
        assert_eq!(fmt_short(1.2345678e-5), "1.235e-5");
        assert_eq!(fmt_short(f32::MAX as f64), "3.403e38");
        assert_eq!(fmt_short(12.345678912), "12.35");
    }

    #[test]
    fn six_db_per_bit_for_integers() {
        // the step halves with each extra bit: 20·log10(2) ≈ 6.02 dB more dynamic range per bit
        let d = |n: u32| {
            fmt(&format!("int{n}"))
                .constants()
                .dynamic_range_db
                .unwrap()
        };
        for n in 8..16 {
            let gain = d(n + 1) - d(n);
            assert!((gain - 6.0206).abs() < 0.05, "int{n}: {gain}");
        }
    }
}
