//! Statistics of a tensor: moments, ranges, exact percentiles of |x|, histograms, per-channel ranges.
//!
//! NaN and ±Inf are counted and left out of everything else, so one bad value does not turn every
//! statistic into NaN. Sums accumulate in f64. Work is split into chunks that rayon runs in parallel;
//! chunk results merge exactly (counts, extremes) or with the pairwise moment formulas of Chan et al.
//! and Pébay (central moments up to the fourth), which stay accurate when the mean is far from zero.

mod codes;

pub use codes::summarize_codes;
use rayon::prelude::*;
use serde::Serialize;

const CHUNK: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TensorStats {
    pub numel: usize,
    pub nan: usize,
    pub inf: usize,
    /// Over the finite values; 0 when there are none.
    pub min: f64,
    pub max: f64,
    pub absmax: f64,
    pub mean: f64,
    /// Population standard deviation (numpy's default, ddof = 0).
    pub std: f64,
    /// Excess kurtosis (Fisher: a normal distribution gives 0): m4 / m2² − 3. Large values mean outliers.
    pub kurtosis: f64,
    pub zeros: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
    m3: f64,
    m4: f64,
    min: f64,
    max: f64,
    nan: usize,
    inf: usize,
    zeros: usize,
}

impl Moments {
    fn of_chunk(x: &[f32]) -> Moments {
        let mut m = Moments {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Default::default()
        };
        let mut sum = 0.0f64;
        for &v in x {
            if v.is_nan() {
                m.nan += 1;
            } else if v.is_infinite() {
                m.inf += 1;
            } else {
                let v = v as f64;
                m.n += 1.0;
                sum += v;
                m.min = m.min.min(v);
                m.max = m.max.max(v);
                m.zeros += (v == 0.0) as usize;
            }
        }
        if m.n == 0.0 {
            return m;
        }
        m.mean = sum / m.n;
        // central sums over the chunk, which is still in cache
        for &v in x {
            if v.is_finite() {
                let d = v as f64 - m.mean;
                let d2 = d * d;
                m.m2 += d2;
                m.m3 += d2 * d;
                m.m4 += d2 * d2;
            }
        }
        m
    }

    fn merge(a: Moments, b: Moments) -> Moments {
        if a.n == 0.0 {
            return Moments {
                nan: a.nan + b.nan,
                inf: a.inf + b.inf,
                zeros: a.zeros + b.zeros,
                ..b
            };
        }
        if b.n == 0.0 {
            return Moments {
                nan: a.nan + b.nan,
                inf: a.inf + b.inf,
                zeros: a.zeros + b.zeros,
                ..a
            };
        }
        let n = a.n + b.n;
        let d = b.mean - a.mean;
        let d2 = d * d;
        let (na, nb) = (a.n, b.n);
        let mean = a.mean + d * nb / n;
        let m2 = a.m2 + b.m2 + d2 * na * nb / n;
        let m3 = a.m3
            + b.m3
            + d2 * d * na * nb * (na - nb) / (n * n)
            + 3.0 * d * (na * b.m2 - nb * a.m2) / n;
        let m4 = a.m4
            + b.m4
            + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n)
            + 6.0 * d2 * (na * na * b.m2 + nb * nb * a.m2) / (n * n)
            + 4.0 * d * (na * b.m3 - nb * a.m3) / n;
        Moments {
            n,
            mean,
            m2,
            m3,
            m4,
            min: a.min.min(b.min),
            max: a.max.max(b.max),
            nan: a.nan + b.nan,
            inf: a.inf + b.inf,
            zeros: a.zeros + b.zeros,
        }
    }
}

impl Moments {
    /// The statistics of `numel` values (finite or not) whose finite ones these are.
    fn stats(&self, numel: usize) -> TensorStats {
        let finite = self.n > 0.0;
        let var = if finite { self.m2 / self.n } else { 0.0 };
        TensorStats {
            numel,
            nan: self.nan,
            inf: self.inf,
            min: if finite { self.min } else { 0.0 },
            max: if finite { self.max } else { 0.0 },
            absmax: if finite {
                self.min.abs().max(self.max.abs())
            } else {
                0.0
            },
            mean: self.mean,
            std: var.sqrt(),
            kurtosis: if var > 0.0 {
                self.n * self.m4 / (self.m2 * self.m2) - 3.0
            } else {
                0.0
            },
            zeros: self.zeros,
        }
    }
}

/// Moments, extremes and counts in one parallel pass.
pub fn tensor_stats(x: &[f32]) -> TensorStats {
    x.par_chunks(CHUNK)
        .map(Moments::of_chunk)
        .reduce(Moments::default, Moments::merge)
        .stats(x.len())
}

/// Percentiles `ps` of `m` ordered values, the rank-`r` one being `value(r)`: linear interpolation
/// between the order statistics around (m − 1)·p/100, as numpy's default.
fn interpolated(m: u64, ps: &[f64], value: impl Fn(u64) -> f64) -> Vec<f64> {
    ps.iter()
        .map(|&p| {
            let h = (m - 1) as f64 * p.clamp(0.0, 100.0) / 100.0;
            let lo = h.floor();
            let (a, b) = (value(lo as u64), value((lo as u64 + 1).min(m - 1)));
            a + (h - lo) * (b - a)
        })
        .collect()
}

/// Exact percentiles of |x| over the finite values, interpolated linearly between order statistics as
/// numpy's default `np.percentile(np.abs(x), p)` does. `p` in [0, 100]. Empty input gives zeros.
pub fn abs_percentiles(x: &[f32], ps: &[f64]) -> Vec<f64> {
    order_statistics(x, ps, false)
}

