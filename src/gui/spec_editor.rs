//! Controls that build a spec string: format family, bits, granularity and group size, clip method and
//! rounding. They edit a draft and produce text for the engine's parser, which stays the one authority on
//! what is valid.

use crate::quant::spec::{ElemFloat, MxElem};
use crate::quant::{Clip, Family, Granularity, RoundMode, Spec};
use egui::Ui;

/// Families in the order the control lists them, with a one-line explanation.
const FAMILIES: &[(&str, &str)] = &[
    ("int", "Symmetric integers ±(2^(N−1) − 1), zero point 0"),
    ("uint", "Asymmetric integers 0…2^N − 1 with a zero point"),
    ("fp8_e4m3", "FP8 E4M3 elements with a scale"),
    ("fp8_e5m2", "FP8 E5M2 elements with a scale"),
    ("fp6_e3m2", "FP6 E3M2 elements with a scale"),
    ("fp6_e2m3", "FP6 E2M3 elements with a scale"),
    ("fp4_e2m1", "FP4 E2M1 elements with a scale"),
    ("nf4", "QLoRA NormalFloat4, absmax per block"),
    ("mxfp8_e4m3", "OCP MX: E4M3, a power-of-two scale per 32"),
    ("mxfp6_e2m3", "OCP MX: E2M3, a power-of-two scale per 32"),
    ("mxfp4", "OCP MX: E2M1, a power-of-two scale per 32"),
    ("mxint8", "OCP MX: int8, a power-of-two scale per 32"),
    (
        "nvfp4",
        "NVIDIA FP4: E2M1, E4M3 scale per 16, fp32 tensor scale",
    ),
    ("smx4", "Shared micro-exponents, 4 bits per weight"),
    ("smx6", "Shared micro-exponents, 6 bits per weight"),
    ("kmeans", "A codebook of 2^N values for the tensor"),
    ("binary", "±α per channel"),
    ("ternary", "−α, 0, +α per channel"),
    ("bf16", "bfloat16 cast"),
    ("fp16", "float16 cast"),
    ("none", "Keep in float"),
];

#[derive(Debug, Clone, PartialEq)]
pub struct SpecDraft {
    pub family: String,
    pub bits: u32,
    /// 0 = tensor, 1 = channel, 2 = group
    pub granularity: u8,
    pub group: usize,
    /// 0 = min-max, 1 = percentile, 2 = MSE, 3 = KL
    pub clip: u8,
    pub percentile: f64,
    pub stochastic: bool,
    pub vsq: bool,
}

impl SpecDraft {
    pub fn from_spec(s: Option<&Spec>) -> SpecDraft {
        let mut d = SpecDraft {
            family: "none".into(),
            bits: 4,
            granularity: 1,
            group: 128,
            clip: 0,
            percentile: 99.9,
            stochastic: false,
            vsq: false,
        };
        let Some(s) = s else { return d };
        d.family = match s.family {
            Family::Int(b) => {
                d.bits = b;
                "int".into()
            }
            Family::Uint(b) => {
                d.bits = b;
                "uint".into()
            }
            Family::Kmeans(b) => {
                d.bits = b;
                "kmeans".into()
            }
            Family::Float(f) => f.name().into(),
            Family::Nf4 => "nf4".into(),
            Family::Mx(MxElem::Float(ElemFloat::Fp4E2m1)) => "mxfp4".into(),
            Family::Mx(MxElem::Float(f)) => format!("mx{}", f.name()),
            Family::Mx(MxElem::Int8) => "mxint8".into(),
            Family::Nvfp4 => "nvfp4".into(),
            Family::MicroExp(m) => m.name().into(),
            Family::Binary => "binary".into(),
            Family::Ternary => "ternary".into(),
            Family::Bf16 => "bf16".into(),
            Family::Fp16 => "fp16".into(),
            Family::None => "none".into(),
        };
        match s.granularity {
            Granularity::Tensor => d.granularity = 0,
            Granularity::Channel => d.granularity = 1,
            Granularity::Group(k) => {
                d.granularity = 2;
                d.group = k;
            }
        }
        d.clip = match s.clip {
            Clip::MinMax => 0,
            Clip::Percentile(p) => {
                d.percentile = p;
                1
            }
            Clip::Mse => 2,
            Clip::Kl => 3,
        };
        d.stochastic = s.round == RoundMode::Stochastic;
        d.vsq = s.vsq;
        d
    }

