//! The size of a model under a plan: every tensor the plan quantizes at its quantized size (from the
//! caller's reports), every other tensor as it is stored.

use super::{Choice, Plan, SummaryFile};
use crate::model::Model;
use crate::quant::Spec;

/// A model's size under a plan against its size as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSize {
    /// Bytes under the plan (a planned tensor whose size is not known yet counts as stored).
    pub planned: u64,
    /// Bytes as stored.
    pub original: u64,
    /// The model's parameters (every tensor's elements).
    pub parameters: u64,
    /// Whether every planned tensor's quantized size was known.
    pub known: bool,
}

impl PlanSize {
    /// The size of `model` under `plan`; `bytes(t, spec)` is tensor `t`'s quantized size under `spec`
    /// when known. Only float tensors with elements are quantized.
    pub fn of(model: &Model, plan: &Plan, bytes: impl Fn(usize, &Spec) -> Option<u64>) -> PlanSize {
        let mut size = PlanSize {
            planned: 0,
            original: 0,
            parameters: model.parameters(),
            known: true,
        };
        for (t, info) in model.tensors.iter().enumerate() {
            let stored = info.nbytes() as u64;
            size.original += stored;
            size.planned += match plan.resolve(&info.name, info.quantizable()).0 {
                Choice::Quantize(s) if info.is_float() && info.numel() > 0 => bytes(t, &s)
                    .unwrap_or_else(|| {
                        size.known = false;
                        stored
                    }),
                _ => stored,
            };
        }
        size
    }

    /// Bits per parameter under the plan.
    pub fn bits_per_parameter(&self) -> f64 {
        self.planned as f64 * 8.0 / self.parameters.max(1) as f64
    }

    /// Bits per parameter as stored.
    pub fn original_bits_per_parameter(&self) -> f64 {
        self.original as f64 * 8.0 / self.parameters.max(1) as f64
    }

    /// The planned size as a fraction of the stored one.
    pub fn fraction(&self) -> f32 {
        self.planned as f32 / self.original.max(1) as f32
    }

    /// The summary a saved plan carries.
    pub fn summary(&self) -> SummaryFile {
        SummaryFile {
            bits_per_weight: self.bits_per_parameter(),
            bytes: self.planned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_tensors_count_at_their_quantized_size() {
        let m = crate::nn::sample_mlp();
        let stored: u64 = m.tensors.iter().map(|t| t.nbytes() as u64).sum();
        let weights: Vec<usize> = (0..m.tensors.len())
            .filter(|&t| m.tensors[t].quantizable())
            .collect();
        assert!(!weights.is_empty() && weights.len() < m.tensors.len());
        let int8 = Plan {
            default: Choice::parse("int8").unwrap(),
            ..Default::default()
        };
        // nothing known yet: every tensor as stored
        let s = PlanSize::of(&m, &int8, |_, _| None);
        assert_eq!((s.planned, s.original, s.known), (stored, stored, false));
        assert_eq!(s.parameters, m.parameters());
        assert_eq!(s.fraction(), 1.0);
        // each planned weight at 100 bytes, the rest (biases) as stored
        let spec = Spec::parse("int8").unwrap();
        let s = PlanSize::of(&m, &int8, |t, sp| {
            assert!(weights.contains(&t) && *sp == spec);
            Some(100)
        });
        let others: u64 = (0..m.tensors.len())
            .filter(|t| !weights.contains(t))
            .map(|t| m.tensors[t].nbytes() as u64)
            .sum();
        assert!(s.known);
        assert_eq!(s.planned, others + 100 * weights.len() as u64);
        assert_eq!(
            s.bits_per_parameter(),
            s.planned as f64 * 8.0 / m.parameters() as f64
        );
        assert_eq!(s.original_bits_per_parameter(), 32.0);
        assert_eq!(s.summary().bytes, s.planned);
        assert_eq!(s.summary().bits_per_weight, s.bits_per_parameter());
        // a plan that keeps everything asks for no size
        let keep = Plan {
            default: Choice::Keep,
            ..Default::default()
        };
        let s = PlanSize::of(&m, &keep, |_, _| panic!("nothing is quantized"));
        assert_eq!((s.planned, s.known), (stored, true));
    }
}
