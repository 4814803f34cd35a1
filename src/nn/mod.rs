//! A small inference engine for the bundled sample models: the network is described in the model's
//! safetensors metadata (`architecture`: a JSON list of ops), so a sample model is one self-describing
//! file. It runs with the weights as stored or as the caller transforms them ([`Weights`]: a plan's
//! fake quantization, say), with the inputs of its layers optionally fake-quantized too (activation
//! quantization, simulated in f32), and it can show every layer's input and output to an observer
//! (calibration). It knows nothing of plans or calibrations: callers pass what it needs.

pub mod backward;
mod data;
pub use crate::kernels::gemm;
pub mod text;
pub mod train;
pub mod transformer;

pub use data::{
    calibration_set, dataset_bytes, held_out, rows_from_csv, spread, training_set, Dataset,
    BUNDLED_DIGITS, BUNDLED_MNIST, SAMPLE_MLP,
};
#[cfg(test)]
pub(crate) use data::{sample_cnn, sample_mlp};

use crate::kernels::gemm::{xwt, ConvGeom};
use crate::model::{Model, TensorInfo};
use crate::quant::fixed::FixedQuant;
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    #[error("not a runnable sample model: {0}")]
    NotRunnable(String),
    #[error("data: {0}")]
    Data(String),
    #[error("cancelled")]
    Cancelled,
    #[error("quantizing '{0}': {1}")]
    Quant(String, crate::quant::QuantError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum OpSpec {
    Linear {
        name: String,
    },
    Conv2d {
        name: String,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: usize,
    },
    Relu,
    Gelu,
    MaxPool2d {
        kernel: usize,
        stride: Option<usize>,
    },
    AvgPool2d {
        kernel: usize,
        stride: Option<usize>,
    },
    Flatten,
    Softmax,
}

fn one() -> usize {
    1
}

/// A layer with weights: `Y = X·Wᵀ + b` on rows of X (a linear layer's inputs, or a convolution's
/// unfolded patches).
#[derive(Debug, Clone)]
pub struct Weighted {
    pub name: String,
    /// `[out, k]` row-major (a conv weight `[O, I, kh, kw]` flattened to `[O, I·kh·kw]`).
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub out: usize,
    pub k: usize,
    /// The weight's shape as stored.
    pub shape: Vec<usize>,
    /// `Some` for a convolution: (kh, kw, stride, padding).
    pub conv: Option<(usize, usize, usize, usize)>,
}

#[derive(Debug, Clone)]
enum Op {
    Layer(Weighted),
    Relu,
    Gelu,
    MaxPool { k: usize, s: usize },
    AvgPool { k: usize, s: usize },
    Flatten,
    Softmax,
}

/// One weighted layer's input and output during a forward pass, for observers.
pub struct LayerIo<'a> {
    pub name: &'a str,
    /// Examples in the batch.
    pub n: usize,
    /// The input as the layer received it (after any activation quantization), `n × input_shape`.
    pub input: &'a [f32],
    pub input_shape: &'a [usize],
    /// The layer's output (before the next op), `n × output_shape`.
    pub output: &'a [f32],
    pub output_shape: &'a [usize],
    /// The layer itself (its weights as the network uses them).
    pub layer: &'a Weighted,
}

/// What a network computes with in place of a stored tensor: the caller's transform of it (a plan's
/// fake quantization, say). A closure `|tensor, stored| -> Result<values, QuantError>` is one.
pub trait Weights {
    /// The values to use for `tensor`, whose stored values are `stored` (same length and layout).
    fn weights(
        &self,
        tensor: &TensorInfo,
        stored: Vec<f32>,
    ) -> Result<Vec<f32>, crate::quant::QuantError>;
}

impl<F> Weights for F
where
    F: Fn(&TensorInfo, Vec<f32>) -> Result<Vec<f32>, crate::quant::QuantError>,
{
    fn weights(
        &self,
        tensor: &TensorInfo,
        stored: Vec<f32>,
    ) -> Result<Vec<f32>, crate::quant::QuantError> {
        self(tensor, stored)
    }
}

