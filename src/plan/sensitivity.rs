//! Layer sensitivity: for every layer and every candidate spec, the error when only that layer is
//! quantized. Three measures, each where it can be had:
//!
//! - **weight SQNR**: the layer's own weights against their quantized copy (every model);
//! - **output SQNR** on calibration activations, `X·Wᵀ` against `X·Ŵᵀ` (docs/DESIGN.md §3): a slot in
//!   [`Cell::output_nsr`] that stays `None` until activations are captured for the model (the calibration
//!   engine fills it; see [`Cell::output_nsr`]);
//! - **end to end**: for models that run ([`crate::nn`]), the network on calibration data with only this
//!   layer quantized — accuracy, loss, agreement with the float predictions, and the KL divergence of the
//!   output distribution from the float one.
//!
//! The measures can disagree: a layer whose weights quantize with a high SQNR may still move the outputs
//! most (the last layer of a classifier, whose errors reach the logits undamped), and the search should
//! follow the measure closest to what the user cares about. Cells are cached per (tensor, spec), so adding a
//! candidate computes only the new column.

use super::{Choice, Plan, PlanError};
use crate::activations::output::Outputs;
use crate::jobs::Progress;
use crate::model::Model;
use crate::nn::{rows_from_csv, spread, Dataset, Network};
use crate::quant::rows::{in_blocks, rows_and_cols, Keep, BLOCK_ELEMS};
use crate::quant::Spec;
use crate::stats::sum_squares;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// What "the error of a layer" means for the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Noise-to-signal ratio of the weights, Σ(w − ŵ)² / Σw² (SQNR = −10·log10 of it).
    WeightSqnr,
    /// The same on the layer's outputs for calibration activations X: Σ(XWᵀ − XŴᵀ)² / Σ(XWᵀ)².
    OutputSqnr,
    /// The weight error weighted by each input column's Σx² on calibration data (the importance
    /// matrix, as llama.cpp's quantizers and llm-compressor's imatrix observer use it):
    /// Σ_j imp_j Σ_i (w_ij − ŵ_ij)² / Σ_j imp_j Σ_i w_ij².
    Imatrix,
    /// KL divergence of the network's output distribution from the float one, on calibration data.
    EndToEnd,
    /// The end-to-end KL measured for one candidate per layer (the probe) and carried to the layer's
    /// other candidates in proportion to their output (or weight) noise-to-signal ratio: each layer's
    /// own gain from its error to the model's, at a fraction of the passes.
    ProbedKl,
}

impl Measure {
    pub const ALL: [Measure; 5] = [
        Measure::WeightSqnr,
        Measure::Imatrix,
        Measure::OutputSqnr,
        Measure::ProbedKl,
        Measure::EndToEnd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Measure::WeightSqnr => "weight_sqnr",
            Measure::OutputSqnr => "output_sqnr",
            Measure::Imatrix => "imatrix",
            Measure::EndToEnd => "end_to_end",
            Measure::ProbedKl => "probed_kl",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Measure::WeightSqnr => "weight SQNR",
            Measure::OutputSqnr => "output SQNR on calibration activations",
            Measure::Imatrix => "importance-weighted weight SQNR (imatrix)",
            Measure::EndToEnd => "end to end (KL of the outputs on calibration data)",
            Measure::ProbedKl => "KL scaled from one end-to-end probe per layer",
        }
    }

    pub fn parse(s: &str) -> Result<Measure, String> {
        match s.trim() {
            "weight_sqnr" | "weight" | "sqnr" => Ok(Measure::WeightSqnr),
            "output_sqnr" | "output" => Ok(Measure::OutputSqnr),
            "imatrix" | "importance" => Ok(Measure::Imatrix),
            "end_to_end" | "e2e" | "kl" => Ok(Measure::EndToEnd),
            "probed_kl" | "probed" | "probe" => Ok(Measure::ProbedKl),
            other => Err(format!(
                "unknown measure '{other}': use weight_sqnr, imatrix, output_sqnr, probed_kl or end_to_end"
            )),
        }
    }
}

/// The network on calibration data with only one layer quantized.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EndToEnd {
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Mean KL(p_float ‖ p_quantized) of the softmax outputs, in nats.
    pub kl: f64,
    /// Share of examples whose predicted class is the float model's.
    pub agreement: f64,
}

/// One layer under one spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The resolved spec.
    pub spec: String,
    /// Every stored bit of the tensor under this spec (elements, scales, zero points, codebooks).
    pub bits: u64,
    pub bits_per_weight: f64,
    /// Σ(w − ŵ)² / Σw² (0 when exact). Kept as a ratio, not dB, so an exact cast stays finite.
    pub weight_nsr: f64,
    pub weight_mse: f64,
    /// Output noise-to-signal ratio on calibration activations: `None` until the calibration engine
    /// provides activations for this layer. When it does, fill it here and [`Measure::OutputSqnr`]
    /// becomes available to the search with no other change.
    #[serde(default)]
    pub output_nsr: Option<f64>,
    /// Importance-weighted noise-to-signal ([`Measure::Imatrix`]) where calibration recorded the layer's
    /// importance matrix.
    #[serde(default)]
    pub importance_nsr: Option<f64>,
    #[serde(default)]
    pub end_to_end: Option<EndToEnd>,
    /// [`Measure::ProbedKl`]: the probe cell's KL × this cell's noise-to-signal / the probe's.
    #[serde(default)]
    pub probed_kl: Option<f64>,
    /// The quantizer failed on this tensor: the search never picks this cell.
    #[serde(default)]
    pub error: Option<String>,
}

/// SQNR in dB from a noise-to-signal ratio (+inf when exact).
pub fn db(nsr: f64) -> f64 {
    if nsr <= 0.0 {
        f64::INFINITY
    } else {
        -10.0 * nsr.log10()
    }
}

impl Cell {
    /// A cell of `spec` with nothing measured yet (or never: `error` says why).
    fn unmeasured(spec: &Spec, error: Option<String>) -> Cell {
        Cell {
            spec: spec.to_string(),
            bits: 0,
            bits_per_weight: 0.0,
            weight_nsr: f64::NAN,
            weight_mse: f64::NAN,
            output_nsr: None,
            importance_nsr: None,
            end_to_end: None,
            probed_kl: None,
            error,
        }
    }