/// Exact percentiles of the finite values themselves (signed), as `np.percentile(x, p)`.
pub fn percentiles(x: &[f32], ps: &[f64]) -> Vec<f64> {
    order_statistics(x, ps, true)
}

/// A 32-bit key that orders like the value: |v|'s bit pattern (`signed` false), or for signed values
/// the bits with negatives flipped and positives given the top bit. Non-finite values get keys whose
/// top 16 bits no finite value has: |v| ≥ 0x7F80_0000 (unsigned); below 0x0080_0000 (−Inf, −NaN) or
/// at least 0xFF80_0000 (+Inf, +NaN) (signed).
#[inline(always)]
pub(crate) fn order_key(v: f32, signed: bool) -> u32 {
    let b = v.to_bits();
    if signed {
        b ^ (((b as i32 >> 31) as u32) | 0x8000_0000)
    } else {
        b & 0x7fff_ffff
    }
}

/// The value of a signed [`order_key`].
pub(crate) fn from_order_key(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 {
        k & 0x7fff_ffff
    } else {
        !k
    })
}

/// Whether bucket (top 16 bits of the key) holds only non-finite values.
fn bucket_not_finite(b: usize, signed: bool) -> bool {
    if signed {
        !(0x0080..0xff80).contains(&b)
    } else {
        b >= 0x7f80
    }
}

const BUCKETS: usize = 1 << 16;

/// Counts of one piece per bucket (top 16 bits of the key), in two interleaved tables.
fn bucket_counts(c: &[f32], signed: bool) -> Vec<u32> {
    let mut t = vec![0u32; 2 * BUCKETS];
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above)
        unsafe { avx2_bucket_counts(c, signed, &mut t) };
        return t;
    }
    for (k, &v) in c.iter().enumerate() {
        t[(k & 1) * BUCKETS + (order_key(v, signed) >> 16) as usize] += 1;
    }
    t
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2_bucket_counts(c: &[f32], signed: bool, t: &mut [u32]) {
    use std::arch::x86_64::*;
    let n8 = c.len() / 8 * 8;
    let top = _mm256_set1_epi32(i32::MIN);
    let absm = _mm256_set1_epi32(0x7fff_ffff);
    let mut idx = [0u32; 8];
    let mut k = 0;
    while k < n8 {
        // SAFETY: k + 8 <= c.len(); idx has 8 slots
        unsafe {
            let b = _mm256_castps_si256(_mm256_loadu_ps(c.as_ptr().add(k)));
            let key = if signed {
                _mm256_xor_si256(b, _mm256_or_si256(_mm256_srai_epi32::<31>(b), top))
            } else {
                _mm256_and_si256(b, absm)
            };
            _mm256_storeu_si256(
                idx.as_mut_ptr() as *mut __m256i,
                _mm256_srli_epi32::<16>(key),
            );
        }
        for (j, &i) in idx.iter().enumerate() {
            // i < 2^16: the index is in range
            t[(j & 1) * BUCKETS + i as usize] += 1;
        }
        k += 8;
    }
    for (j, &v) in c[n8..].iter().enumerate() {
        t[(j & 1) * BUCKETS + (order_key(v, signed) >> 16) as usize] += 1;
    }
}

/// The (key, value) of every value of `c` whose bucket is in `wanted` (at most 8 buckets), in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2_gather(c: &[f32], signed: bool, wanted: &[u32]) -> Vec<(u32, f32)> {
    use std::arch::x86_64::*;
    let mut out = Vec::new();
    let ws: Vec<__m256i> = wanted
        .iter()
        .map(|&w| _mm256_set1_epi32(w as i32))
        .collect();
    let top = _mm256_set1_epi32(i32::MIN);
    let absm = _mm256_set1_epi32(0x7fff_ffff);
    let n8 = c.len() / 8 * 8;
    let mut k = 0;
    while k < n8 {
        // SAFETY: k + 8 <= c.len()
        let b = unsafe { _mm256_castps_si256(_mm256_loadu_ps(c.as_ptr().add(k))) };
        let key = if signed {
            _mm256_xor_si256(b, _mm256_or_si256(_mm256_srai_epi32::<31>(b), top))
        } else {
            _mm256_and_si256(b, absm)
        };
        let bucket = _mm256_srli_epi32::<16>(key);
        let mut hit = _mm256_setzero_si256();
        for w in &ws {
            hit = _mm256_or_si256(hit, _mm256_cmpeq_epi32(bucket, *w));
        }
        let mut mask = _mm256_movemask_ps(_mm256_castsi256_ps(hit));
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            let v = c[k + j];
            out.push((order_key(v, signed), if signed { v } else { v.abs() }));
            mask &= mask - 1;
        }
        k += 8;
    }
    for &v in &c[n8..] {
        if wanted.contains(&(order_key(v, signed) >> 16)) {
            out.push((order_key(v, signed), if signed { v } else { v.abs() }));
        }
    }
    out
}

/// Exact order statistics (see [`bucketed_order_statistics`]; small inputs are sorted).
fn order_statistics(x: &[f32], ps: &[f64], signed: bool) -> Vec<f64> {
    if x.len() <= SMALL {
        small_order_statistics(x, ps, signed)
    } else {
        bucketed_order_statistics(x, ps, signed)
    }
}

/// Up to this many values, [`order_statistics`] sorts the keys instead: its bucket table alone
/// (65,536 counters) is more than the values of a row, and per-channel percentiles ask for one
/// row at a time (a MiniLM model took 4 s for `uint8:clip=p99.9`).
const SMALL: usize = 1 << 15;

