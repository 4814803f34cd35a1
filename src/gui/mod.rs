//! The window: one panel per view, each drawing what the engine computed, and the jobs that ask the
//! engine for it off the UI thread.

mod activations;
mod bars;
pub(crate) mod browser;
mod formats_lab;
mod labs;
mod lru;
mod mixed;
mod reports;
mod score_text;
mod spec_editor;
mod train_lab;
mod workbench;

pub use activations::ActivationsView;
pub use browser::{
    default_recent_file, Browser, FilePicker, NativePicker, SortBy, Source, SAMPLE_NAME,
};
pub use formats_lab::FormatsLab;
pub use labs::{IntMatmulLab, Lab, LabsView};
pub use mixed::{LayerSetting, MixedView, DEFAULT_MIXED_CANDIDATES};
pub use reports::Reports;
pub use score_text::{ScoreOnText, Scored};
pub use train_lab::{LabMode, RunState, TrainLab};
pub use workbench::{Workbench, DEFAULT_CANDIDATES};

use std::path::PathBuf;
use std::sync::Arc;

/// The views of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Model,
    Workbench,
    FormatsLab,
    Mixed,
    Activations,
    Labs,
    /// Temporary home of the training lab (to be folded into Labs).
    Training,
}

/// The whole application state, kept in the library so tests can drive it without a window.
pub struct App {
    pub view: View,
    pub browser: Browser,
    pub workbench: Workbench,
    pub formats_lab: FormatsLab,
    pub mixed: MixedView,
    pub activations: ActivationsView,
    /// "Score on text" for the Quantize tab's plan.
    pub score: ScoreOnText,
    pub labs: LabsView,
    pub training: TrainLab,
    /// Opened on the first frame (opening needs the egui context for repaint requests).
    pending_open: Option<Source>,
}

impl App {
    /// `open`: what to show first (`None`: nothing). `recent_file`: where the recent list lives.
    pub fn new(
        open: Option<Source>,
        picker: Arc<dyn FilePicker>,
        recent_file: Option<PathBuf>,
    ) -> Self {
        App {
            view: View::Model,
            browser: Browser::new(picker, recent_file),
            workbench: Workbench::default(),
            formats_lab: FormatsLab::default(),
            mixed: MixedView::default(),
            activations: ActivationsView::default(),
            score: ScoreOnText::default(),
            labs: LabsView::default(),
            training: TrainLab::default(),
            pending_open: open,
        }
    }

