//! A generic binary float: sign, E exponent bits, M mantissa bits, a bias and a special-value policy.
//!
//! Value of a code with exponent field `e` and mantissa field `m`:
//! normal `(−1)^s · 2^(e − bias) · (1 + m/2^M)`, subnormal (`e = 0`) `(−1)^s · 2^(1 − bias) · m/2^M`.
//! Encoding is done on integers: the input is split into `mant · 2^exp` (exact), divided by the
//! quantum of its binade (a shift), and rounded once, to nearest with ties to even.

use super::{ldexp, range_stats, Class, Constants, Encoded, Field, FieldKind, Overflow, Rounding};

/// Which codes are special.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Specials {
    /// IEEE 754: exponent all ones is ±Inf (mantissa 0) or NaN (mantissa ≠ 0).
    Ieee,
    /// OCP FP8 E4M3 ("fn", finite): no Inf; only exponent and mantissa all ones is NaN.
    AllOnesNan,
    /// OCP MX FP6/FP4: every code is a finite number.
    Finite,
    /// AMD/Graphcore FNUZ: no Inf, no −0; the code `1000…0` is the only NaN.
    Fnuz,
    /// OCP MX E8M0 scale: unsigned, no zero, no subnormals, `0xFF` is NaN; codes are powers of two.
    E8m0,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiniFloat {
    pub exp_bits: u32,
    pub man_bits: u32,
    pub bias: i32,
    pub specials: Specials,
}

impl MiniFloat {
    /// A float with the default bias `2^(E−1) − 1`.
    pub fn new(exp_bits: u32, man_bits: u32, specials: Specials) -> Self {
        let bias = (1i32 << (exp_bits - 1)) - 1;
        MiniFloat {
            exp_bits,
            man_bits,
            bias,
            specials,
        }
    }

    pub fn with_bias(mut self, bias: i32) -> Self {
        self.bias = bias;
        self
    }

    /// Checks the parameters; `new` does not, so custom formats go through here.
    pub fn validate(&self) -> Result<(), String> {
        let MiniFloat {
            exp_bits,
            man_bits,
            bias,
            specials,
        } = *self;
        if !(1..=11).contains(&exp_bits) {
            return Err(format!("exponent bits must be 1..=11, got {exp_bits}"));
        }
        if man_bits > 52 {
            return Err(format!("mantissa bits must be 0..=52, got {man_bits}"));
        }
        if self.bits() > 64 {
            return Err("a float is at most 64 bits".into());
        }
        let policy: Result<(), String> = match specials {
            Specials::Ieee if exp_bits < 2 => {
                Err("IEEE specials need at least 2 exponent bits".into())
            }
            Specials::AllOnesNan if man_bits == 0 => {
                Err("the all-ones-NaN policy needs at least 1 mantissa bit".into())
            }
            Specials::E8m0 if man_bits != 0 => Err("an E8M0-style scale has no mantissa".into()),
            _ => Ok(()),
        };
        policy?;
        let emax_field = (1i32 << exp_bits) - 1;
        if bias < -(emax_field) || bias > 1100 {
            return Err(format!("bias {bias} is out of the supported range"));
        }
        // The largest and smallest values must stay inside f64 so that every value is held exactly.
        let top = self.max_fields().0 as i32 - bias;
        let bottom = 1 - bias - man_bits as i32;
        if top > 1023 || bottom < -1074 {
            return Err(
                "values would not fit in f64; choose a smaller bias or fewer exponent bits".into(),
            );
        }
        Ok(())
    }

    pub fn signed(&self) -> bool {
        self.specials != Specials::E8m0
    }

    pub fn bits(&self) -> u32 {
        self.signed() as u32 + self.exp_bits + self.man_bits
    }

    fn has_subnormals(&self) -> bool {
        self.specials != Specials::E8m0
    }

    fn exp_all_ones(&self) -> u64 {
        (1u64 << self.exp_bits) - 1
    }

    fn man_all_ones(&self) -> u64 {
        (1u64 << self.man_bits) - 1
    }

    fn sign_bit(&self) -> u64 {
        if self.signed() {
            1u64 << (self.exp_bits + self.man_bits)
        } else {
            0
        }
    }

