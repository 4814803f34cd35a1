//! The training lab, driven through egui_kittest: start a run on the digits sample model, watch its
//! curves fill in, pause, resume and stop it, save the result and read it back; and the window's
//! Training tab.

use egui::accesskit::Role;
use egui_kittest::kittest::Queryable as _;
use egui_kittest::Harness;
use quantscope::gui::{RunState, Source, TrainLab, View};
use quantscope::model::Model;
use quantscope::nn::{dataset_bytes, evaluate, held_out, Network};
use std::sync::Arc;
use std::time::Duration;

struct Lab {
    lab: TrainLab,
    model: Arc<Model>,
}

fn digits() -> Arc<Model> {
    Arc::new(Model::open(std::path::Path::new("sample_models/digits_mlp.safetensors")).unwrap())
}

fn harness(epochs: usize) -> Harness<'static, Lab> {
    let mut lab = TrainLab::default();
    // short runs: a few hundred training rows
    lab.max_rows = Some(300);
    lab.epochs = epochs;
    Harness::builder()
        .with_size(egui::vec2(1280.0, 900.0))
        .build_ui_state(
            |ui, s: &mut Lab| s.lab.ui(ui, Some(s.model.clone())),
            Lab {
                lab,
                model: digits(),
            },
        )
}

/// Step frames until `done` or about 60 s.
fn step_until(h: &mut Harness<'static, Lab>, done: impl Fn(&Lab) -> bool) {
    for _ in 0..6000 {
        h.step();
        if done(h.state()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out; status: {}", h.state().lab.status);
}

fn epochs_seen(s: &Lab) -> usize {
    s.lab.run.as_ref().map_or(0, |r| r.epochs.len())
}

#[test]
fn a_run_trains_in_the_background_and_fills_the_curves_and_the_table() {
    let mut h = harness(3);
    h.get_by_role_and_label(Role::Button, "Start").click();
    h.step();
    assert!(h.state().lab.busy(), "the run is in the background");
    step_until(&mut h, |s| !s.lab.busy());
    let st = &h.state().lab;
    let run = st.run.as_ref().unwrap();
    assert_eq!(run.state, RunState::Finished);
    // epoch 0 (PTQ) and three epochs; a loss per step
    assert_eq!(run.epochs.len(), 4);
    assert_eq!(run.steps.len(), 3 * 300usize.div_ceil(32));
    let (before, after) = (
        run.epochs[0].held_out_accuracy,
        run.epochs[3].held_out_accuracy,
    );
    assert!(after > before + 0.1, "int2 QAT learns: {before} -> {after}");
    assert_eq!(st.rows.len(), 1);
    assert_eq!(st.rows[0].0.method, "int2");
    assert_eq!(st.rows[0].1, "uint8");
    h.step();
    h.get_by_label_contains("Before training (PTQ)");
    h.get_by_label("int2");
    // the new accuracy shows in the curve caption and in the table
    let shown = format!("{:.2} %", 100.0 * after);
    assert!(h.get_all_by_label_contains(&shown).count() >= 2, "{shown}");
}

#[test]
fn pause_resume_and_stop_a_run_then_save_it() {
    let mut h = harness(200);
    h.get_by_role_and_label(Role::Button, "Start").click();
    step_until(&mut h, |s| epochs_seen(s) >= 2);
    h.get_by_role_and_label(Role::Button, "Pause").click();
    h.step();
    assert!(h.state().lab.paused());
    assert_eq!(h.state().lab.run.as_ref().unwrap().state, RunState::Paused);
    // the worker waits: no step arrives while paused (one in flight may still land)
    for _ in 0..5 {
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    let steps = h.state().lab.run.as_ref().unwrap().steps.len();
    for _ in 0..10 {
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(h.state().lab.run.as_ref().unwrap().steps.len(), steps);
    h.get_by_role_and_label(Role::Button, "Resume").click();
    h.step();
    assert!(!h.state().lab.paused());
    step_until(&mut h, |s| {
        s.lab.run.as_ref().unwrap().steps.len() > steps + 2
    });
    h.get_by_role_and_label(Role::Button, "Stop").click();
    step_until(&mut h, |s| !s.lab.busy());
    let run = h.state().lab.run.as_ref().unwrap();
    assert_eq!(run.state, RunState::Stopped);
    let t = run.result.clone().expect("a stopped run keeps its result");
    assert!(t.stopped);
    assert!(t.after().epoch < 200);
    assert!(h.get_all_by_label_contains("stopped").count() >= 1);

    // save it, and the saved file is a sample model with the same accuracy
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stopped.safetensors");
    h.state_mut().lab.save_path = out.display().to_string();
    h.step();
    h.get_by_role_and_label(Role::Button, "Save").click();
    h.step();
    assert!(out.is_file(), "{}", h.state().lab.status);
    let m = Model::open(&out).unwrap();
    let net = Network::from_model(&m, None).unwrap();
    let data = held_out(&m, &dataset_bytes(&m).unwrap()).unwrap();
    assert_eq!(evaluate(&net, &data).unwrap().0, t.weights_only.0);
    assert!(m.metadata().unwrap()["trained_by"].contains("int2"));
    h.get_by_role_and_label(Role::Button, "Open saved model")
        .click();
    h.step();
    assert_eq!(h.state().lab.open_request.as_deref(), Some(out.as_path()));
}

#[test]
fn the_window_has_a_training_tab() {
    let mut h = crate::common::gui::open(Source::Sample, (1280.0, 900.0));
    h.get_by_role_and_label(Role::Button, "Training").click();
    h.step();
    assert_eq!(h.state().view, View::Training);
    h.step();
    h.get_by_role_and_label(Role::Button, "Start");
    h.get_by_role_and_label(Role::Button, "Run comparison");
    h.get_by_label_contains("Press Start");
}
