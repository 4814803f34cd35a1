//! The Activations view: what flows into each layer on calibration data. Per layer, the input and
//! output histograms with every range method's threshold, the EMA observer's trajectory over the
//! calibration batches, the max |x| of every input channel with outlier channels marked, and the
//! layer's error in weight space beside its error in output space, and the importance matrix (Σx² per
//! input channel). All numbers come from `activations::report`, computed in the background.
//!
//! A sample model calibrates on its own rows as soon as it is open; a transformer, when asked, on the
//! calibration windows of a text (the bundled one, or a file), with progress and Cancel.

use crate::activations::ranges::Method;
use crate::activations::report::{activation_report, ActivationReport, OUTLIER_FACTOR};
use crate::activations::{accuracy_under, lm, Calibration};
use crate::jobs::{Job, Worker};
use crate::model::Model;
use crate::nn::text::read_text;
use crate::nn::transformer::{is_transformer, Transformer};
use crate::nn::NnError;
use crate::plan::score::{windows, ProgressHooks};
use crate::quant::Spec;
use egui::{Color32, RichText, Ui};
use egui_plot::{Bar, BarChart, Legend, Line, Plot, PlotPoints, Points, VLine};
use std::sync::Arc;

enum Msg {
    Calibrated(Result<Arc<Calibration>, String>),
    Report(usize, Box<Result<ActivationReport, String>>),
    Accuracy(Result<Option<[f64; 3]>, String>),
}