/// [`bucketed_order_statistics`] by selecting the wanted ranks among the finite values' keys: the same
/// ranks and interpolation. Each selection works on the part right of the previous rank, so the usual
/// tail percentiles cost about one pass, not a sort.
fn small_order_statistics(x: &[f32], ps: &[f64], signed: bool) -> Vec<f64> {
    let mut keys: Vec<u32> = x
        .iter()
        .map(|&v| order_key(v, signed))
        .filter(|&k| !bucket_not_finite((k >> 16) as usize, signed))
        .collect();
    if keys.is_empty() {
        return vec![0.0; ps.len()];
    }
    let m = keys.len() as u64;
    let mut ranks: Vec<u64> = ps
        .iter()
        .flat_map(|&p| {
            let lo = ((m - 1) as f64 * p.clamp(0.0, 100.0) / 100.0).floor() as u64;
            [lo, (lo + 1).min(m - 1)]
        })
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    let mut found = Vec::with_capacity(ranks.len());
    let mut start = 0usize;
    for &r in &ranks {
        let r = r as usize;
        keys[start..].select_nth_unstable(r - start);
        found.push(keys[r]);
        start = r;
    }
    let value = |rank: u64| -> f64 {
        let k = found[ranks.binary_search(&rank).expect("rank selected")];
        (if signed {
            from_order_key(k)
        } else {
            f32::from_bits(k)
        }) as f64
    };
    interpolated(m, ps, value)
}

/// Two parallel passes: a 65,536-bucket histogram of the top 16 bits of a monotone key, then a gather
/// of the few values in the buckets that hold the wanted ranks, sorted to read the ranks exactly.
/// No copy of the tensor is made.
fn bucketed_order_statistics(x: &[f32], ps: &[f64], signed: bool) -> Vec<f64> {
    let key32 = |v: f32| order_key(v, signed);
    let value = |v: f32| if signed { v } else { v.abs() };
    let key = |v: f32| key32(v) >> 16;
    // pieces of at most 2^20 values, so the u32 counts cannot overflow
    let parts: Vec<Vec<u32>> = x
        .par_chunks(1 << 20)
        .map(|c| bucket_counts(c, signed))
        .collect();
    let mut counts = vec![0u64; BUCKETS];
    for p in &parts {
        for (b, c) in counts.iter_mut().enumerate() {
            *c += p[b] as u64 + p[BUCKETS + b] as u64;
        }
    }
    for (b, c) in counts.iter_mut().enumerate() {
        if bucket_not_finite(b, signed) {
            *c = 0;
        }
    }
    let m: u64 = counts.iter().sum();
    if m == 0 {
        return vec![0.0; ps.len()];
    }
    // the ranks each percentile needs: floor(h) and floor(h) + 1, h = (m − 1)·p/100
    let positions: Vec<(u64, f64)> = ps
        .iter()
        .map(|&p| {
            let h = (m - 1) as f64 * p.clamp(0.0, 100.0) / 100.0;
            let lo = h.floor();
            (lo as u64, h - lo)
        })
        .collect();
    let mut ranks: Vec<u64> = positions
        .iter()
        .flat_map(|&(lo, _)| [lo, (lo + 1).min(m - 1)])
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    // bucket of each rank, and the rank's offset inside it
    let mut prefix = 0u64;
    let mut where_: Vec<(u64, usize, u64)> = Vec::new(); // (rank, bucket, offset)
    let mut ri = 0;
    for (b, &c) in counts.iter().enumerate() {
        while ri < ranks.len() && ranks[ri] < prefix + c {
            where_.push((ranks[ri], b, ranks[ri] - prefix));
            ri += 1;
        }
        prefix += c;
    }
    let mut is_wanted = vec![false; BUCKETS];
    where_.iter().for_each(|w| is_wanted[w.1] = true);
    // a non-finite value's bucket is never wanted (its count was set to 0)
    let mut wanted: Vec<u32> = where_.iter().map(|w| w.1 as u32).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut gathered: Vec<(u32, f32)> = x
        .par_chunks(1 << 20)
        .flat_map_iter(|c| {
            #[cfg(target_arch = "x86_64")]
            if crate::kernels::simd::avx2() && wanted.len() <= 8 {
                // SAFETY: the CPU supports AVX2 (checked just above)
                return unsafe { avx2_gather(c, signed, &wanted) };
            }
            c.iter()
                .filter(|v| is_wanted[key(**v) as usize])
                .map(|&v| (key32(v), value(v)))
                .collect::<Vec<_>>()
        })
        .collect();
    gathered.sort_unstable_by_key(|g| g.0);
    let value_at = |rank: u64| -> f64 {
        let &(_, b, off) = where_.iter().find(|w| w.0 == rank).expect("rank located");
        let first = gathered.partition_point(|g| ((g.0 >> 16) as usize) < b);
        gathered[first + off as usize].1 as f64
    };
    positions
        .iter()
        .map(|&(lo, frac)| {
            let a = value_at(lo);
            let b = value_at((lo + 1).min(m - 1));
            a + frac * (b - a)
        })
        .collect()
}

/// Counts of values in equal-width bins over `[lo, hi]`; values outside are counted apart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    pub below: u64,
    pub above: u64,
}

impl Histogram {
    pub fn bin_width(&self) -> f64 {
        (self.hi - self.lo) / self.counts.len().max(1) as f64
    }

    /// Centre of bin `i`.
    pub fn center(&self, i: usize) -> f64 {
        self.lo + (i as f64 + 0.5) * self.bin_width()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.below + self.above
    }
}

