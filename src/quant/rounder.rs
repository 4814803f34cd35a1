//! Fast rounding of f32 values onto the grid of a small format (≤ 8 bits), for quantizer inner loops.
//!
//! The exact encoder in `formats` works on integers and handles every special case; calling it per
//! element costs tens of nanoseconds. Here a format's non-negative finite values are sorted once, with
//! the midpoints between neighbours (exact in f32: neighbours differ by one unit of a ≤ 7-bit mantissa),
//! so rounding a magnitude is a short binary search plus a tie check. It saturates at ±max (no Inf/NaN),
//! and tests check it against the exact encoder on every tie and between every pair of values. It needs
//! a grid symmetric about zero (a sign bit), so NF4, whose two halves differ, uses its codebook search.
//!
//! Binary floats whose grid is the IEEE one (OCP FP8/FP6/FP4: specials only at the very top, which
//! saturation never reaches) take a faster path with no search: [`Binary`] rounds the f32 bit pattern
//! at the format's mantissa width, and its codes are the f32 fields re-biased. Tests check it against
//! the table on every tie and between every pair of values.

use crate::formats::Specials;
use crate::formats::{Format, Overflow};

#[derive(Debug, Clone)]
pub struct Rounder {
    /// Sorted non-negative finite values (0 first).
    values: Vec<f32>,
    /// Midpoints between neighbours: `mids[i]` lies between `values[i]` and `values[i + 1]`.
    mids: Vec<f32>,
    /// Whether the code of `values[i]` (positive sign) is even: a tie goes to the even code.
    even: Vec<bool>,
    /// The positive code of each value, and the bit that makes it negative (0 when there is no sign).
    codes: Vec<u16>,
    sign_bit: u16,
    pub max: f32,
    fast: Option<Binary>,
}

/// Rounding onto the grid of a signed binary float with at most 7 mantissa bits, by bit arithmetic on
/// f32; built only where every value of the format is a normal f32 or a multiple of its subnormal
/// step that f32 holds exactly.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// f32 mantissa bits dropped: 23 − m
    shift: u32,
    man_mask: u32,
    /// f32 exponent bias minus the format's
    rebias: i32,
    min_normal: f32,
    /// 1.5·2^23 times the subnormal step: adding and subtracting it rounds to a multiple of the step
    magic: f32,
    inv_step: f32,
    max: f32,
    sign_bit: u16,
}

impl Binary {
    /// Round `v` (finite): the value on the grid, saturated at ±max, and its code. A negative input
    /// keeps its sign (and sign bit) when it rounds to zero, as the table does.
    #[inline(always)]
    pub fn round(&self, v: f32) -> (f32, u16) {
        let a = v.abs();
        let b = a.to_bits();
        // round to nearest, ties to even, at bit `shift`: a carry out of the mantissa moves to the
        // next binade, as it should
        let half = (1u32 << (self.shift - 1)) - 1;
        let rn = f32::from_bits((b + half + ((b >> self.shift) & 1)) & !((1u32 << self.shift) - 1));
        let rs = (a + self.magic) - self.magic;
        let r = if a < self.min_normal { rs } else { rn };
        let r = if r < self.max { r } else { self.max };
        let rb = r.to_bits();
        let normal = ((((rb >> 23) as i32 - self.rebias) as u32) << (23 - self.shift))
            | ((rb >> self.shift) & self.man_mask);
        let sub = (r * self.inv_step) as u32;
        let code = (if r < self.min_normal { sub } else { normal }) as u16;
        if v.is_sign_negative() {
            (-r, code | self.sign_bit)
        } else {
            (r, code)
        }
    }
}

