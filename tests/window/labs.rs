//! The Labs view, driven through egui_kittest: open the CNN sample model, go to the Labs tab, and see
//! the integer matmul lab's term table for a layer; change the weights and the picked element.

use egui::accesskit::Role;
use egui_kittest::kittest::Queryable as _;
use egui_kittest::Harness;
use quantscope::gui::{App, Lab, Source, View};
use std::path::PathBuf;

use crate::common::gui::open;

/// Step until the lab has a result for its current settings and no work is running.
fn settle(h: &mut Harness<'static, App>) {
    for _ in 0..6000 {
        h.step();
        let l = &h.state().labs.int_matmul;
        if !l.busy() && l.result.is_some() && !h.state().browser.is_loading() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    h.step();
    h.step();
}

fn on_cnn_labs() -> Harness<'static, App> {
    let path = PathBuf::from("sample_models/mnist_cnn.safetensors");
    let mut h = open(Source::Path(path), (1400.0, 1000.0));
    h.get_by_role_and_label(Role::Button, "Labs").click();
    h.step();
    assert_eq!(h.state().view, View::Labs);
    assert_eq!(h.state().labs.lab, Lab::IntMatmul);
    settle(&mut h);
    h
}

#[test]
fn the_labs_tab_shows_the_term_table_of_a_cnn_layer() {
    let mut h = on_cnn_labs();
    let st = &h.state().labs.int_matmul;
    let cal = st.calibration.as_ref().expect("calibrated");
    assert_eq!(cal.layers.len(), 4);
    let r = st.result.clone().expect("a result");
    assert_eq!(r.layer, "conv1");
    // conv1 is followed by a ReLU in the model: the lab fuses it by default
    assert!(st.relu && r.relu);
    // the term table: every term, when it is computed, and its value
    h.get_by_label_contains("Terms of output element");
    for t in [
        "a_W(i)",
        "Q_bias(i)",
        "sum q_W q_X",
        "acc",
        "M0 (Q31)",
        "SRDHM(acc, M0)",
        "q_Y",
    ] {
        assert!(h.get_all_by_label(t).count() >= 1, "term {t}");
    }
    assert!(h.get_all_by_label("offline").count() >= 5);
    assert!(h.get_all_by_label("per input").count() >= 5);
    let acc = r.terms.iter().find(|t| t.name == "acc").unwrap();
    h.get_by_label(&acc.value_text());
    h.get_by_label_contains("Scatter: float output");
    h.get_by_label_contains("Error of the integer path");
    assert_eq!(r.bound.violations, 0);
    assert!(r.max_code_diff <= 1);

    // pick fc1 with asymmetric weights: the lab recomputes in the background
    {
        let l = &mut h.state_mut().labs.int_matmul;
        l.selected = 2;
        l.weights = "uint8".into();
    }
    settle(&mut h);
    let r = h.state().labs.int_matmul.result.clone().unwrap();
    assert_eq!(r.layer, "fc1");
    assert!(r.weights.starts_with("uint8"));
    assert!(r.w_zeros.iter().any(|&z| z != 0));
    h.get_by_label_contains("fc1: Y = X W^T + b in integers");
    // a chosen element's terms
    h.state_mut().labs.int_matmul.pick = Some((3, 5));
    settle(&mut h);
    let r = h.state().labs.int_matmul.result.clone().unwrap();
    assert_eq!(r.pick, (3, 5));
    h.get_by_label_contains("row 3, output 5");
    // back to the worst element
    h.get_by_role_and_label(Role::Button, "Worst element")
        .click();
    settle(&mut h);
    assert_eq!(h.state().labs.int_matmul.pick, None);
}