/// The largest finite |x| (0 when there is none). Eight independent f32 maxima, Inf/NaN replaced by
/// 0 with one comparison (`|v| <= f32::MAX` is false for both), so the loop vectorises even on
/// baseline x86-64 (`maxps`; an integer max of the bit patterns would need SSE4.1). Maximum is exact,
/// so the lanes' order does not matter.
#[inline(always)]
pub fn abs_max(x: &[f32]) -> f32 {
    #[inline(always)]
    fn one(m: f32, v: f32) -> f32 {
        let a = v.abs();
        let a = if a <= f32::MAX { a } else { 0.0 };
        if a > m {
            a
        } else {
            m
        }
    }
    let mut m = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            m[j] = one(m[j], c[j]);
        }
    }
    for &v in tail {
        m[0] = one(m[0], v);
    }
    m.iter().fold(0f32, |a, &b| one(a, b))
}

/// Σ c_j·x_ij² in f64 over a row-major `x` whose rows have `col.len()` columns (with `col` None,
/// Σ x²), on all cores. Eight independent lanes per sum so it vectorises; the order of the additions
/// differs from a plain loop only in the last bits.
pub fn sum_squares(x: &[f32], col: Option<&[f32]>) -> f64 {
    /// One row (or any run, unweighted): eight lanes, then the tail.
    fn lanes(x: &[f32], c: Option<&[f32]>) -> f64 {
        let mut l = [0f64; 8];
        let xs = x.chunks_exact(8);
        let tail = xs.remainder();
        let t: f64 = match c {
            Some(c) => {
                for (a, w) in xs.zip(c.chunks_exact(8)) {
                    (0..8).for_each(|j| l[j] += w[j] as f64 * (a[j] as f64 * a[j] as f64));
                }
                let ct = &c[c.len() - tail.len()..];
                tail.iter()
                    .zip(ct)
                    .map(|(&a, &w)| w as f64 * (a as f64 * a as f64))
                    .sum()
            }
            None => {
                for a in xs {
                    (0..8).for_each(|j| l[j] += a[j] as f64 * a[j] as f64);
                }
                tail.iter().map(|&a| a as f64 * a as f64).sum()
            }
        };
        l.iter().sum::<f64>() + t
    }
    match col {
        // whole rows per task, each weighted by the same columns
        Some(c) if !c.is_empty() => {
            let per = ((1 << 16) / c.len()).max(1) * c.len();
            x.par_chunks(per)
                .map(|b| {
                    b.chunks_exact(c.len())
                        .map(|r| lanes(r, Some(c)))
                        .sum::<f64>()
                })
                .sum()
        }
        _ => x.par_chunks(1 << 16).map(|b| lanes(b, None)).sum(),
    }
}

/// How many values are NaN or ±Inf. The common case, none, is found by one vectorised pass:
/// `v − v` is +0 (all bits clear) for every finite value and NaN otherwise; the bits are OR-ed
/// together (one cycle, no chain of additions). Only then are they counted.
#[inline(always)]
#[allow(clippy::eq_op)] // `v - v` on purpose: 0 for finite values, NaN otherwise
pub fn count_non_finite(x: &[f32]) -> usize {
    let mut acc = [0u32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] |= (c[j] - c[j]).to_bits();
        }
    }
    let t = tail.iter().fold(0u32, |a, v| a | (v - v).to_bits());
    if acc.iter().fold(t, |a, &b| a | b) == 0 {
        0
    } else {
        x.iter().filter(|v| !v.is_finite()).count()
    }
}

/// The smallest and largest finite values, `(+inf, −inf)` when there is none. Eight independent
/// lanes, a non-finite value replaced by the neutral element of each side, so it vectorises (min
/// and max are exact: the order does not matter).
#[inline(always)]
pub fn finite_min_max(x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if x.len() >= 16 && crate::kernels::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above). Callers outside an AVX2 function
        // (the clip search) would otherwise run the plain loop in 4-lane SSE2.
        return unsafe { avx2_min_max(x) };
    }
    finite_min_max_plain(x)
}

#[inline(always)]
fn finite_min_max_plain(x: &[f32]) -> (f32, f32) {
    #[inline(always)]
    fn one(lo: &mut f32, hi: &mut f32, v: f32) {
        let fin = v.abs() <= f32::MAX;
        let l = if fin { v } else { f32::INFINITY };
        let h = if fin { v } else { f32::NEG_INFINITY };
        *lo = if l < *lo { l } else { *lo };
        *hi = if h > *hi { h } else { *hi };
    }
    let (mut lo, mut hi) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            one(&mut lo[j], &mut hi[j], c[j]);
        }
    }
    for &v in tail {
        one(&mut lo[0], &mut hi[0], v);
    }
    let (mut l, mut h) = (f32::INFINITY, f32::NEG_INFINITY);
    for j in 0..8 {
        one(&mut l, &mut h, lo[j]);
        one(&mut l, &mut h, hi[j]);
    }
    (l, h)
}

/// The smallest and largest of values the caller knows are all finite (no NaN: the comparisons
/// would drop it). Eight independent lanes of plain `min`/`max`, so it vectorises to two instructions
/// per eight values; `(+inf, −inf)` for an empty slice.
#[inline(always)]
pub fn min_max_of_finite(x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above). The plain loop below, inlined into a
        // group loop, compiled to compares, mask packing and blends instead of `vminps`/`vmaxps`.
        return unsafe { avx2_min_max_of_finite(x) };
    }
    let (mut lo, mut hi) = ([f32::INFINITY; 8], [f32::NEG_INFINITY; 8]);
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
            hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
        }
    }
    for &v in tail {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
    }
    let l = lo
        .iter()
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
    let h = hi
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    (l, h)
}

