//! What the window shows about one (tensor, spec): the quantizer's metrics, the original, quantized and
//! error histograms on shared bins, the grid of representable values of a chosen group, the clip
//! threshold every method would pick, and the codebook with its usage. Computed by the engine so the
//! window only draws, and small enough to cache per (tensor, spec).

use super::binned::Summaries;
use super::linear::{found_in, tensor_thresholds, thresholds_from, Found};
use super::spec::{Clip, Family, MxElem};
use super::{quantize, Metrics, QuantError, Quantized, Spec};
use crate::formats::{lookup, Codebook};
use crate::kernels::simd::{fmax, fmin};
use crate::stats::{histogram, Histogram};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipLines {
    /// (method, threshold): the magnitude each clip method maps to the top code, per tensor.
    pub lines: Vec<(String, f32)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerReport {
    pub spec: Spec,
    pub metrics: Metrics,
    pub original: Histogram,
    /// The dequantized values on the same bins as `original`.
    pub quantized: Histogram,
    /// x̂ − x, on bins symmetric around 0.
    pub error: Histogram,
    /// Scales of every group (stored values; VS-Quant: the 4-bit integers).
    pub scales: Vec<f32>,
    /// The scales for plotting: (first group, min, max) over at most 1,024 stretches of groups.
    pub scale_envelope: Vec<(usize, f32, f32)>,
    pub groups: usize,
    pub group_size: usize,
    /// The codebook (k-means, NF4 scaled by group 0) with how many weights use each entry.
    pub codebook: Vec<(f32, u64)>,
    /// Share of weights that became exactly 0.
    pub zero_fraction: f64,
    /// Thresholds (binary/ternary) or clip thresholds actually used, averaged over groups.
    pub threshold_mean: Option<f32>,
    /// What `levels` needs to draw any group's grid.
    pub zero_points: Vec<i32>,
    pub outer_scales: Vec<f32>,
    pub groups_per_row: usize,
    /// For k-means: the top-left window of the weight matrix, its values and cluster indices.
    pub window: Option<Window>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
    pub codes: Vec<i16>,
}

impl LayerReport {
    /// Approximately the memory the report holds (itself and what its vectors own), for caches that
    /// keep reports within a budget.
    pub fn heap_bytes(&self) -> usize {
        let hist = |h: &Histogram| h.counts.capacity() * std::mem::size_of::<u64>();
        std::mem::size_of::<Self>()
            + hist(&self.original)
            + hist(&self.quantized)
            + hist(&self.error)
            + std::mem::size_of_val(self.scales.as_slice())
            + std::mem::size_of_val(self.scale_envelope.as_slice())
            + std::mem::size_of_val(self.codebook.as_slice())
            + std::mem::size_of_val(self.zero_points.as_slice())
            + std::mem::size_of_val(self.outer_scales.as_slice())
            + self.window.as_ref().map_or(0, |w| {
                std::mem::size_of_val(w.values.as_slice())
                    + std::mem::size_of_val(w.codes.as_slice())
            })
    }

    /// The smallest and largest stored scale (`None` without scales).
    pub fn scale_range(&self) -> Option<(f32, f32)> {
        (!self.scales.is_empty()).then(|| {
            self.scales
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                })
        })
    }

    /// Each codebook entry's share of the weights (0 to 1), in codebook order.
    pub fn codebook_shares(&self) -> Vec<f64> {
        let total: u64 = self.codebook.iter().map(|c| c.1).sum();
        self.codebook
            .iter()
            .map(|c| c.1 as f64 / total.max(1) as f64)
            .collect()
    }

    /// How many times smaller than fp32 the quantized tensor is.
    pub fn times_smaller_than_fp32(&self) -> f64 {
        32.0 / self.metrics.bits_per_weight
    }

    /// The values of group `g` in `x`, the tensor this report is of with `cols` values per row
    /// ([`crate::model::TensorInfo::channels`]): groups run along rows, `groups_per_row` to a row.
    pub fn group_values<'a>(&self, x: &'a [f32], cols: usize, g: usize) -> &'a [f32] {
        let gpr = self.groups_per_row.max(1);
        let (row, j) = (g / gpr, g % gpr);
        let start = (row * cols + j * self.group_size).min(x.len());
        let end = (start + self.group_size)
            .min(x.len())
            .min(row * cols + cols);
        &x[start..end.max(start)]
    }
}

