//! The window in egui_kittest: a harness on the whole app, a file dialog that answers as told, and
//! stepping until something holds.

use egui_kittest::Harness;
use quantscope::gui::{App, FilePicker, Source};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A file dialog that answers with a fixed path, as a person picking that file would (`None`: always
/// cancelled).
pub struct Picks(pub Option<PathBuf>);

impl FilePicker for Picks {
    fn pick(&self, _folder: bool) -> Option<PathBuf> {
        self.0.clone()
    }
}

/// The window, 1280 × 900 pixels, opening `open` on its first frame; its file dialog picks `picks`.
pub fn app_with(open: Option<Source>, picks: Option<PathBuf>) -> Harness<'static, App> {
    Harness::builder()
        .with_size(egui::vec2(1280.0, 900.0))
        .build_ui_state(
            |ui, app: &mut App| app.show(ui),
            App::new(open, Arc::new(Picks(picks)), None),
        )
}

/// Step `h` until `done` holds (5 ms between frames); panics after `limit`.
pub fn step_until<S>(h: &mut Harness<'static, S>, limit: Duration, done: impl Fn(&S) -> bool) {
    let start = Instant::now();
    loop {
        h.step();
        if done(h.state()) {
            return;
        }
        assert!(start.elapsed() < limit, "still waiting after {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Step the window until the background load has finished, then two frames more.
pub fn wait_loaded(h: &mut Harness<'static, App>) {
    for _ in 0..2000 {
        h.step();
        if !h.state().browser.is_loading() {
            h.step();
            h.step();
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the model did not finish loading");
}

/// The window on `source`, `size` pixels, stepped until its model has loaded.
pub fn open(source: Source, size: (f32, f32)) -> Harness<'static, App> {
    let mut h = Harness::builder()
        .with_size(egui::vec2(size.0, size.1))
        .build_ui_state(
            |ui, app: &mut App| app.show(ui),
            App::new(Some(source), Arc::new(Picks(None)), None),
        );
    step_until(&mut h, Duration::from_secs(60), |a| {
        a.browser.model.is_some() && !a.browser.is_loading()
    });
    h
}