/// [`min_max_of_finite`] with AVX2 vectors (min and max are exact: any order gives the same).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2_min_max_of_finite(x: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let (mut lo, mut hi) = (
        _mm256_set1_ps(f32::INFINITY),
        _mm256_set1_ps(f32::NEG_INFINITY),
    );
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        // SAFETY: c holds 8 values
        let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
        lo = _mm256_min_ps(v, lo);
        hi = _mm256_max_ps(v, hi);
    }
    let (mut l, mut u) = ([0f32; 8], [0f32; 8]);
    // SAFETY: both arrays have room for 8 values
    unsafe {
        _mm256_storeu_ps(l.as_mut_ptr(), lo);
        _mm256_storeu_ps(u.as_mut_ptr(), hi);
    }
    let (mut a, mut b) = (f32::INFINITY, f32::NEG_INFINITY);
    for v in l.into_iter().chain(tail.iter().copied()) {
        a = if v < a { v } else { a };
    }
    for v in u.into_iter().chain(tail.iter().copied()) {
        b = if v > b { v } else { b };
    }
    (a, b)
}

/// [`finite_min_max`] of one piece, with AVX2 vectors where available (min/max are exact, so the
/// order does not matter).
fn min_max_piece(x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above)
        return unsafe { avx2_min_max(x) };
    }
    finite_min_max_plain(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2_min_max(x: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let (pinf, ninf) = (
        _mm256_set1_ps(f32::INFINITY),
        _mm256_set1_ps(f32::NEG_INFINITY),
    );
    let absm = _mm256_set1_epi32(0x7fff_ffff);
    let inf = _mm256_set1_epi32(0x7f80_0000);
    let (mut lo, mut hi) = ([pinf; 2], [ninf; 2]);
    let mut k = 0;
    while k + 16 <= n8 {
        for h in 0..2 {
            // SAFETY: k + 8h + 8 <= n8 <= x.len()
            let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(k + 8 * h)) };
            // finite: |bits| < bits of +inf (as signed integers, both are non-negative)
            let fin = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                inf,
                _mm256_and_si256(_mm256_castps_si256(v), absm),
            ));
            lo[h] = _mm256_min_ps(_mm256_blendv_ps(pinf, v, fin), lo[h]);
            hi[h] = _mm256_max_ps(_mm256_blendv_ps(ninf, v, fin), hi[h]);
        }
        k += 16;
    }
    let mut l = [0f32; 16];
    let mut u = [0f32; 16];
    // SAFETY: both arrays have room for 16 values
    unsafe {
        _mm256_storeu_ps(l.as_mut_ptr(), lo[0]);
        _mm256_storeu_ps(l.as_mut_ptr().add(8), lo[1]);
        _mm256_storeu_ps(u.as_mut_ptr(), hi[0]);
        _mm256_storeu_ps(u.as_mut_ptr().add(8), hi[1]);
    }
    let (a, b) = finite_min_max_plain(&x[k..]);
    (
        l.iter().copied().fold(a, f32::min),
        u.iter().copied().fold(b, f32::max),
    )
}

/// The finite extremes of `x` in parallel, `(+inf, −inf)` when there is none.
pub fn par_min_max(x: &[f32]) -> (f32, f32) {
    x.par_chunks(1 << 16).map(min_max_piece).reduce(
        || (f32::INFINITY, f32::NEG_INFINITY),
        |(a, b), (c, d)| (a.min(c), b.max(d)),
    )
}

/// A histogram of the finite values with `bins` bins over `range` (default: [min, max] of the data;
/// a zero-width range is widened by ±0.5 so a constant tensor still has a bin). The top edge belongs
/// to the last bin, as in numpy.
pub fn histogram(x: &[f32], bins: usize, range: Option<(f64, f64)>) -> Histogram {
    let bins = bins.max(1);
    let (lo, hi) = range.unwrap_or_else(|| {
        // only the extremes are needed: one light pass, not the full moments
        let (a, b) = par_min_max(x);
        (a as f64, b as f64)
    });
    let (lo, hi) = usable_range(lo, hi);
    let scale = bins as f64 / (hi - lo);
    let parts: Vec<Vec<u64>> = x
        .par_chunks(1 << 18)
        .map(|c| bin_counts(c, lo, hi, scale, bins))
        .collect();
    from_parts(parts, bins, (lo, hi))
}