impl ClipLines {
    /// Approximately the memory the lines hold.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .lines
                .iter()
                .map(|(n, _)| std::mem::size_of::<(String, f32)>() + n.capacity())
                .sum::<usize>()
    }
}

/// The spec whose clip lines are drawn for `spec`: the lines are per tensor and depend on the format
/// and scale type, not on the granularity, the clip method or VS-Quant; a spec that rounds
/// stochastically is drawn with its round-to-nearest lines.
pub fn clip_lines_key(spec: &Spec) -> Spec {
    Spec {
        granularity: super::Granularity::Tensor,
        clip: Clip::MinMax,
        round: super::RoundMode::Nearest,
        vsq: false,
        ..*spec
    }
    .without_unused_seed()
}

/// Quantize and summarise; `bins` for the histograms.
pub fn layer_report(
    x: &[f32],
    shape: &[usize],
    spec: &Spec,
    bins: usize,
) -> Result<(LayerReport, Quantized), QuantError> {
    layer_report_with(x, shape, spec, bins, None)
}

/// The histogram of the original values that [`layer_report`] shows: `bins` bins over [min, max].
/// It depends only on the tensor, so a caller reporting several specs can compute it once.
pub fn original_histogram(x: &[f32], bins: usize) -> Histogram {
    let (lo, hi) = crate::stats::par_min_max(x);
    histogram(x, bins, Some((lo as f64, hi as f64)))
}

/// [`layer_report`] with the original histogram given (from [`original_histogram`] with the same
/// `bins`) when the caller has it.
pub fn layer_report_with(
    x: &[f32],
    shape: &[usize],
    spec: &Spec,
    bins: usize,
    original: Option<&Histogram>,
) -> Result<(LayerReport, Quantized), QuantError> {
    let q = quantize(x, shape, spec)?;
    let original = match original {
        Some(h) if h.counts.len() == bins.max(1) => h.clone(),
        _ => original_histogram(x, bins),
    };
    let e = (q.metrics.max_abs_err as f32).max(f32::MIN_POSITIVE);
    let (quantized, error, zeros) =
        paired_histograms(x, &q.dequant, bins, (original.lo, original.hi), e as f64);
    let codebook = if q.codebook.is_empty() {
        Vec::new()
    } else {
        let scale = if matches!(spec.family, Family::Nf4) {
            q.scales.first().copied().unwrap_or(1.0)
        } else {
            1.0
        };
        let mut counts = vec![0u64; q.codebook.len()];
        for &c in &q.codes {
            if let Some(n) = counts.get_mut(c as usize) {
                *n += 1;
            }
        }
        q.codebook
            .iter()
            .zip(counts)
            .map(|(&v, n)| (v * scale, n))
            .collect()
    };
    let threshold_mean = (!q.thresholds.is_empty()).then(|| {
        let t: Vec<f32> = if matches!(spec.family, Family::Uint(_)) {
            q.thresholds.chunks(2).map(|p| p[1]).collect()
        } else {
            q.thresholds.clone()
        };
        (t.iter().map(|&v| v as f64).sum::<f64>() / t.len() as f64) as f32
    });
    let report = LayerReport {
        spec: q.spec,
        metrics: q.metrics,
        original,
        quantized,
        error,
        scales: q.scales.clone(),
        scale_envelope: envelope(&q.scales, 1024),
        groups: q.layout.groups(),
        group_size: q.layout.group,
        codebook,
        zero_fraction: zeros as f64 / x.len().max(1) as f64,
        threshold_mean,
        zero_points: q.zero_points.clone(),
        outer_scales: q.outer_scales.clone(),
        groups_per_row: q.layout.groups_per_row(),
        window: matches!(spec.family, Family::Kmeans(_)).then(|| window(x, shape, &q.codes)),
    };
    Ok((report, q))
}

