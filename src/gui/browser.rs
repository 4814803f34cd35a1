//! The model browser: open a model, see its layers with their statistics, and look at one layer's
//! weight histogram and per-channel ranges. Loading and statistics run in a background job; the table
//! fills in as results arrive.

use crate::formats::fmt_short;
use crate::jobs::{Job, Worker};
use crate::model::{group_layers, layer_patterns, Layer, LayerPattern, Model};
use crate::nn::transformer::{tied_embedding, TIED_LABEL};
use crate::stats::{summarize_tensors, Summary};
use egui::{Color32, RichText, Ui};
use egui_plot::{BarChart, Line, Plot, PlotPoints, VLine};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Histogram bins for the browser.
const BINS: usize = 128;
const RECENT_MAX: usize = 10;

/// The bundled sample model, so the window always opens on something real.
pub const SAMPLE_NAME: &str = "digits_mlp.safetensors (bundled sample)";
pub const SAMPLE_BYTES: &[u8] = crate::nn::SAMPLE_MLP;

/// What to open.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Path(PathBuf),
    Sample,
}

/// Asks the person for a file or folder. Called on a worker thread, so a blocking dialog is fine; tests
/// substitute their own.
pub trait FilePicker: Send + Sync {
    fn pick(&self, folder: bool) -> Option<PathBuf>;
}

/// The native dialog (rfd). With no desktop portal it returns nothing, and the window says so.
pub struct NativePicker;

impl FilePicker for NativePicker {
    fn pick(&self, folder: bool) -> Option<PathBuf> {
        let d = rfd::FileDialog::new().set_title("Open a model");
        if folder {
            d.pick_folder()
        } else {
            d.add_filter("safetensors or shard index", &["safetensors", "json"])
                .pick_file()
        }
    }
}

enum Msg {
    /// The model, its layers, and the embedding tensor when it is also the LM head (tied).
    Opened(Arc<Model>, Vec<Layer>, Option<usize>),
    Summary(usize, Arc<Summary>),
    Failed(String),
    Picked(Option<PathBuf>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Order,
    Name,
    Params,
    Absmax,
    Kurtosis,
    Std,
}

pub struct Browser {
    pub path_text: String,
    pub model: Option<Arc<Model>>,
    pub layers: Vec<Layer>,
    /// Layers grouped by repeated blocks, for the tree view.
    pub patterns: Vec<LayerPattern>,
    /// Show the tree of repeated blocks instead of the flat table.
    pub tree: bool,
    /// By tensor index.
    pub summaries: HashMap<usize, Arc<Summary>>,
    /// Index into `layers`.
    pub selected: Option<usize>,
    /// Which of the selected layer's tensors is shown (index into `Model::tensors`).
    pub shown_tensor: Option<usize>,
    pub filter: String,
    pub quantizable_only: bool,
    pub sort: SortBy,
    pub descending: bool,
    pub log_counts: bool,
    pub sort_channels: bool,
    pub error: Option<String>,
    pub recent: Vec<PathBuf>,
    /// Where the recent list is kept between runs (`None`: not kept, as in tests).
    pub recent_file: Option<PathBuf>,
    /// The embedding tensor (index into `Model::tensors`) of a transformer whose LM head is tied to it.
    pub tied_embedding: Option<usize>,
    picker: Arc<dyn FilePicker>,
    job: Option<Job<Msg>>,
    pick_job: Option<Job<Msg>>,
    loading_what: String,
}

impl Browser {
    pub fn new(picker: Arc<dyn FilePicker>, recent_file: Option<PathBuf>) -> Self {
        let recent = recent_file.as_deref().map(load_recent).unwrap_or_default();
        Browser {
            path_text: String::new(),
            model: None,
            layers: Vec::new(),
            patterns: Vec::new(),
            tree: false,
            summaries: HashMap::new(),
            selected: None,
            shown_tensor: None,
            filter: String::new(),
            quantizable_only: false,
            sort: SortBy::Order,
            descending: true,
            log_counts: false,
            sort_channels: false,
            error: None,
            recent,
            recent_file,
            tied_embedding: None,
            picker,
            job: None,
            pick_job: None,
            loading_what: String::new(),
        }
    }

