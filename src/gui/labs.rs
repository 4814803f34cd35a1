//! The Labs view: teaching labs that run on the open model. A selector picks the lab; each lab is its
//! own state with its own background work. Labs so far:
//!
//! - **Integer matmul**: one layer as integer-only inference (`intmm::lab`): the quantization of
//!   weights, inputs and outputs, every term of one output element (offline vs per input), the
//!   fixed-point multiplier, a scatter plot of the integer result against the float layer and a
//!   histogram of the error in output steps, with the derived bound.

use crate::activations::ranges::Method;
use crate::activations::Calibration;
use crate::intmm::lab::{followed_by_relu, run, LabOptions, MatmulLab, When};
use crate::intmm::{parse_weights, OutputType};
use crate::jobs::{Job, Worker};
use crate::model::Model;
use egui::{Color32, RichText, Ui};
use egui_plot::{BarChart, Legend, Line, Plot, PlotPoints, Points, VLine};
use std::sync::Arc;

/// The labs the view offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lab {
    /// The integer-only linear layer.
    IntMatmul,
}

impl Lab {
    pub const ALL: [Lab; 1] = [Lab::IntMatmul];

    pub fn name(&self) -> &'static str {
        match self {
            Lab::IntMatmul => "Integer matmul",
        }
    }

    pub fn hint(&self) -> &'static str {
        match self {
            Lab::IntMatmul => {
                "A layer as integer-only inference: 8-bit multiplies, int32 accumulation, \
                 zero-point terms, the fixed-point multiplier M = 2^-n M0"
            }
        }
    }
}

/// The state of the Labs view.
pub struct LabsView {
    pub lab: Lab,
    pub int_matmul: IntMatmulLab,
}

impl Default for LabsView {
    fn default() -> Self {
        LabsView {
            lab: Lab::IntMatmul,
            int_matmul: IntMatmulLab::default(),
        }
    }
}

impl LabsView {
    /// True while any lab works in the background.
    pub fn busy(&self) -> bool {
        self.int_matmul.busy()
    }

    pub fn ui(&mut self, ui: &mut Ui, model: Option<Arc<Model>>) {
        ui.horizontal(|ui| {
            ui.label("Lab:");
            for l in Lab::ALL {
                ui.selectable_value(&mut self.lab, l, l.name())
                    .on_hover_text(l.hint());
            }
        });
        ui.separator();
        match self.lab {
            Lab::IntMatmul => self.int_matmul.ui(ui, model),
        }
    }
}

enum Msg {
    Calibrated(Result<Arc<Calibration>, String>),
    Result(String, Box<Result<MatmulLab, String>>),
}

/// The integer matmul lab.
pub struct IntMatmulLab {
    pub calibration: Option<Arc<Calibration>>,
    /// The layer (index into the calibration's layers).
    pub selected: usize,
    pub weights: String,
    pub output: OutputType,
    pub relu: bool,
    pub method: Method,
    /// Rows of the calibration to run (0: all).
    pub rows: usize,
    /// The element whose terms are shown; `None`: the one with the largest error.
    pub pick: Option<(usize, usize)>,
    pub pack_path: String,
    pub result: Option<Arc<MatmulLab>>,
    pub status: String,
    job: Option<Job<Msg>>,
    model_ptr: usize,
    /// The settings of the shown (or running) result.
    key: String,
    /// The layer whose ReLU default was last applied.
    relu_for: Option<usize>,
}

impl Default for IntMatmulLab {
    fn default() -> Self {
        IntMatmulLab {
            calibration: None,
            selected: 0,
            weights: "int8".into(),
            output: OutputType::Uint8,
            relu: false,
            method: Method::MinMax,
            rows: 512,
            pick: None,
            pack_path: String::new(),
            result: None,
            status: String::new(),
            job: None,
            model_ptr: 0,
            key: String::new(),
            relu_for: None,
        }
    }
}

const WEIGHT_CHOICES: [(&str, &str); 4] = [
    ("int8", "symmetric, one scale per output channel (Z_W = 0)"),
    ("int8:tensor", "symmetric, one scale for the tensor"),
    (
        "uint8",
        "asymmetric, per channel: a zero point Z_W(i) and the a_X term",
    ),
    ("uint8:tensor", "asymmetric, one scale and zero point"),
];

const OFFLINE: Color32 = Color32::from_rgb(97, 175, 239);
const PER_INPUT: Color32 = Color32::from_rgb(229, 160, 80);
const RESULT: Color32 = Color32::from_rgb(152, 195, 121);