/// A histogram's range: `[0, 1]` for one that is not finite or reversed, widened by ±0.5 when empty.
fn usable_range(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        (0.0, 1.0)
    } else if hi == lo {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// The histogram from the slot counts of its pieces (the bins, then below, above, not finite).
fn from_parts(parts: Vec<Vec<u64>>, bins: usize, (lo, hi): (f64, f64)) -> Histogram {
    let mut all = vec![0u64; bins + 3];
    for p in parts {
        all.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    Histogram {
        lo,
        hi,
        counts: all[..bins].to_vec(),
        below: all[bins],
        above: all[bins + 1],
    }
}

/// The histogram of |x| over `[0, amax]`, equal to [`histogram`] of the magnitudes with that range,
/// without a copy of the magnitudes (64 MB for a 4096 × 4096 layer): each piece takes its
/// magnitudes into a small buffer of its own.
pub fn abs_histogram(x: &[f32], bins: usize, amax: f64) -> Histogram {
    const PIECE: usize = 1 << 14;
    let bins = bins.max(1);
    let (lo, hi) = usable_range(0.0, amax);
    let scale = bins as f64 / (hi - lo);
    let parts: Vec<Vec<u64>> = x
        .par_chunks(1 << 18)
        .map(|c| {
            let mut buf = [0f32; PIECE];
            let mut all = vec![0u64; bins + 3];
            for piece in c.chunks(PIECE) {
                let m = &mut buf[..piece.len()];
                m.iter_mut().zip(piece).for_each(|(a, v)| *a = v.abs());
                let counts = bin_counts(m, lo, hi, scale, bins);
                all.iter_mut().zip(&counts).for_each(|(a, b)| *a += b);
            }
            all
        })
        .collect();
    from_parts(parts, bins, (lo, hi))
}

/// The slot of one value: its bin `min(⌊(v − lo)·scale⌋, bins − 1)` (in f64, as numpy), or `bins`
/// (below `lo`), `bins + 1` (above `hi`), `bins + 2` (not finite).
#[inline(always)]
fn slot(v: f32, lo: f64, hi: f64, scale: f64, bins: usize) -> usize {
    if !v.is_finite() {
        return bins + 2;
    }
    let v = v as f64;
    if v < lo {
        bins
    } else if v > hi {
        bins + 1
    } else {
        (((v - lo) * scale) as usize).min(bins - 1)
    }
}

/// Counts of one piece (fewer than 2^32 values) in `bins + 3` slots (see [`slot`]). Eight interleaved
/// tables, so consecutive values in the same bin do not wait on each other's increment.
fn bin_counts(c: &[f32], lo: f64, hi: f64, scale: f64, bins: usize) -> Vec<u64> {
    let w = bins + 3;
    let mut t = vec![0u32; TABLES * w];
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::avx2() && bins < (1 << 30) {
        // SAFETY: the CPU supports AVX2 (checked just above)
        unsafe { avx2_bin_counts(c, lo, hi, scale, bins, &mut t) };
        return merge_tables(&t, w);
    }
    for (k, &v) in c.iter().enumerate() {
        t[(k % TABLES) * w + slot(v, lo, hi, scale, bins)] += 1;
    }
    merge_tables(&t, w)
}

/// Interleaved count tables of [`bin_counts`].
const TABLES: usize = 8;

fn merge_tables(t: &[u32], w: usize) -> Vec<u64> {
    (0..w)
        .map(|i| (0..TABLES).map(|j| t[j * w + i] as u64).sum())
        .collect()
}

/// [`slot`] for eight values at a time: the same comparisons and the same f64 arithmetic (a value in
/// range gives a non-negative product below 2^31, so truncation to i32 equals the cast to usize).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2_bin_counts(c: &[f32], lo: f64, hi: f64, scale: f64, bins: usize, t: &mut [u32]) {
    use std::arch::x86_64::*;
    let w = bins + 3;
    let n8 = c.len() / 8 * 8;
    let (vlo, vhi, vs) = (
        _mm256_set1_pd(lo),
        _mm256_set1_pd(hi),
        _mm256_set1_pd(scale),
    );
    let last = _mm_set1_epi32(bins as i32 - 1);
    let (below, above, bad) = (
        _mm_set1_epi32(bins as i32),
        _mm_set1_epi32(bins as i32 + 1),
        _mm_set1_epi32(bins as i32 + 2),
    );
    let inf = _mm_set1_epi32(0x7f80_0000);
    let absm = _mm_set1_epi32(0x7fff_ffff);
    let mut idx = [0i32; 8];
    let mut k = 0;
    while k < n8 {
        for h in 0..2 {
            // SAFETY: k + 4h + 4 <= n8 <= c.len(); idx has 8 slots
            unsafe {
                let v = _mm_loadu_ps(c.as_ptr().add(k + 4 * h));
                let d = _mm256_cvtps_pd(v);
                let fin = _mm_cmplt_epi32(_mm_and_si128(_mm_castps_si128(v), absm), inf);
                let lt = _mm256_cmp_pd::<_CMP_LT_OQ>(d, vlo);
                let gt = _mm256_cmp_pd::<_CMP_GT_OQ>(d, vhi);
                let b = _mm256_cvttpd_epi32(_mm256_mul_pd(_mm256_sub_pd(d, vlo), vs));
                let b = _mm_min_epi32(b, last);
                // narrow the f64 masks to 32-bit lanes
                let lt = _mm256_cvtpd_ps(lt);
                let gt = _mm256_cvtpd_ps(gt);
                let b = _mm_blendv_epi8(b, below, _mm_castps_si128(lt));
                let b = _mm_blendv_epi8(b, above, _mm_castps_si128(gt));
                let b = _mm_blendv_epi8(bad, b, fin);
                _mm_storeu_si128(idx.as_mut_ptr().add(4 * h) as *mut __m128i, b);
            }
        }
        for (j, &i) in idx.iter().enumerate() {
            t[j * w + i as usize] += 1;
        }
        k += 8;
    }
    for (j, &v) in c[n8..].iter().enumerate() {
        t[((n8 + j) % TABLES) * w + slot(v, lo, hi, scale, bins)] += 1;
    }
}

/// Per output channel (rows of a `[channels, per]` view): min, max and absmax of the finite values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelRanges {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    pub absmax: Vec<f32>,
}

