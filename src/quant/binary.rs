//! Binary and ternary weights, one scale per group (per output channel by default).
//!
//! - binary (XNOR-Net, Rastegari et al. 2016): `ŵ = α·sign(w)` with `α = mean|w|`, sign(0) = +1;
//! - ternary (TWN, Li & Liu 2016): threshold `Δ = 0.7·mean|w|`, weights with `|w| > Δ` keep their sign
//!   and share `α = mean of their |w|`, the rest become 0.

use super::metrics::Acc;
use super::spec::Spec;
use super::{Layout, Quantized};

fn run(
    x: &[f32],
    layout: Layout,
    spec: &Spec,
    group: impl Fn(&[f32], &mut [f32], &mut [i16]) -> (f32, f32) + Sync,
) -> (Quantized, Acc) {
    // per group: (scale, threshold)
    let (dequant, codes, st, acc) = super::blocks::by_groups(x, layout, group);
    let q = Quantized {
        spec: *spec,
        layout,
        dequant,
        codes,
        scales: st.iter().map(|p| p.0).collect(),
        zero_points: Vec::new(),
        outer_scales: Vec::new(),
        codebook: Vec::new(),
        thresholds: st.iter().map(|p| p.1).collect(),
        metrics: Default::default(),
    };
    (q, acc)
}

fn mean_abs(xs: &[f32]) -> f32 {
    (xs.iter().map(|v| v.abs() as f64).sum::<f64>() / xs.len().max(1) as f64) as f32
}

pub fn binary(x: &[f32], layout: Layout, spec: &Spec) -> (Quantized, Acc) {
    run(x, layout, spec, |xs, os, cs| {
        let alpha = mean_abs(xs);
        for ((&v, o), c) in xs.iter().zip(os.iter_mut()).zip(cs.iter_mut()) {
            let pos = v >= 0.0;
            *c = pos as i16;
            *o = if pos { alpha } else { -alpha };
        }
        (alpha, 0.0)
    })
}

pub fn ternary(x: &[f32], layout: Layout, spec: &Spec) -> (Quantized, Acc) {
    run(x, layout, spec, |xs, os, cs| {
        let delta = 0.7 * mean_abs(xs);
        let (sum, count) = xs
            .iter()
            .filter(|v| v.abs() > delta)
            .fold((0f64, 0usize), |(s, c), v| (s + v.abs() as f64, c + 1));
        let alpha = if count > 0 {
            (sum / count as f64) as f32
        } else {
            0.0
        };
        for ((&v, o), c) in xs.iter().zip(os.iter_mut()).zip(cs.iter_mut()) {
            let t = if v.abs() > delta { v.signum() } else { 0.0 };
            *c = t as i16;
            *o = t * alpha;
        }
        (alpha, delta)
    })
}

#[cfg(test)]
mod tests {
    use crate::quant::{quantize, Spec};

    #[test]
    fn binary_and_ternary_by_hand() {
        let x = [0.5f32, -1.5, 0.1, -0.1, 2.0, 0.0];
        let b = quantize(&x, &[1, 6], &Spec::parse("binary").unwrap()).unwrap();
        let a = (0.5 + 1.5 + 0.1 + 0.1 + 2.0) / 6.0;
        assert_eq!(b.dequant, vec![a, -a, a, -a, a, a]);
        let t = quantize(&x, &[1, 6], &Spec::parse("ternary").unwrap()).unwrap();
        // Δ = 0.7·0.7 = 0.49: 0.5, -1.5 and 2.0 survive with α = (0.5 + 1.5 + 2.0)/3
        let al = 4.0 / 3.0;
        assert_eq!(t.thresholds, vec![0.7 * a]);
        assert_eq!(t.dequant, vec![al, -al, 0.0, 0.0, al, 0.0]);
        assert_eq!(t.codes, vec![1, -1, 0, 0, 1, 0]);
        assert!((t.metrics.bits_per_weight - (2.0 + 32.0 / 6.0)).abs() < 1e-9);
    }
}
