//! Fake quantization with a range fixed in advance: what an activation quantizer does at inference, once
//! calibration has chosen its range (a weight quantizer instead fits its range to the tensor it sees).
//! The arithmetic is the weight quantizers' (docs/DESIGN.md §2): symmetric `intN`, asymmetric `uintN`, or a
//! scaled float element format, one scale for the whole tensor.

use super::rounder::Rounder;
use super::{Family, QuantError, Spec};
use crate::formats::lookup;
use crate::kernels::round::rne;
use rayon::prelude::*;

/// A per-tensor quantizer with a fixed range.
#[derive(Debug, Clone)]
pub struct FixedQuant {
    kind: Kind,
    /// The stored scale `S` (f32).
    pub scale: f32,
    /// The integer zero point (uint; 0 otherwise).
    pub zero: i32,
    /// The range the codes cover, `[S·(qmin − Z), S·(qmax − Z)]`.
    pub range: (f32, f32),
}

#[derive(Debug, Clone)]
enum Kind {
    Int { qmax: f32 },
    Uint { qmax: f32 },
    Float(Rounder, u32),
}

impl FixedQuant {
    /// The quantizer of `spec` (int, uint or a scaled float format; only its family is used) for values
    /// expected in `[lo, hi]`. Symmetric formats use `max(|lo|, |hi|)`; uint widens the range to include 0.
    pub fn new(spec: &Spec, lo: f32, hi: f32) -> Result<FixedQuant, QuantError> {
        if !(lo.is_finite() && hi.is_finite()) || lo > hi {
            return Err(QuantError::Shape(format!(
                "activation range [{lo}, {hi}] is not a finite interval"
            )));
        }
        let amax = lo.abs().max(hi.abs());
        Ok(match spec.family {
            Family::Int(b) => {
                let qmax = ((1u32 << (b - 1)) - 1) as f32;
                let scale = if amax > 0.0 { amax / qmax } else { 1.0 };
                FixedQuant {
                    kind: Kind::Int { qmax },
                    scale,
                    zero: 0,
                    range: (-qmax * scale, qmax * scale),
                }
            }
            Family::Uint(b) => {
                let qmax = ((1u32 << b) - 1) as f32;
                let (rmin, rmax) = (lo.min(0.0), hi.max(0.0));
                let scale = if rmax > rmin {
                    (rmax - rmin) / qmax
                } else {
                    1.0
                };
                let zero = rne((-rmin / scale).clamp(-1.0, qmax + 1.0)).clamp(0.0, qmax);
                FixedQuant {
                    kind: Kind::Uint { qmax },
                    scale,
                    zero: zero as i32,
                    range: (-zero * scale, (qmax - zero) * scale),
                }
            }
            Family::Float(f) => {
                let format = lookup(f.name()).expect("catalog format").format;
                let r = Rounder::new(&format);
                let bits = format.bits();
                let scale = if amax > 0.0 { amax / r.max } else { 1.0 };
                let m = r.max * scale;
                FixedQuant {
                    kind: Kind::Float(r, bits),
                    scale,
                    zero: 0,
                    range: (-m, m),
                }
            }
            _ => {
                return Err(QuantError::Unsupported(format!(
                    "activations are quantized with intN, uintN or a scaled float format \
                     (fp8_e4m3, fp8_e5m2, fp6_*, fp4_e2m1), not '{}'",
                    spec
                )))
            }
        })
    }

    /// Quantize and dequantize `x` in place (round to nearest even, saturating).
    pub fn apply(&self, x: &mut [f32]) {
        let s = self.scale;
        x.par_chunks_mut(1 << 14).for_each(|c| match &self.kind {
            Kind::Int { qmax } => c.iter_mut().for_each(|v| {
                *v = rne((*v / s).clamp(-qmax - 1.0, qmax + 1.0)).clamp(-qmax, *qmax) * s
            }),
            Kind::Uint { qmax } => {
                let z = self.zero as f32;
                c.iter_mut().for_each(|v| {
                    *v = ((rne((*v / s).clamp(-z - 1.0, qmax - z + 1.0)) + z).clamp(0.0, *qmax) - z)
                        * s
                })
            }
            Kind::Float(r, _) => c.iter_mut().for_each(|v| *v = r.round(*v / s).0 * s),
        });
    }

