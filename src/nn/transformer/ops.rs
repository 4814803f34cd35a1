//! The transformer's kernels on row-major f32 matrices (one row per token): the norms, RoPE,
//! attention and the activations (linear layers are `kernels::gemm::xwt`). Each is written to match transformers' eager PyTorch
//! code in f32.

use super::config::{Activation, Rope};
use crate::kernels::gemm::Out;
use rayon::prelude::*;

/// RMSNorm over each row of `d` values: `x / √(mean(x²) + ε) · w`, or `· (1 + w)` for Gemma.
pub fn rms_norm(x: &mut [f32], d: usize, w: &[f32], eps: f64, one_plus: bool) {
    x.par_chunks_mut(d).for_each(|row| {
        let ms = row.iter().map(|&v| v * v).sum::<f32>() / d as f32;
        let r = 1.0 / (ms + eps as f32).sqrt();
        for (v, &g) in row.iter_mut().zip(w) {
            let g = if one_plus { 1.0 + g } else { g };
            *v = *v * r * g;
        }
    });
}

/// LayerNorm over each row: `(x − mean) / √(var + ε) · w + b` (biased variance, as PyTorch).
pub fn layer_norm(x: &mut [f32], d: usize, w: &[f32], b: &[f32], eps: f64) {
    x.par_chunks_mut(d).for_each(|row| {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let r = 1.0 / (var + eps as f32).sqrt();
        for ((v, &g), &bb) in row.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * r * g + bb;
        }
    });
}

/// cos and sin of every position × frequency: `[positions, d/2]` each. The angle is the f32 product of
/// the f32 frequency and the position, as transformers computes it.
pub fn rope_table(rope: &Rope, d: usize, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let inv: Vec<f32> = rope.inv_freq(d).into_iter().map(|f| f as f32).collect();
    let mut cos = Vec::with_capacity(positions * inv.len());
    let mut sin = Vec::with_capacity(positions * inv.len());
    for p in 0..positions {
        for &f in &inv {
            let a = (f * p as f32) as f64;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (cos, sin)
}

/// Rotate each head of `d` values in place: pairs `(i, i + d/2)` (transformers' `rotate_half`), the
/// token at `pos[r]` of the table.
pub fn apply_rope(x: &mut [f32], width: usize, d: usize, pos: &[usize], cos: &[f32], sin: &[f32]) {
    let half = d / 2;
    x.par_chunks_mut(width)
        .zip(pos.par_iter())
        .for_each(|(row, &p)| {
            let c = &cos[p * half..(p + 1) * half];
            let s = &sin[p * half..(p + 1) * half];
            for head in row.chunks_mut(d) {
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let (x1, x2) = (a[i], b[i]);
                    a[i] = x1 * c[i] - x2 * s[i];
                    b[i] = x2 * c[i] + x1 * s[i];
                }
            }
        });
}

/// How attention sees other positions.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Only earlier positions (decoders).
    pub causal: bool,
    /// Only the last `w` positions, itself included.
    pub window: Option<usize>,
    /// `c·tanh(s/c)` on the scores.
    pub softcap: Option<f32>,
}

