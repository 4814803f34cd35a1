//! Activation ranges from calibration data, one per method, each a `[lo, hi]` the window draws:
//!
//! - `minmax`: the extremes over all calibration data (exact: from every batch's min and max);
//! - `pP`: percentiles of the recorded sample (symmetric formats: the P-th percentile of |x|; uint: the
//!   (100 − P)-th and P-th percentiles of x, as ONNX Runtime's percentile calibrator);
//! - `mse`: the range whose fake quantization with the chosen activation format has the least squared
//!   error on the sample (the same search as weight clipping, `calib::search_min`);
//! - `kl`: TensorRT's entropy calibration on 2048 bins of |x| (`calib::kl_threshold_levels`), with the
//!   format's number of levels and the zero bin levelled, as NVIDIA's pytorch-quantization does;
//! - `ema`: PyTorch's `MovingAverageMinMaxObserver`: the first batch sets min and max, each later batch
//!   moves them by `c·(batch − running)` with the averaging constant c = 0.01 (PyTorch's default).

use super::LayerActivations;
use crate::calib::{
    asymmetric_range, kl_threshold_levels, symmetric_threshold, KL_BINS, KL_LEVELS,
};
use crate::quant::fixed::FixedQuant;
use crate::quant::{Clip, Family, Spec};
use crate::stats::histogram;
use serde::Serialize;

/// PyTorch's `MovingAverageMinMaxObserver(averaging_constant=0.01)`.
pub const EMA_CONSTANT: f32 = 0.01;
/// The percentile used when a method is just `percentile`.
pub const DEFAULT_PERCENTILE: f64 = 99.99;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    MinMax,
    Percentile(f64),
    Mse,
    Kl,
    Ema,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::MinMax,
        Method::Percentile(DEFAULT_PERCENTILE),
        Method::Mse,
        Method::Kl,
        Method::Ema,
    ];

    pub fn parse(s: &str) -> Result<Method, String> {
        let t = s.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "minmax" | "min-max" | "max" => Method::MinMax,
            "mse" => Method::Mse,
            "kl" | "entropy" => Method::Kl,
            "ema" | "moving_average" => Method::Ema,
            "percentile" => Method::Percentile(DEFAULT_PERCENTILE),
            _ => match t.strip_prefix('p').map(str::parse::<f64>) {
                Some(Ok(p)) if p > 50.0 && p <= 100.0 => Method::Percentile(p),
                _ => {
                    return Err(format!(
                        "unknown range method '{s}': use minmax, pP (e.g. p99.99, 50 < P ≤ 100), mse, kl or ema"
                    ))
                }
            },
        })
    }

    pub fn name(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("p{p}"),
            Method::Mse => "mse".into(),
            Method::Kl => "kl".into(),
            Method::Ema => "ema".into(),
        }
    }
}

/// One method's range for one layer's input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Range {
    pub method: String,
    pub lo: f32,
    pub hi: f32,
}

/// The EMA observer's (min, max) after each batch.
pub fn ema_trajectory(batch_ranges: &[(f32, f32)]) -> Vec<(f32, f32)> {
    let mut out = Vec::with_capacity(batch_ranges.len());
    let mut cur: Option<(f32, f32)> = None;
    for &(lo, hi) in batch_ranges {
        let next = match cur {
            None => (lo, hi),
            Some((a, b)) => (a + EMA_CONSTANT * (lo - a), b + EMA_CONSTANT * (hi - b)),
        };
        out.push(next);
        cur = Some(next);
    }
    out
}

fn sse(spec: &Spec, x: &[f32], lo: f32, hi: f32) -> f64 {
    let Ok(q) = FixedQuant::new(spec, lo, hi) else {
        return f64::INFINITY;
    };
    let mut y = x.to_vec();
    q.apply(&mut y);
    x.iter()
        .zip(&y)
        .map(|(&a, &b)| ((a - b) as f64).powi(2))
        .sum()
}

/// The range `method` picks for this layer's input, for activations quantized with `spec`
/// (its family decides symmetric or not).
pub fn range(layer: &LayerActivations, method: Method, spec: &Spec) -> (f32, f32) {
    let (lo, hi) = layer.min_max();
    if lo > hi {
        return (0.0, 0.0);
    }
    let x = &layer.inputs;
    let asymmetric = matches!(spec.family, Family::Uint(_));
    let clip = match method {
        Method::MinMax => return (lo, hi),
        Method::Kl => {
            let levels = match spec.family {
                Family::Int(b) => 1usize << (b - 1),
                Family::Uint(b) => 1usize << b,
                _ => KL_LEVELS,
            };
            let t = kl_activation_threshold(x, levels);
            return if asymmetric || lo >= 0.0 {
                (lo.max(-t), hi.min(t))
            } else {
                (-t, t)
            };
        }
        Method::Ema => {
            return ema_trajectory(&layer.batch_ranges)
                .last()
                .copied()
                .unwrap_or((lo, hi))
        }
        Method::Percentile(p) => Clip::Percentile(p),
        Method::Mse => Clip::Mse,
    };
    if x.is_empty() {
        return (lo, hi);
    }
    if asymmetric {
        asymmetric_range(x, clip, &|a, b| sse(spec, x, a, b))
    } else {
        let t = symmetric_threshold(x, clip, &|t| sse(spec, x, -t, t));
        (lo.max(-t), hi.min(t))
    }
}

/// Every method's range (minmax, p99.99, mse, kl, ema), for drawing them all at once.
pub fn all_ranges(layer: &LayerActivations, spec: &Spec) -> Vec<Range> {
    Method::ALL
        .iter()
        .map(|&m| {
            let (lo, hi) = range(layer, m, spec);
            Range {
                method: m.name(),
                lo,
                hi,
            }
        })
        .collect()
}

