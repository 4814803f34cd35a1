//! The Activations view, driven through egui_kittest: calibrate the CNN sample model, read the layer
//! table, pick a layer and a range method, and load a calibration pack.

use egui::accesskit::Role;
use egui_kittest::kittest::Queryable as _;
use egui_kittest::Harness;
use quantscope::activations::ranges::Method;
use quantscope::gui::{App, Source, View};
use std::path::PathBuf;

use crate::common::gui::open;

fn settle(h: &mut Harness<'static, App>) {
    for _ in 0..6000 {
        h.step();
        if !h.state().activations.busy() && !h.state().browser.is_loading() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // the reports start on the next frame once calibration is in
    for _ in 0..6000 {
        h.step();
        let a = &h.state().activations;
        if !a.busy() && a.reports.iter().all(|r| r.is_some()) && a.accuracy.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    h.step();
    h.step();
}

fn on_cnn() -> Harness<'static, App> {
    let path = PathBuf::from("sample_models/mnist_cnn.safetensors");
    let mut h = open(Source::Path(path), (1280.0, 900.0));
    h.get_by_role_and_label(Role::Button, "Activations").click();
    h.step();
    assert_eq!(h.state().view, View::Activations);
    settle(&mut h);
    h
}

#[test]
fn the_view_calibrates_the_sample_model_and_shows_every_layer() {
    let mut h = on_cnn();
    let st = &h.state().activations;
    let cal = st.calibration.as_ref().expect("calibrated");
    assert_eq!(cal.layers.len(), 4);
    assert!(
        st.reports.iter().all(|r| r.is_some()),
        "every layer has its report"
    );
    // the table shows every layer, the errors in both spaces, and the plots their titles
    for name in ["conv1", "conv2", "fc1", "fc2"] {
        assert!(h.get_all_by_label(name).count() >= 1, "{name}");
    }
    h.get_by_label_contains("EMA observer");
    // the model runs: its held-out accuracy, float / W4 / W4A8
    let [f, w, wa] = st.accuracy.expect("accuracy of a runnable model");
    assert!(f >= 0.97 && w > 0.9 && wa > 0.9, "{f} {w} {wa}");
    h.get_by_label_contains("Held-out accuracy: float 98.00 %");
    h.get_by_label_contains("max |x| per input channel");
    let r = st.reports[0].as_ref().unwrap();
    assert!(r.output_sqnr_db.unwrap() > 10.0 && r.weight_sqnr_db.unwrap() > 10.0);
    // pick conv2: its report is shown
    h.get_all_by_label("conv2").next().unwrap().click();
    h.step();
    h.step();
    assert_eq!(h.state().activations.selected, 1);
    h.get_by_label_contains("72 input columns");
    // another range method recomputes the reports with that range
    h.state_mut().activations.method = Method::Percentile(99.99);
    settle(&mut h);
    let r = h.state().activations.reports[1].as_ref().unwrap();
    assert_eq!(r.chosen.method, "p99.99");
    assert!(r.chosen.hi < r.max);
}

#[test]
fn a_calibration_pack_loads_and_a_bad_one_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("cal.safetensors");
    let m =
        quantscope::model::Model::open(std::path::Path::new("sample_models/mnist_cnn.safetensors"))
            .unwrap();
    let cal = quantscope::activations::capture(&m, 64, 32).unwrap();
    quantscope::activations::pack::write(&cal, &pack).unwrap();
    let mut h = on_cnn();
    h.get_by_role_and_label(Role::TextInput, "Pack:").focus();
    h.step();
    h.get_by_role_and_label(Role::TextInput, "Pack:")
        .type_text(pack.to_str().unwrap());
    h.step();
    h.get_by_role_and_label(Role::Button, "Load pack").click();
    settle(&mut h);
    assert_eq!(
        h.state().activations.calibration.as_ref().unwrap().examples,
        64
    );
    // a model file is not a pack
    h.state_mut().activations.pack_path = "sample_models/mnist_cnn.safetensors".into();
    h.get_by_role_and_label(Role::Button, "Load pack").click();
    settle(&mut h);
    h.get_by_label_contains("not a calibration pack");
}
