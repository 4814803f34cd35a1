//! Error and size metrics, one definition everywhere (docs/DESIGN.md §3). Sums accumulate in f64.

use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Metrics {
    pub mse: f64,
    /// 10·log10(Σx² / Σ(x − x̂)²); +inf when the error is 0.
    pub sqnr_db: f64,
    /// Σx·x̂ / (‖x‖·‖x̂‖); 1 when both are all zero.
    pub cosine: f64,
    pub max_abs_err: f64,
    /// Every stored bit (elements, scales, zero points, codebooks) over the number of elements.
    pub bits_per_weight: f64,
    /// The packed size of the tensor with its scales.
    pub bytes: u64,
}

/// Running sums of the metrics over any number of pieces: Σ(x − x̂)², Σx², Σx̂², Σx·x̂ (f64) and the
/// largest |x − x̂|. Quantizers add each row while it is still in cache, so the metrics cost no extra
/// pass over memory.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Acc {
    pub se: f64,
    pub sx: f64,
    pub sq: f64,
    pub sxq: f64,
    pub maxe: f64,
}

impl Acc {
    /// Add the pairs of `a` (original) and `b` (dequantized). Eight independent f64 lanes per sum, so
    /// the arithmetic vectorises; lanes are added at the end (the order of the additions differs from
    /// a plain loop only in the last bits).
    pub fn add(&mut self, a: &[f32], b: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::simd::avx2() {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { self.add_avx2(a, b) };
            return;
        }
        self.add_plain(a, b)
    }

    /// Two sets of four independent f64 lanes per sum: lane `j` of set `h` takes the elements
    /// `8k + 4h + j`; the lanes are added at the end (the order of the additions differs from a plain
    /// loop only in the last bits). Both versions below follow exactly this order, so they agree to
    /// the bit.
    #[inline(always)]
    fn add_plain(&mut self, a: &[f32], b: &[f32]) {
        let mut l = Lanes::default();
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (pa, pb) in ca.zip(cb) {
            for h in 0..2 {
                for j in 0..4 {
                    let (u, v) = (pa[4 * h + j] as f64, pb[4 * h + j] as f64);
                    let e = u - v;
                    let k = 4 * h + j;
                    l.se[k] += e * e;
                    l.sx[k] += u * u;
                    l.sq[k] += v * v;
                    l.sxq[k] += u * v;
                    let ae = e.abs();
                    l.me[k] = if ae > l.me[k] { ae } else { l.me[k] };
                }
            }
        }
        self.finish_lanes(l, ra, rb);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add_avx2(&mut self, a: &[f32], b: &[f32]) {
        use std::arch::x86_64::*;
        let n = a.len().min(b.len());
        let z = _mm256_setzero_pd();
        let (mut se, mut sx, mut sq, mut sxq, mut me) = ([z; 2], [z; 2], [z; 2], [z; 2], [z; 2]);
        let sign = _mm256_set1_pd(-0.0);
        let mut i = 0;
        while i + 8 <= n {
            for h in 0..2 {
                // SAFETY: i + 4h + 4 <= n, within both slices
                let (u, v) = unsafe {
                    (
                        _mm256_cvtps_pd(_mm_loadu_ps(a.as_ptr().add(i + 4 * h))),
                        _mm256_cvtps_pd(_mm_loadu_ps(b.as_ptr().add(i + 4 * h))),
                    )
                };
                let e = _mm256_sub_pd(u, v);
                se[h] = _mm256_add_pd(se[h], _mm256_mul_pd(e, e));
                sx[h] = _mm256_add_pd(sx[h], _mm256_mul_pd(u, u));
                sq[h] = _mm256_add_pd(sq[h], _mm256_mul_pd(v, v));
                sxq[h] = _mm256_add_pd(sxq[h], _mm256_mul_pd(u, v));
                // max_pd(x, y) is `x > y ? x : y`, as in the plain version
                me[h] = _mm256_max_pd(_mm256_andnot_pd(sign, e), me[h]);
            }
            i += 8;
        }
        let mut l = Lanes::default();
        let out = |v: [__m256d; 2], dst: &mut [f64; 8]| {
            // SAFETY: dst has room for 8 values
            unsafe {
                _mm256_storeu_pd(dst.as_mut_ptr(), v[0]);
                _mm256_storeu_pd(dst.as_mut_ptr().add(4), v[1]);
            }
        };
        out(se, &mut l.se);
        out(sx, &mut l.sx);
        out(sq, &mut l.sq);
        out(sxq, &mut l.sxq);
        out(me, &mut l.me);
        self.finish_lanes(l, &a[i..n], &b[i..n]);
    }

    /// Add the tail (fewer than 8 pairs) to lane 0, then the lanes to the totals.
    #[inline(always)]
    fn finish_lanes(&mut self, mut l: Lanes, ra: &[f32], rb: &[f32]) {
        for (&u, &v) in ra.iter().zip(rb) {
            let (u, v) = (u as f64, v as f64);
            let e = u - v;
            l.se[0] += e * e;
            l.sx[0] += u * u;
            l.sq[0] += v * v;
            l.sxq[0] += u * v;
            l.me[0] = l.me[0].max(e.abs());
        }
        let sum = |v: [f64; 8]| ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
        self.se += sum(l.se);
        self.sx += sum(l.sx);
        self.sq += sum(l.sq);
        self.sxq += sum(l.sxq);
        self.maxe = l.me.iter().copied().fold(self.maxe, f64::max);
    }

    pub fn merge(self, b: Acc) -> Acc {
        Acc {
            se: self.se + b.se,
            sx: self.sx + b.sx,
            sq: self.sq + b.sq,
            sxq: self.sxq + b.sxq,
            maxe: self.maxe.max(b.maxe),
        }
    }

    /// The metrics of `n` elements stored in `total_bits`.
    pub fn finish(&self, n: usize, total_bits: u64) -> Metrics {
        let Acc {
            se,
            sx,
            sq,
            sxq,
            maxe,
        } = *self;
        let n = n.max(1) as f64;
        Metrics {
            mse: se / n,
            sqnr_db: if se == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (sx / se).log10()
            },
            cosine: if sx == 0.0 && sq == 0.0 {
                1.0
            } else if sx == 0.0 || sq == 0.0 {
                0.0
            } else {
                sxq / (sx.sqrt() * sq.sqrt())
            },
            max_abs_err: maxe,
            bits_per_weight: total_bits as f64 / n,
            bytes: total_bits.div_ceil(8),
        }
    }
}

