//! The exact squared error of symmetric integer candidates on one group (a row, a group of a row),
//! without quantizing every value for every candidate: the MSE clip search's per-channel inner loop.
//!
//! The magnitudes |x| are sorted (a radix sort) and cut into buckets of 8, with prefix sums of |x|
//! and |x|² in f64 over the buckets. For a candidate scale `s`,
//! the values that quantize to level `k` form a contiguous range of magnitudes; only the buckets
//! next to a rounding boundary `(k + ½)·s` can hold values of two levels. Those are summed value by
//! value with the quantizer's own rounding; every other run of buckets is checked to quantize alike
//! (its smallest and largest value give the same level: rounding is monotone) and summed from the
//! prefix sums as `S₂ − 2cS₁ + nc²`. The result is the exact `Σ(x − x̂)²` (in f64), the same sum an
//! exhaustive pass computes, at a fraction of the work when the grid has few levels.

use super::linear::rne;

/// Magnitudes per bucket: the buckets next to each boundary are summed value by value.
const PER_BUCKET: usize = 8;

/// One group's magnitudes, sorted into buckets.
pub struct Buckets {
    /// |x| grouped by bucket
    vals: Vec<f32>,
    /// bucket b holds vals[start[b]..start[b + 1]]
    start: Vec<usize>,
    /// prefix sums over buckets of |x| and |x|² (f64)
    p1: Vec<f64>,
    p2: Vec<f64>,
    /// smallest and largest magnitude of each bucket (empty: +inf, −inf)
    lo: Vec<f32>,
    hi: Vec<f32>,
}

/// |x| in ascending order: an LSD radix sort of the bit patterns (non-negative floats order like
/// their bits), three passes of 11 bits; a comparison sort of 4,096 values costs several times more.
fn sorted_magnitudes(x: &[f32]) -> Vec<f32> {
    let mut a: Vec<u32> = x.iter().map(|v| v.to_bits() & 0x7fff_ffff).collect();
    let mut tmp = vec![0u32; a.len()];
    for shift in [0u32, 11, 22] {
        let mut count = [0usize; 2049];
        for &v in &a {
            count[((v >> shift) & 0x7ff) as usize + 1] += 1;
        }
        for i in 0..2048 {
            count[i + 1] += count[i];
        }
        for &v in &a {
            let d = ((v >> shift) & 0x7ff) as usize;
            tmp[count[d]] = v;
            count[d] += 1;
        }
        std::mem::swap(&mut a, &mut tmp);
    }
    a.into_iter().map(f32::from_bits).collect()
}

impl Buckets {
    /// Sort the magnitudes of `x` (finite values) and cut them into buckets of [`PER_BUCKET`].
    pub fn new(x: &[f32]) -> Buckets {
        let vals = sorted_magnitudes(x);
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
    pub fn sse(&self, s: f32, qmax: f32) -> f64 {
        let q = |a: f32| -> f32 {
            let y = a / s;
            let y = if y < qmax + 1.0 { y } else { qmax + 1.0 };
            let r = rne(y);
            if r < qmax {
                r
            } else {
                qmax
            }
        };
        let err = |a: f32| -> f64 {
            let e = a as f64 - (q(a) * s) as f64;
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
        // the bucket where magnitudes reach each rounding boundary (k + ½)·s is summed value by
        // value (the boundary as the f32 rounding places it may fall a few units away, in a
        // neighbour: then that run fails its check below and is summed value by value, still exactly)
        let mut marks: Vec<usize> = Vec::with_capacity(qmax as usize + 1);
        for k in 0..qmax as u32 {
            let beta = (k as f32 + 0.5) * s;
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
        let mut total = 0f64;
        let mut b = 0;
        for &m in &marks {
            if b < m {
                // the run b..m: one level if its smallest and largest values share it
                let k = q(self.lo[b]);
                if k == q(self.hi[m - 1]) {
                    let c = (k * s) as f64;
                    let n = (self.start[m] - self.start[b]) as f64;
                    let s1 = self.p1[m] - self.p1[b];
                    let s2 = self.p2[m] - self.p2[b];
                    total += (s2 - 2.0 * c * s1 + n * c * c).max(0.0);
                } else {
                    total += errs(&self.vals[self.start[b]..self.start[m]]);
                }
            }
            if m < nb {
                total += errs(self.bucket(m));
            }
            b = m + 1;
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
                let got = b.sse(s, qmax);
                assert!(
                    (got - want).abs() <= 1e-9 * want,
                    "qmax {qmax} f {f}: {got} vs {want}"
                );
            }
        }
        assert_eq!(Buckets::new(&[0.0; 64]).sse(1.0, 7.0), 0.0);
    }
}
