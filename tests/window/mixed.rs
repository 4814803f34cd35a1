//! The Mixed-precision view, driven through egui_kittest as a person would: compute the sensitivity,
//! move the budget, pin a layer, export and apply.

use egui::accesskit::Role;
use egui_kittest::kittest::Queryable as _;
use egui_kittest::Harness;
use quantscope::gui::{App, LayerSetting, Source, View};
use quantscope::plan::choose::Budget;

use crate::common::gui::open;

/// The sample model open on the Mixed-precision tab, sensitivity computed for a few candidates.
fn computed(candidates: &str) -> Harness<'static, App> {
    let mut h = open(Source::Sample, (1280.0, 900.0));
    h.get_by_role_and_label(Role::Button, "Mixed precision")
        .click();
    h.run();
    assert_eq!(h.state().view, View::Mixed);
    h.get_by_label_contains("Compute the sensitivity");
    let field = h.get_by_role_and_label(Role::TextInput, "Candidates");
    field.focus();
    h.run();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.run();
    h.get_by_role_and_label(Role::TextInput, "Candidates")
        .type_text(candidates);
    h.run();
    h.get_by_role_and_label(Role::Button, "Compute sensitivity")
        .click();
    h.step();
    for _ in 0..4000 {
        h.step();
        if !h.state().mixed.is_computing() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    h.run();
    assert!(
        h.state().mixed.sens.is_some(),
        "{:?}",
        h.state().mixed.error
    );
    h
}

#[test]
fn sensitivity_fills_the_heat_map_and_the_slider_re_solves() {
    let mut h = computed("int8,int4,int2:g16");
    {
        let m = &h.state().mixed;
        let s = m.sens.as_ref().unwrap();
        assert_eq!(s.layers.len(), 3);
        assert_eq!(s.candidates.len(), 3);
        assert_eq!(m.measure.name(), "end_to_end", "the sample model runs");
        assert!(m.front.len() >= 3);
    }
    h.get_by_label_contains("Sensitivity: KL of the outputs");
    h.get_by_label_contains("Trade-off");
    // every layer has a reason on screen
    for name in ["fc1.weight", "fc2.weight", "fc3.weight"] {
        h.get_by_role_and_label(Role::ComboBox, name);
    }
    h.get_by_label_contains("the most sensitive of 3 layers");
    // the slider's budget re-runs the search: a small budget, then a large one
    let (lo, hi) = h.state().mixed.mixed.as_ref().unwrap().bpw_range();
    h.state_mut().mixed.budget = lo + 0.01;
    h.run();
    let small = h.state().mixed.solution.clone().unwrap();
    h.state_mut().mixed.budget = hi;
    h.run();
    let large = h.state().mixed.solution.clone().unwrap();
    let m = h.state().mixed.mixed.as_ref().unwrap();
    assert!(m.bits_per_weight(&small) <= lo + 0.01);
    assert!(large.bits > small.bits && large.cost < small.cost);
    // the view's plan is the engine's optimum for that budget
    let want = m.solve(Budget::BitsPerWeight(hi)).unwrap();
    assert_eq!(want.choice, large.choice);
    h.get_by_label_contains("plan: 8.3");
    // the slider itself is there, with its label
    h.get_by_role_and_label(Role::Slider, "Budget (bits per weight)");
}

#[test]
fn pinning_a_layer_holds_it_and_excluding_keeps_it() {
    let mut h = computed("int8,int4,int2:g16");
    h.state_mut().mixed.budget = 3.5;
    h.run();
    // pin fc2 to int8 through its combo box
    h.get_by_role_and_label(Role::ComboBox, "fc2.weight")
        .click();
    h.run();
    h.get_by_label("pin int8").click();
    h.run();
    assert_eq!(h.state().mixed.settings[1], LayerSetting::Pin(0));
    let c = &h.state().mixed.choices[1];
    assert!(c.pinned && c.spec.starts_with("int8"), "{c:?}");
    h.get_by_label_contains("pinned by the user");
    // keep fc1 as it is
    h.get_by_role_and_label(Role::ComboBox, "fc1.weight")
        .click();
    h.run();
    h.get_by_label("keep").click();
    h.run();
    let c = &h.state().mixed.choices[0];
    assert!(c.excluded && c.spec == "none", "{c:?}");
    let (plan, _) = h.state().mixed.plan().unwrap();
    assert_eq!(
        plan.overrides["fc1.weight"].0,
        quantscope::plan::Choice::Keep
    );
}

