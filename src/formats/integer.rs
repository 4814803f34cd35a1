//! Integers of 1–16 bits (unsigned, two's complement, sign-magnitude) and fixed point.
//!
//! A fixed-point number is an integer `i` read as `i · 2^−f` (f fractional bits): linear quantization
//! with the scale fixed to a power of two. `frac_bits = 0` is a plain integer.

use super::{ldexp, range_stats, Constants, Encoded, Field, FieldKind, Rounding};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntEncoding {
    Unsigned,
    TwosComplement,
    /// A sign bit and a magnitude: symmetric range, two zeros.
    SignMagnitude,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntFormat {
    pub bits: u32,
    pub encoding: IntEncoding,
    pub frac_bits: u32,
}

impl IntFormat {
    pub fn new(bits: u32, encoding: IntEncoding) -> Self {
        IntFormat {
            bits,
            encoding,
            frac_bits: 0,
        }
    }

    pub fn fixed(bits: u32, encoding: IntEncoding, frac_bits: u32) -> Self {
        IntFormat {
            bits,
            encoding,
            frac_bits,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(1..=16).contains(&self.bits) {
            return Err(format!("integers have 1..=16 bits, got {}", self.bits));
        }
        if self.encoding == IntEncoding::SignMagnitude && self.bits < 2 {
            return Err("sign-magnitude needs at least 2 bits".into());
        }
        if self.frac_bits > 32 {
            return Err(format!(
                "at most 32 fractional bits, got {}",
                self.frac_bits
            ));
        }
        Ok(())
    }

    /// Smallest and largest integer (before the 2^−f scaling).
    pub fn int_range(&self) -> (i64, i64) {
        let b = self.bits;
        match self.encoding {
            IntEncoding::Unsigned => (0, (1i64 << b) - 1),
            IntEncoding::TwosComplement => (-(1i64 << (b - 1)), (1i64 << (b - 1)) - 1),
            IntEncoding::SignMagnitude => (-((1i64 << (b - 1)) - 1), (1i64 << (b - 1)) - 1),
        }
    }

    pub fn step(&self) -> f64 {
        ldexp(1.0, -(self.frac_bits as i32))
    }

    fn mask(&self) -> u64 {
        (1u64 << self.bits) - 1
    }

    /// The integer a code stands for; sign-magnitude's `100…0` is −0, returned as (0, true).
    fn int_of(&self, code: u64) -> (i64, bool) {
        let code = code & self.mask();
        let b = self.bits;
        match self.encoding {
            IntEncoding::Unsigned => (code as i64, false),
            IntEncoding::TwosComplement => {
                let v = if code >> (b - 1) & 1 == 1 {
                    code as i64 - (1i64 << b)
                } else {
                    code as i64
                };
                (v, false)
            }
            IntEncoding::SignMagnitude => {
                let mag = (code & ((1u64 << (b - 1)) - 1)) as i64;
                let neg = code >> (b - 1) & 1 == 1;
                (if neg { -mag } else { mag }, neg && mag == 0)
            }
        }
    }

    fn code_of(&self, i: i64, neg_zero: bool) -> u64 {
        let b = self.bits;
        match self.encoding {
            IntEncoding::Unsigned => i as u64,
            IntEncoding::TwosComplement => (i as u64) & self.mask(),
            IntEncoding::SignMagnitude => {
                let sign = if i < 0 || (i == 0 && neg_zero) {
                    1u64 << (b - 1)
                } else {
                    0
                };
                sign | i.unsigned_abs()
            }
        }
    }

    pub fn decode(&self, code: u64) -> f64 {
        let (i, neg_zero) = self.int_of(code);
        if neg_zero {
            -0.0
        } else {
            ldexp(i as f64, -(self.frac_bits as i32))
        }
    }

    /// Round to the nearest step (ties to even) and saturate to the range; integers always saturate.
    pub fn encode(&self, x: f64) -> Encoded {
        let (lo, hi) = self.int_range();
        if x.is_nan() {
            // no integer stands for NaN: 0 is the stand-in, as Rust's `as` casts do
            let code = self.code_of(0, false);
            return Encoded {
                code,
                value: 0.0,
                rounding: Rounding::NotRepresentable,
                truncated: code,
            };
        }
        let scaled = x * ldexp(1.0, self.frac_bits as i32); // exact: a power-of-two scaling
        let neg_zero = self.encoding == IntEncoding::SignMagnitude && x.is_sign_negative();
        let r = scaled.round_ties_even();
        let (i, rounding, trunc) = if r > hi as f64 || r < lo as f64 {
            let clamped = if r > hi as f64 { hi } else { lo };
            (clamped, Rounding::Saturated, clamped)
        } else {
            let t = scaled.trunc();
            let rounding = if r == scaled {
                Rounding::Exact
            } else if (scaled - t).abs() == 0.5 {
                if r == t {
                    Rounding::TieTowardZero
                } else {
                    Rounding::TieAwayFromZero
                }
            } else if r == t {
                if r == 0.0 {
                    Rounding::Underflow
                } else {
                    Rounding::TowardZero
                }
            } else {
                Rounding::AwayFromZero
            };
            (r as i64, rounding, t as i64)
        };
        let code = self.code_of(i, neg_zero);
        Encoded {
            code,
            value: self.decode(code),
            rounding,
            truncated: self.code_of(trunc, neg_zero),
        }
    }

    pub fn fields(&self) -> Vec<Field> {
        let mut f = Vec::new();
        let mut int_bits = self.bits;
        if self.encoding == IntEncoding::SignMagnitude {
            f.push(Field {
                kind: FieldKind::Sign,
                width: 1,
            });
            int_bits -= 1;
        }
        let frac = self.frac_bits.min(int_bits);
        if int_bits > frac {
            f.push(Field {
                kind: FieldKind::Integer,
                width: int_bits - frac,
            });
        }
        if frac > 0 {
            f.push(Field {
                kind: FieldKind::Fraction,
                width: frac,
            });
        }
        f
    }

    pub fn constants(&self) -> Constants {
        let (lo, hi) = self.int_range();
        let step = self.step();
        let max = hi as f64 * step;
        let min_positive = (hi > 0).then_some(step);
        let (dynamic_range_db, binades) = range_stats(max, min_positive);
        Constants {
            bits: self.bits,
            kind: if self.frac_bits > 0 { "fixed" } else { "int" },
            max,
            min: lo as f64 * step,
            min_normal: Some(step),
            min_subnormal: None,
            min_positive,
            eps: Some(step),
            dynamic_range_db,
            binades,
            finite_codes: 1u64 << self.bits,
            has_inf: false,
            has_nan: false,
            has_neg_zero: self.encoding == IntEncoding::SignMagnitude,
            has_subnormals: false,
        }
    }
}
