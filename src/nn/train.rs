//! Training the sample models with quantized weights, starting from the float model:
//!
//! - **QAT**: the forward pass uses the weights fake-quantized by a spec (`quant::quantize`, the same
//!   quantizer `eval --spec` applies after training); the backward pass is the straight-through
//!   estimator (Bengio et al. 2013, arXiv 1308.3432): the gradient of the quantized weight is applied to
//!   the latent float weight where it was inside the clip range, zero where it was clamped (PyTorch's
//!   fake-quantize cachemask; quantization.md §10). With `act`, every layer's input is fake-quantized too,
//!   its range calibrated (min–max over the calibration rows, as `eval --act` does) once per epoch.
//! - **binary** (spec `binary`): BinaryConnect (Courbariaux et al. 2015, arXiv 1511.00363) with
//!   XNOR-Net's per-filter scale `α = mean|W|` (Rastegari et al. 2016, arXiv 1603.05279): forward
//!   `α·sign(W)`, backward XNOR-Net's `∂C/∂W = ∂C/∂W̃ · (1/n + α·1[|W| ≤ 1])`, and the latent weights
//!   clipped to [−1, 1] after every update (BinaryConnect).
//! - **ternary TWN** (spec `ternary`): Li & Liu 2016 (arXiv 1605.04711), `Δ = 0.7·mean|W|`,
//!   `α = mean of |W| above Δ`, gradients straight through.
//! - **ternary TTQ** (Zhu, Han, Mao, Dally 2016, arXiv 1612.01064): latent weights normalised to
//!   [−1, 1] by their maximum, threshold `Δ = t·max|w̃|` with t = 0.05, and two learned scales per layer
//!   `W^p`, `W^n`: `w_t = W^p (w̃ > Δ), 0 (|w̃| ≤ Δ), −W^n (w̃ < −Δ)`. Their gradients are sums over the
//!   positive and negative sets; the latent gradient is scaled by `W^p`, 1 or `W^n`.
//! - **k-means fine-tuning** (Deep Compression, Han et al. 2016, arXiv 1510.00149 §3.3): cluster each
//!   layer once (`kmeansN`, the same codebook `eval --spec kmeansN` uses), keep the indices, and train
//!   the centroids with the shared-weight gradient `∂L/∂C_k = Σ_{i: I_i = k} ∂L/∂W_i` (summed, as the
//!   paper; the MIT lab averages instead, quantization.md §8 and §12.10).
//!
//! Biases stay in float and are trained in every mode unless frozen (1-D tensors are not quantized, as
//! in PTQ).
//! Data: the model's training rows (`training_set`), shuffled each epoch with a seeded permutation;
//! evaluation on the held-out split. The loss is softmax cross-entropy; the optimiser Adam (Kingma & Ba
//! 2015, arXiv 1412.6980, PyTorch's defaults β = (0.9, 0.999), ε = 1e-8) or SGD with momentum 0.9, with
//! a cosine learning-rate schedule (Loshchilov & Hutter 2017, arXiv 1608.03983, without restarts).
//! Everything is deterministic for a seed.

use super::backward::cross_entropy;
use super::{
    calibration_set, dataset_bytes, evaluate_with, held_out, training_set, Dataset, Network,
    NnError,
};
use crate::model::{write_safetensors, Model, TensorEntry};
use crate::quant::fixed::FixedQuant;
use crate::quant::{quantize, Family, Quantized, Spec};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// TTQ's threshold factor: `Δ = t·max|w̃|` (Zhu et al. 2016, "we set t to 0.05 in experiments").
pub const TTQ_T: f32 = 0.05;
/// Calibration rows for the activation ranges: the same number `eval --act` uses by default.
pub const CALIB_EXAMPLES: usize = 512;
/// Batch size of the calibration passes (as `eval`'s capture).
const CALIB_BATCH: usize = 32;

/// What is learned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Fake quantization with this spec in the forward pass, the straight-through estimator backward
    /// (binary: BinaryConnect with XNOR scaling; ternary: TWN).
    Qat(Spec),
    /// Deep Compression: 2^N centroids per layer, indices fixed, centroids trained.
    Kmeans(u32),
    /// Trained ternary quantization with learned positive and negative scales.
    Ttq,
}

impl Mode {
    /// `ttq`, `twn` (= `ternary`), `kmeansN` (k-means fine-tuning), or any weight spec (QAT).
    pub fn parse(text: &str) -> Result<Mode, String> {
        let t = text.trim();
        match t.to_ascii_lowercase().as_str() {
            "ttq" => return Ok(Mode::Ttq),
            "twn" => {
                return Ok(Mode::Qat(
                    Spec::parse("ternary").map_err(|e| e.to_string())?,
                ))
            }
            _ => {}
        }
        let spec = Spec::parse(t).map_err(|e| e.to_string())?;
        Mode::from_spec(spec)
    }

    /// The mode a weight spec trains with: `kmeansN` fine-tunes a codebook, everything else is QAT.
    pub fn from_spec(spec: Spec) -> Result<Mode, String> {
        match spec.family {
            Family::Kmeans(b) => Ok(Mode::Kmeans(b)),
            _ if spec.adaround => Err(
                "round=adaround learns rounding after training; QAT learns the weights themselves"
                    .into(),
            ),
            Family::None | Family::Bf16 | Family::Fp16 => Err(format!(
                "'{spec}' does not quantize to a grid; QAT needs an integer, float, block, binary \
                 or ternary format"
            )),
            _ => Ok(Mode::Qat(spec)),
        }
    }

