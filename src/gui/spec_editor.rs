//! Controls that build a spec string: format family, bits, granularity and group size, clip method and
//! rounding. They edit a draft made of the spec's own types and produce text for the engine's parser,
//! which stays the one authority on what is valid.

use crate::quant::spec::{ElemFloat, MicroExp, MxElem};
use crate::quant::{Clip, Family, Granularity, RoundMode, Spec};
use egui::Ui;

/// Families in the order the control lists them (one entry per kind; the bits are the draft's), with
/// a one-line explanation.
const FAMILIES: &[(Family, &str)] = &[
    (
        Family::Int(4),
        "Symmetric integers ±(2^(N−1) − 1), zero point 0",
    ),
    (
        Family::Uint(4),
        "Asymmetric integers 0…2^N − 1 with a zero point",
    ),
    (
        Family::Float(ElemFloat::Fp8E4m3),
        "FP8 E4M3 elements with a scale",
    ),
    (
        Family::Float(ElemFloat::Fp8E5m2),
        "FP8 E5M2 elements with a scale",
    ),
    (
        Family::Float(ElemFloat::Fp6E3m2),
        "FP6 E3M2 elements with a scale",
    ),
    (
        Family::Float(ElemFloat::Fp6E2m3),
        "FP6 E2M3 elements with a scale",
    ),
    (
        Family::Float(ElemFloat::Fp4E2m1),
        "FP4 E2M1 elements with a scale",
    ),
    (Family::Nf4, "QLoRA NormalFloat4, absmax per block"),
    (
        Family::Mx(MxElem::Float(ElemFloat::Fp8E4m3)),
        "OCP MX: E4M3, a power-of-two scale per 32",
    ),
    (
        Family::Mx(MxElem::Float(ElemFloat::Fp6E2m3)),
        "OCP MX: E2M3, a power-of-two scale per 32",
    ),
    (
        Family::Mx(MxElem::Float(ElemFloat::Fp4E2m1)),
        "OCP MX: E2M1, a power-of-two scale per 32",
    ),
    (
        Family::Mx(MxElem::Int8),
        "OCP MX: int8, a power-of-two scale per 32",
    ),
    (
        Family::Nvfp4,
        "NVIDIA FP4: E2M1, E4M3 scale per 16, fp32 tensor scale",
    ),
    (
        Family::MicroExp(MicroExp::Mx4),
        "Shared micro-exponents, 4 bits per weight",
    ),
    (
        Family::MicroExp(MicroExp::Mx6),
        "Shared micro-exponents, 6 bits per weight",
    ),
    (Family::Kmeans(4), "A codebook of 2^N values for the tensor"),
    (Family::Binary, "±α per channel"),
    (Family::Ternary, "−α, 0, +α per channel"),
    (Family::Bf16, "bfloat16 cast"),
    (Family::Fp16, "float16 cast"),
    (Family::None, "Keep in float"),
];

/// What the controls edit: a spec's parts, plus the values a control keeps while it is hidden.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecDraft {
    /// The format; the bits of int, uint and k-means are in it.
    pub family: Family,
    pub granularity: Granularity,
    /// K of per-group scales, kept while another granularity is chosen.
    pub group: usize,
    pub clip: Clip,
    /// P of percentile clipping, kept while another clip method is chosen.
    pub percentile: f64,
    pub round: RoundMode,
    pub vsq: bool,
}

impl SpecDraft {
    pub fn from_spec(s: Option<&Spec>) -> SpecDraft {
        let Some(s) = s else {
            return SpecDraft {
                family: Family::None,
                granularity: Granularity::Channel,
                group: 128,
                clip: Clip::MinMax,
                percentile: 99.9,
                round: RoundMode::Nearest,
                vsq: false,
            };
        };
        SpecDraft {
            family: s.family,
            granularity: s.granularity,
            group: match s.granularity {
                Granularity::Group(k) => k,
                _ => 128,
            },
            clip: s.clip,
            percentile: match s.clip {
                Clip::Percentile(p) => p,
                _ => 99.9,
            },
            round: s.round,
            vsq: s.vsq,
        }
    }

    /// Whether granularity, clip and rounding apply to the family.
    fn scaled(&self) -> bool {
        matches!(
            self.family,
            Family::Int(_) | Family::Uint(_) | Family::Float(_)
        )
    }

    /// Whether the granularity control applies.
    fn grouped(&self) -> bool {
        self.scaled() || matches!(self.family, Family::Nf4 | Family::Binary | Family::Ternary)
    }

    pub fn text(&self) -> String {
        let mut t = self.family.name();
        if self.grouped() {
            match self.granularity {
                Granularity::Tensor => t.push_str(":tensor"),
                Granularity::Channel => t.push_str(":channel"),
                Granularity::Group(_) => t.push_str(&format!(":g{}", self.group)),
            }
        }
        if self.scaled() {
            let grouped = matches!(self.granularity, Granularity::Group(_));
            if self.vsq && matches!(self.family, Family::Int(_)) && grouped {
                t.push_str(":vsq");
            }
            match self.clip {
                Clip::Percentile(_) => t.push_str(&format!(":clip=p{}", self.percentile)),
                Clip::Mse => t.push_str(":clip=mse"),
                Clip::Kl => t.push_str(":clip=kl"),
                Clip::MinMax => {}
            }
            if self.round == RoundMode::Stochastic {
                t.push_str(":round=stochastic");
            }
        }
        t
    }

