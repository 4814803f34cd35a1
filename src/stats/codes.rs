//! [`Summary`] of a tensor stored in 16 bits or fewer, read straight from its bytes.
//!
//! Such a tensor has at most 65,536 distinct values, so how often each bit pattern occurs determines
//! every statistic of the summary exactly: one parallel pass counts the codes (and takes each row's
//! extremes for the channel ranges), and the moments, percentiles and histogram are then computed over
//! the distinct values weighted by their counts. No f32 copy of the tensor is made.

use super::{
    interpolated, order_key, slot, usable_range, ChannelRanges, Histogram, Moments, Summary,
    TensorStats,
};
use rayon::prelude::*;

/// Below this many elements the tensor is widened and summarised directly: a count table would
/// cost more than the values.
const SMALL: usize = 1 << 16;

/// Elements per parallel piece (whole rows, at least one).
const PIECE: usize = 1 << 18;

/// Everything [`super::summarize`] gives for the tensor whose little-endian elements are `bytes`,
/// `width` (1 or 2) bytes each, where code `c` has the value `values[c]` (`values` holds
/// 2^(8·width) entries). `bf16` says the codes are bfloat16, whose value is a shift of the code.
pub fn summarize_codes(
    bytes: &[u8],
    width: usize,
    values: &[f32],
    bf16: bool,
    channels: usize,
    bins: usize,
) -> Summary {
    assert!(width == 1 || width == 2, "codes of 1 or 2 bytes");
    assert_eq!(values.len(), 1 << (8 * width), "one value per code");
    let n = bytes.len() / width;
    let decode = |c: usize| values[c];
    if n < SMALL {
        let x: Vec<f32> = (0..n).map(|i| decode(code(bytes, width, i))).collect();
        return super::summarize(&x, channels, bins);
    }
    // rows as `channel_ranges` cuts them: chunks of `per` values (the last may be short)
    let with_rows = channels > 1;
    let per = if with_rows {
        n / channels.clamp(1, n)
    } else {
        n
    };
    let rows_per_piece = (PIECE / per).max(1);
    let piece_len = if with_rows {
        rows_per_piece * per
    } else {
        PIECE
    };
    let mut tally = bytes
        .par_chunks(piece_len * width)
        .enumerate()
        .fold(
            || Tally::new(values.len()),
            |mut t, (k, piece)| {
                t.count(piece, width);
                if with_rows {
                    let rows: Vec<(f32, f32)> = piece
                        .chunks(per * width)
                        .map(|row| {
                            if bf16 {
                                bf16_row_extremes(row)
                            } else {
                                row_extremes(row.len() / width, |i| decode(code(row, width, i)))
                            }
                        })
                        .collect();
                    t.ranges.push((k, rows));
                }
                t
            },
        )
        .reduce(|| Tally::new(values.len()), Tally::merge);
    let mut ranges = std::mem::take(&mut tally.ranges);
    let counts = tally.totals();
    ranges.sort_unstable_by_key(|r| r.0);
    let channel_ranges = with_rows.then(|| {
        let r: Vec<(f32, f32)> = ranges.into_iter().flat_map(|(_, r)| r).collect();
        ChannelRanges {
            absmax: r.iter().map(|&(a, b)| a.abs().max(b.abs())).collect(),
            min: r.iter().map(|p| p.0).collect(),
            max: r.iter().map(|p| p.1).collect(),
        }
    });
    // the distinct values and how often each occurs
    let seen: Vec<(f32, u64)> = counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(code, &c)| (decode(code), c))
        .collect();
    let stats = weighted_stats(&seen, n);
    let finite: Vec<(f32, u64)> = seen
        .iter()
        .copied()
        .filter(|(v, _)| v.is_finite())
        .collect();
    let p = weighted_abs_percentiles(&finite, &[99.0, 99.9, 99.99]);
    Summary {
        stats,
        p99: p[0],
        p99_9: p[1],
        p99_99: p[2],
        histogram: weighted_histogram(&finite, bins, (stats.min, stats.max)),
        channels: channel_ranges,
    }
}

#[inline(always)]
fn code(bytes: &[u8], width: usize, i: usize) -> usize {
    if width == 2 {
        u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) as usize
    } else {
        bytes[i] as usize
    }
}

/// One worker's code counts and row extremes. Counts go to two interleaved u32 tables, so that runs
/// of one code do not wait on each other's increment, and move to u64 totals before they could
/// overflow.
struct Tally {
    totals: Vec<u64>,
    pair: [Vec<u32>; 2],
    pending: usize,
    /// (piece index, the extremes of each of its rows)
    ranges: Vec<(usize, Vec<(f32, f32)>)>,
}

impl Tally {
    fn new(codes: usize) -> Tally {
        Tally {
            totals: vec![0; codes],
            pair: [vec![0; codes], vec![0; codes]],
            pending: 0,
            ranges: Vec::new(),
        }
    }

