//! Backward passes for the sample-model engine: the forward pass is the one in `mod.rs`, run once
//! with a tape that keeps every op's input; this file walks the ops in reverse and returns the
//! gradient of the loss with respect to every weight, bias and (optionally) the input.
//!
//! - linear `Y = X·Wᵀ + b`: `∂W = ∂Yᵀ·X`, `∂b = Σ_rows ∂Y`, `∂X = ∂Y·W`;
//! - conv2d, as a linear layer on im2col patches: the same three products on `[n·oh·ow, cin·kh·kw]`,
//!   and `∂X` is the patch gradient folded back with col2im (the adjoint of im2col);
//! - ReLU `∂x = ∂y·1[x > 0]`; exact GELU `∂x = ∂y·(Φ(x) + x·φ(x))`;
//! - max pooling routes each window's gradient to its first maximum (as PyTorch's `max_pool2d`
//!   indices); average pooling spreads it evenly; flatten is the identity;
//! - softmax `∂x = y ⊙ (∂y − ⟨∂y, y⟩)`;
//! - a layer whose input is fake-quantized (activation quantization) passes the input gradient
//!   through the clipped straight-through estimator: where the input was clamped the gradient is 0
//!   (Bengio et al. 2013, arXiv 1308.3432; PyTorch's fake-quantize cachemask, quantization.md §10).
//!
//! Products use the same sgemm kernel as the forward pass (`gemm.rs`), split over rows, so every
//! output element is summed in one fixed order: results do not depend on the number of threads.
//! `tests` checks every op against central finite differences.

use super::{erf, geom, next_shape, Network, Op};
use crate::kernels::gemm::{ab, atb};
use crate::quant::fixed::FixedQuant;
use rayon::prelude::*;
use std::collections::HashMap;

/// A forward pass that kept what the backward pass needs.
pub struct Tape {
    /// Examples in the batch.
    pub n: usize,
    /// Each op's input, in op order (a weighted layer's before its activation quantizer).
    inputs: Vec<Vec<f32>>,
    /// The network's output (logits), `[n, outputs]`.
    pub output: Vec<f32>,
}

/// Gradients of a scalar loss, one entry per weighted layer in order.
#[derive(Debug, Clone)]
pub struct Gradients {
    /// `∂L/∂W`, each `[out, k]` row-major as [`super::Weighted::weight`].
    pub weight: Vec<Vec<f32>>,
    pub bias: Vec<Vec<f32>>,
    /// `∂L/∂x` for the batch's input, when asked for.
    pub input: Option<Vec<f32>>,
}

impl Network {
    /// The forward pass keeping every op's input, with the inputs of the layers named in `act`
    /// fake-quantized as [`Network::forward_with`] does.
    pub fn forward_taped(
        &self,
        x: &[f32],
        n: usize,
        act: Option<&HashMap<String, FixedQuant>>,
    ) -> Tape {
        let mut inputs = Vec::with_capacity(self.ops.len());
        let output = self.forward_impl(x, n, act, &mut |_| {}, Some(&mut inputs));
        Tape { n, inputs, output }
    }

