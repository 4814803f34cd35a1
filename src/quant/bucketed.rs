//! The exact squared error of integer candidates on one group (a row, a group of a row), without
//! quantizing every value for every candidate: the MSE clip search's per-channel inner loop.
//!
//! The values are sorted (a radix sort) and cut into buckets of 8, with prefix sums of x and x² in
//! f64 over the buckets: the magnitudes |x| for symmetric int (the error of −x is minus that of x),
//! the signed values for asymmetric uint. For a candidate, the values that quantize to one level
//! form a contiguous range; only the buckets next to a rounding boundary (`(k + ½)·s`, shifted by
//! the zero point for uint) can hold values of two levels. Those are summed value by value with the
//! quantizer's own rounding; every other run of buckets is checked to quantize alike (its smallest
//! and largest value give the same x̂: rounding is monotone) and summed from the prefix sums as
//! `S₂ − 2cS₁ + nc²`. The result is the exact `Σ(x − x̂)²` (in f64), the same sum an exhaustive pass
//! computes, at a fraction of the work when the grid has few levels.

use crate::kernels::round::rne;
use crate::kernels::simd::{fmax, fmin};
use crate::stats::{from_order_key, order_key};

/// Magnitudes per bucket: the buckets next to each boundary are summed value by value.
const PER_BUCKET: usize = 8;

/// One group's values (or magnitudes), sorted into buckets.
pub struct Buckets {
    /// the values in ascending order, grouped by bucket
    vals: Vec<f32>,
    /// bucket b holds vals[start[b]..start[b + 1]]
    start: Vec<usize>,
    /// prefix sums over buckets of x and x² (f64)
    p1: Vec<f64>,
    p2: Vec<f64>,
    /// smallest and largest magnitude of each bucket (empty: +inf, −inf)
    lo: Vec<f32>,
    hi: Vec<f32>,
}

/// x (`signed`) or |x| in ascending order: an LSD radix sort of the order keys (unsigned integers that
/// order like the values), three passes of 11 bits; a comparison sort of 4,096 values costs several
/// times more.
fn sorted(x: &[f32], signed: bool) -> Vec<f32> {
    let mut a: Vec<u32> = x.iter().map(|&v| order_key(v, signed)).collect();
    let mut tmp = vec![0u32; a.len()];
    // the three digits' counts in one pass (u32: a group has far fewer than 2^32 values)
    let mut count = vec![[0u32; 3]; 2048];
    for &v in &a {
        count[(v & 0x7ff) as usize][0] += 1;
        count[((v >> 11) & 0x7ff) as usize][1] += 1;
        count[(v >> 22) as usize][2] += 1;
    }
    // exclusive prefix sums: where each digit's values start
    let mut run = [0u32; 3];
    for c in count.iter_mut() {
        let n = *c;
        *c = run;
        for (r, k) in run.iter_mut().zip(n) {
            *r += k;
        }
    }
    for (p, shift) in [0u32, 11, 22].into_iter().enumerate() {
        for &v in &a {
            let d = ((v >> shift) & 0x7ff) as usize;
            tmp[count[d][p] as usize] = v;
            count[d][p] += 1;
        }
        std::mem::swap(&mut a, &mut tmp);
    }
    if signed {
        a.into_iter().map(from_order_key).collect()
    } else {
        a.into_iter().map(f32::from_bits).collect()
    }
}

impl Buckets {
    /// Sort the magnitudes of `x` (finite values) and cut them into buckets of [`PER_BUCKET`], for
    /// [`Buckets::sse`].
    pub fn new(x: &[f32]) -> Buckets {
        Buckets::of(sorted(x, false))
    }

    /// Sort the values of `x` (finite) themselves, for [`Buckets::sse_uint`].
    pub fn signed(x: &[f32]) -> Buckets {
        Buckets::of(sorted(x, true))
    }

    fn of(vals: Vec<f32>) -> Buckets {
        let nb = vals.len().div_ceil(PER_BUCKET).max(1);
        let start: Vec<usize> = (0..=nb).map(|b| (b * PER_BUCKET).min(vals.len())).collect();
        let (mut lo, mut hi) = (vec![f32::INFINITY; nb], vec![f32::NEG_INFINITY; nb]);
        let (mut p1, mut p2) = (vec![0f64; nb + 1], vec![0f64; nb + 1]);
        for b in 0..nb {
            let bucket = &vals[start[b]..start[b + 1]];
            if let (Some(&f), Some(&l)) = (bucket.first(), bucket.last()) {
                lo[b] = f;
                hi[b] = l;
            }
            let (mut s1, mut s2) = (0f64, 0f64);
            for &a in bucket {
                s1 += a as f64;
                s2 += a as f64 * a as f64;
            }
            p1[b + 1] = p1[b] + s1;
            p2[b + 1] = p2[b] + s2;
        }
        Buckets {
            vals,
            start,
            p1,
            p2,
            lo,
            hi,
        }
    }