    /// The clipped straight-through estimator's mask for the input `v`: true when `v` lands inside the
    /// representable range, so the gradient passes; false when it is clamped, so the gradient is 0.
    /// As PyTorch's `fake_quantize_per_tensor_affine_cachemask`: the test is on the rounded, unclamped
    /// code, `q_min ≤ nearbyint(v/S) + Z ≤ q_max` (quantization.md §10).
    pub fn passes(&self, v: f32) -> bool {
        let s = self.scale;
        match &self.kind {
            Kind::Int { qmax } => rne((v / s).clamp(-qmax - 1.0, qmax + 1.0)).abs() <= *qmax,
            Kind::Uint { qmax } => {
                let q = rne((v / s).clamp(-2.0 * qmax - 1.0, 2.0 * qmax + 1.0)) + self.zero as f32;
                (0.0..=*qmax).contains(&q)
            }
            Kind::Float(r, _) => (v / s).abs() <= r.max,
        }
    }

    /// The number of bits of one element.
    pub fn bits(&self) -> u32 {
        match &self.kind {
            Kind::Int { qmax } => (*qmax as u32 + 1).trailing_zeros() + 1,
            Kind::Uint { qmax } => (*qmax as u32 + 1).trailing_zeros(),
            Kind::Float(_, bits) => *bits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fq(spec: &str, lo: f32, hi: f32) -> FixedQuant {
        FixedQuant::new(&Spec::parse(spec).unwrap(), lo, hi).unwrap()
    }

    #[test]
    fn uint8_on_a_relu_range_has_zero_point_zero() {
        let q = fq("uint8", 0.0, 2.55);
        assert_eq!(q.zero, 0);
        assert!((q.scale - 0.01).abs() < 1e-7);
        let mut x = vec![-1.0, 0.0, 0.004, 0.006, 1.0, 3.0];
        q.apply(&mut x);
        let s = q.scale;
        assert_eq!(x, vec![0.0, 0.0, 0.0, s, rne(1.0 / s) * s, 255.0 * s]);
        assert_eq!(q.bits(), 8);
    }

    #[test]
    fn the_ste_mask_is_pytorchs() {
        // torch.fake_quantize_per_tensor_affine_cachemask(x, scale=0.01, zero_point=0, 0, 255) on
        // x = [-0.006, -0.004, 0, 2.55, 2.554, 2.556]: mask [False, True, True, True, True, False]
        let q = fq("uint8", 0.0, 2.55);
        let x = [-0.006f32, -0.004, 0.0, 2.55, 2.554, 2.556];
        let m: Vec<bool> = x.iter().map(|&v| q.passes(v)).collect();
        assert_eq!(m, [false, true, true, true, true, false]);
        let q = fq("int4", -7.0, 7.0);
        let m: Vec<bool> = [-7.6f32, -7.4, 7.49, 7.51]
            .iter()
            .map(|&v| q.passes(v))
            .collect();
        assert_eq!(m, [false, true, true, false]);
    }

    #[test]
    fn int8_is_symmetric_and_saturates() {
        let q = fq("int8", -0.5, 1.27);
        assert_eq!(q.range, (-127.0 * q.scale, 127.0 * q.scale));
        let mut x = vec![-5.0, 0.015, 5.0];
        q.apply(&mut x);
        assert_eq!(x, vec![-127.0 * q.scale, 2.0 * q.scale, 127.0 * q.scale]);
        assert_eq!(q.bits(), 8);
    }

    #[test]
    fn uint_with_negative_values_has_a_zero_point() {
        let q = fq("uint4", -1.0, 2.0);
        assert_eq!(q.scale, 3.0 / 15.0);
        assert_eq!(q.zero, 5);
        let mut x = vec![0.0];
        q.apply(&mut x);
        assert_eq!(x, vec![0.0], "0 is exact");
    }

    #[test]
    fn fp8_uses_its_grid_and_other_families_are_refused() {
        let q = fq("fp8_e4m3", -448.0, 448.0);
        assert_eq!(q.scale, 1.0);
        let mut x = vec![17.0, 1000.0];
        q.apply(&mut x);
        assert_eq!(x, vec![16.0, 448.0]);
        assert!(FixedQuant::new(&Spec::parse("nvfp4").unwrap(), 0.0, 1.0).is_err());
        assert!(FixedQuant::new(&Spec::parse("int8").unwrap(), 1.0, f32::NAN).is_err());
    }
}