/// A feed-forward network read from a sample model.
#[derive(Debug, Clone)]
pub struct Network {
    ops: Vec<Op>,
    /// The shape of one input example (e.g. `[64]` or `[1, 28, 28]`).
    pub input_shape: Vec<usize>,
    /// Its number of values.
    pub input: usize,
}

impl Network {
    /// Build from `model`, with each stored tensor turned by `weights` (if any) into the values the
    /// network computes with (a plan's fake quantization, say); without, the weights as stored.
    pub fn from_model(model: &Model, weights: Option<&dyn Weights>) -> Result<Network, NnError> {
        let meta = model
            .metadata()
            .ok_or_else(|| NnError::NotRunnable("no metadata".into()))?;
        let arch = meta
            .get("architecture")
            .ok_or_else(|| NnError::NotRunnable("no 'architecture' in the metadata".into()))?;
        let specs: Vec<OpSpec> = serde_json::from_str(arch)
            .map_err(|e| NnError::NotRunnable(format!("bad 'architecture': {e}")))?;
        let declared: Option<Vec<usize>> = match meta.get("input_shape") {
            Some(s) => Some(
                serde_json::from_str(s)
                    .map_err(|e| NnError::NotRunnable(format!("bad 'input_shape' '{s}': {e}")))?,
            ),
            None => None,
        };
        let tensor = |name: &str| -> Result<(Vec<f32>, Vec<usize>), NnError> {
            let t = model
                .find(name)
                .map(|i| &model.tensors[i])
                .ok_or_else(|| NnError::NotRunnable(format!("tensor '{name}' is missing")))?;
            let mut x = model.read_f32(t)?;
            if let Some(w) = weights {
                x = w
                    .weights(t, x)
                    .map_err(|e| NnError::Quant(t.name.clone(), e))?;
            }
            Ok((x, t.shape.clone()))
        };
        let mut ops = Vec::new();
        for s in specs {
            ops.push(match s {
                OpSpec::Linear { name } => {
                    let (weight, shape) = tensor(&format!("{name}.weight"))?;
                    let [out, k] = shape[..] else {
                        return Err(NnError::NotRunnable(format!("{name}.weight is not 2-D")));
                    };
                    let bias = bias_of(&tensor, &name, out)?;
                    Op::Layer(Weighted {
                        name,
                        weight,
                        bias,
                        out,
                        k,
                        shape,
                        conv: None,
                    })
                }
                OpSpec::Conv2d {
                    name,
                    stride,
                    padding,
                } => {
                    let (weight, shape) = tensor(&format!("{name}.weight"))?;
                    let [out, cin, kh, kw] = shape[..] else {
                        return Err(NnError::NotRunnable(format!(
                            "{name}.weight is not 4-D [out, in, kh, kw]"
                        )));
                    };
                    if stride == 0 || kh == 0 || kw == 0 {
                        return Err(NnError::NotRunnable(format!(
                            "{name}: stride and kernel must be positive"
                        )));
                    }
                    let bias = bias_of(&tensor, &name, out)?;
                    Op::Layer(Weighted {
                        name,
                        weight,
                        bias,
                        out,
                        k: cin * kh * kw,
                        shape,
                        conv: Some((kh, kw, stride, padding)),
                    })
                }
                OpSpec::Relu => Op::Relu,
                OpSpec::Gelu => Op::Gelu,
                OpSpec::MaxPool2d { kernel, stride } | OpSpec::AvgPool2d { kernel, stride }
                    if kernel == 0 || stride == Some(0) =>
                {
                    return Err(NnError::NotRunnable(
                        "pooling needs a positive kernel and stride".into(),
                    ))
                }
                OpSpec::MaxPool2d { kernel, stride } => Op::MaxPool {
                    k: kernel,
                    s: stride.unwrap_or(kernel),
                },
                OpSpec::AvgPool2d { kernel, stride } => Op::AvgPool {
                    k: kernel,
                    s: stride.unwrap_or(kernel),
                },
                OpSpec::Flatten => Op::Flatten,
                OpSpec::Softmax => Op::Softmax,
            });
        }
        let input_shape = match (
            declared,
            ops.iter().find_map(|o| match o {
                Op::Layer(w) => Some(w),
                _ => None,
            }),
        ) {
            (Some(s), _) => s,
            (None, Some(w)) if w.conv.is_none() => vec![w.k],
            (None, Some(_)) => {
                return Err(NnError::NotRunnable(
                    "a network that starts with a convolution needs 'input_shape'".into(),
                ))
            }
            (None, None) => return Err(NnError::NotRunnable("no layers".into())),
        };
        let net = Network {
            input: input_shape.iter().product(),
            input_shape,
            ops,
        };
        net.check_shapes()?;
        Ok(net)
    }

