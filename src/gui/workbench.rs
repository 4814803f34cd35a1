//! The quantization workbench: a model-wide default spec and per-layer overrides, and for the selected
//! layer its histogram with the quantization grid, every clip method's threshold and the quantized
//! values overlaid, the error histogram, the k-means palette, and a comparison of candidate formats;
//! across the model, SQNR per layer and the size under the plan. Reports come from a background job
//! and are cached per (tensor, spec); the panel only draws them.

use crate::formats::fmt_short;
use crate::jobs::{Job, Worker};
use crate::model::Model;
use crate::plan::editor::PlanEditor;
use crate::plan::runtime::Runtime;
use crate::plan::{Choice, Plan};
use crate::quant::report::{
    clip_lines_until, layer_report_with, original_histogram, report_levels, ClipBasis, ClipLines,
    LayerReport,
};
use crate::quant::Spec;
use egui::{Color32, RichText, Ui};
use egui_plot::{Bar, BarChart, Legend, Plot, VLine};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const BINS: usize = 96;

/// Specs the comparison offers by default.
pub const DEFAULT_CANDIDATES: &[&str] = &[
    "int8",
    "int4:g128",
    "fp8_e4m3",
    "nvfp4",
    "mxfp4",
    "nf4",
    "kmeans4",
    "ternary",
];

/// Quick choices for the spec editor.
const PRESETS: &[&str] = &[
    "none",
    "int8",
    "int4:g128",
    "uint4:g64:clip=mse",
    "fp8_e4m3",
    "mxfp4",
    "nvfp4",
    "nf4",
    "kmeans4",
    "ternary",
];

type Key = (usize, Spec);
/// An item of a job's list: a report (tensor, spec), or with `true` clip lines (tensor, clip family).
type Item = (Key, bool);

/// One tensor's values and original histogram, kept between background jobs (one tensor at a time,
/// the last one a job read), so a spec toggle neither reads nor histograms the tensor again.
struct TensorCache {
    model: String,
    t: usize,
    x: Arc<Vec<f32>>,
    original: Option<crate::stats::Histogram>,
    /// what its clip lines need from the values, for any format
    clip_basis: Arc<ClipBasis>,
}

type SharedTensor = Arc<std::sync::Mutex<Option<TensorCache>>>;

enum Msg {
    Report(Key, Arc<LayerReport>),
    Clip(Key, Arc<ClipLines>),
    Failed(Key, String),
    Group((usize, Spec, usize), crate::stats::Histogram),
    /// (plan signature, float accuracy, accuracy under the plan, examples)
    Accuracy(String, f64, f64, usize),
}

/// Undoable state: the plan's default and overrides.
pub struct Workbench {
    /// The plan being edited, with its undo history.
    pub editor: PlanEditor,
    pub default_text: String,
    pub default_error: Option<String>,
    /// The spec text of the selected tensor (its override, or what it resolves to).
    pub layer_text: String,
    pub layer_error: Option<String>,
    /// The structured controls for the selected layer's spec.
    pub draft: super::spec_editor::SpecDraft,
    /// Tensor index of the selected weight.
    pub selected: Option<usize>,
    pub group: usize,
    pub log_counts: bool,
    pub worst_first: bool,
    /// Rows picked with Ctrl+click for a bulk edit (tensor indices).
    pub picked: std::collections::BTreeSet<usize>,
    /// Where the plan of each model is kept between runs (`None`: not kept, as in tests).
    pub autosave_dir: Option<std::path::PathBuf>,
    last_saved: String,
    model_ptr: usize,
    last_model_fp: String,
    /// The chosen group's own histogram: (tensor, spec, group) and the histogram of its values.
    pub group_hist: Option<((usize, Spec, usize), crate::stats::Histogram)>,
    group_job: Option<Job<Msg>>,
    pub bulk_pattern: String,
    pub bulk_error: Option<String>,
    pub candidates: Vec<String>,
    pub plan_path: String,
    pub message: Option<String>,
    pub reports: HashMap<Key, Arc<LayerReport>>,
    pub clips: HashMap<Key, Arc<ClipLines>>,
    pub failures: HashMap<Key, String>,
    job: Option<Job<Msg>>,
    /// The selected layer's report under its current spec, and its clip lines: what a spec toggle
    /// changes and the person is waiting for. A job of its own on the foreground pool, so it never
    /// waits behind the background list (candidates, other layers), which runs at low priority.
    front_job: Option<Job<Msg>>,
    front_wants: (Option<Key>, Option<Key>),
    /// With `QUANTSCOPE_TRACE`: the spec whose plots were last drawn, and whether with clip lines.
    traced_drawn: Option<(Key, bool)>,
    /// What the running job was asked to compute, so a plan change can tell whether to restart it.
    job_wants: Vec<Item>,
    /// Messages received from the running job: the index of the item it is working on.
    job_done: usize,
    /// For runnable sample models: (plan signature, float accuracy, accuracy under the plan, examples).
    pub accuracy: Option<(String, f64, f64, usize)>,
    /// The plan as JSON, with the fingerprint of the edits it was made from.
    plan_json: (Option<u64>, String),
    acc_job: Option<Job<Msg>>,
    /// The model the caches belong to (its fingerprint).
    model_id: String,
    tensor_cache: SharedTensor,
}

impl Default for Workbench {
    fn default() -> Self {
        let plan = Plan::default();
        Workbench {
            default_text: plan.default.text(),
            editor: PlanEditor::default(),
            default_error: None,
            layer_text: String::new(),
            layer_error: None,
            draft: super::spec_editor::SpecDraft::from_spec(None),
            selected: None,
            group: 0,
            log_counts: false,
            worst_first: false,
            picked: std::collections::BTreeSet::new(),
            autosave_dir: None,
            last_saved: String::new(),
            model_ptr: 0,
            last_model_fp: String::new(),
            group_hist: None,
            group_job: None,
            bulk_pattern: String::new(),
            bulk_error: None,
            candidates: DEFAULT_CANDIDATES.iter().map(|s| s.to_string()).collect(),
            plan_path: "plan.json".into(),
            message: None,
            reports: HashMap::new(),
            clips: HashMap::new(),
            failures: HashMap::new(),
            job: None,
            front_job: None,
            front_wants: (None, None),
            traced_drawn: None,
            job_wants: Vec::new(),
            job_done: 0,
            accuracy: None,
            plan_json: (None, String::new()),
            acc_job: None,
            model_id: String::new(),
            tensor_cache: SharedTensor::default(),
        }
    }
}

/// The tensors the workbench lists: the quantizable weights (float, two or more dimensions). Plans can
/// still name other tensors, and the CLI quantizes a 1-D tensor when `--layers` asks for it.
fn listed(model: &Model) -> Vec<usize> {
    let mut v: Vec<usize> = (0..model.tensors.len())
        .filter(|&i| model.tensors[i].quantizable())
        .collect();
    v.sort_by(|&a, &b| crate::model::natural_cmp(&model.tensors[a].name, &model.tensors[b].name));
    v
}

