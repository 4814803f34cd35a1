//! A binned summary of a large group (a whole tensor) that gives the squared quantization error of a
//! candidate scale without quantizing every value: the MSE clip search ranks its ~60 candidates with
//! it, then measures the best few exactly (see `linear::fit_whole`).
//!
//! The values go once into bins; each bin keeps its count and the sums of `x − m` and `(x − m)²`
//! about a point `m` inside it (f64). Integer grids are evenly spaced, so their bins are too: [`BINS`]
//! of equal width over [min, max]. Float grids are evenly spaced in log scale, so theirs are the top
//! 16 bits of the f32 pattern (sign, exponent, 7 mantissa bits: 1/128 of an octave), at least 16 per
//! step of an 8-bit float's grid. Nearest rounding is monotone, so when
//! both edges of a bin quantize to the same `c`, so does every value in it, and the bin's squared
//! error is exactly `S₂ + 2(m − c)S₁ + n(m − c)²`. A bin that a rounding boundary cuts is estimated
//! the same way with `c` the quantized value of the bin's mean; only those bins (at most one per level)
//! are approximate, so the estimate is close enough to rank candidates whose errors differ by more
//! than a hair, and the final choice among near ties is made on exact errors.
//!
//! Sums are added in a fixed order (fixed pieces, merged in order): the result does not depend on the
//! number of threads.

use crate::stats::{from_order_key, order_key};
use rayon::prelude::*;

/// Bins over [min, max] for integer grids on a large group: enough that few values fall in cut bins,
/// few enough that the tables of the parallel pieces stay in the L2 cache (a smaller group: one bin
/// per 32 values). Tried on rows of 2,048–4,096 values too: with so few bins an outlier stretches
/// them over the whole range, and the ranking missed the best basin by up to 0.7 %, so rows keep the
/// full search.
pub const BINS: usize = 1 << 14;
/// Bins of the f32 bit pattern's top 16 bits, for float grids.
const BIT_BINS: usize = 1 << 16;
/// The data is cut into this many pieces for the parallel pass (merged in order).
const PIECES: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
struct Bin {
    s1: f64,
    s2: f64,
    n: u64,
}

/// How values are assigned to bins: a monotone map, so each bin holds a contiguous range.
#[derive(Debug, Clone, Copy)]
enum Binning {
    /// `lo`, `width` and `scale` = 1/width as f32 too: the slot is computed in f32 (monotone all the same)
    Linear {
        lo: f64,
        width: f64,
        lo32: f32,
        scale32: f32,
        bins: usize,
    },
    Bits,
}

impl Binning {
    fn count(&self) -> usize {
        match self {
            Binning::Linear { bins, .. } => *bins,
            Binning::Bits => BIT_BINS,
        }
    }

    #[inline(always)]
    fn slot(&self, v: f32) -> usize {
        match *self {
            // f32 subtraction and multiplication round monotonically; a negative result saturates to 0
            Binning::Linear {
                lo32,
                scale32,
                bins,
                ..
            } => (((v - lo32) * scale32) as usize).min(bins - 1),
            Binning::Bits => (order_key(v, true) >> 16) as usize,
        }
    }

    /// A point inside bin `i` (near its middle), about which its sums are taken (as f32).
    #[inline(always)]
    fn centre(&self, i: usize) -> f64 {
        match *self {
            Binning::Linear { lo, width, .. } => lo + (i as f64 + 0.5) * width,
            Binning::Bits => from_order_key(((i as u32) << 16) | 0x8000) as f64,
        }
    }

