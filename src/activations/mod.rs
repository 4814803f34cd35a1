//! Activations: what flows into each weighted layer when the model runs on real data. Quantizing
//! activations needs their ranges from data (calibration), and the error that matters is in a layer's
//! output `X·Wᵀ`, not in its weights.
//!
//! Two sources give the same [`Calibration`]: running a bundled sample model on its calibration rows
//! ([`capture`]), and a calibration pack captured from any PyTorch model ([`pack`]). Everything after
//! that (ranges, output-aware error, AdaRound, the window's Activations view) reads only a `Calibration`.

pub mod lm;
pub mod output;
pub mod pack;
pub mod ranges;
pub mod report;

use crate::model::Model;
use crate::nn::{calibration_set, dataset_bytes, Network, NnError};
use crate::quant::adaround::adaround_or_quantize;
use serde::Serialize;

/// At most this many rows of a layer's input matrix are kept (for output-aware error and AdaRound).
pub const MAX_ROWS: usize = 2048;
/// At most this many input (and output) values are kept per layer for histograms and ranges.
pub const MAX_VALUES: usize = 1 << 20;

/// What was recorded for one weighted layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerActivations {
    /// The layer (module) name, e.g. `fc1` or `encoder.layer.0.attention.self.query`.
    pub name: String,
    /// The weight tensor it multiplies with, e.g. `fc1.weight`.
    pub weight: String,
    /// Columns of the input matrix (`in_features`, or `I·kh·kw` for a convolution's patches).
    pub k: usize,
    /// A sample of rows of the input matrix, row-major `[rows, k]`: the layer's inputs (linear) or its
    /// unfolded patches (conv), so that `rows·Wᵀ` is (a sample of) the layer's output before the bias.
    pub rows: Vec<f32>,
    /// A sample of the layer's input values (as it received them; for a conv, the feature map, not the
    /// patches), for histograms and ranges.
    pub inputs: Vec<f32>,
    /// A sample of the layer's output values (with the bias).
    pub outputs: Vec<f32>,
    /// The (min, max) of the whole input in each calibration batch, in order: the EMA observer's feed.
    pub batch_ranges: Vec<(f32, f32)>,
    /// max |x| of each input channel over all calibration data (features, or conv input channels).
    pub channel_absmax: Vec<f32>,
    /// The importance matrix (llama.cpp's imatrix): Σx² of each input column over all calibration
    /// rows; empty where it was not recorded.
    pub importance: Vec<f32>,
    /// How many input values the calibration saw in all (before sampling).
    pub seen: u64,
}

impl LayerActivations {
    pub fn row_count(&self) -> usize {
        self.rows.len() / self.k.max(1)
    }

    /// min and max over all calibration data (from the per-batch ranges, so exact, not sampled).
    pub fn min_max(&self) -> (f32, f32) {
        self.batch_ranges
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &(lo, hi)| {
                (a.min(lo), b.max(hi))
            })
    }
}

/// Activations of every weighted layer of one model on one calibration set.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The model they were recorded from (a path or a repo id).
    pub model: String,
    /// What data, in words (the data set and rows, or the pack's description).
    pub data: String,
    pub examples: usize,
    pub batches: usize,
    pub layers: Vec<LayerActivations>,
    /// Embedding tables the model looked rows up in (not kept in packs).
    pub lookups: Vec<Lookup>,
}

/// How often the calibration data looked up each row of an embedding table: the table's inputs,
/// one-hot rows, so its output error is the looked-up rows' error weighted by these counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// The table's weight, e.g. `model.embed_tokens.weight`.
    pub weight: String,
    /// (row, times looked up), by row.
    pub counts: Vec<(usize, u64)>,
}

impl Lookup {
    /// The lookups of `ids` in the table `weight`.
    pub fn of(weight: &str, ids: impl IntoIterator<Item = usize>) -> Lookup {
        let mut counts = std::collections::BTreeMap::new();
        for id in ids {
            *counts.entry(id).or_insert(0u64) += 1;
        }
        Lookup {
            weight: weight.to_string(),
            counts: counts.into_iter().collect(),
        }
    }
}

