//! Scaled quantizers: symmetric intN, asymmetric uintN, and the scaled OCP element floats, per tensor,
//! per channel or per group, with clipping, nearest or stochastic rounding, and VS-Quant two-level
//! scales. Conventions (docs/DESIGN.md §2):
//!
//! - intN: `S = amax/(2^(N−1) − 1)`, `q = clamp(round(x/S), ±(2^(N−1) − 1))`, `x̂ = q·S`;
//! - uintN: range widened to include 0, `S = (rmax − rmin)/(2^N − 1)`, `Z = clamp(round(−rmin/S))`,
//!   `q = clamp(round(x/S) + Z, 0, 2^N − 1)`, `x̂ = (q − Z)·S`;
//! - floats: `S = amax/max_elem`, elements rounded to nearest even and saturated.
//!
//! Arithmetic in f32, division as `x / S`; a zero range gets `S = 1`; the scale is rounded to its
//! storage type first and that stored value is used throughout.

use super::binned::{Binned, Summaries};
use super::bucketed::Buckets;
use super::metrics::Acc;
use super::rounder::Rounder;
use super::spec::{Clip, Family, RoundMode, Spec};
use super::{store_scale, uniform, Layout, Quantized};
use crate::calib::{
    abs_max, asymmetric_range_batch, finite_min_max, symmetric_threshold_batch, Errors, ROUND,
};
use crate::formats::lookup;
use crate::kernels::round::{rne, MAGIC, MAGIC_BITS};
use crate::kernels::simd::{fmax, fmin, multiversion};
use crate::stats::{count_non_finite, min_max_of_finite};
use rayon::prelude::*;

/// Lanes and block length of the MSE search's error sums (see [`Kernel::sse_many`]).
const LANES: usize = 8;
const BLOCK: usize = 64;

/// floor(v + u) for stochastic rounding, |v| < 2^22.
#[inline(always)]
fn stochastic(v: f32, u: f32) -> f32 {
    let t = v + u;
    let i = t as i32 as f32; // toward zero
    if i > t {
        i - 1.0
    } else {
        i
    }
}

/// How one group is quantized once its parameters are known.
#[derive(Debug, Clone, Copy, Default)]
struct Params {
    /// the scale actually used (stored; for VS-Quant the product of both levels)
    scale: f32,
    zero: i32,
    /// what is reported as this group's stored scale (VS-Quant: the 4-bit integer)
    reported: f32,
    outer: Option<f32>,
    threshold: (f32, f32),
}

struct Kernel {
    family: Family,
    round: RoundMode,
    seed: u64,
    rounder: Option<Rounder>,
}

impl Kernel {
    /// The kernel of an int, uint or scaled-float spec (floats get their format's rounder).
    fn of(spec: &Spec) -> Kernel {
        let rounder = match spec.family {
            Family::Float(f) => Some(Rounder::new(
                &lookup(f.name()).expect("catalog format").format,
            )),
            _ => None,
        };
        Kernel {
            family: spec.family,
            round: spec.round,
            seed: spec.seed,
            rounder,
        }
    }

    #[inline(always)]
    fn qmax(&self) -> f32 {
        match self.family {
            Family::Int(b) => ((1u32 << (b - 1)) - 1) as f32,
            Family::Uint(b) => ((1u32 << b) - 1) as f32,
            _ => self.rounder.as_ref().map(|r| r.max).unwrap_or(1.0),
        }
    }

    #[inline]
    fn round(&self, v: f32, i: u64) -> f32 {
        match self.round {
            RoundMode::Nearest => rne(v),
            RoundMode::Stochastic => stochastic(v, uniform(self.seed, i)),
        }
    }

    /// Quantize one group into `out`/`codes`; `base` is the index of its first element in the tensor.
    #[inline(always)]
    fn apply(&self, p: &Params, x: &[f32], out: &mut [f32], codes: &mut [i16], base: u64) {
        let s = p.scale;
        let qmax = self.qmax();
        match self.family {
            // Nearest rounding has its own loops (no per-element branch), so they vectorise. Rounding
            // and clamping happen on `x/S + MAGIC`, where the integers are exact and ordered: the same
            // results as `clamp(round_ties_even(clamp(x/S, ±(qmax+1))), ±qmax)` (the addition is
            // monotone, so values beyond ±2^22 still land past the clamp), with the code read from
            // the bits.
            Family::Int(_) if self.round == RoundMode::Nearest => {
                let (lo, hi) = (MAGIC - qmax, MAGIC + qmax);
                for ((&v, o), c) in x.iter().zip(out.iter_mut()).zip(codes.iter_mut()) {
                    let t = fmin(fmax(v / s + MAGIC, lo), hi);
                    *c = (t.to_bits() as i32 - MAGIC_BITS) as i16;
                    *o = (t - MAGIC) * s;
                }
            }
            Family::Uint(_) if self.round == RoundMode::Nearest => {
                // q = clamp(round(x/S) + Z, 0, qmax) with round(x/S) + Z computed as (x/S + MAGIC) + Z:
                // exact for |x/S| < 2^22 (integers below 2^24), monotone beyond
                let z = p.zero as f32;
                let hi = MAGIC + qmax;
                for ((&v, o), c) in x.iter().zip(out.iter_mut()).zip(codes.iter_mut()) {
                    let u = fmin(fmax((v / s + MAGIC) + z, MAGIC), hi);
                    *c = (u.to_bits() as i32 - MAGIC_BITS) as i16;
                    *o = ((u - MAGIC) - z) * s;
                }
            }
            Family::Int(_) => {
                for (k, ((&v, o), c)) in x
                    .iter()
                    .zip(out.iter_mut())
                    .zip(codes.iter_mut())
                    .enumerate()
                {
                    let q = self
                        .round((v / s).clamp(-qmax - 1.0, qmax + 1.0), base + k as u64)
                        .clamp(-qmax, qmax);
                    *c = q as i16;
                    *o = q * s;
                }
            }
            Family::Uint(_) => {
                let z = p.zero as f32;
                for (k, ((&v, o), c)) in x
                    .iter()
                    .zip(out.iter_mut())
                    .zip(codes.iter_mut())
                    .enumerate()
                {
                    let r = self.round((v / s).clamp(-z - 1.0, qmax - z + 1.0), base + k as u64);
                    let q = (r + z).clamp(0.0, qmax);
                    *c = q as i16;
                    *o = (q - z) * s;
                }
            }
            Family::Float(_) => {
                let r = self.rounder.as_ref().expect("float formats have a rounder");
                if let (RoundMode::Nearest, Some(b)) = (self.round, r.binary()) {
                    // the bit-level rounder, in a loop of its own so that it vectorises
                    for ((&v, o), c) in x.iter().zip(out.iter_mut()).zip(codes.iter_mut()) {
                        let (val, code) = b.round(v / s);
                        *c = code as i16;
                        *o = val * s;
                    }
                    return;
                }
                for (k, ((&v, o), c)) in x
                    .iter()
                    .zip(out.iter_mut())
                    .zip(codes.iter_mut())
                    .enumerate()
                {
                    let (val, code) = match self.round {
                        RoundMode::Nearest => r.round(v / s),
                        RoundMode::Stochastic => {
                            r.round_stochastic(v / s, uniform(self.seed, base + k as u64))
                        }
                    };
                    *c = code as i16;
                    *o = val * s;
                }
            }
            _ => unreachable!("linear kernels serve int, uint and scaled floats"),
        }
    }

