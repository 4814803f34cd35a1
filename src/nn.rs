//! A small inference engine for the bundled sample models: the network is described in the model's
//! safetensors metadata (`architecture`: a JSON list of ops), so a sample model is one self-describing
//! file. Evaluation runs the held-out split named in the metadata, with the weights as stored or as a
//! plan quantizes them (fake quantization, simulated in f32).

use crate::model::Model;
use crate::plan::{Choice, Plan};
use crate::quant::quantize;
use rayon::prelude::*;
use serde::Deserialize;
use std::io::Read;

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    #[error("not a runnable sample model: {0}")]
    NotRunnable(String),
    #[error("data: {0}")]
    Data(String),
    #[error("quantizing '{0}': {1}")]
    Quant(String, crate::quant::QuantError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum OpSpec {
    Linear { name: String },
    Relu,
}

#[derive(Debug, Clone)]
enum Op {
    /// weight `[out, in]` row-major, bias `[out]`
    Linear {
        name: String,
        weight: Vec<f32>,
        bias: Vec<f32>,
        out: usize,
        inp: usize,
    },
    Relu,
}

/// A feed-forward network read from a sample model.
#[derive(Debug, Clone)]
pub struct Network {
    ops: Vec<Op>,
    pub input: usize,
}

impl Network {
    /// Build from `model`; `plan` (if any) fake-quantizes the weights it names.
    pub fn from_model(model: &Model, plan: Option<&Plan>) -> Result<Network, NnError> {
        let meta = model
            .metadata()
            .ok_or_else(|| NnError::NotRunnable("no metadata".into()))?;
        let arch = meta
            .get("architecture")
            .ok_or_else(|| NnError::NotRunnable("no 'architecture' in the metadata".into()))?;
        let specs: Vec<OpSpec> = serde_json::from_str(arch)
            .map_err(|e| NnError::NotRunnable(format!("bad 'architecture': {e}")))?;
        let tensor = |name: &str| -> Result<(Vec<f32>, Vec<usize>), NnError> {
            let t = model
                .find(name)
                .map(|i| &model.tensors[i])
                .ok_or_else(|| NnError::NotRunnable(format!("tensor '{name}' is missing")))?;
            let mut x = model.read_f32(t)?;
            if let Some(p) = plan {
                if let Choice::Quantize(spec) = p.resolve(&t.name, t.quantizable()).0 {
                    x = quantize(&x, &t.shape, &spec)
                        .map_err(|e| NnError::Quant(t.name.clone(), e))?
                        .dequant;
                }
            }
            Ok((x, t.shape.clone()))
        };
        let mut ops = Vec::new();
        let mut input = None;
        for s in specs {
            match s {
                OpSpec::Linear { name } => {
                    let (weight, shape) = tensor(&format!("{name}.weight"))?;
                    let (bias, _) = tensor(&format!("{name}.bias"))?;
                    let [out, inp] = shape[..] else {
                        return Err(NnError::NotRunnable(format!("{name}.weight is not 2-D")));
                    };
                    if bias.len() != out {
                        return Err(NnError::NotRunnable(format!(
                            "{name}.bias has {} values for {out} outputs",
                            bias.len()
                        )));
                    }
                    input.get_or_insert(inp);
                    ops.push(Op::Linear {
                        name,
                        weight,
                        bias,
                        out,
                        inp,
                    });
                }
                OpSpec::Relu => ops.push(Op::Relu),
            }
        }
        let input = input.ok_or_else(|| NnError::NotRunnable("no layers".into()))?;
        Ok(Network { ops, input })
    }

    /// Logits for `n` inputs (row-major `[n, input]`).
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut a = x.to_vec();
        let mut width = self.input;
        for op in &self.ops {
            match op {
                Op::Linear {
                    weight,
                    bias,
                    out,
                    inp,
                    ..
                } => {
                    debug_assert_eq!(*inp, width);
                    let mut y = vec![0f32; n * out];
                    y.par_chunks_mut(*out)
                        .zip(a.par_chunks(*inp))
                        .for_each(|(yr, xr)| {
                            for (o, yv) in yr.iter_mut().enumerate() {
                                let w = &weight[o * inp..(o + 1) * inp];
                                *yv = bias[o] + w.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>();
                            }
                        });
                    a = y;
                    width = *out;
                }
                Op::Relu => a.iter_mut().for_each(|v| *v = v.max(0.0)),
            }
        }
        a
    }

    pub fn layer_names(&self) -> Vec<String> {
        self.ops
            .iter()
            .filter_map(|o| match o {
                Op::Linear { name, .. } => Some(name.clone()),
                Op::Relu => None,
            })
            .collect()
    }
}

