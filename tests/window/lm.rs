//! The window on tiny transformers (tests/data/lm), driven through egui_kittest: the Activations tab
//! calibrates a transformer on text and its reports equal the engine's; "Score on text" shows what
//! `plan::score::score` gives for the same plan and windows, and marks it stale when the plan changes;
//! the model browser labels a tied embedding as the LM head too.

use egui::accesskit::Role;
use egui_kittest::kittest::{NodeT as _, Queryable as _};
use egui_kittest::Harness;
use quantscope::activations::lm::{capture, Keep};
use quantscope::activations::ranges::Method;
use quantscope::activations::report::activation_report;
use quantscope::gui::{App, Source, View};
use quantscope::jobs::Progress;
use quantscope::model::Model;
use quantscope::nn::transformer::score::NoHooks;
use quantscope::nn::transformer::Transformer;
use quantscope::plan::score::{score, windows, Score};
use quantscope::quant::Spec;
use std::time::Duration;

use crate::common::gui::{open, step_until};
use crate::common::lm;

fn json<T: serde::Serialize>(x: &T) -> serde_json::Value {
    serde_json::to_value(x).unwrap()
}

/// The window on a tiny transformer, in the Activations tab, calibrated on 4 windows of 32 tokens
/// with every report in.
fn calibrated(name: &str) -> Harness<'static, App> {
    let mut h = open(Source::Path(lm(name)), (1280.0, 900.0));
    h.get_by_role_and_label(Role::Button, "Activations").click();
    h.step();
    assert_eq!(h.state().view, View::Activations);
    let a = &h.state().activations;
    assert!(a.transformer, "a transformer is recognised");
    assert!(
        a.calibration.is_none() && !a.busy(),
        "a transformer calibrates when asked"
    );
    h.get_by_label_contains("press Calibrate");
    h.state_mut().activations.windows = 4;
    h.state_mut().activations.ctx = 32;
    h.get_by_role_and_label(Role::Button, "Calibrate").click();
    step_until(&mut h, Duration::from_secs(120), |a| {
        let a = &a.activations;
        !a.busy() && a.calibration.is_some() && a.reports.iter().all(|r| r.is_some())
    });
    h.step();
    h
}

#[test]
fn calibrating_a_transformer_gives_the_engines_activations_and_reports() {
    let mut h = calibrated("llama");
    let model = Model::open(&lm("llama")).unwrap();
    let net = Transformer::from_model(&model).unwrap();
    let split = windows(&model, &net, None, 32, 4, 0).unwrap();
    assert_eq!(split.calibration.len(), 4);
    let cal = capture(
        &model,
        &net,
        &split.calibration,
        &split.describe,
        Keep::default(),
        &NoHooks,
    )
    .unwrap();
    let st = &h.state().activations;
    let got = st.calibration.as_ref().unwrap();
    // every linear layer (2 blocks × 7, and the LM head), recorded exactly as the engine records them
    assert_eq!(got.layers.len(), 15);
    assert_eq!(**got, cal);
    assert!(st.status.contains("15 layers"), "{}", st.status);
    // every report is the engine's report of that layer
    let s = |t: &str| Spec::parse(t).unwrap();
    for (i, l) in cal.layers.iter().enumerate() {
        let want = activation_report(l, Some(&model), &s("int4"), &s("uint8"), Method::MinMax, 80)
            .unwrap();
        let r = st.reports[i].as_ref().unwrap();
        assert_eq!(json(r), json(&want), "{}", l.name);
        assert!(!r.importance.is_empty() && r.importance == l.importance);
    }
    // pick the second block's down_proj: its report, with the importance matrix, is shown
    let name = "model.layers.1.mlp.down_proj";
    let i = cal.layers.iter().position(|l| l.name == name).unwrap();
    h.get_all_by_label(name).next().unwrap().click();
    h.step();
    h.step();
    assert_eq!(h.state().activations.selected, i);
    let r = h.state().activations.reports[i].clone().unwrap();
    h.get_by_label_contains(&format!("{} input columns", cal.layers[i].k));
    h.get_by_label_contains("max |x| per input channel");
    h.get_by_label_contains(&format!("hold {:.1} %)", 100.0 * r.importance_top_share));
    h.get_by_label_contains(&format!("Top channels: #{} ", r.importance_top[0]));
    // the filter lists only the matching layers
    h.state_mut().activations.filter = "down_proj".into();
    h.step();
    assert!(h.query_by_label("model.layers.0.mlp.down_proj").is_some());
    assert!(h.query_by_label("model.layers.0.mlp.up_proj").is_none());
}