    /// Sum of squared errors of one group with the given parameters, by running `apply` on pieces
    /// (stochastic rounding and the float formats). The squares (of the f32 error, in f64) go to
    /// eight lanes, element `8k + j` to lane `j` (a single running sum was a chain of dependent
    /// additions, the search's bottleneck), the tail to lane 0. Stops once the sum exceeds `bar`
    /// (see [`crate::calib::Errors`]).
    #[inline(always)]
    fn sse(&self, p: &Params, x: &[f32], base: u64, bar: f64) -> f64 {
        const CHUNK: usize = 512;
        let mut out = [0f32; CHUNK];
        let mut codes = [0i16; CHUNK];
        let mut lanes = [0f64; LANES];
        for (ci, chunk) in x.chunks(CHUNK).enumerate() {
            let n = chunk.len();
            self.apply(
                p,
                chunk,
                &mut out[..n],
                &mut codes[..n],
                base + (ci * CHUNK) as u64,
            );
            let (xs, qs) = (chunk.chunks_exact(LANES), out[..n].chunks_exact(LANES));
            let (xt, qt) = (xs.remainder(), qs.remainder());
            for (a, b) in xs.zip(qs) {
                for j in 0..LANES {
                    let e = (a[j] - b[j]) as f64;
                    lanes[j] += e * e;
                }
            }
            for (&a, &b) in xt.iter().zip(qt) {
                lanes[0] += ((a - b) as f64).powi(2);
            }
            if total_of(lanes) > bar {
                break;
            }
        }
        total_of(lanes)
    }

    /// The sum of squared errors of a piece `x` (starting at element `base`) under each candidate of
    /// `ps`, added to `out`. This is the MSE search's inner loop, ~60 candidates per group.
    ///
    /// With `bar` (`x` is the whole group), a candidate's sum stops early once it exceeds the bar or
    /// the least error finished before it (see [`crate::calib::Errors`]); without, every sum is whole
    /// (`x` is one piece of a group, whose sums are added up by the caller).
    ///
    /// For int/uint with nearest rounding every element's error is exactly the one `apply` gives
    /// (`x − x̂` in f32, with the same division `x/S`); the squares are summed in 8 f32 lanes over
    /// blocks of 64 elements, and the blocks in f64. (Multiplying by `1/S` instead, and redoing the
    /// blocks with a value near a rounding tie, was slower here: the tie checks cost more than the
    /// division does on this CPU.)
    #[inline(always)]
    fn sse_many(&self, ps: &[Params], x: &[f32], base: u64, bar: Option<f64>, out: &mut [f64]) {
        let qmax = self.qmax();
        let mut b = bar.unwrap_or(f64::INFINITY);
        for (p, o) in ps.iter().zip(out.iter_mut()) {
            let e = match (self.family, self.round) {
                (Family::Int(_), RoundMode::Nearest) => sse_int(x, p.scale, qmax, b),
                (Family::Uint(_), RoundMode::Nearest) => {
                    sse_uint(x, p.scale, p.zero as f32, qmax, b)
                }
                _ => self.sse(p, x, base, b),
            };
            *o += e;
            if bar.is_some() {
                // a sum that stopped early is above `b`, so this keeps `b`
                b = b.min(e);
            }
        }
    }

    /// Parameters for a symmetric (int, float) group with threshold `t`.
    #[inline(always)]
    fn symmetric(&self, t: f32, spec: &Spec) -> Params {
        let raw = if t > 0.0 { t / self.qmax() } else { 1.0 };
        let scale = store_scale(raw, spec.scale);
        Params {
            scale,
            zero: 0,
            reported: scale,
            outer: None,
            threshold: (-t, t),
        }
    }

    /// Parameters for an asymmetric (uint) group with range `[lo, hi]`, widened to include 0.
    #[inline(always)]
    fn asymmetric(&self, lo: f32, hi: f32, spec: &Spec) -> Params {
        let (rmin, rmax) = (lo.min(0.0), hi.max(0.0));
        let qmax = self.qmax();
        let raw = if rmax > rmin {
            (rmax - rmin) / qmax
        } else {
            1.0
        };
        let scale = store_scale(raw, spec.scale);
        let zero = rne((-rmin / scale).clamp(-1.0, qmax + 1.0)).clamp(0.0, qmax) as i32;
        Params {
            scale,
            zero,
            reported: scale,
            outer: None,
            threshold: (rmin, rmax),
        }
    }

    /// Fit one group: clip, then scale (and zero point). `errs` evaluates candidates of the MSE search.
    #[inline(always)]
    /// The parameters for what a clip method found in the data.
    fn params_for(&self, f: Found, spec: &Spec) -> Params {
        match f {
            Found::Magnitude(t) => self.symmetric(t, spec),
            Found::Range(lo, hi) => self.asymmetric(lo, hi, spec),
        }
    }

    fn fit_with(&self, x: &[f32], spec: &Spec, errs: &Errors<'_, Params>) -> Params {
        match (self.family, spec.clip) {
            // min-max needs no search: the extremes, computed here so they vectorise with the rest
            (Family::Uint(_), Clip::MinMax) => {
                // every caller has checked the values are finite
                let (lo, hi) = min_max_of_finite(x);
                let (lo, hi) = if lo > hi { (0.0, 0.0) } else { (lo, hi) };
                self.asymmetric(lo, hi, spec)
            }
            (Family::Uint(_), _) => {
                let (lo, hi) = asymmetric_range_batch(x, spec.clip, &|c, bar, out| {
                    let mut ps = [Params::default(); ROUND];
                    for (p, &(lo, hi)) in ps.iter_mut().zip(c) {
                        *p = self.asymmetric(lo, hi, spec);
                    }
                    errs(&ps[..c.len()], bar, out)
                });
                self.asymmetric(lo, hi, spec)
            }
            (_, Clip::MinMax) => self.symmetric(abs_max(x), spec),
            _ => {
                let t = symmetric_threshold_batch(x, spec.clip, &|ts, bar, out| {
                    let mut ps = [Params::default(); ROUND];
                    for (p, &t) in ps.iter_mut().zip(ts) {
                        *p = self.symmetric(t, spec);
                    }
                    errs(&ps[..ts.len()], bar, out)
                });
                self.symmetric(t, spec)
            }
        }
    }
}