    fn count(&mut self, piece: &[u8], width: usize) {
        let n = piece.len() / width;
        if self.pending + n >= u32::MAX as usize {
            self.flush();
        }
        self.pending += n;
        let [a, b] = &mut self.pair;
        if width == 2 {
            let mut it = piece.chunks_exact(4);
            for c in &mut it {
                a[u16::from_le_bytes([c[0], c[1]]) as usize] += 1;
                b[u16::from_le_bytes([c[2], c[3]]) as usize] += 1;
            }
            if let [x, y] = it.remainder() {
                a[u16::from_le_bytes([*x, *y]) as usize] += 1;
            }
        } else {
            let mut it = piece.chunks_exact(2);
            for c in &mut it {
                a[c[0] as usize] += 1;
                b[c[1] as usize] += 1;
            }
            if let [x] = it.remainder() {
                a[*x as usize] += 1;
            }
        }
    }

    fn flush(&mut self) {
        let [a, b] = &mut self.pair;
        for ((t, x), y) in self.totals.iter_mut().zip(a.iter_mut()).zip(b.iter_mut()) {
            *t += (*x + *y) as u64;
            (*x, *y) = (0, 0);
        }
        self.pending = 0;
    }

    fn totals(mut self) -> Vec<u64> {
        self.flush();
        self.totals
    }

    fn merge(mut self, mut other: Tally) -> Tally {
        let mut ranges = std::mem::take(&mut self.ranges);
        ranges.append(&mut other.ranges);
        let mut t = self.totals();
        t.iter_mut().zip(other.totals()).for_each(|(x, y)| *x += y);
        Tally {
            totals: t,
            pair: [Vec::new(), Vec::new()],
            pending: 0,
            ranges,
        }
    }
}

/// The finite minimum and maximum of a bfloat16 row (`(0, 0)` when it has none), as
/// [`row_extremes`]; a bfloat16 value is its code shifted into the top half of an f32, so sixteen
/// lanes with constant offsets let the loop vectorise.
fn bf16_row_extremes(row: &[u8]) -> (f32, f32) {
    const L: usize = 16;
    let bf16 = |x: u8, y: u8| f32::from_bits((u16::from_le_bytes([x, y]) as u32) << 16);
    let (mut lo, mut hi) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L]);
    let mut it = row.chunks_exact(2 * L);
    for c in &mut it {
        for l in 0..L {
            let v = bf16(c[2 * l], c[2 * l + 1]);
            // false for NaN and ±Inf
            let ok = v.abs() <= f32::MAX;
            lo[l] = if ok { lo[l].min(v) } else { lo[l] };
            hi[l] = if ok { hi[l].max(v) } else { hi[l] };
        }
    }
    for (l, c) in it.remainder().chunks_exact(2).enumerate() {
        let v = bf16(c[0], c[1]);
        if v.is_finite() {
            lo[l] = lo[l].min(v);
            hi[l] = hi[l].max(v);
        }
    }
    settle(&lo, &hi)
}

/// The finite minimum and maximum of the `len` values of one row (`(0, 0)` when it has none), as
/// `channel_ranges` takes them.
fn row_extremes(len: usize, value: impl Fn(usize) -> f32) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY], [f32::NEG_INFINITY]);
    for v in (0..len).map(value).filter(|v| v.is_finite()) {
        lo[0] = lo[0].min(v);
        hi[0] = hi[0].max(v);
    }
    settle(&lo, &hi)
}

/// The extremes over lanes, `(0, 0)` when no lane saw a finite value.
fn settle(lo: &[f32], hi: &[f32]) -> (f32, f32) {
    let lo = lo.iter().fold(f32::INFINITY, |x, &y| x.min(y));
    let hi = hi.iter().fold(f32::NEG_INFINITY, |x, &y| x.max(y));
    if lo > hi {
        (0.0, 0.0)
    } else {
        (lo, hi)
    }
}

