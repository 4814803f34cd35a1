//! The mixed-precision view: each layer's sensitivity to each candidate spec as a heat map, the size/error
//! trade-off curve with the current plan marked, a budget slider that re-solves the search as it moves,
//! pinned and excluded layers, and Export/Apply with the same engine calls as the command line.
//! Sensitivity runs in a background job (cancellable, cached per (tensor, spec)); the search itself is a
//! table lookup once the DP table is built, so the slider answers at once.

use crate::jobs::{Job, Worker};
use crate::model::Model;
use crate::nn::transformer::{tied_embedding, TIED_LABEL};
use crate::plan::apply::{apply, ApplyOptions, ApplyReport};
use crate::plan::choose::{Budget, Constraints, LayerChoice, Mixed};
use crate::plan::export::{export_plan, Target};
use crate::plan::runtime::Runtime;
use crate::plan::score::{judge, Judged};
use crate::plan::search::Solution;
use crate::plan::sensitivity::{
    compute, compute_saved, default_layers, Cache, Cell, EvalSet, Measure, Request, Sensitivity,
};
use crate::plan::{parse_candidates, short_spec, Plan};
use egui::{Color32, RichText, Ui};
use egui_plot::{Legend, Line, Plot, PlotPoints, Points};
use std::sync::Arc;

/// Candidates offered by default.
pub const DEFAULT_MIXED_CANDIDATES: &str = "int8,int4:g128,int4,int3,nvfp4,mxfp4,kmeans2";

enum Msg {
    Row(usize, Vec<Cell>),
    Done(Result<Sensitivity, String>),
    Applied(Result<ApplyReport, String>),
    Judged(Result<Judged, String>),
}

/// A layer's setting in the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerSetting {
    Auto,
    /// Pinned to this candidate (column).
    Pin(usize),
    Exclude,
}

pub struct MixedView {
    pub candidates_text: String,
    pub candidates_error: Option<String>,
    /// Measure the end-to-end effect when the model runs.
    pub end_to_end: bool,
    /// ... for the first candidate of each layer only (the probed KL).
    pub probe: bool,
    pub measure: Measure,
    pub sens: Option<Arc<Sensitivity>>,
    /// Rows arrived from the running job (for the heat map while it fills).
    pub partial: Vec<Option<Vec<Cell>>>,
    pub settings: Vec<LayerSetting>,
    /// Average bits per weight over the searched layers.
    pub budget: f64,
    pub mixed: Option<Mixed>,
    pub solution: Option<Solution>,
    pub greedy: Option<Solution>,
    pub choices: Vec<LayerChoice>,
    pub front: Vec<(f64, f64)>,
    pub error: Option<String>,
    pub message: Option<String>,
    /// The runtime the plan is for: its fused layers are tied and its sizes used.
    pub runtime: Runtime,
    /// The table the search runs on: the sensitivity, sized for the runtime.
    effective: Option<Arc<Sensitivity>>,
    /// What the runtime requires of the search over this sensitivity (ties, kept layers), derived when
    /// the search is built.
    runtime_rules: Constraints,
    /// Whether the model is a transformer that runs on text (read once per model).
    runs_text: bool,
    pub export_target: Target,
    pub export_path: String,
    pub apply_dir: String,
    pub apply_packed: bool,
    /// A plan the user asked to open in the Quantize tab (taken by the app).
    pub send_plan: Option<Plan>,
    /// A transformer's plans scored on held-out text: the budget they were scored at, and the result.
    pub judged: Option<(f64, Result<Judged, String>)>,
    judge_job: Option<(f64, Job<Msg>)>,
    cache: Cache,
    /// A sensitivity cache file (as the CLI's `--cache`): its cells are reused and the run's are saved
    /// to it. Empty for none.
    pub measurements_path: String,
    /// The file the running sensitivity job saves to (the path as it was when the job started).
    saving_to: Option<std::path::PathBuf>,
    /// The embedding tensor's name when it is also the LM head (tied), as the rows label it.
    tied_head: Option<String>,
    job: Option<Job<Msg>>,
    apply_job: Option<Job<Msg>>,
    /// What the search was built from: (sensitivity pointer, measure, settings, runtime).
    built: Option<(usize, Measure, Vec<LayerSetting>, Runtime)>,
    solved_for: Option<f64>,
    model_id: String,
    model_ptr: usize,
}

impl Default for MixedView {
    fn default() -> Self {
        MixedView {
            candidates_text: DEFAULT_MIXED_CANDIDATES.into(),
            candidates_error: None,
            end_to_end: true,
            probe: false,
            measure: Measure::WeightSqnr,
            sens: None,
            partial: Vec::new(),
            settings: Vec::new(),
            budget: 4.5,
            mixed: None,
            solution: None,
            greedy: None,
            choices: Vec::new(),
            front: Vec::new(),
            error: None,
            message: None,
            runtime: Runtime::None,
            effective: None,
            runtime_rules: Constraints::default(),
            runs_text: false,
            export_target: Target::CompressedTensors,
            export_path: "quantization_config.json".into(),
            apply_dir: "quantized_model".into(),
            apply_packed: false,
            send_plan: None,
            judged: None,
            judge_job: None,
            cache: Cache::default(),
            measurements_path: String::new(),
            saving_to: None,
            tied_head: None,
            job: None,
            apply_job: None,
            built: None,
            solved_for: None,
            model_id: String::new(),
            model_ptr: 0,
        }
    }
}

