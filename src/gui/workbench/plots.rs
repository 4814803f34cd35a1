//! The workbench's plots of one layer's report: the weights with the grid and clip thresholds, the
//! error, the scales, one group alone, the codebook, the SQNR bars. They draw what the engine
//! computed and compute nothing themselves.

use crate::formats::fmt_short;
use crate::quant::report::{ClipLines, LayerReport};
use crate::quant::Spec;
use crate::stats::Histogram;
use egui::{Color32, RichText, Ui};
use egui_plot::{Bar, BarChart, Legend, Plot, VLine};

pub(super) fn family_color(s: &Spec) -> Color32 {
    use crate::quant::Family::*;
    match s.family {
        Int(_) => Color32::from_rgb(97, 175, 239),
        Uint(_) => Color32::from_rgb(86, 182, 194),
        Float(_) => Color32::from_rgb(152, 195, 121),
        Nf4 => Color32::from_rgb(198, 120, 221),
        Mx(_) | MicroExp(_) => Color32::from_rgb(229, 192, 123),
        Nvfp4 => Color32::from_rgb(209, 154, 102),
        Kmeans(_) => Color32::from_rgb(224, 108, 117),
        Binary | Ternary => Color32::from_rgb(190, 80, 70),
        Bf16 | Fp16 | None => Color32::GRAY,
    }
}

pub(super) fn hist_ui(
    ui: &mut Ui,
    r: &LayerReport,
    levels: &[f32],
    clips: Option<&ClipLines>,
    threshold: Option<f32>,
    log: bool,
) {
    use crate::gui::bars::histogram_bars;
    let orig = histogram_bars(&r.original, log, 1.0);
    // the quantized values sit on a few levels: only their bins, narrower, over the original's
    let quant: Vec<Bar> = histogram_bars(&r.quantized, log, 0.45)
        .into_iter()
        .filter(|b| b.value > 0.0)
        .collect();
    let clip_colors = [
        Color32::from_rgb(224, 108, 117),
        Color32::from_rgb(229, 192, 123),
        Color32::from_rgb(152, 195, 121),
        Color32::from_rgb(198, 120, 221),
    ];
    ui.strong("Weights: original, quantized, grid and clip thresholds");
    Plot::new("wb_hist")
        .height(230.0)
        .allow_scroll(false)
        .legend(Legend::default())
        .x_axis_label("weight value")
        .show(ui, |p| {
            p.bar_chart(
                BarChart::new("original", orig)
                    .color(Color32::from_rgba_unmultiplied(97, 175, 239, 150)),
            );
            p.bar_chart(BarChart::new("quantized", quant).color(Color32::from_rgb(229, 140, 60)));
            if levels.len() <= 300 {
                for &l in levels {
                    p.vline(
                        VLine::new("grid", l)
                            .color(Color32::from_rgba_unmultiplied(160, 160, 160, 70))
                            .width(1.0),
                    );
                }
            }
            if let Some(t) = threshold {
                let c = Color32::from_rgb(224, 108, 117);
                p.vline(VLine::new("threshold", t).color(c).width(1.5));
                p.vline(VLine::new("threshold", -t).color(c).width(1.5));
            }
            if let Some(c) = clips {
                for (i, (name, t)) in c.lines.iter().enumerate() {
                    let col = clip_colors[i % clip_colors.len()];
                    p.vline(VLine::new(format!("clip {name}"), *t).color(col).width(1.5));
                    p.vline(
                        VLine::new(format!("clip {name}"), -*t)
                            .color(col)
                            .width(1.5),
                    );
                }
            }
        });
    let err = histogram_bars(&r.error, log, 1.0);
    ui.strong("Error: quantized − original");
    Plot::new("wb_err")
        .height(120.0)
        .allow_scroll(false)
        .x_axis_label("error")
        .show(ui, |p| {
            p.bar_chart(BarChart::new("error", err).color(Color32::from_rgb(224, 108, 117)))
        });
}

/// A colour for codebook entry `i` of `n`: a blue–yellow–red ramp by value order.
fn swatch(i: usize, n: usize) -> Color32 {
    let t = if n > 1 {
        i as f32 / (n - 1) as f32
    } else {
        0.5
    };
    let (r, g, b) = if t < 0.5 {
        let u = t * 2.0;
        (40.0 + 200.0 * u, 90.0 + 140.0 * u, 200.0 - 120.0 * u)
    } else {
        let u = (t - 0.5) * 2.0;
        (240.0, 230.0 - 170.0 * u, 80.0 - 40.0 * u)
    };
    Color32::from_rgb(r as u8, g as u8, b as u8)
}