    /// A short name for tables: `int4`, `k-means 3-bit`, `binary (XNOR)`, `ternary TWN`, `ternary TTQ`.
    pub fn label(&self) -> String {
        match self {
            Mode::Qat(s) => match s.family {
                Family::Binary => "binary (XNOR)".into(),
                Family::Ternary => "ternary TWN".into(),
                _ => s.short(),
            },
            Mode::Kmeans(b) => format!("k-means {b}-bit"),
            Mode::Ttq => "ternary TTQ".into(),
        }
    }

    /// Bits per stored weight (elements only; scales and codebooks are a few per layer).
    pub fn bits(&self) -> f64 {
        match self {
            Mode::Qat(s) => match s.family {
                Family::Int(b) | Family::Uint(b) | Family::Kmeans(b) => b as f64,
                Family::Binary => 1.0,
                // three levels: log2(3) bits of information, stored in 2
                Family::Ternary => 2.0,
                Family::Float(f) => f.bits() as f64,
                Family::Nf4 | Family::Nvfp4 => 4.0,
                _ => f64::NAN,
            },
            Mode::Kmeans(b) => *b as f64,
            Mode::Ttq => 2.0,
        }
    }

    /// The weight spec whose post-training quantization is this mode's starting point (TTQ: none,
    /// its quantizer is its own).
    pub fn ptq_spec(&self) -> Option<String> {
        match self {
            Mode::Qat(s) => Some(s.short()),
            Mode::Kmeans(b) => Some(format!("kmeans{b}")),
            Mode::Ttq => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Adam,
    Sgd,
}

impl Optimizer {
    pub fn parse(s: &str) -> Result<Optimizer, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "adam" => Ok(Optimizer::Adam),
            "sgd" => Ok(Optimizer::Sgd),
            _ => Err(format!("unknown optimizer '{s}': adam or sgd")),
        }
    }
}

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub mode: Mode,
    /// Activation format for every layer's input (e.g. `uint8`), or float activations.
    pub act: Option<Spec>,
    pub epochs: usize,
    /// Peak learning rate (cosine-decayed to 0 over the run).
    pub lr: f32,
    pub batch: usize,
    pub seed: u64,
    pub optimizer: Optimizer,
    /// Train on at most this many training rows (an even, class-balanced stride; for quick runs).
    pub max_rows: Option<usize>,
    /// Keep the biases as they are (train only the quantized weights / codebooks / scales).
    pub freeze_bias: bool,
}

impl TrainConfig {
    /// The defaults the CLI and the window start from: 8 epochs of Adam at 1e-3, batch 32, seed 0.
    pub fn new(mode: Mode) -> TrainConfig {
        TrainConfig {
            mode,
            act: None,
            epochs: 8,
            lr: 1e-3,
            batch: 32,
            seed: 0,
            optimizer: Optimizer::Adam,
            max_rows: None,
            freeze_bias: false,
        }
    }

    fn check(&self) -> Result<(), NnError> {
        let bad = |s: &str| Err(NnError::Data(s.into()));
        if self.batch == 0 {
            return bad("the batch size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the learning rate must be a positive number");
        }
        if let Some(a) = &self.act {
            FixedQuant::new(a, 0.0, 1.0).map_err(|e| NnError::Data(format!("--act: {e}")))?;
        }
        Ok(())
    }
}

/// Accuracy and loss after an epoch (epoch 0: the quantized model before any training).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean loss and accuracy over the epoch's batches (as the weights were during the epoch).
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub held_out_loss: f64,
    pub held_out_accuracy: f64,
    /// Steps taken so far.
    pub steps: usize,
    /// Per layer, what the mode learns besides the weights: k-means centroids, TTQ's `[W^n, W^p]`.
    pub codebooks: Vec<Vec<f32>>,
}

/// What a training run reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// One optimiser step.
    Step {
        epoch: usize,
        step: usize,
        steps_per_epoch: usize,
        loss: f64,
        accuracy: f64,
    },
    /// An epoch ended (or training began: epoch 0).
    Epoch(EpochStats),
}

/// Per layer, the learned quantizer's state after training.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerResult {
    pub name: String,
    pub shape: Vec<usize>,
    /// k-means: the centroids; TTQ: `[W^n, W^p]`; otherwise empty.
    pub codebook: Vec<f32>,
    /// TTQ: the final threshold Δ in latent units (`t·max|w̃|`).
    pub threshold: Option<f32>,
    /// Distinct weight values in the saved tensor (a check on the bit-width).
    pub distinct_values: usize,
}

/// A finished (or stopped) run.
pub struct Trained {
    pub config: TrainConfig,
    /// Epoch 0 (before training) and every epoch run.
    pub history: Vec<EpochStats>,
    /// The network with its final quantized weights (what [`Trained::save`] writes).
    pub net: Network,
    /// The activation quantizers the final evaluation used (keyed by layer).
    pub act: Option<HashMap<String, FixedQuant>>,
    pub layers: Vec<LayerResult>,
    /// True when the callback asked to stop before the last epoch.
    pub stopped: bool,
    /// Training rows used.
    pub train_rows: usize,
    pub held_out_rows: usize,
    /// Held-out accuracy and loss of the saved weights with float activations (what `eval` prints
    /// without `--act`).
    pub weights_only: (f64, f64),
    /// Accuracy of the saved weights on the training rows (float activations).
    pub train_accuracy: f64,
}

impl Trained {
    pub fn before(&self) -> &EpochStats {
        &self.history[0]
    }

    pub fn after(&self) -> &EpochStats {
        self.history.last().expect("epoch 0 is always there")
    }