    fn split(&self, code: u64) -> (bool, u64, u64) {
        let sign = self.signed() && code & self.sign_bit() != 0;
        let e = (code >> self.man_bits) & self.exp_all_ones();
        let m = code & self.man_all_ones();
        (sign, e, m)
    }

    fn join(&self, neg: bool, e: u64, m: u64) -> u64 {
        (if neg { self.sign_bit() } else { 0 }) | (e << self.man_bits) | m
    }

    /// The code of the canonical NaN with the given sign, if the format has NaN.
    pub fn nan_code(&self, neg: bool) -> Option<u64> {
        match self.specials {
            Specials::Ieee => {
                // quiet NaN: the top mantissa bit set (all ones when there is a single mantissa bit)
                let m = if self.man_bits == 0 {
                    return None;
                } else {
                    1u64 << (self.man_bits - 1)
                };
                Some(self.join(neg, self.exp_all_ones(), m))
            }
            Specials::AllOnesNan => Some(self.join(neg, self.exp_all_ones(), self.man_all_ones())),
            Specials::Fnuz => Some(self.sign_bit()),
            Specials::E8m0 => Some(self.exp_all_ones()),
            Specials::Finite => None,
        }
    }

    fn inf_code(&self, neg: bool) -> Option<u64> {
        (self.specials == Specials::Ieee).then(|| self.join(neg, self.exp_all_ones(), 0))
    }

    /// Largest exponent field that holds finite values, and the largest mantissa there.
    fn max_fields(&self) -> (u64, u64) {
        match self.specials {
            Specials::Ieee | Specials::E8m0 => (self.exp_all_ones() - 1, self.man_all_ones()),
            Specials::AllOnesNan => (self.exp_all_ones(), self.man_all_ones() - 1),
            Specials::Finite | Specials::Fnuz => (self.exp_all_ones(), self.man_all_ones()),
        }
    }

    pub fn max_code(&self, neg: bool) -> u64 {
        let (e, m) = self.max_fields();
        self.join(neg && self.signed(), e, m)
    }

    pub fn max(&self) -> f64 {
        self.decode(self.max_code(false))
    }

    /// Unbiased exponent of the smallest normal binade.
    fn emin(&self) -> i32 {
        if self.has_subnormals() {
            1 - self.bias
        } else {
            -self.bias
        }
    }

    pub fn classify(&self, code: u64) -> Class {
        let (sign, e, m) = self.split(code);
        match self.specials {
            Specials::Ieee if e == self.exp_all_ones() => {
                return if m == 0 { Class::Inf } else { Class::Nan };
            }
            Specials::AllOnesNan if e == self.exp_all_ones() && m == self.man_all_ones() => {
                return Class::Nan
            }
            Specials::Fnuz if sign && e == 0 && m == 0 => return Class::Nan,
            Specials::E8m0 if e == self.exp_all_ones() => return Class::Nan,
            Specials::E8m0 => return Class::Normal,
            _ => {}
        }
        match (e, m) {
            (0, 0) => Class::Zero,
            (0, _) => Class::Subnormal,
            _ => Class::Normal,
        }
    }

    pub fn decode(&self, code: u64) -> f64 {
        let (sign, e, m) = self.split(code);
        let magnitude = match self.classify(code) {
            Class::Nan => return f64::NAN,
            Class::Inf => f64::INFINITY,
            Class::Zero => 0.0,
            Class::Subnormal => ldexp(m as f64, self.emin() - self.man_bits as i32),
            Class::Normal => {
                let significand = ((1u64 << self.man_bits) | m) as f64;
                ldexp(significand, e as i32 - self.bias - self.man_bits as i32)
            }
        };
        if sign {
            -magnitude
        } else {
            magnitude
        }
    }

    pub fn fields(&self) -> Vec<Field> {
        let mut f = Vec::with_capacity(3);
        if self.signed() {
            f.push(Field {
                kind: FieldKind::Sign,
                width: 1,
            });
        }
        f.push(Field {
            kind: FieldKind::Exponent,
            width: self.exp_bits,
        });
        if self.man_bits > 0 {
            f.push(Field {
                kind: FieldKind::Mantissa,
                width: self.man_bits,
            });
        }
        f
    }