pub(super) fn palette_ui(ui: &mut Ui, r: &LayerReport) {
    ui.strong(format!("Codebook: {} values", r.codebook.len()));
    let shares = r.codebook_shares();
    ui.horizontal_wrapped(|ui| {
        for (i, ((v, n), share)) in r.codebook.iter().zip(&shares).enumerate() {
            ui.vertical(|ui| {
                let (rect, resp) =
                    ui.allocate_exact_size(egui::vec2(54.0, 26.0), egui::Sense::hover());
                ui.painter()
                    .rect_filled(rect, 3.0, swatch(i, r.codebook.len()));
                resp.on_hover_text(format!("entry {i}: {} · {n} weights", fmt_short(*v as f64)));
                ui.label(RichText::new(fmt_short(*v as f64)).small());
                ui.label(
                    RichText::new(format!("{:.1} %", 100.0 * share))
                        .small()
                        .weak(),
                );
            });
        }
    });
    if let Some(w) = &r.window {
        ui.label(format!(
            "The top-left {}×{} weights: original values (left) and their cluster (right)",
            w.rows, w.cols
        ));
        let cell = 5.0;
        let (lo, hi) = w
            .values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        ui.horizontal(|ui| {
            let (rect, _) = ui.allocate_exact_size(
                egui::vec2(cell * w.cols as f32, cell * w.rows as f32),
                egui::Sense::hover(),
            );
            for (k, &v) in w.values.iter().enumerate() {
                let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                let c = Color32::from_gray((t * 255.0) as u8);
                let p =
                    rect.min + egui::vec2((k % w.cols) as f32 * cell, (k / w.cols) as f32 * cell);
                ui.painter().rect_filled(
                    egui::Rect::from_min_size(p, egui::vec2(cell, cell)),
                    0.0,
                    c,
                );
            }
            ui.add_space(12.0);
            let (rect, _) = ui.allocate_exact_size(
                egui::vec2(cell * w.cols as f32, cell * w.rows as f32),
                egui::Sense::hover(),
            );
            for (k, &c) in w.codes.iter().enumerate() {
                let p =
                    rect.min + egui::vec2((k % w.cols) as f32 * cell, (k / w.cols) as f32 * cell);
                ui.painter().rect_filled(
                    egui::Rect::from_min_size(p, egui::vec2(cell, cell)),
                    0.0,
                    swatch(c as usize, r.codebook.len()),
                );
            }
        });
        let n = r.codebook.len();
        let ratio = r.times_smaller_than_fp32();
        ui.label(format!(
            "Storage: {} bits per index + a {n}-entry fp32 codebook = {:.3} bits/weight, {ratio:.1}× smaller than fp32",
            n.trailing_zeros(),
            r.metrics.bits_per_weight
        ));
    }
}

/// The stored scale of every group, in order: the spread is why finer granularity helps.
pub(super) fn scales_plot(ui: &mut Ui, r: &LayerReport) {
    let (lo, hi): (Vec<[f64; 2]>, Vec<[f64; 2]>) = r
        .scale_envelope
        .iter()
        .map(|&(x, a, b)| ([x as f64, a as f64], [x as f64, b as f64]))
        .unzip();
    ui.strong(format!(
        "Scales of the {} groups (min and max per stretch of groups)",
        r.groups
    ));
    Plot::new("wb_scales")
        .height(110.0)
        .allow_scroll(false)
        .x_axis_label("group (row by row)")
        .show(ui, |p| {
            p.line(egui_plot::Line::new("max", hi).color(Color32::from_rgb(229, 140, 60)));
            p.line(egui_plot::Line::new("min", lo).color(Color32::from_rgb(97, 175, 239)));
        });
}

/// Group `g` alone: its values' histogram and its grid.
pub(super) fn group_plot(ui: &mut Ui, g: usize, h: &Histogram, levels: &[f32]) {
    ui.strong(format!(
        "Group {g} alone: its values and its grid ({} levels)",
        levels.len()
    ));
    let bars = crate::gui::bars::histogram_bars(h, false, 1.0);
    Plot::new("wb_group")
        .height(140.0)
        .allow_scroll(false)
        .x_axis_label("weight value")
        .show(ui, |p| {
            p.bar_chart(BarChart::new("values", bars).color(Color32::from_rgb(97, 175, 239)));
            if levels.len() <= 300 {
                for &l in levels {
                    p.vline(
                        VLine::new("grid", l)
                            .color(Color32::from_rgba_unmultiplied(229, 140, 60, 140))
                            .width(1.0),
                    );
                }
            }
        });
}