/// Moments, extremes and counts of `n` values given as (distinct value, count) pairs; the central
/// moments are taken about the exact mean, in f64.
fn weighted_stats(seen: &[(f32, u64)], n: usize) -> TensorStats {
    let (mut nan, mut inf, mut zeros) = (0usize, 0usize, 0usize);
    let (mut m, mut sum) = (0u64, 0.0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(v, c) in seen {
        if v.is_nan() {
            nan += c as usize;
        } else if v.is_infinite() {
            inf += c as usize;
        } else {
            m += c;
            sum += v as f64 * c as f64;
            min = min.min(v as f64);
            max = max.max(v as f64);
            if v == 0.0 {
                zeros += c as usize;
            }
        }
    }
    let mf = m as f64;
    let mean = if m > 0 { sum / mf } else { 0.0 };
    let (mut m2, mut m4) = (0.0f64, 0.0f64);
    for &(v, c) in seen.iter().filter(|(v, _)| v.is_finite()) {
        let d2 = (v as f64 - mean).powi(2);
        m2 += d2 * c as f64;
        m4 += d2 * d2 * c as f64;
    }
    Moments {
        n: mf,
        mean,
        m2,
        m3: 0.0,
        m4,
        min,
        max,
        nan,
        inf,
        zeros,
    }
    .stats(n)
}

/// Exact percentiles of |x| over finite (value, count) pairs: the same ranks and interpolation as
/// [`super::abs_percentiles`].
fn weighted_abs_percentiles(finite: &[(f32, u64)], ps: &[f64]) -> Vec<f64> {
    let mut mags: Vec<(u32, f32, u64)> = finite
        .iter()
        .map(|&(v, c)| (order_key(v, false), v.abs(), c))
        .collect();
    mags.sort_unstable_by_key(|x| x.0);
    let m: u64 = mags.iter().map(|x| x.2).sum();
    if m == 0 {
        return vec![0.0; ps.len()];
    }
    let ends: Vec<u64> = mags
        .iter()
        .scan(0u64, |acc, x| {
            *acc += x.2;
            Some(*acc)
        })
        .collect();
    // the value of rank r: the first distinct value whose cumulative count passes r
    interpolated(m, ps, |r| mags[ends.partition_point(|&e| e <= r)].1 as f64)
}

/// [`super::histogram`] over `range` of finite (value, count) pairs.
fn weighted_histogram(finite: &[(f32, u64)], bins: usize, range: (f64, f64)) -> Histogram {
    let bins = bins.max(1);
    let (lo, hi) = usable_range(range.0, range.1);
    let scale = bins as f64 / (hi - lo);
    let mut all = vec![0u64; bins + 3];
    for &(v, c) in finite {
        all[slot(v, lo, hi, scale, bins)] += c;
    }
    Histogram {
        lo,
        hi,
        counts: all[..bins].to_vec(),
        below: all[bins],
        above: all[bins + 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decode_f32;
    use safetensors::Dtype;

    fn same(a: &Summary, b: &Summary) {
        let (x, y) = (&a.stats, &b.stats);
        assert_eq!(
            (x.numel, x.nan, x.inf, x.zeros, x.min, x.max, x.absmax),
            (y.numel, y.nan, y.inf, y.zeros, y.min, y.max, y.absmax)
        );
        let close = |p: f64, q: f64| (p - q).abs() <= 1e-12 * p.abs().max(q.abs()).max(1e-300);
        assert!(close(x.mean, y.mean), "mean {} vs {}", x.mean, y.mean);
        assert!(close(x.std, y.std), "std {} vs {}", x.std, y.std);
        assert!(
            (x.kurtosis - y.kurtosis).abs() <= 1e-9 * x.kurtosis.abs().max(1.0),
            "kurtosis {} vs {}",
            x.kurtosis,
            y.kurtosis
        );
        assert_eq!((a.p99, a.p99_9, a.p99_99), (b.p99, b.p99_9, b.p99_99));
        assert_eq!(a.histogram, b.histogram);
        assert_eq!(a.channels, b.channels);
    }

    fn bytes_of(n: usize, w: usize, seed: u64, special: &[(usize, u16)]) -> Vec<u8> {
        let mut s = seed;
        let mut out: Vec<u8> = (0..n)
            .flat_map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // a bell-shaped code around small magnitudes, either sign
                let g = ((s >> 33) % 97 + (s >> 45) % 89) as u16;
                let sign = ((s >> 20) & 1) as u16;
                let c = if w == 2 {
                    (sign << 15) | (0x3c00 + g * 8)
                } else {
                    (sign << 7) | (g & 0x7f)
                };
                c.to_le_bytes()[..w].to_vec()
            })
            .collect();
        for &(i, c) in special {
            out[i * w..i * w + w].copy_from_slice(&c.to_le_bytes()[..w]);
        }
        out
    }

    #[test]
    fn counting_codes_gives_the_summary_of_the_values() {
        for (dtype, special) in [
            // NaN, +Inf, -0, +0 (bf16 and f16 patterns)
            (
                Dtype::BF16,
                vec![(3, 0x7fc0), (9, 0x7f80), (11, 0x8000), (12, 0)],
            ),
            (Dtype::F16, vec![(5, 0x7e00), (6, 0xfc00), (13, 0)]),
            (Dtype::I8, vec![]),
            (Dtype::U8, vec![]),
            (Dtype::F8_E4M3, vec![(2, 0x7f)]),
        ] {
            let w = dtype.bitsize() / 8;
            let vals = super::super::code_values(dtype).unwrap();
            for (n, channels) in [(300_000, 768), (300_001, 7), (1 << 17, 1), (70_000, 70_000)] {
                let b = bytes_of(n, w, n as u64, &special);
                let x = decode_f32(dtype, &b).unwrap();
                for bins in [1, 16, 64] {
                    let got = summarize_codes(&b, w, &vals, dtype == Dtype::BF16, channels, bins);
                    let want = super::super::summarize(&x, channels, bins);
                    same(&got, &want);
                }
            }
        }
    }
}