/// Σ(x − x̂)² of symmetric int with scale `s`, nearest rounding; see [`Kernel::sse_many`] for why
/// every element's error is the one `apply` gives. The order of the additions (the same in the plain
/// and the AVX2 code): blocks of [`BLOCK`] elements; in a block, element `8k + j` goes to f32 lane `j`
/// of accumulator `k mod 2`; the two accumulators are added lane by lane, each lane is added to f64
/// total `j`, and the eight totals are added pairwise at the end. The sum stops early, at a
/// [`checkpoint`], once the total so far exceeds `bar`.
fn sse_int(x: &[f32], s: f32, qmax: f32, bar: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { avx2::sse_int(x, s, qmax, bar) };
    }
    plain_sse(x, bar, |v, a| int_one(v, s, qmax, a))
}

/// The same for uint with zero point `z`.
fn sse_uint(x: &[f32], s: f32, z: f32, qmax: f32, bar: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { avx2::sse_uint(x, s, z, qmax, bar) };
    }
    plain_sse(x, bar, |v, a| uint_one(v, s, z, qmax, a))
}

/// The search's sum in plain code: blocks, lanes and order as described at [`sse_int`].
#[inline(always)]
fn plain_sse(x: &[f32], bar: f64, one: impl Fn(f32, &mut f32)) -> f64 {
    let mut tot = [0f64; LANES];
    for (b, c) in x.chunks(BLOCK).enumerate() {
        let acc = block(c, &one);
        tot.iter_mut().zip(&acc).for_each(|(t, &a)| *t += a as f64);
        if checkpoint(b, x.len()) && total_of(tot) > bar {
            break;
        }
    }
    total_of(tot)
}

/// Whether the running total of a sum over `len` values is compared with the bar after block `b`
/// (0-based): after blocks 1, 2, 4 and then every 8th, but not the last (the whole total follows), so
/// a hopeless candidate stops at once and a close one pays ~1 % for the checks. Every lane and the
/// total are sums of non-negative terms in a fixed order, so a partial total never exceeds the whole
/// (f64 addition is monotone).
#[inline(always)]
fn checkpoint(b: usize, len: usize) -> bool {
    let n = b + 1;
    n * BLOCK < len && (n & (n - 1) == 0 || n.is_multiple_of(8))
}

#[inline(always)]
fn total_of(t: [f64; LANES]) -> f64 {
    ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]))
}

/// One block: element `8k + j` into lane `j` of accumulator `k mod 2`, then the two added.
#[inline(always)]
fn block(c: &[f32], one: impl Fn(f32, &mut f32)) -> [f32; LANES] {
    let mut acc = [[0f32; LANES]; 2];
    for (k, &v) in c.iter().enumerate() {
        one(v, &mut acc[(k / LANES) % 2][k % LANES]);
    }
    let mut out = [0f32; LANES];
    for j in 0..LANES {
        out[j] = acc[0][j] + acc[1][j];
    }
    out
}

/// One element of the int search: the squared error added to its lane. Symmetric, so it works on
/// |x|: the error of −x is minus that of x.
#[inline(always)]
fn int_one(v: f32, s: f32, qmax: f32, acc: &mut f32) {
    let a = v.abs();
    let q = fmin(rne(fmin(a / s, qmax + 1.0)), qmax);
    let e = a - q * s;
    *acc += e * e;
}

/// One element of the uint search: `q = clamp(round(x/S) + Z, 0, qmax)`, `x̂ = (q − Z)·S`.
#[inline(always)]
fn uint_one(v: f32, s: f32, z: f32, qmax: f32, acc: &mut f32) {
    let y = fmin(fmax(v / s, -z - 1.0), qmax - z + 1.0);
    let q = fmin(fmax(rne(y) + z, 0.0), qmax);
    let e = v - (q - z) * s;
    *acc += e * e;
}