    /// The cost the search minimises, in the measure's units; `None` when the measure is not available.
    pub fn cost(&self, m: Measure) -> Option<f64> {
        if self.error.is_some() {
            return None;
        }
        match m {
            Measure::WeightSqnr => Some(self.weight_nsr),
            Measure::OutputSqnr => self.output_nsr,
            Measure::Imatrix => self.importance_nsr,
            Measure::EndToEnd => self.end_to_end.map(|e| e.kl.max(0.0)),
            Measure::ProbedKl => self.probed_kl,
        }
        .filter(|c| c.is_finite())
    }

    pub fn weight_sqnr_db(&self) -> f64 {
        db(self.weight_nsr)
    }

    /// The measure's value as people read it: SQNR in dB, or KL.
    pub fn shown(&self, m: Measure) -> Option<f64> {
        match m {
            Measure::WeightSqnr => Some(db(self.weight_nsr)),
            Measure::OutputSqnr => self.output_nsr.map(db),
            Measure::Imatrix => self.importance_nsr.map(db),
            Measure::EndToEnd => self.end_to_end.map(|e| e.kl),
            Measure::ProbedKl => self.probed_kl,
        }
    }

    /// The noise-to-signal ratio a probe's KL is carried by: on the outputs where both cells have it.
    fn carried_nsr(&self, probe: &Cell) -> (f64, f64) {
        match (self.output_nsr, probe.output_nsr) {
            (Some(a), Some(b)) => (a, b),
            _ => (self.weight_nsr, probe.weight_nsr),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRow {
    pub name: String,
    pub shape: Vec<usize>,
    pub numel: u64,
    /// Bits as stored in the model (dtype width × elements).
    pub original_bits: u64,
}

/// The float network on the calibration data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub accuracy: f64,
    pub loss: f64,
    pub examples: usize,
}

/// Layers × candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    /// The model's header fingerprint.
    pub model: String,
    pub layers: Vec<LayerRow>,
    /// The candidate specs (resolved), the first columns of every row.
    pub candidates: Vec<String>,
    /// Per layer: one cell per candidate, in order, then any extra specs asked for that layer (pins).
    pub cells: Vec<Vec<Cell>>,
    pub baseline: Option<Baseline>,
    /// Where the calibration data came from (end-to-end measure).
    pub data: Option<String>,
}

impl Sensitivity {
    /// Size every cell with the GGML type llama-quantize really stores for it on that layer
    /// ([`super::export::llama_cpp_type`]); a cell it cannot store gets an error. Returns each spec's
    /// types, for a note.
    pub fn size_for_llama_cpp(&mut self) -> BTreeMap<String, BTreeSet<&'static str>> {
        let mut types: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
        for (row, cells) in self.layers.iter().zip(self.cells.iter_mut()) {
            let ncols = row.shape.last().copied().unwrap_or(1);
            for cell in cells.iter_mut() {
                let Ok(spec) = Spec::parse(&cell.spec) else {
                    continue;
                };
                match super::export::llama_cpp_type(&spec, ncols) {
                    Ok((t, bpw)) => {
                        cell.bits = (bpw * row.numel as f64).round() as u64;
                        cell.bits_per_weight = bpw;
                        types.entry(spec.short()).or_default().insert(t);
                    }
                    Err(e) => cell.error = Some(format!("llama.cpp: {e}")),
                }
            }
        }
        types
    }

    pub fn find(&self, layer: usize, spec: &str) -> Option<usize> {
        self.cells[layer].iter().position(|c| c.spec == spec)
    }

    /// The measures every cell has.
    pub fn available(&self) -> Vec<Measure> {
        Measure::ALL
            .into_iter()
            .filter(|&m| {
                self.cells
                    .iter()
                    .flatten()
                    .filter(|c| c.error.is_none())
                    .all(|c| c.cost(m).is_some())
                    && self.cells.iter().flatten().any(|c| c.error.is_none())
            })
            .collect()
    }

    /// The measure closest to what a user cares about among those available: end to end, then probed,
    /// then output, then weight SQNR.
    pub fn best_measure(&self) -> Measure {
        let a = self.available();
        [
            Measure::EndToEnd,
            Measure::ProbedKl,
            Measure::OutputSqnr,
            Measure::Imatrix,
        ]
        .into_iter()
        .find(|m| a.contains(m))
        .unwrap_or(Measure::WeightSqnr)
    }

    /// Rank correlation (Spearman) between two measures' costs over every cell both have: how far the
    /// measures agree on which (layer, spec) hurts most.
    pub fn agreement(&self, a: Measure, b: Measure) -> Option<f64> {
        spearman(
            self.cells
                .iter()
                .flatten()
                .filter_map(|c| Some((c.cost(a)?, c.cost(b)?)))
                .collect(),
        )
    }

    /// The same within one candidate's column: how far the measures agree on which *layers* hurt most
    /// under that spec (over all cells, the spread between candidates inflates it).
    pub fn agreement_within(&self, a: Measure, b: Measure, candidate: usize) -> Option<f64> {
        spearman(
            self.cells
                .iter()
                .filter_map(|row| row.get(candidate))
                .filter_map(|c| Some((c.cost(a)?, c.cost(b)?)))
                .collect(),
        )
    }
}