    /// Start opening a model in the background; a load already running is cancelled.
    pub fn open(&mut self, source: Source, ctx: &egui::Context) {
        self.job = None; // dropping the old job cancels it
        self.error = None;
        self.loading_what = match &source {
            Source::Path(p) => p.display().to_string(),
            Source::Sample => SAMPLE_NAME.to_string(),
        };
        let ctx = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
        self.job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
            crate::jobs::background_pool().install(|| load(source, w))
        }));
    }

    pub fn is_loading(&self) -> bool {
        self.job.is_some()
    }

    /// Progress of the statistics scan in [0, 1].
    pub fn progress(&self) -> f32 {
        self.job
            .as_ref()
            .map(|j| j.progress.fraction())
            .unwrap_or(1.0)
    }

    /// Read what the background jobs produced; called every frame.
    pub fn poll(&mut self, ctx: &egui::Context) {
        let mut picked = None;
        if let Some(job) = &mut self.pick_job {
            for m in job.poll() {
                if let Msg::Picked(p) = m {
                    picked = Some(p);
                }
            }
            if job.is_finished() {
                self.pick_job = None;
            }
        }
        match picked {
            Some(Some(p)) => {
                self.path_text = p.display().to_string();
                self.open(Source::Path(p), ctx);
            }
            Some(None) => {
                self.error = Some(
                    "No file was chosen (or no file dialog is available on this desktop): type a path and press Open, or drop a file on the window.".into(),
                )
            }
            None => {}
        }
        let Some(job) = &mut self.job else { return };
        for m in job.poll() {
            match m {
                Msg::Opened(model, layers, tied) => {
                    self.tied_embedding = tied;
                    if let Source::Path(p) = source_of(&model) {
                        remember(&mut self.recent, p);
                        if let Some(f) = &self.recent_file {
                            save_recent(f, &self.recent);
                        }
                    }
                    self.model = Some(model);
                    self.patterns = layer_patterns(&layers);
                    self.layers = layers;
                    self.summaries.clear();
                    self.selected = self
                        .layers
                        .iter()
                        .position(|l| l.quantizable)
                        .or(Some(0))
                        .filter(|_| !self.layers.is_empty());
                    self.shown_tensor = self.selected.and_then(|i| self.layers[i].weight);
                }
                Msg::Summary(i, s) => {
                    self.summaries.insert(i, s);
                }
                Msg::Failed(e) => self.error = Some(e),
                Msg::Picked(_) => {}
            }
        }
        if job.is_finished() {
            self.job = None;
        } else {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    /// Whether `layer` holds the embedding tensor that is also the LM head.
    pub fn layer_is_tied(&self, layer: usize) -> bool {
        self.tied_embedding.is_some_and(|t| {
            self.layers
                .get(layer)
                .is_some_and(|l| l.tensors.contains(&t))
        })
    }

    /// A layer's name as the browser shows it: with [`TIED_LABEL`] on a tied embedding.
    pub fn layer_label(&self, layer: usize) -> String {
        let name = &self.layers[layer].name;
        if self.layer_is_tied(layer) {
            format!("{name} {TIED_LABEL}")
        } else {
            name.clone()
        }
    }

    pub fn select(&mut self, layer: usize) {
        if layer < self.layers.len() {
            self.selected = Some(layer);
            self.shown_tensor = self.layers[layer]
                .weight
                .or(self.layers[layer].tensors.first().copied());
        }
    }

    /// The layers as the table shows them: filtered and sorted.
    pub fn visible_rows(&self) -> Vec<usize> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<usize> = (0..self.layers.len())
            .filter(|&i| !self.quantizable_only || self.layers[i].quantizable)
            .filter(|&i| needle.is_empty() || self.layers[i].name.to_lowercase().contains(&needle))
            .collect();
        let key = |i: usize| -> f64 {
            let s = self.layers[i].weight.and_then(|t| self.summaries.get(&t));
            match self.sort {
                SortBy::Params => self.layers[i].parameters as f64,
                SortBy::Absmax => s.map(|s| s.stats.absmax).unwrap_or(f64::NEG_INFINITY),
                SortBy::Kurtosis => s.map(|s| s.stats.kurtosis).unwrap_or(f64::NEG_INFINITY),
                SortBy::Std => s.map(|s| s.stats.std).unwrap_or(f64::NEG_INFINITY),
                SortBy::Order | SortBy::Name => 0.0,
            }
        };
        match self.sort {
            SortBy::Order => {}
            SortBy::Name => rows.sort_by(|&a, &b| self.layers[a].name.cmp(&self.layers[b].name)),
            _ => rows.sort_by(|&a, &b| key(a).total_cmp(&key(b))),
        }
        if self.descending && self.sort != SortBy::Order {
            rows.reverse();
        }
        rows
    }

    pub fn ui(&mut self, ui: &mut Ui) {
        let ctx = ui.ctx().clone();
        self.poll(&ctx);
        // a file dropped on the window opens it
        let dropped: Option<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .find(|p| !p.as_os_str().is_empty())
        });
        if let Some(p) = dropped {
            self.path_text = p.display().to_string();
            self.open(Source::Path(p), &ctx);
        }
        egui::Panel::top("browser_open").show(ui, |ui| self.open_ui(ui));
        egui::Panel::left("layer_table")
            .resizable(true)
            .default_size(640.0)
            .show(ui, |ui| self.table_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| self.details_ui(ui));
        });
    }

    fn open_ui(&mut self, ui: &mut Ui) {
        let ctx = ui.ctx().clone();
        ui.horizontal(|ui| {
            if ui
                .button("Open file…")
                .on_hover_text("A .safetensors file or a shard index (.index.json)")
                .clicked()
            {
                self.start_pick(false, &ctx);
            }
            if ui
                .button("Open folder…")
                .on_hover_text("A Hugging Face model folder or a sharded checkpoint")
                .clicked()
            {
                self.start_pick(true, &ctx);
            }
            let label = ui.label("Path");
            let edit = ui
                .add(egui::TextEdit::singleline(&mut self.path_text).desired_width(360.0))
                .labelled_by(label.id)
                .on_hover_text("Type or paste a path, then press Enter or Open");
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if (ui.button("Open").clicked() || enter) && !self.path_text.trim().is_empty() {
                let p = PathBuf::from(self.path_text.trim());
                self.open(Source::Path(p), &ctx);
            }
            ui.menu_button("Recent", |ui| {
                if self.recent.is_empty() {
                    ui.label("Nothing opened yet");
                }
                let mut chosen = None;
                for p in &self.recent {
                    if ui.button(p.display().to_string()).clicked() {
                        chosen = Some(p.clone());
                    }
                }
                if let Some(p) = chosen {
                    self.path_text = p.display().to_string();
                    self.open(Source::Path(p), &ctx);
                    ui.close();
                }
            });
            if ui
                .button("Sample model")
                .on_hover_text("The bundled MLP trained on 8×8 digits")
                .clicked()
            {
                self.open(Source::Sample, &ctx);
            }
        });
        if let Some(job) = &self.job {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.add(
                    egui::ProgressBar::new(job.progress.fraction())
                        .desired_width(300.0)
                        .text(format!("Loading {}", self.loading_what)),
                );
                if ui.button("Cancel").clicked() {
                    job.cancel();
                }
            });
        }
        if let Some(e) = self.error.clone() {
            ui.horizontal(|ui| {
                ui.colored_label(ui.visuals().error_fg_color, format!("Error: {e}"));
                if ui.small_button("Dismiss").clicked() {
                    self.error = None;
                }
            });
        }
        if let Some(m) = &self.model {
            let arch = m
                .config
                .as_ref()
                .and_then(|c| c.architecture.clone().or(c.model_type.clone()))
                .map(|a| format!(" · {a}"))
                .unwrap_or_default();
            let quantizable: u64 = self
                .layers
                .iter()
                .filter(|l| l.quantizable)
                .map(|l| l.parameters)
                .sum();
            ui.label(format!(
                "{}{arch} · {} tensors in {} layers · {} parameters ({} in quantizable weights) · {} on disk in {} file(s)",
                m.source.display(),
                m.tensors.len(),
                self.layers.len(),
                group_digits(m.parameters()),
                group_digits(quantizable),
                human_bytes(m.file_bytes()),
                m.shards.len()
            ));
            if let Some(w) = &m.config_warning {
                ui.colored_label(ui.visuals().warn_fg_color, w);
            }
        }
    }

    fn start_pick(&mut self, folder: bool, ctx: &egui::Context) {
        let picker = self.picker.clone();
        let ctx = ctx.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx.request_repaint());
        self.pick_job = Some(Job::spawn(wake, move |w: &Worker<Msg>| {
            w.send(Msg::Picked(picker.pick(folder)));
        }));
    }

    fn table_ui(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            let l = ui.label("Filter");
            ui.add(egui::TextEdit::singleline(&mut self.filter).desired_width(180.0))
                .labelled_by(l.id)
                .on_hover_text("Show only layers whose name contains this text");
            ui.checkbox(&mut self.quantizable_only, "quantizable only")
                .on_hover_text(
                    "Hide norms, biases-only modules and other tensors that stay in float",
                );
            ui.checkbox(&mut self.tree, "group blocks").on_hover_text(
                "Show repeated blocks as a tree: model.layers.{0..29}.self_attn.q_proj",
            );
        });
        if self.tree {
            self.tree_ui(ui);
            return;
        }
        let rows = self.visible_rows();
        // keyboard: up/down move the selection through the visible rows
        if let Some(sel) = self.selected {
            let (up, down) = ui.input(|i| {
                (
                    i.key_pressed(egui::Key::ArrowUp),
                    i.key_pressed(egui::Key::ArrowDown),
                )
            });
            let nothing_focused = ui.ctx().memory(|m| m.focused().is_none());
            if nothing_focused && (up || down) {
                if let Some(pos) = rows.iter().position(|&r| r == sel) {
                    let next = if up {
                        pos.saturating_sub(1)
                    } else {
                        (pos + 1).min(rows.len() - 1)
                    };
                    self.select(rows[next]);
                }
            }
        }
        use egui_extras::{Column, TableBuilder};
        let mut clicked = None;
        let mut sort_clicked = None;
        TableBuilder::new(ui)
            .striped(true)
            .resizable(true)
            .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
            .column(Column::initial(250.0).clip(true))
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::auto())
            .header(20.0, |mut h| {
                for (label, sort) in [
                    ("layer", SortBy::Name),
                    ("role", SortBy::Order),
                    ("shape", SortBy::Order),
                    ("params", SortBy::Params),
                    ("std", SortBy::Std),
                    ("absmax", SortBy::Absmax),
                    ("kurtosis", SortBy::Kurtosis),
                ] {
                    h.col(|ui| {
                        let arrow = if self.sort == sort && sort != SortBy::Order {
                            if self.descending {
                                " (high first)"
                            } else {
                                " (low first)"
                            }
                        } else {
                            ""
                        };
                        let text = RichText::new(format!("{label}{arrow}")).strong();
                        if ui.add(egui::Button::new(text).frame(false)).on_hover_text("Sort by this column; click again to reverse").clicked() {
                            sort_clicked = Some(sort);
                        }
                    });
                }
            })
            .body(|body| {
                body.rows(20.0, rows.len(), |mut row| {
                    let li = rows[row.index()];
                    let layer = &self.layers[li];
                    let w = layer.weight.and_then(|t| self.model.as_ref().map(|m| &m.tensors[t]));
                    let s = layer.weight.and_then(|t| self.summaries.get(&t));
                    row.set_selected(self.selected == Some(li));
                    let dim = |t: String| {
                        if layer.quantizable {
                            RichText::new(t)
                        } else {
                            RichText::new(t).weak()
                        }
                    };
                    row.col(|ui| {
                        let b = ui.add(egui::Button::selectable(self.selected == Some(li), dim(self.layer_label(li))).frame(false));
                        let b = if self.layer_is_tied(li) {
                            b.on_hover_text("This embedding matrix is also the LM head's weight (tie_word_embeddings): one tensor, so quantizing it quantizes both")
                        } else {
                            b
                        };
                        if b.clicked() {
                            clicked = Some(li);
                        }
                    });
                    row.col(|ui| {
                        ui.label(dim(layer.role.as_str().into()));
                    });
                    row.col(|ui| {
                        ui.label(dim(w.map(|w| format!("{:?}", w.shape)).unwrap_or_default()));
                    });
                    row.col(|ui| {
                        ui.label(dim(group_digits(layer.parameters)));
                    });
                    let stat = |f: fn(&Summary) -> f64| s.map(|s| fmt_short(f(s))).unwrap_or_else(|| "…".into());
                    row.col(|ui| {
                        ui.label(dim(stat(|s| s.stats.std)));
                    });
                    row.col(|ui| {
                        ui.label(dim(stat(|s| s.stats.absmax)));
                    });
                    row.col(|ui| {
                        let k = s.map(|s| s.stats.kurtosis);
                        let text = k.map(|k| format!("{k:.1}")).unwrap_or_else(|| "…".into());
                        // outlier-prone layers stand out
                        let rich = match k {
                            Some(k) if k > 20.0 && layer.quantizable => RichText::new(text).color(Color32::from_rgb(255, 140, 0)),
                            _ => dim(text),
                        };
                        ui.label(rich).on_hover_text("Excess kurtosis of the weight: 0 for a normal distribution; large values mean outliers that stretch a per-tensor scale");
                    });
                    if row.response().clicked() {
                        clicked = Some(li);
                    }
                });
            });
        if let Some(li) = clicked {
            self.select(li);
        }
        if let Some(sort) = sort_clicked {
            if self.sort == sort {
                self.descending = !self.descending;
            } else {
                self.sort = sort;
                self.descending = sort != SortBy::Name;
            }
        }
    }

    fn tree_ui(&mut self, ui: &mut Ui) {
        let needle = self.filter.to_lowercase();
        let mut clicked = None;
        egui::ScrollArea::vertical()
            .auto_shrink(false)
            .show(ui, |ui| {
                for p in &self.patterns {
                    let members: Vec<usize> = p
                        .layers
                        .iter()
                        .copied()
                        .filter(|&i| !self.quantizable_only || self.layers[i].quantizable)
                        .filter(|&i| {
                            needle.is_empty()
                                || self.layers[i].name.to_lowercase().contains(&needle)
                        })
                        .collect();
                    if members.is_empty() {
                        continue;
                    }
                    let row = |ui: &mut Ui, i: usize, label: &str| -> bool {
                        let l = &self.layers[i];
                        let s = l.weight.and_then(|t| self.summaries.get(&t));
                        let stats = s
                            .map(|s| {
                                format!(
                                    "  absmax {}  kurtosis {:.1}",
                                    fmt_short(s.stats.absmax),
                                    s.stats.kurtosis
                                )
                            })
                            .unwrap_or_default();
                        let tied = if self.layer_is_tied(i) {
                            format!(" {TIED_LABEL}")
                        } else {
                            String::new()
                        };
                        let text = format!("{label}{tied}  [{}]{stats}", l.role.as_str());
                        let text = if l.quantizable {
                            RichText::new(text)
                        } else {
                            RichText::new(text).weak()
                        };
                        ui.add(
                            egui::Button::selectable(self.selected == Some(i), text).frame(false),
                        )
                        .clicked()
                    };
                    if p.layers.len() == 1 {
                        if row(ui, members[0], &p.pattern) {
                            clicked = Some(members[0]);
                        }
                        continue;
                    }
                    let worst = members
                        .iter()
                        .filter_map(|&i| self.layers[i].weight.and_then(|t| self.summaries.get(&t)))
                        .map(|s| s.stats.kurtosis)
                        .fold(f64::NEG_INFINITY, f64::max);
                    let header = if worst.is_finite() {
                        format!(
                            "{}  ({} layers, max kurtosis {:.1})",
                            p.pattern,
                            members.len(),
                            worst
                        )
                    } else {
                        format!("{}  ({} layers)", p.pattern, members.len())
                    };
                    egui::CollapsingHeader::new(header)
                        .id_salt(&p.pattern)
                        .show(ui, |ui| {
                            for &i in &members {
                                if row(ui, i, &self.layers[i].name) {
                                    clicked = Some(i);
                                }
                            }
                        });
                }
            });
        if let Some(i) = clicked {
            self.select(i);
        }
    }

    fn details_ui(&mut self, ui: &mut Ui) {
        let (Some(model), Some(li)) = (self.model.clone(), self.selected) else {
            ui.label(if self.is_loading() {
                "Opening…"
            } else {
                "Open a model to see its layers."
            });
            return;
        };
        let layer = self.layers[li].clone();
        ui.heading(self.layer_label(li));
        ui.label(format!(
            "{} · {} parameters · {}",
            layer.role.as_str(),
            group_digits(layer.parameters),
            if layer.quantizable {
                "quantizable"
            } else {
                "kept in float"
            }
        ));
        ui.horizontal_wrapped(|ui| {
            for &t in &layer.tensors {
                let info = &model.tensors[t];
                let mut text = format!(
                    "{} {:?} {:?}",
                    info.name.rsplit('.').next().unwrap_or(&info.name),
                    info.dtype,
                    info.shape
                );
                if self.tied_embedding == Some(t) {
                    text = format!("{text} {TIED_LABEL}");
                }
                if ui
                    .selectable_label(self.shown_tensor == Some(t), text)
                    .clicked()
                {
                    self.shown_tensor = Some(t);
                }
            }
        });
        let Some(ti) = self.shown_tensor else { return };
        let info = &model.tensors[ti];
        let Some(s) = self.summaries.get(&ti).cloned() else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("computing statistics…");
            });
            return;
        };
        let st = &s.stats;
        egui::Grid::new("tensor_stats")
            .num_columns(8)
            .spacing([14.0, 3.0])
            .striped(true)
            .show(ui, |ui| {
                for (k, v) in [
                    ("numel", group_digits(st.numel as u64)),
                    ("min", fmt_short(st.min)),
                    ("max", fmt_short(st.max)),
                    ("mean", fmt_short(st.mean)),
                ] {
                    ui.label(k);
                    ui.monospace(v);
                }
                ui.end_row();
                for (k, v) in [
                    ("std", fmt_short(st.std)),
                    ("absmax", fmt_short(st.absmax)),
                    ("kurtosis", format!("{:.2}", st.kurtosis)),
                    ("zeros", group_digits(st.zeros as u64)),
                ] {
                    ui.label(k);
                    ui.monospace(v);
                }
                ui.end_row();
                for (k, v) in [
                    ("p99 |x|", fmt_short(s.p99)),
                    ("p99.9 |x|", fmt_short(s.p99_9)),
                    ("p99.99 |x|", fmt_short(s.p99_99)),
                    ("NaN / Inf", format!("{} / {}", st.nan, st.inf)),
                ] {
                    ui.label(k);
                    ui.monospace(v);
                }
                ui.end_row();
            });
        ui.add_space(6.0);
        ui.horizontal(|ui| {
            ui.strong("Weight histogram");
            ui.checkbox(&mut self.log_counts, "log counts")
                .on_hover_text(
                    "Plot log10 of the counts: the tails, where outliers live, become visible",
                );
        });
        histogram_plot(ui, &s, self.log_counts, info.numel());
        if let Some(ch) = &s.channels {
            ui.add_space(6.0);
            ui.horizontal(|ui| {
                ui.strong(format!("Per-output-channel range ({} channels)", ch.min.len()));
                ui.checkbox(&mut self.sort_channels, "sorted by absmax")
                    .on_hover_text("Order channels by their largest magnitude: a wide spread is why one scale per tensor wastes levels on most channels");
            });
            channel_plot(ui, ch, self.sort_channels, st.absmax);
            let (lo, hi) = ch
                .absmax
                .iter()
                .fold((f32::INFINITY, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
            if lo > 0.0 {
                ui.label(format!(
                    "Channel absmax spans {} … {} ({:.1}×): with one scale for the tensor, the quietest channel uses about {:.0} % of the levels.",
                    fmt_short(lo as f64),
                    fmt_short(hi as f64),
                    hi / lo,
                    100.0 * lo / hi
                ));
            }
        }
    }
}