impl Workbench {
    /// The resolved spec of a tensor under the current plan (None: kept as it is).
    pub fn spec_of(&self, model: &Model, t: usize) -> Option<Spec> {
        let info = &model.tensors[t];
        match self.plan().resolve(&info.name, info.quantizable()).0 {
            Choice::Quantize(s) => Some(s),
            Choice::Keep => None,
        }
    }

    pub fn report(&self, t: usize, spec: &Spec) -> Option<&Arc<LayerReport>> {
        self.reports.get(&(t, *spec))
    }

    /// The clip lines drawn for tensor `t` under `spec`, once computed.
    pub fn clip_lines(&self, t: usize, spec: &Spec) -> Option<&Arc<ClipLines>> {
        self.clips.get(&(t, clip_family(spec)))
    }

    /// The plan being edited.
    pub fn plan(&self) -> &Plan {
        self.editor.plan()
    }

    /// Replace the plan as one undo step (a loaded file, a plan sent from the mixed-precision view).
    pub fn replace_plan(&mut self, plan: Plan) {
        self.editor.replace(plan);
        self.default_text = self.plan().default.text();
    }

    pub fn undo(&mut self) -> bool {
        let done = self.editor.undo();
        self.default_text = self.plan().default.text();
        done
    }

    pub fn redo(&mut self) -> bool {
        let done = self.editor.redo();
        self.default_text = self.plan().default.text();
        done
    }

    /// Set the model-wide default from text; a bad spec leaves the plan as it was and says why.
    pub fn set_default(&mut self, text: &str) -> Result<(), String> {
        self.editor.set_default(text)?;
        self.default_text = self.plan().default.text();
        Ok(())
    }

    /// Override one tensor (by name).
    pub fn set_layer(&mut self, name: &str, text: &str) -> Result<(), String> {
        crate::jobs::trace(format_args!("set {name} to {text}"));
        self.editor
            .set_names(&[name.to_string()], text, "set in the workbench")
            .map(|_| ())
    }

    /// Set every listed tensor whose name matches `pattern` (a regular expression) or whose layer role
    /// is `pattern` (linear, conv, embedding, lm_head). Returns how many were set.
    pub fn set_matching(
        &mut self,
        model: &Model,
        pattern: &str,
        text: &str,
    ) -> Result<usize, String> {
        Choice::parse(text)?;
        let layers = crate::model::group_layers(&model.tensors);
        let role_of = |t: usize| {
            layers
                .iter()
                .find(|l| l.weight == Some(t))
                .map(|l| l.role.as_str())
        };
        let re = regex::Regex::new(pattern)
            .map_err(|e| format!("'{pattern}' is not a valid regular expression: {e}"))?;
        let names: Vec<String> = listed(model)
            .into_iter()
            .filter(|&t| {
                role_of(t) == Some(pattern)
                    || (model.tensors[t].quantizable() && re.is_match(&model.tensors[t].name))
            })
            .map(|t| model.tensors[t].name.clone())
            .collect();
        if names.is_empty() {
            return Err(format!("no quantizable tensor matches '{pattern}'"));
        }
        self.editor
            .set_names(&names, text, &format!("bulk edit: {pattern}"))
    }

    /// Size of the model under the plan: (bytes of quantized tensors as planned + other tensors as they
    /// are, bytes as they are, known: whether every planned report is in).
    pub fn size(&self, model: &Model) -> (u64, u64, bool) {
        let mut planned = 0u64;
        let mut original = 0u64;
        let mut known = true;
        for t in 0..model.tensors.len() {
            let info = &model.tensors[t];
            original += info.nbytes() as u64;
            match self.spec_of(model, t) {
                Some(s) if info.is_float() && info.numel() > 0 => match self.report(t, &s) {
                    Some(r) => planned += r.metrics.bytes,
                    None => {
                        known = false;
                        planned += info.nbytes() as u64;
                    }
                },
                _ => planned += info.nbytes() as u64,
            }
        }
        (planned, original, known)
    }

    /// Everything the view needs that is not cached yet, the selected layer first: its report, the
    /// candidates' reports and clip lines (so that choosing one shows both at once), then the other
    /// layers' reports. The selected spec's clip lines are the front job's.
    fn wanted(&self, model: &Model) -> Vec<Item> {
        let mut out: Vec<Item> = Vec::new();
        let mut seen = HashSet::new();
        let mut push = |k: Key, clip: bool, out: &mut Vec<Item>| {
            let done = if clip {
                self.clips.contains_key(&k)
            } else {
                self.reports.contains_key(&k)
            };
            if !done && !self.failures.contains_key(&k) && seen.insert((k, clip)) {
                out.push((k, clip));
            }
        };
        if let Some(t) = self.selected {
            let own = self.spec_of(model, t);
            if let Some(s) = &own {
                push((t, *s), false, &mut out);
            }
            let candidates: Vec<Spec> = self
                .candidates
                .iter()
                .filter_map(|c| Spec::parse(c).ok())
                .collect();
            let own_lines = own.as_ref().map(clip_family);
            for s in &candidates {
                push((t, *s), false, &mut out);
                let family = clip_family(s);
                if own_lines.as_ref() != Some(&family) {
                    push((t, family), true, &mut out);
                }
            }
            // the clip lines one bit either side of the selected integer format: the likeliest
            // next edit (a clip method of its own shares the format's lines)
            if let Some(s) = &own {
                for n in bits_either_side(s) {
                    push((t, clip_family(&n)), true, &mut out);
                }
            }
        }
        for t in listed(model) {
            if let Some(s) = self.spec_of(model, t) {
                push((t, s), false, &mut out);
            }
        }
        out
    }

    /// Whether the selected layer's report or clip lines under its current spec are being computed.
    pub fn front_busy(&self) -> bool {
        self.front_job.is_some()
    }

