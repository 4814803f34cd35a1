//! Opening the window in egui_kittest, shared by the GUI test files.

use egui_kittest::Harness;
use quantscope::gui::{App, FilePicker, Source};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A file dialog that is always cancelled.
pub struct NoPicks;

impl FilePicker for NoPicks {
    fn pick(&self, _folder: bool) -> Option<PathBuf> {
        None
    }
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

/// The window on `source`, `size` pixels, stepped until its model has loaded.
pub fn open(source: Source, size: (f32, f32)) -> Harness<'static, App> {
    let mut h = Harness::builder()
        .with_size(egui::vec2(size.0, size.1))
        .build_ui_state(
            |ui, app: &mut App| app.show(ui),
            App::new(Some(source), Arc::new(NoPicks), None),
        );
    step_until(&mut h, Duration::from_secs(60), |a| {
        a.browser.model.is_some() && !a.browser.is_loading()
    });
    h
}
