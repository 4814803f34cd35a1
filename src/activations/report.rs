//! What the window's Activations view shows for one layer, computed here so the view only draws.

use super::output::output_metrics;
use super::ranges::{all_ranges, ema_trajectory, range, Method, Range};
use super::LayerActivations;
use crate::model::Model;
use crate::quant::adaround::adaround_or_quantize;
use crate::quant::fixed::FixedQuant;
use crate::quant::Spec;
use crate::stats::{histogram, Histogram};
use serde::Serialize;

/// A channel whose max |x| exceeds this multiple of the median channel's is an outlier channel.
pub const OUTLIER_FACTOR: f32 = 5.0;
/// Rows used for the output-space error in the view (the CLI uses every kept row).
pub const VIEW_ROWS: usize = 512;
/// How many of the most important input channels a report names.
pub const IMPORTANCE_TOP: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub struct ActivationReport {
    pub name: String,
    pub weight: String,
    pub k: usize,
    pub seen: u64,
    pub min: f32,
    pub max: f32,
    pub inputs: Histogram,
    pub outputs: Histogram,
    /// Every method's range of the input.
    pub ranges: Vec<Range>,
    /// The chosen method's range, and the activation quantizer's scale and zero point over it.
    pub chosen: Range,
    pub act_scale: f32,
    pub act_zero: i32,
    pub batch_ranges: Vec<(f32, f32)>,
    pub ema: Vec<(f32, f32)>,
    pub channel_absmax: Vec<f32>,
    pub channel_median: f32,
    pub outlier_channels: Vec<usize>,
    /// The same channels, largest max |x| first.
    pub outliers_largest_first: Vec<usize>,
    /// The importance matrix (Σx² of each input column over all calibration rows); empty where the
    /// calibration did not record it (e.g. an older pack).
    pub importance: Vec<f32>,
    /// The input columns with the largest Σx², largest first (at most [`IMPORTANCE_TOP`]).
    pub importance_top: Vec<usize>,
    /// The share of the layer's total Σx² that those columns hold (0 without an importance matrix).
    pub importance_top_share: f64,
    /// Weight-space SQNR, output-space SQNR (weights only), output-space SQNR with the inputs
    /// quantized too: `None` when the model lacks the weight.
    pub weight_sqnr_db: Option<f64>,
    pub output_sqnr_db: Option<f64>,
    pub output_sqnr_db_act: Option<f64>,
}

/// The report of `layer`: ranges for activations in `act`, chosen by `method`; errors with weights
/// quantized by `weights` (when the model has the layer's weight).
pub fn activation_report(
    layer: &LayerActivations,
    model: Option<&Model>,
    weights: &Spec,
    act: &Spec,
    method: Method,
    bins: usize,
) -> Result<ActivationReport, String> {
    let (min, max) = layer.min_max();
    let (lo, hi) = range(layer, method, act);
    let q = FixedQuant::new(act, lo, hi).map_err(|e| e.to_string())?;
    let mut med = layer.channel_absmax.clone();
    med.sort_by(f32::total_cmp);
    let median = med.get(med.len() / 2).copied().unwrap_or(0.0);
    let outliers: Vec<usize> = layer
        .channel_absmax
        .iter()
        .enumerate()
        .filter(|(_, &v)| median > 0.0 && v > OUTLIER_FACTOR * median)
        .map(|(i, _)| i)
        .collect();
    let (mut ws, mut os, mut oa) = (None, None, None);
    if let Some(m) = model {
        if let Some(i) = m.find(&layer.weight) {
            let t = &m.tensors[i];
            let w = m.read_f32(t).map_err(|e| e.to_string())?;
            // the view uses the first VIEW_ROWS rows: enough for a stable SQNR, fast on big layers
            let mut l = layer.clone();
            l.rows.truncate(VIEW_ROWS * layer.k);
            let wq = adaround_or_quantize(&w, &t.shape, weights, Some((&l.rows, l.k)))
                .map_err(|e| e.to_string())?;
            ws = Some(wq.metrics.sqnr_db);
            os = Some(output_metrics(&l, &w, &wq.dequant, None)?.sqnr_db);
            oa = Some(output_metrics(&l, &w, &wq.dequant, Some(&q))?.sqnr_db);
        }
    }
    let span = |x: &[f32]| {
        let (a, b) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        (a <= b).then_some((a as f64, b as f64))
    };
    let mut largest = outliers.clone();
    largest.sort_by(|&a, &b| {
        layer.channel_absmax[b]
            .total_cmp(&layer.channel_absmax[a])
            .then(a.cmp(&b))
    });
    let (importance_top, importance_top_share) = top_importance(&layer.importance, IMPORTANCE_TOP);
    Ok(ActivationReport {
        name: layer.name.clone(),
        weight: layer.weight.clone(),
        k: layer.k,
        seen: layer.seen,
        min,
        max,
        inputs: histogram(&layer.inputs, bins, span(&layer.inputs)),
        outputs: histogram(&layer.outputs, bins, span(&layer.outputs)),
        ranges: all_ranges(layer, act),
        chosen: Range {
            method: method.name(),
            lo,
            hi,
        },
        act_scale: q.scale,
        act_zero: q.zero,
        batch_ranges: layer.batch_ranges.clone(),
        ema: ema_trajectory(&layer.batch_ranges),
        channel_absmax: layer.channel_absmax.clone(),
        channel_median: median,
        outlier_channels: outliers,
        outliers_largest_first: largest,
        importance: layer.importance.clone(),
        importance_top,
        importance_top_share,
        weight_sqnr_db: ws,
        output_sqnr_db: os,
        output_sqnr_db_act: oa,
    })
}