impl MixedView {
    pub fn is_computing(&self) -> bool {
        self.job.is_some()
    }

    pub fn is_applying(&self) -> bool {
        self.apply_job.is_some()
    }

    /// Start measuring every layer × candidate (cells already measured come from the cache).
    pub fn start(&mut self, model: &Arc<Model>, ctx: &egui::Context) {
        let layers = default_layers(model);
        self.tied_head = tied_embedding(model).map(|i| model.tensors[i].name.clone());
        // the runtime's candidates: refused when it cannot load them, scales as it stores them
        let dtype = crate::plan::runtime::dominant_dtype(model, &layers);
        let cands = match parse_candidates(&self.candidates_text)
            .and_then(|c| crate::plan::runtime::candidates_for(self.runtime, &c, dtype))
        {
            Ok((c, changed)) => {
                if !changed.is_empty() {
                    self.message = Some(format!(
                        "{}: scales stored in the weights' dtype ({})",
                        self.runtime.name(),
                        changed.join(", ")
                    ));
                }
                c
            }
            Err(e) => {
                self.candidates_error = Some(e);
                return;
            }
        };
        self.candidates_error = None;
        self.error = None;
        self.partial = vec![None; layers.len()];
        let (model, cache, e2e) = (model.clone(), self.cache.clone(), self.end_to_end);
        let probe = (e2e && self.probe).then_some(0);
        let file = Some(self.measurements_path.trim())
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from);
        self.saving_to = file.clone();
        let ctx = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
        self.job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
            crate::jobs::background_pool().install(|| {
                let run = || -> Result<Sensitivity, String> {
                    let eval = if e2e {
                        EvalSet::for_model(&model, None, 512).map_err(|e| e.to_string())?
                    } else {
                        None
                    };
                    // a transformer: calibration windows of the bundled text, its activations (output
                    // SQNR, importance matrix) and the float pass's kept states (end to end)
                    // a measurements file of another model is refused before the calibration pass
                    if let Some(f) = &file {
                        Cache::read_matching(f, &model, None).map_err(|e| e.to_string())?;
                    }
                    let (lm, lm_acts) = crate::plan::lm::prepare(
                        &model,
                        None,
                        128,
                        4,
                        e2e,
                        &|_| false,
                        &w.progress,
                    )?;
                    // models that run: their own calibration activations give the output-space measure
                    let acts = if e2e && eval.is_some() {
                        crate::activations::capture(&model, 512, 32).ok()
                    } else {
                        lm_acts
                    };
                    let req = Request {
                        layers,
                        candidates: cands,
                        extra: Vec::new(),
                        eval: eval.as_ref(),
                        lm: lm.as_ref(),
                        activations: acts.as_ref(),
                        probe,
                    };
                    let mut row = |r: usize, cells: &[Cell]| {
                        w.send(Msg::Row(r, cells.to_vec()));
                    };
                    match &file {
                        Some(f) => compute_saved(&model, &req, &cache, f, &w.progress, &mut row),
                        None => compute(&model, &req, &cache, &w.progress, &mut row),
                    }
                    .map_err(|e| e.to_string())
                };
                w.send(Msg::Done(run()));
            })
        }));
    }

    pub fn cancel(&mut self) {
        if let Some(j) = self.job.take() {
            j.cancel();
        }
        self.message = Some("Sensitivity cancelled".into());
    }

    fn poll(&mut self, model: &Arc<Model>) {
        let ptr = Arc::as_ptr(model) as usize;
        if ptr != self.model_ptr {
            self.model_ptr = ptr;
            let id = model.header_fingerprint();
            if id != self.model_id {
                // another model: nothing measured applies
                self.model_id = id;
                *self = MixedView {
                    candidates_text: std::mem::take(&mut self.candidates_text),
                    end_to_end: self.end_to_end,
                    probe: self.probe,
                    export_path: std::mem::take(&mut self.export_path),
                    apply_dir: std::mem::take(&mut self.apply_dir),
                    model_id: std::mem::take(&mut self.model_id),
                    model_ptr: ptr,
                    ..Default::default()
                };
            }
            self.runs_text = crate::nn::transformer::is_transformer(model);
        }
        if let Some(job) = &mut self.job {
            let mut done = None;
            for m in job.poll() {
                match m {
                    Msg::Row(r, cells) => {
                        if let Some(slot) = self.partial.get_mut(r) {
                            *slot = Some(cells);
                        }
                    }
                    Msg::Done(res) => done = Some(res),
                    Msg::Applied(_) | Msg::Judged(_) => {}
                }
            }
            if let Some(res) = done {
                self.job = None;
                match res {
                    Ok(s) => {
                        if self.cache.model != s.model
                            || self.cache.data != s.data.clone().unwrap_or_default()
                        {
                            self.cache = Cache {
                                model: s.model.clone(),
                                data: s.data.clone().unwrap_or_default(),
                                cells: Default::default(),
                                baseline: s.baseline,
                            };
                        }
                        self.cache.absorb(&s);
                        if self.settings.len() != s.layers.len()
                            || self
                                .sens
                                .as_ref()
                                .is_none_or(|o| o.candidates != s.candidates)
                        {
                            self.settings = vec![LayerSetting::Auto; s.layers.len()];
                        }
                        self.measure = s.best_measure();
                        self.sens = Some(Arc::new(s));
                        self.built = None;
                        if let Some(f) = &self.saving_to {
                            self.message = Some(format!("measurements saved to {}", f.display()));
                        }
                    }
                    Err(e) => self.error = Some(e),
                }
            } else if job.is_finished() {
                self.job = None;
            }
        }
        if let Some((budget, job)) = &mut self.judge_job {
            for m in job.poll() {
                if let Msg::Judged(r) = m {
                    self.judged = Some((*budget, r));
                }
            }
            if job.is_finished() {
                self.judge_job = None;
            }
        }
        if let Some(job) = &mut self.apply_job {
            for m in job.poll() {
                if let Msg::Applied(r) = m {
                    self.message = Some(match r {
                        Ok(rep) => format!(
                            "Applied: wrote {} files into {} ({} tensors quantized, {:.3} bits per weight)",
                            rep.files.len(),
                            rep.out.display(),
                            rep.layers.len(),
                            rep.summary.bits_per_weight
                        ),
                        Err(e) => format!("Error: {e}"),
                    });
                }
            }
            if job.is_finished() {
                self.apply_job = None;
            }
        }
    }

    /// The constraints the runtime and the settings describe.
    pub fn constraints(&self) -> Constraints {
        let mut c = self.runtime_rules.clone();
        for (r, s) in self.settings.iter().enumerate() {
            match s {
                LayerSetting::Auto => {}
                LayerSetting::Pin(k) => {
                    c.pinned.insert(r, *k);
                }
                LayerSetting::Exclude => {
                    c.excluded.insert(r);
                }
            }
        }
        c
    }

    /// Rebuild the search when its inputs changed, and re-solve when the budget moved.
    pub fn refresh(&mut self) {
        let Some(sens) = self.sens.clone() else {
            return;
        };
        let key = (
            Arc::as_ptr(&sens) as usize,
            self.measure,
            self.settings.clone(),
            self.runtime,
        );
        if self.built.as_ref() != Some(&key) {
            self.built = Some(key);
            self.solved_for = None;
            self.runtime_rules = Constraints::for_runtime(&sens, self.runtime);
            self.effective = Some(if self.runtime == Runtime::LlamaCpp {
                let mut sized = (*sens).clone();
                sized.size_for_llama_cpp();
                Arc::new(sized)
            } else {
                sens.clone()
            });
            let sens = self.effective.clone().expect("just set");
            match Mixed::new(&sens, self.measure, &self.constraints()) {
                Ok(m) => {
                    self.front = m
                        .front()
                        .iter()
                        .map(|&(b, c)| (b as f64 / m.numel.max(1) as f64, c))
                        .collect();
                    let (lo, hi) = m.bpw_range();
                    if !(lo..=hi).contains(&self.budget) {
                        // the slider steps by 0.01: stay on a step that fits
                        let lo_step = ((lo * 100.0).ceil() / 100.0).min(hi);
                        self.budget = self.budget.clamp(lo_step, hi);
                    }
                    self.mixed = Some(m);
                    self.error = None;
                }
                Err(e) => {
                    self.mixed = None;
                    self.front.clear();
                    self.error = Some(e.to_string());
                }
            }
        }
        let Some(m) = &self.mixed else {
            self.solution = None;
            self.choices.clear();
            return;
        };
        let sens = self.effective.clone().unwrap_or(sens);
        if self.solved_for != Some(self.budget) {
            self.solved_for = Some(self.budget);
            let b = Budget::BitsPerWeight(self.budget);
            self.solution = m.solve(b);
            self.greedy = m.greedy(b);
            self.choices = self
                .solution
                .as_ref()
                .map(|s| m.explain(&sens, s))
                .unwrap_or_default();
        }
    }

    /// The plan of the current solution.
    pub fn plan(&self) -> Option<(Plan, crate::plan::SummaryFile)> {
        let (m, s, sens) = (
            self.mixed.as_ref()?,
            self.solution.as_ref()?,
            self.effective.as_ref().or(self.sens.as_ref())?,
        );
        let (mut plan, summary) = m.plan(sens, s, Budget::BitsPerWeight(self.budget));
        plan.target = self.runtime;
        Some((plan, summary))
    }

    /// Export the current plan to `export_path` (the same call as `quantscope export`).
    pub fn export_now(&mut self, model: &Model) {
        let Some((plan, _)) = self.plan() else {
            self.message = Some("Error: no plan yet: compute the sensitivity first".into());
            return;
        };
        let path = std::path::PathBuf::from(&self.export_path);
        self.message = Some(match export_plan(&plan, model, self.export_target, false) {
            Ok((ex, _)) => match crate::model::write_atomic(&path, &ex.text) {
                Ok(()) => format!(
                    "Exported to {} ({}); {} tensors not exact: {}",
                    path.display(),
                    self.export_target.name(),
                    ex.notes().len(),
                    ex.notes().first().cloned().unwrap_or_default()
                ),
                Err(e) => format!("Error: {}: {e}", path.display()),
            },
            Err(e) => format!("Error: {e}"),
        });
    }

    pub fn is_judging(&self) -> bool {
        self.judge_job.is_some()
    }

    /// Score the current plan, greedy's and every uniform candidate on a transformer's held-out text (8
    /// windows of 256 tokens of the bundled text, the half never used to calibrate), in the background.
    pub fn judge_now(&mut self, model: &Arc<Model>, ctx: &egui::Context) {
        let (Some((plan, _)), Some(m), Some(sens)) =
            (self.plan(), self.mixed.as_ref(), self.effective.clone())
        else {
            self.message = Some("Error: no plan yet: compute the sensitivity first".into());
            return;
        };
        let mut named = vec![(
            "searched plan".to_string(),
            self.solution
                .as_ref()
                .map_or(f64::NAN, |s| m.bits_per_weight(s)),
            plan,
        )];
        if let Some(g) = &self.greedy {
            named.push((
                "greedy plan".into(),
                m.bits_per_weight(g),
                m.plan(&sens, g, Budget::BitsPerWeight(self.budget)).0,
            ));
        }
        for (spec, bpw, p) in m.uniform_plans(&sens) {
            named.push((format!("uniform {}", short_spec(&spec)), bpw, p));
        }
        let model = model.clone();
        let ctx = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
        let job = Job::spawn(wake, move |w: &Worker<Msg>| {
            let r = crate::jobs::background_pool()
                .install(|| judge(&model, &named, None, 256, 8, &w.progress));
            w.send(Msg::Judged(r.map_err(|e| e.to_string())));
        });
        self.judge_job = Some((self.budget, job));
    }

    /// Apply the current plan into `apply_dir` in the background (the same call as `quantscope apply`).
    pub fn apply_now(&mut self, model: &Arc<Model>, ctx: &egui::Context) {
        let Some((plan, _)) = self.plan() else {
            self.message = Some("Error: no plan yet: compute the sensitivity first".into());
            return;
        };
        let (model, dir, packed) = (
            model.clone(),
            std::path::PathBuf::from(&self.apply_dir),
            self.apply_packed,
        );
        let ctx = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
        self.message = Some(format!("Applying into {}…", dir.display()));
        self.apply_job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
            let r = crate::jobs::background_pool().install(|| {
                apply(
                    &model,
                    &plan,
                    &dir,
                    &ApplyOptions { packed },
                    &w.progress,
                    &mut |_| {},
                )
            });
            w.send(Msg::Applied(r.map_err(|e| e.to_string())));
        }));
    }

    pub fn ui(&mut self, ui: &mut Ui, model: Option<Arc<Model>>) {
        let Some(model) = model else {
            egui::CentralPanel::default().show(ui, |ui| {
                ui.label("Open a model in the Model view first.");
            });
            return;
        };
        let ctx = ui.ctx().clone();
        self.poll(&model);
        self.refresh();
        if self.job.is_some() || self.apply_job.is_some() {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
        egui::Panel::top("mixed_controls").show(ui, |ui| self.controls_ui(ui, &model));
        egui::Panel::left("mixed_heat")
            .resizable(true)
            .default_size(520.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.heat_ui(ui));
            });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                self.curve_ui(ui);
                ui.separator();
                self.plan_ui(ui, &model);
            });
        });
    }

    fn controls_ui(&mut self, ui: &mut Ui, model: &Arc<Model>) {
        ui.horizontal(|ui| {
            let l = ui.label("Candidates");
            ui.add(egui::TextEdit::singleline(&mut self.candidates_text).desired_width(360.0))
                .labelled_by(l.id)
                .on_hover_text("Comma-separated specs every layer may get, e.g. int8,int4:g128,nvfp4,mxfp4");
            let l = ui.label("Measurements file");
            ui.add(egui::TextEdit::singleline(&mut self.measurements_path).desired_width(200.0).hint_text("none"))
                .labelled_by(l.id)
                .on_hover_text("A sensitivity cache (as `quantscope sensitivity --cache FILE`): cells measured in it are reused, and this run's are saved to it");
            ui.checkbox(&mut self.end_to_end, "End to end")
                .on_hover_text("For models that run: also measure the network's outputs on calibration rows (not the held-out split)");
            ui.add_enabled(self.end_to_end, egui::Checkbox::new(&mut self.probe, "Probe"))
                .on_hover_text("Run the model for the first candidate of each layer only, and carry its KL to the layer's other candidates by their output error: one pass per layer instead of one per cell (the probed_kl measure)");
            if self.job.is_some() {
                if ui.button("Cancel").clicked() {
                    self.cancel();
                }
            } else if ui
                .button("Compute sensitivity")
                .on_hover_text("Quantize each layer alone with each candidate (cells already measured are reused)")
                .clicked()
            {
                self.start(model, ui.ctx());
            }
            if let Some(j) = &self.job {
                ui.add(egui::ProgressBar::new(j.progress.fraction()).desired_width(180.0).show_percentage());
            }
            if let Some(s) = &self.sens {
                let avail = s.available();
                let before = self.measure;
                egui::ComboBox::new("mixed_measure", "Measure")
                    .selected_text(self.measure.name())
                    .show_ui(ui, |ui| {
                        for m in avail {
                            ui.selectable_value(&mut self.measure, m, m.name()).on_hover_text(m.label());
                        }
                    });
                if before != self.measure {
                    self.built = None;
                }
                egui::ComboBox::new("mixed_runtime", "Runtime")
                    .selected_text(self.runtime.name())
                    .show_ui(ui, |ui| {
                        for r in [Runtime::None, Runtime::Vllm, Runtime::LlamaCpp] {
                            ui.selectable_value(&mut self.runtime, r, r.name());
                        }
                    })
                    .response
                    .on_hover_text("vllm: the layers it fuses share one spec and embeddings are kept; llama.cpp: sizes of the GGML types it really stores");
            }
        });
        if let Some(e) = &self.candidates_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if let Some(m) = &self.mixed {
            let (lo, hi) = m.bpw_range();
            ui.horizontal(|ui| {
                let l = ui.label("Budget (bits per weight)");
                ui.add(egui::Slider::new(&mut self.budget, lo..=hi).step_by(0.01).fixed_decimals(2))
                    .labelled_by(l.id)
                    .on_hover_text("Average stored bits per weight over the searched layers; the exact search re-runs as it moves");
                if let Some(s) = &self.solution {
                    ui.label(RichText::new(format!(
                        "plan: {:.3} bits per weight, cost {:.4e}",
                        m.bits_per_weight(s),
                        s.cost
                    )).strong());
                    if let Some(g) = &self.greedy {
                        let gap = if s.cost > 0.0 { g.cost / s.cost - 1.0 } else { 0.0 };
                        ui.label(if gap > 1e-9 {
                            format!("greedy: {:+.1} % above the optimum", 100.0 * gap)
                        } else {
                            "greedy finds the same".into()
                        });
                    }
                } else {
                    ui.colored_label(ui.visuals().error_fg_color, "nothing fits this budget");
                }
            });
        }
        for (text, err) in [(&self.error, true), (&self.message, false)] {
            if let Some(t) = text {
                let c = if err || t.starts_with("Error") {
                    ui.visuals().error_fg_color
                } else {
                    ui.visuals().text_color()
                };
                ui.colored_label(c, t);
            }
        }
    }

    /// A layer's name with [`TIED_LABEL`] on the embedding that is also the LM head.
    fn shown_name(&self, name: &str) -> String {
        if self.tied_head.as_deref() == Some(name) {
            format!("{name} {TIED_LABEL}")
        } else {
            name.to_string()
        }
    }

    /// The chosen cell of each row, if solved.
    fn chosen(&self) -> Vec<Option<usize>> {
        match (&self.mixed, &self.solution, &self.sens) {
            (Some(m), Some(s), Some(sens)) => m.chosen_cells(sens, s),
            _ => Vec::new(),
        }
    }

    fn heat_ui(&mut self, ui: &mut Ui) {
        let (names, cands, rows): (Vec<String>, Vec<String>, Vec<Option<Vec<Cell>>>) = match &self
            .sens
        {
            Some(s) if self.job.is_none() => (
                s.layers.iter().map(|l| l.name.clone()).collect(),
                s.candidates.clone(),
                s.cells.iter().cloned().map(Some).collect(),
            ),
            _ if !self.partial.is_empty() => {
                let cands = parse_candidates(&self.candidates_text).unwrap_or_default();
                (
                    (0..self.partial.len())
                        .map(|i| format!("layer {i}"))
                        .collect(),
                    cands.iter().map(|c| c.to_string()).collect(),
                    self.partial.clone(),
                )
            }
            _ => {
                ui.label("Compute the sensitivity to see each layer's error under each candidate.");
                return;
            }
        };
        let m = self.measure;
        ui.label(
            RichText::new(format!(
                "Sensitivity: {} when only that layer is quantized (green: small error)",
                match m {
                    Measure::EndToEnd => "KL of the outputs",
                    Measure::ProbedKl => "KL scaled from each layer's probe",
                    Measure::OutputSqnr => "output SQNR",
                    Measure::Imatrix => "importance-weighted SQNR",
                    Measure::WeightSqnr => "weight SQNR",
                }
            ))
            .strong(),
        );
        if let Some(s) = self.sens.as_ref().filter(|_| self.job.is_none()) {
            agreement_ui(ui, s);
        }
        // quality in dB of the cost: higher is better, whatever the measure
        let q = |c: &Cell| {
            c.cost(m)
                .map(|v| if v > 0.0 { -10.0 * v.log10() } else { 200.0 })
        };
        let vals: Vec<f64> = rows
            .iter()
            .flatten()
            .flatten()
            .filter_map(q)
            .filter(|v| *v < 200.0)
            .collect();
        let (lo, hi) = vals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let chosen = self.chosen();
        let (name_w, cell_w, cell_h) = (230.0f32, 52.0f32, 16.0f32);
        let size = egui::vec2(
            name_w + cell_w * cands.len() as f32,
            cell_h * (rows.len() + 1) as f32,
        );
        let (resp, painter) = ui.allocate_painter(size, egui::Sense::hover());
        let o = resp.rect.min;
        let font = egui::FontId::proportional(11.0);
        let text_c = ui.visuals().text_color();
        for (k, c) in cands.iter().enumerate() {
            painter.text(
                o + egui::vec2(name_w + cell_w * (k as f32 + 0.5), cell_h * 0.5),
                egui::Align2::CENTER_CENTER,
                short_spec(c),
                font.clone(),
                text_c,
            );
        }
        let mut hovered = None;
        for (r, row) in rows.iter().enumerate() {
            let y = cell_h * (r + 1) as f32;
            let name = names[r].strip_suffix(".weight").unwrap_or(&names[r]);
            let name = if self.tied_head.as_ref() == Some(&names[r]) {
                format!("{name} = LM head")
            } else {
                name.to_string()
            };
            let shown = if name.len() > 34 {
                format!("…{}", &name[name.len() - 33..])
            } else {
                name.to_string()
            };
            painter.text(
                o + egui::vec2(0.0, y + cell_h * 0.5),
                egui::Align2::LEFT_CENTER,
                shown,
                font.clone(),
                text_c,
            );
            let Some(row) = row else { continue };
            for (k, cell) in row.iter().take(cands.len()).enumerate() {
                let rect = egui::Rect::from_min_size(
                    o + egui::vec2(name_w + cell_w * k as f32, y),
                    egui::vec2(cell_w - 1.0, cell_h - 1.0),
                );
                let color = match q(cell) {
                    Some(v) => ramp(if hi > lo {
                        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
                    } else {
                        1.0
                    }),
                    None => Color32::DARK_GRAY,
                };
                painter.rect_filled(rect, 1.0, color);
                if chosen.get(r).copied().flatten() == Some(k) {
                    painter.rect_stroke(
                        rect,
                        1.0,
                        egui::Stroke::new(2.0, text_c),
                        egui::StrokeKind::Inside,
                    );
                }
                if resp.hover_pos().is_some_and(|p| rect.contains(p)) {
                    hovered = Some((r, k));
                }
            }
        }
        if let (Some((r, k)), Some(s)) = (hovered, &self.sens) {
            let c = &s.cells[r][k];
            resp.on_hover_text(format!(
                "{}\n{}: {:.3} bits/w, weight SQNR {:.2} dB{}",
                self.shown_name(&s.layers[r].name),
                short_spec(&c.spec),
                c.bits_per_weight,
                c.weight_sqnr_db(),
                c.end_to_end
                    .map(|e| format!(", KL {:.5}, accuracy {:.4}", e.kl, e.accuracy))
                    .or(c.probed_kl.map(|k| format!(", probed KL {k:.5}")))
                    .unwrap_or_default()
            ));
        }
        if let Some(s) = self.sens.clone() {
            ui.separator();
            ui.label(RichText::new("Layers: search, pin or keep").strong());
            let mut changed = false;
            let shown: Vec<String> = s.layers.iter().map(|l| self.shown_name(&l.name)).collect();
            let (ties, kept) = (&self.runtime_rules.ties, &self.runtime_rules.excluded);
            egui::Grid::new("mixed_layers")
                .striped(true)
                .show(ui, |ui| {
                    for (r, name) in shown.iter().enumerate() {
                        let tie = ties.iter().find(|(_, rows)| rows.contains(&r));
                        let cur = self.settings[r];
                        let text = match cur {
                            LayerSetting::Auto => "search".to_string(),
                            LayerSetting::Pin(k) => format!("pin {}", short_spec(&s.candidates[k])),
                            LayerSetting::Exclude => "keep".to_string(),
                        };
                        egui::ComboBox::new(("mixed_setting", r), name)
                            .selected_text(text)
                            .show_ui(ui, |ui| {
                                changed |= ui
                                    .selectable_value(
                                        &mut self.settings[r],
                                        LayerSetting::Auto,
                                        "search",
                                    )
                                    .changed();
                                for (k, c) in s.candidates.iter().enumerate() {
                                    changed |= ui
                                        .selectable_value(
                                            &mut self.settings[r],
                                            LayerSetting::Pin(k),
                                            format!("pin {}", short_spec(c)),
                                        )
                                        .changed();
                                }
                                changed |= ui
                                    .selectable_value(
                                        &mut self.settings[r],
                                        LayerSetting::Exclude,
                                        "keep",
                                    )
                                    .changed();
                            });
                        if let Some((g, _)) = tie {
                            ui.weak(format!("tied: {g}"));
                        } else if kept.contains(&r) {
                            ui.weak(format!(
                                "kept: {} does not quantize embedding tables",
                                self.runtime.name()
                            ));
                        }
                        ui.end_row();
                    }
                });
            if changed {
                // a tied layer's setting is its group's
                let before = self.built.as_ref().map(|b| b.2.clone()).unwrap_or_default();
                for (_, rows) in &self.runtime_rules.ties {
                    if let Some(&r) = rows
                        .iter()
                        .find(|&&r| before.get(r) != Some(&self.settings[r]))
                    {
                        let v = self.settings[r];
                        for &m in rows {
                            self.settings[m] = v;
                        }
                    }
                }
                self.refresh();
            }
        }
    }

    fn curve_ui(&mut self, ui: &mut Ui) {
        if self.front.is_empty() {
            return;
        }
        let m = self.mixed.as_ref().expect("a front comes from a search");
        let log = |c: f64| c.max(1e-30).log10();
        let pts: Vec<[f64; 2]> = self.front.iter().map(|&(b, c)| [b, log(c)]).collect();
        let current = self
            .solution
            .as_ref()
            .map(|s| [m.bits_per_weight(s), log(s.cost)]);
        let greedy = self
            .greedy
            .as_ref()
            .map(|s| [m.bits_per_weight(s), log(s.cost)]);
        ui.label(
            RichText::new(
                "Trade-off: every plan no other beats in both size and error (click to pick one)",
            )
            .strong(),
        );
        let budget = self.budget;
        let resp = Plot::new("mixed_front")
            .height(240.0)
            .allow_scroll(false)
            .x_axis_label("bits per weight")
            .y_axis_label("log10 total cost")
            .legend(Legend::default())
            .show(ui, |p| {
                p.line(
                    Line::new("Pareto front", PlotPoints::from(pts.clone()))
                        .color(Color32::from_rgb(97, 175, 239)),
                );
                p.vline(egui_plot::VLine::new("budget", budget).color(Color32::GRAY));
                if let Some(g) = greedy {
                    p.points(
                        Points::new("greedy", vec![g])
                            .radius(5.0)
                            .color(Color32::from_rgb(229, 140, 60)),
                    );
                }
                if let Some(c) = current {
                    p.points(
                        Points::new("this plan", vec![c])
                            .radius(6.0)
                            .color(Color32::from_rgb(152, 195, 121)),
                    );
                }
                p.pointer_coordinate()
            });
        if resp.response.clicked() {
            if let Some(pc) = resp.inner {
                // the front point nearest the click (in bits)
                if let Some(&(b, _)) = self
                    .front
                    .iter()
                    .min_by(|a, b| (a.0 - pc.x).abs().total_cmp(&(b.0 - pc.x).abs()))
                {
                    self.budget = b;
                    self.refresh();
                }
            }
        }
    }

    fn plan_ui(&mut self, ui: &mut Ui, model: &Arc<Model>) {
        if self.choices.is_empty() {
            return;
        }
        ui.horizontal(|ui| {
            egui::ComboBox::new("mixed_export_to", "Export to")
                .selected_text(self.export_target.name())
                .show_ui(ui, |ui| {
                    ui.selectable_value(
                        &mut self.export_target,
                        Target::CompressedTensors,
                        "compressed-tensors",
                    );
                    ui.selectable_value(&mut self.export_target, Target::LlamaCpp, "llama.cpp");
                });
            let l = ui.label("Export file");
            ui.add(egui::TextEdit::singleline(&mut self.export_path).desired_width(220.0))
                .labelled_by(l.id);
            if ui
                .button("Export")
                .on_hover_text("Write the plan in that tool's format (as `quantscope export`)")
                .clicked()
            {
                self.export_now(model);
            }
        });
        ui.horizontal(|ui| {
            let l = ui.label("Apply into folder");
            ui.add(egui::TextEdit::singleline(&mut self.apply_dir).desired_width(220.0)).labelled_by(l.id);
            ui.checkbox(&mut self.apply_packed, "packed form");
            let busy = self.apply_job.is_some();
            if ui
                .add_enabled(!busy, egui::Button::new("Apply"))
                .on_hover_text("Write the quantized model, its config and tokenizer, the plan and a report (as `quantscope apply`)")
                .clicked()
            {
                self.apply_now(model, ui.ctx());
            }
            if let Some(j) = &self.apply_job {
                ui.add(egui::ProgressBar::new(j.progress.fraction()).desired_width(140.0));
            }
            if ui.button("Open in Quantize tab").on_hover_text("Edit this plan layer by layer in the workbench").clicked() {
                self.send_plan = self.plan().map(|p| p.0);
            }
        });
        if self.runs_text {
            self.judged_ui(ui, model);
        }
        ui.separator();
        ui.label(RichText::new("The plan, and why each layer got its spec").strong());
        for c in &self.choices {
            ui.horizontal(|ui| {
                ui.label(RichText::new(self.shown_name(&c.name)).strong());
                ui.label(format!(
                    "{}  ({:.3} bits per weight)",
                    short_spec(&c.spec),
                    c.bits_per_weight
                ));
            });
            ui.add(egui::Label::new(RichText::new(&c.why).weak()).wrap());
        }
    }
}