    pub fn show(&mut self, ui: &mut egui::Ui) {
        if let Some(src) = self.pending_open.take() {
            if let Source::Path(p) = &src {
                self.browser.path_text = p.display().to_string();
            }
            self.browser.open(src, ui.ctx());
        }
        egui::Panel::top("top_bar").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("Quantscope");
                ui.separator();
                ui.selectable_value(&mut self.view, View::Model, "Model")
                    .on_hover_text(
                        "Open a model and browse its layers, weight histograms and channel ranges",
                    );
                ui.selectable_value(&mut self.view, View::Workbench, "Quantize")
                    .on_hover_text("Choose formats per layer and watch the error and the size");
                ui.selectable_value(&mut self.view, View::FormatsLab, "Formats lab")
                    .on_hover_text(
                        "Number formats: bit layouts, rounding, number lines, comparison",
                    );
                ui.selectable_value(&mut self.view, View::Mixed, "Mixed precision")
                    .on_hover_text(
                        "Layer sensitivity, the best plan under a size budget, export and apply",
                    );
                ui.selectable_value(&mut self.view, View::Activations, "Activations")
                    .on_hover_text(
                        "Calibration: activation histograms and ranges, outlier channels, output-space error",
                    );
                ui.selectable_value(&mut self.view, View::Labs, "Labs")
                    .on_hover_text("Teaching labs: a layer as integer-only inference, term by term");
                ui.selectable_value(&mut self.view, View::Training, "Training")
                    .on_hover_text(
                        "Quantization-aware training, k-means fine-tuning, binary and ternary networks",
                    );
                let dark = ui.visuals().dark_mode;
                // both theme labels at the right where they fit beside the tabs; in a narrow window
                // one button that switches, so that nothing is drawn over the last tab
                if ui.available_width() >= 120.0 {
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui
                            .selectable_label(!dark, "Light")
                            .on_hover_text("Light theme")
                            .clicked()
                        {
                            ui.ctx().set_theme(egui::Theme::Light);
                        }
                        if ui
                            .selectable_label(dark, "Dark")
                            .on_hover_text("Dark theme")
                            .clicked()
                        {
                            ui.ctx().set_theme(egui::Theme::Dark);
                        }
                    });
                } else {
                    let (label, theme) = if dark {
                        ("Light", egui::Theme::Light)
                    } else {
                        ("Dark", egui::Theme::Dark)
                    };
                    if ui
                        .button(label)
                        .on_hover_text(format!("Switch to the {} theme", label.to_lowercase()))
                        .clicked()
                    {
                        ui.ctx().set_theme(theme);
                    }
                }
            });
        });
        // a score finishes (and a new model clears it) whichever view is shown
        self.score.poll(self.browser.model.as_ref());
        match self.view {
            View::Model => self.browser.ui(ui),
            View::Workbench => {
                // loads keep running in the background while another view is shown
                self.browser.poll(&ui.ctx().clone());
                if let Some(model) = self.browser.model.clone() {
                    // above the plan and its size: the plan judged on text
                    egui::Panel::top("score_on_text").show(ui, |ui| {
                        self.score.ui(ui, Some(&model), self.workbench.plan())
                    });
                }
                self.workbench.ui(ui, self.browser.model.clone())
            }
            View::FormatsLab => {
                self.browser.poll(&ui.ctx().clone());
                self.formats_lab.ui(ui)
            }
            View::Activations => {
                self.browser.poll(&ui.ctx().clone());
                self.activations.ui(ui, self.browser.model.clone())
            }
            View::Labs => {
                self.browser.poll(&ui.ctx().clone());
                self.labs.ui(ui, self.browser.model.clone())
            }
            View::Training => {
                self.browser.poll(&ui.ctx().clone());
                self.training.ui(ui, self.browser.model.clone());
                if let Some(p) = self.training.open_request.take() {
                    self.browser.path_text = p.display().to_string();
                    self.browser.open(Source::Path(p), ui.ctx());
                    self.view = View::Model;
                }
            }
            View::Mixed => {
                self.browser.poll(&ui.ctx().clone());
                self.mixed.ui(ui, self.browser.model.clone());
                // through the workbench's editor: one undo step, after the workbench has followed
                // the model (whose last plan it restores) so that the plan sent is not overwritten
                if let Some((p, model)) =
                    self.mixed.send_plan.take().zip(self.browser.model.clone())
                {
                    self.workbench.receive_plan(&model, p);
                    self.view = View::Workbench;
                }
            }
        }
    }
}

struct EframeApp(App, FrameTimes);

/// With `QUANTSCOPE_TRACE`: how many frames were built each second and the slowest of them.
#[derive(Default)]
struct FrameTimes {
    frames: u32,
    slowest: std::time::Duration,
    since: Option<std::time::Instant>,
}

impl FrameTimes {
    fn add(&mut self, took: std::time::Duration) {
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        self.frames += 1;
        self.slowest = self.slowest.max(took);
        if since.elapsed() >= std::time::Duration::from_secs(1) {
            crate::jobs::trace(format_args!(
                "frames: {} in {:.1?}, slowest {:.1?}",
                self.frames,
                since.elapsed(),
                self.slowest
            ));
            *self = FrameTimes::default();
        }
    }
}

impl eframe::App for EframeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let start = std::time::Instant::now();
        self.0.show(ui);
        // with QUANTSCOPE_TRACE, the frames that took long to build (egui's side; painting follows)
        let took = start.elapsed();
        if took > std::time::Duration::from_millis(8) {
            crate::jobs::trace(format_args!("slow frame: {took:.1?}"));
        }
        if crate::jobs::tracing() {
            self.1.add(took);
        }
    }
}

/// Open the window on `model` (the bundled sample model when `None`); blocks until it is closed.
pub fn run(model: Option<PathBuf>) -> eframe::Result {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Quantscope")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([640.0, 400.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    let open = Some(model.map(Source::Path).unwrap_or(Source::Sample));
    let recent = default_recent_file();
    let mut app = App::new(open, Arc::new(NativePicker), recent.clone());
    app.workbench.autosave_dir = recent
        .as_ref()
        .and_then(|r| r.parent())
        .map(|d| d.join("plans"));
    eframe::run_native(
        "Quantscope",
        options,
        Box::new(|_cc| Ok(Box::new(EframeApp(app, FrameTimes::default())))),
    )
}