    /// What the run was, in words, for metadata and tables.
    pub fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{} from the float model, activations {}, {} epochs of {} at lr {} (cosine), batch {}, seed {}{}",
            c.mode.label(),
            c.act.map(|a| a.short()).unwrap_or("float".into()),
            self.after().epoch,
            match c.optimizer {
                Optimizer::Adam => "Adam",
                Optimizer::Sgd => "SGD (momentum 0.9)",
            },
            c.lr,
            c.batch,
            c.seed,
            if c.freeze_bias { ", biases frozen" } else { "" }
        )
    }

    /// The run as JSON (the CLI's `--json`, and the saved model's `quantscope_training` metadata).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.config;
        let act_ranges: Option<serde_json::Map<String, serde_json::Value>> =
            self.act.as_ref().map(|m| {
                let mut names: Vec<&String> = m.keys().collect();
                names.sort();
                names
                    .into_iter()
                    .map(|k| {
                        let q = &m[k];
                        (
                            k.clone(),
                            serde_json::json!({"range": [q.range.0, q.range.1], "scale": q.scale, "zero_point": q.zero}),
                        )
                    })
                    .collect()
            });
        serde_json::json!({
            "mode": c.mode.label(),
            "spec": match c.mode { Mode::Qat(s) => Some(s.to_string()), _ => None },
            "ptq_spec": c.mode.ptq_spec(),
            "bits": c.mode.bits(),
            "act": c.act.map(|a| a.short()),
            "epochs": c.epochs,
            "epochs_run": self.after().epoch,
            "stopped": self.stopped,
            "lr": c.lr,
            "schedule": "cosine",
            "batch": c.batch,
            "seed": c.seed,
            "optimizer": c.optimizer,
            "freeze_bias": c.freeze_bias,
            "train_rows": self.train_rows,
            "held_out_rows": self.held_out_rows,
            "before": self.before(),
            "after": self.after(),
            "history": self.history.iter().map(|e| serde_json::json!({
                "epoch": e.epoch, "train_loss": e.train_loss, "train_accuracy": e.train_accuracy,
                "held_out_loss": e.held_out_loss, "held_out_accuracy": e.held_out_accuracy,
            })).collect::<Vec<_>>(),
            "weights_only": {"accuracy": self.weights_only.0, "loss": self.weights_only.1},
            "train_accuracy": self.train_accuracy,
            "layers": self.layers,
            "act_ranges": act_ranges,
        })
    }

    /// Write the trained model: every tensor of `source` (the trained weights and biases in place of
    /// the originals, f32), its metadata with the accuracies updated, and how it was trained
    /// (`trained_by`, `quantscope_training`). Written to a temporary file and renamed.
    pub fn save(&self, source: &Model, path: &Path) -> Result<(), NnError> {
        let mut params: HashMap<String, &[f32]> = HashMap::new();
        for w in self.net.layers() {
            params.insert(format!("{}.weight", w.name), &w.weight);
            params.insert(format!("{}.bias", w.name), &w.bias);
        }
        let entries: Vec<TensorEntry> = source
            .tensors
            .iter()
            .map(|t| TensorEntry {
                name: t.name.clone(),
                dtype: safetensors::Dtype::F32,
                shape: t.shape.clone(),
            })
            .collect();
        let mut meta = source.metadata().cloned().unwrap_or_default();
        meta.insert(
            "held_out_accuracy".into(),
            format!("{:.4}", self.weights_only.0),
        );
        meta.insert(
            "held_out_loss".into(),
            format!("{:.6}", self.weights_only.1),
        );
        meta.insert(
            "train_accuracy".into(),
            format!("{:.4}", self.train_accuracy),
        );
        if let Some(a) = &self.config.act {
            meta.insert(
                "held_out_accuracy_with_act".into(),
                format!("{:.4} (activations {})", self.after().held_out_accuracy, a),
            );
        }
        meta.insert(
            "trained_by".into(),
            format!("quantscope train: {}", self.describe()),
        );
        meta.insert("source_model".into(), source.source.display().to_string());
        meta.insert("quantscope_training".into(), self.to_json().to_string());
        write_safetensors(path, Some(&meta), &entries, |i| {
            let t = &source.tensors[i];
            let v = match params.get(&t.name) {
                Some(v) => v.to_vec(),
                None => source.read_f32(t)?,
            };
            Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
        })?;
        Ok(())
    }
}

/// One layer's trainable state.
struct LayerState {
    shape: Vec<usize>,
    kind: Kind,
    bias: Vec<f32>,
}

enum Kind {
    /// Latent float weights, fake-quantized by `spec` each step; the last quantization, for the STE.
    Fake {
        spec: Spec,
        latent: Vec<f32>,
        last: Option<Box<Quantized>>,
    },
    /// Centroids (trained) and each weight's centroid index (fixed).
    Kmeans {
        centroids: Vec<f32>,
        index: Vec<u16>,
    },
    /// Normalised latent weights and the learned scales `[W^n, W^p]`.
    Ttq { latent: Vec<f32>, scales: Vec<f32> },
}

impl LayerState {
    fn init(mode: &Mode, weight: &[f32], shape: &[usize], bias: &[f32]) -> Result<Self, NnError> {
        let name = || format!("{shape:?} weight");
        let kind = match mode {
            Mode::Qat(spec) => Kind::Fake {
                spec: *spec,
                latent: weight.to_vec(),
                last: None,
            },
            Mode::Kmeans(bits) => {
                let spec = Spec::parse(&format!("kmeans{bits}"))
                    .map_err(|e| NnError::Quant(name(), e.into()))?;
                let q = quantize(weight, shape, &spec).map_err(|e| NnError::Quant(name(), e))?;
                Kind::Kmeans {
                    centroids: q.codebook.clone(),
                    index: q.codes.iter().map(|&c| c as u16).collect(),
                }
            }
            Mode::Ttq => {
                let m = weight.iter().fold(0f32, |a, v| a.max(v.abs()));
                let latent: Vec<f32> = if m > 0.0 {
                    weight.iter().map(|v| v / m).collect()
                } else {
                    weight.to_vec()
                };
                // Initial scales: the mean magnitude of the original weights in each set (the scale
                // that best fits them in the least-squares sense). The paper's networks have batch
                // norm after every layer and start the scales at 1; ours have none.
                let delta = TTQ_T;
                let mean = |pos: bool| {
                    let (s, c) = weight
                        .iter()
                        .zip(&latent)
                        .filter(|(_, &l)| if pos { l > delta } else { l < -delta })
                        .fold((0f64, 0usize), |(s, c), (w, _)| (s + w.abs() as f64, c + 1));
                    if c > 0 {
                        (s / c as f64) as f32
                    } else {
                        0.0
                    }
                };
                let scales = vec![mean(false), mean(true)];
                Kind::Ttq { latent, scales }
            }
        };
        Ok(LayerState {
            shape: shape.to_vec(),
            kind,
            bias: bias.to_vec(),
        })
    }

