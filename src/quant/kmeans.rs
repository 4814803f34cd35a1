//! K-means codebooks (Deep Compression, Han et al. 2016): 2^N centroids for a whole tensor, each weight
//! stored as the index of its centroid.
//!
//! One-dimensional k-means has an exact solution by dynamic programming over the sorted values
//! (Wang & Song 2011, Ckmeans.1d.dp): `D[c][i] = min_j D[c−1][j−1] + SSE(j..i)`, with the SSE of a run
//! from prefix sums. The optimal split points are monotone in `i`, so each layer is filled by divide and
//! conquer in O(m log m) (Song & Zhong 2020). For large tensors the values are first reduced to a fine
//! histogram (65,536 bins, each a weighted point at the mean of its values), solved exactly there, and
//! then polished by Lloyd steps on every weight, which can only lower the error. No crate offers this;
//! general k-means (linfa) is Lloyd's local search, and slower on a whole LLM layer.

use super::spec::Spec;
use super::{Layout, Quantized};
use rayon::prelude::*;

/// Points above this count are reduced to a histogram before the exact solve.
const EXACT_MAX: usize = 1 << 16;
const BINS: usize = 1 << 16;
const LLOYD_STEPS: usize = 3;

/// Weighted points sorted by value: (value, weight).
fn points(x: &[f32]) -> Vec<(f64, f64)> {
    if x.len() <= EXACT_MAX {
        let mut v: Vec<f32> = x.to_vec();
        v.sort_by(f32::total_cmp);
        let mut out: Vec<(f64, f64)> = Vec::new();
        for &a in &v {
            match out.last_mut() {
                Some(last) if last.0 == a as f64 => last.1 += 1.0,
                _ => out.push((a as f64, 1.0)),
            }
        }
        return out;
    }
    let (lo, hi) = x
        .par_iter()
        .fold(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |(a, b), &v| (a.min(v), b.max(v)),
        )
        .reduce(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |(a, b), (c, d)| (a.min(c), b.max(d)),
        );
    if lo == hi {
        return vec![(lo as f64, x.len() as f64)];
    }
    let scale = BINS as f64 / (hi as f64 - lo as f64);
    let (sums, counts) = x
        .par_chunks(1 << 18)
        .map(|c| {
            crate::kernels::pause::point();
            let mut s = vec![0f64; BINS];
            let mut n = vec![0u32; BINS];
            for &v in c {
                let b = (((v as f64 - lo as f64) * scale) as usize).min(BINS - 1);
                s[b] += v as f64;
                n[b] += 1;
            }
            (s, n)
        })
        .reduce(
            || (vec![0f64; BINS], vec![0u32; BINS]),
            |(mut s, mut n), (s2, n2)| {
                s.iter_mut().zip(&s2).for_each(|(a, b)| *a += b);
                n.iter_mut().zip(&n2).for_each(|(a, b)| *a += b);
                (s, n)
            },
        );
    sums.iter()
        .zip(&counts)
        .filter(|(_, &c)| c > 0)
        .map(|(&s, &c)| (s / c as f64, c as f64))
        .collect()
}