/// Spearman's rank correlation of paired values (ties share their mean rank); `None` below 3 pairs
/// or when one side is constant.
fn spearman(pairs: Vec<(f64, f64)>) -> Option<f64> {
    if pairs.len() < 3 {
        return None;
    }
    let rank = |v: Vec<f64>| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for k in i..=j {
                r[idx[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let ra = rank(pairs.iter().map(|p| p.0).collect());
    let rb = rank(pairs.iter().map(|p| p.1).collect());
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// Calibration data and the float network's outputs on it.
pub struct EvalSet {
    pub data: Dataset,
    pub float_logits: Vec<f32>,
    pub classes: usize,
    pub baseline: Baseline,
    /// Where the data came from, for reports.
    pub source: String,
}

/// Softmax of one row, in f64.
fn softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

/// Accuracy, mean cross-entropy (the formulas of [`crate::nn::evaluate`]) and, against reference logits,
/// mean KL(p_ref ‖ p) and the share of matching predictions.
pub fn compare_logits(
    logits: &[f32],
    reference: &[f32],
    labels: &[usize],
    classes: usize,
) -> EndToEnd {
    let n = labels.len().max(1);
    let (mut correct, mut loss, mut kl, mut agree) = (0usize, 0f64, 0f64, 0usize);
    for ((row, r), &label) in logits
        .chunks(classes)
        .zip(reference.chunks(classes))
        .zip(labels)
    {
        let a = argmax(row);
        correct += (a == label) as usize;
        agree += (a == argmax(r)) as usize;
        let q = softmax(row);
        let p = softmax(r);
        loss -= q[label].max(f64::MIN_POSITIVE).ln();
        kl += p
            .iter()
            .zip(&q)
            .filter(|(pi, _)| **pi > 0.0)
            .map(|(pi, qi)| pi * (pi / qi.max(f64::MIN_POSITIVE)).ln())
            .sum::<f64>();
    }
    EndToEnd {
        accuracy: correct as f64 / n as f64,
        loss: loss / n as f64,
        kl: kl / n as f64,
        agreement: agree as f64 / n as f64,
    }
}

/// Rows of a digits-style CSV (pixels…, label), gzip or plain, preprocessed as the model's metadata says.
fn data_err(e: crate::nn::NnError) -> PlanError {
    PlanError::Invalid(format!("calibration data: {e}"))
}

impl EvalSet {
    /// Calibration data for a runnable model: the rows of `data` (a CSV, optionally gzipped, with the
    /// model's layout: features then label), or else the model's own data file minus its held-out rows
    /// (so the held-out split stays untouched for judging the plan). At most `limit` rows, evenly spaced.
    /// `Ok(None)` when the model does not run.
    pub fn for_model(
        model: &Model,
        data: Option<&Path>,
        limit: usize,
    ) -> Result<Option<EvalSet>, PlanError> {
        let runnable = model
            .metadata()
            .is_some_and(|m| m.contains_key("architecture"));
        if !runnable {
            if data.is_some() {
                return Err(PlanError::Invalid(
                    "--data needs a model that runs (a sample model describing its network); this one has no 'architecture' in its metadata".into(),
                ));
            }
            return Ok(None);
        }
        let float =
            Network::from_model(model, None).map_err(|e| PlanError::Invalid(e.to_string()))?;
        let (set, source) = match data {
            Some(p) => {
                let bytes = std::fs::read(p).map_err(|e| PlanError::File {
                    path: p.display().to_string(),
                    why: e.to_string(),
                })?;
                let all = |n: usize| spread(&(0..n).collect::<Vec<_>>(), limit);
                (
                    rows_from_csv(model, &bytes, all).map_err(data_err)?,
                    p.display().to_string(),
                )
            }
            None => {
                let bytes = crate::nn::dataset_bytes(model)
                    .map_err(|e| PlanError::Invalid(e.to_string()))?;
                let held: HashSet<usize> = model
                    .metadata()
                    .and_then(|m| m.get("test_indices"))
                    .map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect())
                    .unwrap_or_default();
                let name = model
                    .metadata()
                    .and_then(|m| m.get("dataset_file"))
                    .cloned()
                    .unwrap_or_else(|| "the model's data".into());
                let kept = |n: usize| {
                    let rows: Vec<usize> = (0..n).filter(|i| !held.contains(i)).collect();
                    spread(&rows, limit)
                };
                (
                    rows_from_csv(model, &bytes, kept).map_err(data_err)?,
                    format!("{name}, rows outside the held-out split"),
                )
            }
        };
        if set.y.is_empty() {
            return Err(PlanError::Invalid(
                "the calibration data has no rows".into(),
            ));
        }
        if set.features != float.input {
            return Err(PlanError::Invalid(format!(
                "the calibration data has {} features, the network takes {}",
                set.features, float.input
            )));
        }
        let n = set.y.len();
        let float_logits = float.forward(&set.x, n);
        let classes = float_logits.len() / n;
        if let Some(&bad) = set.y.iter().find(|&&l| l >= classes) {
            return Err(PlanError::Invalid(format!(
                "a label {bad} is beyond the network's {classes} outputs"
            )));
        }
        let e = compare_logits(&float_logits, &float_logits, &set.y, classes);
        Ok(Some(EvalSet {
            baseline: Baseline {
                accuracy: e.accuracy,
                loss: e.loss,
                examples: n,
            },
            data: set,
            float_logits,
            classes,
            source: format!("{source} ({n} examples)"),
        }))
    }

    /// The held-out split of a runnable sample model ([`crate::nn::held_out`]): for judging a plan, never
    /// for choosing it.
    pub fn held_out(model: &Model) -> Result<EvalSet, PlanError> {
        let nn = |e: crate::nn::NnError| PlanError::Invalid(e.to_string());
        let data = crate::nn::held_out(model, &crate::nn::dataset_bytes(model).map_err(nn)?)
            .map_err(nn)?;
        let float = Network::from_model(model, None).map_err(nn)?;
        let n = data.y.len();
        let float_logits = float.forward(&data.x, n);
        let classes = float_logits.len() / n.max(1);
        let e = compare_logits(&float_logits, &float_logits, &data.y, classes);
        Ok(EvalSet {
            baseline: Baseline {
                accuracy: e.accuracy,
                loss: e.loss,
                examples: n,
            },
            data,
            float_logits,
            classes,
            source: format!("held-out split ({n} examples)"),
        })
    }

    /// The network with `plan` on this data, against the float outputs.
    pub fn run(&self, model: &Model, plan: &Plan) -> Result<EndToEnd, PlanError> {
        let net = Network::from_model(model, Some(plan))
            .map_err(|e| PlanError::Invalid(e.to_string()))?;
        let logits = net.forward(&self.data.x, self.data.y.len());
        Ok(compare_logits(
            &logits,
            &self.float_logits,
            &self.data.y,
            self.classes,
        ))
    }
}

/// Cells already computed, per (tensor, spec), for one model and one calibration set; kept between runs
/// (in the window's memory, or in a file with `--cache`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cache {
    pub model: String,
    /// The calibration data the end-to-end cells were measured on ("" for none).
    pub data: String,
    pub cells: BTreeMap<String, Cell>,
    pub baseline: Option<Baseline>,
}

fn key(tensor: &str, spec: &str) -> String {
    format!("{tensor}\t{spec}")
}

impl Cache {
    /// A cache for end-to-end cells measured on `data` ("" for none).
    pub fn for_source(model: &Model, data: String, baseline: Option<Baseline>) -> Cache {
        Cache {
            model: model.header_fingerprint(),
            data,
            cells: BTreeMap::new(),
            baseline,
        }
    }

    /// A cache file for `model` measured on `data` (any data when `None`, to refuse another model's
    /// file before the data is known): `None` when the file does not exist yet; an error when it is
    /// not a cache, or holds another model's or other data's cells (saving would lose them).
    pub fn read_matching(
        path: &Path,
        model: &Model,
        data: Option<&str>,
    ) -> Result<Option<Cache>, PlanError> {
        let err = |why: String| PlanError::File {
            path: path.display().to_string(),
            why,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e.to_string())),
        };
        let c: Cache = serde_json::from_str(&text)
            .map_err(|e| err(format!("not a sensitivity cache ({e})")))?;
        if c.model != model.header_fingerprint() {
            return Err(err("measured on another model; choose another file".into()));
        }
        if let Some(data) = data.filter(|d| *d != c.data) {
            return Err(err(format!(
                "measured on other data ({}) than this run ({}); choose another file",
                if c.data.is_empty() { "none" } else { &c.data },
                if data.is_empty() { "none" } else { data }
            )));
        }
        Ok(Some(c))
    }

    pub fn save(&self, path: &Path) -> Result<(), PlanError> {
        let err = |e: std::io::Error| PlanError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        let json = serde_json::to_string(self).expect("serializes");
        crate::model::write_atomic(path, json).map_err(err)
    }

    pub fn get(&self, tensor: &str, spec: &str) -> Option<&Cell> {
        self.cells.get(&key(tensor, spec))
    }

    /// Keep one measured row of `tensor` (cells that failed are kept too: they say why).
    pub fn absorb_row(&mut self, tensor: &str, cells: &[Cell]) {
        for c in cells {
            self.cells.insert(key(tensor, &c.spec), c.clone());
        }
    }

    pub fn absorb(&mut self, s: &Sensitivity) {
        for (l, row) in s.layers.iter().zip(&s.cells) {
            for c in row {
                self.cells.insert(key(&l.name, &c.spec), c.clone());
            }
        }
    }
}

