//! The Activations view: what flows into each layer on calibration data. Per layer, the input and
//! output histograms with every range method's threshold, the EMA observer's trajectory over the
//! calibration batches, the max |x| of every input channel with outlier channels marked, and the
//! layer's error in weight space beside its error in output space. All numbers come from
//! `activations::report`, computed in the background.

use crate::activations::ranges::Method;
use crate::activations::report::{activation_report, ActivationReport, OUTLIER_FACTOR};
use crate::activations::{accuracy_under, Calibration};
use crate::jobs::{Job, Worker};
use crate::model::Model;
use crate::quant::Spec;
use egui::{Color32, RichText, Ui};
use egui_plot::{Bar, BarChart, Legend, Line, Plot, PlotPoints, Points, VLine};
use std::sync::Arc;

enum Msg {
    Calibrated(Result<Arc<Calibration>, String>),
    Report(usize, Box<Result<ActivationReport, String>>),
    Accuracy(Result<Option<[f64; 3]>, String>),
}

/// The state of the view.
pub struct ActivationsView {
    /// Activation format the ranges are for.
    pub act_text: String,
    /// Weight spec for the error columns.
    pub weight_text: String,
    pub method: Method,
    /// A calibration pack to load for a model the engine cannot run.
    pub pack_path: String,
    pub selected: usize,
    pub log_counts: bool,
    pub calibration: Option<Arc<Calibration>>,
    pub reports: Vec<Option<ActivationReport>>,
    /// Held-out accuracy of a runnable model: float, weights quantized, weights and inputs quantized.
    pub accuracy: Option<[f64; 3]>,
    pub status: String,
    job: Option<Job<Msg>>,
    /// The model the calibration belongs to (its address) and the settings the reports are for.
    model_ptr: usize,
    report_key: String,
}

impl Default for ActivationsView {
    fn default() -> Self {
        ActivationsView {
            act_text: "uint8".into(),
            weight_text: "int4".into(),
            method: Method::MinMax,
            pack_path: String::new(),
            selected: 0,
            log_counts: true,
            calibration: None,
            reports: Vec::new(),
            accuracy: None,
            status: String::new(),
            job: None,
            model_ptr: 0,
            report_key: String::new(),
        }
    }
}

const METHOD_COLORS: [Color32; 5] = [
    Color32::from_rgb(224, 108, 117),
    Color32::from_rgb(229, 192, 123),
    Color32::from_rgb(152, 195, 121),
    Color32::from_rgb(198, 120, 221),
    Color32::from_rgb(86, 182, 194),
];