/// The histogram of `xq` on [lo, hi] and of `xq − x` on [−e, e], and the number of zeros in `xq`, in
/// one parallel pass with no temporary error tensor. Bin edges follow `stats::histogram` (the top edge
/// belongs to the last bin).
fn paired_histograms(
    x: &[f32],
    xq: &[f32],
    bins: usize,
    (lo, hi): (f64, f64),
    e: f64,
) -> (Histogram, Histogram, u64) {
    use rayon::prelude::*;
    let bins = bins.max(1);
    let (qs, es) = (bins as f64 / (hi - lo), bins as f64 / (2.0 * e));
    let (hq, he, below, above, zeros) = x
        .par_chunks(1 << 16)
        .zip(xq.par_chunks(1 << 16))
        .map(|(a, b)| paired_piece(a, b, bins, lo, hi, qs, e, es))
        .collect::<Vec<_>>()
        .into_iter()
        .fold(
            (vec![0u64; bins], vec![0u64; bins], 0, 0, 0),
            |(mut a, mut b, c, d, z), (a2, b2, z2)| {
                a.iter_mut().zip(&a2).for_each(|(x, y)| *x += *y as u64);
                b.iter_mut().zip(&b2).for_each(|(x, y)| *x += *y as u64);
                (a, b, c + a2[bins] as u64, d + a2[bins + 1] as u64, z + z2)
            },
        );
    (
        Histogram {
            lo,
            hi,
            counts: hq,
            below,
            above,
        },
        Histogram {
            lo: -e,
            hi: e,
            counts: he,
            below: 0,
            above: 0,
        },
        zeros,
    )
}

crate::kernels::simd::multiversion! {
    /// One piece of [`paired_histograms`]: the counts of `b` in `bins` slots then below and above,
    /// of `b − a` on [−e, e], and the zeros of `b`. Consecutive values go to four separate tables,
    /// added at the end: most dequantized values share a few bins, and increments of one counter in a
    /// row would wait on each other.
    #[allow(clippy::too_many_arguments)]
    fn paired_piece(
        a: &[f32],
        b: &[f32],
        bins: usize,
        lo: f64,
        hi: f64,
        qs: f64,
        e: f64,
        es: f64,
    ) -> (Vec<u32>, Vec<u32>, u64) {
        let (wq, we) = (bins + 2, bins);
        let (mut hq, mut he) = (vec![0u32; 4 * wq], vec![0u32; 4 * we]);
        let mut zeros = 0u64;
        // slots in f32 (a value within rounding of a bin edge may count in the neighbouring bin)
        let (lo32, hi32, qs32) = (lo as f32, hi as f32, qs as f32);
        let (e32, es32) = (e as f32, es as f32);
        let top = (bins - 1) as f32;
        // branch-free slots, so that a block of them is computed in vectors: clamped in f32 before
        // the conversion (truncation, as `as i32` then `min`/`clamp` would give)
        let qslot = |v: f32| -> u32 {
            let t = (v - lo32) * qs32;
            // SAFETY: the clamped value is in 0..=top, an integer range i32 holds
            let k: i32 = unsafe { fmin(fmax(t, 0.0), top).to_int_unchecked() };
            // NaN or below lo: slot `bins`; above hi: `bins + 1`
            let below = t.is_nan() || t < 0.0;
            let k = if v > hi32 { bins as i32 + 1 } else { k };
            (if below { bins as i32 } else { k }) as u32
        };
        let eslot = |u: f32, v: f32| -> u32 {
            let t = ((v - u) + e32) * es32;
            // SAFETY: as above
            let k: i32 = unsafe { fmin(fmax(t, 0.0), top).to_int_unchecked() };
            k as u32
        };
        const B: usize = 64;
        let (mut sq, mut se) = ([0u32; B], [0u32; B]);
        for (ca, cb) in a.chunks(B).zip(b.chunks(B)) {
            let n = ca.len();
            for j in 0..n {
                sq[j] = qslot(cb[j]);
                se[j] = eslot(ca[j], cb[j]);
            }
            let mut z = 0u32;
            for &v in cb {
                z += (v == 0.0) as u32;
            }
            zeros += z as u64;
            // value j goes to table j mod 4
            for j in 0..n {
                hq[(j % 4) * wq + sq[j] as usize] += 1;
                he[(j % 4) * we + se[j] as usize] += 1;
            }
        }
        let fold = |t: &[u32], w: usize| -> Vec<u32> {
            (0..w).map(|i| t[i] + t[w + i] + t[2 * w + i] + t[3 * w + i]).collect()
        };
        (fold(&hq, wq), fold(&he, we), zeros)
    }
}