/// What to measure.
pub struct Request<'a> {
    /// Tensor indices, in the order the rows should have.
    pub layers: Vec<usize>,
    pub candidates: Vec<Spec>,
    /// Extra (row, spec) cells, e.g. a pinned spec that is not a candidate.
    pub extra: Vec<(usize, Spec)>,
    pub eval: Option<&'a EvalSet>,
    /// A transformer's calibration windows, for its end-to-end measure.
    pub lm: Option<&'a super::lm::LmEvalSet<'a>>,
    /// Calibration activations: each layer they cover gets its output-space error (X·Wᵀ vs X·Ŵᵀ).
    pub activations: Option<&'a crate::activations::Calibration>,
    /// Run the end-to-end pass only for this candidate (an index into `candidates`) of each layer,
    /// and give every cell its [`Measure::ProbedKl`].
    pub probe: Option<usize>,
}

impl Request<'_> {
    /// Whether cell `spec` (an index into a row's specs) runs the end-to-end pass.
    pub fn runs_end_to_end(&self, spec: usize) -> bool {
        (self.eval.is_some() || self.lm.is_some()) && self.probe.is_none_or(|p| p == spec)
    }
}

impl Request<'_> {
    /// What the end-to-end cells were measured on ("" for none): part of the cache's key.
    pub fn data_source(&self) -> String {
        self.eval
            .map(|e| e.source.clone())
            .or(self.lm.map(|l| l.source.clone()))
            .unwrap_or_default()
    }

    /// An empty cache for this request's model and data.
    pub fn fresh_cache(&self, model: &Model) -> Cache {
        let baseline = self
            .lm
            .map(|l| l.baseline)
            .or(self.eval.map(|e| e.baseline));
        Cache::for_source(model, self.data_source(), baseline)
    }
}

/// How often [`compute_saved`] writes the rows finished so far.
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// [`compute`] through a cache file (the CLI's `--cache`, the window's measurements file): the file's
/// cells join `cache`'s (when it is for this model and data), finished rows are saved as they come
/// (at most every [`SAVE_EVERY`]), and all that was measured is saved at the end even when the run
/// fails or is cancelled, so a stopped run resumes. A file of another model or other data is refused.
pub fn compute_saved(
    model: &Model,
    req: &Request,
    cache: &Cache,
    file: &Path,
    progress: &Progress,
    on_row: &mut dyn FnMut(usize, &[Cell]),
) -> Result<Sensitivity, PlanError> {
    let mut base = req.fresh_cache(model);
    if cache.model == base.model && cache.data == base.data {
        base.cells = cache.cells.clone();
        base.baseline = base.baseline.or(cache.baseline);
    }
    if let Some(f) = Cache::read_matching(file, model, Some(&base.data))? {
        base.baseline = base.baseline.or(f.baseline);
        base.cells.extend(f.cells);
    }
    let mut saved = base.clone();
    let mut last = Instant::now();
    let s = compute(model, req, &base, progress, &mut |r, row| {
        saved.absorb_row(&model.tensors[req.layers[r]].name, row);
        if last.elapsed() >= SAVE_EVERY && saved.save(file).is_ok() {
            last = Instant::now();
        }
        on_row(r, row);
    });
    if let Ok(s) = &s {
        saved.absorb(s);
    }
    saved.save(file)?;
    s
}

/// Layers with at least this many weights measure their candidates one at a time.
const PARALLEL_CANDIDATES_BELOW: usize = 1 << 22;

