//! Scaled quantizers: symmetric intN, asymmetric uintN, and the scaled OCP element floats, per tensor,
//! per channel or per group, with clipping, nearest or stochastic rounding, and VS-Quant two-level
//! scales. Conventions (DESIGN.md §2):
//!
//! - intN: `S = amax/(2^(N−1) − 1)`, `q = clamp(round(x/S), ±(2^(N−1) − 1))`, `x̂ = q·S`;
//! - uintN: range widened to include 0, `S = (rmax − rmin)/(2^N − 1)`, `Z = clamp(round(−rmin/S))`,
//!   `q = clamp(round(x/S) + Z, 0, 2^N − 1)`, `x̂ = (q − Z)·S`;
//! - floats: `S = amax/max_elem`, elements rounded to nearest even and saturated.
//!
//! Arithmetic in f32, division as `x / S`; a zero range gets `S = 1`; the scale is rounded to its
//! storage type first and that stored value is used throughout.

use super::rounder::Rounder;
use super::spec::{Family, RoundMode, Spec};
use super::{store_scale, uniform, Layout, Quantized};
use crate::calib::{asymmetric_range, symmetric_threshold};
use crate::formats::lookup;
use rayon::prelude::*;

/// Round to nearest, ties to even, for |v| < 2^22: adding and subtracting 1.5·2^23 leaves the integer
/// part, rounded by the FPU's default mode (nearest-even). Baseline x86-64 has no rounding instruction
/// (`roundss` is SSE4.1), so this keeps the loop vectorisable; callers clamp first.
#[inline(always)]
pub(crate) fn rne(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (v + MAGIC) - MAGIC
}

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
#[derive(Debug, Clone, Copy)]
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
    fn apply(&self, p: &Params, x: &[f32], out: &mut [f32], codes: &mut [i16], base: u64) {
        let s = p.scale;
        let qmax = self.qmax();
        match self.family {
            // nearest rounding has its own loops (no per-element branch), so they vectorise
            Family::Int(_) if self.round == RoundMode::Nearest => {
                for ((&v, o), c) in x.iter().zip(out.iter_mut()).zip(codes.iter_mut()) {
                    let q = rne((v / s).clamp(-qmax - 1.0, qmax + 1.0)).clamp(-qmax, qmax);
                    *c = q as i16;
                    *o = q * s;
                }
            }
            Family::Uint(_) if self.round == RoundMode::Nearest => {
                let z = p.zero as f32;
                for ((&v, o), c) in x.iter().zip(out.iter_mut()).zip(codes.iter_mut()) {
                    let q = (rne((v / s).clamp(-z - 1.0, qmax - z + 1.0)) + z).clamp(0.0, qmax);
                    *c = q as i16;
                    *o = (q - z) * s;
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

    /// Sum of squared errors of one group with the given parameters (for the MSE clip search). The same
    /// arithmetic as `apply`, without writing anything (the search calls it about 50 times per group).
    fn sse(&self, p: &Params, x: &[f32], base: u64) -> f64 {
        let s = p.scale;
        let qmax = self.qmax();
        let mut total = 0f64;
        match (self.family, self.round) {
            (Family::Int(_), RoundMode::Nearest) => {
                for c in x.chunks(256) {
                    let mut acc = 0f32;
                    for &v in c {
                        let q = rne((v / s).clamp(-qmax - 1.0, qmax + 1.0)).clamp(-qmax, qmax);
                        let e = v - q * s;
                        acc += e * e;
                    }
                    total += acc as f64;
                }
            }
            (Family::Uint(_), RoundMode::Nearest) => {
                let z = p.zero as f32;
                for c in x.chunks(256) {
                    let mut acc = 0f32;
                    for &v in c {
                        let q = (rne((v / s).clamp(-z - 1.0, qmax - z + 1.0)) + z).clamp(0.0, qmax);
                        let e = v - (q - z) * s;
                        acc += e * e;
                    }
                    total += acc as f64;
                }
            }
            _ => {
                const CHUNK: usize = 1024;
                let mut out = [0f32; CHUNK];
                let mut codes = [0i16; CHUNK];
                for (ci, chunk) in x.chunks(CHUNK).enumerate() {
                    let n = chunk.len();
                    self.apply(
                        p,
                        chunk,
                        &mut out[..n],
                        &mut codes[..n],
                        base + (ci * CHUNK) as u64,
                    );
                    total += chunk
                        .iter()
                        .zip(&out[..n])
                        .map(|(&a, &b)| ((a - b) as f64).powi(2))
                        .sum::<f64>();
                }
            }
        }
        total
    }

    /// Parameters for a symmetric (int, float) group with threshold `t`.
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

    /// Fit one group: clip, then scale (and zero point).
    fn fit(&self, x: &[f32], spec: &Spec, base: u64) -> Params {
        match self.family {
            Family::Uint(_) => {
                let (lo, hi) = asymmetric_range(x, spec.clip, &|lo, hi| {
                    self.sse(&self.asymmetric(lo, hi, spec), x, base)
                });
                self.asymmetric(lo, hi, spec)
            }
            _ => {
                let t = symmetric_threshold(x, spec.clip, &|t| {
                    self.sse(&self.symmetric(t, spec), x, base)
                });
                self.symmetric(t, spec)
            }
        }
    }
}

pub fn quantize(x: &[f32], layout: Layout, spec: &Spec) -> Quantized {
    let rounder = match spec.family {
        Family::Float(f) => Some(Rounder::new(
            &lookup(f.name()).expect("catalog format").format,
        )),
        _ => None,
    };
    let k = Kernel {
        family: spec.family,
        round: spec.round,
        seed: spec.seed,
        rounder,
    };
    let n = x.len();
    let mut dequant = vec![0f32; n];
    let mut codes = vec![0i16; n];
    let params: Vec<Params> = if layout.rows == 1 && layout.group >= layout.cols {
        // one group for everything: fit once (the clip search runs over all data), apply in parallel chunks
        let p = fit_whole(&k, x, spec);
        dequant
            .par_chunks_mut(1 << 16)
            .zip(codes.par_chunks_mut(1 << 16))
            .zip(x.par_chunks(1 << 16))
            .enumerate()
            .for_each(|(ci, ((o, c), xs))| k.apply(&p, xs, o, c, (ci << 16) as u64));
        vec![p]
    } else {
        let cols = layout.cols;
        let g = layout.group;
        x.par_chunks(cols)
            .zip(dequant.par_chunks_mut(cols))
            .zip(codes.par_chunks_mut(cols))
            .enumerate()
            .flat_map_iter(|(r, ((xr, or), cr))| {
                let base = (r * cols) as u64;
                let mut ps: Vec<Params> = xr
                    .chunks(g)
                    .enumerate()
                    .map(|(j, xs)| k.fit(xs, spec, base + (j * g) as u64))
                    .collect();
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
                ps
            })
            .collect()
    };
    let outer_scales = if spec.vsq {
        params
            .chunks(layout.groups_per_row())
            .map(|row| row[0].outer.unwrap_or(1.0))
            .collect()
    } else {
        Vec::new()
    };
    Quantized {
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
        thresholds: params
            .iter()
            .flat_map(|p| {
                if matches!(spec.family, Family::Uint(_)) {
                    vec![p.threshold.0, p.threshold.1]
                } else {
                    vec![p.threshold.1]
                }
            })
            .collect(),
        metrics: Default::default(),
    }
}

/// The whole tensor as one group: the same fit as a row group, with the error search parallel.
fn fit_whole(k: &Kernel, x: &[f32], spec: &Spec) -> Params {
    let sse_par = |p: &Params| -> f64 {
        x.par_chunks(1 << 16)
            .enumerate()
            .map(|(ci, xs)| k.sse(p, xs, (ci << 16) as u64))
            .sum()
    };
    match k.family {
        Family::Uint(_) => {
            let (lo, hi) =
                asymmetric_range(x, spec.clip, &|lo, hi| sse_par(&k.asymmetric(lo, hi, spec)));
            k.asymmetric(lo, hi, spec)
        }
        _ => {
            let t = symmetric_threshold(x, spec.clip, &|t| sse_par(&k.symmetric(t, spec)));
            k.symmetric(t, spec)
        }
    }
}

/// VS-Quant (Dai et al. 2021): each group keeps an unsigned 4-bit integer scale `s_g` and the channel
/// one float scale `γ = max_g S_g / 15`, so the group's scale is `s_g·γ` with `s_g = ceil(S_g/γ)` in
/// 1..=15 (rounding up keeps every group's range).
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