/// (first index, min, max) of `v` over at most `n` equal stretches.
fn envelope(v: &[f32], n: usize) -> Vec<(usize, f32, f32)> {
    let step = v.len().div_ceil(n.max(1)).max(1);
    v.chunks(step)
        .enumerate()
        .map(|(i, c)| {
            (
                i * step,
                c.iter().copied().fold(f32::INFINITY, f32::min),
                c.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            )
        })
        .collect()
}

/// The top-left corner (at most 48 × 48) of the weight matrix `[shape[0], rest]`.
fn window(x: &[f32], shape: &[usize], codes: &[i16]) -> Window {
    let (all_rows, all_cols) = match shape.split_first() {
        Some((&r, rest)) if !rest.is_empty() && r > 0 => (r, x.len() / r),
        _ => (1, x.len()),
    };
    let (rows, cols) = (all_rows.min(48), all_cols.min(48));
    let mut values = Vec::with_capacity(rows * cols);
    let mut cs = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        values.extend_from_slice(&x[r * all_cols..r * all_cols + cols]);
        cs.extend_from_slice(&codes[r * all_cols..r * all_cols + cols]);
    }
    Window {
        rows,
        cols,
        values,
        codes: cs,
    }
}

/// The clip methods drawn on the histogram, in order.
const CLIP_METHODS: [(&str, Clip); 4] = [
    ("min-max", Clip::MinMax),
    ("p99.9", Clip::Percentile(99.9)),
    ("MSE", Clip::Mse),
    ("KL", Clip::Kl),
];

/// What a tensor's clip lines need from its data whatever the number format: what each method but
/// MSE finds (`linear::Found`), for symmetric families and for asymmetric uint, and the MSE search's
/// binned summaries. Each part is made when first needed and then kept, so another format's lines
/// cost one ranked MSE search (in the window on a 4096 × 4096 layer, p99.9 and KL took 55–76 and
/// 27–40 ms, and the MSE summary 32–57 ms, of a toggle's 150–170 ms of clip lines). Every call must
/// pass the same values `x`.
#[derive(Default)]
pub struct ClipBasis {
    /// [symmetric, asymmetric]: per entry of [`CLIP_METHODS`] (`None` for MSE)
    found: [std::sync::OnceLock<[Option<Found>; 4]>; 2],
    summaries: Summaries,
}