    /// The controls; returns true when the person changed something.
    pub fn ui(&mut self, ui: &mut Ui) -> bool {
        let before = self.clone();
        ui.horizontal_wrapped(|ui| {
            let kind = self.family.kind();
            egui::ComboBox::new("family", "format").selected_text(&kind).width(110.0).show_ui(ui, |ui| {
                for (f, help) in FAMILIES {
                    let k = f.kind();
                    if ui.selectable_label(k == kind, &k).on_hover_text(*help).clicked() && k != kind {
                        // the bits carry over between the families that take them
                        self.family = self.family.bits().map_or(*f, |b| f.with_bits(b));
                    }
                }
            });
            if let Some(mut bits) = self.family.bits() {
                let l = ui.label("bits");
                let range = if matches!(self.family, Family::Kmeans(_)) { 1..=8 } else { 2..=8 };
                ui.add(egui::DragValue::new(&mut bits).range(range)).labelled_by(l.id).on_hover_text("Bits per weight");
                self.family = self.family.with_bits(bits);
            }
            if self.grouped() {
                let group = Granularity::Group(self.group);
                let is_group = matches!(self.granularity, Granularity::Group(_));
                egui::ComboBox::new("granularity", "scale")
                    .selected_text(match self.granularity {
                        Granularity::Tensor => "per tensor",
                        Granularity::Channel => "per channel",
                        Granularity::Group(_) => "per group",
                    })
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut self.granularity, Granularity::Tensor, "per tensor").on_hover_text("One scale for the whole tensor");
                        ui.selectable_value(&mut self.granularity, Granularity::Channel, "per channel").on_hover_text("One scale per output channel (row)");
                        if ui.selectable_label(is_group, "per group").on_hover_text("One scale per group of K weights along the input").clicked() {
                            self.granularity = group;
                        }
                    });
                if matches!(self.granularity, Granularity::Group(_)) {
                    let l = ui.label("K");
                    ui.add(egui::DragValue::new(&mut self.group).range(1..=4096)).labelled_by(l.id).on_hover_text("Weights per group");
                    self.granularity = Granularity::Group(self.group);
                }
            }
            if self.scaled() {
                let percentile = Clip::Percentile(self.percentile);
                let is_percentile = matches!(self.clip, Clip::Percentile(_));
                egui::ComboBox::new("clip", "range")
                    .selected_text(match self.clip {
                        Clip::MinMax => "clip min-max",
                        Clip::Percentile(_) => "clip percentile",
                        Clip::Mse => "clip MSE",
                        Clip::Kl => "clip KL",
                    })
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut self.clip, Clip::MinMax, "clip min-max").on_hover_text("Keep the full range");
                        if ui.selectable_label(is_percentile, "clip percentile").on_hover_text("Clip at a percentile of |x|").clicked() {
                            self.clip = percentile;
                        }
                        ui.selectable_value(&mut self.clip, Clip::Mse, "clip MSE").on_hover_text("The range with the least squared error");
                        ui.selectable_value(&mut self.clip, Clip::Kl, "clip KL").on_hover_text("TensorRT's entropy calibration");
                    });
                if matches!(self.clip, Clip::Percentile(_)) {
                    let l = ui.label("P");
                    ui.add(egui::DragValue::new(&mut self.percentile).range(50.0..=100.0).speed(0.01)).labelled_by(l.id);
                    self.clip = Clip::Percentile(self.percentile);
                }
                let mut stochastic = self.round == RoundMode::Stochastic;
                ui.checkbox(&mut stochastic, "stochastic").on_hover_text("Round up or down at random, in proportion to the distance: unbiased on average");
                self.round = if stochastic { RoundMode::Stochastic } else { RoundMode::Nearest };
                if matches!(self.family, Family::Int(_)) && matches!(self.granularity, Granularity::Group(_)) {
                    ui.checkbox(&mut self.vsq, "vsq").on_hover_text("VS-Quant: a 4-bit integer scale per group times a float scale per channel");
                }
            }
        });
        *self != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_round_trip_through_the_parser() {
        for s in [
            "int4:g128",
            "uint3:tensor:clip=mse",
            "int8:channel:clip=p99.5:round=stochastic",
            "nf4:g64",
            "kmeans3",
            "mxfp4",
            "nvfp4",
            "ternary:g32",
            "int4:g16:vsq",
            "fp6_e2m3:channel:clip=kl",
            "none",
        ] {
            let spec = if s == "none" {
                None
            } else {
                Some(Spec::parse(s).unwrap())
            };
            let d = SpecDraft::from_spec(spec.as_ref());
            let back = d.text();
            if let Some(spec) = spec {
                assert_eq!(Spec::parse(&back).unwrap(), spec, "{s} → {back}");
            } else {
                assert_eq!(back, "none");
            }
        }
    }
}