/// Each measure's rank agreement with the end-to-end KL, over all cells and within each candidate's
/// column (which layers hurt most under that spec), when the end-to-end measure was taken.
fn agreement_ui(ui: &mut Ui, s: &Sensitivity) {
    if !s.available().contains(&Measure::EndToEnd) {
        return;
    }
    let others = [Measure::WeightSqnr, Measure::Imatrix, Measure::OutputSqnr];
    ui.label("Rank agreement with the end-to-end KL (Spearman); where they differ, the end-to-end measure is what the model feels:")
        .on_hover_text("Over all cells, the spread between candidates inflates agreement; within a candidate it says whether a measure finds the layers that hurt most");
    egui::Grid::new("mixed_agreement").show(ui, |ui| {
        ui.label("");
        ui.label("all cells");
        for c in &s.candidates {
            ui.label(short_spec(c));
        }
        ui.end_row();
        for m in others {
            let Some(all) = s.agreement(m, Measure::EndToEnd) else {
                continue;
            };
            ui.label(m.label());
            ui.label(format!("{all:.2}"));
            for c in 0..s.candidates.len() {
                ui.label(
                    s.agreement_within(m, Measure::EndToEnd, c)
                        .map(|r| format!("{r:.2}"))
                        .unwrap_or_default(),
                );
            }
            ui.end_row();
        }
    });
}