impl Rounder {
    /// Build from a format of at most 8 bits with a sign bit or an unsigned range starting at 0.
    pub fn new(format: &Format) -> Rounder {
        let bits = format.bits();
        assert!(bits <= 8, "Rounder is for formats of at most 8 bits");
        let mut pairs: Vec<(f32, u16)> = (0..(1u64 << bits))
            .map(|c| (format.decode(c), c as u16))
            .filter(|(v, _)| v.is_finite() && *v >= 0.0 && v.to_bits() != (-0.0f64).to_bits())
            .map(|(v, c)| (v as f32, c))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        pairs.dedup_by(|b, a| a.0 == b.0); // keep the smaller code of equal values (+0 before others)
        let values: Vec<f32> = pairs.iter().map(|p| p.0).collect();
        let mids = values
            .windows(2)
            .map(|w| w[0] + (w[1] - w[0]) * 0.5)
            .collect();
        // the sign bit is the top bit for signed layouts; find it from the encoding of -max
        let max = *values.last().expect("a format has values");
        let neg = format.encode(-(max as f64), Overflow::Saturate).code as u16;
        let pos = format.encode(max as f64, Overflow::Saturate).code as u16;
        let sign_bit = neg & !pos;
        let fast = match format {
            Format::Float(f)
                if matches!(
                    f.specials,
                    Specials::Ieee | Specials::AllOnesNan | Specials::Finite
                ) && f.man_bits <= 7
                    && (1 - f.bias - f.man_bits as i32) >= -126
                    && max < 1e30 =>
            {
                let step = 2f32.powi(1 - f.bias - f.man_bits as i32);
                Some(Binary {
                    shift: 23 - f.man_bits,
                    man_mask: (1u32 << f.man_bits) - 1,
                    rebias: 127 - f.bias,
                    min_normal: 2f32.powi(1 - f.bias),
                    magic: 12_582_912.0 * step,
                    inv_step: 1.0 / step,
                    max,
                    sign_bit,
                })
            }
            _ => None,
        };
        Rounder {
            fast,
            even: pairs.iter().map(|p| p.1 & 1 == 0).collect(),
            codes: pairs.iter().map(|p| p.1).collect(),
            values,
            mids,
            sign_bit,
            max,
        }
    }

    /// Index of the nearest value to magnitude `a` (ties to the even code), saturating.
    #[inline]
    fn nearest_index(&self, a: f32) -> usize {
        // first midpoint >= a
        let i = self.mids.partition_point(|&m| m < a);
        if i < self.mids.len() && self.mids[i] == a {
            // a tie between values[i] and values[i + 1]
            if self.even[i] {
                i
            } else {
                i + 1
            }
        } else {
            i
        }
    }

    /// Round `v` to the grid (saturating): the value and its code. A negative input keeps its sign even
    /// when it rounds to zero (−0, as IEEE and ml_dtypes casts do), where the format has a sign bit.
    #[inline]
    pub fn round(&self, v: f32) -> (f32, u16) {
        if let Some(f) = &self.fast {
            return f.round(v);
        }
        self.round_by_table(v)
    }

    /// The bit-level rounder, where the format has one (see [`Binary`]).
    pub fn binary(&self) -> Option<&Binary> {
        self.fast.as_ref()
    }

    #[inline]
    fn round_by_table(&self, v: f32) -> (f32, u16) {
        let a = v.abs();
        let i = self.nearest_index(a);
        self.signed(v, i)
    }

    #[inline]
    fn signed(&self, v: f32, i: usize) -> (f32, u16) {
        let (val, code) = (self.values[i], self.codes[i]);
        if v.is_sign_negative() && self.sign_bit != 0 {
            (-val, code | self.sign_bit)
        } else {
            (val, code)
        }
    }