    /// The weights the forward pass uses now.
    fn effective(&mut self) -> Result<Vec<f32>, NnError> {
        Ok(match &mut self.kind {
            Kind::Fake { spec, latent, last } => {
                let q = quantize(latent, &self.shape, spec)
                    .map_err(|e| NnError::Quant(format!("{:?} weight", self.shape), e))?;
                let w = q.dequant.clone();
                *last = Some(Box::new(q));
                w
            }
            Kind::Kmeans { centroids, index } => {
                index.iter().map(|&i| centroids[i as usize]).collect()
            }
            Kind::Ttq { latent, scales } => {
                let d = ttq_delta(latent);
                latent.iter().map(|&l| ttq_value(l, d, scales)).collect()
            }
        })
    }

    /// The codebook the epoch report shows (k-means centroids, TTQ's scales).
    fn codebook(&self) -> Vec<f32> {
        match &self.kind {
            Kind::Kmeans { centroids, .. } => centroids.clone(),
            Kind::Ttq { scales, .. } => scales.clone(),
            Kind::Fake { .. } => Vec::new(),
        }
    }
}

fn ttq_delta(latent: &[f32]) -> f32 {
    TTQ_T * latent.iter().fold(0f32, |a, v| a.max(v.abs()))
}

#[inline]
fn ttq_value(l: f32, delta: f32, scales: &[f32]) -> f32 {
    if l > delta {
        scales[1]
    } else if l < -delta {
        -scales[0]
    } else {
        0.0
    }
}

/// The gradients of one layer's trainable tensors from the gradient `g` of its effective weights:
/// (main tensor, scales (TTQ only)).
fn param_grads(state: &LayerState, g: &[f32]) -> (Vec<f32>, Vec<f32>) {
    match &state.kind {
        Kind::Fake { spec, latent, last } => {
            let q = last
                .as_ref()
                .expect("the forward pass quantized the weights");
            (ste(spec, q, latent, g), Vec::new())
        }
        Kind::Kmeans { centroids, index } => {
            // shared weights: ∂L/∂C_k = Σ_{i: I_i = k} ∂L/∂W_i (Deep Compression §3.3)
            let mut gc = vec![0f64; centroids.len()];
            for (&i, &gv) in index.iter().zip(g) {
                gc[i as usize] += gv as f64;
            }
            (gc.into_iter().map(|v| v as f32).collect(), Vec::new())
        }
        Kind::Ttq { latent, scales } => {
            let d = ttq_delta(latent);
            let (mut gn, mut gp) = (0f64, 0f64);
            let gl: Vec<f32> = latent
                .iter()
                .zip(g)
                .map(|(&l, &gv)| {
                    if l > d {
                        gp += gv as f64;
                        scales[1] * gv
                    } else if l < -d {
                        // w_t = −W^n, so ∂L/∂W^n = −Σ_{I^n} ∂L/∂w_t. The paper writes the sum without
                        // the sign (its eq. 7); the chain rule on w_t = −W^n needs it.
                        gn -= gv as f64;
                        scales[0] * gv
                    } else {
                        gv
                    }
                })
                .collect();
            (gl, vec![gn as f32, gp as f32])
        }
    }
}

/// The straight-through estimator for a fake-quantized weight: `g` (the gradient of the quantized
/// weights) mapped to the latent weights.
fn ste(spec: &Spec, q: &Quantized, latent: &[f32], g: &[f32]) -> Vec<f32> {
    let l = q.layout;
    let gpr = l.groups_per_row();
    let group_of = |i: usize| (i / l.cols) * gpr + (i % l.cols) / l.group;
    let group_len = |gi: usize| {
        let start = (gi % gpr) * l.group;
        l.group.min(l.cols - start)
    };
    match spec.family {
        // clipped STE: pass where nearbyint(w/S) + Z is inside [q_min, q_max] (quantization.md §10)
        Family::Int(b) if !spec.vsq => {
            let qmax = ((1u32 << (b - 1)) - 1) as f32;
            latent
                .iter()
                .zip(g)
                .enumerate()
                .map(|(i, (&w, &gv))| {
                    let s = q.scales[group_of(i)];
                    let c = (w / s).clamp(-qmax - 1.0, qmax + 1.0).round_ties_even();
                    if c.abs() <= qmax {
                        gv
                    } else {
                        0.0
                    }
                })
                .collect()
        }
        Family::Uint(b) => {
            let qmax = ((1u32 << b) - 1) as f32;
            latent
                .iter()
                .zip(g)
                .enumerate()
                .map(|(i, (&w, &gv))| {
                    let gi = group_of(i);
                    let (s, z) = (q.scales[gi], q.zero_points[gi] as f32);
                    let c = (w / s).clamp(-qmax - 1.0, qmax + 1.0).round_ties_even() + z;
                    if (0.0..=qmax).contains(&c) {
                        gv
                    } else {
                        0.0
                    }
                })
                .collect()
        }
        // XNOR-Net: ∂C/∂W_i = ∂C/∂W̃_i · (1/n + α·1[|W_i| ≤ 1]), n the filter's (group's) size
        Family::Binary => latent
            .iter()
            .zip(g)
            .enumerate()
            .map(|(i, (&w, &gv))| {
                let gi = group_of(i);
                let n = group_len(gi) as f32;
                let alpha = q.scales[gi];
                gv * (1.0 / n + if w.abs() <= 1.0 { alpha } else { 0.0 })
            })
            .collect(),
        // TWN and every other format: the plain STE, ∂ŵ/∂w := 1
        _ => g.to_vec(),
    }
}