impl IntMatmulLab {
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    fn poll(&mut self) {
        let Some(job) = &mut self.job else { return };
        for m in job.poll() {
            match m {
                Msg::Calibrated(Ok(c)) => {
                    self.status = format!(
                        "calibration: {} layers, {} examples: {}",
                        c.layers.len(),
                        c.examples,
                        c.data
                    );
                    self.selected = 0;
                    self.relu_for = None;
                    self.calibration = Some(c);
                    self.key.clear();
                }
                Msg::Calibrated(Err(e)) => self.status = e,
                Msg::Result(key, r) => {
                    if key == self.key {
                        match *r {
                            Ok(r) => self.result = Some(Arc::new(r)),
                            Err(e) => {
                                self.result = None;
                                self.status = e;
                            }
                        }
                    }
                }
            }
        }
        if job.is_finished() {
            self.job = None;
        }
    }

    fn calibrate(&mut self, model: Arc<Model>, pack_path: Option<String>, ctx: &egui::Context) {
        let c = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || c.request_repaint());
        self.calibration = None;
        self.result = None;
        self.status = "calibrating...".into();
        self.job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
            crate::jobs::background_pool().install(|| {
                let r = crate::activations::load(
                    &model,
                    pack_path.as_deref().map(std::path::Path::new),
                    512,
                    32,
                );
                w.send(Msg::Calibrated(r.map(Arc::new)));
            })
        }));
    }

    fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{:?}",
            self.selected,
            self.weights,
            self.output.name(),
            self.relu,
            self.method.name(),
            self.rows,
            self.pick
        )
    }

    fn compute(&mut self, model: Arc<Model>, cal: Arc<Calibration>, ctx: &egui::Context) {
        let key = self.key();
        self.key = key.clone();
        let weights = match parse_weights(&self.weights) {
            Ok(w) => w,
            Err(e) => {
                self.status = e.to_string();
                return;
            }
        };
        let opts = LabOptions {
            weights,
            input_method: self.method,
            output: self.output,
            relu: self.relu,
            rows: self.rows,
            pick: self.pick,
            ..LabOptions::default()
        };
        let i = self.selected;
        let c = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || c.request_repaint());
        self.job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
            crate::jobs::background_pool().install(|| {
                let r = run(&model, &cal.layers[i], &opts).map_err(|e| e.to_string());
                w.send(Msg::Result(key, Box::new(r)));
            })
        }));
    }

    pub fn ui(&mut self, ui: &mut Ui, model: Option<Arc<Model>>) {
        self.poll();
        let Some(model) = model else {
            ui.label("Open a model first (Model tab).");
            return;
        };
        let ptr = Arc::as_ptr(&model) as usize;
        if ptr != self.model_ptr && self.job.is_none() {
            self.model_ptr = ptr;
            self.calibrate(model.clone(), None, ui.ctx());
        }
        let cal = self.calibration.clone();
        ui.horizontal_wrapped(|ui| {
            if let Some(cal) = &cal {
                let name = cal
                    .layers
                    .get(self.selected)
                    .map(|l| l.name.clone())
                    .unwrap_or_default();
                egui::ComboBox::new("intmm_layer", "Layer")
                    .selected_text(name)
                    .show_ui(ui, |ui| {
                        for (i, l) in cal.layers.iter().enumerate() {
                            if ui
                                .selectable_value(
                                    &mut self.selected,
                                    i,
                                    format!("{} [{} x {}]", l.name, l.k, l.row_count()),
                                )
                                .clicked()
                            {
                                self.pick = None;
                            }
                        }
                    });
            }
            ui.separator();
            egui::ComboBox::new("intmm_weights", "Weights")
                .selected_text(self.weights.clone())
                .show_ui(ui, |ui| {
                    for (w, hint) in WEIGHT_CHOICES {
                        ui.selectable_value(&mut self.weights, w.to_string(), w)
                            .on_hover_text(hint);
                    }
                });
            ui.separator();
            egui::ComboBox::new("intmm_output", "Output")
                .selected_text(self.output.name())
                .show_ui(ui, |ui| {
                    for t in [OutputType::Uint8, OutputType::Int8] {
                        ui.selectable_value(&mut self.output, t, t.name());
                    }
                });
            ui.separator();
            egui::ComboBox::new("intmm_range", "Input range")
                .selected_text(self.method.name())
                .show_ui(ui, |ui| {
                    for m in Method::ALL {
                        ui.selectable_value(&mut self.method, m, m.name());
                    }
                });
            ui.separator();
            ui.checkbox(&mut self.relu, "fused ReLU")
                .on_hover_text("Clamp the output codes at the zero point: the ReLU costs nothing");
            let l = ui.label("Rows:");
            ui.add(egui::DragValue::new(&mut self.rows).range(0..=4096))
                .labelled_by(l.id)
                .on_hover_text("Calibration rows to run, evenly spread (0: all the calibration kept)");
            ui.separator();
            let l = ui.label("Pack:");
            ui.add(egui::TextEdit::singleline(&mut self.pack_path).desired_width(180.0))
                .labelled_by(l.id)
                .on_hover_text(
                    "A calibration pack from tools/capture_activations.py, for models the engine cannot run",
                );
            if ui.button("Load pack").clicked() && !self.pack_path.trim().is_empty() {
                self.calibrate(
                    model.clone(),
                    Some(self.pack_path.trim().to_string()),
                    ui.ctx(),
                );
            }
        });
        if !self.status.is_empty() {
            ui.label(RichText::new(&self.status).small());
        }
        let Some(cal) = cal else {
            if self.busy() {
                ui.spinner();
            }
            return;
        };
        if cal.layers.is_empty() {
            ui.label("The calibration has no layers.");
            return;
        }
        self.selected = self.selected.min(cal.layers.len() - 1);
        // a new layer starts with the model's own activation: fused ReLU when one follows it
        if self.relu_for != Some(self.selected) {
            self.relu_for = Some(self.selected);
            self.relu = followed_by_relu(&model, &cal.layers[self.selected].name);
        }
        if self.job.is_none() && self.key() != self.key {
            self.compute(model.clone(), cal.clone(), ui.ctx());
        }
        let Some(r) = self.result.clone() else {
            ui.spinner();
            return;
        };
        if self.busy() {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("computing...");
            });
        }
        egui::Panel::left("intmm_terms")
            .resizable(true)
            .default_size(660.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.terms_ui(ui, &r));
            });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| plots_ui(ui, &r));
        });
    }

    fn terms_ui(&mut self, ui: &mut Ui, r: &MatmulLab) {
        ui.heading(format!("{}: Y = X W^T + b in integers", r.layer));
        ui.label(format!(
            "{} [{} x {}], {} of {} calibration rows; r = S (q - Z)",
            r.weight, r.out, r.k, r.rows, r.rows_available
        ));
        egui::Grid::new("intmm_quant").striped(true).show(ui, |ui| {
            for h in ["", "type", "scale S", "zero point Z", "range"] {
                ui.strong(h);
            }
            ui.end_row();
            let (smin, smax) = r
                .w_scales
                .iter()
                .fold((f32::INFINITY, 0f32), |(a, b), &s| (a.min(s), b.max(s)));
            let (zmin, zmax) = r
                .w_zeros
                .iter()
                .fold((i32::MAX, i32::MIN), |(a, b), &z| (a.min(z), b.max(z)));
            ui.label("weights");
            // the format and granularity; the full resolved spec is in the hover text
            let short: Vec<&str> = r.weights.split(':').take(2).collect();
            ui.label(short.join(":")).on_hover_text(&r.weights);
            ui.label(if r.per_channel {
                format!("{smin:.3e} .. {smax:.3e} per channel")
            } else {
                format!("{smin:.3e}")
            });
            ui.label(if zmin == zmax {
                format!("{zmin}")
            } else {
                format!("{zmin} .. {zmax}")
            });
            ui.label("min-max of each channel");
            ui.end_row();
            ui.label("inputs");
            ui.label("uint8");
            ui.label(format!("{:.4e}", r.input.scale));
            ui.label(format!("{}", r.input.zero));
            ui.label(format!(
                "[{:.4}, {:.4}] ({})",
                r.input.range.0, r.input.range.1, r.input.method
            ));
            ui.end_row();
            ui.label("outputs");
            ui.label(r.output_type.name());
            ui.label(format!("{:.4e}", r.output.scale));
            ui.label(format!("{}", r.output.zero));
            ui.label(format!(
                "[{:.4}, {:.4}]; codes clamped to [{}, {}]{}",
                r.output.range.0,
                r.output.range.1,
                r.clamp.0,
                r.clamp.1,
                if r.relu { " (fused ReLU)" } else { "" }
            ));
            ui.end_row();
        });
        let (mmin, mmax) = r
            .multipliers
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), m| {
                (a.min(m.real), b.max(m.real))
            });
        ui.label(format!(
            "M = S_W S_X / S_Y {}",
            if r.per_channel {
                format!("per channel: {mmin:.3e} .. {mmax:.3e}")
            } else {
                format!("= {mmin:.4e}")
            }
        ));
        ui.add_space(6.0);
        ui.horizontal(|ui| {
            ui.strong(format!(
                "Terms of output element (row {}, output {})",
                r.pick.0, r.pick.1
            ));
            let (mut row, mut out) = r.pick;
            let l = ui.label("row");
            let a = ui
                .add(egui::DragValue::new(&mut row).range(0..=r.rows.saturating_sub(1)))
                .labelled_by(l.id);
            let l = ui.label("output");
            let b = ui
                .add(egui::DragValue::new(&mut out).range(0..=r.out.saturating_sub(1)))
                .labelled_by(l.id);
            if (a.changed() || b.changed()) && (row, out) != r.pick {
                self.pick = Some((row, out));
            }
            if ui
                .button("Worst element")
                .on_hover_text("The element with the largest error against the float layer")
                .clicked()
            {
                self.pick = None;
            }
        });
        ui.horizontal(|ui| {
            ui.colored_label(OFFLINE, "offline");
            ui.label("= precomputed once from weights, bias and scales;");
            ui.colored_label(PER_INPUT, "per input");
            ui.label("= computed for every input row;");
            ui.colored_label(RESULT, "result");
        });
        egui::Grid::new("intmm_terms_grid")
            .striped(true)
            .num_columns(5)
            .show(ui, |ui| {
                for h in ["when", "term", "value", "formula", "note"] {
                    ui.strong(h);
                }
                ui.end_row();
                for t in &r.terms {
                    let c = match t.when {
                        When::Offline => OFFLINE,
                        When::PerInput => PER_INPUT,
                        When::Result => RESULT,
                    };
                    ui.colored_label(c, t.when.label());
                    ui.label(RichText::new(&t.name).strong());
                    ui.label(RichText::new(t.value_text()).monospace());
                    ui.label(RichText::new(&t.formula).small());
                    ui.label(RichText::new(&t.note).small());
                    ui.end_row();
                }
            });
    }
}

