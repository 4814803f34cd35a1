//! Activations of a transformer's linear layers on calibration windows of text: the same
//! [`Calibration`] the sample models and packs give, plus the importance matrix (Σx² per input column,
//! llama.cpp's imatrix). Q, K and V (and gate and up) see the same input; each is recorded under its
//! own weight so every layer of a plan has its activations.

use super::{keep, sample_indices, Calibration, LayerActivations};
use crate::model::Model;
use crate::nn::transformer::score::{chunk_windows, Hooks};
use crate::nn::transformer::{LinearIo, ModelWeights, Observer, Transformer};
use crate::nn::NnError;
use std::collections::HashMap;

/// How much of each layer's activations is kept (a model has hundreds of layers).
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// Rows of the input matrix (for output-space error and AdaRound).
    pub rows: usize,
    /// Input and output values each (for histograms and ranges).
    pub values: usize,
}

impl Default for Keep {
    fn default() -> Self {
        Keep {
            rows: 256,
            values: 1 << 16,
        }
    }
}

impl Keep {
    /// Bytes all layers' kept activations may take together: a model with more or wider layers keeps
    /// fewer rows each, so a calibration's memory does not grow with the model.
    pub const BUDGET: usize = 512 << 20;

    /// The default, shrunk to fit [`Keep::BUDGET`] for `model` (three quarters for rows, a quarter
    /// for values), never below 16 rows and 4,096 values.
    pub fn within_budget(model: &Model) -> Keep {
        let linear = model
            .tensors
            .iter()
            .filter(|t| t.is_float() && t.shape.len() == 2);
        let (widths, layers) = linear.fold((0usize, 0usize), |(w, n), t| (w + t.shape[1], n + 1));
        let d = Keep::default();
        Keep {
            rows: (Self::BUDGET / 4 * 3 / (4 * widths.max(1))).clamp(16, d.rows),
            values: (Self::BUDGET / 4 / (8 * layers.max(1))).clamp(4096, d.values),
        }
    }

    /// [`Keep::within_budget`]'s rows, and input and output values down to one per window: what the
    /// output-space error and the importance matrix need, without the values histograms use.
    pub fn rows_within_budget(model: &Model) -> Keep {
        Keep {
            values: 0,
            ..Keep::within_budget(model)
        }
    }
}

struct Recorder<'a> {
    layers: Vec<LayerActivations>,
    sums: Vec<Vec<f64>>,
    index: HashMap<String, usize>,
    batches: usize,
    keep: Keep,
    /// The tied LM head's weight, recorded as the layer `lm_head`.
    tied_head: Option<&'a str>,
}

impl Observer for Recorder<'_> {
    fn linear(&mut self, io: &LinearIo<'_>) {
        let k = io.k;
        let i = match self.index.get(io.weight) {
            Some(&i) => i,
            None => {
                let name = match self.tied_head {
                    Some(h) if h == io.weight => "lm_head".to_string(),
                    _ => io
                        .weight
                        .strip_suffix(".weight")
                        .unwrap_or(io.weight)
                        .into(),
                };
                self.layers.push(LayerActivations {
                    name,
                    weight: io.weight.to_string(),
                    k,
                    rows: Vec::new(),
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                    batch_ranges: Vec::new(),
                    channel_absmax: vec![0.0; k],
                    importance: Vec::new(),
                    seen: 0,
                });
                self.sums.push(vec![0.0; k]);
                self.index
                    .insert(io.weight.to_string(), self.layers.len() - 1);
                self.layers.len() - 1
            }
        };
        let (l, sums) = (&mut self.layers[i], &mut self.sums[i]);
        let b = io.seq as u64;
        let (lo, hi) = io
            .input
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, c), &v| {
                (a.min(v), c.max(v))
            });
        l.batch_ranges.push((lo, hi));
        l.seen += io.input.len() as u64;
        for row in io.input.chunks_exact(k) {
            for ((m, s), &v) in l.channel_absmax.iter_mut().zip(sums.iter_mut()).zip(row) {
                *m = m.max(v.abs());
                *s += v as f64 * v as f64;
            }
        }
        keep(&mut l.inputs, io.input, self.keep.values, self.batches, b);
        keep(
            &mut l.outputs,
            io.output,
            self.keep.values,
            self.batches,
            b + (1 << 32),
        );
        let share = (self.keep.rows / self.batches).max(1);
        for r in sample_indices(io.rows, share, b + (2 << 32)) {
            l.rows.extend_from_slice(&io.input[r * k..(r + 1) * k]);
        }
    }
}