    /// Walk the ops on shapes alone, so a mismatched architecture is an error here, not a panic later.
    fn check_shapes(&self) -> Result<Vec<usize>, NnError> {
        let mut shape = self.input_shape.clone();
        for op in &self.ops {
            shape = next_shape(op, &shape)?;
        }
        Ok(shape)
    }

    /// The weighted layers, in order.
    pub fn layers(&self) -> impl Iterator<Item = &Weighted> {
        self.ops.iter().filter_map(|o| match o {
            Op::Layer(w) => Some(w),
            _ => None,
        })
    }

    /// The weighted layers, mutable (training writes the weights it computes each step).
    pub(crate) fn layers_mut(&mut self) -> impl Iterator<Item = &mut Weighted> {
        self.ops.iter_mut().filter_map(|o| match o {
            Op::Layer(w) => Some(w),
            _ => None,
        })
    }

    pub fn layer_names(&self) -> Vec<String> {
        self.layers().map(|w| w.name.clone()).collect()
    }

    /// Logits (or whatever the last op gives) for `n` inputs (row-major `[n, input]`).
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        self.forward_with(x, n, None, &mut |_| {})
    }

    /// The forward pass with the inputs of the layers named in `act` fake-quantized by their fixed-range
    /// quantizer, and every weighted layer's input and output shown to `observe`.
    pub fn forward_with(
        &self,
        x: &[f32],
        n: usize,
        act: Option<&HashMap<String, FixedQuant>>,
        observe: &mut dyn FnMut(&LayerIo),
    ) -> Vec<f32> {
        self.forward_impl(x, n, act, observe, None)
    }

    /// The one forward pass. With `tape`, every op's input is kept (a layer's before its activation
    /// quantizer), in op order, for the backward pass (`backward.rs`).
    fn forward_impl(
        &self,
        x: &[f32],
        n: usize,
        act: Option<&HashMap<String, FixedQuant>>,
        observe: &mut dyn FnMut(&LayerIo),
        mut tape: Option<&mut Vec<Vec<f32>>>,
    ) -> Vec<f32> {
        assert_eq!(x.len(), n * self.input, "input size");
        let mut a = x.to_vec();
        let mut shape = self.input_shape.clone();
        for op in &self.ops {
            let next =
                next_shape(op, &shape).expect("shapes were checked when the network was built");
            let per_in: usize = shape.iter().product();
            let per_out: usize = next.iter().product();
            if let Some(t) = tape.as_deref_mut() {
                t.push(a.clone());
            }
            a = match op {
                Op::Layer(w) => {
                    if let Some(q) = act.and_then(|m| m.get(&w.name)) {
                        q.apply(&mut a);
                    }
                    let y = match w.conv {
                        None => xwt(&a, n, w.k, &w.weight, w.out, Some(&w.bias)),
                        Some(_) => conv_forward(w, &a, n, &shape, &next),
                    };
                    observe(&LayerIo {
                        name: &w.name,
                        n,
                        input: &a,
                        input_shape: &shape,
                        output: &y,
                        output_shape: &next,
                        layer: w,
                    });
                    y
                }
                Op::Relu => {
                    a.par_iter_mut().for_each(|v| *v = v.max(0.0));
                    a
                }
                Op::Gelu => {
                    // PyTorch's default (exact) GELU: x·Φ(x) = x·(1 + erf(x/√2))/2
                    a.par_iter_mut().for_each(|v| {
                        *v = (0.5 * *v as f64 * (1.0 + erf(*v as f64 / 2f64.sqrt()))) as f32
                    });
                    a
                }
                Op::MaxPool { k, s } | Op::AvgPool { k, s } => {
                    let max = matches!(op, Op::MaxPool { .. });
                    let (c, h, w) = (shape[0], shape[1], shape[2]);
                    let (oh, ow) = (next[1], next[2]);
                    let mut y = vec![0f32; n * per_out];
                    y.par_chunks_mut(oh * ow)
                        .zip(a.par_chunks(h * w))
                        .for_each(|(yo, xi)| {
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                                    for ky in 0..*k {
                                        for kx in 0..*k {
                                            let v = xi[(oy * s + ky) * w + ox * s + kx];
                                            acc = if max { acc.max(v) } else { acc + v };
                                        }
                                    }
                                    yo[oy * ow + ox] = if max { acc } else { acc / (k * k) as f32 };
                                }
                            }
                        });
                    debug_assert_eq!(y.len(), n * c * oh * ow);
                    y
                }
                Op::Flatten => a,
                Op::Softmax => {
                    a.par_chunks_mut(per_in).for_each(|row| {
                        let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        let z: f32 = row.iter().map(|&v| (v - m).exp()).sum();
                        row.iter_mut().for_each(|v| *v = (*v - m).exp() / z);
                    });
                    a
                }
            };
            debug_assert_eq!(a.len(), n * per_out);
            shape = next;
        }
        a
    }
}