impl Calibration {
    pub fn layer(&self, name: &str) -> Option<&LayerActivations> {
        self.layers
            .iter()
            .find(|l| l.name == name || l.weight == name)
    }

    /// What the output error of the weight `name` is measured on: the inputs of the linear layer that
    /// multiplies it (a tied embedding's are the LM head's), or else the rows looked up in it.
    pub fn outputs(&self, name: &str) -> Option<output::Outputs<'_>> {
        self.layer(name).map(output::Outputs::Linear).or_else(|| {
            self.lookups
                .iter()
                .find(|l| l.weight == name)
                .map(output::Outputs::Lookup)
        })
    }
}

/// A summary line per layer, for JSON.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub name: String,
    pub weight: String,
    pub k: usize,
    pub rows: usize,
    pub seen: u64,
    pub min: f32,
    pub max: f32,
}

/// Indices of a `take`-element sample of `0..n`: one seeded random index in each of `take` equal
/// strata, so the sample is even but cannot alias with the data's own period (a plain stride over
/// `[N, C, H, W]` activations would pick the same pixel column, e.g. an image border, every time).
fn sample_indices(n: usize, take: usize, seed: u64) -> Vec<usize> {
    if take >= n {
        return (0..n).collect();
    }
    let width = n as f64 / take as f64;
    (0..take)
        .map(|i| {
            let u = crate::quant::uniform(seed, i as u64) as f64;
            (((i as f64 + u) * width) as usize).min(n - 1)
        })
        .collect()
}

/// An even sample of at most `cap` values of `x`.
fn subsample(x: &[f32], cap: usize, seed: u64) -> Vec<f32> {
    sample_indices(x.len(), cap, seed)
        .into_iter()
        .map(|i| x[i])
        .collect()
}

/// Append an even sample of `new` to `kept`: each of `batches` batches gets an equal share of `cap`.
fn keep(kept: &mut Vec<f32>, new: &[f32], cap: usize, batches: usize, seed: u64) {
    let share = (cap / batches.max(1)).max(1);
    kept.extend(subsample(new, share, seed));
}

/// Run a bundled sample model on `examples` calibration rows (training rows, never the held-out ones),
/// `batch` at a time, and record every weighted layer's activations.
pub fn capture(model: &Model, examples: usize, batch: usize) -> Result<Calibration, NnError> {
    let net = Network::from_model(model, None)?;
    let data = calibration_set(model, &dataset_bytes(model)?, examples)?;
    if data.is_empty() {
        return Err(NnError::Data("no calibration examples".into()));
    }
    let batch = batch.max(1);
    let batches = data.len().div_ceil(batch);
    let mut layers: Vec<LayerActivations> = net
        .layers()
        .map(|w| LayerActivations {
            name: w.name.clone(),
            weight: format!("{}.weight", w.name),
            k: w.k,
            rows: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            batch_ranges: Vec::new(),
            channel_absmax: Vec::new(),
            importance: vec![0.0; w.k],
            seen: 0,
        })
        .collect();
    for b in 0..batches {
        let part = data.slice(b * batch..((b + 1) * batch).min(data.len()));
        let mut li = 0;
        net.forward_with(&part.x, part.len(), None, &mut |io| {
            let l = &mut layers[li];
            li += 1;
            let (lo, hi) = io
                .input
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            l.batch_ranges.push((lo, hi));
            l.seen += io.input.len() as u64;
            // channels: features of a linear input, or C of a [C, H, W] feature map
            let channels = io.input_shape[0];
            let per_channel: usize = io.input_shape[1..].iter().product::<usize>().max(1);
            if l.channel_absmax.is_empty() {
                l.channel_absmax = vec![0.0; channels];
            }
            for (i, v) in io.input.iter().enumerate() {
                let c = (i / per_channel) % channels;
                l.channel_absmax[c] = l.channel_absmax[c].max(v.abs());
            }
            keep(&mut l.inputs, io.input, MAX_VALUES, batches, b as u64);
            keep(
                &mut l.outputs,
                io.output,
                MAX_VALUES,
                batches,
                b as u64 + (1 << 32),
            );
            let rows = io.layer.rows(io.input, io.n, io.input_shape);
            let nrows = rows.len() / l.k;
            for row in rows.chunks_exact(l.k) {
                for (s, &v) in l.importance.iter_mut().zip(row) {
                    *s += v * v;
                }
            }
            let share = (MAX_ROWS / batches).max(1);
            for r in sample_indices(nrows, share, b as u64 + (2 << 32)) {
                l.rows.extend_from_slice(&rows[r * l.k..(r + 1) * l.k]);
            }
        });
    }
    let name = model.source.display().to_string();
    let what = model
        .metadata()
        .and_then(|m| m.get("dataset").cloned())
        .unwrap_or_else(|| "the model's data set".into());
    Ok(Calibration {
        model: name,
        data: format!(
            "{} training rows of {what}, {batches} batches of {batch}",
            data.len()
        ),
        examples: data.len(),
        batches,
        layers,
        lookups: Vec::new(),
    })
}