/// Measure every (layer, candidate) cell not in `cache`. Layers run one after another (memory stays
/// bounded by one layer); a layer's candidates run in parallel. `progress` counts cells and is checked
/// for cancellation between cells; `on_row(i, cells)` is called as each row is complete.
pub fn compute(
    model: &Model,
    req: &Request,
    cache: &Cache,
    progress: &Progress,
    on_row: &mut dyn FnMut(usize, &[Cell]),
) -> Result<Sensitivity, PlanError> {
    let per_row: Vec<Vec<Spec>> = (0..req.layers.len())
        .map(|r| {
            let mut specs = req.candidates.clone();
            for (row, s) in &req.extra {
                if *row == r && !specs.contains(s) {
                    specs.push(*s);
                }
            }
            specs
        })
        .collect();
    progress.set_total(per_row.iter().map(|s| s.len() as u64).sum());
    let fresh_cache = cache.model == model.header_fingerprint() && cache.data == req.data_source();
    let e2e = req.eval.is_some() || req.lm.is_some();
    if req.probe.is_some_and(|p| p >= req.candidates.len()) {
        return Err(PlanError::Invalid("the probe is not a candidate".into()));
    }
    let mut layers = Vec::new();
    let mut cells = Vec::new();
    for (r, &ti) in req.layers.iter().enumerate() {
        let t = model
            .tensors
            .get(ti)
            .ok_or_else(|| PlanError::Invalid(format!("no tensor #{ti}")))?;
        if progress.is_cancelled() {
            return Err(PlanError::Cancelled);
        }
        let specs = &per_row[r];
        let cached: Vec<Option<Cell>> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                fresh_cache
                    .then(|| cache.get(&t.name, &s.to_string()).cloned())
                    .flatten()
                    .filter(|c| {
                        !req.runs_end_to_end(i) || c.end_to_end.is_some() || c.error.is_some()
                    })
                    .filter(|c| {
                        req.activations.and_then(|a| a.outputs(&t.name)).is_none()
                            || c.output_nsr.is_some()
                            || c.error.is_some()
                    })
            })
            .collect();
        let acts = req.activations.and_then(|a| a.outputs(&t.name));
        let signal = if cached.iter().all(Option::is_some) {
            Ok(Signal::default())
        } else {
            signal(model, t, acts, BLOCK_ELEMS).map_err(|e| e.to_string())
        };
        let one = |(i, (spec, hit)): (usize, (&Spec, Option<Cell>))| {
            let cell = match (hit, &signal) {
                (Some(c), _) => c,
                (None, _) if progress.is_cancelled() => {
                    Cell::unmeasured(spec, Some("cancelled".into()))
                }
                (None, Ok(s)) => {
                    let e2e = req.runs_end_to_end(i);
                    measure(model, t, spec, req, acts, s, BLOCK_ELEMS, e2e)
                }
                (None, Err(why)) => Cell::unmeasured(spec, Some(why.clone())),
            };
            progress.add(1);
            cell
        };
        // a large layer's candidates run one at a time (each quantizer is parallel inside), so memory
        // holds the layer and one result; a small layer's run in parallel
        let mut row: Vec<Cell> = if t.numel() >= PARALLEL_CANDIDATES_BELOW {
            specs.iter().zip(cached).enumerate().map(one).collect()
        } else {
            specs.par_iter().zip(cached).enumerate().map(one).collect()
        };
        if let Some(p) = req.probe {
            carry_probe(&mut row, p);
        }
        if progress.is_cancelled() {
            return Err(PlanError::Cancelled);
        }
        on_row(r, &row);
        layers.push(LayerRow {
            name: t.name.clone(),
            shape: t.shape.clone(),
            numel: t.numel() as u64,
            original_bits: t.nbytes() as u64 * 8,
        });
        cells.push(row);
    }
    Ok(Sensitivity {
        model: model.header_fingerprint(),
        layers,
        candidates: req.candidates.iter().map(|s| s.to_string()).collect(),
        cells,
        baseline: req.eval.map(|e| e.baseline).or(req.lm.map(|l| l.baseline)),
        data: (e2e).then(|| req.data_source()),
    })
}

/// What a layer's cells divide their errors by, the same for every candidate: Σw², the
/// importance-weighted Σ_j imp_j Σ_i w_ij² and the output's ‖X·Wᵀ‖² on the calibration rows (`None`
/// when the layer has no such activations).
#[derive(Debug, Clone, Copy, Default)]
struct Signal {
    weight: f64,
    importance: Option<f64>,
    output: Option<f64>,
}

/// A linear layer's activations' importance when it fits the weight's rows.
fn importance<'a>(acts: Option<Outputs<'a>>, cols: usize) -> Option<&'a [f32]> {
    acts.and_then(|a| a.linear())
        .map(|l| &l.importance[..])
        .filter(|imp| !imp.is_empty() && cols.is_multiple_of(imp.len()))
}

/// The layer's [`Signal`], read a block of rows at a time.
fn signal(
    model: &Model,
    t: &crate::model::TensorInfo,
    acts: Option<Outputs<'_>>,
    block_elems: usize,
) -> Result<Signal, PlanError> {
    let (rows, cols) = rows_and_cols(&t.shape);
    let imp = importance(acts, cols);
    let mut s = Signal {
        importance: imp.map(|_| 0.0),
        output: acts.map(|_| 0.0),
        ..Default::default()
    };
    let step = (block_elems / cols.max(1)).max(1);
    for r in (0..rows).step_by(step) {
        let block = r..(r + step).min(rows);
        let x = model.take_rows_f32(t, block.clone())?;
        s.weight += sum_squares(&x, None);
        if let (Some(i), Some(imp)) = (s.importance.as_mut(), imp) {
            *i += sum_squares(&x, Some(imp));
        }
        if let (Some(o), Some(a)) = (s.output, acts) {
            s.output = a.energy(block, &x).ok().map(|e| o + e);
        }
        crate::kernels::buffers::give_f32(x);
    }
    Ok(s)
}