/// Exact weighted 1-D k-means on sorted points: the optimal centroids (ascending).
fn solve(p: &[(f64, f64)], k: usize) -> Vec<f64> {
    let m = p.len();
    if m <= k {
        return p.iter().map(|q| q.0).collect();
    }
    // prefix sums of w, w·x, w·x² (x relative to the first point, for accuracy)
    let x0 = p[0].0;
    let mut w = vec![0f64; m + 1];
    let mut s1 = vec![0f64; m + 1];
    let mut s2 = vec![0f64; m + 1];
    for (i, &(x, wt)) in p.iter().enumerate() {
        let d = x - x0;
        w[i + 1] = w[i] + wt;
        s1[i + 1] = s1[i] + wt * d;
        s2[i + 1] = s2[i] + wt * d * d;
    }
    // SSE of points j..=i
    let cost = |j: usize, i: usize| -> f64 {
        let ww = w[i + 1] - w[j];
        let a = s1[i + 1] - s1[j];
        ((s2[i + 1] - s2[j]) - a * a / ww).max(0.0)
    };
    let mut prev: Vec<f64> = (0..m).map(|i| cost(0, i)).collect();
    // split[c][i]: first index of the last cluster in the best c+1-cluster solution of 0..=i
    let mut split: Vec<Vec<u32>> = vec![vec![0; m]];
    for c in 1..k {
        crate::kernels::pause::point();
        let mut cur = vec![f64::INFINITY; m];
        let mut arg = vec![0u32; m];
        // divide and conquer over i, with the optimal j monotone in i
        #[allow(clippy::too_many_arguments)]
        fn fill(
            lo: usize,
            hi: usize,
            jlo: usize,
            jhi: usize,
            c: usize,
            prev: &[f64],
            cur: &mut [f64],
            arg: &mut [u32],
            cost: &dyn Fn(usize, usize) -> f64,
        ) {
            if lo > hi {
                return;
            }
            let mid = (lo + hi) / 2;
            let mut best = (f64::INFINITY, jlo.max(c));
            for j in jlo.max(c)..=jhi.min(mid) {
                let v = prev[j - 1] + cost(j, mid);
                if v < best.0 {
                    best = (v, j);
                }
            }
            cur[mid] = best.0;
            arg[mid] = best.1 as u32;
            if mid > lo {
                fill(lo, mid - 1, jlo, best.1, c, prev, cur, arg, cost);
            }
            fill(mid + 1, hi, best.1, jhi, c, prev, cur, arg, cost);
        }
        fill(c, m - 1, c, m - 1, c, &prev, &mut cur, &mut arg, &cost);
        prev = cur;
        split.push(arg);
    }
    // walk back the splits
    let mut bounds = Vec::with_capacity(k);
    let mut end = m - 1;
    for c in (0..k).rev() {
        let start = if c == 0 { 0 } else { split[c][end] as usize };
        bounds.push((start, end));
        if c > 0 {
            end = start - 1;
        }
    }
    bounds.reverse();
    bounds
        .iter()
        .map(|&(j, i)| x0 + (s1[i + 1] - s1[j]) / (w[i + 1] - w[j]))
        .collect()
}

/// Index of the nearest centroid (centroids ascending; ties go to the lower one).
#[inline]
fn nearest(mids: &[f32], v: f32) -> usize {
    mids.partition_point(|&m| m < v)
}

fn midpoints(c: &[f32]) -> Vec<f32> {
    c.windows(2).map(|w| w[0] + (w[1] - w[0]) * 0.5).collect()
}

/// K-means with `k` centroids on all of `x`: the centroids (ascending) and the mean squared error.
pub fn kmeans_1d(x: &[f32], k: usize) -> (Vec<f32>, f64) {
    let k = k.max(1);
    let p = points(x);
    let mut c: Vec<f32> = solve(&p, k).into_iter().map(|v| v as f32).collect();
    c.sort_by(f32::total_cmp);
    c.dedup();
    let sse = |c: &[f32]| -> f64 {
        let mids = midpoints(c);
        x.par_chunks(1 << 16)
            .map(|ch| {
                crate::kernels::pause::point();
                ch.iter()
                    .map(|&v| ((v - c[nearest(&mids, v)]) as f64).powi(2))
                    .sum::<f64>()
            })
            .sum()
    };
    let mut err = sse(&c);
    // Lloyd steps on the full data (the histogram solve is exact only on the binned points)
    if x.len() > EXACT_MAX {
        for _ in 0..LLOYD_STEPS {
            let mids = midpoints(&c);
            let kk = c.len();
            let (s, n) = x
                .par_chunks(1 << 16)
                .map(|ch| {
                    crate::kernels::pause::point();
                    let mut s = vec![0f64; kk];
                    let mut n = vec![0u64; kk];
                    for &v in ch {
                        let j = nearest(&mids, v);
                        s[j] += v as f64;
                        n[j] += 1;
                    }
                    (s, n)
                })
                .reduce(
                    || (vec![0f64; kk], vec![0u64; kk]),
                    |(mut s, mut n), (s2, n2)| {
                        s.iter_mut().zip(&s2).for_each(|(a, b)| *a += b);
                        n.iter_mut().zip(&n2).for_each(|(a, b)| *a += b);
                        (s, n)
                    },
                );
            let mut next: Vec<f32> = c
                .iter()
                .enumerate()
                .map(|(j, &old)| {
                    if n[j] > 0 {
                        (s[j] / n[j] as f64) as f32
                    } else {
                        old
                    }
                })
                .collect();
            next.sort_by(f32::total_cmp);
            let e = sse(&next);
            if e < err {
                err = e;
                c = next;
            } else {
                break;
            }
        }
    }
    (c, err / x.len().max(1) as f64)
}

