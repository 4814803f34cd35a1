//! Block formats whose scales follow a fixed rule: NF4 (absmax blocks), OCP MX v1.0 (E8M0 scale per 32),
//! NVFP4 (E4M3 scale per 16 and an FP32 tensor scale), and the shared-microexponent formats.

use super::metrics::Acc;
use super::rounder::{Binary, Rounder};
use super::spec::{MicroExp, MxElem, Spec};
use super::{store_scale, Layout, Quantized};
use crate::formats::{lookup, Codebook};
use crate::kernels::buffers::{f32_zeroed, i16_zeroed};
use crate::kernels::round::rne;
use crate::kernels::simd::multiversion;
use crate::stats::{abs_max, from_order_key, order_key};
use rayon::prelude::*;

/// floor(log2(a)) for a positive finite f32, exactly (from the bits, subnormals included).
pub fn floor_log2(a: f32) -> i32 {
    let bits = a.to_bits() & 0x7fff_ffff;
    let field = (bits >> 23) as i32;
    if field > 0 {
        field - 127
    } else {
        // subnormal: value = m · 2^-149
        let m = bits & 0x7f_ffff;
        31 - m.leading_zeros() as i32 - 149
    }
}

/// 2^e exactly, for the exponents block formats use.
fn pow2(e: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&e));
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// Run `block` over every group (rows in parallel); it fills the group's outputs and returns what the
/// group stores (its scale, or more). Shared by the block formats and binary/ternary. Also returns the
/// metric sums, taken from each row while it is in cache.
pub(crate) fn by_groups<T: Send>(
    x: &[f32],
    layout: Layout,
    block: impl Fn(&[f32], &mut [f32], &mut [i16]) -> T + Sync,
) -> (Vec<f32>, Vec<i16>, Vec<T>, Acc) {
    let n = x.len();
    let mut dequant = f32_zeroed(n);
    let mut codes = i16_zeroed(n);
    let cols = layout.cols;
    let g = layout.group;
    let rows: Vec<(Vec<T>, Acc)> = x
        .par_chunks(cols)
        .zip(dequant.par_chunks_mut(cols))
        .zip(codes.par_chunks_mut(cols))
        .map(|((xr, or), cr)| {
            crate::kernels::pause::point();
            row_groups(g, xr, or, cr, &block)
        })
        .collect();
    let mut per_group = Vec::with_capacity(layout.groups());
    let mut acc = Acc::default();
    for (t, a) in rows {
        per_group.extend(t);
        acc = acc.merge(a);
    }
    (dequant, codes, per_group, acc)
}

#[inline(always)]
fn row_inner<T, F: Fn(&[f32], &mut [f32], &mut [i16]) -> T>(
    g: usize,
    xr: &[f32],
    or: &mut [f32],
    cr: &mut [i16],
    block: &F,
) -> (Vec<T>, Acc) {
    // a plain loop, not iterator adapters: everything inlines here and gets the AVX2 copy
    let mut t = Vec::with_capacity(xr.len().div_ceil(g));
    for ((xs, os), cs) in xr.chunks(g).zip(or.chunks_mut(g)).zip(cr.chunks_mut(g)) {
        t.push(block(xs, os, cs));
    }
    let mut acc = Acc::default();
    acc.add(xr, or);
    (t, acc)
}

/// One row of [`by_groups`], compiled for AVX2 too (see `simd`).
fn row_groups<T, F: Fn(&[f32], &mut [f32], &mut [i16]) -> T>(
    g: usize,
    xr: &[f32],
    or: &mut [f32],
    cr: &mut [i16],
    block: &F,
) -> (Vec<T>, Acc) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn wide<T, F: Fn(&[f32], &mut [f32], &mut [i16]) -> T>(
            g: usize,
            xr: &[f32],
            or: &mut [f32],
            cr: &mut [i16],
            block: &F,
        ) -> (Vec<T>, Acc) {
            row_inner(g, xr, or, cr, block)
        }
        if crate::kernels::simd::avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { wide(g, xr, or, cr, block) };
        }
    }
    row_inner(g, xr, or, cr, block)
}