    fn count(&self) -> usize {
        self.lo.len()
    }

    /// `Σ(x − x̂)²` under symmetric int with scale `s` and largest code `qmax`, nearest rounding:
    /// `q = min(round_even(min(|x|/s, qmax + 1)), qmax)`, `x̂ = q·s` (the quantizer's own steps).
    /// The buckets hold magnitudes ([`Buckets::new`]).
    ///
    /// The sum stops once it exceeds `bar`, as the MSE search allows ([`crate::calib::Errors`]): its
    /// terms are non-negative and added in a fixed order, so a partial sum never exceeds the whole.
    pub fn sse(&self, s: f32, qmax: f32, bar: f64) -> f64 {
        let dq = |a: f32| -> f32 { fmin(rne(fmin(a / s, qmax + 1.0)), qmax) * s };
        self.sse_with((0..qmax as u32).map(|k| (k as f32 + 0.5) * s), dq, bar)
    }

    /// `Σ(x − x̂)²` under uint with scale `s`, zero point `z` and largest code `qmax`, nearest
    /// rounding: `q = clamp(round_even(clamp(x/s, −z − 1, qmax − z + 1)) + z, 0, qmax)`,
    /// `x̂ = (q − z)·s` (the quantizer's own steps). The buckets hold values ([`Buckets::signed`]).
    pub fn sse_uint(&self, s: f32, z: f32, qmax: f32, bar: f64) -> f64 {
        let dq = |v: f32| -> f32 {
            let q = rne(fmin(fmax(v / s, -z - 1.0), qmax - z + 1.0));
            (fmin(fmax(q + z, 0.0), qmax) - z) * s
        };
        // the boundary between codes j and j + 1
        self.sse_with((0..qmax as u32).map(|j| (j as f32 - z + 0.5) * s), dq, bar)
    }

