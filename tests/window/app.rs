//! The window, driven through egui_kittest as a person would: click, type, read what is shown.

use egui::accesskit::Role;
use egui_kittest::kittest::Queryable as _;
use egui_kittest::Harness;
use quantscope::gui::{App, Source, View};
use std::sync::Arc;

use crate::common::data;
use crate::common::gui::{app_with, wait_loaded, Picks};

/// The Formats lab, as a person who clicked its tab sees it.
fn harness() -> Harness<'static, App> {
    let mut h = app_with(None, None);
    h.run();
    h.get_by_role_and_label(Role::Button, "Formats lab").click();
    h.run();
    assert_eq!(h.state().view, View::FormatsLab);
    h
}

fn set_value(h: &mut Harness<'static, App>, text: &str) {
    let field = h.get_by_role_and_label(Role::TextInput, "Value");
    field.focus();
    h.run();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.run();
    h.get_by_role_and_label(Role::TextInput, "Value")
        .type_text(text);
    h.run();
}

#[test]
fn choosing_a_format_shows_its_bits() {
    let mut h = harness();
    h.run();
    // the lab opens on fp8_e4m3 with 0.3 typed: 0.3 → 0.3125 = 0 0101 010
    h.get_by_label_contains("Bits: 0 0101 010");
    h.get_by_role_and_label(Role::Button, "fp4_e2m1").click();
    h.run();
    assert_eq!(h.state().formats_lab.format.name, "fp4_e2m1");
    // 0.3 in E2M1 lies between 0 and 0.5, nearer 0.5 (code 0001)
    h.get_by_label_contains("Bits: 0 00 1");
    h.get_by_label_contains("code 0x1");
}

#[test]
fn typing_a_value_shows_bits_value_and_rounding() {
    let mut h = harness();
    h.run();
    h.get_by_role_and_label(Role::Button, "fp4_e2m1").click();
    h.run();
    set_value(&mut h, "2.6");
    assert_eq!(h.state().formats_lab.value_text, "2.6");
    // 2.6 → 3 (0 10 1), rounded away from zero; truncation would give 2 (0 10 0)
    h.get_by_label_contains("Bits: 0 10 1");
    h.get_by_label("3");
    h.get_by_label("rounded away from zero (nearest)");
    h.get_by_label("0 10 0 = 2");
    // a tie: 2.5 sits half-way between 2 and 3 and goes to the even code, 2
    set_value(&mut h, "2.5");
    h.get_by_label("tie, rounded to even (toward zero)");
    h.get_by_label_contains("Bits: 0 10 0");
}

#[test]
fn a_bad_value_says_why_and_keeps_the_bits() {
    let mut h = harness();
    h.run();
    let before = h.state().formats_lab.code;
    set_value(&mut h, "abc");
    h.get_by_label_contains("is not a number");
    assert_eq!(h.state().formats_lab.code, before);
}

#[test]
fn clicking_a_bit_flips_it() {
    let mut h = harness();
    h.run();
    h.get_by_role_and_label(Role::Button, "fp4_e2m1").click();
    h.run();
    set_value(&mut h, "1");
    h.get_by_label_contains("Bits: 0 01 0");
    // flip the sign bit (bit 3): −1
    h.get_by_label("bit 3").click();
    h.run();
    assert_eq!(h.state().formats_lab.value(), -1.0);
    h.get_by_label_contains("Bits: 1 01 0");
    h.get_by_label_contains("Bits set by hand");
    // and the mantissa bit: −1.5
    h.get_by_label("bit 0").click();
    h.run();
    assert_eq!(h.state().formats_lab.value(), -1.5);
}

#[test]
fn a_custom_integer_format_can_be_built() {
    let mut h = harness();
    h.run();
    h.get_by_label("intN").click();
    h.run();
    h.get_by_label("Use int8").click();
    h.run();
    assert_eq!(h.state().formats_lab.format.name, "int8");
    set_value(&mut h, "-3.5");
    // −3.5 ties to −4 (even), two's complement 1111 1100
    h.get_by_label_contains("Bits: 11111100");
}

#[test]
fn formats_can_be_added_to_the_number_line_and_table() {
    let mut h = harness();
    h.run();
    assert!(!h
        .state()
        .formats_lab
        .compare
        .iter()
        .any(|c| c == "fp4_e3m0"));
    h.get_by_role_and_label(Role::CheckBox, "fp4_e3m0").click();
    h.run();
    assert!(h
        .state()
        .formats_lab
        .compare
        .iter()
        .any(|c| c == "fp4_e3m0"));
    // the comparison table gains its row: E3M0 spans 0.25 … 16, 36.1 dB
    h.get_by_label("36.1");
}

