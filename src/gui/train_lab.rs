//! The training lab: fine-tune the sample model with quantized weights (QAT with the straight-through
//! estimator, k-means fine-tuning, binary, ternary TWN/TTQ) in the background, with the loss and
//! accuracy curves growing live, Pause/Stop, the learned codebooks, and a table + chart of
//! post-training quantization vs trained accuracy per method. The numbers all come from
//! `nn::train`; this panel only starts runs and draws what they report.

use crate::jobs::{Job, Worker};
use crate::model::Model;
use crate::nn::train::{
    comparison_modes, train, CompareRow, EpochStats, Mode, TrainConfig, TrainEvent, Trained,
};
use crate::quant::Spec;
use crate::stats::{histogram, Histogram};
use egui::{Color32, RichText, Ui};
use egui_plot::{Bar, BarChart, HLine, Legend, Line, Plot, PlotPoints, Points, VLine};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the mode picker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabMode {
    Qat,
    Kmeans,
    Binary,
    TernaryTwn,
    TernaryTtq,
}

impl LabMode {
    const ALL: [LabMode; 5] = [
        LabMode::Qat,
        LabMode::Kmeans,
        LabMode::Binary,
        LabMode::TernaryTwn,
        LabMode::TernaryTtq,
    ];

    fn name(self) -> &'static str {
        match self {
            LabMode::Qat => "QAT (fake quant + STE)",
            LabMode::Kmeans => "k-means fine-tuning",
            LabMode::Binary => "binary (BinaryConnect/XNOR)",
            LabMode::TernaryTwn => "ternary TWN",
            LabMode::TernaryTtq => "ternary TTQ",
        }
    }
}

enum Msg {
    /// Histograms of each layer's float weights (for the codebook view).
    Hists(Vec<(String, Histogram)>),
    Event(TrainEvent),
    Done(Result<Arc<Trained>, String>),
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Finished,
    Stopped,
    Failed,
}

/// One run as the panel shows it.
pub struct RunView {
    pub config: TrainConfig,
    pub state: RunState,
    /// (epoch as a fraction, batch loss), one per step.
    pub steps: Vec<[f64; 2]>,
    pub epochs: Vec<EpochStats>,
    pub steps_per_epoch: usize,
    pub result: Option<Arc<Trained>>,
    pub hists: Vec<(String, Histogram)>,
}

/// The state of the panel.
pub struct TrainLab {
    pub mode: LabMode,
    pub qat_spec: String,
    pub kmeans_bits: u32,
    /// Quantize activations (every layer's input) with `act_text`.
    pub act_on: bool,
    pub act_text: String,
    pub epochs: usize,
    pub lr: f32,
    /// Train on at most this many rows (tests use a few hundred to keep runs short).
    pub max_rows: Option<usize>,
    pub save_path: String,
    pub status: String,
    /// The current or last run.
    pub run: Option<RunView>,
    /// Finished runs, one row per method (a rerun replaces its row), with the activations they used.
    pub rows: Vec<(CompareRow, String)>,
    /// Methods still to run for "Run comparison".
    pub queue: Vec<Mode>,
    /// The layer whose codebook is drawn.
    pub layer: usize,
    /// A saved model the window should open (the app takes it).
    pub open_request: Option<PathBuf>,
    job: Option<Job<Msg>>,
    pause: Arc<AtomicBool>,
    model_ptr: usize,
    /// Whether the current model is a runnable sample model (checked once per model).
    runnable: bool,
    /// The float model's held-out accuracy as its metadata records it.
    float_accuracy: Option<String>,
    /// The user chose the codebook layer (else the largest is shown).
    layer_picked: bool,
}