fn result(
    spec: &Spec,
    layout: Layout,
    (dequant, codes, scales, acc): (Vec<f32>, Vec<i16>, Vec<f32>, Acc),
) -> (Quantized, Acc) {
    (
        Quantized {
            spec: *spec,
            layout,
            dequant,
            codes,
            scales,
            zero_points: Vec::new(),
            outer_scales: Vec::new(),
            codebook: Vec::new(),
            thresholds: Vec::new(),
            metrics: Default::default(),
        },
        acc,
    )
}

/// NF4 (QLoRA): each block is divided by its absmax (stored in the scale type, fp16 by default) and
/// every value goes to the nearest of the 16 NormalFloat levels.
pub fn nf4(x: &[f32], layout: Layout, spec: &Spec) -> (Quantized, Acc) {
    let cb = Codebook::nf4();
    let table: Vec<f32> = cb.values.iter().map(|&v| v as f32).collect();
    let cuts = Cuts::of(&cb);
    let parts = by_groups(x, layout, |xs, os, cs| {
        let amax = abs_max(xs); // the input is finite (checked by the caller)
        let s = store_scale(if amax > 0.0 { amax } else { 1.0 }, spec.scale);
        codebook_elements(&cuts, &table, xs, os, cs, s);
        s
    });
    let (mut q, acc) = result(spec, layout, parts);
    q.codebook = table;
    (q, acc)
}

/// Where the nearest-entry choice of a sorted 16-entry codebook changes, as f32 values: `cut[i]` is
/// the smallest f32 `x` that [`Codebook::encode`] maps to entry `i + 1` or above. Encoding is monotone
/// in `x`, so the entry of any f32 is the number of cuts at or below it, which a loop computes
/// without branches; found once per codebook by bisection on the f32 bit patterns, so the result is
/// the exact encoder's, ties (toward zero) included.
pub(crate) struct Cuts([f32; 15]);

