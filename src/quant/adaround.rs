//! AdaRound (Nagel et al. 2020, arXiv 2004.10568): instead of rounding every weight to the nearest
//! level, learn for each weight whether to round down or up so that the layer's *output* on calibration
//! inputs changes least. The grid (scales, zero points) is the nearest-rounding quantizer's; only the
//! rounding direction is learned.
//!
//! `W̃ = s·clip(floor(W/s) + h(V), n, p)` with the rectified sigmoid `h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1)`,
//! ζ = 1.1, γ = −0.1. Minimise `‖X·Wᵀ − X·W̃ᵀ‖²` (summed over outputs, averaged over rows, as BRECQ)
//! `+ λ·Σ(1 − |2h(V) − 1|^β)`, λ = 0.01, β annealed from 20 to 2 with a cosine after a 20 % warm start
//! without the regulariser (PyTorch's `adaround_loss.py`); V starts where h(V) is the fractional part
//! of W/s; Adam on V with a learning rate of 0.03 for 1,000 steps of 256 rows (fewer steps than the
//! paper's 10,000–20,000 at 1e-3, so the rate is higher: on the CNN's fc2 at 3 bits this gives +5.5 dB
//! of output SQNR over nearest where 300 steps at 1e-2 left the rounding undecided and lost 1.2 dB). At the end every h is rounded to 0 or 1.

use super::{quantize, Family, QuantError, Quantized, Spec};
use crate::kernels::gemm::{atb, xwt};
use rayon::prelude::*;

const ZETA: f32 = 1.1;
const GAMMA: f32 = -0.1;

#[derive(Debug, Clone, Copy)]
pub struct AdaRoundConfig {
    pub iters: usize,
    /// Rows of X per step (a random minibatch of the calibration rows).
    pub batch: usize,
    pub lambda: f32,
    pub beta: (f32, f32),
    pub warm_start: f32,
    pub lr: f32,
    pub seed: u64,
}

impl Default for AdaRoundConfig {
    fn default() -> Self {
        AdaRoundConfig {
            iters: 1000,
            batch: 256,
            lambda: 0.01,
            beta: (20.0, 2.0),
            warm_start: 0.2,
            lr: 3e-2,
            seed: 0,
        }
    }
}