    pub fn constants(&self) -> Constants {
        let max = self.max();
        let min_normal = ldexp(1.0, self.emin());
        let min_subnormal = (self.has_subnormals() && self.man_bits > 0)
            .then(|| ldexp(1.0, self.emin() - self.man_bits as i32));
        let min_positive = min_subnormal.unwrap_or(min_normal);
        let (dynamic_range_db, binades) = range_stats(max, Some(min_positive));
        // 2^bits codes; a 64-bit format wraps to 0 here, and the subtraction below wraps back (mod 2^64)
        let total = 1u64.checked_shl(self.bits()).unwrap_or(0);
        let non_finite: u64 = match self.specials {
            // exponent all ones, both signs, every mantissa
            Specials::Ieee => 2 << self.man_bits,
            Specials::AllOnesNan => 2,
            Specials::Fnuz | Specials::E8m0 => 1,
            Specials::Finite => 0,
        };
        Constants {
            bits: self.bits(),
            kind: if self.specials == Specials::E8m0 {
                "scale"
            } else {
                "float"
            },
            max,
            min: if self.signed() { -max } else { min_normal },
            min_normal: Some(min_normal),
            min_subnormal,
            min_positive: Some(min_positive),
            eps: Some(ldexp(1.0, -(self.man_bits as i32))),
            dynamic_range_db,
            binades,
            finite_codes: total.wrapping_sub(non_finite),
            has_inf: self.specials == Specials::Ieee,
            has_nan: self.specials != Specials::Finite,
            has_neg_zero: self.signed() && self.specials != Specials::Fnuz,
            has_subnormals: min_subnormal.is_some(),
        }
    }