/// The `n` columns with the largest importance (largest first, ties by index), and their share of the
/// total.
pub fn top_importance(importance: &[f32], n: usize) -> (Vec<usize>, f64) {
    let mut order: Vec<usize> = (0..importance.len()).collect();
    order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]).then(a.cmp(&b)));
    order.truncate(n);
    let total: f64 = importance.iter().map(|&v| v as f64).sum();
    let top: f64 = order.iter().map(|&i| importance[i] as f64).sum();
    let share = if total > 0.0 { top / total } else { 0.0 };
    (order, share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_agrees_with_its_parts() {
        let m = crate::activations::tests::cnn();
        let cal = crate::activations::capture(&m, 128, 32).unwrap();
        let l = cal.layer("fc1").unwrap();
        let s = |t: &str| Spec::parse(t).unwrap();
        let r = activation_report(l, Some(&m), &s("int4"), &s("uint8"), Method::Mse, 64).unwrap();
        assert_eq!(r.ranges.len(), 5);
        assert_eq!(r.chosen, r.ranges[2]);
        assert_eq!(r.inputs.counts.iter().sum::<u64>(), l.inputs.len() as u64);
        assert_eq!(r.ema.len(), 4);
        assert!(r.output_sqnr_db.unwrap() >= r.output_sqnr_db_act.unwrap() - 0.5);
        // fc1's inputs (flattened conv features): most channels are near the median, none far above
        assert!(r.outlier_channels.len() < r.channel_absmax.len() / 10);
        let mut by_index = r.outliers_largest_first.clone();
        by_index.sort();
        assert_eq!(by_index, r.outlier_channels);
        assert!(r
            .outliers_largest_first
            .windows(2)
            .all(|w| l.channel_absmax[w[0]] >= l.channel_absmax[w[1]]));
        // the importance matrix: fc1's Σx² per column, its largest columns first
        assert_eq!(r.importance, l.importance);
        assert_eq!(r.importance_top.len(), IMPORTANCE_TOP);
        let best = l.importance.iter().fold(0f32, |m, &v| m.max(v));
        assert_eq!(l.importance[r.importance_top[0]], best);
        assert!(r
            .importance_top
            .windows(2)
            .all(|w| l.importance[w[0]] >= l.importance[w[1]]));
        assert!(r.importance_top_share > 0.0 && r.importance_top_share < 1.0);
        let none = activation_report(l, None, &s("int4"), &s("uint8"), Method::MinMax, 64).unwrap();
        assert!(none.output_sqnr_db.is_none());
        assert_eq!((none.chosen.lo, none.chosen.hi), (r.min, r.max));
    }

    #[test]
    fn top_importance_orders_columns_and_sums_their_share() {
        let (top, share) = top_importance(&[1.0, 5.0, 0.0, 3.0, 1.0], 2);
        assert_eq!(top, [1, 3]);
        assert!((share - 0.8).abs() < 1e-12);
        // ties go to the lower index; nothing recorded gives nothing
        assert_eq!(top_importance(&[2.0, 2.0, 2.0], 2).0, [0, 1]);
        assert_eq!(top_importance(&[], 8), (vec![], 0.0));
    }
}