/// TensorRT's entropy threshold for activations, with NVIDIA pytorch-quantization's treatment of the
/// zero spike (`_compute_amax_entropy` sets `bins[0] = bins[1]`): after a ReLU most values are exactly
/// 0, and left in, that one bin dominates P so that KL prefers a threshold far inside the data (on the
/// CNN sample model's inputs, 0.50 of 1.0: accuracy fell from 98 % to 37 %).
/// `levels`: magnitudes the activation format has (pytorch-quantization's `2^(bits − 1 + unsigned)`).
pub fn kl_activation_threshold(x: &[f32], levels: usize) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    if amax == 0.0 {
        return 0.0;
    }
    let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let mut h = histogram(&abs, KL_BINS, Some((0.0, amax)));
    h.counts[0] = h.counts[1];
    kl_threshold_levels(&h.counts, amax, levels).0
}

/// One fixed-range quantizer per calibrated layer (keyed by layer name): what `eval` and the window use
/// to simulate quantized activations (e.g. W8A8).
pub fn act_quantizers(
    cal: &super::Calibration,
    spec: &Spec,
    method: Method,
) -> Result<std::collections::HashMap<String, FixedQuant>, crate::quant::QuantError> {
    cal.layers
        .iter()
        .map(|l| {
            let (lo, hi) = range(l, method, spec);
            Ok((l.name.clone(), FixedQuant::new(spec, lo, hi)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(inputs: Vec<f32>, batch_ranges: Vec<(f32, f32)>) -> LayerActivations {
        LayerActivations {
            name: "l".into(),
            weight: "l.weight".into(),
            k: 1,
            rows: inputs.clone(),
            outputs: Vec::new(),
            channel_absmax: vec![inputs.iter().fold(0f32, |a, v| a.max(v.abs()))],
            importance: Vec::new(),
            seen: inputs.len() as u64,
            inputs,
            batch_ranges,
        }
    }

    #[test]
    fn ema_follows_pytorch_moving_average_observer() {
        // torch.ao.quantization.MovingAverageMinMaxObserver(averaging_constant=0.01) on batches with
        // (min, max) = (-1, 2), (-3, 4), (0, 1): min -1 → -1.02 → -1.0098; max 2 → 2.02 → 2.0098
        let t = ema_trajectory(&[(-1.0, 2.0), (-3.0, 4.0), (0.0, 1.0)]);
        assert_eq!(t[0], (-1.0, 2.0));
        assert!((t[1].0 + 1.02).abs() < 1e-6 && (t[1].1 - 2.02).abs() < 1e-6);
        assert!((t[2].0 + 1.0098).abs() < 1e-6 && (t[2].1 - 2.0098).abs() < 1e-6);
    }

    #[test]
    fn methods_clip_an_outlier_differently() {
        // a half-normal-like bulk in [0, 1] and one outlier at 50
        let mut x: Vec<f32> = (0..20000)
            .map(|i| ((i * 7919) % 10000) as f32 / 10000.0)
            .collect();
        x.push(50.0);
        let l = layer(x, vec![(0.0, 1.0), (0.0, 50.0)]);
        let spec = Spec::parse("uint8").unwrap();
        let mm = range(&l, Method::MinMax, &spec);
        assert_eq!(mm, (0.0, 50.0));
        let p = range(&l, Method::Percentile(99.9), &spec);
        assert!(p.1 < 1.01 && p.1 > 0.98, "{p:?}");
        // at 8 bits one outlier in 20,001 costs less than coarse steps on the bulk: MSE keeps it …
        let mse8 = range(&l, Method::Mse, &spec);
        assert!(mse8.1 > 40.0, "{mse8:?}");
        // … at 4 bits the bulk would round to 0, so MSE clips it
        let mse4 = range(&l, Method::Mse, &Spec::parse("uint4").unwrap());
        assert!(mse4.1 < 10.0, "MSE clips the outlier at 4 bits: {mse4:?}");
        let ema = range(&l, Method::Ema, &spec);
        assert!((ema.1 - 1.49).abs() < 1e-5, "{ema:?}");
        let kl = range(&l, Method::Kl, &Spec::parse("int8").unwrap());
        // (KL itself is checked against TensorRT's algorithm in calib; here: a range inside the data's)
        assert!(kl.0 == 0.0 && kl.1 > 0.0 && kl.1 <= 50.0, "{kl:?}");
        assert_eq!(all_ranges(&l, &spec).len(), 5);
    }

    #[test]
    fn kl_uses_the_format_levels_and_steps_over_a_background_spike() {
        // the CNN's conv2 inputs: 36 % exact zeros and a second spike at 0.47 (conv1's response to the
        // black border); with int8's 128 levels KL stops at the spike, with uint8's 256 it does not
        let m = crate::activations::tests::cnn();
        let cal = crate::activations::capture(&m, 256, 32).unwrap();
        let l = cal.layer("conv2").unwrap();
        let (_, hi8) = range(l, Method::Kl, &Spec::parse("int8").unwrap());
        let (_, hiu8) = range(l, Method::Kl, &Spec::parse("uint8").unwrap());
        assert!(hi8 < 0.6, "{hi8}");
        assert!(hiu8 > 3.0, "{hiu8}");
    }

    #[test]
    fn method_names_parse_back() {
        for m in Method::ALL {
            assert_eq!(Method::parse(&m.name()).unwrap(), m);
        }
        assert!(Method::parse("p20").is_err());
        assert!(Method::parse("median").unwrap_err().contains("minmax"));
    }
}