#[derive(Default)]
struct Lanes {
    se: [f64; 8],
    sx: [f64; 8],
    sq: [f64; 8],
    sxq: [f64; 8],
    me: [f64; 8],
}

fn acc_of(a: &[f32], b: &[f32]) -> Acc {
    let mut acc = Acc::default();
    acc.add(a, b);
    acc
}

impl Acc {
    /// The sums of all pairs, on all cores; pieces are merged in a fixed order, so the result does not
    /// depend on how the threads split the work.
    pub fn of(x: &[f32], xq: &[f32]) -> Acc {
        let parts: Vec<Acc> = x
            .par_chunks(1 << 16)
            .zip(xq.par_chunks(1 << 16))
            .map(|(a, b)| acc_of(a, b))
            .collect();
        parts.into_iter().fold(Acc::default(), Acc::merge)
    }
}

impl Metrics {
    pub fn compute(x: &[f32], xq: &[f32], total_bits: u64) -> Metrics {
        Acc::of(x, xq).finish(x.len(), total_bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_lane_versions_agree_to_the_bit() {
        let a: Vec<f32> = (0..1003).map(|i| ((i as f32) * 0.731).sin()).collect();
        let b: Vec<f32> = a.iter().map(|v| (v * 7.0).round() / 7.0).collect();
        let mut p = Acc::default();
        p.add_plain(&a, &b);
        let mut q = Acc::default();
        q.add(&a, &b);
        assert_eq!(p, q);
        assert!(p.se > 0.0 && p.maxe > 0.0);
    }

    #[test]
    fn definitions() {
        let m = Metrics::compute(&[1.0, -2.0, 3.0, 0.0], &[1.0, -2.0, 2.0, 0.5], 20);
        assert_eq!(m.mse, (1.0 + 0.25) / 4.0);
        assert!((m.sqnr_db - 10.0 * (14.0f64 / 1.25).log10()).abs() < 1e-12);
        assert!((m.cosine - (1.0 + 4.0 + 6.0) / (14f64.sqrt() * 9.25f64.sqrt())).abs() < 1e-12);
        assert_eq!((m.max_abs_err, m.bits_per_weight, m.bytes), (1.0, 5.0, 3));
        let z = Metrics::compute(&[0.0; 3], &[0.0; 3], 0);
        assert_eq!((z.sqnr_db, z.cosine), (f64::INFINITY, 1.0));
    }
}
