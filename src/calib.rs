//! Clip thresholds: where a quantizer's range ends. Each method returns its threshold so the window can
//! draw it on the histogram.
//!
//! - min-max: the largest magnitude (symmetric) or the extremes (asymmetric);
//! - percentile: the P-th percentile of |x| (symmetric); the (100 − P)-th and P-th percentiles of x
//!   (asymmetric), as ONNX Runtime's percentile calibrator cuts both tails;
//! - MSE: the threshold minimising the quantization error of the values themselves, searched on a
//!   coarse grid and refined around the best point;
//! - KL: TensorRT's entropy calibration (Migacz, GTC 2017): 2048 bins of |x|, candidate thresholds at
//!   bins 128…2047, each compared with its 128-level quantized version by KL divergence.

use crate::stats::{abs_histogram, abs_percentiles, percentiles};
use rayon::prelude::*;

/// Bins of the |x| histogram for KL calibration.
pub const KL_BINS: usize = 2048;
/// Quantization levels per sign for KL calibration (signed 8-bit: 128 magnitudes).
pub const KL_LEVELS: usize = 128;

pub use crate::stats::{abs_max, finite_min_max};

/// How a quantizer's range is chosen: the `clip=` option of a spec (docs/DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clip {
    MinMax,
    /// Keep this percentile of |x| (e.g. 99.9): a number in (0, 100], never NaN, so `Eq` holds.
    Percentile(f64),
    Mse,
    Kl,
}

impl Eq for Clip {}

impl std::hash::Hash for Clip {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        if let Clip::Percentile(p) = self {
            // +0.0 and −0.0 compare equal: hash them alike
            (p + 0.0).to_bits().hash(h);
        }
    }
}

/// Search `lo..=hi` for the `t` minimising `err(t)`: 20 even steps, then 20 steps across the best
/// step's neighbours, then 10 more across the best of those (a resolution of (hi − lo)/2000).
/// Returns the best `t` seen (ties: the larger, i.e. the least clipping).
pub fn search_min(lo: f32, hi: f32, err: &(dyn Fn(f32) -> f64 + Sync)) -> f32 {
    search_min_batch(lo, hi, &|ts: &[f32], _, out: &mut [f64]| {
        out.iter_mut().zip(ts).for_each(|(o, &t)| *o = err(t))
    })
}

/// The errors of a round of candidates: `errs(ts, bar, out)` writes the error of `ts[i]` to `out[i]`
/// (both of one length, at most [`ROUND`]). `bar` is the smallest error seen so far: a candidate
/// whose error exceeds it cannot be chosen, so `errs` may stop summing it once its partial sum (of
/// non-negative terms, in the order of the full sum) exceeds `bar` (or the smallest error it has
/// itself finished in this call), and report that partial sum. A candidate that ties or beats the bar
/// is always summed to the end, so the choice is that of the exact errors.
pub type Errors<'a, T> = dyn Fn(&[T], f64, &mut [f64]) + Sync + 'a;

/// The most candidates [`search_min_batch`] gives `errs` at once (its first round: `hi` and a grid
/// of 20), so callers can keep a round in fixed arrays: the search runs once per group, up to 10^5
/// times per tensor, and allocating there cost more than the arithmetic on small groups.
pub const ROUND: usize = 21;

/// [`search_min`] with the candidates of each round given to `errs` at once, so one pass over the data
/// can evaluate them all, with the best error so far as the bar (see [`Errors`]). The same candidates
/// and the same choice as `search_min`: the refining rounds do not ask again for their centre (the best
/// so far, whose error is known) and list the others nearest first, so the bar tightens early.
pub fn search_min_batch(lo: f32, hi: f32, errs: &Errors<'_, f32>) -> f32 {
    if hi <= lo || !hi.is_finite() {
        return hi;
    }
    let valid = |t: f32| t > 0.0 && t <= hi;
    let (mut ts, mut es) = ([0f32; ROUND], [0f64; ROUND]);
    let mut step = (hi - lo) / 20.0;
    // round 1: hi itself first (the starting best), then the coarse grid; hi's error (the first) is
    // the bar for the rest of the round
    ts[0] = hi;
    let mut n = 1;
    for i in 0..20 {
        let t = lo + step * i as f32;
        if valid(t) {
            ts[n] = t;
            n += 1;
        }
    }
    errs(&ts[..n], f64::INFINITY, &mut es[..n]);
    let mut best = (es[0], hi);
    for refine in [None, Some(10i32), Some(10)] {
        if let Some(r) = refine {
            let centre = best.1;
            let fine = step / r as f32;
            // −1, 1, −2, 2, …: the choice does not depend on the order (least error, then largest t)
            n = 0;
            for i in 1..=r {
                for t in [centre - fine * i as f32, centre + fine * i as f32] {
                    if valid(t) {
                        ts[n] = t;
                        n += 1;
                    }
                }
            }
            errs(&ts[..n], best.0, &mut es[..n]);
            step = fine;
        }
        for (&t, &e) in ts[..n].iter().zip(&es[..n]) {
            if e < best.0 || (e == best.0 && t > best.1) {
                best = (e, t);
            }
        }
    }
    best.1
}