impl Default for TrainLab {
    fn default() -> Self {
        TrainLab {
            mode: LabMode::Qat,
            qat_spec: "int2".into(),
            kmeans_bits: 2,
            act_on: true,
            act_text: "uint8".into(),
            epochs: 8,
            lr: 1e-3,
            max_rows: None,
            save_path: String::new(),
            status: String::new(),
            run: None,
            rows: Vec::new(),
            queue: Vec::new(),
            layer: 0,
            open_request: None,
            job: None,
            pause: Arc::new(AtomicBool::new(false)),
            model_ptr: 0,
            runnable: false,
            float_accuracy: None,
            layer_picked: false,
        }
    }
}

const BLUE: Color32 = Color32::from_rgb(97, 175, 239);
const ORANGE: Color32 = Color32::from_rgb(229, 140, 60);
const GREEN: Color32 = Color32::from_rgb(152, 195, 121);
const RED: Color32 = Color32::from_rgb(224, 108, 117);
const LEVEL_COLORS: [Color32; 6] = [
    Color32::from_rgb(224, 108, 117),
    Color32::from_rgb(229, 192, 123),
    Color32::from_rgb(152, 195, 121),
    Color32::from_rgb(86, 182, 194),
    Color32::from_rgb(97, 175, 239),
    Color32::from_rgb(198, 120, 221),
];

impl TrainLab {
    /// True while a run is in progress (running or paused).
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    pub fn paused(&self) -> bool {
        self.pause.load(Ordering::Relaxed)
    }

    /// The mode the controls describe.
    pub fn current_mode(&self) -> Result<Mode, String> {
        match self.mode {
            LabMode::Qat => Mode::parse(&self.qat_spec),
            LabMode::Kmeans => Ok(Mode::Kmeans(self.kmeans_bits)),
            LabMode::Binary => Mode::parse("binary"),
            LabMode::TernaryTwn => Mode::parse("twn"),
            LabMode::TernaryTtq => Ok(Mode::Ttq),
        }
    }