fn plots_ui(ui: &mut Ui, r: &MatmulLab) {
    let v = &r.vs_float;
    let b = &r.bound;
    ui.strong("Integer path against the float layer");
    ui.label(format!(
        "{} outputs: max |err| {:.3} LSB, mean |err| {:.3} LSB, SQNR {:.2} dB (f64 reference of the same \
         quantized math: {:.2} dB); integer vs f64 reference: at most {} code apart, {} codes differ.",
        r.elements,
        v.max_lsb,
        v.mean_abs_lsb,
        v.sqnr_db,
        r.reference_vs_float.sqnr_db,
        r.max_code_diff,
        r.codes_differing
    ));
    ui.label(format!(
        "Derived bound: at most {:.2} LSB (error/bound <= {:.2}, {} elements above). Mean parts: {}.",
        b.max_lsb,
        b.worst_ratio,
        b.violations,
        b.mean_parts_lsb
            .iter()
            .map(|p| format!("{} {:.2}", p.name, p.lsb))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let (lo, hi) = r
        .scatter
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), p| {
            (a.min(p[0]).min(p[1]), b.max(p[0]).max(p[1]))
        });
    let pts: PlotPoints = r
        .scatter
        .iter()
        .map(|p| [p[0] as f64, p[1] as f64])
        .collect();
    ui.strong("Scatter: float output (x) against the integer path, dequantized (y)");
    Plot::new("intmm_scatter")
        .height(280.0)
        .data_aspect(1.0)
        .allow_scroll(false)
        .legend(Legend::default())
        .x_axis_label("float y")
        .y_axis_label("S_Y (q_Y - Z_Y)")
        .show(ui, |p| {
            if lo.is_finite() && hi.is_finite() {
                p.line(
                    Line::new(
                        "y = x",
                        PlotPoints::from(vec![[lo as f64, lo as f64], [hi as f64, hi as f64]]),
                    )
                    .color(Color32::GRAY),
                );
            }
            p.points(
                Points::new(format!("{} outputs", r.scatter.len()), pts)
                    .radius(1.5)
                    .color(PER_INPUT),
            );
        });
    ui.strong("Error of the integer path in output steps (LSB = S_Y)");
    if r.relu_zeros > 0 {
        ui.label(
            RichText::new(format!(
                "{} of {} outputs are 0 on both paths (the fused ReLU) and are left out",
                r.relu_zeros, r.elements
            ))
            .small(),
        );
    }
    let h = &r.error_hist_lsb;
    let bars = super::bars::histogram_bars(h, false, 1.0);
    Plot::new("intmm_err_hist")
        .height(170.0)
        .allow_scroll(false)
        .x_axis_label("(y^ - y) / S_Y")
        .show(ui, |p| {
            p.bar_chart(BarChart::new("error", bars).color(OFFLINE));
            p.vline(VLine::new("+1/2 LSB", 0.5).color(RESULT));
            p.vline(VLine::new("-1/2 LSB", -0.5).color(RESULT));
        });
}