/// Run `net` on the calibration windows `seqs` and record every linear layer's activations.
/// `data` says in words where the windows came from.
pub fn capture(
    model: &Model,
    net: &Transformer,
    seqs: &[Vec<u32>],
    data: &str,
    keep: Keep,
    hooks: &dyn Hooks,
) -> Result<Calibration, NnError> {
    if seqs.is_empty() {
        return Err(NnError::Data("no calibration windows".into()));
    }
    let w = ModelWeights::new(model, false);
    let mut rec = Recorder {
        layers: Vec::new(),
        sums: Vec::new(),
        index: HashMap::new(),
        batches: seqs.len(),
        keep,
        tied_head: net.head_is_embedding().then_some(net.embed.as_str()),
    };
    let total = net.blocks.len() + 1;
    let mut h = net.embed(&w, seqs)?;
    for i in 0..net.blocks.len() {
        if hooks.cancelled() {
            return Err(NnError::Cancelled);
        }
        net.block(i, &w, seqs, &mut h, &mut rec)?;
        hooks.progress(i + 1, total);
    }
    // the LM head sees the final norm's output; its logits are made a few windows at a time
    let mut row = 0;
    for part in seqs.chunks(chunk_windows(net, seqs)) {
        let n: usize = part.iter().map(Vec::len).sum();
        let rows = h.slice(ndarray::s![row..row + n, ..]).to_owned();
        net.finish(&w, part, rows, &mut rec)?;
        row += n;
    }
    hooks.progress(total, total);
    let Recorder {
        mut layers, sums, ..
    } = rec;
    for (l, s) in layers.iter_mut().zip(sums) {
        l.importance = s.into_iter().map(|v| v as f32).collect();
    }
    Ok(Calibration {
        model: model.source.display().to_string(),
        data: data.to_string(),
        examples: seqs.len(),
        batches: seqs.len(),
        layers,
        lookups: vec![super::Lookup::of(
            &net.embed,
            seqs.iter().flatten().map(|&t| t as usize),
        )],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of `n` bf16 matrices of `rows × cols`, in memory.
    fn matrices(n: usize, rows: usize, cols: usize) -> Model {
        let bytes = vec![0u8; rows * cols * 2];
        let views: Vec<(String, safetensors::tensor::TensorView)> = (0..n)
            .map(|i| {
                let v = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::BF16,
                    vec![rows, cols],
                    &bytes,
                )
                .unwrap();
                (format!("l{i}.weight"), v)
            })
            .collect();
        let file = safetensors::serialize(views, None).unwrap();
        Model::from_bytes("m", std::sync::Arc::from(file)).unwrap()
    }

    #[test]
    fn kept_activations_fit_the_budget_whatever_the_model() {
        // a small model keeps the default
        let small = Keep::within_budget(&matrices(30, 2, 576));
        assert_eq!((small.rows, small.values), (256, 1 << 16));
        // a 7B-like one (225 layers, inputs summing to 1.14 M columns) keeps fewer rows
        let big = Keep::within_budget(&matrices(225, 1, 5060));
        assert!(big.rows < 256 && big.rows >= 16, "{}", big.rows);
        let bytes = 4 * big.rows * 225 * 5060 + 8 * big.values * 225;
        assert!(bytes <= Keep::BUDGET, "{bytes}");
    }
}