#[test]
fn a_calibration_can_be_cancelled() {
    let mut h = open(Source::Path(lm("smollm_tied")), (1280.0, 900.0));
    h.get_by_role_and_label(Role::Button, "Activations").click();
    h.step();
    h.get_by_role_and_label(Role::Button, "Calibrate").click();
    h.step();
    // the frame that started the job shows its progress and Cancel
    assert!(h.state().activations.calibrating());
    h.get_by_role_and_label(Role::Button, "Cancel");
    h.state_mut().activations.cancel();
    h.step();
    let a = &h.state().activations;
    assert!(!a.busy() && a.calibration.is_none());
    h.get_by_label_contains("Calibration cancelled.");
}

/// Click "Score on text" in the Quantize tab on 3 windows of 32 tokens and wait for the result.
fn score_in_window(h: &mut Harness<'static, App>) -> Score {
    h.get_by_role_and_label(Role::Button, "Quantize").click();
    h.step();
    h.state_mut().score.windows = 3;
    h.state_mut().score.ctx = 32;
    h.get_by_role_and_label(Role::Button, "Score on text")
        .click();
    step_until(h, Duration::from_secs(120), |a| {
        !a.score.busy() && a.score.result.is_some()
    });
    h.step();
    h.state().score.result.as_ref().unwrap().score.clone()
}

#[test]
fn score_on_text_shows_the_engines_score_and_goes_stale_when_the_plan_changes() {
    let mut h = open(Source::Path(lm("llama")), (1280.0, 900.0));
    h.state_mut().workbench.set_default("int4:g16").unwrap();
    let got = score_in_window(&mut h);
    let model = Model::open(&lm("llama")).unwrap();
    let net = Transformer::from_model(&model).unwrap();
    let split = windows(&model, &net, None, 32, 0, 3).unwrap();
    let plan = h.state().workbench.plan().clone();
    let want = score(
        &model,
        &net,
        Some(&plan),
        &split.evaluation,
        &Progress::default(),
    )
    .unwrap();
    assert_eq!(json(&got), json(&want));
    let Score::NextToken { comparison: c, .. } = want else {
        panic!("llama is a decoder")
    };
    assert!(c.positions > 0 && c.mean_kl() > 0.0 && c.perplexity() != c.perplexity_reference());
    // the strip shows the numbers
    h.get_by_label_contains(&format!(
        "perplexity: float {:.3}, plan {:.3}",
        c.perplexity_reference(),
        c.perplexity()
    ));
    h.get_by_label_contains(&format!("mean KL {:.4}", c.mean_kl()));
    h.get_by_label_contains(&format!("same top-1 {:.1} %", 100.0 * c.top_agreement()));
    assert!(h.query_by_label_contains("stale").is_none());
    // another plan: the result stays, marked stale
    h.state_mut().workbench.set_default("int8").unwrap();
    h.step();
    assert!(h.state().score.stale(h.state().workbench.plan()));
    h.get_by_label_contains("stale: the plan changed");
}

#[test]
fn score_on_text_gives_an_encoder_its_embedding_cosine() {
    let mut h = open(Source::Path(lm("bert")), (1280.0, 900.0));
    h.state_mut().workbench.set_default("int4").unwrap();
    let got = score_in_window(&mut h);
    let Score::Embedding { mean_cosine, .. } = got else {
        panic!("bert is an encoder: {got:?}")
    };
    assert!(mean_cosine > 0.5 && mean_cosine < 1.0, "{mean_cosine}");
    h.get_by_label_contains(&format!("embedding cosine to float: mean {mean_cosine:.5}"));
}

#[test]
fn score_on_text_is_disabled_with_a_reason_for_a_sample_model() {
    let mut h = open(Source::Sample, (1280.0, 900.0));
    h.get_by_role_and_label(Role::Button, "Quantize").click();
    h.step();
    let b = h.get_by_role_and_label(Role::Button, "Score on text");
    assert!(b.accesskit_node().is_disabled());
    let why = h.state().score.runnable.clone().unwrap_err();
    assert!(why.contains("transformers"), "{why}");
}

#[test]
fn a_tied_embedding_is_labelled_as_the_lm_head_too() {
    let h = open(Source::Path(lm("smollm_tied")), (1280.0, 900.0));
    let model = h.state().browser.model.clone().unwrap();
    let t = h
        .state()
        .browser
        .tied_embedding
        .expect("smollm_tied ties its head");
    assert_eq!(model.tensors[t].name, "model.embed_tokens.weight");
    // in the layer table (and in the heading of the layer shown)
    assert!(h
        .get_all_by_label("model.embed_tokens (also the LM head: tied)")
        .any(|n| n.accesskit_node().role() == Role::Button));
    // an untied model has no such label
    let h = open(Source::Path(lm("llama")), (1280.0, 900.0));
    assert!(h.state().browser.tied_embedding.is_none());
    assert!(h.query_by_label_contains("also the LM head").is_none());
    assert!(h.get_all_by_label("model.embed_tokens").count() >= 1);
}