impl ClipBasis {
    /// What the methods find in `x` for one symmetry, made now if not yet; `Ok(None)` if `stop()`
    /// says so first (checked between methods; nothing is kept then).
    fn found(
        &self,
        x: &[f32],
        asymmetric: bool,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<[Option<Found>; 4]>, QuantError> {
        let cell = &self.found[usize::from(asymmetric)];
        if let Some(f) = cell.get() {
            return Ok(Some(*f));
        }
        super::all_finite(x)?;
        let mut found = [None; 4];
        for (f, (_, clip)) in found.iter_mut().zip(CLIP_METHODS) {
            if stop() {
                return Ok(None);
            }
            *f = found_in(x, clip, asymmetric);
        }
        Ok(Some(*cell.get_or_init(|| found)))
    }

    /// Make every part not made yet (both symmetries, and the summaries an MSE line of a tensor this
    /// large ranks on), so that the first uint or float lines after int ones cost no more; the window
    /// runs this in the background after a layer's first lines. Bad values: nothing is made.
    pub fn prepare(&self, x: &[f32], stop: &dyn Fn() -> bool) {
        for asymmetric in [false, true] {
            if !matches!(self.found(x, asymmetric, stop), Ok(Some(_))) {
                return;
            }
        }
        if x.len() >= super::linear::BINNED_FROM {
            for log in [false, true] {
                if stop() {
                    return;
                }
                self.summaries.of(x, log);
            }
        }
    }
}

/// The clip threshold each method picks for this tensor, quantized per tensor with the spec's format
/// (only for the scaled families, where clipping applies).
pub fn clip_lines(x: &[f32], shape: &[usize], spec: &Spec) -> Result<ClipLines, QuantError> {
    clip_lines_until(x, shape, spec, None, &|| false)
        .map(|c| c.unwrap_or(ClipLines { lines: Vec::new() }))
}

/// [`clip_lines`] that gives up (`Ok(None)`) as soon as `stop()` says so, checked between methods:
/// a window job whose result is no longer wanted ends without finishing the others. With `basis`
/// (of this `x`), what it has made already is not computed again, and what it has not is kept there.
pub fn clip_lines_until(
    x: &[f32],
    shape: &[usize],
    spec: &Spec,
    basis: Option<&ClipBasis>,
    stop: &dyn Fn() -> bool,
) -> Result<Option<ClipLines>, QuantError> {
    if !matches!(
        spec.family,
        Family::Int(_) | Family::Uint(_) | Family::Float(_)
    ) {
        return Ok(Some(ClipLines { lines: Vec::new() }));
    }
    // asymmetric: a range [lo, hi], of which the larger magnitude is drawn
    let uint = matches!(spec.family, Family::Uint(_));
    let usable = shape.iter().product::<usize>() == x.len() && !x.is_empty();
    let basis = match basis.filter(|_| usable) {
        Some(b) => match b.found(x, uint, stop)? {
            Some(found) => Some((found, &b.summaries)),
            None => return Ok(None),
        },
        None => None,
    };
    let mut lines = Vec::new();
    for (i, (name, clip)) in CLIP_METHODS.into_iter().enumerate() {
        if stop() {
            return Ok(None);
        }
        let s = Spec {
            clip,
            granularity: super::Granularity::Tensor,
            vsq: false,
            ..*spec
        };
        // only the threshold: the same fit as `quantize` with this spec, without quantizing
        let th = match basis.map(|(found, summaries)| (found[i], summaries)) {
            Some((Some(f), _)) => thresholds_from(&s, f),
            Some((None, summaries)) => tensor_thresholds(x, shape, &s, Some(summaries))?,
            None => tensor_thresholds(x, shape, &s, None)?,
        };
        // symmetric: one threshold; asymmetric: [lo, hi] — draw the larger magnitude
        let t = if uint {
            th[0].abs().max(th[1].abs())
        } else {
            th[0]
        };
        lines.push((name.to_string(), t));
    }
    Ok(Some(ClipLines { lines }))
}

/// The values group `g` can represent after scaling (sorted), to draw the quantization grid.
pub fn levels(q: &Quantized, g: usize) -> Vec<f32> {
    levels_of(
        &q.spec,
        &q.scales,
        &q.zero_points,
        &q.outer_scales,
        &q.codebook,
        q.layout.groups_per_row(),
        g,
    )
}

/// The same from a report.
pub fn report_levels(r: &LayerReport, g: usize) -> Vec<f32> {
    let spec = r.spec;
    let codebook: Vec<f32> = if matches!(spec.family, Family::Kmeans(_)) {
        r.codebook.iter().map(|c| c.0).collect()
    } else {
        Vec::new()
    };
    levels_of(
        &spec,
        &r.scales,
        &r.zero_points,
        &r.outer_scales,
        &codebook,
        r.groups_per_row,
        g,
    )
}

fn levels_of(
    spec: &Spec,
    scales: &[f32],
    zeros: &[i32],
    outer: &[f32],
    codebook: &[f32],
    gpr: usize,
    g: usize,
) -> Vec<f32> {
    let s = scales.get(g).copied().unwrap_or(1.0);
    let mut v: Vec<f32> = match spec.family {
        Family::Int(b) => {
            let m = (1i32 << (b - 1)) - 1;
            let s = if spec.vsq {
                s * outer.get(g / gpr.max(1)).copied().unwrap_or(1.0)
            } else {
                s
            };
            (-m..=m).map(|k| k as f32 * s).collect()
        }
        Family::Uint(b) => {
            let z = zeros.get(g).copied().unwrap_or(0);
            (0..(1i32 << b)).map(|k| (k - z) as f32 * s).collect()
        }
        Family::Float(f) => element_values(f.name())
            .into_iter()
            .map(|v| v * s)
            .collect(),
        Family::Mx(MxElem::Float(f)) => element_values(f.name())
            .into_iter()
            .map(|v| v * s)
            .collect(),
        Family::Mx(MxElem::Int8) => (-127..=127).map(|k| k as f32 / 64.0 * s).collect(),
        Family::Nvfp4 => {
            let t = outer.first().copied().unwrap_or(1.0);
            element_values("fp4_e2m1")
                .into_iter()
                .map(|v| v * s * t)
                .collect()
        }
        Family::Nf4 => Codebook::nf4()
            .values
            .iter()
            .map(|&v| v as f32 * s)
            .collect(),
        Family::MicroExp(m) => {
            let mb = m.mantissa_bits() as i32;
            let qmax = (1i32 << mb) - 1;
            // both micro-exponent steps
            let step = s / (1i32 << (mb - 1)) as f32;
            (-qmax..=qmax)
                .flat_map(|k| [k as f32 * step, k as f32 * step / 2.0])
                .collect()
        }
        Family::Kmeans(_) => codebook.to_vec(),
        Family::Binary => vec![-s, s],
        Family::Ternary => vec![-s, 0.0, s],
        Family::Bf16 | Family::Fp16 | Family::None => Vec::new(),
    };
    v.sort_by(f32::total_cmp);
    v.dedup();
    v
}

fn element_values(name: &str) -> Vec<f32> {
    lookup(name)
        .ok()
        .and_then(|f| f.format.finite_values_sorted())
        .map(|v| v.into_iter().map(|x| x as f32).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_histograms_count_like_a_plain_loop() {
        // the slots as written plainly (branches, `as i32`), on values inside, on and outside the
        // range, with errors beyond ±e
        let n = 200_003;
        let a: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.61).sin() * 2.0).collect();
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &v)| match i % 11 {
                0 => 0.0,
                1 => v * 3.0,
                2 => -1.0,
                _ => (v * 8.0).round() / 8.0,
            })
            .collect();
        let (bins, lo, hi, e) = (96usize, -1.0f64, 1.9f64, 0.05f64);
        let (h, he, zeros) = paired_histograms(&a, &b, bins, (lo, hi), e);
        let (qs, es) = (
            (bins as f64 / (hi - lo)) as f32,
            (bins as f64 / (2.0 * e)) as f32,
        );
        let (mut wq, mut we, mut wz) = (vec![0u64; bins + 2], vec![0u64; bins], 0u64);
        for (&u, &v) in a.iter().zip(&b) {
            let t = (v - lo as f32) * qs;
            let k = if t.is_nan() || t < 0.0 {
                bins
            } else if v > hi as f32 {
                bins + 1
            } else {
                (t as i32).min(bins as i32 - 1) as usize
            };
            wq[k] += 1;
            let k = ((((v - u) + e as f32) * es) as i32).clamp(0, bins as i32 - 1);
            we[k as usize] += 1;
            wz += (v == 0.0) as u64;
        }
        assert_eq!(h.counts, wq[..bins]);
        assert_eq!((h.below, h.above), (wq[bins], wq[bins + 1]));
        assert_eq!(he.counts, we);
        assert_eq!(zeros, wz);
    }

    #[test]
    fn a_report_has_consistent_histograms_and_levels() {
        let x: Vec<f32> = (0..4096)
            .map(|i| ((i as f32) * 0.37).sin() * (1.0 + (i % 7) as f32))
            .collect();
        let spec = Spec::parse("int4:channel").unwrap();
        let (r, q) = layer_report(&x, &[32, 128], &spec, 64).unwrap();
        assert_eq!(r.original.total(), 4096);
        assert_eq!(r.quantized.total(), 4096);
        assert_eq!(r.error.total(), 4096);
        assert_eq!(r.groups, 32);
        // every dequantized value of row 0 is on row 0's grid
        let grid = levels(&q, 0);
        assert_eq!(grid.len(), 15);
        for v in &q.dequant[..128] {
            assert!(grid.contains(v), "{v}");
        }
        let lines = clip_lines(&x, &[32, 128], &spec).unwrap();
        assert_eq!(lines.lines.len(), 4);
        let minmax = lines.lines[0].1;
        assert!(
            lines.lines.iter().all(|(_, t)| *t <= minmax * 1.0001),
            "{lines:?}"
        );
    }

    #[test]
    fn clip_lines_are_the_quantizers_thresholds() {
        let x: Vec<f32> = (0..8192)
            .map(|i| ((i as f32) * 0.91).sin() * if i % 997 == 0 { 9.0 } else { 1.0 })
            .collect();
        for base in ["int4", "uint4", "fp8_e4m3", "int8"] {
            let spec = Spec::parse(base).unwrap();
            let lines = clip_lines(&x, &[64, 128], &spec).unwrap();
            for ((_, t), clip) in lines.lines.iter().zip(["minmax", "p99.9", "mse", "kl"]) {
                let s = Spec::parse(&format!("{base}:tensor:clip={clip}")).unwrap();
                let th = quantize(&x, &[64, 128], &s).unwrap().thresholds.clone();
                let want = if base.starts_with('u') {
                    th[0].abs().max(th[1].abs())
                } else {
                    th[0]
                };
                assert_eq!(*t, want, "{base} {clip}");
            }
        }
        let spec = Spec::parse("int4:g32").unwrap();
        let (a, _) = layer_report(&x, &[64, 128], &spec, 50).unwrap();
        let h = original_histogram(&x, 50);
        let (b, _) = layer_report_with(&x, &[64, 128], &spec, 50, Some(&h)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn clip_lines_from_a_kept_basis_are_the_same() {
        // over 2^20 values, so that the MSE lines rank on the kept binned summaries
        let (rows, cols) = (1025, 1024);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32) * 0.91).sin() * if i % 997 == 0 { 9.0 } else { 1.0 })
            .collect();
        let shape = [rows, cols];
        // one basis filled as the specs need it, one prepared ahead
        let never = || false;
        let (lazy, ahead) = (ClipBasis::default(), ClipBasis::default());
        ahead.prepare(&x, &never);
        assert!(ahead.found.iter().all(|f| f.get().is_some()));
        let bases = [lazy, ahead];
        for base in [
            "int4",
            "uint4",
            "fp8_e4m3",
            "int8",
            "uint8:g32",
            "int3:channel",
            "fp4_e2m1",
            "fp6_e3m2:g32",
            "int4:g128:scale=fp16",
            "uint4:g64:scale=bf16",
            "int4:clip=mse",
            "int8:g16:vsq",
        ] {
            let spec = Spec::parse(base).unwrap();
            let want = clip_lines(&x, &shape, &spec).unwrap();
            assert_eq!(want.lines.len(), 4);
            for b in &bases {
                let got = clip_lines_until(&x, &shape, &spec, Some(b), &never).unwrap();
                assert_eq!(got, Some(want.clone()), "{base}");
            }
        }
        // the lazy one kept what the specs needed: both symmetries
        assert!(bases[0].found.iter().all(|f| f.get().is_some()));
        // a stop ends it and keeps nothing; NaN is an error, as for the quantizer
        let b = ClipBasis::default();
        let spec = Spec::parse("int4").unwrap();
        assert_eq!(
            clip_lines_until(&x, &shape, &spec, Some(&b), &|| true).unwrap(),
            None
        );
        b.prepare(&x, &|| true);
        assert!(b.found.iter().all(|f| f.get().is_none()));
        let mut bad = x[..4096].to_vec();
        bad[5] = f32::NAN;
        assert!(matches!(
            clip_lines_until(&bad, &[4096], &spec, Some(&ClipBasis::default()), &never),
            Err(QuantError::NotFinite(1))
        ));
    }

    #[test]
    fn kmeans_palette_counts_every_weight() {
        let x: Vec<f32> = (0..1000).map(|i| ((i * 13) % 97) as f32 / 10.0).collect();
        let (r, _) = layer_report(&x, &[10, 100], &Spec::parse("kmeans3").unwrap(), 32).unwrap();
        assert_eq!(r.codebook.len(), 8);
        assert_eq!(r.codebook.iter().map(|c| c.1).sum::<u64>(), 1000);
    }

    #[test]
    fn a_report_finds_its_groups_values_and_summarises_them() {
        // 4 rows of 8, groups of 4: two groups to a row, group g at row g / 2
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).collect();
        let (r, _) = layer_report(&x, &[4, 8], &Spec::parse("int4:g4").unwrap(), 16).unwrap();
        assert_eq!((r.groups, r.group_size, r.groups_per_row), (8, 4, 2));
        assert_eq!(r.group_values(&x, 8, 0), &x[0..4]);
        assert_eq!(r.group_values(&x, 8, 3), &x[12..16]);
        assert_eq!(r.group_values(&x, 8, 7), &x[28..32]);
        // past the end: empty, never out of bounds
        assert!(r.group_values(&x, 8, 9).is_empty());
        let (lo, hi) = r.scale_range().unwrap();
        assert_eq!(lo, r.scales.iter().copied().fold(f32::INFINITY, f32::min));
        assert_eq!(
            hi,
            r.scales.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        );
        assert!(lo < hi);
        assert_eq!(
            r.times_smaller_than_fp32(),
            32.0 / r.metrics.bits_per_weight
        );
        // the memory a report holds grows with its scales
        let (fine, _) = layer_report(&x, &[4, 8], &Spec::parse("int4:g2").unwrap(), 16).unwrap();
        assert_eq!(
            fine.heap_bytes() - r.heap_bytes(),
            4 * (fine.scales.len() - r.scales.len())
                + std::mem::size_of::<(usize, f32, f32)>()
                    * (fine.scale_envelope.len() - r.scale_envelope.len())
        );
        let (k, _) = layer_report(&x, &[4, 8], &Spec::parse("kmeans2").unwrap(), 16).unwrap();
        let shares = k.codebook_shares();
        assert_eq!(shares.len(), 4);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(k.heap_bytes() > std::mem::size_of::<LayerReport>() + 3 * 16 * 8);
    }

    #[test]
    fn specs_with_one_clip_lines_key_draw_the_same_lines() {
        let x: Vec<f32> = (0..8192)
            .map(|i| ((i as f32) * 0.37).sin() * (1.0 + (i % 7) as f32))
            .collect();
        let shape = [64, 128];
        for (a, b) in [
            ("int4:g128:clip=mse", "int4:g64"),
            ("int8:channel:clip=kl", "int8:tensor"),
            ("uint4:g64:clip=p99.9", "uint4:g128"),
            ("fp8_e4m3:channel", "fp8_e4m3:tensor"),
        ] {
            let (a, b) = (Spec::parse(a).unwrap(), Spec::parse(b).unwrap());
            assert_eq!(clip_lines_key(&a), clip_lines_key(&b), "{a} {b}");
            assert_eq!(
                clip_lines(&x, &shape, &a).unwrap(),
                clip_lines(&x, &shape, &clip_lines_key(&a)).unwrap(),
                "{a}"
            );
        }
        // another format or scale type is another key; stochastic rounding draws the nearest lines
        let key = |s: &str| clip_lines_key(&Spec::parse(s).unwrap());
        assert_eq!(key("int4:g16:round=stochastic:seed=3"), key("int4:g128"));
        assert_ne!(key("int4"), key("int5"));
        assert_ne!(key("int4"), key("uint4"));
        assert_ne!(key("int4:g128"), key("int4:g128:scale=fp32"));
    }
}