/// What the running job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Calibrate,
    /// Reports, this layer's first.
    Reports(usize),
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
    /// Only layers whose name contains this are listed.
    pub filter: String,
    /// A transformer's calibration text: a plain-text or JSONL file (empty: the bundled text).
    pub text_path: String,
    /// A transformer's calibration windows and tokens per window.
    pub windows: usize,
    pub ctx: usize,
    /// Whether the open model is a transformer (calibrated on text, when asked).
    pub transformer: bool,
    pub log_counts: bool,
    pub calibration: Option<Arc<Calibration>>,
    pub reports: Vec<Option<ActivationReport>>,
    /// Held-out accuracy of a runnable model: float, weights quantized, weights and inputs quantized.
    pub accuracy: Option<[f64; 3]>,
    pub status: String,
    job: Option<Job<Msg>>,
    task: Task,
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
            filter: String::new(),
            text_path: String::new(),
            windows: 16,
            ctx: 256,
            transformer: false,
            log_counts: true,
            calibration: None,
            reports: Vec::new(),
            accuracy: None,
            status: String::new(),
            job: None,
            task: Task::Calibrate,
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

    /// True while a calibration runs.
    pub fn calibrating(&self) -> bool {
        self.job.is_some() && self.task == Task::Calibrate
    }

    /// Progress of the running job in [0, 1].
    pub fn progress(&self) -> f32 {
        self.job.as_ref().map_or(1.0, |j| j.progress.fraction())
    }

    /// Stop the running job (a calibration is dropped; reports already in stay).
    pub fn cancel(&mut self) {
        if let Some(j) = self.job.take() {
            j.cancel();
            if self.task == Task::Calibrate {
                self.status = "Calibration cancelled.".into();
            }
        }
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

    /// Calibrate `model`: from the pack at `pack_path`; else a transformer on the calibration windows
    /// of the text, a sample model on its own rows.
    pub fn calibrate(&mut self, model: Arc<Model>, pack_path: Option<String>, ctx: &egui::Context) {
        let c = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || c.request_repaint());
        self.calibration = None;
        self.reports.clear();
        self.accuracy = None;
        self.task = Task::Calibrate;
        self.status = "calibrating...".into();
        if pack_path.is_none() && self.transformer {
            // the progress bar says it
            self.status.clear();
            let text = Some(self.text_path.trim().to_string()).filter(|t| !t.is_empty());
            let (n, tokens) = (self.windows.max(1), self.ctx);
            // asked for and waited for: the foreground pool (background work steps aside)
            self.job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
                crate::jobs::foreground_pool().install(|| {
                    let r = calibrate_on_text(&model, text.as_deref(), tokens, n, w);
                    w.send(Msg::Calibrated(r.map(Arc::new)));
                })
            }));
            return;
        }
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

    /// Start the reports of every layer that has none yet, `first` first (all of them when `fresh`).
    fn compute_reports(&mut self, model: Arc<Model>, ctx: &egui::Context, fresh: bool) {
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
        if fresh || self.reports.len() != cal.layers.len() {
            self.reports = vec![None; cal.layers.len()];
            self.accuracy = None;
        }
        // the selected layer first, then the rest in order
        let sel = self.selected.min(cal.layers.len().saturating_sub(1));
        let todo: Vec<usize> = std::iter::once(sel)
            .chain((0..cal.layers.len()).filter(|&i| i != sel))
            .filter(|&i| self.reports[i].is_none())
            .collect();
        let total = cal.layers.len();
        let done = total - todo.len();
        self.task = Task::Reports(sel);
        self.job = Some(Job::spawn(wake, move |wk: &Worker<Msg>| {
            wk.progress.set_total(total as u64);
            wk.progress.set_done(done as u64);
            crate::jobs::background_pool().install(|| {
                for i in todo {
                    if wk.cancelled() {
                        return;
                    }
                    let r = activation_report(&cal.layers[i], Some(&model), &w, &a, method, 80);
                    wk.send(Msg::Report(i, Box::new(r)));
                    wk.progress.add(1);
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
        if ptr != self.model_ptr {
            // a job for the last model is dropped (which cancels it)
            self.job = None;
            self.model_ptr = ptr;
            self.transformer = is_transformer(&model);
            self.calibration = None;
            self.reports.clear();
            self.accuracy = None;
            self.selected = 0;
            if self.transformer {
                self.status = "A transformer: press Calibrate to run it on the calibration windows of a text.".into();
            } else {
                self.calibrate(model.clone(), None, ui.ctx());
            }
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
            ui.add(egui::TextEdit::singleline(&mut self.pack_path).desired_width(160.0))
                .labelled_by(l.id)
                .on_hover_text("A calibration pack from tools/capture_activations.py (or quantscope calibrate --save-pack)");
            if ui.button("Load pack").clicked() && !self.pack_path.trim().is_empty() {
                self.calibrate(model.clone(), Some(self.pack_path.trim().to_string()), ui.ctx());
            }
            if !self.transformer
                && ui.button("Recalibrate").on_hover_text("Run the sample model on its calibration rows again").clicked()
            {
                self.calibrate(model.clone(), None, ui.ctx());
            }
        });
        if self.transformer {
            ui.horizontal_wrapped(|ui| {
                let l = ui.label("Text:");
                ui.add(
                    egui::TextEdit::singleline(&mut self.text_path)
                        .hint_text("the bundled English text")
                        .desired_width(240.0),
                )
                .labelled_by(l.id)
                .on_hover_text("A plain-text or JSONL (a 'text' field per line) file; calibration uses windows from its first half, never the evaluation ones");
                let l = ui.label("windows");
                ui.add(egui::DragValue::new(&mut self.windows).range(1..=256))
                    .labelled_by(l.id)
                    .on_hover_text("How many calibration windows");
                let l = ui.label("× tokens");
                ui.add(egui::DragValue::new(&mut self.ctx).range(8..=4096))
                    .labelled_by(l.id)
                    .on_hover_text("Tokens per window (at most the model's positions)");
                let calibrating = self.calibrating();
                if ui
                    .add_enabled(!calibrating, egui::Button::new("Calibrate"))
                    .on_hover_text("Run the transformer on the calibration windows and record every linear layer's inputs and outputs")
                    .clicked()
                {
                    self.calibrate(model.clone(), None, ui.ctx());
                }
            });
        }
        if self.busy() {
            // progress moves without messages: look again soon
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(250));
        }
        if self.calibrating() {
            ui.horizontal(|ui| {
                let p = self.progress();
                let (done, total) = self.job.as_ref().map_or((0, 0), |j| j.progress.counts());
                let text = if total > 0 {
                    format!("calibrating: {done} of {total} steps")
                } else {
                    "calibrating: reading the text…".into()
                };
                ui.add(egui::ProgressBar::new(p).desired_width(320.0).text(text));
                if ui
                    .button("Cancel")
                    .on_hover_text("Stop the calibration")
                    .clicked()
                {
                    self.cancel();
                }
            });
        }
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
        if self.calibration.is_some() && problems.is_empty() {
            if key != self.report_key && !self.calibrating() {
                self.report_key = key;
                self.compute_reports(model.clone(), ui.ctx(), true);
            } else if matches!(self.task, Task::Reports(s) if s != self.selected)
                && self.job.is_some()
                && self.reports.get(self.selected).is_some_and(|r| r.is_none())
            {
                // a layer picked while the reports run: its report next
                self.compute_reports(model.clone(), ui.ctx(), false);
            }
        }
        let Some(cal) = self.calibration.clone() else {
            if self.busy() && !self.calibrating() {
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
        ui.horizontal(|ui| {
            let l = ui.label("Filter");
            ui.add(egui::TextEdit::singleline(&mut self.filter).desired_width(160.0))
                .labelled_by(l.id)
                .on_hover_text("List only layers whose name contains this text (e.g. down_proj)");
            if let (Some(j), Task::Reports(_)) = (&self.job, self.task) {
                let (done, total) = j.progress.counts();
                ui.spinner();
                ui.label(RichText::new(format!("reports {done} of {total}")).small());
            }
        });
        let needle = self.filter.to_lowercase();
        let shown: Vec<usize> = (0..cal.layers.len())
            .filter(|&i| needle.is_empty() || cal.layers[i].name.to_lowercase().contains(&needle))
            .collect();
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
                for &i in &shown {
                    let l = &cal.layers[i];
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
        // up and down move through the listed layers when no text field has focus
        let nothing_focused = ui.ctx().memory(|m| m.focused().is_none());
        let (up, down) = ui.input(|i| {
            (
                i.key_pressed(egui::Key::ArrowUp),
                i.key_pressed(egui::Key::ArrowDown),
            )
        });
        if nothing_focused && (up || down) && !shown.is_empty() {
            let next = match shown.iter().position(|&i| i == self.selected) {
                Some(p) if down => (p + 1).min(shown.len() - 1),
                Some(p) => p.saturating_sub(1),
                None => 0,
            };
            self.selected = shown[next];
        }
    }

    fn details(&mut self, ui: &mut Ui, r: &ActivationReport) {
        ui.heading(&r.name);
        ui.label(format!(
            "{} input columns; {} input values seen; min {:.4}, max {:.4}. {} range [{:.4}, {:.4}]: scale {:.5}, zero point {}.",
            r.k, r.seen, r.min, r.max, r.chosen.method, r.chosen.lo, r.chosen.hi, r.act_scale, r.act_zero
        ));
        let db = |v: Option<f64>| match v {
            Some(x) if x.is_finite() => format!("{x:.1} dB"),
            Some(_) => "inf".into(),
            None => "-".into(),
        };
        ui.label(
            RichText::new(format!(
                "SQNR with weights {}: {} in weight space, {} in the layer's output, {} with the inputs in {} too",
                self.weight_text,
                db(r.weight_sqnr_db),
                db(r.output_sqnr_db),
                db(r.output_sqnr_db_act),
                self.act_text
            ))
            .strong(),
        );
        let log = self.log_counts;
        let bars = |h: &crate::stats::Histogram| super::bars::histogram_bars(h, log, 1.0);
        ui.horizontal(|ui| {
            ui.strong("Input activations with every range method's threshold");
            ui.checkbox(&mut self.log_counts, "log counts")
                .on_hover_text(
                    "Show counts on a log scale: the tails that decide the range become visible",
                );
        });
        Plot::new("act_in_hist")
            .height(180.0)
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
        ui.columns(2, |cols| {
            cols[0].strong("Output activations (with bias)");
            Plot::new("act_out_hist")
                .height(140.0)
                .allow_scroll(false)
                .x_axis_label("output value")
                .show(&mut cols[0], |p| {
                    p.bar_chart(
                        BarChart::new("outputs", bars(&r.outputs))
                            .color(Color32::from_rgb(152, 195, 121)),
                    );
                });
            cols[1].strong("EMA observer over the calibration batches");
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
                .height(140.0)
                .allow_scroll(false)
                .legend(Legend::default())
                .x_axis_label("batch")
                .show(&mut cols[1], |p| {
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
        });
        ui.columns(2, |cols| {
            cols[0].strong(format!(
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
                .map(|&i| Bar::new(i as f64, r.channel_absmax[i] as f64).width(marked_width(r.k)))
                .collect();
            Plot::new("act_channels")
                .height(160.0)
                .allow_scroll(false)
                .legend(Legend::default())
                .x_axis_label("input channel")
                .show(&mut cols[0], |p| {
                    p.bar_chart(
                        BarChart::new("channels", normal).color(Color32::from_rgb(97, 175, 239)),
                    );
                    p.bar_chart(
                        BarChart::new("outlier channels", out)
                            .color(Color32::from_rgb(229, 140, 60)),
                    );
                });
            if !r.outlier_channels.is_empty() {
                let names: Vec<String> = r
                    .outliers_largest_first
                    .iter()
                    .take(8)
                    .map(|&i| {
                        format!(
                            "#{i} {}",
                            crate::formats::fmt_short(r.channel_absmax[i] as f64)
                        )
                    })
                    .collect();
                cols[0].label(format!("Outlier channels: {}", names.join(", ")));
            }
            importance_ui(&mut cols[1], r);
        });
    }
}

/// Width of a marked channel's bar: one channel is under a pixel wide on a big layer, so the marked
/// ones are drawn wider to stay visible.
fn marked_width(channels: usize) -> f64 {
    (channels as f64 / 250.0).max(1.0)
}

/// The importance matrix of a layer: Σx² per input channel, its largest channels named.
fn importance_ui(ui: &mut Ui, r: &ActivationReport) {
    if r.importance.is_empty() {
        ui.label(
            RichText::new("No importance matrix (Σx² per input channel) in this calibration.")
                .weak(),
        );
        return;
    }
    ui.strong(format!(
        "Importance Σx² per input channel (the top {} hold {:.1} %)",
        r.importance_top.len(),
        100.0 * r.importance_top_share
    ))
    .on_hover_text("Σ over every calibration row of the channel's input squared: how much a weight column's error costs in the output. llama.cpp's imatrix weights its quantization error by it");
    let purple = Color32::from_rgb(198, 120, 221);
    let normal: Vec<Bar> = r
        .importance
        .iter()
        .enumerate()
        .filter(|(i, _)| !r.importance_top.contains(i))
        .map(|(i, &v)| Bar::new(i as f64, v as f64).width(1.0))
        .collect();
    let top: Vec<Bar> = r
        .importance_top
        .iter()
        .map(|&i| Bar::new(i as f64, r.importance[i] as f64).width(marked_width(r.k)))
        .collect();
    Plot::new("act_importance")
        .height(160.0)
        .allow_scroll(false)
        .legend(Legend::default())
        .x_axis_label("input channel")
        .show(ui, |p| {
            p.bar_chart(BarChart::new("Σx²", normal).color(Color32::from_rgb(97, 175, 239)));
            p.bar_chart(BarChart::new("top channels", top).color(purple));
        });
    let names: Vec<String> = r
        .importance_top
        .iter()
        .map(|&i| {
            let outlier = if r.outlier_channels.contains(&i) {
                " (outlier)"
            } else {
                ""
            };
            format!(
                "#{i} {}{outlier}",
                crate::formats::fmt_short(r.importance[i] as f64)
            )
        })
        .collect();
    ui.label(format!("Top channels: {}", names.join(", ")));
}

/// A transformer's activations on the calibration windows of `text` (the bundled text when `None`).
fn calibrate_on_text(
    model: &Model,
    text: Option<&str>,
    ctx: usize,
    n: usize,
    w: &Worker<Msg>,
) -> Result<Calibration, String> {
    let run = || -> Result<Calibration, NnError> {
        let net = Transformer::from_model(model)?;
        let text = text
            .map(|p| read_text(std::path::Path::new(p)))
            .transpose()?;
        let split = windows(model, &net, text.as_ref(), ctx, n, 0)?;
        lm::capture(
            model,
            &net,
            &split.calibration,
            &split.describe,
            lm::Keep::default(),
            &ProgressHooks(&w.progress),
        )
    };
    run().map_err(|e| match e {
        NnError::Cancelled => "Calibration cancelled.".to_string(),
        e => e.to_string(),
    })
}