impl MixedView {
    /// The plan beside greedy's and the uniform candidates, measured on held-out text.
    fn judged_ui(&mut self, ui: &mut Ui, model: &Arc<Model>) {
        ui.separator();
        ui.horizontal(|ui| {
            let busy = self.judge_job.is_some();
            if ui
                .add_enabled(!busy, egui::Button::new("Score on text"))
                .on_hover_text("Run the model with this plan, greedy's and each uniform candidate on held-out text (the half never used to calibrate) and compare with float")
                .clicked()
            {
                self.judge_now(model, ui.ctx());
            }
            if let Some((_, j)) = &self.judge_job {
                ui.add(egui::ProgressBar::new(j.progress.fraction()).desired_width(160.0).show_percentage());
            }
        });
        let Some((budget, r)) = &self.judged else {
            return;
        };
        let j = match r {
            Ok(j) => j,
            Err(e) => {
                ui.colored_label(ui.visuals().error_fg_color, format!("Error: {e}"));
                return;
            }
        };
        if (*budget - self.budget).abs() > 1e-9 {
            ui.weak(format!(
                "scored at a budget of {budget:.2} bits per weight (the slider has moved since)"
            ));
        }
        ui.label(format!(
            "On {}: float perplexity {:.3}",
            j.describe, j.float_perplexity
        ));
        egui::Grid::new("mixed_judged")
            .striped(true)
            .show(ui, |ui| {
                for h in ["plan", "bits/w", "perplexity", "mean KL", "same top-1", ""] {
                    ui.label(RichText::new(h).strong());
                }
                ui.end_row();
                for (name, bpw, c) in &j.rows {
                    ui.label(name);
                    ui.label(format!("{bpw:.3}"));
                    ui.label(format!("{:.3}", c.perplexity()));
                    ui.label(format!("{:.4}", c.mean_kl()));
                    ui.label(format!("{:.1} %", 100.0 * c.top_agreement()));
                    ui.label(if *bpw > budget + 1e-9 {
                        "over the budget"
                    } else {
                        ""
                    });
                    ui.end_row();
                }
            });
    }
}

/// Red (worst) through yellow to green (best).
fn ramp(t: f64) -> Color32 {
    let t = t as f32;
    let (r, g) = if t < 0.5 {
        (1.0, t * 2.0)
    } else {
        (2.0 - t * 2.0, 1.0)
    };
    Color32::from_rgb((60.0 + 170.0 * r) as u8, (60.0 + 150.0 * g) as u8, 70)
}