/// One picture, to catch a broken layout: the top of the lab with fp4_e2m1 and 2.6 typed.
#[test]
fn snapshot_of_the_bit_layout() {
    let mut h = Harness::builder()
        .with_size(egui::vec2(760.0, 330.0))
        .with_render_cursor(false)
        .wgpu()
        .build_ui_state(
            |ui, app: &mut App| app.show(ui),
            App::new(None, Arc::new(Picks(None)), None),
        );
    h.state_mut().view = View::FormatsLab;
    h.state_mut().formats_lab.select("fp4_e2m1").unwrap();
    h.run();
    set_value(&mut h, "2.6");
    h.key_press(egui::Key::Escape);
    h.run();
    h.snapshot("formats_lab_fp4_bits");
}

/// Too narrow for both theme labels beside the tabs: one button switches, and every tab stays whole.
#[test]
fn a_narrow_window_switches_the_theme_with_one_button() {
    let mut h = Harness::builder()
        .with_size(egui::vec2(760.0, 330.0))
        .build_ui_state(
            |ui, app: &mut App| app.show(ui),
            App::new(None, Arc::new(Picks(None)), None),
        );
    h.run();
    let dark = h.ctx.theme() == egui::Theme::Dark;
    let (other, this) = if dark {
        ("Light", "Dark")
    } else {
        ("Dark", "Light")
    };
    assert!(
        h.query_by_label(this).is_none(),
        "one button, not both labels"
    );
    let training = h.get_by_label("Training").rect();
    let button = h.get_by_label(other).rect();
    assert!(
        training.max.x <= button.min.x,
        "the last tab ends before the button"
    );
    h.get_by_label(other).click();
    h.run();
    assert_ne!(h.ctx.theme() == egui::Theme::Dark, dark);
}

#[test]
fn the_window_opens_on_the_sample_model_with_statistics() {
    let mut h = app_with(Some(Source::Sample), None);
    wait_loaded(&mut h);
    let b = &h.state().browser;
    assert_eq!(b.layers.len(), 3);
    assert_eq!(b.summaries.len(), 6, "every tensor summarised");
    assert!(b.error.is_none());
    // the first quantizable layer is selected and its statistics are on screen
    h.get_by_role_and_label(Role::Button, "fc1");
    h.get_by_label_contains("17,226 parameters");
    h.get_by_label("numel");
    h.get_by_label("8,192");
}

#[test]
fn a_typed_path_opens_and_a_layer_can_be_selected() {
    let mut h = app_with(None, None);
    h.run();
    h.get_by_role_and_label(Role::TextInput, "Path").focus();
    h.run();
    h.get_by_role_and_label(Role::TextInput, "Path")
        .type_text(data("inspect_ref.safetensors").to_str().unwrap());
    h.run();
    h.get_by_role_and_label(Role::Button, "Open").click();
    wait_loaded(&mut h);
    let b = &h.state().browser;
    assert!(b
        .model
        .as_ref()
        .unwrap()
        .source
        .ends_with("inspect_ref.safetensors"));
    assert!(b.error.is_none(), "{:?}", b.error);
    h.get_by_role_and_label(Role::Button, "double").click();
    h.step();
    h.step();
    let b = &h.state().browser;
    assert_eq!(b.layers[b.selected.unwrap()].name, "double");
    // its absmax (about 1003) and the F64 dtype are shown
    h.get_by_label_contains("F64 [10, 10]");
    // sorting by a column header: kurtosis, highest first
    h.get_by_role_and_label(Role::Button, "kurtosis").click();
    h.step();
    h.step();
    assert_eq!(h.state().browser.sort, quantscope::gui::SortBy::Kurtosis);
    let rows = h.state().browser.visible_rows();
    let b = &h.state().browser;
    let k = |i: usize| {
        b.layers[i]
            .weight
            .and_then(|t| b.summaries.get(&t))
            .map(|s| s.stats.kurtosis)
            .unwrap_or(f64::NEG_INFINITY)
    };
    assert!(
        rows.windows(2).all(|w| k(w[0]) >= k(w[1])),
        "sorted by kurtosis, highest first"
    );
    h.get_by_label_contains("kurtosis (high first)");
    // keyboard: down moves to the next row
    let before = h.state().browser.selected;
    h.key_press(egui::Key::ArrowDown);
    h.step();
    h.step();
    assert_ne!(h.state().browser.selected, before);
}