pub fn channel_ranges(x: &[f32], channels: usize) -> ChannelRanges {
    // never more channels than values: a hostile shape must not cause a huge allocation
    let channels = channels.clamp(1, x.len().max(1));
    let per = x.len() / channels;
    if per == 0 {
        return ChannelRanges {
            min: vec![0.0; channels],
            max: vec![0.0; channels],
            absmax: vec![0.0; channels],
        };
    }
    let r: Vec<(f32, f32)> = x
        .par_chunks(per)
        .map(|row| {
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &v in row.iter().filter(|v| v.is_finite()) {
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if lo > hi {
                (0.0, 0.0)
            } else {
                (lo, hi)
            }
        })
        .collect();
    ChannelRanges {
        absmax: r.iter().map(|&(a, b)| a.abs().max(b.abs())).collect(),
        min: r.iter().map(|p| p.0).collect(),
        max: r.iter().map(|p| p.1).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_squares_is_the_plain_sum() {
        // odd widths leave tails in every row; many rows span several parallel tasks
        for (rows, cols) in [(1, 1), (3, 13), (700, 133), (2, 70_001)] {
            let x: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
                .collect();
            let c: Vec<f32> = (0..cols).map(|j| 0.5 + (j % 11) as f32).collect();
            let plain: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            let weighted: f64 = x
                .iter()
                .enumerate()
                .map(|(i, &v)| c[i % cols] as f64 * v as f64 * v as f64)
                .sum();
            assert!((sum_squares(&x, None) - plain).abs() <= 1e-12 * plain);
            let w = sum_squares(&x, Some(&c));
            assert!(
                (w - weighted).abs() <= 1e-12 * weighted,
                "{rows}x{cols}: {w} vs {weighted}"
            );
        }
    }

    fn naive_percentile(x: &[f32], p: f64) -> f64 {
        let mut a: Vec<f64> = x
            .iter()
            .filter(|v| v.is_finite())
            .map(|v| v.abs() as f64)
            .collect();
        a.sort_by(f64::total_cmp);
        let h = (a.len() - 1) as f64 * p / 100.0;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(a.len() - 1);
        a[lo] + (h - lo as f64) * (a[hi] - a[lo])
    }

    fn data(n: usize) -> Vec<f32> {
        let mut s = 12345u64;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                (u - 0.5) * (1.0 + 20.0 * u * u * u * u) // heavy right tail
            })
            .collect()
    }

    #[test]
    fn percentiles_are_exact_order_statistics() {
        let mut x = data(300_001);
        x[7] = f32::NAN;
        x[8] = f32::INFINITY;
        x[9] = 0.0;
        for p in [0.0, 1.0, 50.0, 99.0, 99.9, 99.99, 100.0] {
            let got = abs_percentiles(&x, &[p])[0];
            assert_eq!(got, naive_percentile(&x, p), "p{p}");
        }
        assert_eq!(abs_percentiles(&[], &[99.0]), vec![0.0]);
        assert_eq!(abs_percentiles(&[3.0], &[0.0, 50.0, 100.0]), vec![3.0; 3]);
    }

    #[test]
    fn small_inputs_select_the_same_percentiles() {
        let mut x = data(40_000);
        x[3] = -0.0;
        x[5] = f32::NAN;
        x[8] = f32::NEG_INFINITY;
        let ps = [0.0, 0.1, 25.0, 50.0, 99.9, 99.99, 100.0];
        for n in [1, 2, 7, 384, 4096, 32_768] {
            for signed in [false, true] {
                assert_eq!(
                    small_order_statistics(&x[..n], &ps, signed),
                    bucketed_order_statistics(&x[..n], &ps, signed),
                    "{n} signed {signed}"
                );
            }
        }
        assert_eq!(small_order_statistics(&[f32::NAN], &ps, true), vec![0.0; 7]);
    }

    #[test]
    fn signed_percentiles_are_exact() {
        let mut x = data(100_003);
        x[3] = -0.0;
        let mut sorted: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        sorted.sort_by(f64::total_cmp);
        for p in [0.0, 0.05, 25.0, 50.0, 99.95, 100.0] {
            let h = (sorted.len() - 1) as f64 * p / 100.0;
            let lo = h.floor() as usize;
            let want = sorted[lo]
                + (h - lo as f64) * (sorted[(lo + 1).min(sorted.len() - 1)] - sorted[lo]);
            assert_eq!(percentiles(&x, &[p])[0], want, "p{p}");
        }
    }

    #[test]
    fn moments_match_a_two_pass_reference() {
        let x: Vec<f32> = data(200_000).iter().map(|v| v + 1000.0).collect(); // far from zero
        let s = tensor_stats(&x);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let m2 = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let m4 = x.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / n;
        assert!((s.mean - mean).abs() < 1e-9 * mean.abs());
        assert!((s.std - m2.sqrt()).abs() < 1e-9 * m2.sqrt());
        assert!((s.kurtosis - (m4 / (m2 * m2) - 3.0)).abs() < 1e-8);
    }

    #[test]
    fn bad_values_are_counted_not_spread() {
        let s = tensor_stats(&[1.0, f32::NAN, -3.0, f32::NEG_INFINITY, 0.0]);
        assert_eq!(
            (s.nan, s.inf, s.zeros, s.min, s.max, s.absmax),
            (1, 1, 1, -3.0, 1.0, 3.0)
        );
        let s = tensor_stats(&[f32::NAN]);
        assert_eq!((s.min, s.max, s.std, s.kurtosis), (0.0, 0.0, 0.0, 0.0));
        let s = tensor_stats(&[]);
        assert_eq!(s.numel, 0);
        let s = tensor_stats(&[2.0; 10]);
        assert_eq!((s.std, s.kurtosis), (0.0, 0.0));
    }

    #[test]
    fn histogram_counts_like_numpy() {
        // numpy.histogram([0, 0.25, 0.5, 1, 1], bins=4) → [1, 1, 1, 2]
        let h = histogram(&[0.0, 0.25, 0.5, 1.0, 1.0], 4, None);
        assert_eq!(h.counts, vec![1, 1, 1, 2]);
        let h = histogram(&[5.0, 5.0], 3, None);
        assert_eq!((h.lo, h.hi, h.counts.iter().sum::<u64>()), (4.5, 5.5, 2));
        let h = histogram(&[-2.0, 0.5, 3.0, f32::NAN], 2, Some((0.0, 1.0)));
        assert_eq!((h.below, h.above, h.counts.clone()), (1, 1, vec![0, 1]));
    }

    #[test]
    fn abs_histogram_counts_the_magnitudes() {
        let x: Vec<f32> = (0..700_000)
            .map(|i| ((i as f32) * 0.37).sin() * if i % 5 == 0 { -3.0 } else { 1.0 })
            .chain([f32::NAN, f32::INFINITY, -0.0])
            .collect();
        let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        for (bins, amax) in [(2048, 3.0), (96, 1.5), (7, 0.2)] {
            let a = abs_histogram(&x, bins, amax);
            let b = histogram(&abs, bins, Some((0.0, amax)));
            assert_eq!((a.counts, a.below, a.above), (b.counts, b.below, b.above));
        }
    }

    #[test]
    fn channel_ranges_per_row() {
        let r = channel_ranges(&[1.0, -2.0, 3.0, 0.5, f32::NAN, -0.25], 2);
        assert_eq!(r.min, vec![-2.0, -0.25]);
        assert_eq!(r.max, vec![3.0, 0.5]);
        assert_eq!(r.absmax, vec![3.0, 0.5]);
    }
}