    /// Back-propagate `d_out = ∂L/∂output` through the taped pass. `act` must be the quantizers the
    /// forward pass used. `want_input`: also return `∂L/∂x`.
    pub fn backward(
        &self,
        tape: &Tape,
        act: Option<&HashMap<String, FixedQuant>>,
        d_out: &[f32],
        want_input: bool,
    ) -> Gradients {
        assert_eq!(d_out.len(), tape.output.len(), "gradient of the output");
        let n = tape.n;
        // the shape entering each op, and the final one
        let mut shapes = vec![self.input_shape.clone()];
        for op in &self.ops {
            let s = next_shape(op, shapes.last().expect("a shape"))
                .expect("shapes were checked when the network was built");
            shapes.push(s);
        }
        let layers = self.layers().count();
        let mut dw = vec![Vec::new(); layers];
        let mut db = vec![Vec::new(); layers];
        let mut li = layers;
        let mut g = d_out.to_vec();
        for (i, op) in self.ops.iter().enumerate().rev() {
            let a = &tape.inputs[i];
            let (shape, next) = (&shapes[i], &shapes[i + 1]);
            let first = i == 0;
            g = match op {
                Op::Layer(w) => {
                    li -= 1;
                    let quant = act.and_then(|m| m.get(&w.name));
                    let aq: std::borrow::Cow<[f32]> = match quant {
                        Some(q) => {
                            let mut v = a.clone();
                            q.apply(&mut v);
                            v.into()
                        }
                        None => a.as_slice().into(),
                    };
                    // rows of the product: the input itself, or its unfolded patches; ∂Y in the same
                    // row layout ([rows, out]; a convolution's output is NCHW, so transpose it)
                    let rows = w.rows(&aq, n, shape);
                    let nrows = rows.len() / w.k.max(1);
                    let gy = match w.conv {
                        None => std::mem::take(&mut g),
                        Some(_) => nchw_to_rows(&g, n, w.out, next[1] * next[2]),
                    };
                    dw[li] = atb(&gy, nrows, w.out, &rows, w.k);
                    db[li] = column_sums(&gy, w.out);
                    if first && !want_input {
                        Vec::new()
                    } else {
                        let dp = ab(&gy, nrows, w.out, &w.weight, w.k);
                        let mut dx = match w.conv {
                            None => dp,
                            Some((kh, kw, stride, padding)) => {
                                let gm = geom(w, shape, kh, kw, stride, padding);
                                let per: usize = shape.iter().product();
                                let patch_rows = next[1] * next[2] * w.k;
                                let mut dx = vec![0f32; n * per];
                                dx.par_chunks_mut(per)
                                    .zip(dp.par_chunks(patch_rows))
                                    .for_each(|(d, p)| d.copy_from_slice(&gm.col2im(p)));
                                dx
                            }
                        };
                        if let Some(q) = quant {
                            dx.par_iter_mut().zip(a.par_iter()).for_each(|(d, &v)| {
                                if !q.passes(v) {
                                    *d = 0.0
                                }
                            });
                        }
                        dx
                    }
                }
                Op::Relu => {
                    g.par_iter_mut().zip(a.par_iter()).for_each(|(d, &v)| {
                        if v <= 0.0 {
                            *d = 0.0
                        }
                    });
                    g
                }
                Op::Gelu => {
                    // d/dx x·Φ(x) = Φ(x) + x·φ(x)
                    g.par_iter_mut().zip(a.par_iter()).for_each(|(d, &v)| {
                        let x = v as f64;
                        let cdf = 0.5 * (1.0 + erf(x / 2f64.sqrt()));
                        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                        *d = (*d as f64 * (cdf + x * pdf)) as f32;
                    });
                    g
                }
                Op::MaxPool { k, s } | Op::AvgPool { k, s } => {
                    let max = matches!(op, Op::MaxPool { .. });
                    let (h, wd) = (shape[1], shape[2]);
                    let (oh, ow) = (next[1], next[2]);
                    let mut dx = vec![0f32; a.len()];
                    let inv = 1.0 / (k * k) as f32;
                    dx.par_chunks_mut(h * wd)
                        .zip(a.par_chunks(h * wd))
                        .zip(g.par_chunks(oh * ow))
                        .for_each(|((d, xi), go)| {
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let gv = go[oy * ow + ox];
                                    if max {
                                        // the first maximum, scanning as the forward pass does
                                        let mut best = (f32::NEG_INFINITY, usize::MAX);
                                        for ky in 0..*k {
                                            for kx in 0..*k {
                                                let j = (oy * s + ky) * wd + ox * s + kx;
                                                if xi[j] > best.0 || best.1 == usize::MAX {
                                                    best = (xi[j], j);
                                                }
                                            }
                                        }
                                        d[best.1] += gv;
                                    } else {
                                        for ky in 0..*k {
                                            for kx in 0..*k {
                                                d[(oy * s + ky) * wd + ox * s + kx] += gv * inv;
                                            }
                                        }
                                    }
                                }
                            }
                        });
                    dx
                }
                Op::Flatten => g,
                Op::Softmax => {
                    let per: usize = shape.iter().product();
                    g.par_chunks_mut(per)
                        .zip(a.par_chunks(per))
                        .for_each(|(d, x)| {
                            let m = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                            let z: f32 = x.iter().map(|&v| (v - m).exp()).sum();
                            let y: Vec<f32> = x.iter().map(|&v| (v - m).exp() / z).collect();
                            let dot: f32 = d.iter().zip(&y).map(|(a, b)| a * b).sum();
                            d.iter_mut()
                                .zip(&y)
                                .for_each(|(dv, yv)| *dv = yv * (*dv - dot));
                        });
                    g
                }
            };
        }
        Gradients {
            weight: dw,
            bias: db,
            input: want_input.then_some(g),
        }
    }
}