    /// The f32 values just below and just above bin `i`: every value in the bin lies strictly
    /// between them.
    fn outer(&self, i: usize, lo: f32, hi: f32) -> (f32, f32) {
        match *self {
            Binning::Linear {
                lo: l,
                width: w,
                bins,
                ..
            } => {
                // step out from the nominal edges until the neighbouring bin is reached; the slot's
                // f32 rounding moves an edge by a few units of the larger of |lo| and |v|, which near
                // 0 is a vast number of f32 steps: the step starts there and doubles
                let first = |e: f32| {
                    (e.abs().max(lo.abs()).max(hi.abs()) * f32::EPSILON).max(f32::MIN_POSITIVE)
                };
                let mut a = (l + i as f64 * w) as f32;
                let mut d = first(a);
                while i > 0 && a > lo && self.slot(a) >= i {
                    a -= d;
                    d *= 2.0;
                }
                let mut b = (l + (i + 1) as f64 * w) as f32;
                let mut d = first(b);
                while i + 1 < bins && b < hi && self.slot(b) <= i {
                    b += d;
                    d *= 2.0;
                }
                // (reaching the data's extremes, the outer value is the one beyond them)
                (
                    if i == 0 || a <= lo {
                        f32::next_down(lo)
                    } else {
                        a
                    },
                    if i + 1 == bins || b >= hi {
                        f32::next_up(hi)
                    } else {
                        b
                    },
                )
            }
            Binning::Bits => {
                let first = from_order_key((i as u32) << 16);
                let last = from_order_key(((i as u32) << 16) | 0xFFFF);
                (f32::next_down(first), f32::next_up(last))
            }
        }
    }
}

/// `quant(c, xs, out)`: the quantized values of `xs` under candidate `c`.
pub type Quantizer<'a> = dyn Fn(usize, &[f32], &mut [f32]) + Sync + 'a;

/// The binned summary of one group's values.
pub struct Binned {
    #[cfg(test)]
    binning: Binning,
    /// the point of each bin about which its sums are taken
    centres: Vec<f32>,
    bins: Vec<Bin>,
    /// The non-empty bins, with (side by side, for the quantizer) the f32 values just outside each
    /// one and its mean.
    used: Vec<u32>,
    below: Vec<f32>,
    above: Vec<f32>,
    means: Vec<f32>,
}

/// The binned summaries of one tensor, each made when first asked for (integer and float grids bin
/// differently), for a caller that searches the same tensor under several formats: the window's clip
/// lines, where making the summary took 32–57 ms of the MSE line's 55–76 ms on a 4096 × 4096 layer.
#[derive(Default)]
pub struct Summaries {
    even: std::sync::OnceLock<Binned>,
    log: std::sync::OnceLock<Binned>,
}

impl Summaries {
    /// `Binned::new(x, log)`, made once; `x` must be the same values at every call.
    pub fn of(&self, x: &[f32], log: bool) -> &Binned {
        let cell = if log { &self.log } else { &self.even };
        cell.get_or_init(|| Binned::new(x, log))
    }
}

impl Binned {
    /// One pass over `x` (finite values); `log` bins for float grids, even ones for integer grids.
    pub fn new(x: &[f32], log: bool) -> Binned {
        let bins = (x.len() / 32).clamp(64, BINS);
        let (lo, hi) = if x.len() >= 1 << 16 {
            crate::stats::par_min_max(x)
        } else {
            crate::stats::finite_min_max(x)
        };
        let binning = if log {
            Binning::Bits
        } else {
            let width = if hi > lo {
                (hi as f64 - lo as f64) / bins as f64
            } else {
                1.0
            };
            Binning::Linear {
                lo: lo as f64,
                width,
                lo32: lo,
                scale32: (1.0 / width) as f32,
                bins,
            }
        };
        let count = binning.count();
        let centres: Vec<f32> = (0..count).map(|i| binning.centre(i) as f32).collect();
        // a small group is one piece
        let piece = x.len().div_ceil(PIECES).max(1 << 16);
        let tables: Vec<Vec<Bin>> = x
            .par_chunks(piece)
            .map(|xs| {
                let mut t = vec![Bin::default(); count];
                for &v in xs {
                    let i = binning.slot(v);
                    // about the bin's f32 centre: v − c is exact in f32 (Sterbenz) for all but the
                    // bins next to 0, and tiny there; its square is exact in f64
                    let d = (v - centres[i]) as f64;
                    let b = &mut t[i];
                    b.s1 += d;
                    b.s2 += d * d;
                    b.n += 1;
                }
                t
            })
            .collect();
        let mut bins = vec![Bin::default(); count];
        for t in &tables {
            for (b, p) in bins.iter_mut().zip(t) {
                b.s1 += p.s1;
                b.s2 += p.s2;
                b.n += p.n;
            }
        }
        let used: Vec<u32> = (0..count as u32)
            .filter(|&i| bins[i as usize].n > 0)
            .collect();
        let (below, above) = used
            .iter()
            .map(|&i| binning.outer(i as usize, lo, hi))
            .unzip();
        let means = used
            .iter()
            .map(|&i| {
                let b = &bins[i as usize];
                (centres[i as usize] as f64 + b.s1 / b.n as f64) as f32
            })
            .collect();
        Binned {
            #[cfg(test)]
            binning,
            centres,
            bins,
            used,
            below,
            above,
            means,
        }
    }