#[test]
fn the_file_dialog_opens_what_was_picked() {
    let mut h = app_with(None, Some(data("inspect_ref.safetensors")));
    h.run();
    h.get_by_role_and_label(Role::Button, "Open file…").click();
    for _ in 0..200 {
        h.step();
        if h.state().browser.model.is_some() && !h.state().browser.is_loading() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    wait_loaded(&mut h);
    assert_eq!(h.state().browser.model.as_ref().unwrap().tensors.len(), 7);
}

#[test]
fn a_broken_file_shows_its_error_and_keeps_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.safetensors");
    let mut bytes = std::fs::read(data("inspect_ref.safetensors")).unwrap();
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&bad, bytes).unwrap();
    let mut h = app_with(Some(Source::Path(bad)), None);
    wait_loaded(&mut h);
    let err = h.state().browser.error.clone().expect("an error");
    assert!(
        err.contains("broken.safetensors") && err.contains("truncated"),
        "{err}"
    );
    h.get_by_label_contains("Error: ");
    // a missing file too, and the window keeps working: the sample still opens afterwards
    h.state_mut().browser.path_text = "/no/such/model.safetensors".into();
    h.get_by_role_and_label(Role::Button, "Open").click();
    wait_loaded(&mut h);
    assert!(h
        .state()
        .browser
        .error
        .as_deref()
        .unwrap()
        .contains("No such file"));
    h.get_by_role_and_label(Role::Button, "Sample model")
        .click();
    wait_loaded(&mut h);
    assert_eq!(h.state().browser.layers.len(), 3);
    assert!(h.state().browser.error.is_none());
}

