//! The quantization workbench: a model-wide default spec and per-layer overrides, and for the selected
//! layer its histogram with the quantization grid, every clip method's threshold and the quantized
//! values overlaid, the error histogram, the k-means palette, and a comparison of candidate formats;
//! across the model, SQNR per layer and the size under the plan. Split by job: the plan and its undo
//! history are a [`PlanEditor`], the reports and the jobs that make them a [`Reports`] scheduler, the
//! plots of one report are in `plots`; this panel holds what a person typed and lays the view out.

mod plots;

use super::reports::{spec_of, Reports, Wake, Wants};
use crate::formats::fmt_short;
use crate::model::Model;
use crate::plan::editor::PlanEditor;
use crate::plan::runtime::Runtime;
use crate::plan::score::HeldOutAccuracy;
use crate::plan::size::PlanSize;
use crate::plan::Plan;
use crate::quant::report::{report_levels, ClipLines, LayerReport};
use crate::quant::Spec;
use egui::{Color32, RichText, Ui};
use egui_plot::{Bar, BarChart, Plot};
use plots::family_color;
use std::sync::Arc;

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

pub struct Workbench {
    /// The plan being edited, with its undo history.
    pub editor: PlanEditor,
    /// The reports the view draws and the jobs that make them.
    pub reports: Reports,
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
    pub bulk_pattern: String,
    pub bulk_error: Option<String>,
    pub candidates: Vec<String>,
    pub plan_path: String,
    pub message: Option<String>,
    /// Where the plan of each model is kept between runs (`None`: not kept, as in tests).
    pub autosave_dir: Option<std::path::PathBuf>,
    last_saved: String,
    /// The plan as JSON, with the fingerprint of the edits it was made from.
    plan_json: (Option<u64>, String),
    /// With `QUANTSCOPE_TRACE`: the spec whose plots were last drawn, and whether with clip lines.
    traced_drawn: Option<((usize, Spec), bool)>,
}

impl Default for Workbench {
    fn default() -> Self {
        Workbench {
            editor: PlanEditor::default(),
            reports: Reports::default(),
            default_text: Plan::default().default.text(),
            default_error: None,
            layer_text: String::new(),
            layer_error: None,
            draft: super::spec_editor::SpecDraft::from_spec(None),
            selected: None,
            group: 0,
            log_counts: false,
            worst_first: false,
            picked: std::collections::BTreeSet::new(),
            bulk_pattern: String::new(),
            bulk_error: None,
            candidates: DEFAULT_CANDIDATES.iter().map(|s| s.to_string()).collect(),
            plan_path: "plan.json".into(),
            message: None,
            autosave_dir: None,
            last_saved: String::new(),
            plan_json: (None, String::new()),
            traced_drawn: None,
        }
    }
}

impl Workbench {
    /// The resolved spec of a tensor under the current plan (None: kept as it is).
    pub fn spec_of(&self, model: &Model, t: usize) -> Option<Spec> {
        spec_of(self.plan(), model, t)
    }

    pub fn report(&self, t: usize, spec: &Spec) -> Option<&Arc<LayerReport>> {
        self.reports.report(t, spec)
    }

    /// The clip lines drawn for tensor `t` under `spec`, once computed.
    pub fn clip_lines(&self, t: usize, spec: &Spec) -> Option<&Arc<ClipLines>> {
        self.reports.clip_lines(t, spec)
    }

    /// Whether the selected layer's report or clip lines under its current spec are being computed.
    pub fn front_busy(&self) -> bool {
        self.reports.front_busy()
    }

    /// For a runnable sample model: the signature of the plan last judged and its held-out accuracy.
    pub fn accuracy(&self) -> Option<&(String, HeldOutAccuracy)> {
        self.reports.accuracy()
    }

    /// The plan being edited.
    pub fn plan(&self) -> &Plan {
        self.editor.plan()
    }