/// What AdaRound did to one layer.
#[derive(Debug, Clone)]
pub struct AdaRounded {
    /// The quantized weights with learned rounding (the grid of `nearest`).
    pub quantized: Quantized,
    /// The same grid with round-to-nearest, for comparison.
    pub nearest: Quantized,
    /// Weights whose rounding direction differs from nearest.
    pub flipped: usize,
    /// (iteration, reconstruction loss, regulariser) every `iters / 50` steps.
    pub curve: Vec<(usize, f64, f64)>,
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

fn h_of(v: f32) -> f32 {
    (sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
}

/// `w` quantized by `spec`, with learned rounding when the spec asks for it (`round=adaround`) and the
/// layer's calibration inputs (`x`, `rows × k`) are given; otherwise (or without inputs) by plain
/// [`quantize`](super::quantize).
pub fn adaround_or_quantize(
    w: &[f32],
    shape: &[usize],
    spec: &Spec,
    inputs: Option<(&[f32], usize)>,
) -> Result<Quantized, QuantError> {
    match inputs.filter(|_| spec.adaround) {
        Some((x, k)) => Ok(adaround(w, shape, spec, x, k, &AdaRoundConfig::default())?.quantized),
        None => quantize(w, shape, spec),
    }
}

/// Learn the rounding of `w` (`[out, k]`, quantized by `spec`: intN or uintN, any granularity) on the
/// calibration rows `x` (`[rows, k]`).
pub fn adaround(
    w: &[f32],
    shape: &[usize],
    spec: &Spec,
    x: &[f32],
    k: usize,
    cfg: &AdaRoundConfig,
) -> Result<AdaRounded, QuantError> {
    let (qmin, qmax) = match spec.family {
        Family::Int(b) if !spec.vsq => {
            let m = ((1i32 << (b - 1)) - 1) as f32;
            (-m, m)
        }
        Family::Uint(b) => (0.0, ((1i32 << b) - 1) as f32),
        _ => {
            return Err(QuantError::Unsupported(format!(
                "AdaRound learns the rounding of intN/uintN grids, not '{spec}'"
            )))
        }
    };
    let grid = Spec {
        adaround: false,
        ..*spec
    };
    let nearest = quantize(w, shape, &grid)?;
    let lay = nearest.layout;
    if k == 0 || lay.cols != k || x.is_empty() || !x.len().is_multiple_of(k) {
        return Err(QuantError::Shape(format!(
            "AdaRound needs calibration rows with {} columns (got {} values for k = {k})",
            lay.cols,
            x.len()
        )));
    }
    let out = lay.rows;
    let rows = x.len() / k;
    let gpr = lay.groups_per_row();
    // per element: scale, zero point, floor(W/s)
    let scale_of = |i: usize| {
        let g = (i / lay.cols) * gpr + (i % lay.cols) / lay.group;
        let z = nearest.zero_points.get(g).copied().unwrap_or(0) as f32;
        (nearest.scales[g], z)
    };
    let n = w.len();
    let mut fl = vec![0f32; n];
    let mut s_el = vec![0f32; n];
    let mut z_el = vec![0f32; n];
    let mut v = vec![0f32; n];
    for i in 0..n {
        let (s, z) = scale_of(i);
        let t = w[i] / s;
        fl[i] = t.floor();
        s_el[i] = s;
        z_el[i] = z;
        let rest = (t - fl[i]).clamp(0.01, 0.99);
        v[i] = -((ZETA - GAMMA) / (rest - GAMMA) - 1.0).ln();
    }
    let w_tilde = |v: &[f32], hard: bool| -> Vec<f32> {
        (0..n)
            .into_par_iter()
            .map(|i| {
                let h = if hard {
                    (v[i] >= 0.0) as u8 as f32
                } else {
                    h_of(v[i])
                };
                let q = (fl[i] + h + z_el[i]).clamp(qmin, qmax);
                s_el[i] * (q - z_el[i])
            })
            .collect()
    };
    let (mut m1, mut m2) = (vec![0f32; n], vec![0f32; n]);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut curve = Vec::new();
    let batch = cfg.batch.clamp(1, rows);
    let warm = (cfg.warm_start * cfg.iters as f32) as usize;
    let mut xb = vec![0f32; batch * k];
    for it in 0..cfg.iters {
        // a random minibatch of rows
        for r in 0..batch {
            let u = super::uniform(cfg.seed ^ 0xada, (it * batch + r) as u64);
            let src = ((u * rows as f32) as usize).min(rows - 1);
            xb[r * k..(r + 1) * k].copy_from_slice(&x[src * k..(src + 1) * k]);
        }
        let wt = w_tilde(&v, false);
        let y = xwt(&xb, batch, k, w, out, None);
        let yt = xwt(&xb, batch, k, &wt, out, None);
        // loss = Σ_out (ŷ − y)² averaged over rows; dL/dŷ = 2(ŷ − y)/batch
        let mut e: Vec<f32> = yt.iter().zip(&y).map(|(a, b)| a - b).collect();
        let rec: f64 = e.iter().map(|&d| (d as f64).powi(2)).sum::<f64>() / batch as f64;
        e.iter_mut().for_each(|d| *d *= 2.0 / batch as f32);
        let gw = atb(&e, batch, out, &xb, k); // [out, k]
        let t_rel = if it < warm {
            None
        } else {
            Some((it - warm) as f32 / (cfg.iters - warm).max(1) as f32)
        };
        let beta = t_rel.map(|t| {
            cfg.beta.1 + 0.5 * (cfg.beta.0 - cfg.beta.1) * (1.0 + (std::f32::consts::PI * t).cos())
        });
        let step = (it + 1) as i32;
        let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
        let reg: f64 = v
            .par_iter_mut()
            .zip(m1.par_iter_mut().zip(m2.par_iter_mut()))
            .enumerate()
            .map(|(i, (vi, (a, b)))| {
                let sg = sigmoid(*vi);
                let raw = sg * (ZETA - GAMMA) + GAMMA;
                let inside = raw > 0.0 && raw < 1.0;
                let h = raw.clamp(0.0, 1.0);
                let q = fl[i] + h + z_el[i];
                let mut g_h = if q > qmin && q < qmax {
                    gw[i] * s_el[i]
                } else {
                    0.0
                };
                let mut r = 0.0f64;
                if let Some(beta) = beta {
                    let d = 2.0 * h - 1.0;
                    r = 1.0 - (d.abs() as f64).powf(beta as f64);
                    // d/dh (1 − |2h − 1|^β) = −2β|2h − 1|^(β−1)·sign(2h − 1)
                    g_h += cfg.lambda * (-2.0 * beta * d.abs().powf(beta - 1.0) * d.signum());
                }
                let g = if inside {
                    g_h * sg * (1.0 - sg) * (ZETA - GAMMA)
                } else {
                    0.0
                };
                *a = b1 * *a + (1.0 - b1) * g;
                *b = b2 * *b + (1.0 - b2) * g * g;
                *vi -= cfg.lr * (*a / c1) / ((*b / c2).sqrt() + eps);
                r
            })
            .sum();
        if it % (cfg.iters / 50).max(1) == 0 || it + 1 == cfg.iters {
            curve.push((it, rec, reg * cfg.lambda as f64));
        }
    }
    let hard = w_tilde(&v, true);
    let flipped = hard
        .iter()
        .zip(&nearest.dequant)
        .filter(|(a, b)| a != b)
        .count();
    let mut quantized = nearest.clone();
    for i in 0..n {
        let q = (fl[i] + (v[i] >= 0.0) as u8 as f32 + z_el[i]).clamp(qmin, qmax);
        quantized.codes[i] = q as i16;
    }
    quantized.metrics = super::Metrics::compute(w, &hard, 0);
    quantized.metrics.bits_per_weight = nearest.metrics.bits_per_weight;
    quantized.metrics.bytes = nearest.metrics.bytes;
    quantized.dequant = hard;
    Ok(AdaRounded {
        quantized,
        nearest,
        flipped,
        curve,
    })
}