/// Reads a tensor by name: its values (as the plan quantizes them) and shape.
type TensorReader<'a> = dyn Fn(&str) -> Result<(Vec<f32>, Vec<usize>), NnError> + 'a;

fn bias_of(tensor: &TensorReader, name: &str, out: usize) -> Result<Vec<f32>, NnError> {
    let (bias, _) = tensor(&format!("{name}.bias"))?;
    if bias.len() != out {
        return Err(NnError::NotRunnable(format!(
            "{name}.bias has {} values for {out} outputs",
            bias.len()
        )));
    }
    Ok(bias)
}

/// The shape after `op` of one example of shape `shape`.
fn next_shape(op: &Op, shape: &[usize]) -> Result<Vec<usize>, NnError> {
    let bad = |what: String| Err(NnError::NotRunnable(what));
    match op {
        Op::Layer(w) => match w.conv {
            None => {
                if shape.len() != 1 || shape[0] != w.k {
                    return bad(format!(
                        "{} takes {} inputs but gets shape {shape:?}",
                        w.name, w.k
                    ));
                }
                Ok(vec![w.out])
            }
            Some((kh, kw, stride, padding)) => {
                let cin = w.shape[1];
                if shape.len() != 3 || shape[0] != cin {
                    return bad(format!(
                        "{} takes [{cin}, H, W] but gets shape {shape:?}",
                        w.name
                    ));
                }
                if shape[1] + 2 * padding < kh || shape[2] + 2 * padding < kw {
                    return bad(format!("{}: the kernel is larger than the image", w.name));
                }
                let g = geom(w, shape, kh, kw, stride, padding);
                let (oh, ow) = g.out_hw();
                Ok(vec![w.out, oh, ow])
            }
        },
        Op::MaxPool { k, s } | Op::AvgPool { k, s } => {
            if shape.len() != 3 || shape[1] < *k || shape[2] < *k {
                return bad(format!(
                    "pooling {k}×{k} needs [C, H, W] of at least that size, not {shape:?}"
                ));
            }
            Ok(vec![
                shape[0],
                (shape[1] - k) / s + 1,
                (shape[2] - k) / s + 1,
            ])
        }
        Op::Flatten => Ok(vec![shape.iter().product()]),
        Op::Relu | Op::Gelu | Op::Softmax => Ok(shape.to_vec()),
    }
}

