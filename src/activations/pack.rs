//! The calibration pack: activations captured from any model, in one safetensors file, so that the
//! engine and the window treat a PyTorch / transformers model exactly like a bundled sample model.
//! `tools/capture_activations.py` writes one with forward hooks; [`write`] writes one from a
//! [`Calibration`] (e.g. to keep a sample model's).
//!
//! Layout (version 1). Metadata:
//! - `quantscope_calibration`: `"1"`;
//! - `model`: the model it was captured from (path or repo id); `data`: the data, in words;
//! - `examples`, `batches`: how many inputs (sentences, images) and forward batches;
//! - `layers`: a JSON list, in model order, of `{"name", "weight", "k", "seen"}`: the module name, the
//!   weight tensor's name in the model's safetensors, the input columns, and the number of input values
//!   observed before sampling.
//!
//! Tensors, all float32 (f16/bf16 are read too), for each layer `L` of the list:
//! - `L.rows` `[r, k]`: a sample of rows of the layer's input matrix (the inputs of a linear layer,
//!   flattened over batch and sequence; a convolution's unfolded patches, `F.unfold` transposed);
//! - `L.inputs` `[n]` and `L.outputs` `[m]`: samples of its input and output values;
//! - `L.batch_ranges` `[batches, 2]`: min and max of the whole input in each batch;
//! - `L.channel_absmax` `[c]`: max |x| per input channel over all data;
//! - `L.importance` `[k]` (optional): Σx² of each input column over all rows, llama.cpp's importance
//!   matrix.

use super::{Calibration, LayerActivations};
use crate::model::{write_safetensors, Model, ModelError, TensorEntry};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("{path}: not a calibration pack: {why}")]
    Invalid { path: String, why: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct LayerMeta {
    name: String,
    weight: String,
    k: usize,
    #[serde(default)]
    seen: u64,
}

/// Read a pack.
pub fn read(path: &Path) -> Result<Calibration, PackError> {
    let m = Model::open(path)?;
    from_model(&m)
}

/// Read a pack already opened as a safetensors model.
pub fn from_model(m: &Model) -> Result<Calibration, PackError> {
    let bad = |why: String| PackError::Invalid {
        path: m.source.display().to_string(),
        why,
    };
    let meta = m.metadata().ok_or_else(|| bad("no metadata".into()))?;
    match meta.get("quantscope_calibration").map(String::as_str) {
        Some("1") => {}
        Some(v) => return Err(bad(format!("version '{v}' (this build reads version 1)"))),
        None => return Err(bad("no 'quantscope_calibration' in the metadata".into())),
    }
    let layers: Vec<LayerMeta> = serde_json::from_str(
        meta.get("layers")
            .ok_or_else(|| bad("no 'layers' in the metadata".into()))?,
    )
    .map_err(|e| bad(format!("bad 'layers': {e}")))?;
    let num = |key: &str| -> Result<usize, PackError> {
        meta.get(key)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| bad(format!("bad '{key}': '{v}'")))
            })
            .unwrap_or(Ok(0))
    };
    let read = |name: String, want_cols: Option<usize>| -> Result<Vec<f32>, PackError> {
        let i = m
            .find(&name)
            .ok_or_else(|| bad(format!("tensor '{name}' is missing")))?;
        let t = &m.tensors[i];
        if let Some(c) = want_cols {
            if t.shape.len() != 2 || t.shape[1] != c {
                return Err(bad(format!(
                    "'{name}' has shape {:?}, want [_, {c}]",
                    t.shape
                )));
            }
        }
        let v = m.read_f32(t)?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!("'{name}' holds NaN or Inf values")));
        }
        Ok(v)
    };
    let mut out = Vec::with_capacity(layers.len());
    for l in layers {
        if l.k == 0 {
            return Err(bad(format!("layer '{}' has k = 0", l.name)));
        }
        let ranges = read(format!("{}.batch_ranges", l.name), Some(2))?;
        out.push(LayerActivations {
            rows: read(format!("{}.rows", l.name), Some(l.k))?,
            inputs: read(format!("{}.inputs", l.name), None)?,
            outputs: read(format!("{}.outputs", l.name), None)?,
            batch_ranges: ranges.chunks(2).map(|c| (c[0], c[1])).collect(),
            channel_absmax: read(format!("{}.channel_absmax", l.name), None)?,
            importance: match m.find(&format!("{}.importance", l.name)) {
                Some(_) => read(format!("{}.importance", l.name), None)?,
                None => Vec::new(),
            },
            name: l.name,
            weight: l.weight,
            k: l.k,
            seen: l.seen,
        });
    }
    Ok(Calibration {
        model: meta.get("model").cloned().unwrap_or_default(),
        data: meta.get("data").cloned().unwrap_or_default(),
        examples: num("examples")?,
        batches: num("batches")?,
        layers: out,
        lookups: Vec::new(),
    })
}

/// Write `cal` as a pack (to a temporary file renamed at the end).
pub fn write(cal: &Calibration, path: &Path) -> Result<(), PackError> {
    let mut meta = HashMap::new();
    meta.insert("quantscope_calibration".to_string(), "1".to_string());
    meta.insert("model".into(), cal.model.clone());
    meta.insert("data".into(), cal.data.clone());
    meta.insert("examples".into(), cal.examples.to_string());
    meta.insert("batches".into(), cal.batches.to_string());
    let layers: Vec<LayerMeta> = cal
        .layers
        .iter()
        .map(|l| LayerMeta {
            name: l.name.clone(),
            weight: l.weight.clone(),
            k: l.k,
            seen: l.seen,
        })
        .collect();
    meta.insert(
        "layers".into(),
        serde_json::to_string(&layers).expect("plain data serialises"),
    );
    let mut entries = Vec::new();
    let mut data: Vec<Vec<f32>> = Vec::new();
    for l in &cal.layers {
        let ranges: Vec<f32> = l.batch_ranges.iter().flat_map(|&(a, b)| [a, b]).collect();
        for (suffix, v, shape) in [
            ("rows", l.rows.clone(), vec![l.row_count(), l.k]),
            ("inputs", l.inputs.clone(), vec![l.inputs.len()]),
            ("outputs", l.outputs.clone(), vec![l.outputs.len()]),
            ("batch_ranges", ranges, vec![l.batch_ranges.len(), 2]),
            (
                "channel_absmax",
                l.channel_absmax.clone(),
                vec![l.channel_absmax.len()],
            ),
            ("importance", l.importance.clone(), vec![l.importance.len()]),
        ] {
            if suffix == "importance" && v.is_empty() {
                continue;
            }
            entries.push(TensorEntry {
                name: format!("{}.{suffix}", l.name),
                dtype: safetensors::Dtype::F32,
                shape,
            });
            data.push(v);
        }
    }
    write_safetensors(path, Some(&meta), &entries, |i| {
        Ok(data[i].iter().flat_map(|v| v.to_le_bytes()).collect())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_round_trips_and_bad_packs_are_named() {
        let m = crate::activations::tests::cnn();
        let cal = crate::activations::capture(&m, 64, 16).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cal.safetensors");
        write(&cal, &p).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back, cal);
        // the sample model itself is not a pack
        let e = from_model(&m).unwrap_err().to_string();
        assert!(e.contains("quantscope_calibration"), "{e}");
        assert!(read(&dir.path().join("missing.safetensors")).is_err());
    }
}