impl ActivationsView {
    /// True while calibration or reports are being computed.
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    fn poll(&mut self) {
        let Some(job) = &mut self.job else { return };
        for m in job.poll() {
            match m {
                Msg::Calibrated(Ok(c)) => {
                    self.status = format!(
                        "{} layers, {} examples in {} batches: {}",
                        c.layers.len(),
                        c.examples,
                        c.batches,
                        c.data
                    );
                    self.reports = vec![None; c.layers.len()];
                    self.calibration = Some(c);
                    self.report_key.clear();
                }
                Msg::Calibrated(Err(e)) => self.status = e,
                Msg::Report(i, r) => match *r {
                    Ok(r) => {
                        if let Some(slot) = self.reports.get_mut(i) {
                            *slot = Some(r);
                        }
                    }
                    Err(e) => self.status = e,
                },
                Msg::Accuracy(Ok(a)) => self.accuracy = a,
                Msg::Accuracy(Err(e)) => self.status = e,
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
        self.reports.clear();
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

    fn compute_reports(&mut self, model: Arc<Model>, ctx: &egui::Context) {
        let (Some(cal), Ok(w), Ok(a)) = (
            self.calibration.clone(),
            Spec::parse(&self.weight_text),
            Spec::parse(&self.act_text),
        ) else {
            return;
        };
        let method = self.method;
        let c = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || c.request_repaint());
        self.reports = vec![None; cal.layers.len()];
        self.accuracy = None;
        // the selected layer first, then the rest in order
        let sel = self.selected.min(cal.layers.len().saturating_sub(1));
        self.job = Some(Job::spawn(wake, move |wk: &Worker<Msg>| {
            crate::jobs::background_pool().install(|| {
                let order = std::iter::once(sel).chain((0..cal.layers.len()).filter(|&i| i != sel));
                for i in order {
                    if wk.cancelled() {
                        return;
                    }
                    let r = activation_report(&cal.layers[i], Some(&model), &w, &a, method, 80);
                    wk.send(Msg::Report(i, Box::new(r)));
                }
                if !wk.cancelled() {
                    wk.send(Msg::Accuracy(accuracy_under(&model, &cal, &w, &a, method)));
                }
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
        ui.horizontal_wrapped(|ui| {
            let l = ui.label("Activations:");
            ui.add(egui::TextEdit::singleline(&mut self.act_text).desired_width(80.0))
                .labelled_by(l.id)
                .on_hover_text("The format activations are quantized to (uint8, int8, fp8_e4m3, uint4 ...)");
            let l = ui.label("Weights:");
            ui.add(egui::TextEdit::singleline(&mut self.weight_text).desired_width(110.0))
                .labelled_by(l.id)
                .on_hover_text("The weight spec for the error columns; round=adaround works here");
            egui::ComboBox::new("act_method", "Range")
                .selected_text(self.method.name())
                .show_ui(ui, |ui| {
                    for m in Method::ALL {
                        ui.selectable_value(&mut self.method, m, m.name());
                    }
                })
                .response
                .on_hover_text("How the activation range is chosen for the output error with quantized inputs");
            ui.separator();
            let l = ui.label("Pack:");
            ui.add(egui::TextEdit::singleline(&mut self.pack_path).desired_width(220.0))
                .labelled_by(l.id)
                .on_hover_text("A calibration pack from tools/capture_activations.py, for models the engine cannot run");
            if ui.button("Load pack").clicked() && !self.pack_path.trim().is_empty() {
                self.calibrate(model.clone(), Some(self.pack_path.trim().to_string()), ui.ctx());
            }
            if ui.button("Recalibrate").on_hover_text("Run the sample model on its calibration rows again").clicked() {
                self.calibrate(model.clone(), None, ui.ctx());
            }
        });
        let mut problems = Vec::new();
        if let Err(e) = Spec::parse(&self.act_text) {
            problems.push(e.to_string());
        }
        if let Err(e) = Spec::parse(&self.weight_text) {
            problems.push(e.to_string());
        }
        for p in &problems {
            ui.colored_label(Color32::from_rgb(224, 108, 117), p);
        }
        if !self.status.is_empty() {
            ui.label(RichText::new(&self.status).small());
        }
        let key = format!(
            "{}|{}|{}",
            self.act_text,
            self.weight_text,
            self.method.name()
        );
        if self.calibration.is_some()
            && self.job.is_none()
            && key != self.report_key
            && problems.is_empty()
        {
            self.report_key = key;
            self.compute_reports(model.clone(), ui.ctx());
        }
        let Some(cal) = self.calibration.clone() else {
            if self.busy() {
                ui.spinner();
            }
            return;
        };
        if self.selected >= cal.layers.len() {
            self.selected = 0;
        }
        egui::Panel::left("act_layers")
            .resizable(true)
            .default_size(470.0)
            .show(ui, |ui| self.table(ui, &cal));
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                match self.reports.get(self.selected).cloned().flatten() {
                    Some(r) => self.details(ui, &r),
                    None => {
                        ui.spinner();
                    }
                }
            });
        });
    }

    fn table(&mut self, ui: &mut Ui, cal: &Calibration) {
        if let Some([f, w, wa]) = self.accuracy {
            ui.label(
                RichText::new(format!(
                    "Held-out accuracy: float {:.2} %, weights {} {:.2} %, and inputs {} {:.2} %",
                    100.0 * f,
                    self.weight_text,
                    100.0 * w,
                    self.act_text,
                    100.0 * wa
                ))
                .strong(),
            );
        }
        ui.strong("Layers: error in weight space vs in the layer's output");
        ui.label(RichText::new(format!(
            "SQNR dB with weights {}; 'out+A' also quantizes the inputs ({}, {} range). Orange: outlier channels.",
            self.weight_text, self.act_text, self.method.name()
        )).small());
        let fmt = |v: Option<f64>| match v {
            Some(x) if x.is_finite() => format!("{x:.1}"),
            Some(_) => "inf".into(),
            None => "-".into(),
        };
        egui::ScrollArea::vertical().show(ui, |ui| {
            egui::Grid::new("act_table").striped(true).show(ui, |ui| {
                for h in ["layer", "min", "max", "W", "out", "out+A"] {
                    ui.strong(h);
                }
                ui.end_row();
                for (i, l) in cal.layers.iter().enumerate() {
                    let r = self.reports.get(i).and_then(|r| r.as_ref());
                    let outliers = r.is_some_and(|r| !r.outlier_channels.is_empty());
                    let mut text = RichText::new(&l.name);
                    if outliers {
                        text = text.color(Color32::from_rgb(229, 140, 60));
                    }
                    if ui.selectable_label(self.selected == i, text).clicked() {
                        self.selected = i;
                    }
                    let (lo, hi) = l.min_max();
                    ui.label(format!("{lo:.3}"));
                    ui.label(format!("{hi:.3}"));
                    ui.label(fmt(r.and_then(|r| r.weight_sqnr_db)));
                    ui.label(fmt(r.and_then(|r| r.output_sqnr_db)));
                    ui.label(fmt(r.and_then(|r| r.output_sqnr_db_act)));
                    ui.end_row();
                }
            });
        });
        if ui.input(|i| i.key_pressed(egui::Key::ArrowDown)) && self.selected + 1 < cal.layers.len()
        {
            self.selected += 1;
        }
        if ui.input(|i| i.key_pressed(egui::Key::ArrowUp)) && self.selected > 0 {
            self.selected -= 1;
        }
    }

    fn details(&mut self, ui: &mut Ui, r: &ActivationReport) {
        ui.heading(&r.name);
        ui.label(format!(
            "{} input columns; {} input values seen; min {:.4}, max {:.4}. {} range [{:.4}, {:.4}]: scale {:.5}, zero point {}.",
            r.k, r.seen, r.min, r.max, r.chosen.method, r.chosen.lo, r.chosen.hi, r.act_scale, r.act_zero
        ));
        ui.checkbox(&mut self.log_counts, "log counts")
            .on_hover_text(
                "Show counts on a log scale: the tails that decide the range become visible",
            );
        let log = self.log_counts;
        let bars = |h: &crate::stats::Histogram| super::bars::histogram_bars(h, log, 1.0);
        ui.strong("Input activations with every range method's threshold");
        Plot::new("act_in_hist")
            .height(200.0)
            .allow_scroll(false)
            .legend(Legend::default())
            .x_axis_label("input value")
            .show(ui, |p| {
                p.bar_chart(
                    BarChart::new("inputs", bars(&r.inputs)).color(Color32::from_rgb(97, 175, 239)),
                );
                for (i, m) in r.ranges.iter().enumerate() {
                    let c = METHOD_COLORS[i % METHOD_COLORS.len()];
                    p.vline(VLine::new(m.method.clone(), m.hi).color(c).width(1.5));
                    if m.lo < 0.0 {
                        p.vline(VLine::new(m.method.clone(), m.lo).color(c).width(1.5));
                    }
                }
            });
        ui.strong("Output activations (with bias)");
        Plot::new("act_out_hist")
            .height(150.0)
            .allow_scroll(false)
            .x_axis_label("output value")
            .show(ui, |p| {
                p.bar_chart(
                    BarChart::new("outputs", bars(&r.outputs))
                        .color(Color32::from_rgb(152, 195, 121)),
                );
            });
        ui.columns(2, |cols| {
            cols[0].strong("EMA observer over the calibration batches");
            let mins: PlotPoints = r
                .batch_ranges
                .iter()
                .enumerate()
                .map(|(i, v)| [i as f64, v.0 as f64])
                .collect();
            let maxs: PlotPoints = r
                .batch_ranges
                .iter()
                .enumerate()
                .map(|(i, v)| [i as f64, v.1 as f64])
                .collect();
            let emin: PlotPoints = r
                .ema
                .iter()
                .enumerate()
                .map(|(i, v)| [i as f64, v.0 as f64])
                .collect();
            let emax: PlotPoints = r
                .ema
                .iter()
                .enumerate()
                .map(|(i, v)| [i as f64, v.1 as f64])
                .collect();
            Plot::new("act_ema")
                .height(170.0)
                .allow_scroll(false)
                .legend(Legend::default())
                .x_axis_label("batch")
                .show(&mut cols[0], |p| {
                    p.points(
                        Points::new("batch max", maxs)
                            .radius(2.5)
                            .color(Color32::from_rgb(224, 108, 117)),
                    );
                    p.points(
                        Points::new("batch min", mins)
                            .radius(2.5)
                            .color(Color32::from_rgb(97, 175, 239)),
                    );
                    p.line(
                        Line::new("EMA max (c = 0.01)", emax)
                            .color(Color32::from_rgb(224, 108, 117)),
                    );
                    p.line(
                        Line::new("EMA min (c = 0.01)", emin)
                            .color(Color32::from_rgb(97, 175, 239)),
                    );
                });
            cols[1].strong(format!(
                "max |x| per input channel ({} outliers above {OUTLIER_FACTOR}x the median {:.3})",
                r.outlier_channels.len(),
                r.channel_median
            ));
            let normal: Vec<Bar> = r
                .channel_absmax
                .iter()
                .enumerate()
                .filter(|(i, _)| !r.outlier_channels.contains(i))
                .map(|(i, &v)| Bar::new(i as f64, v as f64).width(1.0))
                .collect();
            let out: Vec<Bar> = r
                .outlier_channels
                .iter()
                .map(|&i| Bar::new(i as f64, r.channel_absmax[i] as f64).width(1.0))
                .collect();
            Plot::new("act_channels")
                .height(170.0)
                .allow_scroll(false)
                .legend(Legend::default())
                .x_axis_label("input channel")
                .show(&mut cols[1], |p| {
                    p.bar_chart(
                        BarChart::new("channels", normal).color(Color32::from_rgb(97, 175, 239)),
                    );
                    p.bar_chart(
                        BarChart::new("outlier channels", out)
                            .color(Color32::from_rgb(229, 140, 60)),
                    );
                });
        });
    }
}
