//! The Formats lab: pick or build a format, see its bit layout, type a value and watch it round, toggle
//! bits, compare formats on a number line and in a table.

use crate::formats::{
    catalog, fmt_num, fmt_short, lookup, parse_value, Encoded, FieldKind, IntEncoding, NamedFormat,
    Overflow, Specials,
};
use egui::{Color32, RichText, Sense, Stroke, Ui};
use egui_plot::{Plot, Points, VLine};

/// Formats wider than this are not drawn on the number line (too many values to show).
const MAX_LINE_BITS: u32 = 16;

/// The formats offered for the number line and the comparison table.
const COMPARE_CHOICES: &[&str] = &[
    "int4",
    "fp4_e2m1",
    "nf4",
    "fp4_e1m2",
    "fp4_e3m0",
    "int8",
    "fp6_e3m2",
    "fp6_e2m3",
    "fp8_e4m3",
    "fp8_e5m2",
    "fp8_e4m3fnuz",
    "fp16",
    "bf16",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomKind {
    Float,
    Int,
    Fixed,
}

/// The controls of the custom-format builder; they become a format name the engine parses.
#[derive(Debug, Clone)]
pub struct CustomFormat {
    pub kind: CustomKind,
    pub exp_bits: u32,
    pub man_bits: u32,
    /// `None`: the default bias 2^(E−1) − 1.
    pub bias: Option<i32>,
    pub specials: Specials,
    pub int_bits: u32,
    pub encoding: IntEncoding,
    pub frac_bits: u32,
}

impl Default for CustomFormat {
    fn default() -> Self {
        CustomFormat {
            kind: CustomKind::Float,
            exp_bits: 3,
            man_bits: 2,
            bias: None,
            specials: Specials::Finite,
            int_bits: 8,
            encoding: IntEncoding::TwosComplement,
            frac_bits: 4,
        }
    }
}

impl CustomFormat {
    /// The engine's name for this format (`e3m2_finite_b3`, `int5`, `fix8_4`, …).
    pub fn name(&self) -> String {
        match self.kind {
            CustomKind::Float => {
                let policy = match self.specials {
                    Specials::Ieee => "ieee",
                    Specials::AllOnesNan => "fn",
                    Specials::Fnuz => "fnuz",
                    Specials::Finite | Specials::E8m0 => "finite",
                };
                let bias = self.bias.map(|b| format!("_b{b}")).unwrap_or_default();
                format!("e{}m{}_{policy}{bias}", self.exp_bits, self.man_bits)
            }
            CustomKind::Int => match self.encoding {
                IntEncoding::Unsigned => format!("uint{}", self.int_bits),
                IntEncoding::TwosComplement => format!("int{}", self.int_bits),
                IntEncoding::SignMagnitude => format!("smint{}", self.int_bits),
            },
            CustomKind::Fixed => match self.encoding {
                IntEncoding::Unsigned => format!("ufix{}_{}", self.int_bits, self.frac_bits),
                _ => format!("fix{}_{}", self.int_bits, self.frac_bits),
            },
        }
    }
}

/// One format on the number line, its values prepared once.
struct LineRow {
    name: String,
    values: Vec<f64>,
    absmax: f64,
}

pub struct FormatsLab {
    pub format: NamedFormat,
    pub custom: CustomFormat,
    pub custom_error: Option<String>,
    /// What the person typed in the Value box.
    pub value_text: String,
    pub value_error: Option<String>,
    pub saturate: bool,
    /// The bits on display.
    pub code: u64,
    /// The last encoding of the typed value; `None` once bits were toggled by hand.
    pub encoded: Option<(f64, Encoded)>,
    pub compare: Vec<String>,
    pub normalize: bool,
    pub log_scale: bool,
    rows: Vec<LineRow>,
}

impl Default for FormatsLab {
    fn default() -> Self {
        let format = lookup("fp8_e4m3").expect("catalog format");
        let mut lab = FormatsLab {
            format,
            custom: CustomFormat::default(),
            custom_error: None,
            value_text: "0.3".into(),
            value_error: None,
            saturate: true,
            code: 0,
            encoded: None,
            compare: ["int4", "fp4_e2m1", "nf4", "fp4_e1m2"]
                .map(String::from)
                .to_vec(),
            normalize: true,
            log_scale: false,
            rows: Vec::new(),
        };
        lab.encode_value();
        lab.rebuild_rows();
        lab
    }
}

impl FormatsLab {
    fn overflow(&self) -> Overflow {
        if self.saturate {
            Overflow::Saturate
        } else {
            Overflow::NoSaturate
        }
    }

    /// Choose a format by name (catalog, alias or parametric).
    pub fn select(&mut self, name: &str) -> Result<(), String> {
        let f = lookup(name).map_err(|e| e.to_string())?;
        self.format = f;
        self.encode_value();
        self.rebuild_rows();
        Ok(())
    }

    /// Re-encode the typed value into the current format.
    pub fn encode_value(&mut self) {
        if self.value_text.trim().is_empty() {
            self.value_error = None;
            self.encoded = None;
            return;
        }
        match parse_value(&self.value_text) {
            Ok(x) => {
                let e = self.format.format.encode(x, self.overflow());
                self.code = e.code;
                self.encoded = Some((x, e));
                self.value_error = None;
            }
            Err(msg) => {
                self.value_error = Some(msg);
                self.encoded = None;
            }
        }
    }

    /// Flip bit `pos` (0 = least significant) of the code on display.
    pub fn toggle_bit(&mut self, pos: u32) {
        if pos < self.format.format.bits() {
            self.code ^= 1u64 << pos;
            self.encoded = None;
        }
    }

    pub fn value(&self) -> f64 {
        self.format.format.decode(self.code)
    }

    pub fn bit_string(&self) -> String {
        self.format.format.bit_string(self.code)
    }

    /// The chosen format, then the formats picked for comparison.
    fn shown_names(&self) -> Vec<String> {
        let mut names = vec![self.format.name.clone()];
        names.extend(
            self.compare
                .iter()
                .filter(|n| **n != self.format.name)
                .cloned(),
        );
        names
    }

    fn rebuild_rows(&mut self) {
        let names = self.shown_names();
        self.rows = names
            .into_iter()
            .filter_map(|name| {
                let f = if name == self.format.name {
                    self.format.clone()
                } else {
                    lookup(&name).ok()?
                };
                if f.format.bits() > MAX_LINE_BITS {
                    return None;
                }
                let values = f.format.finite_values_sorted()?;
                let absmax = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                Some(LineRow {
                    name: f.name,
                    values,
                    absmax,
                })
            })
            .collect();
    }

    pub fn ui(&mut self, ui: &mut Ui) {
        egui::Panel::left("formats_list")
            .resizable(true)
            .default_size(230.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.picker_ui(ui));
            });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                self.header_ui(ui);
                ui.add_space(6.0);
                self.bits_ui(ui);
                ui.add_space(6.0);
                self.value_ui(ui);
                ui.separator();
                self.number_line_ui(ui);
                ui.separator();
                self.table_ui(ui);
            });
        });
    }

    fn picker_ui(&mut self, ui: &mut Ui) {
        ui.heading("Format");
        let mut chosen = None;
        for f in catalog() {
            let selected = self.format.name == f.name;
            if ui
                .selectable_label(selected, &f.name)
                .on_hover_text(&f.description)
                .clicked()
            {
                chosen = Some(f.name);
            }
        }
        if let Some(name) = chosen {
            let _ = self.select(&name);
        }
        ui.separator();
        ui.heading("Custom");
        ui.label("Build a format of your own.");
        let c = &mut self.custom;
        ui.horizontal(|ui| {
            ui.radio_value(&mut c.kind, CustomKind::Float, "ExMy")
                .on_hover_text("A binary float: sign, exponent, mantissa");
            ui.radio_value(&mut c.kind, CustomKind::Int, "intN")
                .on_hover_text("An integer of N bits");
            ui.radio_value(&mut c.kind, CustomKind::Fixed, "fixed")
                .on_hover_text("An integer read as i·2^-F");
        });
        match c.kind {
            CustomKind::Float => {
                ui.horizontal(|ui| {
                    let l = ui.label("E");
                    ui.add(egui::DragValue::new(&mut c.exp_bits).range(1..=8))
                        .labelled_by(l.id);
                    let l = ui.label("M");
                    ui.add(egui::DragValue::new(&mut c.man_bits).range(0..=10))
                        .labelled_by(l.id);
                });
                ui.horizontal(|ui| {
                    let mut custom_bias = c.bias.is_some();
                    ui.checkbox(&mut custom_bias, "bias")
                        .on_hover_text("Off: the default bias 2^(E-1) - 1");
                    if custom_bias {
                        let default = (1i32 << (c.exp_bits.max(1) - 1)) - 1;
                        let mut b = c.bias.unwrap_or(default);
                        ui.add(egui::DragValue::new(&mut b).range(-16..=300))
                            .on_hover_text("exponent bias");
                        c.bias = Some(b);
                    } else {
                        c.bias = None;
                    }
                });
                egui::ComboBox::from_label("specials")
                    .selected_text(specials_name(c.specials))
                    .show_ui(ui, |ui| {
                        for s in [
                            Specials::Finite,
                            Specials::Ieee,
                            Specials::AllOnesNan,
                            Specials::Fnuz,
                        ] {
                            ui.selectable_value(&mut c.specials, s, specials_name(s));
                        }
                    });
            }
            CustomKind::Int | CustomKind::Fixed => {
                ui.horizontal(|ui| {
                    let l = ui.label("bits");
                    ui.add(egui::DragValue::new(&mut c.int_bits).range(1..=16))
                        .labelled_by(l.id);
                    if c.kind == CustomKind::Fixed {
                        let l = ui.label("fraction");
                        ui.add(egui::DragValue::new(&mut c.frac_bits).range(0..=16))
                            .labelled_by(l.id);
                    }
                });
                ui.horizontal(|ui| {
                    ui.radio_value(&mut c.encoding, IntEncoding::TwosComplement, "signed");
                    ui.radio_value(&mut c.encoding, IntEncoding::Unsigned, "unsigned");
                    if c.kind == CustomKind::Int {
                        ui.radio_value(&mut c.encoding, IntEncoding::SignMagnitude, "sign-mag.");
                    }
                });
            }
        }
        let name = c.name();
        if ui.button(format!("Use {name}")).clicked() {
            self.custom_error = self.select(&name).err();
        }
        if let Some(e) = &self.custom_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
    }

    fn header_ui(&self, ui: &mut Ui) {
        let f = &self.format;
        let c = f.format.constants();
        ui.horizontal(|ui| {
            ui.heading(&f.name);
            ui.label(&f.description);
        });
        let bias = f
            .format
            .bias()
            .map(|b| format!(" · bias {b}"))
            .unwrap_or_default();
        ui.label(format!(
            "{} bits ({}){bias} · max {} · min normal {} · min subnormal {} · eps {} · {} finite codes",
            c.bits,
            f.format.layout(),
            fmt_num(c.max),
            c.min_normal.map(fmt_num).unwrap_or_else(|| "-".into()),
            c.min_subnormal.map(fmt_num).unwrap_or_else(|| "-".into()),
            c.eps.map(fmt_num).unwrap_or_else(|| "-".into()),
            c.finite_codes
        ));
    }

    /// The bit layout: one box per bit, coloured by field; click a bit to flip it.
    fn bits_ui(&mut self, ui: &mut Ui) {
        let fmt = self.format.format.clone();
        let bits = fmt.bits();
        let flipped = self.encoded.map(|(_, e)| e.code ^ e.truncated).unwrap_or(0);
        if bits > 32 {
            ui.label(format!("Bits: {}", self.bit_string()));
            ui.label("(64-bit layout: click-to-toggle is offered up to 32 bits)");
            return;
        }
        let mut toggled = None;
        ui.horizontal(|ui| {
            ui.spacing_mut().item_spacing.x = 2.0;
            let mut pos = bits;
            for (fi, field) in fmt.fields().iter().enumerate() {
                if fi > 0 {
                    ui.add_space(6.0);
                }
                for _ in 0..field.width {
                    pos -= 1;
                    let set = self.code >> pos & 1 == 1;
                    let size = if bits > 16 {
                        egui::vec2(18.0, 26.0)
                    } else {
                        egui::vec2(28.0, 34.0)
                    };
                    let (rect, resp) = ui.allocate_exact_size(size, Sense::click());
                    let p = pos;
                    let kind = field_name(field.kind);
                    resp.widget_info(|| {
                        egui::WidgetInfo::selected(
                            egui::Role::CheckBox,
                            true,
                            set,
                            format!("bit {p}"),
                        )
                    });
                    let painter = ui.painter();
                    let fill = field_color(field.kind, set);
                    painter.rect_filled(rect, 3.0, fill);
                    if flipped >> pos & 1 == 1 {
                        painter.rect_stroke(
                            rect,
                            3.0,
                            Stroke::new(2.5, Color32::from_rgb(255, 140, 0)),
                            egui::StrokeKind::Inside,
                        );
                    } else if resp.hovered() {
                        painter.rect_stroke(
                            rect,
                            3.0,
                            Stroke::new(1.5, ui.visuals().strong_text_color()),
                            egui::StrokeKind::Inside,
                        );
                    }
                    painter.text(
                        rect.center(),
                        egui::Align2::CENTER_CENTER,
                        if set { "1" } else { "0" },
                        egui::FontId::monospace(16.0),
                        Color32::BLACK,
                    );
                    let resp = resp.on_hover_text(format!("bit {p}: {kind}. Click to flip it."));
                    if resp.clicked() {
                        toggled = Some(p);
                    }
                }
            }
        });
        ui.horizontal(|ui| {
            for field in fmt.fields() {
                let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), Sense::hover());
                ui.painter()
                    .rect_filled(rect, 2.0, field_color(field.kind, true));
                ui.label(format!("{} ({})", field_name(field.kind), field.width));
            }
            if flipped != 0 {
                ui.label(
                    RichText::new("orange outline: bits that rounding flipped")
                        .color(Color32::from_rgb(255, 140, 0)),
                );
            }
        });
        if let Some(p) = toggled {
            self.toggle_bit(p);
        }
        let hex_width = (bits as usize).div_ceil(4);
        ui.label(
            RichText::new(format!(
                "Bits: {}   code 0x{:0hex_width$x}   = {}   ({})",
                self.bit_string(),
                self.code,
                fmt_num(self.value()),
                fmt.classify(self.code).as_str()
            ))
            .monospace()
            .size(15.0),
        );
    }

    fn value_ui(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            let label = ui.label("Value");
            let edit = ui
                .add(egui::TextEdit::singleline(&mut self.value_text).desired_width(160.0))
                .labelled_by(label.id)
                .on_hover_text("A decimal, inf, -inf, nan, or 0x… (f32 bits). It is rounded into the format.");
            let sat = ui
                .checkbox(&mut self.saturate, "Saturate")
                .on_hover_text("On: too-large values clamp to ±max. Off: they become Inf or NaN, as IEEE casts do.");
            if edit.changed() || sat.changed() {
                self.encode_value();
            }
        });
        if let Some(e) = &self.value_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let fmt = &self.format.format;
        match self.encoded {
            Some((x, e)) => {
                egui::Grid::new("encode_result")
                    .num_columns(2)
                    .spacing([12.0, 4.0])
                    .show(ui, |ui| {
                        ui.label("input");
                        ui.monospace(fmt_num(x));
                        ui.end_row();
                        ui.label("rounds to");
                        ui.monospace(fmt_num(e.value));
                        ui.end_row();
                        ui.label("error");
                        let err = e.value - x;
                        let rel = if x != 0.0 && x.is_finite() && err.is_finite() {
                            format!("  ({:.3} % of the input)", 100.0 * err.abs() / x.abs())
                        } else {
                            String::new()
                        };
                        ui.monospace(format!("{}{rel}", fmt_short(err)));
                        ui.end_row();
                        ui.label("rounding");
                        ui.monospace(e.rounding.describe());
                        ui.end_row();
                        ui.label("truncated");
                        ui.monospace(format!(
                            "{} = {}",
                            fmt.bit_string(e.truncated),
                            fmt_num(fmt.decode(e.truncated))
                        ));
                        ui.end_row();
                        ui.label("flipped by rounding");
                        ui.monospace(fmt.bit_string(e.code ^ e.truncated));
                        ui.end_row();
                        if fmt.bits() <= MAX_LINE_BITS {
                            if let Some((lo, hi)) = fmt.neighbours(x) {
                                ui.label("neighbours");
                                ui.monospace(format!("{}  |  {}", fmt_num(lo), fmt_num(hi)));
                                ui.end_row();
                            }
                        }
                    });
            }
            None if self.value_error.is_none() && !self.value_text.trim().is_empty() => {
                ui.label("Bits set by hand: the value above is what they decode to.");
            }
            None => {}
        }
    }

    fn number_line_ui(&mut self, ui: &mut Ui) {
        ui.heading("Number line");
        let mut changed = false;
        ui.horizontal_wrapped(|ui| {
            ui.label("Compare:");
            for &name in COMPARE_CHOICES {
                let mut on = self.compare.iter().any(|c| c == name);
                if ui.checkbox(&mut on, name).changed() {
                    if on {
                        self.compare.push(name.to_string());
                    } else {
                        self.compare.retain(|c| c != name);
                    }
                    changed = true;
                }
            }
        });
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.normalize, "Normalize to ±1")
                .on_hover_text("Divide each format's values by its largest magnitude, as a scaled quantizer would");
            ui.checkbox(&mut self.log_scale, "Log scale")
                .on_hover_text("Plot log2 of the positive values: equal spacing per binade shows where floats put their precision");
        });
        if changed {
            self.rebuild_rows();
        }
        let marker = self
            .encoded
            .map(|(x, _)| x)
            .or(Some(self.value()))
            .filter(|v| v.is_finite());
        let (normalize, log) = (self.normalize, self.log_scale);
        let palette = [
            Color32::from_rgb(97, 175, 239),
            Color32::from_rgb(229, 140, 60),
            Color32::from_rgb(152, 195, 121),
            Color32::from_rgb(198, 120, 221),
            Color32::from_rgb(224, 108, 117),
            Color32::from_rgb(86, 182, 194),
            Color32::from_rgb(209, 154, 102),
        ];
        let n = self.rows.len();
        let names: Vec<String> = self.rows.iter().map(|r| r.name.clone()).collect();
        Plot::new("number_line")
            .height(60.0 + 34.0 * n as f64 as f32)
            .show_y(false)
            .y_axis_formatter(move |mark, _| {
                let i = mark.value.round();
                if (mark.value - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                    names[n - 1 - i as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_axis_label(if log {
                "log2 |value|"
            } else if normalize {
                "value / max"
            } else {
                "value"
            })
            .show(ui, |plot| {
                for (i, row) in self.rows.iter().enumerate() {
                    let y = (n - 1 - i) as f64;
                    let scale = if normalize && row.absmax > 0.0 {
                        row.absmax
                    } else {
                        1.0
                    };
                    let pts: Vec<[f64; 2]> = row
                        .values
                        .iter()
                        .filter(|v| !log || **v > 0.0)
                        .map(|v| {
                            let x = v / scale;
                            [if log { x.log2() } else { x }, y]
                        })
                        .collect();
                    let radius = if row.values.len() > 1000 { 1.2 } else { 3.5 };
                    plot.points(
                        Points::new(format!("{} ({} values)", row.name, row.values.len()), pts)
                            .color(palette[i % palette.len()])
                            .radius(radius),
                    );
                }
                if let Some(x) = marker {
                    // the typed value, in the first row's scale
                    let scale = self
                        .rows
                        .first()
                        .filter(|_| normalize)
                        .map(|r| r.absmax)
                        .unwrap_or(1.0);
                    let v = x / scale;
                    if !log || v > 0.0 {
                        plot.vline(
                            VLine::new("value", if log { v.log2() } else { v })
                                .color(Color32::GRAY),
                        );
                    }
                }
            });
    }

    fn table_ui(&self, ui: &mut Ui) {
        ui.heading("Comparison");
        let names = self.shown_names();
        egui::Grid::new("format_table")
            .striped(true)
            .spacing([14.0, 4.0])
            .show(ui, |ui| {
                for h in [
                    "format",
                    "bits",
                    "layout",
                    "max",
                    "min normal",
                    "min subnormal",
                    "eps",
                    "range dB",
                    "binades",
                    "finite",
                    "NaN",
                    "Inf",
                ] {
                    ui.strong(h);
                }
                ui.end_row();
                for name in names {
                    let Ok(f) = (if name == self.format.name {
                        Ok(self.format.clone())
                    } else {
                        lookup(&name)
                    }) else {
                        continue;
                    };
                    let c = f.format.constants();
                    let opt = |x: Option<f64>| x.map(fmt_short).unwrap_or_else(|| "-".into());
                    ui.label(&f.name);
                    ui.label(c.bits.to_string());
                    ui.label(f.format.layout());
                    ui.label(fmt_short(c.max));
                    ui.label(opt(c.min_normal));
                    ui.label(opt(c.min_subnormal));
                    ui.label(opt(c.eps));
                    ui.label(
                        c.dynamic_range_db
                            .map(|d| format!("{d:.1}"))
                            .unwrap_or_else(|| "-".into()),
                    );
                    ui.label(
                        c.binades
                            .map(|d| format!("{d:.2}"))
                            .unwrap_or_else(|| "-".into()),
                    );
                    ui.label(if c.bits >= 32 {
                        format!("2^{}", c.bits)
                    } else {
                        c.finite_codes.to_string()
                    });
                    ui.label(if c.has_nan { "yes" } else { "no" });
                    ui.label(if c.has_inf { "yes" } else { "no" });
                    ui.end_row();
                }
            });
    }
}

fn specials_name(s: Specials) -> &'static str {
    match s {
        Specials::Finite => "finite (no Inf/NaN)",
        Specials::Ieee => "IEEE (Inf, NaN)",
        Specials::AllOnesNan => "fn (one NaN per sign)",
        Specials::Fnuz => "fnuz (one NaN, no -0)",
        Specials::E8m0 => "e8m0",
    }
}

fn field_name(k: FieldKind) -> &'static str {
    match k {
        FieldKind::Sign => "sign",
        FieldKind::Exponent => "exponent",
        FieldKind::Mantissa => "mantissa",
        FieldKind::Integer => "integer",
        FieldKind::Fraction => "fraction",
        FieldKind::Index => "index",
    }
}

fn field_color(k: FieldKind, set: bool) -> Color32 {
    let c = match k {
        FieldKind::Sign => Color32::from_rgb(240, 128, 128),
        FieldKind::Exponent => Color32::from_rgb(144, 210, 120),
        FieldKind::Mantissa => Color32::from_rgb(120, 180, 245),
        FieldKind::Integer => Color32::from_rgb(190, 190, 205),
        FieldKind::Fraction => Color32::from_rgb(205, 150, 235),
        FieldKind::Index => Color32::from_rgb(245, 190, 110),
    };
    if set {
        c
    } else {
        c.gamma_multiply(0.55)
    }
}
