//! Error and size metrics, one definition everywhere (DESIGN.md §3). Sums accumulate in f64.

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

impl Metrics {
    pub fn compute(x: &[f32], xq: &[f32], total_bits: u64) -> Metrics {
        let (se, sx, sq, sxq, maxe) = x
            .par_chunks(1 << 16)
            .zip(xq.par_chunks(1 << 16))
            .map(|(a, b)| {
                // four independent lanes per sum, so the f64 arithmetic vectorises; lanes are added at
                // the end (the order differs from a plain loop only in the last bits)
                const L: usize = 4;
                let (mut se, mut sx, mut sq, mut sxq, mut me) =
                    ([0f64; L], [0f64; L], [0f64; L], [0f64; L], [0f64; L]);
                let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
                let (ra, rb) = (ca.remainder(), cb.remainder());
                for (pa, pb) in ca.zip(cb) {
                    for i in 0..L {
                        let (u, v) = (pa[i] as f64, pb[i] as f64);
                        let e = u - v;
                        se[i] += e * e;
                        sx[i] += u * u;
                        sq[i] += v * v;
                        sxq[i] += u * v;
                        let ae = e.abs();
                        me[i] = if ae > me[i] { ae } else { me[i] };
                    }
                }
                for (&u, &v) in ra.iter().zip(rb) {
                    let (u, v) = (u as f64, v as f64);
                    let e = u - v;
                    se[0] += e * e;
                    sx[0] += u * u;
                    sq[0] += v * v;
                    sxq[0] += u * v;
                    me[0] = me[0].max(e.abs());
                }
                let sum = |v: [f64; L]| v.iter().sum::<f64>();
                (
                    sum(se),
                    sum(sx),
                    sum(sq),
                    sum(sxq),
                    me.iter().copied().fold(0.0, f64::max),
                )
            })
            .reduce(
                || (0.0, 0.0, 0.0, 0.0, 0.0),
                |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3, a.4.max(b.4)),
            );
        let n = x.len().max(1) as f64;
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

#[cfg(test)]
mod tests {
    use super::*;

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