fn geom(
    w: &Weighted,
    shape: &[usize],
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
) -> ConvGeom {
    ConvGeom {
        cin: w.shape[1],
        h: shape[1],
        w: shape[2],
        kh,
        kw,
        stride,
        padding,
    }
}

impl Weighted {
    /// The rows this layer multiplies by `Wᵀ` for a batch of `n` inputs of shape `input_shape`: the
    /// inputs themselves for a linear layer, the unfolded patches `[n·oh·ow, I·kh·kw]` for a convolution.
    pub fn rows(&self, input: &[f32], n: usize, input_shape: &[usize]) -> Vec<f32> {
        match self.conv {
            None => input.to_vec(),
            Some((kh, kw, stride, padding)) => {
                let g = geom(self, input_shape, kh, kw, stride, padding);
                let per: usize = input_shape.iter().product();
                input
                    .par_chunks(per)
                    .take(n)
                    .flat_map_iter(|img| g.im2col(img))
                    .collect()
            }
        }
    }
}

fn conv_forward(w: &Weighted, a: &[f32], n: usize, shape: &[usize], next: &[usize]) -> Vec<f32> {
    let (kh, kw, stride, padding) = w.conv.expect("a convolution");
    let g = geom(w, shape, kh, kw, stride, padding);
    let per_in: usize = shape.iter().product();
    let (oh, ow) = (next[1], next[2]);
    let mut y = vec![0f32; n * w.out * oh * ow];
    y.par_chunks_mut(w.out * oh * ow)
        .zip(a.par_chunks(per_in))
        .for_each(|(yi, img)| {
            let p = g.im2col(img);
            // [oh·ow, out] → NCHW [out, oh·ow]
            let t = xwt(&p, oh * ow, g.patch(), &w.weight, w.out, None);
            for (pos, row) in t.chunks(w.out).enumerate() {
                for (o, v) in row.iter().enumerate() {
                    yi[o * oh * ow + pos] = v + w.bias[o];
                }
            }
        });
    y
}