    fn has_bits(&self) -> bool {
        matches!(self.family.as_str(), "int" | "uint" | "kmeans")
    }

    /// Whether granularity, clip and rounding apply to the family.
    fn scaled(&self) -> bool {
        matches!(
            self.family.as_str(),
            "int" | "uint" | "fp8_e4m3" | "fp8_e5m2" | "fp6_e3m2" | "fp6_e2m3" | "fp4_e2m1"
        )
    }

    pub fn text(&self) -> String {
        let mut t = match self.family.as_str() {
            "int" | "uint" | "kmeans" => format!("{}{}", self.family, self.bits),
            f => f.to_string(),
        };
        if self.scaled() || matches!(self.family.as_str(), "nf4" | "binary" | "ternary") {
            match self.granularity {
                0 => t.push_str(":tensor"),
                1 => t.push_str(":channel"),
                _ => t.push_str(&format!(":g{}", self.group)),
            }
        }
        if self.scaled() {
            if self.vsq && self.family == "int" && self.granularity == 2 {
                t.push_str(":vsq");
            }
            match self.clip {
                1 => t.push_str(&format!(":clip=p{}", self.percentile)),
                2 => t.push_str(":clip=mse"),
                3 => t.push_str(":clip=kl"),
                _ => {}
            }
            if self.stochastic {
                t.push_str(":round=stochastic");
            }
        }
        t
    }

    /// The controls; returns true when the person changed something.
    pub fn ui(&mut self, ui: &mut Ui) -> bool {
        let before = self.clone();
        ui.horizontal_wrapped(|ui| {
            egui::ComboBox::new("family", "format").selected_text(&self.family).width(110.0).show_ui(ui, |ui| {
                for (f, help) in FAMILIES {
                    ui.selectable_value(&mut self.family, f.to_string(), *f).on_hover_text(*help);
                }
            });
            if self.has_bits() {
                let l = ui.label("bits");
                let range = if self.family == "kmeans" { 1..=8 } else { 2..=8 };
                ui.add(egui::DragValue::new(&mut self.bits).range(range)).labelled_by(l.id).on_hover_text("Bits per weight");
            }
            if self.scaled() || matches!(self.family.as_str(), "nf4" | "binary" | "ternary") {
                egui::ComboBox::new("granularity", "scale")
                    .selected_text(["per tensor", "per channel", "per group"][self.granularity.min(2) as usize])
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut self.granularity, 0, "per tensor").on_hover_text("One scale for the whole tensor");
                        ui.selectable_value(&mut self.granularity, 1, "per channel").on_hover_text("One scale per output channel (row)");
                        ui.selectable_value(&mut self.granularity, 2, "per group").on_hover_text("One scale per group of K weights along the input");
                    });
                if self.granularity == 2 {
                    let l = ui.label("K");
                    ui.add(egui::DragValue::new(&mut self.group).range(1..=4096)).labelled_by(l.id).on_hover_text("Weights per group");
                }
            }
            if self.scaled() {
                egui::ComboBox::new("clip", "range")
                    .selected_text(["clip min-max", "clip percentile", "clip MSE", "clip KL"][self.clip.min(3) as usize])
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut self.clip, 0, "clip min-max").on_hover_text("Keep the full range");
                        ui.selectable_value(&mut self.clip, 1, "clip percentile").on_hover_text("Clip at a percentile of |x|");
                        ui.selectable_value(&mut self.clip, 2, "clip MSE").on_hover_text("The range with the least squared error");
                        ui.selectable_value(&mut self.clip, 3, "clip KL").on_hover_text("TensorRT's entropy calibration");
                    });
                if self.clip == 1 {
                    let l = ui.label("P");
                    ui.add(egui::DragValue::new(&mut self.percentile).range(50.0..=100.0).speed(0.01)).labelled_by(l.id);
                }
                ui.checkbox(&mut self.stochastic, "stochastic").on_hover_text("Round up or down at random, in proportion to the distance: unbiased on average");
                if self.family == "int" && self.granularity == 2 {
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