/// Step until the workbench has every report it asked for.
fn wait_reports(h: &mut Harness<'static, App>) {
    for _ in 0..4000 {
        h.step();
        let done = {
            let app = h.state();
            match (&app.browser.model, app.workbench.selected) {
                (Some(m), Some(t)) => {
                    let wb = &app.workbench;
                    let all = (0..m.tensors.len())
                        .filter(|&i| m.tensors[i].quantizable())
                        .all(|i| match wb.spec_of(m, i) {
                            Some(s) => wb.report(i, &s).is_some(),
                            None => true,
                        });
                    // the candidates' reports and clip lines (computed in the background)
                    let cands = quantscope::gui::DEFAULT_CANDIDATES.iter().all(|c| {
                        let s = quantscope::quant::Spec::parse(c).unwrap();
                        wb.report(t, &s).is_some() && wb.clip_lines(t, &s).is_some()
                    });
                    all && cands
                }
                _ => false,
            }
        };
        if done {
            h.step();
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the workbench did not finish its reports");
}

fn workbench() -> Harness<'static, App> {
    let mut h = app_with(Some(Source::Sample), None);
    wait_loaded(&mut h);
    h.get_by_role_and_label(Role::Button, "Quantize").click();
    h.step();
    wait_reports(&mut h);
    assert_eq!(h.state().view, View::Workbench);
    h
}

fn type_into(h: &mut Harness<'static, App>, label: &str, text: &str) {
    h.get_by_role_and_label(Role::TextInput, label).focus();
    h.step();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.step();
    h.get_by_role_and_label(Role::TextInput, label)
        .type_text(text);
    h.step();
}

#[test]
fn editing_a_layer_spec_changes_the_plan_and_the_numbers_match_the_cli() {
    let mut h = workbench();
    assert_eq!(
        h.state().browser.model.as_ref().unwrap().tensors[h.state().workbench.selected.unwrap()]
            .name,
        "fc1.weight"
    );
    type_into(&mut h, "Layer spec", "int4:g16");
    h.get_by_role_and_label(Role::Button, "Apply").click();
    h.step();
    // the edit's work started in the frame that made it, not a frame later
    assert!(h.state().workbench.front_busy());
    wait_reports(&mut h);
    let spec = quantscope::quant::Spec::parse("int4:g16").unwrap();
    {
        let app = h.state();
        let m = app.browser.model.as_ref().unwrap();
        let t = m.find("fc1.weight").unwrap();
        assert_eq!(app.workbench.spec_of(m, t), Some(spec));
    }
    // a bad spec says why and changes nothing
    type_into(&mut h, "Layer spec", "int9");
    h.get_by_role_and_label(Role::Button, "Apply").click();
    h.step();
    h.get_by_label_contains("2 to 8 bits");
    // the window's numbers are the CLI's numbers for the same spec
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sample_models/digits_mlp.safetensors"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quantscope"))
        .args([
            "quantize",
            sample,
            "--spec",
            "int4:g16",
            "--layers",
            "fc1\\.weight",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli = &v["layers"][0];
    let app = h.state();
    let m = app.browser.model.as_ref().unwrap();
    let r = app
        .workbench
        .report(m.find("fc1.weight").unwrap(), &spec)
        .unwrap();
    assert_eq!(r.metrics.sqnr_db, cli["sqnr_db"].as_f64().unwrap());
    assert_eq!(r.metrics.mse, cli["mse"].as_f64().unwrap());
    assert_eq!(r.metrics.bytes, cli["bytes"].as_u64().unwrap());
    h.get_by_label_contains(&format!("SQNR {:.2} dB", r.metrics.sqnr_db));
}

#[test]
fn the_candidates_clip_lines_are_the_engines() {
    let mut h = workbench();
    // and those one bit below the selected int8:channel (computed after the candidates)
    let t = h.state().workbench.selected.unwrap();
    let int7 = quantscope::quant::Spec::parse("int7:channel").unwrap();
    crate::common::gui::step_until(&mut h, std::time::Duration::from_secs(20), |app| {
        app.workbench.clip_lines(t, &int7).is_some()
    });
    let app = h.state();
    let m = app.browser.model.as_ref().unwrap();
    let x = m.read_f32(&m.tensors[t]).unwrap();
    let want = quantscope::quant::report::clip_lines(&x, &m.tensors[t].shape, &int7).unwrap();
    assert_eq!(**app.workbench.clip_lines(t, &int7).unwrap(), want);
    let mut drawn = 0;
    for c in quantscope::gui::DEFAULT_CANDIDATES {
        let s = quantscope::quant::Spec::parse(c).unwrap();
        let want = quantscope::quant::report::clip_lines(&x, &m.tensors[t].shape, &s).unwrap();
        let got = app.workbench.clip_lines(t, &s).unwrap();
        assert_eq!(**got, want, "{c}");
        drawn += got.lines.len();
    }
    // int8, int4:g128 and fp8_e4m3 draw four lines each; the block and codebook formats none
    assert_eq!(drawn, 12);
}

#[test]
fn a_bulk_edit_and_undo_redo() {
    let mut h = workbench();
    type_into(&mut h, "Layer spec", "int4:g32");
    type_into(&mut h, "Pattern", "fc[23]");
    h.get_by_role_and_label(Role::Button, "Apply spec to matching")
        .click();
    h.step();
    let spec_of = |h: &Harness<'static, App>, name: &str| {
        let app = h.state();
        let m = app.browser.model.as_ref().unwrap();
        app.workbench
            .spec_of(m, m.find(name).unwrap())
            .map(|s| s.to_string())
    };
    let int4 = Some(
        quantscope::quant::Spec::parse("int4:g32")
            .unwrap()
            .to_string(),
    );
    let int8 = Some(quantscope::quant::Spec::parse("int8").unwrap().to_string());
    assert_eq!(spec_of(&h, "fc2.weight"), int4);
    assert_eq!(spec_of(&h, "fc3.weight"), int4);
    assert_eq!(
        spec_of(&h, "fc1.weight"),
        int8,
        "fc1 does not match the pattern"
    );
    h.get_by_role_and_label(Role::Button, "Undo").click();
    h.step();
    assert_eq!(spec_of(&h, "fc2.weight"), int8);
    h.get_by_role_and_label(Role::Button, "Redo").click();
    h.step();
    assert_eq!(spec_of(&h, "fc3.weight"), int4);
    // the default applies to everything without an override
    type_into(&mut h, "Default spec", "nf4");
    h.get_by_role_and_label(Role::Button, "Apply default")
        .click();
    h.step();
    assert_eq!(
        spec_of(&h, "fc1.weight"),
        Some(quantscope::quant::Spec::parse("nf4").unwrap().to_string())
    );
    assert_eq!(
        spec_of(&h, "fc2.weight"),
        int4,
        "overrides beat the default"
    );
}

#[test]
fn a_kmeans_spec_shows_its_palette() {
    let mut h = workbench();
    h.get_by_role_and_label(Role::Button, "kmeans4").click();
    h.step();
    wait_reports(&mut h);
    h.get_by_label("Codebook: 16 values");
    h.get_by_label_contains("16-entry fp32 codebook");
    let app = h.state();
    let m = app.browser.model.as_ref().unwrap();
    let t = m.find("fc1.weight").unwrap();
    let r = app
        .workbench
        .report(t, &quantscope::quant::Spec::parse("kmeans4").unwrap())
        .unwrap();
    assert_eq!(
        r.codebook.iter().map(|c| c.1).sum::<u64>(),
        8192,
        "every weight uses one swatch"
    );
}