    fn config(&self, mode: Mode) -> Result<TrainConfig, String> {
        let act = if self.act_on {
            Some(Spec::parse(&self.act_text).map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok(TrainConfig {
            act,
            epochs: self.epochs,
            lr: self.lr,
            max_rows: self.max_rows,
            ..TrainConfig::new(mode)
        })
    }

    /// Start a run of the mode the controls describe.
    pub fn start(&mut self, model: Arc<Model>, ctx: &egui::Context) {
        self.queue.clear();
        match self.current_mode().and_then(|m| self.config(m)) {
            Ok(cfg) => self.spawn(model, cfg, ctx),
            Err(e) => self.status = e,
        }
    }

    /// Run every method of the comparison table, one after another.
    pub fn start_comparison(&mut self, model: Arc<Model>, ctx: &egui::Context) {
        // k-means last, so its centroid view is what stays on screen (the table keeps its own order)
        let mut q = comparison_modes();
        q.sort_by_key(|m| matches!(m, Mode::Kmeans(_)));
        q.reverse();
        self.queue = q;
        self.next_in_queue(model, ctx);
    }

    fn next_in_queue(&mut self, model: Arc<Model>, ctx: &egui::Context) {
        if let Some(m) = self.queue.pop() {
            match self.config(m) {
                Ok(cfg) => self.spawn(model, cfg, ctx),
                Err(e) => {
                    self.status = e;
                    self.queue.clear();
                }
            }
        }
    }

    /// Pause or resume the run (the worker waits between steps).
    pub fn toggle_pause(&mut self) {
        let p = !self.paused();
        self.pause.store(p, Ordering::Relaxed);
        if let Some(r) = &mut self.run {
            if matches!(r.state, RunState::Running | RunState::Paused) {
                r.state = if p {
                    RunState::Paused
                } else {
                    RunState::Running
                };
            }
        }
    }

    /// Stop the run after its current step; what it learned so far is kept (and can be saved).
    pub fn stop(&mut self) {
        self.queue.clear();
        if let Some(j) = &self.job {
            j.cancel();
        }
        self.pause.store(false, Ordering::Relaxed);
    }

    fn spawn(&mut self, model: Arc<Model>, cfg: TrainConfig, ctx: &egui::Context) {
        let c = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || c.request_repaint());
        self.pause.store(false, Ordering::Relaxed);
        let pause = self.pause.clone();
        self.status = format!("training {}...", cfg.mode.label());
        self.run = Some(RunView {
            config: cfg.clone(),
            state: RunState::Running,
            steps: Vec::new(),
            epochs: Vec::new(),
            steps_per_epoch: 1,
            result: None,
            hists: Vec::new(),
        });
        self.job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
            crate::jobs::background_pool().install(|| {
                let hists = model
                    .tensors
                    .iter()
                    .filter(|t| t.quantizable() && t.name.ends_with(".weight"))
                    .filter_map(|t| {
                        let x = model.read_f32(t).ok()?;
                        let name = t.name.trim_end_matches(".weight").to_string();
                        Some((name, histogram(&x, 80, None)))
                    })
                    .collect();
                w.send(Msg::Hists(hists));
                let r = train(&model, &cfg, &mut |e| {
                    while pause.load(Ordering::Relaxed) && !w.cancelled() {
                        std::thread::sleep(std::time::Duration::from_millis(15));
                    }
                    !w.cancelled() && w.send(Msg::Event(e.clone()))
                });
                w.send(Msg::Done(r.map(Arc::new).map_err(|e| e.to_string())));
            })
        }));
    }

    /// Read what the worker sent; start the next queued method when a run ends.
    pub fn poll(&mut self, model: Option<Arc<Model>>, ctx: &egui::Context) {
        let Some(job) = &mut self.job else { return };
        let msgs = job.poll();
        let finished = job.is_finished();
        for m in msgs {
            let Some(run) = &mut self.run else { continue };
            match m {
                Msg::Hists(h) => {
                    if !self.layer_picked {
                        // the largest layer has the fullest histogram
                        self.layer = h
                            .iter()
                            .enumerate()
                            .max_by_key(|(_, (_, h))| h.counts.iter().sum::<u64>())
                            .map_or(0, |(i, _)| i);
                    }
                    run.hists = h;
                }
                Msg::Event(TrainEvent::Step {
                    epoch,
                    step,
                    steps_per_epoch,
                    loss,
                    ..
                }) => {
                    run.steps_per_epoch = steps_per_epoch;
                    let x = (epoch - 1) as f64 + step as f64 / steps_per_epoch as f64;
                    run.steps.push([x, loss]);
                    self.status = format!(
                        "{}: epoch {epoch}/{}, step {step}/{steps_per_epoch}, batch loss {loss:.4}",
                        run.config.mode.label(),
                        run.config.epochs
                    );
                }
                Msg::Event(TrainEvent::Epoch(s)) => run.epochs.push(s),
                Msg::Done(Ok(t)) => {
                    run.state = if t.stopped {
                        RunState::Stopped
                    } else {
                        RunState::Finished
                    };
                    let row = CompareRow::from_trained(&t);
                    self.status = format!(
                        "{}: {} -> {} held-out accuracy{}",
                        row.method,
                        pct(row.ptq_accuracy),
                        pct(row.trained_accuracy),
                        if t.stopped { " (stopped early)" } else { "" }
                    );
                    let act = t
                        .config
                        .act
                        .map(|a| a.to_string().split(':').next().unwrap_or("").to_string())
                        .unwrap_or("float".into());
                    self.rows
                        .retain(|(r, a)| !(r.method == row.method && *a == act));
                    self.rows.push((row, act));
                    let order = |m: &str| {
                        comparison_modes()
                            .iter()
                            .position(|c| c.label() == m)
                            .unwrap_or(usize::MAX)
                    };
                    self.rows
                        .sort_by_key(|(r, a)| (a.clone(), order(&r.method)));
                    run.result = Some(t);
                }
                Msg::Done(Err(e)) => {
                    run.state = RunState::Failed;
                    self.status = e;
                    self.queue.clear();
                }
            }
        }
        if finished {
            self.job = None;
            self.pause.store(false, Ordering::Relaxed);
            if let Some(m) = model {
                self.next_in_queue(m, ctx);
            }
        }
    }

    /// Write the last result to `save_path`.
    pub fn save(&mut self, model: &Model) {
        let Some(t) = self.run.as_ref().and_then(|r| r.result.clone()) else {
            self.status = "nothing to save yet: train first".into();
            return;
        };
        let path = PathBuf::from(self.save_path.trim());
        if self.save_path.trim().is_empty() {
            self.status = "type a file name to save to (e.g. trained.safetensors)".into();
            return;
        }
        if std::fs::canonicalize(&path).ok() == std::fs::canonicalize(&model.source).ok() {
            self.status = "that is the model itself; the source is never overwritten".into();
            return;
        }
        self.status = match t.save(model, &path) {
            Ok(()) => format!(
                "saved {} ({}, held-out {} with float activations)",
                path.display(),
                t.config.mode.label(),
                pct(t.weights_only.0)
            ),
            Err(e) => format!("could not save: {e}"),
        };
    }

    pub fn ui(&mut self, ui: &mut Ui, model: Option<Arc<Model>>) {
        self.poll(model.clone(), &ui.ctx().clone());
        let Some(model) = model else {
            ui.label("Open a model first (Model tab).");
            return;
        };
        let ptr = Arc::as_ptr(&model) as usize;
        if ptr != self.model_ptr {
            // another model: its results are not this one's
            self.model_ptr = ptr;
            if self.job.is_none() {
                self.rows.clear();
                self.run = None;
            }
            self.save_path = default_save_path(&model);
            self.runnable = crate::nn::Network::from_model(&model, None).is_ok()
                && crate::nn::dataset_bytes(&model).is_ok();
            self.float_accuracy = model
                .metadata()
                .and_then(|m| m.get("held_out_accuracy"))
                .and_then(|s| s.parse::<f64>().ok())
                .map(pct);
        }
        if !self.runnable {
            ui.label(
                "Training needs a runnable sample model (its metadata describes the network and \
                 its data): open sample_models/digits_mlp.safetensors or mnist_cnn.safetensors.",
            );
            return;
        }
        egui::CentralPanel::default().show(ui, |ui| {
            self.controls(ui, &model);
            ui.separator();
            ui.columns(2, |cols| {
                egui::ScrollArea::vertical()
                    .id_salt("train_left")
                    .show(&mut cols[0], |ui| {
                        self.curves(ui, &model);
                        self.compare_chart(ui);
                    });
                egui::ScrollArea::vertical()
                    .id_salt("train_right")
                    .show(&mut cols[1], |ui| {
                        self.table(ui);
                        self.codebooks(ui);
                    });
            });
        });
    }

    fn controls(&mut self, ui: &mut Ui, model: &Arc<Model>) {
        let busy = self.busy();
        ui.horizontal_wrapped(|ui| {
            ui.add_enabled_ui(!busy, |ui| {
                egui::ComboBox::new("train_mode", "Mode")
                    .selected_text(self.mode.name())
                    .show_ui(ui, |ui| {
                        for m in LabMode::ALL {
                            ui.selectable_value(&mut self.mode, m, m.name());
                        }
                    })
                    .response
                    .on_hover_text("What is learned: see the notes below the buttons");
                match self.mode {
                    LabMode::Qat => {
                        let l = ui.label("Weights:");
                        ui.add(egui::TextEdit::singleline(&mut self.qat_spec).desired_width(90.0))
                            .labelled_by(l.id)
                            .on_hover_text("The weight spec fake-quantized in the forward pass: int8, int4, int3, int2, uint4, fp4_e2m1, ...");
                    }
                    LabMode::Kmeans => {
                        let l = ui.label("Bits:");
                        ui.add(egui::Slider::new(&mut self.kmeans_bits, 1..=8))
                            .labelled_by(l.id)
                            .on_hover_text("2^N centroids per layer");
                    }
                    _ => {}
                }
                ui.checkbox(&mut self.act_on, "Quantize activations")
                    .on_hover_text("Fake-quantize every layer's input too (min-max range over the calibration rows, recalibrated each epoch)");
                if self.act_on {
                    let l = ui.label("as");
                    ui.add(egui::TextEdit::singleline(&mut self.act_text).desired_width(60.0))
                        .labelled_by(l.id);
                }
                let l = ui.label("Epochs:");
                ui.add(egui::DragValue::new(&mut self.epochs).range(1..=200))
                    .labelled_by(l.id);
                let l = ui.label("Learning rate:");
                ui.add(
                    egui::DragValue::new(&mut self.lr)
                        .range(1e-5..=1.0)
                        .speed(1e-4)
                        .max_decimals(5),
                )
                .labelled_by(l.id)
                .on_hover_text("Adam's peak learning rate, decayed to 0 along a cosine");
            });
        });
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!busy, egui::Button::new("Start"))
                .on_hover_text("Fine-tune the float model with this quantizer, in the background")
                .clicked()
            {
                self.start(model.clone(), ui.ctx());
            }
            let pause_label = if self.paused() { "Resume" } else { "Pause" };
            if ui
                .add_enabled(busy, egui::Button::new(pause_label))
                .clicked()
            {
                self.toggle_pause();
            }
            if ui
                .add_enabled(busy, egui::Button::new("Stop"))
                .on_hover_text("End the run after this step; what it learned is kept")
                .clicked()
            {
                self.stop();
            }
            ui.separator();
            if ui
                .add_enabled(!busy, egui::Button::new("Run comparison"))
                .on_hover_text(
                    "Train every method of the table (int8, int4, int3, int2, k-means 3 and 2, \
                     ternary TWN and TTQ, binary) with these epochs and activations",
                )
                .clicked()
            {
                self.start_comparison(model.clone(), ui.ctx());
            }
            ui.separator();
            let l = ui.label("Save to:");
            ui.add(egui::TextEdit::singleline(&mut self.save_path).desired_width(220.0))
                .labelled_by(l.id);
            let can_save = self.run.as_ref().is_some_and(|r| r.result.is_some());
            if ui
                .add_enabled(can_save, egui::Button::new("Save"))
                .clicked()
            {
                self.save(model);
            }
            if ui
                .add_enabled(can_save, egui::Button::new("Open saved model"))
                .on_hover_text("Open the saved file in the Model tab, like any model")
                .clicked()
            {
                let p = PathBuf::from(self.save_path.trim());
                if p.is_file() {
                    self.open_request = Some(p);
                } else {
                    self.status = "save it first".into();
                }
            }
        });
        if let Some(r) = &self.run {
            if matches!(r.state, RunState::Running | RunState::Paused) {
                let total = (r.steps_per_epoch * r.config.epochs).max(1);
                let frac = r.steps.len() as f32 / total as f32;
                let text = if r.state == RunState::Paused {
                    "paused".to_string()
                } else if self.queue.is_empty() {
                    format!("{:.0} %", frac * 100.0)
                } else {
                    format!(
                        "{:.0} %, {} more methods queued",
                        frac * 100.0,
                        self.queue.len()
                    )
                };
                ui.add(egui::ProgressBar::new(frac).text(text));
            }
        }
        if !self.status.is_empty() {
            ui.label(&self.status);
        }
        // the running (or last) run's method, else the one the controls describe
        let shown = match &self.run {
            Some(r) => Some(r.config.mode),
            None => self.current_mode().ok(),
        };
        ui.label(RichText::new(mode_note(shown)).weak());
    }

    fn curves(&self, ui: &mut Ui, model: &Model) {
        let Some(r) = &self.run else {
            ui.label("Press Start: the loss and accuracy curves grow here while the model trains.");
            return;
        };
        ui.strong(format!(
            "{}: loss (cross-entropy) per step and per epoch",
            r.config.mode.label()
        ));
        let smooth = smoothed(&r.steps, 20);
        let ep_train: Vec<[f64; 2]> = r
            .epochs
            .iter()
            .filter_map(|e| e.train_loss.map(|l| [e.epoch as f64, l]))
            .collect();
        let ep_test: Vec<[f64; 2]> = r
            .epochs
            .iter()
            .map(|e| [e.epoch as f64, e.held_out_loss])
            .collect();
        Plot::new("train_loss")
            .height(170.0)
            .y_axis_min_width(32.0)
            .allow_scroll(false)
            .legend(Legend::default())
            .x_axis_label("epoch")
            .show(ui, |p| {
                p.line(
                    Line::new("batch loss", PlotPoints::from(r.steps.clone()))
                        .color(BLUE.gamma_multiply(0.35)),
                );
                p.line(Line::new("batch loss (mean of 20)", PlotPoints::from(smooth)).color(BLUE));
                p.points(
                    Points::new("train loss (epoch)", PlotPoints::from(ep_train))
                        .radius(3.5)
                        .color(GREEN),
                );
                p.line(Line::new("held-out loss", PlotPoints::from(ep_test)).color(ORANGE));
            });
        ui.strong("Held-out accuracy (%) per epoch; epoch 0 = post-training quantization");
        let acc: Vec<[f64; 2]> = r
            .epochs
            .iter()
            .map(|e| [e.epoch as f64, 100.0 * e.held_out_accuracy])
            .collect();
        let tr: Vec<[f64; 2]> = r
            .epochs
            .iter()
            .filter_map(|e| e.train_accuracy.map(|a| [e.epoch as f64, 100.0 * a]))
            .collect();
        let lowest = acc
            .iter()
            .chain(&tr)
            .map(|p| (p[1] / 10.0).floor() * 10.0)
            .fold(100.0, f64::min);
        let float_acc = model
            .metadata()
            .and_then(|m| m.get("held_out_accuracy"))
            .and_then(|s| s.parse::<f64>().ok());
        Plot::new("train_acc")
            .height(170.0)
            .y_axis_min_width(40.0)
            // a range of whole tens, so the axis always has labelled marks
            .include_y(100.0)
            .include_y(lowest)
            .allow_scroll(false)
            .legend(Legend::default().position(egui_plot::Corner::RightBottom))
            .x_axis_label("epoch")
            .show(ui, |p| {
                if let Some(f) = float_acc {
                    p.hline(HLine::new("float model", 100.0 * f).color(Color32::GRAY));
                }
                p.line(Line::new("held-out", PlotPoints::from(acc.clone())).color(ORANGE));
                p.points(
                    Points::new("held-out", PlotPoints::from(acc))
                        .radius(3.0)
                        .color(ORANGE),
                );
                p.line(Line::new("train (running)", PlotPoints::from(tr)).color(GREEN));
            });
        if let (Some(first), Some(last)) = (r.epochs.first(), r.epochs.last()) {
            ui.label(format!(
                "Before training (PTQ): {}   now: {}   ({} epochs{})",
                pct(first.held_out_accuracy),
                pct(last.held_out_accuracy),
                last.epoch,
                match r.state {
                    RunState::Stopped => ", stopped",
                    RunState::Paused => ", paused",
                    RunState::Failed => ", failed",
                    _ => "",
                }
            ));
        }
    }

    fn table(&self, ui: &mut Ui) {
        ui.strong("Post-training quantization vs trained, held-out accuracy");
        if self.rows.is_empty() {
            ui.label(
                "Each finished run adds a row. 'Run comparison' trains them all: int8, int4, \
                 int3, int2, k-means, ternary and binary.",
            );
            return;
        }
        egui::Grid::new("train_rows").striped(true).show(ui, |ui| {
            for h in [
                "method", "bits", "act", "PTQ", "trained", "change", "epochs",
            ] {
                ui.strong(h);
            }
            ui.end_row();
            for (r, act) in &self.rows {
                ui.label(&r.method);
                ui.label(format!("{}", r.bits));
                ui.label(act);
                ui.label(pct(r.ptq_accuracy));
                ui.label(RichText::new(pct(r.trained_accuracy)).strong());
                let d = 100.0 * (r.trained_accuracy - r.ptq_accuracy);
                ui.colored_label(if d >= 0.0 { GREEN } else { RED }, format!("{d:+.2}"));
                ui.label(format!("{}", r.epochs));
                ui.end_row();
            }
        });
        for line in [
            "PTQ: the quantizer applied to the float model, no training (quantscope eval --spec).",
            "trained: that many epochs with the quantizer in the forward pass.",
            "bits: per weight (ternary is stored in 2); act: the activations' format.",
        ] {
            ui.label(RichText::new(line).small().weak());
        }
        if let Some(f) = &self.float_accuracy {
            ui.label(
                RichText::new(format!(
                    "Float model: {f} held-out accuracy (its metadata)."
                ))
                .small(),
            );
        }
    }

    /// Grouped bars: PTQ and trained accuracy for each method of the table.
    fn compare_chart(&self, ui: &mut Ui) {
        if self.rows.is_empty() {
            return;
        }
        ui.strong("Held-out accuracy (%): PTQ vs trained");
        let names: Vec<String> = self
            .rows
            .iter()
            .map(|(r, _)| axis_name(&r.method))
            .collect();
        let ptq: Vec<Bar> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, (r, _))| {
                Bar::new(i as f64 - 0.2, 100.0 * r.ptq_accuracy)
                    .width(0.38)
                    .name(&r.method)
            })
            .collect();
        let trained: Vec<Bar> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, (r, _))| {
                Bar::new(i as f64 + 0.2, 100.0 * r.trained_accuracy)
                    .width(0.38)
                    .name(&r.method)
            })
            .collect();
        Plot::new("train_compare")
            .height(170.0)
            .y_axis_min_width(32.0)
            .allow_scroll(false)
            .legend(Legend::default())
            .include_y(0.0)
            .include_y(100.0)
            .x_axis_formatter(move |m, _| {
                let i = m.value.round();
                if (m.value - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .show(ui, |p| {
                p.bar_chart(BarChart::new("PTQ", ptq).color(RED));
                p.bar_chart(BarChart::new("trained", trained).color(GREEN));
            });
    }

    fn codebooks(&mut self, ui: &mut Ui) {
        let Some(r) = &self.run else { return };
        let is_kmeans = matches!(r.config.mode, Mode::Kmeans(_));
        let is_ttq = r.config.mode == Mode::Ttq;
        if !(is_kmeans || is_ttq) || r.epochs.is_empty() {
            return;
        }
        ui.separator();
        let names: Vec<String> = r.hists.iter().map(|(n, _)| n.clone()).collect();
        if names.is_empty() {
            return;
        }
        self.layer = self.layer.min(names.len() - 1);
        egui::ComboBox::new("train_layer", "Layer")
            .selected_text(&names[self.layer])
            .show_ui(ui, |ui| {
                for (i, n) in names.iter().enumerate() {
                    if ui.selectable_value(&mut self.layer, i, n).clicked() {
                        self.layer_picked = true;
                    }
                }
            });
        let Some(r) = &self.run else { return };
        let li = self.layer;
        let (_, h) = &r.hists[li];
        let first = r.epochs.first().and_then(|e| e.codebooks.get(li)).cloned();
        let last = r.epochs.last().and_then(|e| e.codebooks.get(li)).cloned();
        let (Some(first), Some(last)) = (first, last) else {
            return;
        };
        if is_kmeans {
            ui.strong("Float weights with the centroids: grey = k-means, orange = now");
        } else {
            ui.strong("Float weights with TTQ's levels: grey = initial -W^n and W^p, orange = now");
        }
        let levels = |c: &[f32]| -> Vec<f64> {
            if is_ttq {
                vec![-(c[0] as f64), c[1] as f64]
            } else {
                c.iter().map(|&v| v as f64).collect()
            }
        };
        let bars = super::bars::histogram_bars(h, false, 1.0);
        let (l0, l1) = (levels(&first), levels(&last));
        let k = l1.len();
        Plot::new("train_codebook")
            .height(150.0)
            .allow_scroll(false)
            .show(ui, |p| {
                p.bar_chart(BarChart::new("weights", bars).color(BLUE.gamma_multiply(0.6)));
                for v in l0 {
                    p.vline(VLine::new("start", v).color(Color32::GRAY).width(1.5));
                }
                for v in l1 {
                    p.vline(VLine::new("now", v).color(ORANGE).width(2.0));
                }
            });
        ui.strong("How far each level moved from its start, per epoch");
        let start = levels(&first);
        Plot::new("train_codebook_paths")
            .height(130.0)
            .allow_scroll(false)
            .legend(Legend::default())
            .x_axis_label("epoch")
            .show(ui, |p| {
                for (j, s0) in start.iter().enumerate().take(k) {
                    let pts: Vec<[f64; 2]> = r
                        .epochs
                        .iter()
                        .filter_map(|e| {
                            e.codebooks
                                .get(li)
                                .map(|c| [e.epoch as f64, levels(c)[j] - s0])
                        })
                        .collect();
                    let c = LEVEL_COLORS[j % LEVEL_COLORS.len()];
                    p.line(
                        Line::new(format!("{s0:+.3}"), PlotPoints::from(pts))
                            .color(c)
                            .width(1.5),
                    );
                }
            });
    }
}

/// A method's name short enough for the chart's axis.
fn axis_name(method: &str) -> String {
    match method {
        "ternary TWN" => "TWN".into(),
        "ternary TTQ" => "TTQ".into(),
        "binary (XNOR)" => "binary".into(),
        m if m.starts_with("k-means ") => format!("km{}", m[8..].trim_end_matches("-bit")),
        m => m.split(':').next().unwrap_or(m).into(),
    }
}

fn pct(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

/// The running mean of the last `w` points.
fn smoothed(points: &[[f64; 2]], w: usize) -> Vec<[f64; 2]> {
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            sum += p[1];
            if i >= w {
                sum -= points[i - w][1];
            }
            [p[0], sum / (i + 1).min(w) as f64]
        })
        .collect()
}