/// The symmetric threshold (the magnitude mapped to the largest code) for one group.
/// `err(t)` is the sum of squared quantization errors with threshold `t` (used by `Clip::Mse`).
pub fn symmetric_threshold(x: &[f32], clip: Clip, err: &(dyn Fn(f32) -> f64 + Sync)) -> f32 {
    symmetric_threshold_batch(x, clip, &|ts: &[f32], _, out: &mut [f64]| {
        out.iter_mut().zip(ts).for_each(|(o, &t)| *o = err(t))
    })
}

/// [`symmetric_threshold`] with the MSE search's candidates evaluated a round at a time.
pub fn symmetric_threshold_batch(x: &[f32], clip: Clip, errs: &Errors<'_, f32>) -> f32 {
    let amax = abs_max(x);
    if amax == 0.0 {
        return 0.0;
    }
    match clip {
        Clip::MinMax => amax,
        Clip::Percentile(p) => (abs_percentiles(x, &[p])[0] as f32).min(amax),
        Clip::Mse => search_min_batch(amax / 20.0, amax, errs),
        Clip::Kl => kl_threshold_of(x).0,
    }
}

/// The asymmetric range `(lo, hi)` for one group, before it is widened to include 0.
/// `err(lo, hi)` is the sum of squared quantization errors with that range (used by `Clip::Mse`, which
/// shrinks both ends by one factor).
pub fn asymmetric_range(
    x: &[f32],
    clip: Clip,
    err: &(dyn Fn(f32, f32) -> f64 + Sync),
) -> (f32, f32) {
    asymmetric_range_batch(x, clip, &|c: &[(f32, f32)], _, out: &mut [f64]| {
        out.iter_mut()
            .zip(c)
            .for_each(|(o, &(lo, hi))| *o = err(lo, hi))
    })
}

/// [`asymmetric_range`] with the MSE search's candidate ranges evaluated a round at a time.
pub fn asymmetric_range_batch(x: &[f32], clip: Clip, errs: &Errors<'_, (f32, f32)>) -> (f32, f32) {
    let (lo, hi) = finite_min_max(x);
    if lo > hi {
        return (0.0, 0.0);
    }
    match clip {
        Clip::MinMax => (lo, hi),
        Clip::Percentile(p) => {
            let q = percentiles(x, &[100.0 - p, p]);
            (q[0] as f32, q[1] as f32)
        }
        Clip::Mse => {
            let f = search_min_batch(1.0 / 20.0, 1.0, &|fs: &[f32], bar, out: &mut [f64]| {
                let mut c = [(0f32, 0f32); ROUND];
                for (c, &a) in c.iter_mut().zip(fs) {
                    *c = (lo * a, hi * a);
                }
                errs(&c[..fs.len()], bar, out)
            });
            (lo * f, hi * f)
        }
        Clip::Kl => {
            let t = kl_threshold_of(x).0;
            (lo.max(-t), hi.min(t))
        }
    }
}

/// KL threshold of raw values: histogram |x| into 2048 bins over [0, max|x|], then [`kl_threshold`].
/// Returns (threshold, bins kept).
pub fn kl_threshold_of(x: &[f32]) -> (f32, usize) {
    let amax = x.par_chunks(1 << 16).map(abs_max).reduce(|| 0.0, f32::max) as f64;
    if amax == 0.0 {
        return (0.0, KL_BINS);
    }
    let h = abs_histogram(x, KL_BINS, amax);
    kl_threshold(&h.counts, amax)
}

/// TensorRT's entropy calibration on a histogram of |x| over [0, amax] (any bin count ≥ 2·128).
///
/// For each candidate `i` (bins kept, 128 ≤ i < bin count): the reference P is the first `i` bins
/// with everything beyond folded into the last kept bin; the candidate Q merges those `i` bins (without
/// the folded tail) into 128 groups and spreads each group's total evenly over its non-empty bins.
/// `D(P‖Q)` is computed over the bins where P > 0 (a bin with P > 0 and Q = 0 rules the candidate out).
/// The first minimum wins; the threshold is `(i + 0.5)·width`, as in the published pseudocode.
/// Returns (threshold, bins kept).
pub fn kl_threshold(hist: &[u64], amax: f64) -> (f32, usize) {
    kl_threshold_levels(hist, amax, KL_LEVELS)
}

/// ln of a count (a whole number ≥ 1), from a table up to 2^13.
#[inline]
fn ln_count(c: f64) -> f64 {
    const TABLE: usize = 1 << 13;
    static LN: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    if c < TABLE as f64 {
        LN.get_or_init(|| (0..TABLE).map(|k| (k as f64).ln()).collect())[c as usize]
    } else {
        c.ln()
    }
}