/// The search kernels with explicit AVX2 vectors: the same operations, lanes and order as the plain
/// versions above (`min_ps(a, b)` is `a < b ? a : b`, `max_ps(a, b)` is `a > b ? a : b`, like
/// `fmin`/`fmax`), so the results are identical to the bit; a block whose length is not a multiple
/// of 8 runs the plain code.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{block, checkpoint, int_one, total_of, uint_one, BLOCK, LANES, MAGIC};
    use std::arch::x86_64::*;

    /// The per-vector step of a search: the squared errors of 8 values.
    trait Step {
        fn step(&self, v: __m256) -> __m256;
        fn one(&self, v: f32, acc: &mut f32);
    }

    struct Int {
        s: f32,
        qmax: f32,
    }

    impl Step for Int {
        #[inline(always)]
        fn step(&self, v: __m256) -> __m256 {
            // SAFETY (all intrinsics here): only reached from `#[target_feature(enable = "avx2")]`
            // functions below, which run after the CPU check
            unsafe {
                let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
                let vs = _mm256_set1_ps(self.s);
                let a = _mm256_and_ps(v, abs);
                let y = _mm256_min_ps(_mm256_div_ps(a, vs), _mm256_set1_ps(self.qmax + 1.0));
                let m = _mm256_set1_ps(MAGIC);
                let q = _mm256_min_ps(
                    _mm256_sub_ps(_mm256_add_ps(y, m), m),
                    _mm256_set1_ps(self.qmax),
                );
                let e = _mm256_sub_ps(a, _mm256_mul_ps(q, vs));
                _mm256_mul_ps(e, e)
            }
        }
        #[inline(always)]
        fn one(&self, v: f32, acc: &mut f32) {
            int_one(v, self.s, self.qmax, acc)
        }
    }

    struct Uint {
        s: f32,
        z: f32,
        qmax: f32,
    }

    impl Step for Uint {
        #[inline(always)]
        fn step(&self, v: __m256) -> __m256 {
            // SAFETY: as for `Int`
            unsafe {
                let vs = _mm256_set1_ps(self.s);
                let vz = _mm256_set1_ps(self.z);
                let y = _mm256_min_ps(
                    _mm256_max_ps(_mm256_div_ps(v, vs), _mm256_set1_ps(-self.z - 1.0)),
                    _mm256_set1_ps(self.qmax - self.z + 1.0),
                );
                let m = _mm256_set1_ps(MAGIC);
                let q0 = _mm256_sub_ps(_mm256_add_ps(y, m), m);
                let q = _mm256_min_ps(
                    _mm256_max_ps(_mm256_add_ps(q0, vz), _mm256_setzero_ps()),
                    _mm256_set1_ps(self.qmax),
                );
                let e = _mm256_sub_ps(v, _mm256_mul_ps(_mm256_sub_ps(q, vz), vs));
                _mm256_mul_ps(e, e)
            }
        }
        #[inline(always)]
        fn one(&self, v: f32, acc: &mut f32) {
            uint_one(v, self.s, self.z, self.qmax, acc)
        }
    }

    /// One block of whole vectors: lane sums as in `block`.
    #[inline(always)]
    fn vblock(k: &impl Step, c: &[f32]) -> __m256 {
        // SAFETY: as for `Int`; the loads stay within `c` (i + 8 <= len)
        unsafe {
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            while i + 2 * LANES <= c.len() {
                a0 = _mm256_add_ps(a0, k.step(_mm256_loadu_ps(c.as_ptr().add(i))));
                a1 = _mm256_add_ps(a1, k.step(_mm256_loadu_ps(c.as_ptr().add(i + LANES))));
                i += 2 * LANES;
            }
            if i < c.len() {
                // an odd last vector
                a0 = _mm256_add_ps(a0, k.step(_mm256_loadu_ps(c.as_ptr().add(i))));
            }
            _mm256_add_ps(a0, a1)
        }
    }

    #[inline(always)]
    fn sse(k: &impl Step, x: &[f32], bar: f64) -> f64 {
        // SAFETY: as for `Int`
        unsafe {
            let (mut t0, mut t1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
            let total = |t0: __m256d, t1: __m256d| {
                let mut t = [0f64; LANES];
                _mm256_storeu_pd(t.as_mut_ptr(), t0);
                _mm256_storeu_pd(t.as_mut_ptr().add(4), t1);
                total_of(t)
            };
            for (b, c) in x.chunks(BLOCK).enumerate() {
                let acc = if c.len() % LANES != 0 {
                    // a ragged last block: the plain code, same lanes
                    let acc = block(c, |v, a| k.one(v, a));
                    _mm256_loadu_ps(acc.as_ptr())
                } else {
                    vblock(k, c)
                };
                t0 = _mm256_add_pd(t0, _mm256_cvtps_pd(_mm256_castps256_ps128(acc)));
                t1 = _mm256_add_pd(t1, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(acc)));
                if checkpoint(b, x.len()) && total(t0, t1) > bar {
                    break;
                }
            }
            total(t0, t1)
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sse_int(x: &[f32], s: f32, qmax: f32, bar: f64) -> f64 {
        sse(&Int { s, qmax }, x, bar)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sse_uint(x: &[f32], s: f32, z: f32, qmax: f32, bar: f64) -> f64 {
        sse(&Uint { s, z, qmax }, x, bar)
    }
}

multiversion! {
    /// Fit, quantize and measure one row (its groups); the row is in cache for all passes. A row
    /// holding NaN/Inf is left as it is and only counted (the caller reports the error), so the
    /// finiteness check costs no pass over memory of its own.
    fn row(
        k: &Kernel,
        spec: &Spec,
        g: usize,
        xr: &[f32],
        or: &mut [f32],
        cr: &mut [i16],
        base: u64,
    ) -> (Vec<Params>, Acc, usize) {
        let bad = count_non_finite(xr);
        if bad > 0 {
            return (Vec::new(), Acc::default(), bad);
        }
        // plain loops rather than iterator adapters, so that everything inlines into this function
        // and gets its AVX2 copy
        let mut ps: Vec<Params> = Vec::with_capacity(xr.len().div_ceil(g));
        for (j, xs) in xr.chunks(g).enumerate() {
            let b = base + (j * g) as u64;
            // the search's closure is a function of its own, not compiled inside this one:
            // it calls the multiversioned kernel
            ps.push(
                if bucketed_search(k, spec, xs.len()) {
                    // exact errors from the group's values in buckets (see `bucketed`)
                    let qmax = k.qmax();
                    // uint: the signed values; int: the magnitudes
                    let uint = matches!(k.family, Family::Uint(_));
                    let buckets = if uint {
                        Buckets::signed(xs)
                    } else {
                        Buckets::new(xs)
                    };
                    k.fit_with(xs, spec, &|c: &[Params], bar, out: &mut [f64]| {
                        let mut bar = bar;
                        for (o, p) in out.iter_mut().zip(c) {
                            *o = if uint {
                                buckets.sse_uint(p.scale, p.zero as f32, qmax, bar)
                            } else {
                                buckets.sse(p.scale, qmax, bar)
                            };
                            bar = bar.min(*o);
                        }
                    })
                } else {
                    k.fit_with(xs, spec, &|c: &[Params], bar, out: &mut [f64]| {
                        out.fill(0.0);
                        errors_of_piece(k, c, xs, b, Some(bar), out)
                    })
                },
            );
        }
        if spec.vsq {
            vsq_rescale(&mut ps, spec);
        }
        for (j, ((xs, os), cs)) in xr
            .chunks(g)
            .zip(or.chunks_mut(g))
            .zip(cr.chunks_mut(g))
            .enumerate()
        {
            k.apply(&ps[j], xs, os, cs, base + (j * g) as u64);
        }
        let mut acc = Acc::default();
        acc.add(xr, or);
        (ps, acc, 0)
    }
}

multiversion! {
    /// Quantize and measure one piece of a tensor-wide group.
    fn piece(k: &Kernel, p: &Params, xs: &[f32], os: &mut [f32], cs: &mut [i16], base: u64) -> Acc {
        k.apply(p, xs, os, cs, base);
        let mut acc = Acc::default();
        acc.add(xs, os);
        acc
    }
}

multiversion! {
    /// [`Kernel::apply`] on its own, compiled for AVX2 too (for callers that are closures).
    fn apply_wide(k: &Kernel, p: &Params, xs: &[f32], os: &mut [f32], cs: &mut [i16]) -> () {
        k.apply(p, xs, os, cs, 0);
    }
}

multiversion! {
    /// The MSE search's errors of every candidate on one piece, added to `out`.
    fn errors_of_piece(
        k: &Kernel,
        ps: &[Params],
        xs: &[f32],
        base: u64,
        bar: Option<f64>,
        out: &mut [f64],
    ) -> () {
        k.sse_many(ps, xs, base, bar, out);
    }
}

/// Quantize with an int, uint or scaled-float spec; also returns the metric sums. The tensor is
/// checked for NaN/Inf here, on the way (`Err` holds how many there are).
pub fn quantize(x: &[f32], layout: Layout, spec: &Spec) -> Result<(Quantized, Acc), usize> {
    let k = Kernel::of(spec);
    let n = x.len();
    // every element is written below (a row with NaN/Inf is an error, and its result is dropped)
    let mut dequant = crate::kernels::buffers::f32_overwritten(n);
    let mut codes = crate::kernels::buffers::i16_overwritten(n);
    let (params, acc): (Vec<Params>, Acc) = if layout.rows == 1 && layout.group >= layout.cols {
        // one group for everything: fit once (the clip search runs over all data), apply in parallel chunks
        if let Err(super::QuantError::NotFinite(bad)) = super::all_finite(x) {
            return Err(bad);
        }
        let p = fit_whole(&k, x, spec, None);
        let accs: Vec<Acc> = dequant
            .par_chunks_mut(1 << 16)
            .zip(codes.par_chunks_mut(1 << 16))
            .zip(x.par_chunks(1 << 16))
            .enumerate()
            .map(|(ci, ((o, c), xs))| {
                crate::kernels::pause::point();
                piece(&k, &p, xs, o, c, (ci << 16) as u64)
            })
            .collect();
        (vec![p], accs.into_iter().fold(Acc::default(), Acc::merge))
    } else {
        let cols = layout.cols;
        let g = layout.group;
        let rows: Vec<(Vec<Params>, Acc, usize)> = x
            .par_chunks(cols)
            .zip(dequant.par_chunks_mut(cols))
            .zip(codes.par_chunks_mut(cols))
            .enumerate()
            .map(|(r, ((xr, or), cr))| {
                crate::kernels::pause::point();
                row(&k, spec, g, xr, or, cr, (r * cols) as u64)
            })
            .collect();
        let bad: usize = rows.iter().map(|r| r.2).sum();
        if bad > 0 {
            return Err(bad);
        }
        let mut params = Vec::with_capacity(layout.groups());
        let mut acc = Acc::default();
        for (ps, a, _) in rows {
            params.extend(ps);
            acc = acc.merge(a);
        }
        (params, acc)
    };
    let outer_scales = if spec.vsq {
        params
            .chunks(layout.groups_per_row())
            .map(|row| row[0].outer.unwrap_or(1.0))
            .collect()
    } else {
        Vec::new()
    };
    let q = Quantized {
        spec: *spec,
        layout,
        dequant,
        codes,
        scales: params.iter().map(|p| p.reported).collect(),
        zero_points: if matches!(spec.family, Family::Uint(_)) {
            params.iter().map(|p| p.zero).collect()
        } else {
            Vec::new()
        },
        outer_scales,
        codebook: Vec::new(),
        thresholds: if matches!(spec.family, Family::Uint(_)) {
            params
                .iter()
                .flat_map(|p| [p.threshold.0, p.threshold.1])
                .collect()
        } else {
            params.iter().map(|p| p.threshold.1).collect()
        },
        metrics: Default::default(),
    };
    Ok((q, acc))
}

/// The clip thresholds `quantize` reports for a per-tensor int/uint/float spec (symmetric: `[t]`;
/// asymmetric: `[lo, hi]`), from the same fit, without quantizing the tensor. The MSE search takes its
/// binned summary from `summaries` (of this `x`) if given, and leaves it there.
pub fn tensor_thresholds(
    x: &[f32],
    shape: &[usize],
    spec: &Spec,
    summaries: Option<&Summaries>,
) -> Result<Vec<f32>, super::QuantError> {
    let n: usize = shape.iter().product();
    if n != x.len() || n == 0 || spec.granularity != super::Granularity::Tensor || spec.vsq {
        // anything unusual: the full quantizer (which also reports bad input)
        return Ok(super::quantize(x, shape, spec)?.thresholds.clone());
    }
    super::all_finite(x)?;
    if !matches!(
        spec.family,
        Family::Int(_) | Family::Uint(_) | Family::Float(_)
    ) {
        return Ok(super::quantize(x, shape, spec)?.thresholds.clone());
    }
    Ok(thresholds_of(
        spec,
        &fit_whole(&Kernel::of(spec), x, spec, summaries),
    ))
}

/// The thresholds `quantize` reports for one group's parameters.
fn thresholds_of(spec: &Spec, p: &Params) -> Vec<f32> {
    if matches!(spec.family, Family::Uint(_)) {
        vec![p.threshold.0, p.threshold.1]
    } else {
        vec![p.threshold.1]
    }
}

/// What a clip method other than MSE finds in a whole tensor before the number format has its say:
/// the magnitude to keep (symmetric families) or the range (asymmetric uint). It depends on the data
/// alone, so the window computes it once per tensor and draws any format's clip lines from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Found {
    Magnitude(f32),
    Range(f32, f32),
}

/// [`Found`] for `clip` over all of `x` (finite values; `None` for MSE, which needs the format).
pub fn found_in(x: &[f32], clip: Clip, asymmetric: bool) -> Option<Found> {
    // the error sums are never asked for: only MSE searches
    let none = |_: &[f32], _: f64, out: &mut [f64]| out.fill(0.0);
    let none2 = |_: &[(f32, f32)], _: f64, out: &mut [f64]| out.fill(0.0);
    Some(match (asymmetric, clip) {
        (_, Clip::Mse) => return None,
        (true, Clip::MinMax) => {
            let (lo, hi) = par_min_max(x);
            let (lo, hi) = if lo > hi { (0.0, 0.0) } else { (lo, hi) };
            Found::Range(lo, hi)
        }
        (true, _) => {
            let (lo, hi) = asymmetric_range_batch(x, clip, &none2);
            Found::Range(lo, hi)
        }
        (false, Clip::MinMax) => Found::Magnitude(par_abs_max(x)),
        (false, _) => Found::Magnitude(symmetric_threshold_batch(x, clip, &none)),
    })
}

/// The thresholds `tensor_thresholds` gives for a per-tensor int/uint/float `spec` whose clip method
/// found `found` in the data (the format's scale, stored in its scale type, decides the rest).
pub fn thresholds_from(spec: &Spec, found: Found) -> Vec<f32> {
    thresholds_of(spec, &Kernel::of(spec).params_for(found, spec))
}

/// The whole tensor as one group: the same fit as a row group, with the extremes and the error search
/// parallel. The search evaluates each round of candidates in one pass over the data, all candidates
/// on a piece while it is in cache; the pieces' sums are added in order (pieces of 2^14 elements, a
/// multiple of the search's blocks, so the sums are those of one sequential pass up to f64 rounding).
fn fit_whole(k: &Kernel, x: &[f32], spec: &Spec, summaries: Option<&Summaries>) -> Params {
    const PIECE: usize = 1 << 14;
    // the pieces' sums are whole (no bar: a piece's partial sum says nothing about the total)
    let errs = |ps: &[Params], _bar: f64, out: &mut [f64]| {
        let parts: Vec<Vec<f64>> = x
            .par_chunks(PIECE)
            .enumerate()
            .map(|(ci, xs)| {
                crate::kernels::pause::point();
                let mut e = vec![0f64; ps.len()];
                errors_of_piece(k, ps, xs, (ci * PIECE) as u64, None, &mut e);
                e
            })
            .collect();
        out.fill(0.0);
        for p in parts {
            out.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
        }
    };
    match found_in(x, spec.clip, matches!(k.family, Family::Uint(_))) {
        Some(f) => k.params_for(f, spec),
        None if k.round == RoundMode::Nearest && x.len() >= BINNED_FROM => {
            ranked_mse(k, x, spec, &errs, summaries)
        }
        None => k.fit_with(x, spec, &errs),
    }
}

/// From this many values on, a tensor-wide MSE search ranks its candidates on a binned summary
/// (`binned`) and measures only the best [`FINALISTS`] on every value.
pub(crate) const BINNED_FROM: usize = 1 << 20;
const FINALISTS: usize = 4;

/// The MSE search run on errors from a binned summary (exact but for the few bins a rounding
/// boundary cuts); the best few candidates it saw are then measured on every value with `exact`, and
/// the exact best is chosen (ties: the least clipping, as the search does).
fn ranked_mse(
    k: &Kernel,
    x: &[f32],
    spec: &Spec,
    exact: &Errors<'_, Params>,
    summaries: Option<&Summaries>,
) -> Params {
    let log = matches!(k.family, Family::Float(_));
    let made;
    let b = match summaries {
        Some(s) => s.of(x, log),
        None => {
            made = Binned::new(x, log);
            &made
        }
    };
    let seen = std::sync::Mutex::new(Vec::<(f64, Params)>::new());
    // estimates are not sums in order, so the bar is not used
    let estimate = |ps: &[Params], _bar: f64, out: &mut [f64]| {
        let e = b.errors(ps.len(), &|c: usize, xs: &[f32], out: &mut [f32]| {
            thread_local! {
                static CODES: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            CODES.with_borrow_mut(|codes| {
                codes.resize(xs.len(), 0);
                apply_wide(k, &ps[c], xs, out, codes);
            });
        });
        if let Ok(mut s) = seen.lock() {
            s.extend(e.iter().copied().zip(ps.iter().copied()));
        }
        out.copy_from_slice(&e);
    };
    let fallback = k.fit_with(x, spec, &estimate);
    let mut seen = seen.into_inner().unwrap_or_default();
    seen.sort_by(|a, b| a.0.total_cmp(&b.0).then(span(&b.1).total_cmp(&span(&a.1))));
    seen.dedup_by(|a, b| a.1.threshold == b.1.threshold);
    let finalists: Vec<Params> = seen.iter().take(FINALISTS).map(|s| s.1).collect();
    if finalists.is_empty() {
        return fallback;
    }
    let mut errors = [0f64; FINALISTS];
    let errors = &mut errors[..finalists.len()];
    exact(&finalists, f64::INFINITY, errors);
    let mut best = 0;
    for i in 1..finalists.len() {
        let (e, b) = (errors[i], errors[best]);
        if e < b || (e == b && span(&finalists[i]) > span(&finalists[best])) {
            best = i;
        }
    }
    finalists[best]
}

/// Whether a group's MSE search sums its errors from buckets of sorted values (`bucketed`): int or
/// uint with nearest rounding and at most 32 levels per sign (int up to 6 bits, uint up to 5; few
/// boundaries), groups of at least [`BUCKETED_FROM`] values.
#[inline(always)]
fn bucketed_search(k: &Kernel, spec: &Spec, len: usize) -> bool {
    spec.clip == Clip::Mse
        && k.round == RoundMode::Nearest
        && matches!(k.family, Family::Int(b) if b <= 6)
            | matches!(k.family, Family::Uint(b) if b <= 5)
        && len >= BUCKETED_FROM
}

/// Groups of at least this many values search on buckets: below, sorting costs more than the
/// exhaustive sums save (the two break even near 2,048 values; `cargo bench --bench quant`).
const BUCKETED_FROM: usize = 2048;

/// How much of the line a group's range covers (larger: less clipping).
fn span(p: &Params) -> f32 {
    p.threshold.1 - p.threshold.0
}

fn par_abs_max(x: &[f32]) -> f32 {
    x.par_chunks(1 << 16).map(abs_max).reduce(|| 0.0, f32::max)
}

fn par_min_max(x: &[f32]) -> (f32, f32) {
    x.par_chunks(1 << 16).map(finite_min_max).reduce(
        || (f32::INFINITY, f32::NEG_INFINITY),
        |a, b| (a.0.min(b.0), a.1.max(b.1)),
    )
}

/// VS-Quant (Dai et al. 2021): each group keeps an unsigned 4-bit integer scale `s_g` and the channel
/// one float scale `γ = max_g S_g / 15`, so the group's scale is `s_g·γ` with `s_g = ceil(S_g/γ)` in
/// 1..=15 (rounding up keeps every group's range).
#[inline(always)]
fn vsq_rescale(ps: &mut [Params], spec: &Spec) {
    let top = ps.iter().map(|p| p.scale).fold(0f32, f32::max);
    let gamma = store_scale(if top > 0.0 { top / 15.0 } else { 1.0 }, spec.scale);
    for p in ps.iter_mut() {
        let s = (p.scale / gamma).ceil().clamp(1.0, 15.0);
        p.scale = s * gamma;
        p.reported = s;
        p.outer = Some(gamma);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{quantize as q, Spec};
    use super::{Family, Kernel, Params};

    fn gauss(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                ((-2.0 * next().max(1e-300).ln()).sqrt()
                    * (2.0 * std::f64::consts::PI * next()).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn six_db_per_bit() {
        // SQNR of a uniform quantizer rises by 20·log10(2) ≈ 6.02 dB per extra bit (quantization.md §9).
        // Full-scale uniform data: noise S²/12 against power 1/3 gives SQNR = 20·log10(2·qmax) with
        // qmax = 2^(N−1) − 1, which tends to 6.02·N; Gaussian data follows the same slope once N ≥ 6.
        let u: Vec<f32> = (0..1 << 16)
            .map(|i| ((i as f32 + 0.5) / 32768.0) - 1.0)
            .collect();
        for n in 3..=8 {
            let s = q(
                &u,
                &[64, 1024],
                &Spec::parse(&format!("int{n}:tensor")).unwrap(),
            )
            .unwrap()
            .metrics
            .sqnr_db;
            let qmax = ((1 << (n - 1)) - 1) as f64;
            assert!(
                (s - 20.0 * (2.0 * qmax).log10()).abs() < 0.05,
                "int{n}: {s}"
            );
        }
        let g = gauss(1 << 16, 3);
        let sqnr: Vec<f64> = (6..=8)
            .map(|b| {
                q(
                    &g,
                    &[64, 1024],
                    &Spec::parse(&format!("int{b}:tensor")).unwrap(),
                )
                .unwrap()
                .metrics
                .sqnr_db
            })
            .collect();
        for w in sqnr.windows(2) {
            assert!((w[1] - w[0] - 6.02).abs() < 0.2, "gaussian: {sqnr:?}");
        }
    }

    #[test]
    fn errors_stay_within_half_a_step() {
        let x = gauss(4096, 5);
        for spec in ["int4:channel", "int8:g32", "uint4:g16", "uint8:tensor"] {
            let r = q(&x, &[32, 128], &Spec::parse(spec).unwrap()).unwrap();
            let gpr = r.layout.groups_per_row();
            for (i, (&a, &b)) in x.iter().zip(&r.dequant).enumerate() {
                let g = (i / r.layout.cols) * gpr + (i % r.layout.cols) / r.layout.group;
                let g = if r.layout.rows == 1 && gpr == 1 { 0 } else { g };
                assert!(
                    (a - b).abs() <= r.scales[g] / 2.0 * 1.0001,
                    "{spec} element {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn clipping_lowers_the_error_on_heavy_tails() {
        let mut x = gauss(1 << 14, 9);
        x[17] = 60.0; // one outlier
        let shape = [1, x.len()];
        let mse = |s: &str| q(&x, &shape, &Spec::parse(s).unwrap()).unwrap().metrics.mse;
        let (minmax, p, m, kl) = (
            mse("int4:tensor"),
            mse("int4:tensor:clip=p99.9"),
            mse("int4:tensor:clip=mse"),
            mse("int4:tensor:clip=kl"),
        );
        assert!(
            m < minmax && p < minmax && kl < minmax,
            "minmax {minmax} p99.9 {p} mse {m} kl {kl}"
        );
        assert!(
            m <= p * 1.001,
            "the MSE search is at least as good as a percentile: {m} vs {p}"
        );
    }

    #[test]
    fn search_errors_are_those_of_the_quantizer() {
        // the search's sums (AVX2 where the CPU has it) equal the plain code's to the bit, and each is
        // the sum of the squared errors `apply` leaves, on data full of exact ties (k + 0.5)·S and on
        // Gaussian data, for int and uint, any length
        use super::{int_one, plain_sse, sse_int, sse_uint, uint_one};
        let exact_int = |x: &[f32], s: f32, qmax: f32| {
            plain_sse(x, f64::INFINITY, |v, a| int_one(v, s, qmax, a))
        };
        let exact_uint = |x: &[f32], s: f32, z: f32, qmax: f32| {
            plain_sse(x, f64::INFINITY, |v, a| uint_one(v, s, z, qmax, a))
        };
        let applied = |x: &[f32], family: Family, s: f32, z: i32| -> f64 {
            let k = Kernel {
                family,
                round: super::RoundMode::Nearest,
                seed: 0,
                rounder: None,
            };
            let p = Params {
                scale: s,
                zero: z,
                ..Params::default()
            };
            applied_sse(&k, &p, x)
        };
        let s = 0.1f32;
        let ties: Vec<f32> = (0..3000)
            .map(|i| ((i % 40) as f32 - 20.0 + 0.5) * s * if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect();
        let g = gauss(5000, 21);
        for x in [&ties[..], &ties[..1001], &g[..], &g[..77]] {
            for (s, qmax) in [(0.1f32, 7.0f32), (0.013, 127.0), (0.7, 1.0), (1e-3, 7.0)] {
                let inf = f64::INFINITY;
                let full = sse_int(x, s, qmax, inf);
                assert_eq!(full, exact_int(x, s, qmax), "int s={s}");
                let bits = (qmax + 1.0).log2() as u32 + 1;
                let want = applied(x, Family::Int(bits), s, 0);
                assert!(
                    (full - want).abs() <= 1e-5 * want,
                    "int s={s}: {full} vs {want}"
                );
                bar_stops_within_the_sum(full, &|bar| sse_int(x, s, qmax, bar));
                for z in [0.0f32, 3.0, 8.0] {
                    let q = 2.0 * qmax + 1.0;
                    let full = sse_uint(x, s, z, q, inf);
                    assert_eq!(full, exact_uint(x, s, z, q), "uint s={s} z={z}");
                    let want = applied(x, Family::Uint(bits), s, z as i32);
                    assert!(
                        (full - want).abs() <= 1e-5 * want,
                        "uint z={z}: {full} vs {want}"
                    );
                    bar_stops_within_the_sum(full, &|bar| sse_uint(x, s, z, q, bar));
                }
            }
        }
    }

    /// Σ(x − x̂)² in f64, x̂ from the kernel's own `apply`: the reference the searches are checked on.
    fn applied_sse(k: &Kernel, p: &Params, x: &[f32]) -> f64 {
        let (mut out, mut codes) = (vec![0f32; x.len()], vec![0i16; x.len()]);
        k.apply(p, x, &mut out, &mut codes, 0);
        x.iter()
            .zip(&out)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum()
    }

    /// The fit whose search measures every candidate with [`applied_sse`] (no bar, no shortcut).
    fn exhaustive_fit(k: &Kernel, spec: &Spec, x: &[f32]) -> Params {
        k.fit_with(x, spec, &|ps: &[Params], _, out: &mut [f64]| {
            for (o, p) in out.iter_mut().zip(ps) {
                *o = applied_sse(k, p, x);
            }
        })
    }

    /// With a bar, a sum at or below it is whole; one above it may stop early, but only above the bar
    /// and never above the whole sum.
    fn bar_stops_within_the_sum(full: f64, sum: &dyn Fn(f64) -> f64) {
        for f in [0.0, 0.01, 0.3, 0.9, 0.999, 1.0, 1.5] {
            let bar = full * f;
            let got = sum(bar);
            if full <= bar {
                assert_eq!(got, full, "bar {bar}");
            } else {
                assert!(got > bar && got <= full, "bar {bar}: {got} of {full}");
            }
        }
    }

    #[test]
    fn mse_search_finds_the_minimum_of_the_exact_error() {
        // per channel: the threshold chosen equals the one an independent search over the same
        // candidates picks with the error summed in f64 from x − x̂ (x̂ from the quantizer itself)
        let x = gauss(64 * 512, 23);
        let spec = Spec::parse("int4:channel:clip=mse").unwrap();
        let r = q(&x, &[64, 512], &spec).unwrap();
        let mut same = 0;
        for (row, xs) in x.chunks(512).enumerate() {
            let err = |t: f32| -> f64 {
                let s = t / 7.0;
                xs.iter()
                    .map(|&v| {
                        let k = ((v / s).clamp(-8.0, 8.0) + 12_582_912.0 - 12_582_912.0)
                            .clamp(-7.0, 7.0);
                        ((v - k * s) as f64).powi(2)
                    })
                    .sum()
            };
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let t = crate::calib::search_min(amax / 20.0, amax, &err);
            if t == r.thresholds[row] {
                same += 1;
            } else {
                // only a near tie between two candidates may go either way
                let (a, b) = (err(t), err(r.thresholds[row]));
                assert!(
                    (a - b).abs() <= 1e-6 * a,
                    "row {row}: {t} vs {}",
                    r.thresholds[row]
                );
            }
        }
        assert!(same >= 62, "{same} of 64 rows agree");
    }

    #[test]
    fn binned_tensor_search_chooses_as_the_exhaustive_one() {
        // a tensor large enough for the binned errors, with outliers; the exhaustive search sums
        // every value's (x − x̂)² in f64 for every candidate
        let mut x = gauss(super::BINNED_FROM + 12_345, 31);
        for i in (0..x.len()).step_by(50_021) {
            x[i] *= 25.0;
        }
        for spec in [
            "int4:tensor:clip=mse",
            "int8:tensor:clip=mse",
            "uint4:tensor:clip=mse",
            "fp8_e4m3:tensor:clip=mse",
            "fp4_e2m1:tensor:clip=mse",
        ] {
            let spec = Spec::parse(spec).unwrap();
            let k = Kernel::of(&spec);
            let sse = |p: &Params| applied_sse(&k, p, &x);
            let exhaustive = exhaustive_fit(&k, &spec, &x);
            let binned = super::fit_whole(&k, &x, &spec, None);
            // the ranking is on estimates: among near ties it may pick another candidate, whose
            // error is within 1e-4 of the exhaustive choice's (under 0.0005 dB of SQNR)
            let (a, b) = (sse(&binned), sse(&exhaustive));
            eprintln!(
                "{spec}: binned {:?} {a}, exhaustive {:?} {b}",
                binned.threshold, exhaustive.threshold
            );
            assert!(a <= b * (1.0 + 1e-4), "{spec}: {a} vs {b}");
        }
    }

    #[test]
    fn bucketed_row_search_equals_the_exhaustive_one() {
        // rows of 4,096 with outliers, int2..int6 and uint2..uint5 per channel and 4 bits per group
        // of 2,048: the thresholds equal those of the same search with every value's error summed
        // in f64 (a different choice only between candidates whose errors agree to 1e-9)
        let cols = 4096;
        let mut x = gauss(24 * cols, 43);
        for i in (0..x.len()).step_by(997) {
            x[i] *= 12.0;
        }
        for spec in [
            "int2:channel:clip=mse",
            "int4:channel:clip=mse",
            "int6:channel:clip=mse",
            "int4:g2048:clip=mse",
            "uint2:channel:clip=mse",
            "uint4:channel:clip=mse",
            "uint5:channel:clip=mse",
            "uint4:g2048:clip=mse",
        ] {
            let spec = Spec::parse(spec).unwrap();
            let k = Kernel::of(&spec);
            let r = q(&x, &[24, cols], &spec).unwrap();
            let g = r.layout.group;
            let mut same = 0;
            for (j, xs) in x.chunks(g).enumerate() {
                let sse = |p: &Params| applied_sse(&k, p, xs);
                let exhaustive = exhaustive_fit(&k, &spec, xs);
                let chosen = if matches!(spec.family, Family::Uint(_)) {
                    let (lo, hi) = (r.thresholds[2 * j], r.thresholds[2 * j + 1]);
                    k.asymmetric(lo, hi, &spec)
                } else {
                    k.symmetric(r.thresholds[j], &spec)
                };
                if chosen.threshold == exhaustive.threshold {
                    same += 1;
                } else {
                    let (a, b) = (sse(&chosen), sse(&exhaustive));
                    assert!((a - b).abs() <= 1e-9 * b, "{spec} group {j}: {a} vs {b}");
                }
            }
            assert!(same * 10 >= 9 * (x.len() / g), "{spec}: {same}");
        }
    }

    #[test]
    fn stochastic_rounding_is_unbiased_and_seeded() {
        let x = vec![0.3f32; 1 << 16];
        let s = Spec::parse("int4:tensor:round=stochastic:seed=3").unwrap();
        let mut y = x.clone();
        y[0] = 7.0; // scale = 1: values 0.3 round to 0 or 1
        let r = q(&y, &[y.len()], &s).unwrap();
        let mean: f64 =
            r.dequant[1..].iter().map(|&v| v as f64).sum::<f64>() / (y.len() - 1) as f64;
        assert!((mean - 0.3).abs() < 0.01, "{mean}");
        assert_eq!(
            r.dequant,
            q(&y, &[y.len()], &s).unwrap().dequant,
            "the same seed gives the same result"
        );
    }

    #[test]
    fn vsq_uses_small_integer_scales_and_beats_plain_channel() {
        let mut x = gauss(64 * 256, 11);
        for (i, v) in x.iter_mut().enumerate() {
            *v *= 1.0 + ((i / 16) % 7) as f32; // groups of very different ranges within a row
        }
        let r = q(&x, &[64, 256], &Spec::parse("int4:g16:vsq").unwrap()).unwrap();
        assert!(r
            .scales
            .iter()
            .all(|&s| (1.0..=15.0).contains(&s) && s.fract() == 0.0));
        assert_eq!(r.outer_scales.len(), 64);
        let plain = q(&x, &[64, 256], &Spec::parse("int4:channel").unwrap()).unwrap();
        assert!(
            r.metrics.sqnr_db > plain.metrics.sqnr_db + 1.0,
            "{} vs {}",
            r.metrics.sqnr_db,
            plain.metrics.sqnr_db
        );
        // 4 bits + 4/16 + 16/256
        assert!(
            (r.metrics.bits_per_weight - (4.0 + 0.25 + 16.0 / 256.0)).abs() < 1e-9,
            "{}",
            r.metrics.bits_per_weight
        );
    }

    #[test]
    fn scaled_floats_use_the_element_grid() {
        let x = gauss(4096, 13);
        let r = q(&x, &[16, 256], &Spec::parse("fp4_e2m1:channel").unwrap()).unwrap();
        for (row, s) in r.scales.iter().enumerate() {
            for &v in &r.dequant[row * 256..(row + 1) * 256] {
                let e = (v / s).abs();
                assert!([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0].contains(&e), "{e}");
            }
        }
        let r8 = q(&x, &[16, 256], &Spec::parse("fp8_e4m3:channel").unwrap()).unwrap();
        assert!(r8.metrics.sqnr_db > 30.0, "{}", r8.metrics.sqnr_db);
    }
}