fn histogram_plot(ui: &mut Ui, s: &Summary, log: bool, numel: usize) {
    let h = &s.histogram;
    let bars = super::bars::histogram_bars(h, log, 1.0);
    let st = s.stats;
    Plot::new("weight_hist")
        .height(220.0)
        .allow_scroll(false)
        .x_axis_label("weight value")
        .y_axis_label(if log { "log10(count) + 1" } else { "count" })
        .legend(egui_plot::Legend::default())
        .show(ui, |p| {
            p.bar_chart(
                BarChart::new(format!("{} values", group_digits(numel as u64)), bars)
                    .color(Color32::from_rgb(97, 175, 239)),
            );
            p.vline(VLine::new("min / max", st.min).color(Color32::from_rgb(224, 108, 117)));
            p.vline(VLine::new("min / max", st.max).color(Color32::from_rgb(224, 108, 117)));
            for (name, v, c) in [
                ("±p99.99 |x|", s.p99_99, Color32::from_rgb(229, 192, 123)),
                ("±p99.9 |x|", s.p99_9, Color32::from_rgb(152, 195, 121)),
                ("±p99 |x|", s.p99, Color32::from_rgb(198, 120, 221)),
            ] {
                p.vline(VLine::new(name, v).color(c));
                p.vline(VLine::new(name, -v).color(c));
            }
        });
}

