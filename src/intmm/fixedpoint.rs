//! Fixed-point requantization as integer-only inference engines do it: the real multiplier
//! `M = S_W·S_X/S_Y` written as `M0·2^e` with `M0 ∈ [0.5, 1)` stored as a Q31 `int32`, applied with a
//! rounding doubling high multiply and a rounding right shift.
//!
//! The two primitives follow their published definitions in google/gemmlowp `fixedpoint/fixedpoint.h`
//! (`SaturatingRoundingDoublingHighMul`, the scalar int32 version, which is ARM NEON's `VQRDMULH`;
//! `RoundingDivideByPOT`, a rounding arithmetic right shift); the multiplier's decomposition follows
//! TensorFlow Lite `kernels/internal/quantization_util.cc` `QuantizeMultiplier` (frexp, `round` half
//! away from zero, the `2^31` carry, and a zero multiplier when the shift is beyond 31 bits), and its
//! application `MultiplyByQuantizedMultiplier` (left shift for `e > 0`, then the high multiply, then
//! the rounding right shift for `e < 0`). Jacob et al. 2018 (arXiv 1712.05877) §2.2 is the method.

use serde::Serialize;

/// `round(a·b / 2^31)` with ties rounded up (toward +∞), saturating the one overflowing case
/// `INT32_MIN · INT32_MIN` (which would be `+1.0` in Q31) to `INT32_MAX`.
///
/// The published definition: `nudge = ab ≥ 0 ? 2^30 : 1 − 2^30`, `(ab + nudge) / 2^31` with C's
/// division truncating toward zero; for negative products the two together round ties toward +∞.
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Rust's `/` on integers truncates toward zero, as C's does
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent` rounded to nearest, ties away from zero (a rounding arithmetic right shift),
/// for `0 ≤ exponent ≤ 31`.
///
/// The published definition: `mask = 2^exponent − 1`, `remainder = x & mask`,
/// `threshold = (mask >> 1) + (x < 0 ? 1 : 0)`, result `(x >> exponent) + (remainder > threshold)`.
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    assert!(exponent <= 31, "RoundingDivideByPOT takes exponents 0..=31");
    let mask: i32 = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// A real multiplier in fixed point: `M ≈ m0 · 2^(shift − 31)`, i.e. `M0 = m0 / 2^31 ∈ [0.5, 1)` and
/// `M = M0 · 2^shift`. For the usual `M < 1`, `shift = −n` with `n ≥ 1` the right shift.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FixedMultiplier {
    /// The real multiplier it stands for.
    pub real: f64,
    /// `M0` as a Q31 integer: `round(M0 · 2^31)`.
    pub m0: i32,
    /// The power of two: `M = M0 · 2^shift` (negative: a right shift by `n = −shift`).
    pub shift: i32,
}

impl FixedMultiplier {
    /// Decompose `m` (finite, ≥ 0). Like TFLite's `QuantizeMultiplier`: `M0 = frexp(m)`, the Q31
    /// integer rounded half away from zero, a carry to `2^31` halves it and bumps the exponent, and a
    /// multiplier below `2^−32` (a right shift beyond 31 bits) becomes 0 — it could only ever round
    /// an int32 to 0 anyway.
    pub fn new(m: f64) -> FixedMultiplier {
        assert!(m.is_finite() && m >= 0.0, "a multiplier is finite and >= 0");
        if m == 0.0 {
            return FixedMultiplier {
                real: m,
                m0: 0,
                shift: 0,
            };
        }
        // frexp: m = q · 2^e with q in [0.5, 1); scaling by 2 is exact in f64
        let (mut q, mut e) = (m, 0i32);
        while q >= 1.0 {
            q /= 2.0;
            e += 1;
        }
        while q < 0.5 {
            q *= 2.0;
            e -= 1;
        }
        let mut fixed = (q * (1u64 << 31) as f64).round() as i64;
        if fixed == 1i64 << 31 {
            fixed /= 2;
            e += 1;
        }
        if e < -31 {
            return FixedMultiplier {
                real: m,
                m0: 0,
                shift: 0,
            };
        }
        FixedMultiplier {
            real: m,
            m0: fixed as i32,
            shift: e,
        }
    }

    /// The right shift `n` of `M = 2^−n · M0` (negative when `M ≥ 1`).
    pub fn n(&self) -> i32 {
        -self.shift
    }

    /// The value the fixed-point pair stands for exactly: `m0 · 2^(shift − 31)`.
    pub fn value(&self) -> f64 {
        self.m0 as f64 * 2f64.powi(self.shift - 31)
    }

    /// The two steps of `x·M` in integers: the high multiply's result (after any left shift), then the
    /// rounding right shift.
    pub fn apply_steps(&self, x: i32) -> (i32, i32) {
        let left = self.shift.max(0) as u32;
        let right = (-self.shift).max(0) as u32;
        // a left shift saturates rather than wrapping (only possible when M ≥ 1)
        let shifted = ((x as i64) << left).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        let high = saturating_rounding_doubling_high_mul(shifted, self.m0);
        (high, rounding_divide_by_pot(high, right))
    }

    /// `round(x·M)` in integer arithmetic only.
    pub fn apply(&self, x: i32) -> i32 {
        self.apply_steps(x).1
    }

    /// A bound on `|apply(x) − x·M|`: `½` from the shift's rounding, `½·2^−n` from the high multiply's,
    /// and `|x·M|·2^−31` from storing `M0` in 31 bits (`|M0 − m0/2^31| ≤ 2^−32`, `M0 ≥ ½`).
    pub fn error_bound(&self, x: i32) -> f64 {
        if self.m0 == 0 {
            // the multiplier was flushed to 0: |x·M| < 2^31 · 2^−32
            return (x as f64 * self.real).abs();
        }
        0.5 + 0.5 * 2f64.powi(self.shift.min(0)) + (x as f64 * self.real).abs() * 2f64.powi(-31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definitions restated with exact (i128) arithmetic, independently of the bit tricks:
    /// SRDHM = floor(a·b/2^31 + 1/2) (ties toward +∞), RDBP = round half away from zero.
    fn srdhm_exact(a: i32, b: i32) -> i32 {
        let ab = a as i128 * b as i128;
        let v = (2 * ab + (1i128 << 31)).div_euclid(1i128 << 32);
        v.clamp(i32::MIN as i128, i32::MAX as i128) as i32
    }

    fn rdbp_exact(x: i32, e: u32) -> i32 {
        let d = 1i128 << e;
        let ax = (x as i128).abs();
        let q = (2 * ax + d).div_euclid(2 * d); // floor(|x|/d + 1/2): ties away from zero
        (if x < 0 { -q } else { q }) as i32
    }

    #[test]
    fn high_mul_saturates_int32_min_squared_and_rounds_ties_up() {
        // -1 · -1 = +1 is not in [-1, 1): the one saturating case
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        // -1 · x = -x exactly for the other values
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX),
            -i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MAX, i32::MAX),
            i32::MAX - 1
        );
        // 0.5 in Q31 times small integers: x/2 with ties rounded toward +∞
        let half = 1 << 30;
        assert_eq!(saturating_rounding_doubling_high_mul(3, half), 2); // 1.5 → 2
        assert_eq!(saturating_rounding_doubling_high_mul(-3, half), -1); // -1.5 → -1
        assert_eq!(saturating_rounding_doubling_high_mul(-1, half), 0); // -0.5 → 0
        assert_eq!(saturating_rounding_doubling_high_mul(1, half), 1); // 0.5 → 1
        assert_eq!(saturating_rounding_doubling_high_mul(-5, half), -2); // -2.5 → -2
                                                                         // not a tie: -0.75 rounds to -1 as usual
        assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 29), -1);
        assert_eq!(saturating_rounding_doubling_high_mul(0, i32::MIN), 0);
    }

    #[test]
    fn rounding_divide_by_pot_rounds_negative_ties_away_from_zero() {
        assert_eq!(rounding_divide_by_pot(3, 1), 2); // 1.5
        assert_eq!(rounding_divide_by_pot(-3, 1), -2); // -1.5
        assert_eq!(rounding_divide_by_pot(-1, 1), -1); // -0.5
        assert_eq!(rounding_divide_by_pot(1, 1), 1); // 0.5
        assert_eq!(rounding_divide_by_pot(-5, 2), -1); // -1.25
        assert_eq!(rounding_divide_by_pot(-6, 2), -2); // -1.5
        assert_eq!(rounding_divide_by_pot(-7, 2), -2); // -1.75
        assert_eq!(rounding_divide_by_pot(5, 2), 1);
        assert_eq!(rounding_divide_by_pot(6, 2), 2);
        assert_eq!(rounding_divide_by_pot(12345, 0), 12345);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 1), -(1 << 30));
    }

    #[test]
    fn primitives_match_their_exact_definitions_on_many_values() {
        // edge values and a SplitMix-style sweep
        let mut vals = vec![
            0,
            1,
            -1,
            2,
            -2,
            i32::MAX,
            i32::MIN,
            i32::MIN + 1,
            1 << 30,
            -(1 << 30),
        ];
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..4000 {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // mix magnitudes: full range, and small values where ties are common
            let v = if z & 1 == 0 {
                z as i32
            } else {
                (z as i32) >> (z % 31)
            };
            vals.push(v);
        }
        for (i, &a) in vals.iter().enumerate() {
            let b = vals[(i * 7 + 3) % vals.len()];
            assert_eq!(
                saturating_rounding_doubling_high_mul(a, b),
                srdhm_exact(a, b),
                "{a} {b}"
            );
            for e in [0, 1, 2, 5, 17, 30, 31] {
                assert_eq!(rounding_divide_by_pot(a, e), rdbp_exact(a, e), "{a} >> {e}");
            }
        }
    }

    #[test]
    fn multipliers_decompose_like_tflite() {
        let m = FixedMultiplier::new(0.5);
        assert_eq!((m.m0, m.shift), (1 << 30, 0));
        let m = FixedMultiplier::new(0.25);
        assert_eq!((m.m0, m.shift, m.n()), (1 << 30, -1, 1));
        // 0.1 = 0.8 · 2^-3; round(0.8 · 2^31) = 1717986918
        let m = FixedMultiplier::new(0.1);
        assert_eq!((m.m0, m.n()), (1_717_986_918, 3));
        assert!((m.value() - 0.1).abs() < 0.1 * 2f64.powi(-31));
        // a value just under 1 whose Q31 rounds up to 2^31 carries into the exponent
        let m = FixedMultiplier::new(1.0 - 2f64.powi(-40));
        assert_eq!((m.m0, m.shift), (1 << 30, 1));
        // M ≥ 1: a left shift
        let m = FixedMultiplier::new(3.0);
        assert_eq!((m.m0, m.shift), (3 << 29, 2));
        assert_eq!(m.apply(7), 21);
        // beyond a 31-bit right shift: flushed to 0, as TFLite does
        let m = FixedMultiplier::new(2f64.powi(-40));
        assert_eq!((m.m0, m.shift), (0, 0));
        assert_eq!(m.apply(i32::MAX), 0);
        assert_eq!(FixedMultiplier::new(0.0).apply(123), 0);
    }

    #[test]
    fn applying_a_multiplier_is_within_its_bound_of_the_real_product() {
        for &real in &[0.1, 0.0003, 0.77, 1e-6, 2.5e-9, 0.5, 0.999] {
            let m = FixedMultiplier::new(real);
            for &x in &[
                0,
                1,
                -1,
                7,
                -7,
                1000,
                -1000,
                123_456,
                -98_765_432,
                i32::MAX,
                i32::MIN,
            ] {
                let got = m.apply(x) as f64;
                let want = x as f64 * real;
                assert!(
                    (got - want).abs() <= m.error_bound(x),
                    "{real} · {x}: {got} vs {want}"
                );
                // and never more than one step from the exactly rounded product
                assert!((got - want.round()).abs() <= 1.0, "{real} · {x}");
            }
        }
        // a tie of the real product: 0.25 · 6 = 1.5 → 2 (the shift rounds ties away from zero)
        let q = FixedMultiplier::new(0.25);
        assert_eq!(q.apply(6), 2);
        assert_eq!(q.apply(-6), -2);
        assert_eq!(q.apply_steps(-6), (-3, -2));
    }
}