/// Images (row-major, already preprocessed) and labels.
pub struct Dataset {
    pub x: Vec<f32>,
    pub y: Vec<usize>,
    pub features: usize,
}

/// The held-out split of a sample model, read from its `dataset_file` (relative to `base`, or the
/// bundled copy) and `test_indices`, preprocessed as `input_preprocessing` says (pixel/16 for digits).
pub fn held_out(model: &Model, csv_gz: &[u8]) -> Result<Dataset, NnError> {
    let meta = model
        .metadata()
        .ok_or_else(|| NnError::NotRunnable("no metadata".into()))?;
    let idx: Vec<usize> = meta
        .get("test_indices")
        .ok_or_else(|| NnError::NotRunnable("no 'test_indices' in the metadata".into()))?
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| NnError::NotRunnable(format!("bad test index '{s}'")))
        })
        .collect::<Result<_, _>>()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(csv_gz)
        .read_to_string(&mut text)
        .map_err(|e| NnError::Data(e.to_string()))?;
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut features = 0;
    for &i in &idx {
        let row = rows
            .get(i)
            .ok_or_else(|| NnError::Data(format!("row {i} is beyond the {} rows", rows.len())))?;
        let v: Vec<f32> = row
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<f32>()
                    .map_err(|_| NnError::Data(format!("row {i}: '{s}' is not a number")))
            })
            .collect::<Result<_, _>>()?;
        let (label, pixels) = v
            .split_last()
            .ok_or_else(|| NnError::Data(format!("row {i} is empty")))?;
        features = pixels.len();
        x.extend(pixels.iter().map(|p| p / 16.0));
        y.push(*label as usize);
    }
    Ok(Dataset { x, y, features })
}

/// Accuracy and mean cross-entropy of `net` on `data`.
pub fn evaluate(net: &Network, data: &Dataset) -> Result<(f64, f64), NnError> {
    if data.features != net.input {
        return Err(NnError::Data(format!(
            "the data has {} features, the network takes {}",
            data.features, net.input
        )));
    }
    let n = data.y.len();
    let logits = net.forward(&data.x, n);
    let k = logits.len() / n.max(1);
    let mut correct = 0usize;
    let mut loss = 0f64;
    for (row, &label) in logits.chunks(k).zip(&data.y) {
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

/// The 8×8 digits (scikit-learn's copy, BSD-3), bundled so the sample model evaluates anywhere.
pub const BUNDLED_DIGITS: &[u8] = include_bytes!("../sample_models/data/digits.csv.gz");

/// The data file a sample model names: `dataset_file` next to the model, else the bundled copy when the
/// model names the digits.
pub fn dataset_bytes(model: &Model) -> Result<Vec<u8>, NnError> {
    let meta = model
        .metadata()
        .ok_or_else(|| NnError::NotRunnable("no metadata".into()))?;
    let file = meta
        .get("dataset_file")
        .ok_or_else(|| NnError::NotRunnable("no 'dataset_file' in the metadata".into()))?;
    let beside = model.source.parent().map(|d| d.join(file));
    match beside {
        Some(p) if p.is_file() => {
            std::fs::read(&p).map_err(|e| NnError::Data(format!("{}: {e}", p.display())))
        }
        _ if file.ends_with("digits.csv.gz") => Ok(BUNDLED_DIGITS.to_vec()),
        _ => Err(NnError::Data(format!(
            "'{file}' was not found next to the model"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sample() -> Model {
        Model::from_bytes(
            "digits_mlp.safetensors",
            Arc::from(&include_bytes!("../sample_models/digits_mlp.safetensors")[..]),
        )
        .unwrap()
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

    #[test]
    fn quantized_weights_cost_accuracy_in_order() {
        let m = sample();
        let data = held_out(&m, &dataset_bytes(&m).unwrap()).unwrap();
        let acc = |spec: &str| {
            let plan = Plan {
                default: Choice::parse(spec).unwrap(),
                ..Default::default()
            };
            evaluate(&Network::from_model(&m, Some(&plan)).unwrap(), &data)
                .unwrap()
                .0
        };
        let (f, i8_, b) = (acc("none"), acc("int8"), acc("binary"));
        assert!(
            (f - i8_).abs() <= 0.01,
            "int8 keeps the accuracy: {f} vs {i8_}"
        );
        assert!(b < f - 0.05, "binary weights cost accuracy: {b} vs {f}");
    }
}