fn default_save_path(model: &Model) -> String {
    let stem = model
        .source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or("model".into());
    std::env::temp_dir()
        .join(format!("{stem}_trained.safetensors"))
        .display()
        .to_string()
}

/// A short explanation of what the mode does, with its sources.
fn mode_note(mode: Option<Mode>) -> String {
    match mode {
        Some(Mode::Qat(s)) => match s.family {
            crate::quant::Family::Binary => "Binary: forward alpha*sign(W) with alpha = mean|W| per output channel (XNOR-Net); backward dC/dW = dC/dW~ * (1/n + alpha*1[|W| <= 1]); latent weights clipped to [-1, 1] after each step (BinaryConnect).".into(),
            crate::quant::Family::Ternary => "Ternary TWN: threshold 0.7*mean|W|, one scale per output channel = mean of the surviving |W|; gradients pass straight through (Li & Liu 2016).".into(),
            _ => format!("QAT: the forward pass uses {} fake-quantized weights; the backward pass is the straight-through estimator (gradient passed where the weight was inside the clip range, 0 where it was clamped). Epoch 0 is post-training quantization.", Mode::Qat(s).label()),
        },
        Some(Mode::Kmeans(b)) => format!("Deep Compression: {} centroids per layer, each weight keeps its centroid; the gradients of all weights of a centroid are summed and update it.", 1u32 << b),
        Some(Mode::Ttq) => "Trained ternary quantization: latent weights scaled to [-1, 1], threshold 0.05*max|w~| (t = 0.05), learned scales W^p and W^n per layer (their gradients: sums over the positive and negative weights).".into(),
        None => String::new(),
    }
}