    /// The estimated `Σ(x − x̂)²` of every candidate, where `quant(c, xs, out)` writes the quantized
    /// values of `xs` under candidate `c` (nearest rounding: monotone in x). Exact for every bin whose
    /// values all quantize alike.
    pub fn errors(&self, candidates: usize, quant: &Quantizer<'_>) -> Vec<f64> {
        let m = self.used.len();
        let one = |c: usize, a: &mut [f32], b: &mut [f32], mid: &mut [f32]| -> f64 {
            quant(c, &self.below, a);
            quant(c, &self.above, b);
            quant(c, &self.means, mid);
            let mut total = 0f64;
            for (j, &i) in self.used.iter().enumerate() {
                let bin = &self.bins[i as usize];
                // every value in the bin quantizes to a[j] when both outer neighbours do
                let q = if a[j] == b[j] { a[j] } else { mid[j] };
                let d = self.centres[i as usize] as f64 - q as f64;
                total += bin.s2 + 2.0 * d * bin.s1 + bin.n as f64 * d * d;
            }
            total
        };
        if m * candidates < 1 << 16 {
            // a small group: one thread, one set of buffers
            let (mut a, mut b, mut mid) = (vec![0f32; m], vec![0f32; m], vec![0f32; m]);
            return (0..candidates)
                .map(|c| one(c, &mut a, &mut b, &mut mid))
                .collect();
        }
        (0..candidates)
            .into_par_iter()
            .map(|c| {
                let (mut a, mut b, mut mid) = (vec![0f32; m], vec![0f32; m], vec![0f32; m]);
                one(c, &mut a, &mut b, &mut mid)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_close_and_exact_where_no_bin_is_cut() {
        let x: Vec<f32> = (0..200_000)
            .map(|i| ((i as f32 * 0.7548).sin() * 3.0).powi(3) * 0.01)
            .collect();
        let b = Binned::new(&x, false);
        let steps = [0.001f32, 0.004, 0.013, 0.05, 1.0];
        let quant = |c: usize, xs: &[f32], out: &mut [f32]| {
            let s = steps[c];
            for (o, &v) in out.iter_mut().zip(xs) {
                *o = ((v / s).round_ties_even().clamp(-7.0, 7.0)) * s;
            }
        };
        let got = b.errors(steps.len(), &quant);
        for (c, &g) in got.iter().enumerate() {
            let mut out = vec![0f32; x.len()];
            quant(c, &x, &mut out);
            let want: f64 = x
                .iter()
                .zip(&out)
                .map(|(&u, &v)| (u as f64 - v as f64).powi(2))
                .sum();
            assert!(
                (g - want).abs() <= 1e-3 * want,
                "step {}: {g} vs {want}",
                steps[c]
            );
            if steps[c] == 1.0 {
                // |x| ≤ 0.27: everything rounds to 0, no bin is cut, the sum is exact
                assert!((g - want).abs() <= 1e-9 * want, "{g} vs {want}");
            }
        }
    }

    #[test]
    fn every_value_lies_between_its_bins_outer_neighbours() {
        let x: Vec<f32> = (0..50_000)
            .map(|i| (i as f32 * 0.013).sin() * 5.0)
            .chain([0.0, -0.0, 1e-30, -1e-30])
            .collect();
        for log in [false, true] {
            let b = Binned::new(&x, log);
            for &v in &x {
                let i = b.binning.slot(v) as u32;
                let j = b.used.binary_search(&i).unwrap();
                assert!(b.below[j] < v && v < b.above[j], "log {log}: {v}");
            }
        }
        for v in [-3.5f32, -0.0, 0.0, 1e-38, 7.25] {
            assert_eq!(from_order_key(order_key(v, true)).to_bits(), v.to_bits());
        }
        assert!(order_key(-0.0, true) < order_key(0.0, true));
    }
}