/// As [`kl_threshold`] with `levels` quantization levels instead of 128: NVIDIA's pytorch-quantization
/// uses `2^(bits − 1 + unsigned)` (128 for int8, 256 for uint8, 16 for uint4). Candidates start at
/// `max(levels, 128)` bins.
pub fn kl_threshold_levels(hist: &[u64], amax: f64, levels: usize) -> (f32, usize) {
    let levels = levels.max(1);
    // Closed form per candidate, O(128) instead of O(i): with prefix sums of h, of h·ln h and of the
    // non-empty bin count,
    //   D(P‖Q) = (Σ P ln P − Σ P ln q)/ΣP − ln ΣP + ln ΣQ,
    // where within group g every non-empty bin has q = total_g / nonzero_g, so Σ_{b∈g} P_b ln q_b is
    // total_g·ln q_g, plus the folded tail times ln q of the last bin; ΣQ = Σ h[0..i].
    let n = hist.len();
    let width = amax / n as f64;
    let h: Vec<f64> = hist.iter().map(|&c| c as f64).collect();
    let mut s = vec![0f64; n + 1]; // Σ h
    let mut hl = vec![0f64; n + 1]; // Σ h ln h
    let mut nz = vec![0usize; n + 1];
    for b in 0..n {
        s[b + 1] = s[b] + h[b];
        hl[b + 1] = hl[b] + if h[b] > 0.0 { h[b] * h[b].ln() } else { 0.0 };
        nz[b + 1] = nz[b] + (h[b] > 0.0) as usize;
    }
    let total = s[n];
    let mut best: Option<(f64, usize)> = None;
    if total > 0.0 {
        for i in levels.max(KL_LEVELS)..n {
            let outliers = total - s[i];
            let last = h[i - 1];
            if last == 0.0 && outliers > 0.0 {
                continue; // P > 0 where Q = 0: infinite
            }
            let q_total = s[i];
            if q_total == 0.0 {
                continue;
            }
            let p_last = last + outliers;
            let sum_plnp = hl[i - 1]
                + if p_last > 0.0 {
                    p_last * p_last.ln()
                } else {
                    0.0
                };
            let mut sum_plnq = 0.0;
            let mut q_last = 0.0; // ln q of the last kept bin's group
                                  // group j spans bins ⌊j·i/levels⌋ .. ⌊(j+1)·i/levels⌋: the bounds stepped by i = a·levels + b
                                  // (quotient and remainder), without a division per group
            let (a, b) = (i / levels, i % levels);
            let (mut end, mut rem) = (0usize, 0usize);
            for _ in 0..levels {
                let start = end;
                end += a;
                rem += b;
                if rem >= levels {
                    rem -= levels;
                    end += 1;
                }
                let t = s[end] - s[start];
                let k = nz[end] - nz[start];
                if k > 0 {
                    // ln q = ln t − ln k, from a table of ln for small counts (a row of a few
                    // hundred values has only small counts: per-channel KL took ~10 s on MiniLM,
                    // mostly in `ln`)
                    let lnq = ln_count(t) - ln_count(k as f64);
                    sum_plnq += t * lnq;
                    if end == i {
                        q_last = lnq;
                    }
                }
            }
            if outliers > 0.0 {
                sum_plnq += outliers * q_last;
            }
            let d = (sum_plnp - sum_plnq) / total - total.ln() + q_total.ln();
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, i));
            }
        }
    }
    let i = best.map(|b| b.1).unwrap_or(n);
    (((i as f64 + 0.5) * width).min(amax) as f32, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_and_percentile() {
        let x: Vec<f32> = (0..1001).map(|i| i as f32 / 100.0 - 5.0).collect(); // -5 … 5
        let none = |_: f32| 0.0;
        assert_eq!(symmetric_threshold(&x, Clip::MinMax, &none), 5.0);
        assert!((symmetric_threshold(&x, Clip::Percentile(90.0), &none) - 4.5).abs() < 1e-5);
        let (lo, hi) = asymmetric_range(&x, Clip::Percentile(90.0), &|_, _| 0.0);
        assert!(
            (lo + 4.0).abs() < 1e-5 && (hi - 4.0).abs() < 1e-5,
            "{lo} {hi}"
        );
        assert_eq!(symmetric_threshold(&[0.0; 4], Clip::Mse, &none), 0.0);
    }

    #[test]
    fn search_finds_the_minimum_of_a_bowl() {
        let t = search_min(0.0, 10.0, &|t| ((t - 3.3) as f64).powi(2));
        assert!((t - 3.3).abs() < 10.0 / 2000.0 + 1e-6, "{t}");
    }

    #[test]
    fn kl_clips_a_long_tail_and_keeps_a_uniform_range() {
        // a uniform distribution is best represented whole: the threshold is near its end
        let h = vec![100u64; 2048];
        let (t, i) = kl_threshold(&h, 1.0);
        assert!(i > 2000, "{i} {t}");
        // a peak with a thin far tail: the tail is clipped
        let mut h = vec![0u64; 2048];
        for (b, c) in h.iter_mut().enumerate().take(200) {
            *c = 10_000 - 40 * b as u64;
        }
        h[2040] = 1;
        let (t, i) = kl_threshold(&h, 1.0);
        assert!(i < 1000 && t < 0.5, "{i} {t}");
    }
}