    /// Stochastic rounding: up with probability equal to the distance from the lower neighbour
    /// (`u` uniform in [0, 1)). Values beyond ±max saturate.
    #[inline]
    pub fn round_stochastic(&self, v: f32, u: f32) -> (f32, u16) {
        let a = v.abs();
        let hi = self.values.partition_point(|&x| x < a);
        let i = if hi >= self.values.len() {
            self.values.len() - 1
        } else if self.values[hi] == a || hi == 0 {
            hi
        } else {
            let lo = hi - 1;
            let p_up = (a - self.values[lo]) / (self.values[hi] - self.values[lo]);
            if u < p_up {
                hi
            } else {
                lo
            }
        };
        self.signed(v, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::lookup;

    #[test]
    fn agrees_with_the_exact_encoder_everywhere_that_matters() {
        for name in [
            "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1", "e3m3", "fp4_e1m2",
            "fp4_e3m0",
        ] {
            let f = lookup(name).unwrap().format;
            let r = Rounder::new(&f);
            let vals = f.finite_values_sorted().unwrap();
            let mut probes: Vec<f64> = Vec::new();
            for w in vals.windows(2) {
                let (a, b) = (w[0], w[1]);
                let m = (a + b) / 2.0;
                probes.extend([a, b, m, (a + m) / 2.0, (m + b) / 2.0]);
                // the f32 neighbours of the tie
                probes.push(f32::from_bits((m as f32).to_bits().wrapping_add(1)) as f64);
                probes.push(f32::from_bits((m as f32).to_bits().wrapping_sub(1)) as f64);
            }
            probes.extend([1e9, -1e9, 0.0, -0.0, 1e-30]);
            for x in probes {
                let x32 = x as f32;
                let exact = f.encode(x32 as f64, Overflow::Saturate);
                let (v, _) = r.round(x32);
                let want = exact.value as f32;
                assert!(
                    v == want || (v == 0.0 && want == 0.0),
                    "{name} {x32:e}: fast {v}, exact {want}"
                );
            }
        }
    }

    #[test]
    fn the_bit_level_path_equals_the_table() {
        let mut covered = 0;
        for name in [
            "fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1", "e3m3", "fp4_e1m2",
            "fp4_e3m0",
        ] {
            let f = lookup(name).unwrap().format;
            let r = Rounder::new(&f);
            let Some(fast) = r.binary() else { continue };
            covered += 1;
            let vals = f.finite_values_sorted().unwrap();
            let mut probes: Vec<f32> = vec![0.0, -0.0, 1e-30, -1e-30, 1e30, -3e38, 3e38];
            for w in vals.windows(2) {
                let (a, b) = (w[0] as f32, w[1] as f32);
                let m = a + (b - a) * 0.5;
                for p in [a, b, m, a + (m - a) * 0.5, m + (b - m) * 0.5] {
                    probes.extend([p, -p]);
                    for d in 1..3u32 {
                        probes.push(f32::from_bits(p.abs().to_bits() + d));
                        probes.push(f32::from_bits(p.abs().to_bits().saturating_sub(d)));
                    }
                }
            }
            for k in 0..20000 {
                probes.push(((k as f32) * 0.61803).sin() * r.max * 1.2);
            }
            for v in probes {
                let (fv, fc) = fast.round(v);
                let (tv, tc) = r.round_by_table(v);
                assert!(
                    fv.to_bits() == tv.to_bits() && fc == tc,
                    "{name} {v:e}: bits ({fv:e}, {fc:#x}), table ({tv:e}, {tc:#x})"
                );
            }
        }
        assert!(covered >= 6, "{covered}");
    }

    #[test]
    fn codes_carry_the_sign() {
        let f = lookup("fp4_e2m1").unwrap().format;
        let r = Rounder::new(&f);
        assert_eq!(r.round(-2.6), (-3.0, 0b1101));
        assert_eq!(r.round(2.6), (3.0, 0b0101));
        assert_eq!(r.round(100.0), (6.0, 0b0111));
    }

    #[test]
    fn stochastic_rounding_is_unbiased() {
        let f = lookup("fp4_e2m1").unwrap().format;
        let r = Rounder::new(&f);
        // 2.25 lies a quarter of the way from 2 to 3: the mean of many stochastic roundings is 2.25
        let n = 100_000;
        let mean: f64 = (0..n)
            .map(|i| r.round_stochastic(2.25, (i as f32 + 0.5) / n as f32).0 as f64)
            .sum::<f64>()
            / n as f64;
        assert!((mean - 2.25).abs() < 1e-3, "{mean}");
    }
}