impl Cuts {
    pub(crate) fn of(cb: &Codebook) -> Cuts {
        assert_eq!(cb.values.len(), 16, "a 4-bit codebook");
        let code = |x: f32| cb.encode(x as f64).code as usize;
        let mut cut = [0f32; 15];
        for (i, c) in cut.iter_mut().enumerate() {
            // bisection on the ordered bit patterns of f32: at `lo` the code is ≤ i, at `hi` > i
            let (mut lo, mut hi) = (order_key(-2.0, true), order_key(2.0, true));
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if code(from_order_key(mid)) > i {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            *c = from_order_key(hi);
        }
        Cuts(cut)
    }

    #[inline(always)]
    fn index(&self, x: f32) -> usize {
        self.0.iter().map(|&c| (x >= c) as usize).sum()
    }
}

multiversion! {
    /// A block's elements on a 4-bit codebook: `x/s` to its entry by [`Cuts`], the value times `s`.
    fn codebook_elements(cuts: &Cuts, table: &[f32], xs: &[f32], os: &mut [f32], cs: &mut [i16], s: f32) -> () {
        for ((&v, o), c) in xs.iter().zip(os.iter_mut()).zip(cs.iter_mut()) {
            let i = cuts.index(v / s);
            *c = i as i16;
            *o = table[i.min(15)] * s;
        }
    }
}

/// OCP MX v1.0: per block of 32, `e = floor(log2(amax)) − emax_elem` (clamped to E8M0's −127…127; an
/// all-zero block gets −127), elements `round(x / 2^e)` in the element format, saturating.
/// MXINT8 elements are int8 with an implicit 2^-6, kept symmetric (±127/64) as microxcaling does.
pub fn mx(x: &[f32], layout: Layout, spec: &Spec, elem: MxElem) -> (Quantized, Acc) {
    let rounder = match elem {
        MxElem::Float(f) => Some(Rounder::new(&lookup(f.name()).expect("catalog").format)),
        MxElem::Int8 => None,
    };
    let emax = match elem {
        MxElem::Float(f) => f.emax(),
        MxElem::Int8 => 0,
    };
    let binary = rounder.as_ref().and_then(|r| r.binary()).copied();
    let parts = by_groups(x, layout, |xs, os, cs| {
        let amax = abs_max(xs); // the input is finite (checked by the caller)
        let e = if amax > 0.0 {
            (floor_log2(amax) - emax).clamp(-127, 127)
        } else {
            -127
        };
        // powers of two within f32's range (2^-127 is a subnormal, held exactly): scaling down is
        // exact, and scaling the element back rounds once, as a cast from the exact f64 product would
        let (down, up) = (pow2(-e) as f32, pow2(e) as f32);
        let items = xs.iter().zip(os.iter_mut()).zip(cs.iter_mut());
        match (&binary, &rounder) {
            (Some(b), _) => scaled_elements(b, xs, os, cs, down, up),
            (None, Some(r)) => {
                for ((&v, o), c) in items {
                    let (val, code) = r.round(v * down);
                    *c = code as i16;
                    *o = val * up;
                }
            }
            (None, None) => {
                for ((&v, o), c) in items {
                    let q = rne((v * down * 64.0).clamp(-128.0, 128.0)).clamp(-127.0, 127.0);
                    *c = q as i16;
                    *o = q / 64.0 * up;
                }
            }
        }
        up
    });
    result(spec, layout, parts)
}

multiversion! {
    /// A block's elements in a binary float format after a power-of-two scaling (MX): `x·down`
    /// rounded, the value times `up`. Its own function, compiled for AVX2 too, so that it vectorises
    /// (the closures of `by_groups` are not inlined into the AVX2 copy of the row loop).
    fn scaled_elements(b: &Binary, xs: &[f32], os: &mut [f32], cs: &mut [i16], down: f32, up: f32) -> () {
        for ((&v, o), c) in xs.iter().zip(os.iter_mut()).zip(cs.iter_mut()) {
            let (val, code) = b.round(v * down);
            *c = code as i16;
            *o = val * up;
        }
    }
}

multiversion! {
    /// An NVFP4 block's elements: `x/denom` clamped to ±6 and rounded to E2M1 by the bit-level
    /// rounder (equal to [`e2m1_round`], branch-free), the value times `denom`.
    fn nvfp4_elements(b: &Binary, xs: &[f32], os: &mut [f32], cs: &mut [i16], denom: f32) -> () {
        for ((&v, o), c) in xs.iter().zip(os.iter_mut()).zip(cs.iter_mut()) {
            let (val, code) = b.round((v / denom).clamp(-6.0, 6.0));
            *c = code as i16;
            *o = denom * val;
        }
    }
}

/// NVFP4: `s_tensor = amax/(448·6)` in FP32; per block of 16, `s_blk = (amax_blk/6)/s_tensor` cast to
/// E4M3 (≤ 448, nearest even); elements `round_E2M1(clamp(x/(s_tensor·ŝ_blk), ±6))`; a block whose scale
/// rounds to 0 is all zeros (quantization.md §2.4, after torchao's `nvfp4_quantize`).
/// `tensor_amax`: the whole tensor's largest magnitude when `x` is only some of its rows (None: `x`'s).
pub fn nvfp4(x: &[f32], layout: Layout, spec: &Spec, tensor_amax: Option<f32>) -> (Quantized, Acc) {
    let e4m3 = Rounder::new(&lookup("fp8_e4m3").expect("catalog").format);
    let e2m1 = *Rounder::new(&lookup("fp4_e2m1").expect("catalog").format)
        .binary()
        .expect("E2M1 is a binary float");
    let amax =
        tensor_amax.unwrap_or_else(|| x.par_chunks(1 << 16).map(abs_max).reduce(|| 0f32, f32::max));
    let s_tensor = if amax > 0.0 {
        amax / (448.0 * 6.0)
    } else {
        1.0
    };
    let parts = by_groups(x, layout, |xs, os, cs| {
        let bmax = abs_max(xs);
        let raw = ((bmax / 6.0) / s_tensor).min(448.0);
        // the fast rounder agrees with the exact encoder (rounder.rs tests), saturating at 448
        let s_blk = e4m3.round(raw).0;
        if s_blk == 0.0 {
            os.fill(0.0);
            cs.fill(0);
            return 0.0;
        }
        let denom = s_tensor * s_blk;
        nvfp4_elements(&e2m1, xs, os, cs, denom);
        s_blk
    });
    let (mut q, acc) = result(spec, layout, parts);
    q.outer_scales = vec![s_tensor];
    (q, acc)
}

/// Round `v` (|v| ≤ 6) to the nearest E2M1 value, ties to the even code, saturating: the value and its
/// code (sign bit 8), without a table search. The grid {0, 0.5, 1, 1.5, 2, 3, 4, 6} has step 0.5 below
/// 2, step 1 in [2, 4) and step 2 in [4, 6]; rounding to a multiple of the step with ties to even
/// gives the even code, because the code's last bit is the mantissa bit and the mantissa counts the
/// steps (a tie at the top of a binade goes up to the next power of two, which has an even code).
/// Checked against the table rounder on every tie and between every pair of values (tests below).
/// The quantizer uses the general bit-level rounder; this one stays as an independent oracle.
#[cfg(test)]
fn e2m1_round(v: f32) -> (f32, u16) {
    let a = v.abs().min(6.0);
    let (val, code) = if a < 2.0 {
        let m = rne(a * 2.0); // 0..=4 (a value rounding up to 2.0 gets code 4, its own)
        (m * 0.5, m as u16)
    } else if a < 4.0 {
        let m = rne(a); // 2..=4
        (m, (m as u16) + 2)
    } else {
        let m = rne(a * 0.5); // 2..=3
        (m * 2.0, (m as u16) + 4)
    };
    if v.is_sign_negative() {
        (-val, code | 0b1000)
    } else {
        (val, code)
    }
}

/// Shared micro-exponents (Rouhani et al. 2023, the lecture's MX4/MX6/MX9): per block of 16 a shared
/// exponent `E = floor(log2(amax))` (E8M0), per pair a 1-bit micro-exponent `μ` (1 when the pair's
/// largest magnitude is below 2^E, buying one more bit of precision), elements sign-magnitude with M
/// mantissa bits on the step `2^(E − μ − (M − 1))`, saturating at ±(2^M − 1) steps.
pub fn micro_exponent(x: &[f32], layout: Layout, spec: &Spec, m: MicroExp) -> (Quantized, Acc) {
    let mb = m.mantissa_bits() as i32;
    let qmax = ((1u32 << mb) - 1) as f32;
    let parts = by_groups(x, layout, |xs, os, cs| {
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        if amax == 0.0 {
            os.fill(0.0);
            cs.fill(0);
            return pow2(-127) as f32;
        }
        let e = floor_log2(amax).clamp(-127, 127);
        for ((pair, op), cp) in xs.chunks(2).zip(os.chunks_mut(2)).zip(cs.chunks_mut(2)) {
            let pmax = pair.iter().fold(0f32, |a, v| a.max(v.abs()));
            let mu = if pmax > 0.0 && floor_log2(pmax) >= e {
                0
            } else {
                1
            };
            let step = pow2(e - mu - (mb - 1));
            for ((&v, o), c) in pair.iter().zip(op.iter_mut()).zip(cp.iter_mut()) {
                let q = rne(((v as f64 / step) as f32).clamp(-qmax - 1.0, qmax + 1.0))
                    .clamp(-qmax, qmax);
                *c = q as i16;
                *o = (q as f64 * step) as f32;
            }
        }
        pow2(e) as f32
    });
    result(spec, layout, parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize, Spec};

    #[test]
    fn floor_log2_is_exact() {
        assert_eq!(floor_log2(1.0), 0);
        assert_eq!(floor_log2(1.999), 0);
        assert_eq!(floor_log2(0.5), -1);
        assert_eq!(floor_log2(f32::from_bits(1)), -149);
        assert_eq!(floor_log2(f32::MAX), 127);
    }

    #[test]
    fn e2m1_arithmetic_rounding_matches_the_table_rounder() {
        let r = Rounder::new(&lookup("fp4_e2m1").unwrap().format);
        let mut probes: Vec<f32> = (0..=6000).map(|i| i as f32 / 1000.0).collect();
        let grid = [0.0f32, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        for w in grid.windows(2) {
            let m = (w[0] + w[1]) / 2.0;
            probes.extend([
                m,
                f32::from_bits(m.to_bits() + 1),
                f32::from_bits(m.to_bits() - 1),
            ]);
        }
        for &p in &probes {
            for v in [p, -p] {
                assert_eq!(e2m1_round(v), r.round(v), "{v}");
            }
        }
    }

    #[test]
    fn nvfp4_follows_the_recipe() {
        // one block: amax 6 → s_tensor = 6/2688, s_blk = 1/s_tensor/… → 448 exactly; values land on E2M1·s
        let mut x = vec![0f32; 16];
        x[0] = 6.0;
        x[1] = -2.9;
        x[2] = 0.26;
        let q = quantize(&x, &[1, 16], &Spec::parse("nvfp4").unwrap()).unwrap();
        assert_eq!(q.outer_scales, vec![6.0 / 2688.0]);
        assert_eq!(q.scales, vec![448.0]);
        assert!((q.dequant[0] - 6.0).abs() < 1e-6);
        assert!((q.dequant[1] + 3.0).abs() < 1e-6);
        assert!((q.dequant[2] - 0.5).abs() < 1e-6, "{}", q.dequant[2]);
        assert!((q.metrics.bits_per_weight - (4.0 + 8.0 / 16.0 + 32.0 / 16.0)).abs() < 1e-9);
    }

    #[test]
    fn codebook_cuts_encode_like_the_exact_encoder() {
        let cb = Codebook::nf4();
        let cuts = Cuts::of(&cb);
        let mut probes: Vec<f32> = vec![0.0, -0.0, 1.0, -1.0, 1.5, -1.5, 1e-30, -1e-30];
        for w in cb.values.windows(2) {
            let m = ((w[0] + w[1]) / 2.0) as f32;
            for p in [w[0] as f32, w[1] as f32, m] {
                for d in 0..4u32 {
                    probes.push(f32::from_bits(p.to_bits().wrapping_add(d)));
                    probes.push(f32::from_bits(p.to_bits().wrapping_sub(d)));
                }
            }
        }
        for k in 0..100_000 {
            probes.push(((k as f32) * 0.7548).sin() * 1.1);
        }
        // (the quantizer never sees NaN: the tensor is checked first)
        for x in probes.into_iter().filter(|x| x.is_finite()) {
            assert_eq!(cuts.index(x) as u64, cb.encode(x as f64).code, "{x:e}");
        }
    }

    #[test]
    fn nf4_blocks_scale_by_absmax() {
        let x: Vec<f32> = (0..128).map(|i| (i as f32 - 64.0) / 10.0).collect();
        let q = quantize(&x, &[2, 64], &Spec::parse("nf4").unwrap()).unwrap();
        assert_eq!(
            q.scales,
            [6.4f32, 6.3]
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect::<Vec<_>>()
        );
        assert_eq!(q.dequant[0], -q.scales[0]); // the block's absmax maps to the code −1
        assert!((q.metrics.bits_per_weight - (4.0 + 16.0 / 64.0)).abs() < 1e-9);
    }

    #[test]
    fn micro_exponent_bits_per_weight_match_the_table() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        for (spec, bits) in [
            ("smx4", 4.0),
            ("smx6", 6.0),
            ("smx9", 9.0),
            ("mxfp4", 4.25),
            ("mxfp8_e4m3", 8.25),
            ("mxfp6_e2m3", 6.25),
            ("mxint8", 8.25),
        ] {
            let q = quantize(&x, &[2, 128], &Spec::parse(spec).unwrap()).unwrap();
            assert!(
                (q.metrics.bits_per_weight - bits).abs() < 1e-9,
                "{spec}: {}",
                q.metrics.bits_per_weight
            );
        }
        // more mantissa bits, less error
        let e = |s: &str| {
            quantize(&x, &[2, 128], &Spec::parse(s).unwrap())
                .unwrap()
                .metrics
                .sqnr_db
        };
        assert!(e("smx4") < e("smx6") && e("smx6") < e("smx9"));
    }
}