pub fn quantize(x: &[f32], layout: Layout, spec: &Spec, bits: u32) -> Quantized {
    let k = 1usize << bits;
    let (mut centroids, _) = kmeans_1d(x, k);
    let mids = midpoints(&centroids);
    let mut dequant = vec![0f32; x.len()];
    let mut codes = vec![0i16; x.len()];
    dequant
        .par_chunks_mut(1 << 16)
        .zip(codes.par_chunks_mut(1 << 16))
        .zip(x.par_chunks(1 << 16))
        .for_each(|((o, c), xs)| {
            crate::kernels::pause::point();
            for ((o, c), &v) in o.iter_mut().zip(c.iter_mut()).zip(xs) {
                let j = nearest(&mids, v);
                *c = j as i16;
                *o = centroids[j];
            }
        });
    // fewer distinct values than centroids: the codebook keeps its full size (the storage is 2^N entries)
    while centroids.len() < k {
        centroids.push(*centroids.last().unwrap_or(&0.0));
    }
    Quantized {
        spec: *spec,
        layout,
        dequant,
        codes,
        scales: Vec::new(),
        zero_points: Vec::new(),
        outer_scales: Vec::new(),
        codebook: centroids,
        thresholds: Vec::new(),
        metrics: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over every split of a small sorted set.
    fn brute(x: &[f64], k: usize) -> f64 {
        fn rec(x: &[f64], k: usize) -> f64 {
            let sse = |s: &[f64]| {
                let m = s.iter().sum::<f64>() / s.len() as f64;
                s.iter().map(|v| (v - m).powi(2)).sum::<f64>()
            };
            if k == 1 {
                return sse(x);
            }
            (1..=x.len() - k + 1)
                .map(|i| sse(&x[..i]) + rec(&x[i..], k - 1))
                .fold(f64::INFINITY, f64::min)
        }
        rec(x, k)
    }

    #[test]
    fn the_dynamic_program_is_optimal() {
        let mut s = 5u64;
        for trial in 0..20 {
            let n = 6 + trial % 7;
            let mut x: Vec<f32> = (0..n)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 33) % 1000) as f32 / 100.0
                })
                .collect();
            x.sort_by(f32::total_cmp);
            for k in 1..=4.min(n) {
                let (_, mse) = kmeans_1d(&x, k);
                let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let want = brute(&xd, k) / n as f64;
                // centroids are stored as f32, so the error is exact to f32 rounding of the centroids
                assert!(
                    (mse - want).abs() <= 1e-6 * want.max(1e-9),
                    "n {n} k {k}: {mse} vs {want}"
                );
            }
        }
    }

    #[test]
    fn lecture_example_compression() {
        // quantization.md §8: 16 fp32 weights, 4 clusters → 512 bits / (16·2 + 4·32) = 3.2×
        let x: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        let q = crate::quant::quantize(&x, &[4, 4], &Spec::parse("kmeans2").unwrap()).unwrap();
        assert_eq!(q.codebook.len(), 4);
        assert!(
            (32.0 / q.metrics.bits_per_weight - 3.2).abs() < 1e-9,
            "{}",
            q.metrics.bits_per_weight
        );
    }
}