    /// The sum for a quantizer `dq` (value → x̂, non-decreasing) whose x̂ changes only near the
    /// ascending `boundaries`.
    fn sse_with(
        &self,
        boundaries: impl Iterator<Item = f32>,
        dq: impl Fn(f32) -> f32,
        bar: f64,
    ) -> f64 {
        let err = |a: f32| -> f64 {
            let e = a as f64 - dq(a) as f64;
            e * e
        };
        // four independent sums, so the additions do not wait on each other
        let errs = |vals: &[f32]| -> f64 {
            let mut acc = [0f64; 4];
            let chunks = vals.chunks_exact(4);
            let tail: f64 = chunks.remainder().iter().map(|&a| err(a)).sum();
            for c in chunks {
                for j in 0..4 {
                    acc[j] += err(c[j]);
                }
            }
            (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
        };
        let nb = self.count();
        if self.vals.is_empty() {
            return 0.0;
        }
        let top = self.hi[nb - 1];
        // the bucket where the values reach each rounding boundary is summed value by value (the
        // boundary as the f32 rounding places it may fall a few units away, in a neighbour: then
        // that run fails its check below and is summed value by value, still exactly)
        let mut marks: Vec<usize> = Vec::with_capacity(64);
        for beta in boundaries {
            if beta > top {
                break;
            }
            let b = self.hi.partition_point(|&h| h < beta).min(nb - 1);
            if marks.last() != Some(&b) {
                marks.push(b);
            }
        }
        marks.push(nb);
        // every bucket holds at least one value, so each run has a smallest and a largest
        // from the top down, so that a candidate that clips too much passes its bar at once
        let mut total = 0f64;
        for i in (0..marks.len()).rev() {
            let m = marks[i];
            let b = if i == 0 { 0 } else { marks[i - 1] + 1 };
            if m < nb {
                total += errs(self.bucket(m));
            }
            if b < m {
                // the run b..m: one level if its smallest and largest values share it
                let c = dq(self.lo[b]);
                if c == dq(self.hi[m - 1]) {
                    let c = c as f64;
                    let n = (self.start[m] - self.start[b]) as f64;
                    let s1 = self.p1[m] - self.p1[b];
                    let s2 = self.p2[m] - self.p2[b];
                    total += (s2 - 2.0 * c * s1 + n * c * c).max(0.0);
                } else {
                    total += errs(&self.vals[self.start[b]..self.start[m]]);
                }
            }
            if total > bar {
                break;
            }
        }
        total
    }

    fn bucket(&self, b: usize) -> &[f32] {
        &self.vals[self.start[b]..self.start[b + 1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketed_errors_equal_the_elementwise_sums() {
        let x: Vec<f32> = (0..4096)
            .map(|i| {
                let v = ((i as f32) * 0.7548).sin() * 0.03;
                if i % 997 == 0 {
                    v * 12.0
                } else {
                    v
                }
            })
            .collect();
        let b = Buckets::new(&x);
        let amax = crate::stats::abs_max(&x);
        for qmax in [1.0f32, 3.0, 7.0, 15.0, 31.0] {
            for f in [0.05f32, 0.2, 0.37, 0.5, 0.81, 1.0] {
                let s = amax * f / qmax;
                let want: f64 = x
                    .iter()
                    .map(|&v| {
                        let a = v.abs();
                        let q = rne((a / s).min(qmax + 1.0)).min(qmax);
                        (a as f64 - (q * s) as f64).powi(2)
                    })
                    .sum();
                let got = b.sse(s, qmax, f64::INFINITY);
                let stopped = b.sse(s, qmax, want * 0.5);
                assert!(stopped > want * 0.5 && stopped <= got, "{stopped} {got}");
                assert!(
                    (got - want).abs() <= 1e-9 * want,
                    "qmax {qmax} f {f}: {got} vs {want}"
                );
            }
        }
        assert_eq!(Buckets::new(&[0.0; 64]).sse(1.0, 7.0, 0.0), 0.0);
    }

    #[test]
    fn the_radix_sort_orders_like_a_comparison_sort() {
        let x: Vec<f32> = (0..5000)
            .map(|i| ((i as f32) * 1.618).sin() * 10f32.powi(i % 9 - 4))
            .chain([0.0, -0.0, 1e-40, -1e-40, f32::MAX, f32::MIN])
            .collect();
        let mut want: Vec<f32> = x.clone();
        want.sort_by(f32::total_cmp);
        let got = sorted(&x, true);
        assert_eq!(got.len(), want.len());
        // −0 and +0 are equal values; every other position holds the same value
        assert!(got.iter().zip(&want).all(|(a, b)| a == b));
        let mut mags: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        mags.sort_by(f32::total_cmp);
        assert_eq!(sorted(&x, false), mags);
    }

    #[test]
    fn signed_buckets_give_the_uint_errors_elementwise() {
        // skewed data (more positive than negative) with outliers on both sides, and a group that
        // is all negative: every zero point, including ones that clip a whole side
        let x: Vec<f32> = (0..4096)
            .map(|i| {
                let v = ((i as f32) * 0.7548).sin() * 0.03 + 0.01;
                match i % 997 {
                    0 => v * 12.0,
                    500 => -0.4,
                    _ => v,
                }
            })
            .collect();
        let neg: Vec<f32> = x.iter().map(|v| -v.abs() - 1e-3).collect();
        for data in [&x[..], &neg[..], &x[..300]] {
            let b = Buckets::signed(data);
            let (lo, hi) = crate::stats::min_max_of_finite(data);
            let span = hi.max(0.0) - lo.min(0.0);
            for qmax in [3.0f32, 15.0, 31.0] {
                for f in [0.05f32, 0.3, 0.77, 1.0] {
                    let s = span * f / qmax;
                    for z in [0.0f32, 1.0, (qmax / 2.0).round(), qmax] {
                        let want: f64 = data
                            .iter()
                            .map(|&v| {
                                let q = rne((v / s).clamp(-z - 1.0, qmax - z + 1.0));
                                let q = (q + z).clamp(0.0, qmax);
                                (v as f64 - ((q - z) * s) as f64).powi(2)
                            })
                            .sum();
                        let got = b.sse_uint(s, z, qmax, f64::INFINITY);
                        let stopped = b.sse_uint(s, z, qmax, want * 0.5);
                        assert!(stopped > want * 0.5 && stopped <= got, "{stopped} {got}");
                        assert!(
                            (got - want).abs() <= 1e-9 * want,
                            "qmax {qmax} f {f} z {z}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