/// `[n, c, hw]` (NCHW) to `[n·hw, c]`: one row per output position, as im2col's patches.
fn nchw_to_rows(g: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut t = vec![0f32; n * hw * c];
    t.par_chunks_mut(hw * c)
        .zip(g.par_chunks(c * hw))
        .for_each(|(ti, gi)| {
            for ch in 0..c {
                for p in 0..hw {
                    ti[p * c + ch] = gi[ch * hw + p];
                }
            }
        });
    debug_assert_eq!(t.len(), n * c * hw);
    t
}

/// Column sums of a row-major `[rows, cols]` matrix, each in row order (f64 accumulation).
fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let mut acc = vec![0f64; cols];
    for row in m.chunks(cols) {
        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// Mean softmax cross-entropy of `logits` (`[n, k]`) against `labels`, the number of correct argmax
/// predictions, and the gradient `∂L/∂logits = (softmax − onehot)/n`.
pub fn cross_entropy(logits: &[f32], labels: &[usize]) -> (f64, usize, Vec<f32>) {
    let n = labels.len();
    let k = logits.len() / n.max(1);
    let mut grad = vec![0f32; logits.len()];
    let mut loss = 0f64;
    let mut correct = 0;
    for ((row, d), &label) in logits.chunks(k).zip(grad.chunks_mut(k)).zip(labels) {
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let z: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
        loss += m as f64 + z.ln() - row[label] as f64;
        let arg = row
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0;
        correct += (arg == label) as usize;
        for (j, (dv, &v)) in d.iter_mut().zip(row).enumerate() {
            let p = ((v - m) as f64).exp() / z;
            *dv = ((p - (j == label) as u8 as f64) / n as f64) as f32;
        }
    }
    (loss / n.max(1) as f64, correct, grad)
}

#[cfg(test)]
mod tests {
    use super::super::Weighted;
    use super::*;

    fn rand(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (crate::quant::uniform(seed, i as u64) * 2.0 - 1.0) * scale)
            .collect()
    }

    fn layer(name: &str, shape: Vec<usize>, conv: Option<(usize, usize, usize, usize)>) -> Op {
        let out = shape[0];
        let k: usize = shape[1..].iter().product();
        let seed = name.len() as u64 * 31 + out as u64;
        Op::Layer(Weighted {
            name: name.into(),
            weight: rand(seed, out * k, 0.6),
            bias: rand(seed + 1, out, 0.2),
            out,
            k,
            shape,
            conv,
        })
    }

    /// Every op in one network: conv (stride 2, padding 1) → ReLU → max pool → conv → GELU →
    /// avg pool (overlapping windows, stride 1) → flatten → linear → softmax.
    fn every_op() -> Network {
        let ops = vec![
            layer("c1", vec![4, 2, 3, 3], Some((3, 3, 2, 1))),
            Op::Relu,
            Op::MaxPool { k: 2, s: 2 },
            layer("c2", vec![3, 4, 2, 2], Some((2, 2, 1, 1))),
            Op::Gelu,
            Op::AvgPool { k: 2, s: 1 },
            Op::Flatten,
            layer("fc", vec![5, 3 * 2 * 2], None),
            Op::Softmax,
        ];
        let net = Network {
            ops,
            input_shape: vec![2, 9, 9],
            input: 2 * 81,
        };
        assert_eq!(net.check_shapes().unwrap(), vec![5]);
        net
    }

    /// A loss that weighs every output differently, so every path matters.
    fn loss(net: &Network, x: &[f32], n: usize, act: Option<&HashMap<String, FixedQuant>>) -> f64 {
        let y = net.forward_with(x, n, act, &mut |_| {});
        y.iter()
            .enumerate()
            .map(|(i, &v)| v as f64 * (1.0 + (i % 7) as f64 * 0.3))
            .sum()
    }

    fn d_loss(len: usize) -> Vec<f32> {
        (0..len).map(|i| 1.0 + (i % 7) as f32 * 0.3).collect()
    }

    /// Central difference of `loss` in one coordinate, with a step small against the kinks (ReLU,
    /// max pooling) of random inputs and large against f32 rounding.
    fn numeric(f: &mut dyn FnMut(f32) -> f64, x0: f32) -> f64 {
        let h = 1e-2f32;
        (f(x0 + h) - f(x0 - h)) / (2.0 * h as f64)
    }

    fn close(got: f32, want: f64, what: &str) {
        let tol = 2e-3 + 2e-2 * want.abs();
        assert!(
            (got as f64 - want).abs() <= tol,
            "{what}: backward {got} vs finite difference {want}"
        );
    }

    #[test]
    fn every_op_matches_finite_differences() {
        let mut net = every_op();
        let n = 3;
        let x = rand(99, n * net.input, 1.0);
        let tape = net.forward_taped(&x, n, None);
        let g = net.backward(&tape, None, &d_loss(tape.output.len()), true);
        // weights and biases of every layer, a spread of coordinates each
        for li in 0..3 {
            let len = net.layers().nth(li).unwrap().weight.len();
            for j in (0..len).step_by(len / 9 + 1) {
                let w0 = net.layers().nth(li).unwrap().weight[j];
                let want = numeric(
                    &mut |v| {
                        net.layers_mut().nth(li).unwrap().weight[j] = v;
                        let l = loss(&net, &x, n, None);
                        net.layers_mut().nth(li).unwrap().weight[j] = w0;
                        l
                    },
                    w0,
                );
                close(g.weight[li][j], want, &format!("layer {li} weight {j}"));
            }
            let blen = net.layers().nth(li).unwrap().bias.len();
            for j in 0..blen {
                let b0 = net.layers().nth(li).unwrap().bias[j];
                let want = numeric(
                    &mut |v| {
                        net.layers_mut().nth(li).unwrap().bias[j] = v;
                        let l = loss(&net, &x, n, None);
                        net.layers_mut().nth(li).unwrap().bias[j] = b0;
                        l
                    },
                    b0,
                );
                close(g.bias[li][j], want, &format!("layer {li} bias {j}"));
            }
        }
        // the input (through every op, first conv's col2im included)
        let dx = g.input.unwrap();
        for j in (0..x.len()).step_by(7) {
            let want = numeric(
                &mut |v| {
                    let mut x2 = x.clone();
                    x2[j] = v;
                    loss(&net, &x2, n, None)
                },
                x[j],
            );
            close(dx[j], want, &format!("input {j}"));
        }
    }

    #[test]
    fn cross_entropy_matches_finite_differences() {
        let logits = rand(5, 4 * 6, 3.0);
        let labels = [0usize, 5, 2, 2];
        let (l, _, g) = cross_entropy(&logits, &labels);
        // log-sum-exp by hand for the first row
        let row = &logits[..6];
        let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        let first = lse - row[0] as f64;
        assert!(l > 0.0 && first > 0.0);
        for j in 0..logits.len() {
            let want = numeric(
                &mut |v| {
                    let mut z = logits.clone();
                    z[j] = v;
                    cross_entropy(&z, &labels).0
                },
                logits[j],
            );
            close(g[j], want, &format!("logit {j}"));
        }
    }

    #[test]
    fn a_quantized_input_passes_the_gradient_only_inside_its_range() {
        // one linear layer whose input is fake-quantized to int4 over [-0.5, 0.5]
        let net = Network {
            ops: vec![layer("fc", vec![3, 8], None)],
            input_shape: vec![8],
            input: 8,
        };
        let spec = crate::quant::Spec::parse("int4").unwrap();
        let act: HashMap<String, FixedQuant> =
            [("fc".to_string(), FixedQuant::new(&spec, -0.5, 0.5).unwrap())].into();
        let x = vec![0.1f32, -0.2, 0.45, 0.9, -0.9, 0.0, 0.3, -0.53];
        let tape = net.forward_taped(&x, 1, Some(&act));
        let g = net.backward(&tape, Some(&act), &[1.0, -2.0, 0.5], true);
        let dx = g.input.unwrap();
        let w = &net.layers().next().unwrap().weight;
        for (j, &v) in x.iter().enumerate() {
            let inside = v.abs() <= 0.5 + 0.5 / 7.0 / 2.0;
            let full = w[j] - 2.0 * w[8 + j] + 0.5 * w[16 + j];
            if inside {
                assert!((dx[j] - full).abs() < 1e-6, "input {j} = {v}");
            } else {
                assert_eq!(dx[j], 0.0, "input {j} = {v} is clamped");
            }
        }
        // the weight gradient sees the quantized input, as the forward pass did
        let mut xq = x.clone();
        act["fc"].apply(&mut xq);
        assert_eq!(g.weight[0][..8], xq[..]);
    }
}