    /// Keep the background job working on what the view needs now; called every frame.
    pub fn schedule(&mut self, model: &Arc<Model>, ctx: &egui::Context) {
        let ptr = Arc::as_ptr(model) as usize;
        if ptr != self.model_ptr {
            self.model_ptr = ptr;
            self.model_id = model.header_fingerprint();
        }
        let fp = self.model_id.clone();
        if fp != self.last_model_fp {
            // another model: nothing cached applies; its plan from the last session comes back
            self.last_model_fp = fp;
            self.restore_autosaved(model);
            self.picked.clear();
            self.group_hist = None;
            self.reports.clear();
            self.clips.clear();
            self.failures.clear();
            self.selected = listed(model)
                .into_iter()
                .find(|&t| model.tensors[t].quantizable());
            self.sync_layer_text(model);
            self.job = None;
            self.front_job = None;
            if let Ok(mut c) = self.tensor_cache.lock() {
                *c = None;
            }
            // the reusable output buffers were sized for the last model's tensors
            crate::quant::buffers::release();
        }
        let mut messages = Vec::new();
        if let Some(job) = &mut self.front_job {
            messages.extend(job.poll());
            if job.is_finished() {
                self.front_job = None;
            }
        }
        if let Some(job) = &mut self.job {
            let m = job.poll();
            self.job_done += m.len();
            messages.extend(m);
            if job.is_finished() {
                self.job = None;
            }
        }
        for m in messages {
            match m {
                Msg::Report(k, r) => {
                    self.reports.insert(k, r);
                }
                Msg::Clip(k, c) => {
                    self.clips.insert(k, c);
                }
                Msg::Failed(k, e) => {
                    self.failures.insert(k, e);
                }
                Msg::Group(k, h) => self.group_hist = Some((k, h)),
                Msg::Accuracy(..) => {}
            }
        }
        if let Some(job) = &mut self.group_job {
            for m in job.poll() {
                if let Msg::Group(k, h) = m {
                    self.group_hist = Some((k, h));
                }
            }
            if job.is_finished() {
                self.group_job = None;
            }
        }
        // the plan's JSON (which resolves every tensor) is rebuilt only when the plan changed
        let edits = self.plan().fingerprint();
        if self.plan_json.0 != Some(edits) || self.plan_json.1.is_empty() {
            self.plan_json = (Some(edits), self.plan().to_json(model, None));
        }
        let sig = self.plan_json.1.clone();
        self.autosave(model, &sig);
        self.schedule_accuracy(model, &sig, ctx);
        let mut wanted = self.wanted(model);
        let clip_key = self
            .selected
            .and_then(|t| self.spec_of(model, t).map(|s| (t, clip_family(&s))));
        let clip_needed = clip_key
            .as_ref()
            .filter(|k| !self.clips.contains_key(*k))
            .cloned();
        // the selected layer under its current spec goes to the front job
        let front_key = self
            .selected
            .and_then(|t| self.spec_of(model, t).map(|s| (t, s)))
            .filter(|k| wanted.first().is_some_and(|w| w.0 == *k && !w.1));
        if front_key.is_some() {
            wanted.remove(0);
        }
        let front = (front_key, clip_needed);
        // the running front job covers what is needed if it computes the same report (or has sent
        // its report already and none is needed) and the same clip lines: once the report is in, the
        // job goes on to the clip lines, and restarting it there would compute them twice at once
        let sent = |k: &Key| self.reports.contains_key(k) || self.failures.contains_key(k);
        let covers = match &front.0 {
            Some(k) => self.front_wants.0.as_ref() == Some(k),
            None => self.front_wants.0.as_ref().is_none_or(sent),
        } && front
            .1
            .as_ref()
            .is_none_or(|c| self.front_wants.1.as_ref() == Some(c));
        if (front.0.is_some() || front.1.is_some()) && (self.front_job.is_none() || !covers) {
            self.front_wants = front;
            let model = model.clone();
            let ctx = ctx.clone();
            let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
            let cache = (self.model_id.clone(), self.tensor_cache.clone());
            let (key, clip) = front;
            self.front_job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
                let items = key.map(|k| (k, false)).into_iter();
                let items = items.chain(clip.map(|c| (c, true))).collect();
                crate::jobs::foreground_pool().install(|| compute(&model, &cache, items, w))
            }));
        }
        // the jobs wake the window with each result and when they end; this is only a safety net
        let safety_net = std::time::Duration::from_secs(1);
        if wanted.is_empty() {
            if self.front_job.is_some() {
                ctx.request_repaint_after(safety_net);
            }
            return;
        }
        // restart only when the running job does not cover what is needed first (the selection or the
        // plan moved on); otherwise let it continue down its list
        // the running job computes its list in order: it serves the front of `wanted` only if that is
        // the item it is on now
        let covers_front = wanted
            .first()
            .is_none_or(|k| self.job_wants.get(self.job_done) == Some(k));
        let stale = self.job.is_none() || !covers_front;
        if stale {
            self.job_wants = wanted.clone();
            self.job_done = 0;
            let model = model.clone();
            let ctx = ctx.clone();
            let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
            let cache = (self.model_id.clone(), self.tensor_cache.clone());
            self.job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
                crate::jobs::background_pool().install(|| compute(&model, &cache, wanted, w))
            }));
        }
        ctx.request_repaint_after(safety_net);
    }

    fn sync_layer_text(&mut self, model: &Model) {
        if let Some(t) = self.selected {
            self.layer_text = self
                .spec_of(model, t)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none".into());
            self.layer_error = None;
            self.draft = super::spec_editor::SpecDraft::from_spec(self.spec_of(model, t).as_ref());
            self.group = 0;
        }
    }

    /// Override several tensors at once (one undo step).
    pub fn set_names(&mut self, names: &[String], text: &str) -> Result<usize, String> {
        self.editor.set_names(names, text, "bulk edit: picked rows")
    }

    fn plan_file(&self) -> Option<std::path::PathBuf> {
        let dir = self.autosave_dir.as_ref()?;
        (!self.model_id.is_empty()).then(|| {
            dir.join(format!(
                "{}.json",
                &self.model_id[..16.min(self.model_id.len())]
            ))
        })
    }

    /// Keep the plan of this model on disk after every change, to restore it on the next start.
    /// For a runnable sample model, its held-out accuracy under the plan (a small background job).
    fn schedule_accuracy(&mut self, model: &Arc<Model>, sig: &str, ctx: &egui::Context) {
        let runnable = model
            .metadata()
            .is_some_and(|m| m.contains_key("architecture") && m.contains_key("test_indices"));
        if !runnable {
            return;
        }
        if let Some(job) = &mut self.acc_job {
            for m in job.poll() {
                if let Msg::Accuracy(s, f, q, n) = m {
                    self.accuracy = Some((s, f, q, n));
                }
            }
            if job.is_finished() {
                self.acc_job = None;
            }
        }
        let current = self.accuracy.as_ref().is_some_and(|a| a.0 == sig);
        if current || self.acc_job.is_some() {
            return;
        }
        let (model, plan, sig) = (model.clone(), self.plan().clone(), sig.to_string());
        let ctx = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
        self.acc_job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
            use crate::nn::{dataset_bytes, evaluate, held_out, Network};
            let run = || -> Result<(f64, f64, usize), crate::nn::NnError> {
                let data = held_out(&model, &dataset_bytes(&model)?)?;
                let f = evaluate(&Network::from_model(&model, None)?, &data)?.0;
                let q = evaluate(&Network::from_model(&model, Some(&plan))?, &data)?.0;
                Ok((f, q, data.y.len()))
            };
            if let Ok((f, q, n)) = run() {
                w.send(Msg::Accuracy(sig, f, q, n));
            }
        }));
    }

    fn autosave(&mut self, model: &Model, text: &str) {
        let Some(path) = self.plan_file() else { return };
        if text != self.last_saved {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // best effort: a read-only config folder only loses the convenience
            if self.plan().save(&path, model, None).is_ok() {
                self.last_saved = text.to_string();
            }
        }
    }

    fn restore_autosaved(&mut self, model: &Model) {
        self.editor.set_groups(crate::plan::runtime::fused_groups(
            model.tensors.iter().map(|t| t.name.as_str()),
        ));
        if let Some(path) = self.plan_file() {
            if path.is_file() {
                match Plan::load(&path, model) {
                    Ok(p) => {
                        self.editor.reset(p);
                        self.default_text = self.plan().default.text();
                        self.message =
                            Some("Restored this model's plan from the last session".into());
                    }
                    Err(e) => {
                        self.message = Some(format!("Error: could not restore the last plan: {e}"))
                    }
                }
            }
            self.last_saved = self.plan().to_json(model, None);
        }
        self.editor.clear_history();
    }

    /// The chosen group's own histogram and grid, computed on demand.
    fn group_ui(
        &mut self,
        ui: &mut Ui,
        model: &Arc<Model>,
        t: usize,
        spec: &Spec,
        r: &LayerReport,
    ) {
        let g = self.group.min(r.groups.saturating_sub(1));
        let key = (t, *spec, g);
        let have = self.group_hist.as_ref().is_some_and(|(k, _)| *k == key);
        if !have && self.group_job.is_none() {
            let model = model.clone();
            let ctx = ui.ctx().clone();
            let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
            let (gs, gpr) = (r.group_size, r.groups_per_row);
            let k2 = key;
            self.group_job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
                let info = &model.tensors[t];
                if let Ok(x) = model.read_f32(info) {
                    let (_, cols) = info.channels();
                    let (row, j) = (g / gpr.max(1), g % gpr.max(1));
                    let start = (row * cols + j * gs).min(x.len());
                    let end = (start + gs).min(x.len()).min(row * cols + cols);
                    let h = crate::stats::histogram(&x[start..end.max(start)], 64, None);
                    w.send(Msg::Group(k2, h));
                }
            }));
        }
        let Some((_, h)) = self.group_hist.as_ref().filter(|(k, _)| *k == key) else {
            return;
        };
        let levels = report_levels(r, g);
        ui.strong(format!(
            "Group {g} alone: its values and its grid ({} levels)",
            levels.len()
        ));
        let bars = super::bars::histogram_bars(h, false, 1.0);
        Plot::new("wb_group")
            .height(140.0)
            .allow_scroll(false)
            .x_axis_label("weight value")
            .show(ui, |p| {
                p.bar_chart(BarChart::new("values", bars).color(Color32::from_rgb(97, 175, 239)));
                if levels.len() <= 300 {
                    for &l in &levels {
                        p.vline(
                            VLine::new("grid", l)
                                .color(Color32::from_rgba_unmultiplied(229, 140, 60, 140))
                                .width(1.0),
                        );
                    }
                }
            });
    }

    pub fn select(&mut self, model: &Model, t: usize) {
        self.selected = Some(t);
        self.sync_layer_text(model);
    }

    pub fn ui(&mut self, ui: &mut Ui, model: Option<Arc<Model>>) {
        let Some(model) = model else {
            egui::CentralPanel::default().show(ui, |ui| {
                ui.label("Open a model in the Model view first.");
            });
            return;
        };
        let ctx = ui.ctx().clone();
        self.schedule(&model, &ctx);
        let before = (self.plan().fingerprint(), self.selected);
        // keyboard: Ctrl+Z / Ctrl+Y undo and redo when no text field has focus
        let nothing_focused = ctx.memory(|m| m.focused().is_none());
        if nothing_focused {
            let (z, y) = ctx.input(|i| {
                (
                    i.modifiers.command && i.key_pressed(egui::Key::Z),
                    i.modifiers.command && i.key_pressed(egui::Key::Y),
                )
            });
            if z {
                self.undo();
                self.sync_layer_text(&model);
            }
            if y {
                self.redo();
                self.sync_layer_text(&model);
            }
        }
        egui::Panel::top("workbench_plan").show(ui, |ui| self.plan_ui(ui, &model));
        egui::Panel::left("workbench_layers")
            .resizable(true)
            .default_size(560.0)
            .show(ui, |ui| self.table_ui(ui, &model));
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| self.layer_ui(ui, &model));
        });
        // an edit or a selection made in this frame starts its work now, not at the next frame
        // (which waits for this one to be painted: ~60 ms with a software renderer)
        if (self.plan().fingerprint(), self.selected) != before {
            self.schedule(&model, &ctx);
        }
    }

    fn plan_ui(&mut self, ui: &mut Ui, model: &Arc<Model>) {
        ui.horizontal(|ui| {
            let l = ui.label("Default spec");
            let r = ui
                .add(egui::TextEdit::singleline(&mut self.default_text).desired_width(260.0))
                .labelled_by(l.id)
                .on_hover_text("The spec every quantizable weight gets unless a layer overrides it; Enter applies it");
            if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) || ui.button("Apply default").clicked() {
                let text = self.default_text.clone();
                self.default_error = self.set_default(&text).err();
                self.sync_layer_text(model);
            }
            ui.separator();
            let target = self.plan().target;
            let mut chosen = target;
            egui::ComboBox::new("plan_target", "Runtime")
                .selected_text(target.name())
                .show_ui(ui, |ui| {
                    for r in [Runtime::None, Runtime::Vllm, Runtime::LlamaCpp] {
                        ui.selectable_value(&mut chosen, r, r.name());
                    }
                })
                .response
                .on_hover_text("The runtime the plan is for: with vllm, the layers it fuses (q/k/v, gate/up) are edited together");
            if chosen != target {
                self.editor.set_target(chosen);
            }
            ui.separator();
            if ui.add_enabled(self.editor.can_undo(), egui::Button::new("Undo")).on_hover_text("Undo the last plan edit (Ctrl+Z)").clicked() {
                self.undo();
                self.sync_layer_text(model);
            }
            if ui.add_enabled(self.editor.can_redo(), egui::Button::new("Redo")).on_hover_text("Redo (Ctrl+Y)").clicked() {
                self.redo();
                self.sync_layer_text(model);
            }
            ui.separator();
            let l = ui.label("Plan file");
            ui.add(egui::TextEdit::singleline(&mut self.plan_path).desired_width(200.0)).labelled_by(l.id);
            if ui.button("Save plan").on_hover_text("Write the plan (default, overrides and every resolved spec) as JSON").clicked() {
                let (bytes, _, _) = self.size(model);
                let bpw = bytes as f64 * 8.0 / model.parameters().max(1) as f64;
                let summary = crate::plan::SummaryFile { bits_per_weight: bpw, bytes };
                self.message = Some(match self.plan().save(std::path::Path::new(&self.plan_path), model, Some(summary)) {
                    Ok(()) => format!("Saved the plan to {}", self.plan_path),
                    Err(e) => format!("Error: {e}"),
                });
            }
            if ui.button("Load plan").on_hover_text("Read a plan made for this model").clicked() {
                match crate::plan::Plan::load(std::path::Path::new(&self.plan_path), model) {
                    Ok(p) => {
                        self.replace_plan(p);
                        self.sync_layer_text(model);
                        self.message = Some(format!("Loaded {}", self.plan_path));
                    }
                    Err(e) => self.message = Some(format!("Error: {e}")),
                }
            }
        });
        if let Some(e) = &self.default_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if let Some(m) = &self.message {
            let color = if m.starts_with("Error") {
                ui.visuals().error_fg_color
            } else {
                ui.visuals().text_color()
            };
            ui.colored_label(color, m);
        }
        // the size meter
        let (planned, original, known) = self.size(model);
        let params = model.parameters().max(1) as f64;
        ui.horizontal(|ui| {
            let frac = planned as f32 / original.max(1) as f32;
            ui.add(
                egui::ProgressBar::new(frac)
                    .desired_width(260.0)
                    .text(format!(
                        "{} of {} ({:.1} %)",
                        crate::gui::browser::human_bytes(planned),
                        crate::gui::browser::human_bytes(original),
                        100.0 * frac
                    )),
            )
            .on_hover_text(
                "Model size under the plan against the original (every tensor, quantized or not)",
            );
            ui.label(format!(
                "average {:.2} bits per parameter (was {:.2}){}",
                planned as f64 * 8.0 / params,
                original as f64 * 8.0 / params,
                if known { "" } else { " · computing…" }
            ));
            if let Some((_, f, q, n)) = &self.accuracy {
                ui.separator();
                ui.label(RichText::new(format!("accuracy on {n} held-out examples: {f:.4} in float, {q:.4} under this plan ({:+.2} points)", 100.0 * (q - f))).strong())
                    .on_hover_text("The sample model run on its held-out data with the weights as this plan quantizes them");
            }
        });
    }

    fn table_ui(&mut self, ui: &mut Ui, model: &Arc<Model>) {
        let mut rows = listed(model);
        if self.worst_first {
            let key = |t: usize| {
                self.spec_of(model, t)
                    .and_then(|s| self.report(t, &s))
                    .map(|r| r.metrics.sqnr_db)
                    .unwrap_or(f64::INFINITY)
            };
            rows.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
        }
        // keyboard: up/down move the selection when no text field has focus
        if let Some(sel) = self.selected {
            let (up, down) = ui.input(|i| {
                (
                    i.key_pressed(egui::Key::ArrowUp),
                    i.key_pressed(egui::Key::ArrowDown),
                )
            });
            if (up || down) && ui.ctx().memory(|m| m.focused().is_none()) {
                if let Some(pos) = rows.iter().position(|&r| r == sel) {
                    let next = if up {
                        pos.saturating_sub(1)
                    } else {
                        (pos + 1).min(rows.len() - 1)
                    };
                    self.select(model, rows[next]);
                }
            }
        }
        ui.horizontal(|ui| {
            let l = ui.label("Pattern");
            ui.add(egui::TextEdit::singleline(&mut self.bulk_pattern).desired_width(160.0))
                .labelled_by(l.id)
                .on_hover_text("A regular expression over tensor names (e.g. mlp\\.down_proj) or a role: linear, conv, embedding, lm_head");
            if ui.button("Apply spec to matching").on_hover_text("Give every matching weight the spec of the selected layer").clicked() {
                let (p, text) = (self.bulk_pattern.clone(), self.layer_text.clone());
                self.bulk_error = match self.set_matching(model, &p, &text) {
                    Ok(n) => {
                        self.message = Some(format!("Set {n} tensors to {text}"));
                        None
                    }
                    Err(e) => Some(e),
                };
            }
            ui.checkbox(&mut self.worst_first, "worst first").on_hover_text("Sort the table by SQNR, lowest first");
            if ui
                .add_enabled(!self.picked.is_empty(), egui::Button::new(format!("Apply to picked ({})", self.picked.len())))
                .on_hover_text("Give the rows picked with Ctrl+click the selected layer's spec")
                .clicked()
            {
                let text = self.layer_text.clone();
                let names: Vec<String> = self.picked.iter().map(|&t| model.tensors[t].name.clone()).collect();
                self.bulk_error = self.set_names(&names, &text).err();
            }
            if ui.button("Apply to all").on_hover_text("Give every quantizable weight the selected layer's spec").clicked() {
                let text = self.layer_text.clone();
                self.bulk_error = self.set_matching(model, ".*", &text).err();
            }
        });
        if let Some(e) = &self.bulk_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        // SQNR per layer, in model order, clickable
        let mut bars = Vec::new();
        let mut order = Vec::new();
        for &t in &rows {
            if let Some(s) = self.spec_of(model, t) {
                if let Some(r) = self.report(t, &s) {
                    let v = if r.metrics.sqnr_db.is_finite() {
                        r.metrics.sqnr_db
                    } else {
                        100.0
                    };
                    let name = model.tensors[t].name.clone();
                    bars.push(
                        Bar::new(order.len() as f64, v)
                            .name(name)
                            .fill(family_color(&s)),
                    );
                    order.push(t);
                }
            }
        }
        let resp = Plot::new("sqnr_per_layer")
            .height(130.0)
            .allow_scroll(false)
            .allow_drag(false)
            .y_axis_label("SQNR dB")
            .show(ui, |p| {
                p.bar_chart(BarChart::new("SQNR per layer", bars));
                p.pointer_coordinate()
            });
        if resp.response.clicked() {
            if let Some(pt) = resp.inner {
                let i = pt.x.round();
                if i >= 0.0 && (i as usize) < order.len() {
                    self.select(model, order[i as usize]);
                }
            }
        }
        let mut clicked = None;
        use egui_extras::{Column, TableBuilder};
        TableBuilder::new(ui)
            .striped(true)
            .resizable(true)
            .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
            .column(Column::initial(230.0).clip(true))
            .column(Column::initial(150.0).clip(true))
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::auto())
            .header(20.0, |mut h| {
                for t in ["tensor", "spec", "SQNR dB", "MSE", "bits/w"] {
                    h.col(|ui| {
                        ui.strong(t);
                    });
                }
            })
            .body(|body| {
                body.rows(20.0, rows.len(), |mut row| {
                    let t = rows[row.index()];
                    let info = &model.tensors[t];
                    let spec = self.spec_of(model, t);
                    let r = spec.as_ref().and_then(|s| self.report(t, s));
                    row.set_selected(self.selected == Some(t));
                    row.col(|ui| {
                        if ui
                            .add(
                                egui::Button::selectable(
                                    self.selected == Some(t) || self.picked.contains(&t),
                                    info.name.as_str(),
                                )
                                .frame(false),
                            )
                            .clicked()
                        {
                            clicked = Some(t);
                        }
                    });
                    row.col(|ui| {
                        let text = spec.map(|s| s.short()).unwrap_or_else(|| "float".into());
                        ui.label(
                            RichText::new(text)
                                .color(spec.map(|s| family_color(&s)).unwrap_or(Color32::GRAY)),
                        );
                    });
                    row.col(|ui| {
                        ui.label(
                            r.map(|r| format!("{:.2}", r.metrics.sqnr_db))
                                .unwrap_or_else(|| {
                                    if spec.is_some() {
                                        "…".into()
                                    } else {
                                        "-".into()
                                    }
                                }),
                        );
                    });
                    row.col(|ui| {
                        ui.label(r.map(|r| fmt_short(r.metrics.mse)).unwrap_or_default());
                    });
                    row.col(|ui| {
                        ui.label(
                            r.map(|r| format!("{:.2}", r.metrics.bits_per_weight))
                                .unwrap_or_default(),
                        );
                    });
                });
            });
        if let Some(t) = clicked {
            if ui.input(|i| i.modifiers.command) {
                // Ctrl+click picks rows for a bulk edit
                if !self.picked.remove(&t) {
                    self.picked.insert(t);
                }
            } else {
                self.picked.clear();
                self.select(model, t);
            }
        }
    }

    fn layer_ui(&mut self, ui: &mut Ui, model: &Arc<Model>) {
        let Some(t) = self.selected else {
            ui.label("Select a layer.");
            return;
        };
        let info = model.tensors[t].clone();
        ui.heading(&info.name);
        if let Some(g) = self.editor.tied_group(&info.name) {
            ui.label(format!(
                "Tied: {} runs {} as one layer, so an edit here applies to all of them",
                self.plan().target.name(),
                g.describe()
            ));
        }
        ui.label(format!(
            "{:?} {:?} · {} weights",
            info.dtype,
            info.shape,
            info.numel()
        ));
        // the spec editor
        ui.horizontal(|ui| {
            let l = ui.label("Layer spec");
            let r = ui
                .add(egui::TextEdit::singleline(&mut self.layer_text).desired_width(300.0).font(egui::TextStyle::Monospace))
                .labelled_by(l.id)
                .on_hover_text("This layer's spec (copy it, or edit it and press Enter); 'none' keeps it in float");
            if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) || ui.button("Apply").clicked() {
                let text = self.layer_text.clone();
                self.layer_error = self.set_layer(&info.name, &text).err();
                if self.layer_error.is_none() {
                    self.sync_layer_text(model);
                }
            }
            if ui.button("Use default").on_hover_text("Remove this layer's override").clicked() {
                self.editor.clear_override(&info.name);
                self.sync_layer_text(model);
            }
        });
        ui.horizontal_wrapped(|ui| {
            ui.label("Presets:");
            for p in PRESETS {
                if ui.small_button(*p).on_hover_text(preset_help(p)).clicked() {
                    self.layer_text = p.to_string();
                    self.layer_error = self.set_layer(&info.name, p).err();
                    self.sync_layer_text(model);
                }
            }
        });
        if self.draft.ui(ui) {
            let text = self.draft.text();
            self.layer_text = text.clone();
            self.layer_error = self.set_layer(&info.name, &text).err();
        }
        if let Some(e) = &self.layer_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let why = self.plan().resolve(&info.name, info.quantizable()).1;
        ui.label(RichText::new(format!("from: {why}")).weak());
        let Some(spec) = self.spec_of(model, t) else {
            ui.label("Kept in float.");
            self.compare_ui(ui, model, t);
            return;
        };
        let key = (t, spec);
        if let Some(e) = self.failures.get(&key) {
            ui.colored_label(ui.visuals().error_fg_color, format!("Error: {e}"));
            return;
        }
        // a still label, not a spinner: a spinner repaints every frame while it shows, and with a
        // software renderer (no GPU) each frame is painted on the CPU the quantizer is using (frames
        // came 60–105 ms apart while it showed); the job wakes the window when its result is in
        let Some(r) = self.reports.get(&key).cloned() else {
            ui.label("quantizing…");
            return;
        };
        let m = &r.metrics;
        ui.label(
            RichText::new(format!(
                "SQNR {:.2} dB · MSE {} · cosine {:.5} · max |err| {} · {:.3} bits/weight · {} bytes",
                m.sqnr_db,
                fmt_short(m.mse),
                m.cosine,
                fmt_short(m.max_abs_err),
                m.bits_per_weight,
                m.bytes
            ))
            .strong(),
        );
        if r.groups > 1 {
            ui.horizontal(|ui| {
                let l = ui.label("Group");
                ui.add(egui::DragValue::new(&mut self.group).range(0..=r.groups - 1))
                    .labelled_by(l.id)
                    .on_hover_text("Which channel or group's grid to draw");
                let s = r.scales.get(self.group).copied().unwrap_or(0.0);
                let (lo, hi) = r
                    .scales
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                ui.label(format!(
                    "{} groups of {} · this group's scale {} · scales span {} … {}",
                    r.groups,
                    r.group_size,
                    fmt_short(s as f64),
                    fmt_short(lo as f64),
                    fmt_short(hi as f64)
                ));
            });
        }
        ui.checkbox(&mut self.log_counts, "log counts")
            .on_hover_text("Plot log10 of the counts to see the tails");
        let clips = self.clips.get(&(t, clip_family(&spec))).cloned();
        if crate::jobs::tracing() {
            // what a person sees, for timing a real window: the first frame that draws this spec's
            // plots, then its clip lines
            let drawn = (key, clips.is_some());
            if self.traced_drawn.as_ref() != Some(&drawn) {
                let what = if clips.is_some() {
                    "plots and clip lines"
                } else {
                    "plots"
                };
                crate::jobs::trace(format_args!("drawn: {what} of {}", key.1));
                self.traced_drawn = Some(drawn);
            }
        }
        let levels = report_levels(&r, self.group.min(r.groups.saturating_sub(1)));
        let threshold = matches!(spec.family, crate::quant::Family::Ternary)
            .then_some(r.threshold_mean)
            .flatten();
        hist_ui(
            ui,
            &r,
            &levels,
            clips.as_deref(),
            threshold,
            self.log_counts,
        );
        if r.groups > 1 {
            scales_plot(ui, &r);
            self.group_ui(ui, model, t, &spec, &r);
        }
        if !r.codebook.is_empty() {
            palette_ui(ui, &r);
        }
        if let Some(tm) = r.threshold_mean {
            ui.label(format!(
                "threshold {} · {:.1} % of weights are exactly 0",
                fmt_short(tm as f64),
                100.0 * r.zero_fraction
            ));
        }
        self.compare_ui(ui, model, t);
    }

    fn compare_ui(&mut self, ui: &mut Ui, _model: &Arc<Model>, t: usize) {
        ui.separator();
        ui.strong("Compare formats on this layer");
        let rows: Vec<(String, Option<Arc<LayerReport>>)> = self
            .candidates
            .iter()
            .filter_map(|c| {
                Spec::parse(c)
                    .ok()
                    .map(|s| (c.clone(), self.reports.get(&(t, s)).cloned()))
            })
            .collect();
        egui::Grid::new("compare")
            .striped(true)
            .spacing([16.0, 3.0])
            .show(ui, |ui| {
                for h in ["spec", "SQNR dB", "MSE", "bits/w", "bytes"] {
                    ui.strong(h);
                }
                ui.end_row();
                for (c, r) in &rows {
                    ui.monospace(c);
                    match r {
                        Some(r) => {
                            ui.label(format!("{:.2}", r.metrics.sqnr_db));
                            ui.label(fmt_short(r.metrics.mse));
                            ui.label(format!("{:.3}", r.metrics.bits_per_weight));
                            ui.label(r.metrics.bytes.to_string());
                        }
                        None => {
                            ui.label("…");
                            ui.label("");
                            ui.label("");
                            ui.label("");
                        }
                    }
                    ui.end_row();
                }
            });
        let bars: Vec<Bar> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, (c, r))| {
                r.as_ref().map(|r| {
                    let s = Spec::parse(c).expect("parsed above");
                    Bar::new(i as f64, r.metrics.sqnr_db)
                        .name(format!("{c}: {:.2} bits/w", r.metrics.bits_per_weight))
                        .fill(family_color(&s))
                })
            })
            .collect();
        let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        Plot::new("compare_bars")
            .height(160.0)
            .allow_scroll(false)
            .y_axis_label("SQNR dB")
            .x_axis_formatter(move |mark, _| {
                let i = mark.value.round();
                if (mark.value - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .show(ui, |p| p.bar_chart(BarChart::new("SQNR", bars)));
    }
}

/// `s` with one bit fewer and one more (int and uint, 2–8 bits), for prefetching.
fn bits_either_side(s: &Spec) -> Vec<Spec> {
    use crate::quant::Family;
    let (bits, family): (u32, fn(u32) -> Family) = match s.family {
        Family::Int(b) => (b, Family::Int),
        Family::Uint(b) => (b, Family::Uint),
        _ => return Vec::new(),
    };
    [bits.saturating_sub(1), bits + 1]
        .into_iter()
        .filter(|n| (2..=8).contains(n))
        .map(|n| Spec {
            family: family(n),
            ..*s
        })
        .collect()
}

/// Clip lines depend on the format and clip-free settings, not on the clip option itself.
fn clip_family(s: &Spec) -> Spec {
    // the lines are per tensor: the granularity does not matter (the scale type does)
    Spec {
        granularity: crate::quant::Granularity::Tensor,
        clip: crate::quant::Clip::MinMax,
        round: crate::quant::RoundMode::Nearest,
        vsq: false,
        ..*s
    }
    .without_unused_seed()
}

fn family_color(s: &Spec) -> Color32 {
    use crate::quant::Family::*;
    match s.family {
        Int(_) => Color32::from_rgb(97, 175, 239),
        Uint(_) => Color32::from_rgb(86, 182, 194),
        Float(_) => Color32::from_rgb(152, 195, 121),
        Nf4 => Color32::from_rgb(198, 120, 221),
        Mx(_) | MicroExp(_) => Color32::from_rgb(229, 192, 123),
        Nvfp4 => Color32::from_rgb(209, 154, 102),
        Kmeans(_) => Color32::from_rgb(224, 108, 117),
        Binary | Ternary => Color32::from_rgb(190, 80, 70),
        Bf16 | Fp16 | None => Color32::GRAY,
    }
}

fn preset_help(p: &str) -> &'static str {
    match p {
        "none" => "Keep this layer in float",
        "int8" => "8-bit symmetric integers, one fp32 scale per output channel",
        "int4:g128" => "4-bit integers, an fp16 scale per 128 weights (GPTQ/AWQ style)",
        "uint4:g64:clip=mse" => {
            "4-bit asymmetric with a zero point per 64 weights, range chosen by MSE"
        }
        "fp8_e4m3" => "FP8 E4M3 elements with a per-channel scale",
        "mxfp4" => "OCP MX FP4: E2M1 elements, a power-of-two scale per 32",
        "nvfp4" => "NVIDIA FP4: E2M1, an E4M3 scale per 16 and an fp32 tensor scale",
        "nf4" => "QLoRA NormalFloat4 with an absmax per 64",
        "kmeans4" => "16 shared values for the whole tensor (Deep Compression)",
        "ternary" => "-α, 0, +α per channel (TWN)",
        _ => "",
    }
}