/// Adam or SGD with momentum, one state per parameter tensor.
struct Opt {
    kind: Optimizer,
    t: i32,
    state: HashMap<usize, (Vec<f32>, Vec<f32>)>,
}

impl Opt {
    fn new(kind: Optimizer) -> Opt {
        Opt {
            kind,
            t: 0,
            state: HashMap::new(),
        }
    }

    /// Call once per step, before the updates of that step.
    fn tick(&mut self) {
        self.t += 1;
    }

    fn update(&mut self, slot: usize, p: &mut [f32], g: &[f32], lr: f32) {
        let (m, v) = self
            .state
            .entry(slot)
            .or_insert_with(|| (vec![0.0; p.len()], vec![0.0; p.len()]));
        match self.kind {
            Optimizer::Adam => {
                // PyTorch's torch.optim.Adam defaults (Kingma & Ba 2015, Algorithm 1)
                let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
                let c1 = 1.0 - b1.powi(self.t);
                let c2 = 1.0 - b2.powi(self.t);
                for i in 0..p.len() {
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    let mh = m[i] / c1;
                    let vh = v[i] / c2;
                    p[i] -= lr * mh / (vh.sqrt() + eps);
                }
            }
            Optimizer::Sgd => {
                // torch.optim.SGD(momentum=0.9): buf = μ·buf + g; p -= lr·buf
                for i in 0..p.len() {
                    m[i] = 0.9 * m[i] + g[i];
                    p[i] -= lr * m[i];
                }
            }
        }
    }
}

/// A seeded permutation of `0..n` (Fisher–Yates on SplitMix64 numbers).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut state = seed ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// Activation quantizers from the min–max range of every layer's input on the calibration rows, with
/// float activations (exactly what `eval --act SPEC` computes for the same weights).
pub fn calibrate_act(
    net: &Network,
    cal: &Dataset,
    spec: &Spec,
) -> Result<HashMap<String, FixedQuant>, NnError> {
    let mut ranges: HashMap<String, (f32, f32)> = HashMap::new();
    let batches = cal.len().div_ceil(CALIB_BATCH);
    for b in 0..batches {
        let part = cal.slice(b * CALIB_BATCH..((b + 1) * CALIB_BATCH).min(cal.len()));
        net.forward_with(&part.x, part.len(), None, &mut |io| {
            let r = ranges
                .entry(io.name.to_string())
                .or_insert((f32::INFINITY, f32::NEG_INFINITY));
            for &v in io.input {
                r.0 = r.0.min(v);
                r.1 = r.1.max(v);
            }
        });
    }
    ranges
        .into_iter()
        .map(|(k, (lo, hi))| {
            let q = FixedQuant::new(spec, lo, hi).map_err(|e| NnError::Quant(k.clone(), e))?;
            Ok((k, q))
        })
        .collect()
}