#[test]
fn export_and_apply_write_what_the_cli_writes() {
    let mut h = computed("int8,int4");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("qc.json");
    h.state_mut().mixed.export_path = cfg.display().to_string();
    h.run();
    h.get_by_role_and_label(Role::Button, "Export").click();
    h.run();
    let text = std::fs::read_to_string(&cfg).expect("exported");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["quant_method"], "compressed-tensors");
    assert!(h
        .state()
        .mixed
        .message
        .as_deref()
        .unwrap()
        .starts_with("Exported"));
    // llama.cpp has no names for this MLP: a clear message, no file
    h.state_mut().mixed.export_target = quantscope::plan::export::Target::LlamaCpp;
    h.state_mut().mixed.export_path = dir.path().join("t.txt").display().to_string();
    h.run();
    h.get_by_role_and_label(Role::Button, "Export").click();
    h.run();
    assert!(h
        .state()
        .mixed
        .message
        .as_deref()
        .unwrap()
        .contains("no GGUF name"));
    h.get_by_label_contains("no GGUF name");

    let out = dir.path().join("applied");
    h.state_mut().mixed.apply_dir = out.display().to_string();
    h.state_mut().mixed.apply_packed = true;
    h.run();
    h.get_by_role_and_label(Role::Button, "Apply").click();
    h.step();
    for _ in 0..4000 {
        h.step();
        if !h.state().mixed.is_applying() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    h.run();
    let msg = h.state().mixed.message.clone().unwrap();
    assert!(msg.starts_with("Applied"), "{msg}");
    for f in [
        "digits_mlp.safetensors",
        "quantscope_plan.json",
        "quantscope_report.json",
        "quantscope_packed.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // the plan goes to the Quantize tab on request
    h.get_by_role_and_label(Role::Button, "Open in Quantize tab")
        .click();
    // the workbench starts its own background jobs on the new plan: step, do not wait for it to settle
    for _ in 0..4 {
        h.step();
    }
    assert_eq!(h.state().view, View::Workbench);
    assert_eq!(
        h.state().workbench.plan().default,
        quantscope::plan::Choice::Keep
    );
    assert_eq!(h.state().workbench.plan().overrides.len(), 3);
    // the plan came in as one undo step of the workbench's editor
    assert!(h.state_mut().workbench.undo());
    assert!(h.state().workbench.plan().overrides.is_empty());
}

#[test]
fn for_vllm_fused_layers_are_searched_and_set_together() {
    let llama = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lm/llama");
    let mut h = open(Source::Path(llama), (1400.0, 1000.0));
    h.get_by_role_and_label(Role::Button, "Mixed precision")
        .click();
    h.run();
    h.state_mut().mixed.candidates_text = "int8,int4,nvfp4".into();
    h.state_mut().mixed.end_to_end = false;
    h.run();
    h.get_by_role_and_label(Role::Button, "Compute sensitivity")
        .click();
    crate::common::gui::step_until(&mut h, std::time::Duration::from_secs(120), |a| {
        !a.mixed.is_computing()
    });
    h.run();
    h.get_by_role_and_label(Role::ComboBox, "Runtime").click();
    h.run();
    h.get_by_label("vllm").click();
    h.run();
    let name = |b: usize, p: &str| format!("model.layers.{b}.self_attn.{p}.weight");
    {
        let m = &h.state().mixed;
        assert_eq!(m.runtime, quantscope::plan::runtime::Runtime::Vllm);
        let spec = |n: &str| {
            m.choices
                .iter()
                .find(|c| c.name == n)
                .unwrap_or_else(|| {
                    panic!(
                        "{n}: {:?} {:?} sens {} mixed {:?} budget {}",
                        m.error,
                        m.choices,
                        m.sens.is_some(),
                        m.mixed.as_ref().map(|x| x.bpw_range()),
                        m.budget
                    )
                })
                .clone()
        };
        let q = spec(&name(0, "q_proj"));
        assert_eq!(q.spec, spec(&name(0, "k_proj")).spec);
        assert_eq!(q.spec, spec(&name(0, "v_proj")).spec);
        assert!(
            q.group.as_deref().is_some_and(|g| g.contains("qkv_proj")),
            "{q:?} {:?}",
            m.error
        );
        assert!(!q.spec.starts_with("nvfp4"));
        let (plan, _) = m.plan().unwrap();
        assert_eq!(plan.target, quantscope::plan::runtime::Runtime::Vllm);
    }
    assert_eq!(
        h.query_all_by_label_contains("tied: qkv_proj of model.layers.0.self_attn")
            .count(),
        3
    );
    // pinning one member pins its group
    h.get_by_role_and_label(Role::ComboBox, &name(0, "k_proj"))
        .click();
    h.run();
    h.get_by_label("pin int8").click();
    h.run();
    let m = &h.state().mixed;
    for p in ["q_proj", "k_proj", "v_proj"] {
        let c = m.choices.iter().find(|c| c.name == name(0, p)).unwrap();
        assert!(c.pinned && c.spec.starts_with("int8"), "{c:?}");
    }
    // the plan, greedy's and the uniform candidates scored on held-out text
    h.get_by_role_and_label(Role::Button, "Score on text")
        .click();
    crate::common::gui::step_until(&mut h, std::time::Duration::from_secs(120), |a| {
        !a.mixed.is_judging()
    });
    h.run();
    {
        let (_, r) = h.state().mixed.judged.as_ref().expect("scored");
        let j = r.as_ref().expect("scored without error");
        assert_eq!(j.rows[0].0, "searched plan");
        assert!(j.rows.iter().any(|r| r.0 == "uniform int4"));
        assert!(j.rows.iter().all(|(_, _, c)| c.mean_kl().is_finite()));
    }
    h.get_by_label_contains("float perplexity");
    if let Ok(path) = std::env::var("QS_SHOT") {
        let img = h.render().expect("renders");
        img.save(path).unwrap();
    }
    // with vllm chosen, a candidate it cannot load is refused before anything is measured
    h.state_mut().mixed.candidates_text = "int8,nf4".into();
    h.run();
    h.get_by_role_and_label(Role::Button, "Compute sensitivity")
        .click();
    h.run();
    let err = h.state().mixed.candidates_error.clone().expect("refused");
    assert!(err.contains("vLLM cannot load nf4"), "{err}");
    assert!(!h.state().mixed.is_computing());
}

#[test]
fn measurements_are_saved_to_a_file_reused_and_a_foreign_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cells.json");
    let llama = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lm/llama");
    let compute = |h: &mut Harness<'static, App>| {
        h.get_by_role_and_label(Role::Button, "Compute sensitivity")
            .click();
        crate::common::gui::step_until(h, std::time::Duration::from_secs(120), |a| {
            !a.mixed.is_computing()
        });
        h.run();
    };
    // the Mixed view on `source` with two candidates, weight measures only, and the measurements file
    let mixed_on = |source: Source| {
        let mut h = open(source, (1400.0, 1000.0));
        h.get_by_role_and_label(Role::Button, "Mixed precision")
            .click();
        h.run();
        h.state_mut().mixed.candidates_text = "int8,int4".into();
        h.state_mut().mixed.end_to_end = false;
        h.state_mut().mixed.measurements_path = file.display().to_string();
        h.run();
        h
    };
    let mut h = mixed_on(Source::Path(llama.clone()));
    compute(&mut h);
    assert_eq!(h.state().mixed.error, None);
    h.get_by_label_contains("measurements saved to");
    let saved: quantscope::plan::sensitivity::Cache =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let sens = h.state().mixed.sens.clone().unwrap();
    assert_eq!(saved.cells.len(), sens.layers.len() * 2);
    let first = &sens.cells[0][0];
    let kept = saved.get(&sens.layers[0].name, &first.spec).unwrap();
    assert_eq!(kept.weight_mse, first.weight_mse);

    // a fresh window reuses the file's cells: a poisoned value comes back as it was saved
    let mut poisoned = saved.clone();
    let key = format!("{}\t{}", sens.layers[0].name, first.spec);
    poisoned.cells.get_mut(&key).unwrap().weight_mse = 12345.0;
    poisoned.save(&file).unwrap();
    let mut h = mixed_on(Source::Path(llama));
    compute(&mut h);
    let again = h.state().mixed.sens.clone().unwrap();
    assert_eq!(again.cells[0][0].weight_mse, 12345.0);

    // another model's file is refused, and left as it was
    let before = std::fs::read_to_string(&file).unwrap();
    let mut h = mixed_on(Source::Sample);
    compute(&mut h);
    let err = h.state().mixed.error.clone().unwrap_or_default();
    assert!(err.contains("another model"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}