fn channel_plot(ui: &mut Ui, ch: &crate::stats::ChannelRanges, sorted: bool, tensor_absmax: f64) {
    let mut order: Vec<usize> = (0..ch.min.len()).collect();
    if sorted {
        order.sort_by(|&a, &b| ch.absmax[b].total_cmp(&ch.absmax[a]));
    }
    let series = |v: &Vec<f32>| -> PlotPoints<'static> {
        order
            .iter()
            .enumerate()
            .map(|(x, &c)| [x as f64, v[c] as f64])
            .collect::<Vec<_>>()
            .into()
    };
    Plot::new("channel_ranges")
        .height(200.0)
        .allow_scroll(false)
        .x_axis_label(if sorted {
            "channel (sorted by absmax)"
        } else {
            "output channel"
        })
        .y_axis_label("value")
        .legend(egui_plot::Legend::default())
        .show(ui, |p| {
            p.line(Line::new("max", series(&ch.max)).color(Color32::from_rgb(229, 140, 60)));
            p.line(Line::new("min", series(&ch.min)).color(Color32::from_rgb(97, 175, 239)));
            p.hline(egui_plot::HLine::new("± tensor absmax", tensor_absmax).color(Color32::GRAY));
            p.hline(egui_plot::HLine::new("± tensor absmax", -tensor_absmax).color(Color32::GRAY));
        });
}