/// Train `model` as `cfg` says. `on_event` sees every step and epoch; returning false stops the run
/// after that step (the result is then evaluated and returned as it stands).
pub fn train(
    model: &Model,
    cfg: &TrainConfig,
    on_event: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Trained, NnError> {
    cfg.check()?;
    let bytes = dataset_bytes(model)?;
    let mut train_set = training_set(model, &bytes)?;
    if let Some(m) = cfg.max_rows.filter(|&m| m < train_set.len()) {
        // an even stride over the file (sorted by label), so every class keeps its share
        let idx: Vec<usize> = (0..m).map(|k| k * train_set.len() / m).collect();
        train_set = train_set.gather(&idx);
    }
    if train_set.is_empty() {
        return Err(NnError::Data("no training rows".into()));
    }
    let test = held_out(model, &bytes)?;
    let cal = match cfg.act {
        Some(_) => Some(calibration_set(model, &bytes, CALIB_EXAMPLES)?),
        None => None,
    };
    let mut net = Network::from_model(model, None)?;
    if train_set.features != net.input {
        return Err(NnError::Data(format!(
            "the data has {} features, the network takes {}",
            train_set.features, net.input
        )));
    }
    let mut states: Vec<LayerState> = net
        .layers()
        .map(|w| LayerState::init(&cfg.mode, &w.weight, &w.shape, &w.bias))
        .collect::<Result<_, _>>()?;

    // Write the effective weights into the network.
    let apply = |net: &mut Network, states: &mut [LayerState]| -> Result<(), NnError> {
        for (w, s) in net.layers_mut().zip(states.iter_mut()) {
            w.weight = s.effective()?;
            w.bias.clone_from(&s.bias);
        }
        Ok(())
    };
    let calibrate = |net: &Network| -> Result<Option<HashMap<String, FixedQuant>>, NnError> {
        match (&cfg.act, &cal) {
            (Some(spec), Some(cal)) => Ok(Some(calibrate_act(net, cal, spec)?)),
            _ => Ok(None),
        }
    };
    let codebooks = |states: &[LayerState]| states.iter().map(|s| s.codebook()).collect();

    // Epoch 0 is post-training quantization exactly as `eval --spec S --act A` does it: activation
    // ranges from the float model, weights quantized. From then on the ranges are recalibrated after
    // every epoch on the network as it is (so the saved model's are what `eval OUT --act A` finds).
    let mut act = calibrate(&net)?;
    apply(&mut net, &mut states)?;
    let (acc0, loss0) = evaluate_with(&net, &test, act.as_ref())?;
    let first = EpochStats {
        epoch: 0,
        train_loss: None,
        train_accuracy: None,
        held_out_loss: loss0,
        held_out_accuracy: acc0,
        steps: 0,
        codebooks: codebooks(&states),
    };
    let mut history = vec![first.clone()];
    let mut stopped = !on_event(&TrainEvent::Epoch(first));

    let outputs = net.forward(&train_set.x[..net.input], 1).len();
    if let Some(&bad) = train_set.y.iter().find(|&&y| y >= outputs) {
        return Err(NnError::Data(format!(
            "label {bad} but the network has {outputs} outputs"
        )));
    }
    let n = train_set.len();
    let steps_per_epoch = n.div_ceil(cfg.batch);
    let total_steps = (steps_per_epoch * cfg.epochs).max(1);
    let mut opt = Opt::new(cfg.optimizer);
    let mut step = 0usize;
    let is_binary = matches!(cfg.mode, Mode::Qat(s) if s.family == Family::Binary);
    let mut epoch = 0;
    while epoch < cfg.epochs && !stopped {
        epoch += 1;
        let order = permutation(
            n,
            cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64),
        );
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for (bi, idx) in order.chunks(cfg.batch).enumerate() {
            let b = train_set.gather(idx);
            if bi > 0 {
                apply(&mut net, &mut states)?;
            }
            let tape = net.forward_taped(&b.x, b.len(), act.as_ref());
            let (loss, ok, d_logits) = cross_entropy(&tape.output, &b.y);
            let grads = net.backward(&tape, act.as_ref(), &d_logits, false);
            // cosine schedule over the planned run
            let lr = cfg.lr
                * 0.5
                * (1.0 + (std::f32::consts::PI * step as f32 / total_steps as f32).cos());
            opt.tick();
            for (li, s) in states.iter_mut().enumerate() {
                let (gm, gs) = param_grads(s, &grads.weight[li]);
                match &mut s.kind {
                    Kind::Fake { latent, .. } => {
                        opt.update(3 * li, latent, &gm, lr);
                        if is_binary {
                            // BinaryConnect keeps the real-valued weights in [−1, 1]
                            latent.iter_mut().for_each(|w| *w = w.clamp(-1.0, 1.0));
                        }
                    }
                    Kind::Kmeans { centroids, .. } => opt.update(3 * li, centroids, &gm, lr),
                    Kind::Ttq { latent, scales } => {
                        opt.update(3 * li, latent, &gm, lr);
                        opt.update(3 * li + 1, scales, &gs, lr);
                        // a scale below zero would flip the sign of a whole set
                        scales.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                }
                if !cfg.freeze_bias {
                    opt.update(3 * li + 2, &mut s.bias, &grads.bias[li], lr);
                }
            }
            step += 1;
            loss_sum += loss * b.len() as f64;
            correct += ok;
            seen += b.len();
            let go = on_event(&TrainEvent::Step {
                epoch,
                step: bi + 1,
                steps_per_epoch,
                loss,
                accuracy: ok as f64 / b.len() as f64,
            });
            if !go {
                stopped = true;
                break;
            }
        }
        apply(&mut net, &mut states)?;
        act = calibrate(&net)?;
        let (acc, l) = evaluate_with(&net, &test, act.as_ref())?;
        let stats = EpochStats {
            epoch,
            train_loss: Some(loss_sum / seen.max(1) as f64),
            train_accuracy: Some(correct as f64 / seen.max(1) as f64),
            held_out_loss: l,
            held_out_accuracy: acc,
            steps: step,
            codebooks: codebooks(&states),
        };
        history.push(stats.clone());
        if !on_event(&TrainEvent::Epoch(stats)) {
            stopped = true;
        }
    }
    // a callback declining after the last step ends nothing early
    let stopped = stopped && step < steps_per_epoch * cfg.epochs;
    let weights_only = evaluate_with(&net, &test, None)?;
    let train_accuracy = evaluate_with(&net, &train_set, None)?.0;
    let layers = net
        .layers()
        .zip(&states)
        .map(|(w, s)| {
            let mut v: Vec<u32> = w.weight.iter().map(|x| x.to_bits()).collect();
            v.sort_unstable();
            v.dedup();
            LayerResult {
                name: w.name.clone(),
                shape: s.shape.clone(),
                codebook: s.codebook(),
                threshold: match &s.kind {
                    Kind::Ttq { latent, .. } => Some(ttq_delta(latent)),
                    _ => None,
                },
                distinct_values: v.len(),
            }
        })
        .collect();
    Ok(Trained {
        config: cfg.clone(),
        history,
        net,
        act,
        layers,
        stopped,
        train_rows: train_set.len(),
        held_out_rows: test.len(),
        weights_only,
        train_accuracy,
    })
}

/// One row of the PTQ-vs-trained table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareRow {
    /// e.g. `int4`, `k-means 3-bit`, `ternary TTQ`.
    pub method: String,
    /// Bits per weight (elements).
    pub bits: f64,
    /// The quantized model before training (post-training quantization of the same quantizer).
    pub ptq_accuracy: f64,
    pub ptq_loss: f64,
    /// After training.
    pub trained_accuracy: f64,
    pub trained_loss: f64,
    pub epochs: usize,
}

