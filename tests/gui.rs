//! The window, driven through egui_kittest as a person would: click, type, read what is shown.
#![cfg(feature = "gui")]

use egui::accesskit::Role;
use egui_kittest::kittest::Queryable as _;
use egui_kittest::Harness;
use quantscope::gui::App;

fn harness() -> Harness<'static, App> {
    Harness::builder()
        .with_size(egui::vec2(1280.0, 900.0))
        .build_ui_state(|ui, app: &mut App| app.show(ui), App::default())
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
        .build_ui_state(|ui, app: &mut App| app.show(ui), App::default());
    h.state_mut().formats_lab.select("fp4_e2m1").unwrap();
    h.run();
    set_value(&mut h, "2.6");
    h.key_press(egui::Key::Escape);
    h.run();
    h.snapshot("formats_lab_fp4_bits");
}