/// The background load: open the model, then summarise every tensor (largest layers' weights last so
/// the table fills quickly), reporting progress in bytes.
fn load(source: Source, w: &Worker<Msg>) {
    let opened = match &source {
        Source::Path(p) => Model::open(p),
        Source::Sample => Model::from_bytes(SAMPLE_NAME, Arc::from(SAMPLE_BYTES)),
    };
    let model = match opened {
        Ok(m) => Arc::new(m),
        Err(e) => {
            w.send(Msg::Failed(e.to_string()));
            return;
        }
    };
    let layers = group_layers(&model.tensors);
    let mut order: Vec<usize> = layers
        .iter()
        .flat_map(|l| l.tensors.iter().copied())
        .collect();
    order.sort_by_key(|&t| model.tensors[t].nbytes());
    w.progress.set_total(
        order
            .iter()
            .map(|&t| model.tensors[t].nbytes() as u64)
            .sum::<u64>()
            .max(1),
    );
    if !w.send(Msg::Opened(model.clone(), layers, tied_embedding(&model))) {
        return;
    }
    summarize_tensors(&model, &order, BINS, |t, s| {
        let sent = match s {
            Ok(s) => w.send(Msg::Summary(t, Arc::new(s))),
            Err(e) => w.send(Msg::Failed(e.to_string())),
        };
        w.progress.add(model.tensors[t].nbytes() as u64);
        sent && !w.cancelled()
    });
}

fn source_of(m: &Model) -> Source {
    if m.kind == crate::model::SourceKind::Memory {
        Source::Sample
    } else {
        Source::Path(m.source.clone())
    }
}

fn remember(recent: &mut Vec<PathBuf>, p: PathBuf) {
    let p = std::fs::canonicalize(&p).unwrap_or(p);
    recent.retain(|r| *r != p);
    recent.insert(0, p);
    recent.truncate(RECENT_MAX);
}

fn load_recent(file: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save_recent(file: &Path, recent: &[PathBuf]) {
    // best effort: the list is a convenience, so a read-only config folder is not an error
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(text) = serde_json::to_string_pretty(recent) {
        let _ = crate::model::write_atomic(file, text);
    }
}

/// `$XDG_CONFIG_HOME/quantscope/recent.json`, or `~/.config/quantscope/recent.json`.
pub fn default_recent_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("quantscope").join("recent.json"))
}

pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