/// One cell: the weight, importance-weighted and output errors, each a sum over the weight's rows (the
/// output error's over the output features those rows give), so the weight is read and quantized a
/// block of rows at a time ([`in_blocks`]) and memory follows a block, not the layer; then the end-to-end
/// effect (when `end_to_end`), which needs the whole fake-quantized weight. `signal` is the layer's,
/// for the ratios.
#[allow(clippy::too_many_arguments)]
fn measure(
    model: &Model,
    t: &crate::model::TensorInfo,
    spec: &Spec,
    req: &Request,
    acts: Option<Outputs<'_>>,
    signal: &Signal,
    block_elems: usize,
    end_to_end: bool,
) -> Cell {
    let mut cell = Cell::unmeasured(spec, None);
    let (_, cols) = rows_and_cols(&t.shape);
    let imp = importance(acts, cols);
    let (mut imp_noise, mut output) = (0f64, signal.output.map(|_| 0f64));
    // the error W − Ŵ is formed a quarter of a block at a time (memory stays near x and Ŵ)
    let part = (block_elems / 4 / cols.max(1)).max(1) * cols.max(1);
    let mut e = Vec::new();
    // the end-to-end pass needs the whole fake-quantized weight: gathered block by block, so the
    // tensor's f32 copy and its codes never exist whole beside it
    let lm = req.lm.filter(|_| end_to_end);
    let mut changed = Vec::new();
    if lm.is_some() {
        changed.reserve_exact(t.numel());
    }
    let q = in_blocks::<PlanError>(
        &t.shape,
        spec,
        Keep::Nothing,
        block_elems,
        |r| Ok(model.take_rows_f32(t, r)?),
        |rows, x, dq| {
            if lm.is_some() {
                changed.extend_from_slice(dq);
            }
            let starts = (rows.start..).step_by(part / cols.max(1));
            for ((x, dq), r) in x.chunks(part).zip(dq.chunks(part)).zip(starts) {
                e.clear();
                e.par_extend(x.par_iter().zip(dq).map(|(&a, &b)| a - b));
                if let Some(imp) = imp {
                    imp_noise += sum_squares(&e, Some(imp));
                }
                if let (Some(o), Some(a)) = (output, acts) {
                    let rows = r..r + x.len() / cols.max(1);
                    output = a.energy(rows, &e).ok().map(|n| o + n);
                }
            }
            Ok(())
        },
    );
    let q = match q {
        Ok(q) => q,
        Err(e) => {
            cell.error = Some(match e {
                PlanError::Invalid(why) => why,
                e => e.to_string(),
            });
            return cell;
        }
    };
    let n = t.numel();
    if let (Some(_), Some(s)) = (imp, signal.importance) {
        cell.importance_nsr = Some(noise_to_signal(imp_noise, s));
    }
    if let (Some(noise), Some(s)) = (output, signal.output) {
        // noise-to-signal of the layer's output on calibration inputs (10^(−SQNR/10))
        cell.output_nsr = Some(noise_to_signal(noise, s));
    }
    let m = q.metrics;
    cell.bits = (m.bits_per_weight * n as f64).round() as u64;
    cell.bits_per_weight = m.bits_per_weight;
    cell.weight_mse = m.mse;
    cell.weight_nsr = noise_to_signal(m.mse * n as f64, signal.weight);
    if let Some(lm) = lm {
        // the pass needs memory more than the next block's quantizer needs warm buffers
        crate::kernels::buffers::release();
        match lm.run(&t.name, changed) {
            Ok(e) => cell.end_to_end = Some(e),
            Err(e) => cell.error = Some(e.to_string()),
        }
    } else if let Some(ev) = req.eval.filter(|_| end_to_end) {
        let mut plan = Plan {
            default: Choice::Keep,
            ..Default::default()
        };
        plan.overrides
            .insert(t.name.clone(), (Choice::Quantize(*spec), String::new()));
        match ev.run(model, &plan) {
            Ok(e) => cell.end_to_end = Some(e),
            Err(e) => cell.error = Some(e.to_string()),
        }
    }
    cell
}

/// Every cell's [`Cell::probed_kl`] from the probe cell `p` of its row: KL ∝ noise-to-signal within a
/// layer (small errors: the KL is quadratic in the output error), so the probe gives the layer's gain.
/// An exact probe (no error) gives no gain: only exact cells are then known (0).
fn carry_probe(row: &mut [Cell], p: usize) {
    let probe = row[p].clone();
    for c in row.iter_mut() {
        c.probed_kl = match (&probe.end_to_end, c.error.is_none()) {
            (Some(e), true) => match c.carried_nsr(&probe) {
                (nsr, at_probe) if at_probe > 0.0 => Some(e.kl.max(0.0) * nsr / at_probe),
                (nsr, _) => (nsr == 0.0).then_some(0.0),
            },
            _ => None,
        };
    }
}