fn hist_ui(
    ui: &mut Ui,
    r: &LayerReport,
    levels: &[f32],
    clips: Option<&ClipLines>,
    threshold: Option<f32>,
    log: bool,
) {
    use super::bars::histogram_bars;
    let orig = histogram_bars(&r.original, log, 1.0);
    // the quantized values sit on a few levels: only their bins, narrower, over the original's
    let quant: Vec<Bar> = histogram_bars(&r.quantized, log, 0.45)
        .into_iter()
        .filter(|b| b.value > 0.0)
        .collect();
    let clip_colors = [
        Color32::from_rgb(224, 108, 117),
        Color32::from_rgb(229, 192, 123),
        Color32::from_rgb(152, 195, 121),
        Color32::from_rgb(198, 120, 221),
    ];
    ui.strong("Weights: original, quantized, grid and clip thresholds");
    Plot::new("wb_hist")
        .height(230.0)
        .allow_scroll(false)
        .legend(Legend::default())
        .x_axis_label("weight value")
        .show(ui, |p| {
            p.bar_chart(
                BarChart::new("original", orig)
                    .color(Color32::from_rgba_unmultiplied(97, 175, 239, 150)),
            );
            p.bar_chart(BarChart::new("quantized", quant).color(Color32::from_rgb(229, 140, 60)));
            if levels.len() <= 300 {
                for &l in levels {
                    p.vline(
                        VLine::new("grid", l)
                            .color(Color32::from_rgba_unmultiplied(160, 160, 160, 70))
                            .width(1.0),
                    );
                }
            }
            if let Some(t) = threshold {
                let c = Color32::from_rgb(224, 108, 117);
                p.vline(VLine::new("threshold", t).color(c).width(1.5));
                p.vline(VLine::new("threshold", -t).color(c).width(1.5));
            }
            if let Some(c) = clips {
                for (i, (name, t)) in c.lines.iter().enumerate() {
                    let col = clip_colors[i % clip_colors.len()];
                    p.vline(VLine::new(format!("clip {name}"), *t).color(col).width(1.5));
                    p.vline(
                        VLine::new(format!("clip {name}"), -*t)
                            .color(col)
                            .width(1.5),
                    );
                }
            }
        });
    let err = histogram_bars(&r.error, log, 1.0);
    ui.strong("Error: quantized − original");
    Plot::new("wb_err")
        .height(120.0)
        .allow_scroll(false)
        .x_axis_label("error")
        .show(ui, |p| {
            p.bar_chart(BarChart::new("error", err).color(Color32::from_rgb(224, 108, 117)))
        });
}