/// Scaled dot-product attention for each sequence (`lens`, consecutive rows) and head; query head `h`
/// reads key/value head `h / (heads / kv_heads)`. Returns `[rows, heads·head_dim]`.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], lens: &[usize], a: AttnShape) -> Vec<f32> {
    let d = a.head_dim;
    let (qw, kw) = (a.heads * d, a.kv_heads * d);
    let rows: usize = lens.iter().sum();
    assert_eq!(q.len(), rows * qw);
    assert_eq!(k.len(), rows * kw);
    let mut starts = Vec::with_capacity(lens.len());
    let mut s = 0;
    for &l in lens {
        starts.push(s);
        s += l;
    }
    let group = a.heads / a.kv_heads;
    let mut y = vec![0f32; rows * qw];
    let dst = Out(y.as_mut_ptr());
    let tasks: Vec<(usize, usize)> = (0..lens.len())
        .flat_map(|s| (0..a.heads).map(move |h| (s, h)))
        .collect();
    tasks.into_par_iter().for_each(|(si, h)| {
        let (start, len) = (starts[si], lens[si]);
        let kh = h / group;
        // this head's keys and values, contiguous
        let gather = |m: &[f32]| -> Vec<f32> {
            (0..len)
                .flat_map(|t| m[(start + t) * kw + kh * d..][..d].iter().copied())
                .collect()
        };
        let (keys, vals) = (gather(k), gather(v));
        let qh: Vec<f32> = (0..len)
            .flat_map(|t| q[(start + t) * qw + h * d..][..d].iter().copied())
            .collect();
        // scores S = scale · Q·Kᵀ (len × len), one sgemm
        let mut sc = vec![0f32; len * len];
        // SAFETY: Q is len×d and K is read transposed (len×d, strides 1 and d); S is len×len.
        unsafe {
            matrixmultiply::sgemm(
                len,
                d,
                len,
                a.scale,
                qh.as_ptr(),
                d as isize,
                1,
                keys.as_ptr(),
                1,
                d as isize,
                0.0,
                sc.as_mut_ptr(),
                len as isize,
                1,
            );
        }
        // each row: softcap, the mask, softmax; masked positions are 0
        for (i, row) in sc.chunks_mut(len).enumerate() {
            let hi = if a.causal { i + 1 } else { len };
            let lo = match a.window {
                Some(w) if a.causal => (i + 1).saturating_sub(w),
                _ => 0,
            };
            let live = &mut row[lo..hi];
            if let Some(c) = a.softcap {
                live.iter_mut().for_each(|v| *v = c * (*v / c).tanh());
            }
            let max = live.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0f32;
            for v in live.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            live.iter_mut().for_each(|v| *v /= sum);
            row[..lo].iter_mut().for_each(|v| *v = 0.0);
            row[hi..].iter_mut().for_each(|v| *v = 0.0);
        }
        // O = P·V straight into this head's columns of the sequence's rows
        // SAFETY: task (si, h) writes only head h's d columns of rows start..start+len (row stride qw);
        // beta is 0, so the output is not read.
        unsafe {
            matrixmultiply::sgemm(
                len,
                len,
                d,
                1.0,
                sc.as_ptr(),
                len as isize,
                1,
                vals.as_ptr(),
                d as isize,
                1,
                0.0,
                dst.at(start * qw + h * d),
                qw as isize,
                1,
            );
        }
    });
    y
}

/// An activation in place.
pub fn activate(x: &mut [f32], act: Activation) {
    const CHUNK: usize = 1 << 14;
    x.par_chunks_mut(CHUNK).for_each(|c| match act {
        Activation::Silu => c.iter_mut().for_each(|v| *v /= 1.0 + (-*v).exp()),
        Activation::Gelu => c.iter_mut().for_each(|v| {
            let x = *v as f64;
            *v = (0.5 * x * (1.0 + crate::nn::erf(x / std::f64::consts::SQRT_2))) as f32
        }),
        Activation::GeluTanh => c.iter_mut().for_each(|v| {
            let x = *v;
            let inner = (2.0f32 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            *v = 0.5 * x * (1.0 + inner.tanh())
        }),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_of_one_position_returns_its_value() {
        let a = AttnShape {
            heads: 2,
            kv_heads: 1,
            head_dim: 2,
            scale: 1.0,
            causal: true,
            window: None,
            softcap: None,
        };
        let q = [1.0, 2.0, 3.0, 4.0];
        let k = [0.5, 0.5];
        let v = [7.0, -1.0];
        assert_eq!(attention(&q, &k, &v, &[1], a), [7.0, -1.0, 7.0, -1.0]);
    }

    #[test]
    fn a_window_of_one_sees_only_itself() {
        let a = AttnShape {
            heads: 1,
            kv_heads: 1,
            head_dim: 1,
            scale: 1.0,
            causal: true,
            window: Some(1),
            softcap: None,
        };
        let v = [1.0, 2.0, 3.0];
        let y = attention(&[1.0; 3], &[1.0; 3], &v, &[3], a);
        assert_eq!(y, v);
    }
}