    /// Take a plan made elsewhere for `model` (the mixed-precision view's) as one undo step, after
    /// following the model, so that restoring the model's last plan never overwrites it.
    pub fn receive_plan(&mut self, model: &Arc<Model>, plan: Plan) {
        self.follow_model(model);
        self.editor.replace(plan);
        self.default_text = self.plan().default.text();
        self.sync_layer_text(model);
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

    /// Override several tensors at once (one undo step).
    pub fn set_names(&mut self, names: &[String], text: &str) -> Result<usize, String> {
        self.editor.set_names(names, text, "bulk edit: picked rows")
    }

    /// The model's size under the plan, with the quantized sizes of the reports in so far.
    pub fn size(&self, model: &Model) -> PlanSize {
        PlanSize::of(model, self.plan(), |t, s| {
            self.reports.report(t, s).map(|r| r.metrics.bytes)
        })
    }

    /// Follow `model`: another model brings back its plan from the last session, selects its first
    /// layer and forgets the picked rows.
    fn follow_model(&mut self, model: &Arc<Model>) {
        if self.reports.set_model(model) {
            self.restore_autosaved(model);
            self.picked.clear();
            self.selected = self.reports.listed().first().copied();
            self.sync_layer_text(model);
        }
    }

    /// Keep the plan saved and the report jobs working on what the view needs now; called every frame.
    pub fn schedule(&mut self, model: &Arc<Model>, ctx: &egui::Context) {
        self.follow_model(model);
        // the plan's JSON (which resolves every tensor) is rebuilt only when the plan changed
        let edits = self.plan().fingerprint();
        if self.plan_json.0 != Some(edits) || self.plan_json.1.is_empty() {
            self.plan_json = (Some(edits), self.plan().to_json(model, None));
        }
        let sig = std::mem::take(&mut self.plan_json.1);
        self.autosave(model, &sig);
        let wants = Wants {
            plan: self.editor.plan(),
            plan_sig: &sig,
            selected: self.selected,
            group: self.group,
            candidates: &self.candidates,
        };
        let c = ctx.clone();
        let wake: Wake = Arc::new(move || c.request_repaint());
        let working = self.reports.schedule(model, &wants, &wake);
        self.plan_json.1 = sig;
        // the jobs wake the window with each result and when they end; this is only a safety net
        if working {
            ctx.request_repaint_after(std::time::Duration::from_secs(1));
        }
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

    fn plan_file(&self) -> Option<std::path::PathBuf> {
        let dir = self.autosave_dir.as_ref()?;
        let id = self.reports.model_id();
        (!id.is_empty()).then(|| dir.join(format!("{}.json", &id[..16.min(id.len())])))
    }

    /// Keep the plan of this model on disk after every change, to restore it on the next start.
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
        let before = (self.plan().fingerprint(), self.selected, self.group);
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
        if (self.plan().fingerprint(), self.selected, self.group) != before {
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
                let summary = self.size(model).summary();
                self.message = Some(match self.plan().save(std::path::Path::new(&self.plan_path), model, Some(summary)) {
                    Ok(()) => format!("Saved the plan to {}", self.plan_path),
                    Err(e) => format!("Error: {e}"),
                });
            }
            if ui.button("Load plan").on_hover_text("Read a plan made for this model").clicked() {
                match crate::plan::Plan::load(std::path::Path::new(&self.plan_path), model) {
                    Ok(p) => {
                        self.receive_plan(model, p);
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
        let size = self.size(model);
        ui.horizontal(|ui| {
            let frac = size.fraction();
            ui.add(
                egui::ProgressBar::new(frac)
                    .desired_width(260.0)
                    .text(format!(
                        "{} of {} ({:.1} %)",
                        crate::gui::browser::human_bytes(size.planned),
                        crate::gui::browser::human_bytes(size.original),
                        100.0 * frac
                    )),
            )
            .on_hover_text(
                "Model size under the plan against the original (every tensor, quantized or not)",
            );
            ui.label(format!(
                "average {:.2} bits per parameter (was {:.2}){}",
                size.bits_per_parameter(),
                size.original_bits_per_parameter(),
                if size.known { "" } else { " · computing…" }
            ));
            if let Some((_, a)) = self.reports.accuracy() {
                let (f, q, n) = (a.float, a.planned, a.examples);
                ui.separator();
                ui.label(RichText::new(format!("accuracy on {n} held-out examples: {f:.4} in float, {q:.4} under this plan ({:+.2} points)", 100.0 * (q - f))).strong())
                    .on_hover_text("The sample model run on its held-out data with the weights as this plan quantizes them");
            }
        });
    }

    fn table_ui(&mut self, ui: &mut Ui, model: &Arc<Model>) {
        let mut rows = self.reports.listed().to_vec();
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
                self.bulk_error = match self.editor.set_matching(model, &p, &text) {
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
                self.bulk_error = self.editor.set_matching(model, ".*", &text).err();
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
        if let Some(e) = self.reports.failure(t, &spec) {
            ui.colored_label(ui.visuals().error_fg_color, format!("Error: {e}"));
            return;
        }
        // a still label, not a spinner: a spinner repaints every frame while it shows, and with a
        // software renderer (no GPU) each frame is painted on the CPU the quantizer is using (frames
        // came 60–105 ms apart while it showed); the job wakes the window when its result is in
        let Some(r) = self.reports.report(t, &spec).cloned() else {
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
                    .scale_range()
                    .unwrap_or((f32::INFINITY, f32::NEG_INFINITY));
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
        let clips = self.reports.clip_lines(t, &spec).cloned();
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
        let g = self.group.min(r.groups.saturating_sub(1));
        let levels = report_levels(&r, g);
        let threshold = matches!(spec.family, crate::quant::Family::Ternary)
            .then_some(r.threshold_mean)
            .flatten();
        plots::hist_ui(
            ui,
            &r,
            &levels,
            clips.as_deref(),
            threshold,
            self.log_counts,
        );
        if r.groups > 1 {
            plots::scales_plot(ui, &r);
            if let Some(h) = self.reports.group_histogram(t, &spec, g) {
                plots::group_plot(ui, g, h, &levels);
            }
        }
        if !r.codebook.is_empty() {
            plots::palette_ui(ui, &r);
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
                    .map(|s| (c.clone(), self.reports.report(t, &s).cloned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(spec: &str) -> Plan {
        Plan {
            default: crate::plan::Choice::parse(spec).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn a_plan_sent_from_elsewhere_is_one_undo_step_over_the_models_last_plan() {
        let dir = tempfile::tempdir().unwrap();
        let model = Arc::new(crate::nn::sample_mlp());
        // the last session left nf4 as this model's plan
        let mut last = Workbench {
            autosave_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        last.receive_plan(&model, plan("nf4"));
        let json = last.plan().to_json(&model, None);
        last.autosave(&model, &json);
        // a new workbench that has not shown the model yet gets a plan from the Mixed view
        let mut wb = Workbench {
            autosave_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        wb.receive_plan(&model, plan("int4"));
        assert_eq!(wb.plan().default, plan("int4").default);
        assert_eq!(wb.default_text, plan("int4").default.text());
        assert_eq!(wb.selected, Some(wb.reports.listed()[0]));
        assert!(wb.layer_text.starts_with("int4"));
        assert!(wb.undo());
        assert_eq!(wb.plan().default, plan("nf4").default);
        assert!(!wb.editor.can_undo());
        assert_eq!(
            wb.message.as_deref(),
            Some("Restored this model's plan from the last session")
        );
    }
}