/// A colour for codebook entry `i` of `n`: a blue–yellow–red ramp by value order.
fn swatch(i: usize, n: usize) -> Color32 {
    let t = if n > 1 {
        i as f32 / (n - 1) as f32
    } else {
        0.5
    };
    let (r, g, b) = if t < 0.5 {
        let u = t * 2.0;
        (40.0 + 200.0 * u, 90.0 + 140.0 * u, 200.0 - 120.0 * u)
    } else {
        let u = (t - 0.5) * 2.0;
        (240.0, 230.0 - 170.0 * u, 80.0 - 40.0 * u)
    };
    Color32::from_rgb(r as u8, g as u8, b as u8)
}

fn palette_ui(ui: &mut Ui, r: &LayerReport) {
    ui.strong(format!("Codebook: {} values", r.codebook.len()));
    let total: u64 = r.codebook.iter().map(|c| c.1).sum();
    ui.horizontal_wrapped(|ui| {
        for (i, (v, n)) in r.codebook.iter().enumerate() {
            ui.vertical(|ui| {
                let (rect, resp) =
                    ui.allocate_exact_size(egui::vec2(54.0, 26.0), egui::Sense::hover());
                ui.painter()
                    .rect_filled(rect, 3.0, swatch(i, r.codebook.len()));
                resp.on_hover_text(format!("entry {i}: {} · {n} weights", fmt_short(*v as f64)));
                ui.label(RichText::new(fmt_short(*v as f64)).small());
                ui.label(
                    RichText::new(format!("{:.1} %", 100.0 * *n as f64 / total.max(1) as f64))
                        .small()
                        .weak(),
                );
            });
        }
    });
    if let Some(w) = &r.window {
        ui.label(format!(
            "The top-left {}×{} weights: original values (left) and their cluster (right)",
            w.rows, w.cols
        ));
        let cell = 5.0;
        let (lo, hi) = w
            .values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        ui.horizontal(|ui| {
            let (rect, _) = ui.allocate_exact_size(
                egui::vec2(cell * w.cols as f32, cell * w.rows as f32),
                egui::Sense::hover(),
            );
            for (k, &v) in w.values.iter().enumerate() {
                let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                let c = Color32::from_gray((t * 255.0) as u8);
                let p =
                    rect.min + egui::vec2((k % w.cols) as f32 * cell, (k / w.cols) as f32 * cell);
                ui.painter().rect_filled(
                    egui::Rect::from_min_size(p, egui::vec2(cell, cell)),
                    0.0,
                    c,
                );
            }
            ui.add_space(12.0);
            let (rect, _) = ui.allocate_exact_size(
                egui::vec2(cell * w.cols as f32, cell * w.rows as f32),
                egui::Sense::hover(),
            );
            for (k, &c) in w.codes.iter().enumerate() {
                let p =
                    rect.min + egui::vec2((k % w.cols) as f32 * cell, (k / w.cols) as f32 * cell);
                ui.painter().rect_filled(
                    egui::Rect::from_min_size(p, egui::vec2(cell, cell)),
                    0.0,
                    swatch(c as usize, r.codebook.len()),
                );
            }
        });
        let n = r.codebook.len();
        let ratio = 32.0 / r.metrics.bits_per_weight;
        ui.label(format!(
            "Storage: {} bits per index + a {n}-entry fp32 codebook = {:.3} bits/weight, {ratio:.1}× smaller than fp32",
            n.trailing_zeros(),
            r.metrics.bits_per_weight
        ));
    }
}

