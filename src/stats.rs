//! Statistics of a tensor: moments, ranges, exact percentiles of |x|, histograms, per-channel ranges.
//!
//! NaN and ±Inf are counted and left out of everything else, so one bad value does not turn every
//! statistic into NaN. Sums accumulate in f64. Work is split into chunks that rayon runs in parallel;
//! chunk results merge exactly (counts, extremes) or with the pairwise moment formulas of Chan et al.
//! and Pébay (central moments up to the fourth), which stay accurate when the mean is far from zero.

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

/// Moments, extremes and counts in one parallel pass.
pub fn tensor_stats(x: &[f32]) -> TensorStats {
    let m = x
        .par_chunks(CHUNK)
        .map(Moments::of_chunk)
        .reduce(Moments::default, Moments::merge);
    let finite = m.n > 0.0;
    let var = if finite { m.m2 / m.n } else { 0.0 };
    TensorStats {
        numel: x.len(),
        nan: m.nan,
        inf: m.inf,
        min: if finite { m.min } else { 0.0 },
        max: if finite { m.max } else { 0.0 },
        absmax: if finite {
            m.min.abs().max(m.max.abs())
        } else {
            0.0
        },
        mean: m.mean,
        std: var.sqrt(),
        kurtosis: if var > 0.0 {
            m.n * m.m4 / (m.m2 * m.m2) - 3.0
        } else {
            0.0
        },
        zeros: m.zeros,
    }
}

/// Exact percentiles of |x| over the finite values, interpolated linearly between order statistics as
/// numpy's default `np.percentile(np.abs(x), p)` does. `p` in [0, 100]. Empty input gives zeros.
pub fn abs_percentiles(x: &[f32], ps: &[f64]) -> Vec<f64> {
    // |v|'s bit pattern orders like its value
    order_statistics(x, ps, |v| v.to_bits() & 0x7fff_ffff, f32::abs)
}

/// Exact percentiles of the finite values themselves (signed), as `np.percentile(x, p)`.
pub fn percentiles(x: &[f32], ps: &[f64]) -> Vec<f64> {
    // flip negatives so that the unsigned key orders like the value
    order_statistics(
        x,
        ps,
        |v| {
            if v.is_sign_negative() {
                !v.to_bits()
            } else {
                v.to_bits() | 0x8000_0000
            }
        },
        |v| v,
    )
}

/// Two parallel passes: a 65,536-bucket histogram of the top 16 bits of a monotone key, then a gather
/// of the few values in the buckets that hold the wanted ranks, sorted to read the ranks exactly.
/// No copy of the tensor is made.
fn order_statistics(
    x: &[f32],
    ps: &[f64],
    key32: impl Fn(f32) -> u32 + Sync,
    value: impl Fn(f32) -> f32 + Sync,
) -> Vec<f64> {
    const BUCKETS: usize = 1 << 16;
    let key = |v: f32| key32(v) >> 16;
    let counts = x
        .par_chunks(1 << 20)
        .map(|c| {
            let mut h = vec![0u64; BUCKETS];
            for &v in c {
                if v.is_finite() {
                    h[key(v) as usize] += 1;
                }
            }
            h
        })
        .reduce(
            || vec![0u64; BUCKETS],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
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
    let mut gathered: Vec<(u32, f32)> = x
        .par_chunks(1 << 20)
        .flat_map_iter(|c| {
            c.iter()
                .filter(|v| v.is_finite() && is_wanted[key(**v) as usize])
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

/// A histogram of the finite values with `bins` bins over `range` (default: [min, max] of the data;
/// a zero-width range is widened by ±0.5 so a constant tensor still has a bin). The top edge belongs
/// to the last bin, as in numpy.
pub fn histogram(x: &[f32], bins: usize, range: Option<(f64, f64)>) -> Histogram {
    let bins = bins.max(1);
    let (mut lo, mut hi) = range.unwrap_or_else(|| {
        // only the extremes are needed: one light pass, not the full moments
        let (a, b) = x
            .par_chunks(1 << 16)
            .map(|c| {
                c.iter()
                    .filter(|v| v.is_finite())
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    })
            })
            .reduce(
                || (f32::INFINITY, f32::NEG_INFINITY),
                |(a, b), (c, d)| (a.min(c), b.max(d)),
            );
        (a as f64, b as f64)
    });
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        (lo, hi) = (0.0, 1.0);
    }
    if hi == lo {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let scale = bins as f64 / (hi - lo);
    let (counts, below, above) = x
        .par_chunks(1 << 18)
        .map(|c| {
            let mut h = vec![0u64; bins];
            let (mut below, mut above) = (0u64, 0u64);
            for &v in c {
                if !v.is_finite() {
                    continue;
                }
                let v = v as f64;
                if v < lo {
                    below += 1;
                } else if v > hi {
                    above += 1;
                } else {
                    let i = (((v - lo) * scale) as usize).min(bins - 1);
                    h[i] += 1;
                }
            }
            (h, below, above)
        })
        .reduce(
            || (vec![0u64; bins], 0, 0),
            |(mut a, ab, aa), (b, bb, ba)| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                (a, ab + bb, aa + ba)
            },
        );
    Histogram {
        lo,
        hi,
        counts,
        below,
        above,
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

/// Read one tensor of a model and summarise it; the f32 copy is dropped before returning, so a scan of a
/// whole model holds one tensor at a time.
pub fn summarize_tensor(
    model: &crate::model::Model,
    t: &crate::model::TensorInfo,
    bins: usize,
) -> Result<Summary, crate::model::ModelError> {
    let x = model.read_f32(t)?;
    model.release(t);
    Ok(summarize(&x, t.channels().0, bins))
}
