//! The window. Panels draw what the engine computed; they hold no numerics of their own.

mod formats_lab;

pub use formats_lab::FormatsLab;

/// The views of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    FormatsLab,
}

/// The whole application state, kept in the library so tests can drive it without a window.
pub struct App {
    pub view: View,
    pub formats_lab: FormatsLab,
}

impl Default for App {
    fn default() -> Self {
        App {
            view: View::FormatsLab,
            formats_lab: FormatsLab::default(),
        }
    }
}

impl App {
    pub fn show(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("top_bar").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("Quantscope");
                ui.separator();
                ui.selectable_value(&mut self.view, View::FormatsLab, "Formats lab")
                    .on_hover_text(
                        "Number formats: bit layouts, rounding, number lines, comparison",
                    );
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    let dark = ui.visuals().dark_mode;
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
            });
        });
        match self.view {
            View::FormatsLab => self.formats_lab.ui(ui),
        }
    }
}

struct EframeApp(App);

impl eframe::App for EframeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.0.show(ui);
    }
}

/// Open the window (blocks until it is closed).
pub fn run() -> eframe::Result {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Quantscope")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([640.0, 400.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Quantscope",
        options,
        Box::new(|_cc| Ok(Box::new(EframeApp(App::default())))),
    )
}