/// A window job's work: the reports and clip lines of its items, in order. Reads each tensor once for
/// all its items, and keeps the first one it read (with its original histogram and clip basis) for the
/// next job: a spec toggle on the same layer starts quantizing at once.
fn compute(
    model: &Model,
    (model_id, cache): &(String, SharedTensor),
    items: Vec<Item>,
    w: &Worker<Msg>,
) {
    w.progress.set_total(items.len() as u64);
    let cached = |t: usize| -> Option<Arc<Vec<f32>>> {
        let c = cache.lock().ok()?;
        c.as_ref()
            .filter(|c| c.t == t && &c.model == model_id)
            .map(|c| c.x.clone())
    };
    // the job's first tensor is the selected layer's: it goes to the shared cache; the others (the
    // rest of the model's layers) are kept only while this job works on them
    let first = items.first().map(|i| i.0 .0);
    let mut current: Option<(usize, Arc<Vec<f32>>)> = None;
    let mut data = |t: usize| -> Result<Arc<Vec<f32>>, String> {
        if let Some(x) = cached(t) {
            return Ok(x);
        }
        if let Some((ct, x)) = &current {
            if *ct == t {
                return Ok(x.clone());
            }
        }
        let x = Arc::new(
            model
                .read_f32(&model.tensors[t])
                .map_err(|e| e.to_string())?,
        );
        model.release(&model.tensors[t]);
        if Some(t) == first {
            if let Ok(mut c) = cache.lock() {
                *c = Some(TensorCache {
                    model: model_id.clone(),
                    t,
                    x: x.clone(),
                    original: None,
                    clip_basis: Arc::default(),
                });
            }
        } else {
            current = Some((t, x.clone()));
        }
        Ok(x)
    };
    // the original histogram of tensor t (cached with its values)
    let original = |t: usize, x: &[f32]| -> crate::stats::Histogram {
        if let Ok(c) = cache.lock() {
            if let Some(h) = c
                .as_ref()
                .filter(|c| c.t == t && &c.model == model_id)
                .and_then(|c| c.original.clone())
            {
                return h;
            }
        }
        let h = original_histogram(x, BINS);
        if let Ok(mut c) = cache.lock() {
            if let Some(c) = c.as_mut().filter(|c| c.t == t && &c.model == model_id) {
                c.original = Some(h.clone());
            }
        }
        h
    };
    // what tensor t's clip lines need from its data whatever the format (kept with its values)
    let basis = |t: usize| -> Arc<ClipBasis> {
        cache
            .lock()
            .ok()
            .and_then(|c| {
                c.as_ref()
                    .filter(|c| c.t == t && &c.model == model_id)
                    .map(|c| c.clip_basis.clone())
            })
            .unwrap_or_default()
    };
    for (key, is_clip) in items {
        // a background job (on the background pool) waits here while the foreground one runs
        crate::jobs::pause_point();
        if w.cancelled() {
            return;
        }
        let (t, spec) = (&key.0, &key.1);
        let info = &model.tensors[*t];
        let began = std::time::Instant::now();
        crate::jobs::trace(format_args!(
            "start {spec}{}",
            if is_clip { " clip lines" } else { "" }
        ));
        let result = data(*t).and_then(|x| {
            if is_clip {
                let b = basis(*t);
                match clip_lines_until(&x, &info.shape, spec, Some(&b), &|| w.cancelled()) {
                    Ok(Some(c)) => {
                        // after the front job's lines, the rest of the basis (the other
                        // symmetry, the float or int summary), behind whatever the person waits
                        // for: the next format's lines are quick (background items fill what
                        // they need themselves)
                        if !crate::jobs::on_background_thread() {
                            let x = x.clone();
                            crate::jobs::background_pool().spawn(move || {
                                // between parts: step aside for a front job; stop once the
                                // tensor's cache entry (and its basis) is gone
                                b.prepare(&x, &|| {
                                    crate::jobs::pause_point();
                                    Arc::strong_count(&b) == 1
                                });
                            });
                        }
                        Ok(Msg::Clip(key, Arc::new(c)))
                    }
                    Ok(None) => Err(String::new()), // cancelled: nothing is sent
                    Err(e) => Err(e.to_string()),
                }
            } else {
                let h = original(*t, &x);
                layer_report_with(&x, &info.shape, spec, BINS, Some(&h))
                    .map(|(r, _)| Msg::Report(key, Arc::new(r)))
                    .map_err(|e| e.to_string())
            }
        });
        if w.cancelled() {
            return;
        }
        crate::jobs::trace(format_args!("done {spec} in {:.1?}", began.elapsed()));
        let msg = result.unwrap_or_else(|e| Msg::Failed(key, e));
        if !w.send(msg) {
            return;
        }
        w.progress.add(1);
    }
}

/// The stored scale of every group, in order: the spread is why finer granularity helps.
fn scales_plot(ui: &mut Ui, r: &LayerReport) {
    let (lo, hi): (Vec<[f64; 2]>, Vec<[f64; 2]>) = r
        .scale_envelope
        .iter()
        .map(|&(x, a, b)| ([x as f64, a as f64], [x as f64, b as f64]))
        .unzip();
    ui.strong(format!(
        "Scales of the {} groups (min and max per stretch of groups)",
        r.groups
    ));
    Plot::new("wb_scales")
        .height(110.0)
        .allow_scroll(false)
        .x_axis_label("group (row by row)")
        .show(ui, |p| {
            p.line(egui_plot::Line::new("max", hi).color(Color32::from_rgb(229, 140, 60)));
            p.line(egui_plot::Line::new("min", lo).color(Color32::from_rgb(97, 175, 239)));
        });
}