/// The activations for `model`: the calibration pack at `pack` when given, else the sample model's own
/// calibration run. The error says how to get a pack when the model cannot run.
pub fn load(
    model: &Model,
    pack: Option<&std::path::Path>,
    examples: usize,
    batch: usize,
) -> Result<Calibration, String> {
    match pack {
        Some(p) => {
            let cal = pack::read(p).map_err(|e| e.to_string())?;
            check_matches(&cal, model)?;
            Ok(cal)
        }
        None => capture(model, examples, batch).map_err(|e| {
            format!(
                "{e}; for a model the engine cannot run, capture a calibration pack with \
                 tools/capture_activations.py and load it (CLI: --data PACK)"
            )
        }),
    }
}

/// A calibration whose layers name weights the model does not have is refused (it would silently
/// measure nothing): the message names the first few and shows the model's own names.
pub fn check_matches(cal: &Calibration, model: &Model) -> Result<(), String> {
    let missing: Vec<&str> = cal
        .layers
        .iter()
        .filter(|l| model.find(&l.weight).is_none())
        .map(|l| l.weight.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let ours: Vec<&str> = model
        .tensors
        .iter()
        .filter(|t| t.quantizable())
        .take(2)
        .map(|t| t.name.as_str())
        .collect();
    Err(format!(
        "the calibration pack names {} of its {} layers' weights that {} does not have ({}{}); the \
         model's weights are named like {}",
        missing.len(),
        cal.layers.len(),
        model.source.display(),
        missing[..missing.len().min(3)].join(", "),
        if missing.len() > 3 { ", …" } else { "" },
        ours.join(", ")
    ))
}

/// Held-out accuracy of a runnable model: float, with its weights quantized by `weights`, and with the
/// inputs of every layer quantized too (`act`, ranges from `cal` by `method`). `None` when the model
/// does not run. `round=adaround` weights learn their rounding from `cal`.
pub fn accuracy_under(
    model: &Model,
    cal: &Calibration,
    weights: &crate::quant::Spec,
    act: &crate::quant::Spec,
    method: ranges::Method,
) -> Result<Option<[f64; 3]>, String> {
    use crate::nn::{evaluate, evaluate_with, held_out};
    if Network::from_model(model, None).is_err() {
        return Ok(None);
    }
    let e = |e: NnError| e.to_string();
    let data = held_out(model, &dataset_bytes(model).map_err(e)?).map_err(e)?;
    let float = evaluate(&Network::from_model(model, None).map_err(e)?, &data).map_err(e)?;
    // every quantizable tensor under `weights`, as a plan with that default would
    let quantized = |t: &crate::model::TensorInfo, x: Vec<f32>| {
        if !t.quantizable() {
            return Ok(x);
        }
        let inputs = cal.layer(&t.name).map(|l| (&l.rows[..], l.k));
        Ok(adaround_or_quantize(&x, &t.shape, weights, inputs)?.into_dequant())
    };
    let net = Network::from_model(model, Some(&quantized)).map_err(e)?;
    let w = evaluate(&net, &data).map_err(e)?;
    let q = ranges::act_quantizers(cal, act, method).map_err(|e| e.to_string())?;
    let wa = evaluate_with(&net, &data, Some(&q)).map_err(e)?;
    Ok(Some([float.0, w.0, wa.0]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cnn() -> Model {
        crate::nn::sample_cnn()
    }

    // (here, not in quant::adaround: it needs calibration activations)
    #[test]
    fn adaround_lowers_the_output_error_of_a_real_layer() {
        let m = cnn();
        let cal = capture(&m, 256, 32).unwrap();
        let l = cal.layer("fc2").unwrap();
        let t = &m.tensors[m.find("fc2.weight").unwrap()];
        let w = m.read_f32(t).unwrap();
        let spec = crate::quant::Spec::parse("int3").unwrap();
        use crate::kernels::gemm::xwt;
        use crate::quant::adaround::{adaround, AdaRoundConfig};
        use crate::quant::metrics::Metrics;
        let cfg = AdaRoundConfig::default();
        let r = adaround(&w, &t.shape, &spec, &l.rows, l.k, &cfg).unwrap();
        let out = |wq: &[f32]| {
            let y = xwt(&l.rows, l.row_count(), l.k, &w, 10, None);
            let yq = xwt(&l.rows, l.row_count(), l.k, wq, 10, None);
            Metrics::compute(&y, &yq, 0).sqnr_db
        };
        let (near, ada) = (out(&r.nearest.dequant), out(&r.quantized.dequant));
        assert!(
            ada > near + 2.0,
            "AdaRound {ada:.2} dB vs nearest {near:.2} dB"
        );
        assert!(r.flipped > 0);
        // every weight stays on the same grid, one level at most from nearest
        for ((a, b), s) in r
            .quantized
            .dequant
            .iter()
            .zip(&r.nearest.dequant)
            .zip((0..w.len()).map(|i| r.nearest.scales[i / 64]))
        {
            assert!((a - b).abs() <= s * 1.0001, "{a} vs {b}");
        }
        assert!(adaround(
            &w,
            &t.shape,
            &crate::quant::Spec::parse("nvfp4").unwrap(),
            &l.rows,
            l.k,
            &cfg
        )
        .is_err());
    }

    #[test]
    fn capture_records_every_layer_of_the_cnn() {
        let m = cnn();
        let c = capture(&m, 256, 32).unwrap();
        assert_eq!(c.batches, 8);
        assert_eq!(c.examples, 256);
        let names: Vec<&str> = c.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["conv1", "conv2", "fc1", "fc2"]);
        let conv2 = c.layer("conv2.weight").unwrap();
        assert_eq!(conv2.k, 8 * 9);
        assert_eq!(conv2.channel_absmax.len(), 8);
        assert_eq!(conv2.batch_ranges.len(), 8);
        assert_eq!(conv2.seen, 256 * 8 * 14 * 14);
        assert!(conv2.row_count() > 0 && conv2.row_count() <= MAX_ROWS);
        // inputs of conv2 are ReLU → max-pool outputs: non-negative
        let (lo, hi) = conv2.min_max();
        assert!(lo >= 0.0 && hi > 0.0, "{lo} {hi}");
        // the rows are patches of the input: every value in them is an input value or padding 0
        assert!(conv2.rows.iter().all(|&v| v >= 0.0 && v <= hi));
        // and the sample does not alias onto the all-black border of the images
        let conv1 = c.layer("conv1").unwrap();
        let nonzero = conv1.rows.iter().filter(|&&v| v > 0.0).count();
        assert!(
            nonzero * 10 > conv1.rows.len(),
            "{nonzero} of {}",
            conv1.rows.len()
        );
        let fc1 = c.layer("fc1").unwrap();
        assert_eq!(fc1.k, 784);
        assert_eq!(fc1.channel_absmax.len(), 784);
    }
}