/// Everything `inspect` and the model browser show about one tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub stats: TensorStats,
    /// 99th, 99.9th and 99.99th percentiles of |x|.
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub histogram: Histogram,
    /// Per output channel (dimension 0), for tensors of two or more dimensions.
    pub channels: Option<ChannelRanges>,
}

/// Statistics, percentiles, a `bins`-bin histogram over [min, max], and per-channel ranges when
/// `channels > 1`.
pub fn summarize(x: &[f32], channels: usize, bins: usize) -> Summary {
    let stats = tensor_stats(x);
    let p = abs_percentiles(x, &[99.0, 99.9, 99.99]);
    Summary {
        stats,
        p99: p[0],
        p99_9: p[1],
        p99_99: p[2],
        histogram: histogram(x, bins, Some((stats.min, stats.max))),
        channels: (channels > 1).then(|| channel_ranges(x, channels)),
    }
}

/// Read one tensor of a model and summarise it. A tensor of 16 bits or fewer per element is summarised
/// from its bytes ([`summarize_codes`]); a wider one is widened to f32, and the copy is dropped before
/// returning. Either way a scan of a whole model holds at most one tensor at a time.
pub fn summarize_tensor(
    model: &crate::model::Model,
    t: &crate::model::TensorInfo,
    bins: usize,
) -> Result<Summary, crate::model::ModelError> {
    let channels = t.channels().0;
    let s = match code_values(t.dtype) {
        Some(values) => summarize_codes(
            model.bytes(t),
            t.dtype.bitsize() / 8,
            &values,
            t.dtype == safetensors::Dtype::BF16,
            channels,
            bins,
        ),
        _ => {
            let x = model.read_f32(t)?;
            let s = summarize(&x, channels, bins);
            crate::kernels::buffers::give_f32(x);
            s
        }
    };
    model.release(t);
    Ok(s)
}

/// Below this many elements a tensor is summarised on one thread, and runs of such tensors are
/// summarised side by side: splitting a small tensor across threads costs more than it saves.
const ONE_THREAD_BELOW: usize = 1 << 18;

/// At most this many bytes of small tensors are summarised together, so memory stays bounded.
const RUN_BYTES: usize = 64 << 20;

/// Summarise `tensors` of a model in their order, handing each result to `each` as it is ready; `each`
/// returns false to stop early (the return value is then false). Large tensors use every core
/// within the tensor; runs of small ones are spread over the cores a tensor each.
pub fn summarize_tensors(
    model: &crate::model::Model,
    tensors: &[usize],
    bins: usize,
    mut each: impl FnMut(usize, Result<Summary, crate::model::ModelError>) -> bool,
) -> bool {
    let small = |ti: usize| model.tensors[ti].numel() < ONE_THREAD_BELOW;
    let mut i = 0;
    while i < tensors.len() {
        let mut j = i;
        let mut bytes = 0;
        while j < tensors.len() && small(tensors[j]) && bytes < RUN_BYTES {
            bytes += model.tensors[tensors[j]].nbytes();
            j += 1;
        }
        if j == i {
            let ti = tensors[i];
            if !each(ti, summarize_tensor(model, &model.tensors[ti], bins)) {
                return false;
            }
            i += 1;
            continue;
        }
        let run: Vec<_> = tensors[i..j]
            .par_iter()
            .map(|&ti| summarize_tensor(model, &model.tensors[ti], bins))
            .collect();
        for (&ti, s) in tensors[i..j].iter().zip(run) {
            if !each(ti, s) {
                return false;
            }
        }
        i = j;
    }
    true
}

/// The value of every code of a dtype of 8 or 16 bits that converts exactly to f32 (decoded once
/// per dtype, as `read_f32` decodes it); `None` for other dtypes.
pub fn code_values(dtype: safetensors::Dtype) -> Option<std::sync::Arc<Vec<f32>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    type Tables = Mutex<Vec<(safetensors::Dtype, Option<Arc<Vec<f32>>>)>>;
    static TABLES: OnceLock<Tables> = OnceLock::new();
    let w = match dtype.bitsize() {
        8 => 1,
        16 => 2,
        _ => return None,
    };
    let mut tables = TABLES.get_or_init(Default::default).lock().ok()?;
    if let Some((_, v)) = tables.iter().find(|(d, _)| *d == dtype) {
        return v.clone();
    }
    let bytes: Vec<u8> = (0..1usize << (8 * w))
        .flat_map(|c| (c as u16).to_le_bytes()[..w].to_vec())
        .collect();
    let v = crate::model::decode_f32(dtype, &bytes).ok().map(Arc::new);
    tables.push((dtype, v.clone()));
    v
}