/// noise / signal; 0 when both are 0, +inf when only the signal is.
fn noise_to_signal(noise: f64, signal: f64) -> f64 {
    if signal > 0.0 {
        noise / signal
    } else if noise > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// The layers a search considers by default: every quantizable weight, in file order.
pub fn default_layers(model: &Model) -> Vec<usize> {
    (0..model.tensors.len())
        .filter(|&i| model.tensors[i].quantizable())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;

    fn sample() -> Model {
        crate::nn::sample_mlp()
    }

    #[test]
    fn compare_logits_matches_nn_evaluate() {
        let m = sample();
        let net = Network::from_model(&m, None).unwrap();
        let data = crate::nn::held_out(&m, &crate::nn::dataset_bytes(&m).unwrap()).unwrap();
        let (acc, loss) = crate::nn::evaluate(&net, &data).unwrap();
        let logits = net.forward(&data.x, data.y.len());
        let e = compare_logits(&logits, &logits, &data.y, 10);
        assert_eq!(e.accuracy, acc);
        assert!((e.loss - loss).abs() < 1e-9, "{} vs {loss}", e.loss);
        assert!(e.kl.abs() < 1e-12);
        assert_eq!(e.agreement, 1.0);
    }

    #[test]
    fn calibration_rows_leave_the_held_out_split_alone() {
        let m = sample();
        let ev = EvalSet::for_model(&m, None, 100_000).unwrap().unwrap();
        // 1,797 rows, 359 held out
        assert_eq!(ev.data.y.len(), 1797 - 359);
        let thinned = EvalSet::for_model(&m, None, 500).unwrap().unwrap();
        assert_eq!(thinned.data.y.len(), 500);
        // the model was trained on these rows: it fits them (numpy recorded 1.0000 train accuracy)
        assert_eq!(
            format!("{:.4}", ev.baseline.accuracy),
            m.metadata().unwrap()["train_accuracy"]
        );
    }

    #[test]
    fn measuring_a_block_of_rows_at_a_time_gives_the_cells_of_the_whole_weight() {
        let m = sample();
        let cal = crate::activations::capture(&m, 64, 32).unwrap();
        let req = Request {
            layers: default_layers(&m),
            candidates: Vec::new(),
            extra: Vec::new(),
            eval: None,
            lm: None,
            activations: Some(&cal),
            probe: None,
        };
        let mut compared = 0;
        for &ti in &req.layers {
            let t = &m.tensors[ti];
            let acts = cal.outputs(&t.name);
            for text in ["int4:g16", "int3:channel", "nvfp4", "int8:tensor"] {
                let spec = Spec::parse(text).unwrap();
                // the whole weight at once, and blocks of 3 rows
                let (_, cols) = rows_and_cols(&t.shape);
                let whole = signal(&m, t, acts, usize::MAX).unwrap();
                let want = measure(&m, t, &spec, &req, acts, &whole, usize::MAX, false);
                let blocks = signal(&m, t, acts, 3 * cols).unwrap();
                let got = measure(&m, t, &spec, &req, acts, &blocks, 3 * cols, false);
                if let Some(l) = acts.and_then(|a| a.linear()) {
                    // the whole-weight measures are the definitions: ‖Y − Ŷ‖² / ‖Y‖², in f64
                    let x = m.read_f32(t).unwrap();
                    let dq = quantize(&x, &t.shape, &spec).unwrap().into_dequant();
                    let (k, rows) = (l.k, l.row_count());
                    let (mut se, mut sy) = (0f64, 0f64);
                    for r in 0..rows {
                        let xr = &l.rows[r * k..(r + 1) * k];
                        for (w, q) in x.chunks_exact(k).zip(dq.chunks_exact(k)) {
                            let dot = |v: &[f32]| {
                                xr.iter()
                                    .zip(v)
                                    .map(|(&a, &b)| a as f64 * b as f64)
                                    .sum::<f64>()
                            };
                            let (y, yq) = (dot(w), dot(q));
                            se += (y - yq).powi(2);
                            sy += y * y;
                        }
                    }
                    let nsr = se / sy;
                    // f32 products against f64 ones
                    assert!(
                        (want.output_nsr.unwrap() - nsr).abs() <= 1e-4 * nsr,
                        "{text}: {:?} vs {nsr}",
                        want.output_nsr
                    );
                    if !l.importance.is_empty() {
                        // Σ_j imp_j Σ_i (w_ij − ŵ_ij)² / Σ_j imp_j Σ_i w_ij²
                        let k = l.importance.len();
                        let (mut num, mut den) = (0f64, 0f64);
                        for (i, (&a, &b)) in x.iter().zip(&dq).enumerate() {
                            let s = l.importance[i % k] as f64;
                            num += s * (a as f64 - b as f64).powi(2);
                            den += s * (a as f64).powi(2);
                        }
                        let i = num / den;
                        assert!(
                            (want.importance_nsr.unwrap() - i).abs() <= 1e-9 * i,
                            "{text}"
                        );
                    }
                }
                let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1e-30),
                    (a, b) => a == b,
                };
                assert_eq!((got.bits, &got.error), (want.bits, &want.error), "{text}");
                assert!(close(Some(got.weight_nsr), Some(want.weight_nsr)), "{text}");
                assert!(close(Some(got.weight_mse), Some(want.weight_mse)), "{text}");
                assert!(close(got.importance_nsr, want.importance_nsr), "{text}");
                assert!(
                    close(got.output_nsr, want.output_nsr),
                    "{text}: {got:?} {want:?}"
                );
                compared += want.output_nsr.is_some() as usize;
            }
        }
        assert!(
            compared >= 4,
            "the output error was compared on real activations"
        );
    }

    /// An untied embedding's output error is its looked-up rows' error, each row counted as often as
    /// the calibration text uses its token; so every layer of an untied model has an output SQNR.
    #[test]
    fn an_embedding_is_measured_on_the_rows_its_tokens_look_up() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lm/llama");
        let m = Model::open(&dir).unwrap();
        let progress = Progress::default();
        let (_, cal) =
            super::super::lm::prepare(&m, None, 24, 3, false, &|_| false, &progress).unwrap();
        let cal = cal.unwrap();
        let lookup = &cal.lookups[0];
        assert_eq!(lookup.weight, "model.embed_tokens.weight");
        assert_eq!(lookup.counts.iter().map(|c| c.1).sum::<u64>(), 3 * 24);
        let ti = m.find(&lookup.weight).unwrap();
        let t = &m.tensors[ti];
        let acts = cal.outputs(&t.name);
        assert!(matches!(acts, Some(Outputs::Lookup(_))));
        let req = Request {
            layers: default_layers(&m),
            candidates: ["int4:g16", "int2:channel"]
                .map(|s| Spec::parse(s).unwrap())
                .to_vec(),
            extra: Vec::new(),
            eval: None,
            lm: None,
            activations: Some(&cal),
            probe: None,
        };
        let x = m.read_f32(t).unwrap();
        let cols = t.shape[1];
        for spec in &req.candidates {
            // Σ_t ‖w_t − ŵ_t‖² / Σ_t ‖w_t‖² over the calibration tokens t, in f64
            let dq = quantize(&x, &t.shape, spec).unwrap().into_dequant();
            let (mut se, mut sy) = (0f64, 0f64);
            for &(r, n) in &lookup.counts {
                for j in r * cols..(r + 1) * cols {
                    se += n as f64 * (x[j] as f64 - dq[j] as f64).powi(2);
                    sy += n as f64 * (x[j] as f64).powi(2);
                }
            }
            for block in [usize::MAX, 5 * cols] {
                let s = signal(&m, t, acts, block).unwrap();
                let got = measure(&m, t, spec, &req, acts, &s, block, false)
                    .output_nsr
                    .unwrap();
                assert!(
                    (got - se / sy).abs() <= 1e-9 * se / sy,
                    "{spec}: {got} vs {}",
                    se / sy
                );
            }
        }
        // every cell has an output SQNR, so the search can rank by it
        let s = compute(&m, &req, &Cache::default(), &progress, &mut |_, _| {}).unwrap();
        assert!(s.layers.iter().any(|l| l.name == lookup.weight));
        assert!(s.available().contains(&Measure::OutputSqnr));
        assert_eq!(s.best_measure(), Measure::OutputSqnr);
    }

    #[test]
    fn cells_measure_what_they_say_and_the_cache_is_used() {
        let m = sample();
        let ev = EvalSet::for_model(&m, None, 300).unwrap().unwrap();
        let cands: Vec<Spec> = ["int8", "int2"]
            .iter()
            .map(|s| Spec::parse(s).unwrap())
            .collect();
        let req = Request {
            layers: default_layers(&m),
            candidates: cands.clone(),
            extra: vec![(0, Spec::parse("int4").unwrap())],
            eval: Some(&ev),
            lm: None,
            activations: None,
            probe: None,
        };
        let mut rows = 0;
        let s = compute(
            &m,
            &req,
            &req.fresh_cache(&m),
            &Progress::default(),
            &mut |_, _| rows += 1,
        )
        .unwrap();
        assert_eq!(rows, 3);
        assert_eq!(s.cells[0].len(), 3, "the extra spec is appended to its row");
        assert_eq!(s.cells[1].len(), 2);
        // weight error against a direct quantization
        let t = &m.tensors[m.find("fc2.weight").unwrap()];
        let x = m.read_f32(t).unwrap();
        let q = quantize(&x, &t.shape, &cands[1]).unwrap();
        let c = &s.cells[1][1];
        assert!((c.weight_sqnr_db() - q.metrics.sqnr_db).abs() < 1e-9);
        assert_eq!(c.bits as f64, q.metrics.bits_per_weight * 8192.0);
        // int2 hurts more than int8, in every measure
        for l in 0..3 {
            let (a, b) = (&s.cells[l][0], &s.cells[l][1]);
            assert!(a.weight_nsr < b.weight_nsr);
            assert!(
                a.end_to_end.unwrap().kl < b.end_to_end.unwrap().kl,
                "layer {l}"
            );
        }
        assert_eq!(s.best_measure(), Measure::EndToEnd);
        assert!(s.available().contains(&Measure::WeightSqnr));
        assert!(!s.available().contains(&Measure::OutputSqnr));
        // a second run takes every cell from the cache: poison one cached value and see it come back
        let mut cache = req.fresh_cache(&m);
        cache.absorb(&s);
        let k = key("fc1.weight", &cands[0].to_string());
        cache.cells.get_mut(&k).unwrap().weight_mse = 12345.0;
        let again = compute(&m, &req, &cache, &Progress::default(), &mut |_, _| {}).unwrap();
        assert_eq!(again.cells[0][0].weight_mse, 12345.0);
        // cancelled: an error, not a partial result
        let p = Progress::default();
        p.cancel();
        assert!(matches!(
            compute(&m, &req, &Cache::default(), &p, &mut |_, _| {}),
            Err(PlanError::Cancelled)
        ));
    }

    /// With a probe, only the first candidate of each layer runs the model; every cell's probed KL is
    /// that run's KL scaled by the cell's error against the probe's, and the cache serves the rest.
    #[test]
    fn a_probe_runs_one_cell_per_layer_and_scales_the_others() {
        let m = sample();
        let ev = EvalSet::for_model(&m, None, 300).unwrap().unwrap();
        let cal = crate::activations::capture(&m, 64, 32).unwrap();
        let cands: Vec<Spec> = ["int4", "int8", "int2"]
            .iter()
            .map(|s| Spec::parse(s).unwrap())
            .collect();
        let mut req = Request {
            layers: default_layers(&m),
            candidates: cands,
            extra: Vec::new(),
            eval: Some(&ev),
            lm: None,
            activations: Some(&cal),
            probe: Some(0),
        };
        let run = |req: &Request, cache: &Cache| {
            compute(&m, req, cache, &Progress::default(), &mut |_, _| {})
        };
        let probed = run(&req, &req.fresh_cache(&m)).unwrap();
        for row in &probed.cells {
            let (p, kl) = (&row[0], row[0].end_to_end.unwrap().kl);
            assert_eq!(p.probed_kl, Some(kl));
            for c in &row[1..] {
                assert!(c.end_to_end.is_none(), "only the probe runs the model");
                let (nsr, at_probe) = match (c.output_nsr, p.output_nsr) {
                    (Some(a), Some(b)) => (a, b),
                    _ => (c.weight_nsr, p.weight_nsr),
                };
                let want = kl * nsr / at_probe;
                assert!((c.probed_kl.unwrap() - want).abs() <= 1e-12 * want);
            }
        }
        assert!(!probed.available().contains(&Measure::EndToEnd));
        assert_eq!(probed.best_measure(), Measure::ProbedKl);
        // without a probe every cell runs the model and none is carried; a probed run over that
        // cache takes all its cells from it and carries the same KL
        req.probe = None;
        let full = run(&req, &req.fresh_cache(&m)).unwrap();
        assert!(full.cells.iter().flatten().all(|c| c.probed_kl.is_none()));
        let mut cache = req.fresh_cache(&m);
        cache.absorb(&full);
        req.probe = Some(0);
        let again = run(&req, &cache).unwrap();
        for (a, b) in again
            .cells
            .iter()
            .flatten()
            .zip(probed.cells.iter().flatten())
        {
            assert_eq!(a.probed_kl, b.probed_kl);
        }
        req.probe = Some(3);
        assert!(run(&req, &cache).is_err());
        // an exact probe gives no gain: only an exact cell is known
        let mut row = vec![probed.cells[0][0].clone(), probed.cells[0][1].clone()];
        row[0].weight_nsr = 0.0;
        row[0].output_nsr = Some(0.0);
        carry_probe(&mut row, 0);
        assert_eq!((row[0].probed_kl, row[1].probed_kl), (Some(0.0), None));
    }
}
