//! A format that is a table of values: code `i` stands for `values[i]`.

use super::{range_stats, Constants, Encoded, Rounding};

#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    /// Sorted ascending, a power-of-two count.
    pub values: Vec<f64>,
}

/// QLoRA's NormalFloat4 (Dettmers et al. 2023, arXiv 2305.14314), the float32 table of bitsandbytes
/// `create_normal_map(offset=0.9677083, use_extra_value=True)`: Φ⁻¹ quantiles normalised to [−1, 1],
/// 8 positive, 7 negative and an exact zero. Values as listed in the bitsandbytes source.
pub const NF4_VALUES: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

impl Codebook {
    pub fn nf4() -> Self {
        Codebook {
            values: NF4_VALUES.iter().map(|&v| v as f64).collect(),
        }
    }

    pub fn bits(&self) -> u32 {
        self.values.len().trailing_zeros()
    }

    pub fn decode(&self, code: u64) -> f64 {
        self.values.get(code as usize).copied().unwrap_or(f64::NAN)
    }

    /// The nearest table entry; a tie goes to the entry nearer zero. Values beyond the ends clamp.
    pub fn encode(&self, x: f64) -> Encoded {
        let v = &self.values;
        if x.is_nan() {
            let zero = v.iter().position(|&c| c == 0.0).unwrap_or(0) as u64;
            return Encoded {
                code: zero,
                value: v[zero as usize],
                rounding: Rounding::NotRepresentable,
                truncated: zero,
            };
        }
        // first entry >= x
        let hi = v.partition_point(|&c| c < x);
        let (code, rounding, truncated) = if hi == v.len() {
            let last = v.len() - 1;
            (last, Rounding::Saturated, last)
        } else if v[hi] == x {
            (hi, Rounding::Exact, hi)
        } else if hi == 0 {
            (0, Rounding::Saturated, 0)
        } else {
            let lo = hi - 1;
            let (d_lo, d_hi) = (x - v[lo], v[hi] - x);
            // the neighbour nearer zero is the truncation
            let toward_zero = if x > 0.0 { lo } else { hi };
            let away = if x > 0.0 { hi } else { lo };
            let (d_toward, d_away) = if x > 0.0 { (d_lo, d_hi) } else { (d_hi, d_lo) };
            if d_toward < d_away {
                (toward_zero, Rounding::TowardZero, toward_zero)
            } else if d_toward > d_away {
                (away, Rounding::AwayFromZero, toward_zero)
            } else {
                (toward_zero, Rounding::TieTowardZero, toward_zero)
            }
        };
        Encoded {
            code: code as u64,
            value: v[code],
            rounding,
            truncated: truncated as u64,
        }
    }

    pub fn constants(&self) -> Constants {
        let max = self.values.iter().copied().fold(f64::MIN, f64::max);
        let min = self.values.iter().copied().fold(f64::MAX, f64::min);
        let min_positive = self
            .values
            .iter()
            .copied()
            .filter(|&v| v > 0.0)
            .reduce(f64::min);
        let (dynamic_range_db, binades) = range_stats(max, min_positive);
        Constants {
            bits: self.bits(),
            kind: "codebook",
            max,
            min,
            min_normal: None,
            min_subnormal: None,
            min_positive,
            eps: None,
            dynamic_range_db,
            binades,
            finite_codes: self.values.len() as u64,
            has_inf: false,
            has_nan: false,
            has_neg_zero: false,
            has_subnormals: false,
        }
    }
}