    /// Encode `x` with round-to-nearest-even (ties away from zero for E8M0, as ml_dtypes does).
    pub fn encode(&self, x: f64, overflow: Overflow) -> Encoded {
        let neg = x.is_sign_negative();
        let exact = |code: u64, rounding: Rounding| Encoded {
            code,
            value: self.decode(code),
            rounding,
            truncated: code,
        };

        if x.is_nan() {
            return match self.nan_code(neg) {
                Some(c) => exact(c, Rounding::Nan),
                // A format without NaN has no right answer; +0 is the stand-in (ml_dtypes gives a signed
                // zero with the sign inverted, which carries no meaning either).
                None => exact(0, Rounding::NotRepresentable),
            };
        }
        if self.specials == Specials::E8m0 && (neg || x == 0.0) {
            // no sign and no zero: ml_dtypes maps these to NaN
            return exact(self.exp_all_ones(), Rounding::NotRepresentable);
        }
        let neg = neg && self.signed();
        if x.is_infinite() {
            return self.overflow(neg, overflow, self.max_code(neg));
        }
        if x == 0.0 {
            let code = if neg && self.specials != Specials::Fnuz {
                self.sign_bit()
            } else {
                0
            };
            return exact(code, Rounding::Exact);
        }

        // |x| = mant · 2^exp with mant < 2^53, exactly.
        let bits = x.abs().to_bits();
        let (mant, exp) = {
            let field = (bits >> 52) as i32;
            let frac = bits & ((1u64 << 52) - 1);
            if field == 0 {
                (frac, -1074)
            } else {
                (frac | (1u64 << 52), field - 1075)
            }
        };
        let e = exp + 63 - mant.leading_zeros() as i32; // floor(log2 |x|)
        let (emax_field, _) = self.max_fields();
        let emax = emax_field as i32 - self.bias;
        if e > emax + 1 {
            return self.overflow(neg, overflow, self.max_code(neg));
        }

        if self.specials == Specials::E8m0 && x < f32::MIN_POSITIVE as f64 && x >= ldexp(1.0, -149)
        {
            // ml_dtypes (the oracle) turns an f32 subnormal input into 2^-127 when it is at most 2^-127 and
            // into 2^-126 above it. E8M0 scales never come from such inputs in practice; follow the oracle.
            let code = if x <= ldexp(1.0, -127) { 0 } else { 1 };
            let rounding = if x == ldexp(1.0, -127) {
                Rounding::Exact
            } else {
                Rounding::Underflow
            };
            return Encoded {
                code,
                value: self.decode(code),
                rounding,
                truncated: 0,
            };
        }

        // Divide by the quantum of the binade (or of the subnormal range) and round once.
        let e_eff = e.max(self.emin());
        let quantum = e_eff - self.man_bits as i32;
        let shift = exp - quantum;
        let (truncated, rem_vs_half) = if shift >= 0 {
            (mant << shift, std::cmp::Ordering::Less) // exact: remainder 0
        } else {
            let k = (-shift) as u32;
            if k > 64 {
                // mant < 2^53 ≤ 2^(k-1): below half of the quantum
                (0, std::cmp::Ordering::Less)
            } else {
                let wide = mant as u128;
                let rem = wide & ((1u128 << k) - 1);
                let half = 1u128 << (k - 1);
                (
                    (wide >> k) as u64,
                    if rem == 0 {
                        std::cmp::Ordering::Less
                    } else {
                        rem.cmp(&half)
                    },
                )
            }
        };
        let inexact = shift < 0 && {
            let k = (-shift) as u32;
            k > 64 || (mant as u128) & ((1u128 << k) - 1) != 0
        };
        let ties_away = self.specials == Specials::E8m0;
        use std::cmp::Ordering::*;
        let (n, rounding) = match (inexact, rem_vs_half) {
            (false, _) => (truncated, Rounding::Exact),
            (true, Less) => (truncated, Rounding::TowardZero),
            (true, Greater) => (truncated + 1, Rounding::AwayFromZero),
            (true, Equal) if ties_away || self.odd_code(truncated, e_eff) => {
                (truncated + 1, Rounding::TieAwayFromZero)
            }
            (true, Equal) => (truncated, Rounding::TieTowardZero),
        };

        let code_of = |n: u64| -> Option<u64> {
            // None: beyond the largest finite value
            let (mut n, mut e) = (n, e_eff);
            if n >> (self.man_bits + 1) != 0 {
                n >>= 1; // a carry out of the mantissa: the next binade, mantissa 0
                e += 1;
            }
            let (field, m) = if n < (1u64 << self.man_bits) {
                (0u64, n) // subnormal (or zero)
            } else {
                ((e + self.bias) as u64, n - (1u64 << self.man_bits))
            };
            let (max_e, max_m) = self.max_fields();
            if field > max_e || (field == max_e && m > max_m) {
                None
            } else {
                Some(self.join(neg, field, m))
            }
        };

        let trunc_code = code_of(truncated).unwrap_or_else(|| self.max_code(neg));
        if n == 0 {
            // underflow to zero; FNUZ has no −0, and E8M0 has no zero (it keeps its smallest value)
            let code = if self.specials == Specials::E8m0 {
                0
            } else if neg && self.specials != Specials::Fnuz {
                self.sign_bit()
            } else {
                0
            };
            return Encoded {
                code,
                value: self.decode(code),
                rounding: Rounding::Underflow,
                truncated: code,
            };
        }
        if self.specials == Specials::E8m0 && truncated == 0 {
            // below 2^-127 but rounding up to it: still the smallest value
            return Encoded {
                code: 0,
                value: self.decode(0),
                rounding: Rounding::Underflow,
                truncated: 0,
            };
        }
        match code_of(n) {
            Some(code) => Encoded {
                code,
                value: self.decode(code),
                rounding,
                truncated: trunc_code,
            },
            None => {
                let mut r = self.overflow(neg, overflow, trunc_code);
                r.truncated = trunc_code;
                r
            }
        }
    }

    /// Whether the code of the truncated significand `n` (in the binade of `e_eff`) is odd: ties go to
    /// the even code. With mantissa bits this is the significand's last bit; with none (E3M0) the last
    /// bit of the code is the exponent's, as a bit-level converter sees it.
    fn odd_code(&self, n: u64, e_eff: i32) -> bool {
        if self.man_bits > 0 {
            n & 1 == 1
        } else {
            n != 0 && (e_eff + self.bias) & 1 == 1
        }
    }

    fn overflow(&self, neg: bool, overflow: Overflow, truncated: u64) -> Encoded {
        let sat = Encoded {
            code: self.max_code(neg),
            value: self.decode(self.max_code(neg)),
            rounding: Rounding::Saturated,
            truncated,
        };
        if overflow == Overflow::Saturate {
            return sat;
        }
        if let Some(code) = self.inf_code(neg) {
            return Encoded {
                code,
                value: self.decode(code),
                rounding: Rounding::OverflowToInf,
                truncated,
            };
        }
        if let Some(code) = self.nan_code(neg) {
            return Encoded {
                code,
                value: f64::NAN,
                rounding: Rounding::OverflowToNan,
                truncated,
            };
        }
        sat
    }
}