/// The error function to about 1e-13 (Rust's std has none): its Taylor series below 2.5, and the
/// classical continued fraction of erfc above (Abramowitz & Stegun 7.1.5 and 7.1.14).
pub(crate) fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Taylor series: erf x = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        let mut k = 0.0;
        while term.abs() > 1e-17 * sum.abs() && k < 200.0 {
            k += 1.0;
            term *= -x2 / k;
            sum += term / (2.0 * k + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // continued fraction for erfc, Lentz-free backward evaluation with 60 terms
        let mut f = 0.0;
        for k in (1..=60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        1.0 - (-ax * ax).exp() / (std::f64::consts::PI.sqrt() * (ax + f))
    };
    r.copysign(x)
}

/// Accuracy and mean cross-entropy of `net` on `data`.
pub fn evaluate(net: &Network, data: &Dataset) -> Result<(f64, f64), NnError> {
    evaluate_with(net, data, None)
}

/// As [`evaluate`], with activation quantizers on the inputs of the layers they name.
pub fn evaluate_with(
    net: &Network,
    data: &Dataset,
    act: Option<&HashMap<String, FixedQuant>>,
) -> Result<(f64, f64), NnError> {
    if data.features != net.input {
        return Err(NnError::Data(format!(
            "the data has {} features, the network takes {}",
            data.features, net.input
        )));
    }
    let n = data.y.len();
    if n == 0 {
        return Err(NnError::Data("no examples".into()));
    }
    let logits = net.forward_with(&data.x, n, act, &mut |_| {});
    let k = logits.len() / n;
    let mut correct = 0usize;
    let mut loss = 0f64;
    for (row, &label) in logits.chunks(k).zip(&data.y) {
        if label >= k {
            return Err(NnError::Data(format!(
                "label {label} but the network has {k} outputs"
            )));
        }
        let (arg, &m) =
            row.iter().enumerate().fold(
                (0, &f32::NEG_INFINITY),
                |b, (i, v)| if v > b.1 { (i, v) } else { b },
            );
        correct += (arg == label) as usize;
        let lse = m as f64
            + row
                .iter()
                .map(|&v| ((v - m) as f64).exp())
                .sum::<f64>()
                .ln();
        loss += lse - row[label] as f64;
    }
    Ok((correct as f64 / n as f64, loss / n as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sample() -> Model {
        crate::nn::sample_mlp()
    }

    fn cnn() -> Model {
        crate::nn::sample_cnn()
    }

    #[test]
    fn the_cnn_reaches_the_accuracy_pytorch_recorded() {
        let m = cnn();
        let net = Network::from_model(&m, None).unwrap();
        assert_eq!(net.input_shape, vec![1, 28, 28]);
        assert_eq!(net.layer_names(), ["conv1", "conv2", "fc1", "fc2"]);
        let data = held_out(&m, &dataset_bytes(&m).unwrap()).unwrap();
        assert_eq!(data.len(), 1000);
        let (acc, loss) = evaluate(&net, &data).unwrap();
        let meta = m.metadata().unwrap();
        assert_eq!(format!("{acc:.4}"), meta["held_out_accuracy"]);
        assert!(acc >= 0.97, "{acc}");
        let want_loss: f64 = meta["held_out_loss"].parse().unwrap();
        assert!((loss - want_loss).abs() < 1e-4, "{loss} vs {want_loss}");
    }

    #[test]
    fn calibration_rows_are_balanced_and_never_held_out() {
        let m = cnn();
        let bytes = dataset_bytes(&m).unwrap();
        let cal = calibration_set(&m, &bytes, 200).unwrap();
        assert_eq!(cal.len(), 200);
        let mut per = [0usize; 10];
        cal.y.iter().for_each(|&c| per[c] += 1);
        assert!(per.iter().all(|&c| c == 20), "{per:?}");
        let test = held_out(&m, &bytes).unwrap();
        let rows: std::collections::HashSet<Vec<u32>> = test
            .x
            .chunks(784)
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect();
        let overlap = cal
            .x
            .chunks(784)
            .filter(|r| rows.contains(&r.iter().map(|v| v.to_bits()).collect::<Vec<_>>()))
            .count();
        assert!(
            overlap <= 1,
            "calibration images are training images ({overlap} equal)"
        );
    }

    #[test]
    fn observers_see_every_layer_and_activation_quantization_costs_little_at_8_bits() {
        let m = cnn();
        let net = Network::from_model(&m, None).unwrap();
        let data = held_out(&m, &dataset_bytes(&m).unwrap())
            .unwrap()
            .slice(0..300);
        let mut seen = Vec::new();
        let mut ranges = HashMap::new();
        net.forward_with(&data.x, data.len(), None, &mut |io| {
            seen.push((
                io.name.to_string(),
                io.input_shape.to_vec(),
                io.output_shape.to_vec(),
            ));
            let hi = io.input.iter().fold(0f32, |a, &v| a.max(v));
            let lo = io.input.iter().fold(0f32, |a, &v| a.min(v));
            ranges.insert(io.name.to_string(), (lo, hi));
        });
        assert_eq!(seen[0], ("conv1".into(), vec![1, 28, 28], vec![8, 28, 28]));
        assert_eq!(seen[1], ("conv2".into(), vec![8, 14, 14], vec![16, 14, 14]));
        assert_eq!(seen[2], ("fc1".into(), vec![784], vec![64]));
        let spec = crate::quant::Spec::parse("uint8").unwrap();
        let act: HashMap<String, FixedQuant> = ranges
            .iter()
            .map(|(k, &(lo, hi))| (k.clone(), FixedQuant::new(&spec, lo, hi).unwrap()))
            .collect();
        let (f, _) = evaluate(&net, &data).unwrap();
        let (q, _) = evaluate_with(&net, &data, Some(&act)).unwrap();
        assert!((f - q).abs() <= 0.01, "A8 keeps accuracy: {f} vs {q}");
        let spec2 = crate::quant::Spec::parse("uint2").unwrap();
        let act2: HashMap<String, FixedQuant> = ranges
            .iter()
            .map(|(k, &(lo, hi))| (k.clone(), FixedQuant::new(&spec2, lo, hi).unwrap()))
            .collect();
        let (q2, _) = evaluate_with(&net, &data, Some(&act2)).unwrap();
        assert!(q2 < f - 0.05, "A2 costs accuracy: {f} vs {q2}");
    }

    #[test]
    fn gelu_uses_the_exact_erf() {
        // erf(1), erf(0.5), erf(3) from Abramowitz & Stegun table 7.1 / mpmath
        assert!((erf(1.0) - 0.842_700_792_949_714_9).abs() < 1e-13);
        assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-13);
        assert!((erf(-3.0) + 0.999_977_909_503_001_4).abs() < 1e-13);
        assert!((erf(2.5) - 0.999_593_047_982_555).abs() < 1e-12);
    }

    fn with_metadata(m: &Model, meta: &HashMap<String, String>) -> Model {
        use crate::model::{write_safetensors, TensorEntry};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let entries: Vec<TensorEntry> = m
            .tensors
            .iter()
            .map(|t| TensorEntry {
                name: t.name.clone(),
                dtype: safetensors::Dtype::F32,
                shape: t.shape.clone(),
            })
            .collect();
        write_safetensors(&path, Some(meta), &entries, |i| {
            Ok(m.read_f32(&m.tensors[i])?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect())
        })
        .unwrap();
        Model::from_bytes("x.safetensors", Arc::from(std::fs::read(&path).unwrap())).unwrap()
    }

    #[test]
    fn bad_architectures_are_errors_not_panics() {
        let m = sample();
        let mut meta = m.metadata().unwrap().clone();
        for (arch, why) in [
            (r#"[{"op":"conv2d","name":"fc1"}]"#, "4-D"),
            (r#"[{"op":"linear","name":"fc2"}]"#, "takes"),
            (r#"[{"op":"max_pool2d","kernel":2}]"#, "no layers"),
            (
                r#"[{"op":"linear","name":"fc1"},{"op":"max_pool2d","kernel":2}]"#,
                "pooling",
            ),
            (r#"[{"op":"dance"}]"#, "bad 'architecture'"),
        ] {
            meta.insert("architecture".into(), arch.into());
            if why == "no layers" || why == "pooling" {
                meta.remove("input_shape");
            }
            let m2 = with_metadata(&m, &meta);
            let e = match Network::from_model(&m2, None) {
                Ok(_) => panic!("{arch} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(why), "{arch}: {e}");
        }
    }

    #[test]
    fn the_sample_model_reaches_its_recorded_accuracy() {
        let m = sample();
        let net = Network::from_model(&m, None).unwrap();
        let data = held_out(&m, &dataset_bytes(&m).unwrap()).unwrap();
        assert_eq!(data.y.len(), 359);
        let (acc, loss) = evaluate(&net, &data).unwrap();
        let meta = m.metadata().unwrap();
        // the numbers numpy recorded when it trained the model
        assert_eq!(format!("{acc:.4}"), meta["held_out_accuracy"]);
        let want_loss: f64 = meta["held_out_loss"].parse().unwrap();
        assert!((loss - want_loss).abs() < 1e-4, "{loss} vs {want_loss}");
    }
}