impl CompareRow {
    pub fn from_trained(t: &Trained) -> CompareRow {
        CompareRow {
            method: t.config.mode.label(),
            bits: t.config.mode.bits(),
            ptq_accuracy: t.before().held_out_accuracy,
            ptq_loss: t.before().held_out_loss,
            trained_accuracy: t.after().held_out_accuracy,
            trained_loss: t.after().held_out_loss,
            epochs: t.after().epoch,
        }
    }
}

/// The modes of the comparison table, in its order: int8, int4, int3, int2 (QAT), k-means 3 and 2 bits
/// (fine-tuned), ternary TWN, ternary TTQ, binary.
pub fn comparison_modes() -> Vec<Mode> {
    let spec = |s: &str| Spec::parse(s).expect("a valid spec");
    vec![
        Mode::Qat(spec("int8")),
        Mode::Qat(spec("int4")),
        Mode::Qat(spec("int3")),
        Mode::Qat(spec("int2")),
        Mode::Kmeans(3),
        Mode::Kmeans(2),
        Mode::Qat(spec("ternary")),
        Mode::Ttq,
        Mode::Qat(spec("binary")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> Model {
        crate::nn::sample_mlp()
    }

    fn quick(mode: &str) -> TrainConfig {
        TrainConfig {
            epochs: 2,
            max_rows: Some(400),
            ..TrainConfig::new(Mode::parse(mode).unwrap())
        }
    }

    #[test]
    fn modes_parse_and_name_themselves() {
        assert_eq!(Mode::parse("ttq").unwrap(), Mode::Ttq);
        assert_eq!(Mode::parse("kmeans3").unwrap(), Mode::Kmeans(3));
        assert_eq!(Mode::parse("twn").unwrap().label(), "ternary TWN");
        assert_eq!(Mode::parse("int4").unwrap().label(), "int4");
        assert_eq!(Mode::parse("int4:g16").unwrap().label(), "int4:g16");
        assert_eq!(Mode::parse("binary").unwrap().bits(), 1.0);
        assert!(Mode::parse("none").is_err());
        assert!(Mode::parse("int4:round=adaround").is_err());
        assert!(Mode::parse("int9").is_err());
    }

    #[test]
    fn permutations_are_permutations_and_seeded() {
        let p = permutation(1000, 3);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_eq!(p, permutation(1000, 3));
        assert_ne!(p, permutation(1000, 4));
    }

    #[test]
    fn qat_at_two_bits_learns_and_keeps_its_grid() {
        let m = digits();
        let t = train(&m, &quick("int2"), &mut |_| true).unwrap();
        assert_eq!(t.history.len(), 3);
        assert!(
            t.after().held_out_accuracy > t.before().held_out_accuracy + 0.1,
            "{:?}",
            t.history
        );
        // int2 per channel: each row holds at most the three values {−S, 0, S}
        for w in t.net.layers() {
            for row in w.weight.chunks(w.k) {
                let mut v: Vec<u32> = row.iter().map(|x| x.abs().to_bits()).collect();
                v.sort();
                v.dedup();
                assert!(v.len() <= 2, "{}: {v:?}", w.name);
            }
        }
    }

    #[test]
    fn runs_are_deterministic_for_a_seed() {
        let m = digits();
        let a = train(&m, &quick("ternary"), &mut |_| true).unwrap();
        let b = train(&m, &quick("ternary"), &mut |_| true).unwrap();
        assert_eq!(a.history, b.history);
        let wa: Vec<&Vec<f32>> = a.net.layers().map(|w| &w.weight).collect();
        let wb: Vec<&Vec<f32>> = b.net.layers().map(|w| &w.weight).collect();
        assert_eq!(wa, wb);
        let mut other = quick("ternary");
        other.seed = 1;
        let c = train(&m, &other, &mut |_| true).unwrap();
        assert_ne!(a.history, c.history);
    }

    #[test]
    fn a_callback_can_stop_a_run() {
        let m = digits();
        let mut steps = 0;
        let t = train(&m, &quick("int4"), &mut |e| {
            if let TrainEvent::Step { .. } = e {
                steps += 1;
            }
            steps < 3
        })
        .unwrap();
        assert_eq!(steps, 3);
        assert!(t.stopped);
        assert_eq!(t.after().epoch, 1);
        assert_eq!(t.after().steps, 3);
    }

    /// The loss of `net` on a batch.
    fn batch_loss(net: &Network, b: &Dataset) -> f64 {
        cross_entropy(&net.forward(&b.x, b.len()), &b.y).0
    }

    #[test]
    fn centroid_and_ttq_scale_gradients_are_true_gradients() {
        // k-means and TTQ are linear in their codebooks: their gradients must match finite differences
        let m = digits();
        let b = training_set(&m, &dataset_bytes(&m).unwrap())
            .unwrap()
            .gather(&(0..64).map(|i| i * 20).collect::<Vec<_>>());
        for mode in [Mode::Kmeans(2), Mode::Ttq] {
            let mut net = Network::from_model(&m, None).unwrap();
            let mut states: Vec<LayerState> = net
                .layers()
                .map(|w| LayerState::init(&mode, &w.weight, &w.shape, &w.bias).unwrap())
                .collect();
            let set = |net: &mut Network, states: &mut [LayerState]| {
                for (w, s) in net.layers_mut().zip(states.iter_mut()) {
                    w.weight = s.effective().unwrap();
                }
            };
            set(&mut net, &mut states);
            let tape = net.forward_taped(&b.x, b.len(), None);
            let (_, _, d) = cross_entropy(&tape.output, &b.y);
            let grads = net.backward(&tape, None, &d, false);
            for li in 0..states.len() {
                let (gm, gs) = param_grads(&states[li], &grads.weight[li]);
                let (analytic, len) = match mode {
                    Mode::Kmeans(_) => (gm, states[li].codebook().len()),
                    _ => (gs, 2),
                };
                for j in 0..len {
                    let h = 1e-4f32;
                    let mut at = |delta: f32| {
                        match &mut states[li].kind {
                            Kind::Kmeans { centroids, .. } => centroids[j] += delta,
                            Kind::Ttq { scales, .. } => scales[j] += delta,
                            Kind::Fake { .. } => unreachable!(),
                        }
                        set(&mut net, &mut states);
                        let l = batch_loss(&net, &b);
                        match &mut states[li].kind {
                            Kind::Kmeans { centroids, .. } => centroids[j] -= delta,
                            Kind::Ttq { scales, .. } => scales[j] -= delta,
                            Kind::Fake { .. } => unreachable!(),
                        }
                        l
                    };
                    let want = (at(h) - at(-h)) / (2.0 * h as f64);
                    let got = analytic[j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-3 + 2e-2 * want.abs(),
                        "{mode:?} layer {li} entry {j}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// ‖a − b‖ / ‖b‖ in f64.
    fn rel_err(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (num / den.max(1e-30)).sqrt()
    }

    #[test]
    fn gradients_match_pytorch_autograd() {
        // tests/data/train_grad_ref.safetensors: tools/make_train_reference.py (torch autograd on the CNN
        // sample model: float weights, and int4 fake-quantized weights through PyTorch's STE)
        let m = crate::nn::sample_cnn();
        let r = Model::open(Path::new("tests/data/train_grad_ref.safetensors")).unwrap();
        let get = |n: &str| r.read_f32(&r.tensors[r.find(n).unwrap()]).unwrap();
        let x = get("x");
        let y: Vec<usize> = get("y").iter().map(|&v| v as usize).collect();
        let n = y.len();
        for (prefix, mode) in [("", None), ("qat.", Some(Mode::parse("int4").unwrap()))] {
            let mut net = Network::from_model(&m, None).unwrap();
            let mut states: Vec<LayerState> = Vec::new();
            if let Some(mode) = mode {
                states = net
                    .layers()
                    .map(|w| LayerState::init(&mode, &w.weight, &w.shape, &w.bias).unwrap())
                    .collect();
                for (w, s) in net.layers_mut().zip(states.iter_mut()) {
                    w.weight = s.effective().unwrap();
                }
            }
            let tape = net.forward_taped(&x, n, None);
            let (loss, _, d) = cross_entropy(&tape.output, &y);
            let want = get(&format!("{prefix}loss"))[0] as f64;
            assert!(
                (loss - want).abs() < 1e-4 * want,
                "{prefix}loss {loss} vs {want}"
            );
            let g = net.backward(&tape, None, &d, false);
            for (li, w) in net.layers().enumerate() {
                let gw = match states.get(li) {
                    Some(s) => param_grads(s, &g.weight[li]).0,
                    None => g.weight[li].clone(),
                };
                let ew = rel_err(&gw, &get(&format!("{prefix}grad.{}.weight", w.name)));
                let eb = rel_err(&g.bias[li], &get(&format!("{prefix}grad.{}.bias", w.name)));
                assert!(ew < 1e-4 && eb < 1e-4, "{prefix}{}: {ew:e} {eb:e}", w.name);
            }
        }
    }

    #[test]
    fn kmeans_keeps_its_indices_and_moves_its_centroids() {
        let m = digits();
        let t = train(&m, &quick("kmeans2"), &mut |_| true).unwrap();
        for (l, w) in t.layers.iter().zip(t.net.layers()) {
            assert!(l.distinct_values <= 4, "{}: {}", l.name, l.distinct_values);
            assert_eq!(l.codebook.len(), 4);
            // every saved weight is one of the final centroids
            assert!(w.weight.iter().all(|v| l.codebook.contains(v)));
        }
        assert_ne!(t.before().codebooks, t.after().codebooks);
    }

    #[test]
    fn ttq_and_binary_weights_take_their_levels() {
        let m = digits();
        let t = train(&m, &quick("ttq"), &mut |_| true).unwrap();
        for (l, w) in t.layers.iter().zip(t.net.layers()) {
            let (wn, wp) = (l.codebook[0], l.codebook[1]);
            assert!(wn > 0.0 && wp > 0.0 && wn != wp, "{}: {wn} {wp}", l.name);
            assert!(w.weight.iter().all(|&v| v == 0.0 || v == wp || v == -wn));
        }
        let t = train(&m, &quick("binary"), &mut |_| true).unwrap();
        for w in t.net.layers() {
            for row in w.weight.chunks(w.k) {
                let a = row[0].abs();
                assert!(row.iter().all(|v| v.abs() == a), "{}", w.name);
            }
        }
    }

    #[test]
    fn frozen_biases_stay_as_they_were() {
        let m = digits();
        let mut c = quick("kmeans2");
        c.freeze_bias = true;
        let t = train(&m, &c, &mut |_| true).unwrap();
        let float = Network::from_model(&m, None).unwrap();
        for (a, b) in t.net.layers().zip(float.layers()) {
            assert_eq!(a.bias, b.bias, "{}", a.name);
        }
        assert!(t.after().held_out_accuracy > t.before().held_out_accuracy);
    }

    #[test]
    fn bad_settings_are_errors() {
        let m = digits();
        let mut c = quick("int4");
        c.batch = 0;
        assert!(train(&m, &c, &mut |_| true).is_err());
        let mut c = quick("int4");
        c.lr = f32::NAN;
        assert!(train(&m, &c, &mut |_| true).is_err());
        let mut c = quick("int4");
        c.act = Some(Spec::parse("nvfp4").unwrap());
        assert!(train(&m, &c, &mut |_| true).is_err());
    }
}