#[test]
fn the_plan_saves_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let mut h = workbench();
    h.get_by_role_and_label(Role::Button, "ternary").click();
    h.step();
    type_into(&mut h, "Plan file", path.to_str().unwrap());
    h.get_by_role_and_label(Role::Button, "Save plan").click();
    h.step();
    assert!(path.exists());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        v["layers"]["fc1.weight"]["spec"],
        quantscope::quant::Spec::parse("ternary")
            .unwrap()
            .to_string()
    );
    // change the plan, then load the file back
    h.get_by_role_and_label(Role::Button, "nf4").click();
    h.step();
    h.get_by_role_and_label(Role::Button, "Load plan").click();
    h.step();
    let app = h.state();
    let m = app.browser.model.as_ref().unwrap();
    assert_eq!(
        app.workbench.spec_of(m, m.find("fc1.weight").unwrap()),
        Some(quantscope::quant::Spec::parse("ternary").unwrap())
    );
}

#[test]
fn the_plan_comes_back_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: &std::path::Path| {
        let mut app = App::new(Some(Source::Sample), Arc::new(Picks(None)), None);
        app.workbench.autosave_dir = Some(dir.to_path_buf());
        app.view = View::Workbench;
        let mut h = Harness::builder()
            .with_size(egui::vec2(1280.0, 900.0))
            .build_ui_state(|ui, app: &mut App| app.show(ui), app);
        wait_loaded(&mut h);
        h.step();
        h
    };
    let mut h = start(dir.path());
    h.get_by_role_and_label(Role::Button, "nf4").click();
    h.step();
    h.step();
    drop(h);
    let mut h = start(dir.path());
    h.step();
    let app = h.state();
    let m = app.browser.model.as_ref().unwrap();
    assert_eq!(
        app.workbench.spec_of(m, m.find("fc1.weight").unwrap()),
        Some(quantscope::quant::Spec::parse("nf4").unwrap())
    );
    h.get_by_label_contains("Restored this model's plan");
}

#[test]
fn rows_picked_with_ctrl_click_take_a_spec_together() {
    let mut h = workbench();
    h.get_by_role_and_label(Role::Button, "fc2.weight")
        .click_modifiers(egui::Modifiers::COMMAND);
    h.step();
    h.get_by_role_and_label(Role::Button, "fc3.weight")
        .click_modifiers(egui::Modifiers::COMMAND);
    h.step();
    assert_eq!(h.state().workbench.picked.len(), 2);
    type_into(&mut h, "Layer spec", "uint4:g16");
    h.get_by_role_and_label(Role::Button, "Apply to picked (2)")
        .click();
    h.step();
    let app = h.state();
    let m = app.browser.model.as_ref().unwrap();
    let want = Some(quantscope::quant::Spec::parse("uint4:g16").unwrap());
    assert_eq!(
        app.workbench.spec_of(m, m.find("fc2.weight").unwrap()),
        want
    );
    assert_eq!(
        app.workbench.spec_of(m, m.find("fc3.weight").unwrap()),
        want
    );
    assert_ne!(
        app.workbench.spec_of(m, m.find("fc1.weight").unwrap()),
        want
    );
}

#[test]
fn the_sample_models_accuracy_follows_the_plan() {
    let mut h = workbench();
    let wait_acc = |h: &mut Harness<'static, App>| {
        for _ in 0..2000 {
            h.step();
            let app = h.state();
            let sig = app
                .workbench
                .plan()
                .to_json(app.browser.model.as_ref().unwrap(), None);
            if let Some((_, a)) = app.workbench.accuracy().filter(|a| a.0 == sig) {
                return (sig, a.float, a.planned, a.examples);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("no accuracy");
    };
    let (_, float, int8, n) = wait_acc(&mut h);
    assert_eq!(n, 359);
    assert!(
        (float - 0.9694).abs() < 1e-4 && (int8 - float).abs() < 0.01,
        "{float} {int8}"
    );
    type_into(&mut h, "Default spec", "binary");
    h.get_by_role_and_label(Role::Button, "Apply default")
        .click();
    h.step();
    let (_, _, binary, _) = wait_acc(&mut h);
    assert!(binary < 0.8, "{binary}");
    h.get_by_label_contains("under this plan");
}
