//! Applying a plan: the model with its weights fake-quantized (quantized and dequantized, stored back in
//! each tensor's own dtype under its own name), so it loads wherever the original did; the files a
//! Hugging Face folder needs besides the weights (config, tokenizer, …) copied beside it; the plan and a
//! report of per-layer errors. Every file is written to a temporary name and renamed when complete; the
//! source is only read.
//!
//! The optional **packed form** (`quantscope_packed.safetensors`) holds what a deployment would store,
//! per quantized tensor `NAME`:
//!
//! | tensor | dtype | holds |
//! |---|---|---|
//! | `NAME.codes` | U8, I8 or I16 (the narrowest that holds them), the tensor's shape | one code per weight (not bit-packed) |
//! | `NAME.scales` | F32 `[groups]` | the stored scale of each group, groups numbered row by row |
//! | `NAME.zero_points` | I32 `[groups]` | uint formats |
//! | `NAME.outer_scales` | F32 | VS-Quant's per-row scale; NVFP4's tensor scale `[1]` |
//! | `NAME.codebook` | F32 | k-means centroids; the NF4 table |
//! | `NAME.values` | F16 / BF16 | plain casts (bf16, fp16) |
//!
//! and in the metadata, under `NAME`, `{"spec", "shape", "dtype"}`. [`read_packed`] decodes it back to the
//! same values as the fake-quantized weights (bit for bit; a test checks every family). The
//! shared-microexponent formats are not packable (their per-pair exponent bits are not kept).

use super::{Choice, Plan, PlanError, SummaryFile};
use crate::activations::Calibration;
use crate::formats::lookup;
use crate::jobs::Progress;
use crate::model::{
    le_bytes, write_safetensors, ElementCodec, Model, SourceKind, TensorEntry, TensorInfo,
};
use crate::quant::adaround::adaround_or_quantize;
use crate::quant::rows::{quantize_by_rows, rows_and_cols, Keep};
use crate::quant::spec::MxElem;
use crate::quant::{Family, Layout, QuantError, Quantized, Spec};
use rayon::prelude::*;
use safetensors::Dtype;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A plan's weights for a network ([`crate::nn::Weights`], from [`Plan::with_calibration`]): each tensor the plan quantizes, fake-quantized;
/// with a calibration, `round=adaround` specs learn their rounding from the layer's inputs.
#[derive(Clone, Copy)]
pub struct PlanWeights<'a> {
    pub plan: &'a Plan,
    pub cal: Option<&'a Calibration>,
}

impl Plan {
    /// This plan's weights for a network, learning AdaRound's rounding from `cal` where asked.
    pub fn with_calibration<'a>(&'a self, cal: Option<&'a Calibration>) -> PlanWeights<'a> {
        PlanWeights { plan: self, cal }
    }
}

impl crate::nn::Weights for PlanWeights<'_> {
    fn weights(&self, t: &TensorInfo, stored: Vec<f32>) -> Result<Vec<f32>, QuantError> {
        let Choice::Quantize(spec) = self.plan.resolve(&t.name, t.quantizable()).0 else {
            return Ok(stored);
        };
        let inputs = self
            .cal
            .and_then(|c| c.layer(&t.name))
            .map(|l| (&l.rows[..], l.k));
        Ok(adaround_or_quantize(&stored, &t.shape, &spec, inputs)?.into_dequant())
    }
}

/// A plan without a calibration ([`Plan::with_calibration`] with `None`).
impl crate::nn::Weights for Plan {
    fn weights(&self, t: &TensorInfo, stored: Vec<f32>) -> Result<Vec<f32>, QuantError> {
        self.with_calibration(None).weights(t, stored)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Also write `quantscope_packed.safetensors`.
    pub packed: bool,
}

/// Per quantized tensor: the errors of docs/DESIGN.md §3, and the largest error after storing the values in
/// the tensor's own dtype (what the written file holds).
#[derive(Debug, Clone, Serialize)]
pub struct TensorReport {
    pub name: String,
    pub spec: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub mse: f64,
    /// None when exact (+inf).
    pub sqnr_db: Option<f64>,
    pub cosine: f64,
    pub max_abs_err: f64,
    pub bits_per_weight: f64,
    pub bytes: u64,
    pub stored_max_abs_err: f64,
}

impl TensorReport {
    /// One quantized tensor's line of the report; `stored` is the largest error after storing.
    pub(super) fn new(t: &TensorInfo, spec: &Spec, q: &Quantized, stored: f64) -> TensorReport {
        let m = q.metrics;
        TensorReport {
            name: t.name.clone(),
            spec: spec.to_string(),
            shape: t.shape.clone(),
            dtype: format!("{:?}", t.dtype),
            mse: m.mse,
            sqnr_db: m.sqnr_db.is_finite().then_some(m.sqnr_db),
            cosine: m.cosine,
            max_abs_err: m.max_abs_err,
            bits_per_weight: m.bits_per_weight,
            bytes: m.bytes,
            stored_max_abs_err: stored,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub out: PathBuf,
    /// Files written or copied, relative to `out`.
    pub files: Vec<String>,
    pub layers: Vec<TensorReport>,
    pub summary: SummaryFile,
    pub original_bytes: u64,
}

pub const PLAN_FILE: &str = "quantscope_plan.json";
pub const REPORT_FILE: &str = "quantscope_report.json";
pub const PACKED_FILE: &str = "quantscope_packed.safetensors";

/// Extensions of weight files a folder copy leaves out (the weights are written, not copied).
const WEIGHT_EXT: &[&str] = &[
    "safetensors",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "h5",
    "msgpack",
    "onnx",
    "gguf",
    "tflite",
    "ot",
];

pub(super) fn io(path: &Path) -> impl Fn(std::io::Error) -> PlanError + '_ {
    move |e| PlanError::File {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// The header entries of `model`'s tensors in `order` (names, dtypes and shapes as stored).
pub fn tensor_entries(model: &Model, order: &[usize]) -> Vec<TensorEntry> {
    order
        .iter()
        .map(|&i| {
            let t = &model.tensors[i];
            TensorEntry {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
            }
        })
        .collect()
}

/// `values` written in `dtype` (little-endian) into `out`; the largest |stored − original|.
fn store_into(dtype: Dtype, values: &[f32], original: &[f32], out: &mut [u8]) -> f64 {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    let codec = ElementCodec::new(dtype).expect("float tensors have a codec");
    let w = codec.width();
    // 16-bit floats from f32 directly (the codec's f64 path rounds the same: an f32 is exact in f64)
    let half_bits = |v: f32| -> (u16, f64) {
        if dtype == Dtype::BF16 {
            let h = half::bf16::from_f32(v);
            (h.to_bits(), h.to_f64())
        } else {
            let h = half::f16::from_f32(v);
            (h.to_bits(), h.to_f64())
        }
    };
    // chunks in parallel; the largest error is the same in any order
    out.par_chunks_mut(CHUNK * w)
        .zip(values.par_chunks(CHUNK))
        .zip(original.par_chunks(CHUNK))
        .map(|((out, vs), os)| {
            let mut m = 0f64;
            match dtype {
                Dtype::BF16 | Dtype::F16 => {
                    for ((chunk, &v), &orig) in out.chunks_exact_mut(2).zip(vs).zip(os) {
                        let (bits, stored) = half_bits(v);
                        chunk.copy_from_slice(&bits.to_le_bytes());
                        m = m.max((stored - orig as f64).abs());
                    }
                }
                _ => {
                    for ((chunk, &v), &orig) in out.chunks_exact_mut(w).zip(vs).zip(os) {
                        codec.write(v as f64, chunk);
                        m = m.max((codec.read(chunk) - orig as f64).abs());
                    }
                }
            }
            m
        })
        .reduce(|| 0.0, f64::max)
}

/// `values` as little-endian elements of the float `dtype`.
pub(super) fn encode(values: &[f32], dtype: Dtype) -> Vec<u8> {
    let codec = ElementCodec::new(dtype).expect("a float dtype");
    let mut out = vec![0u8; values.len() * codec.width()];
    store_into(dtype, values, values, &mut out);
    out
}

/// How much of the stored form [`quantize_tensor`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Nothing,
    /// The largest error of the fake-quantized values once stored in the tensor's dtype.
    Error,
    /// That error and the stored bytes.
    Bytes,
}

/// One tensor of `model` quantized with `spec` a block of rows at a time, so memory follows a block,
/// not the tensor ([`quantize_by_rows`]): the result (codes and values as `keep` says) and what
/// `store` asks of the fake-quantized values in the tensor's own dtype: the largest error (0 when
/// not asked) and the bytes.
pub fn quantize_tensor(
    model: &Model,
    t: &TensorInfo,
    spec: &Spec,
    keep: Keep,
    store: Store,
) -> Result<(Quantized, f64, Option<Vec<u8>>), PlanError> {
    let width = t.dtype.bitsize() / 8;
    let (_, cols) = rows_and_cols(&t.shape);
    let mut bytes = match store {
        Store::Bytes => vec![0u8; t.nbytes()],
        _ => Vec::new(),
    };
    let mut scratch = Vec::new();
    let mut max_err = 0f64;
    let q = quantize_by_rows::<PlanError>(
        &t.shape,
        spec,
        keep,
        |r| Ok(model.take_rows_f32(t, r)?),
        |r, x, dq| {
            let out = match store {
                Store::Nothing => return Ok(()),
                Store::Bytes => &mut bytes[r.start * cols * width..r.end * cols * width],
                Store::Error => {
                    scratch.resize(x.len() * width, 0);
                    &mut scratch[..]
                }
            };
            max_err = max_err.max(store_into(t.dtype, dq, x, out));
            Ok(())
        },
    )
    .map_err(|e| match e {
        PlanError::Invalid(why) => PlanError::Invalid(format!("tensor '{}': {why}", t.name)),
        e => e,
    })?;
    Ok((q, max_err, (store == Store::Bytes).then_some(bytes)))
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PlanError> {
    crate::model::write_atomic(path, bytes).map_err(io(path))
}

/// The folder whose side files (config, tokenizer) belong to the model, if it has one.
pub(super) fn side_folder(model: &Model) -> Option<PathBuf> {
    match model.kind {
        SourceKind::Folder => Some(model.source.clone()),
        SourceKind::Sharded | SourceKind::File => {
            let dir = if model.source.is_dir() {
                model.source.clone()
            } else {
                model.source.parent()?.to_path_buf()
            };
            dir.join("config.json").is_file().then_some(dir)
        }
        SourceKind::Memory => None,
    }
}

pub(super) fn check_out(model: &Model, out: &Path) -> Result<(), PlanError> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    if out.is_file() {
        return Err(PlanError::Invalid(format!(
            "{} is a file: --out names a folder to create",
            out.display()
        )));
    }
    if out.is_dir() {
        let co = canon(out);
        let mut sources: Vec<PathBuf> = model.shards.iter().map(|s| s.path.clone()).collect();
        if let Some(d) = side_folder(model) {
            sources.push(d);
        }
        if sources.iter().any(|s| {
            canon(s).is_some_and(|c| {
                Some(&c) == co.as_ref() || c.starts_with(co.as_ref().expect("exists"))
            })
        }) {
            return Err(PlanError::Invalid(format!(
                "{} holds the model itself: choose another folder (the source is never written)",
                out.display()
            )));
        }
        let mut entries = std::fs::read_dir(out).map_err(io(out))?;
        let empty = entries.next().is_none();
        if !empty && !out.join(PLAN_FILE).is_file() {
            return Err(PlanError::Invalid(format!(
                "{} is not empty and not an earlier quantscope output: choose a new folder",
                out.display()
            )));
        }
    }
    Ok(())
}

/// Copy everything in `from` except weight files and hidden files, keeping sub-folders (a sentence
/// encoder's `1_Pooling/config.json`).
pub(super) fn copy_side_files(
    from: &Path,
    to: &Path,
    rel: &Path,
    files: &mut Vec<String>,
) -> Result<(), PlanError> {
    for e in std::fs::read_dir(from).map_err(io(from))? {
        let e = e.map_err(io(from))?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if p.is_dir() {
            let sub = to.join(&name);
            std::fs::create_dir_all(&sub).map_err(io(&sub))?;
            copy_side_files(&p, &sub, &rel.join(&name), files)?;
        } else if !WEIGHT_EXT.iter().any(|x| lower.ends_with(&format!(".{x}")))
            && !lower.ends_with(".safetensors.index.json")
        {
            let dest = to.join(&name);
            let bytes = std::fs::read(&p).map_err(io(&p))?;
            write_atomic(&dest, &bytes)?;
            files.push(rel.join(&name).display().to_string());
        }
    }
    Ok(())
}

/// The file an output writes for shard `si`, and that shard's tensors in file order.
pub(super) fn shard_layout(model: &Model, si: usize) -> (String, Vec<usize>) {
    let file_name = match model.kind {
        SourceKind::Memory => model
            .source
            .file_name()
            .and_then(|n| {
                // "digits_mlp.safetensors (bundled sample)" -> digits_mlp.safetensors
                let n = n.to_string_lossy();
                let first = n.split_whitespace().next()?;
                first.ends_with(".safetensors").then(|| first.to_string())
            })
            .unwrap_or_else(|| "model.safetensors".into()),
        _ => model.shards[si]
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("model-{si}.safetensors")),
    };
    let mut order: Vec<usize> = (0..model.tensors.len())
        .filter(|&i| model.tensors[i].shard == si)
        .collect();
    order.sort_by_key(|&i| model.tensors[i].start);
    (file_name, order)
}

/// Write the model with `plan` applied into the folder `out` (created if needed).
pub fn apply(
    model: &Model,
    plan: &Plan,
    out: &Path,
    opts: &ApplyOptions,
    progress: &Progress,
    on_tensor: &mut dyn FnMut(&str),
) -> Result<ApplyReport, PlanError> {
    check_out(model, out)?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let resolved: Vec<Option<Spec>> = model
        .tensors
        .iter()
        .map(|t| match plan.resolve(&t.name, t.quantizable()).0 {
            Choice::Quantize(s) if t.is_float() && t.numel() > 0 && s.family != Family::None => {
                Some(s)
            }
            _ => None,
        })
        .collect();
    progress.set_total(
        model
            .tensors
            .iter()
            .zip(&resolved)
            .map(|(t, s)| if s.is_some() { t.nbytes() as u64 } else { 0 })
            .sum::<u64>()
            .max(1),
    );
    let mut files = Vec::new();
    let mut layers = Vec::new();
    let mut packed = opts.packed.then(|| PackedWriter::new(out)).transpose()?;
    for (si, shard) in model.shards.iter().enumerate() {
        let (file_name, order) = shard_layout(model, si);
        let entries = tensor_entries(model, &order);
        let mut meta = shard.metadata.clone().unwrap_or_default();
        meta.insert(
            "quantscope_applied".into(),
            "fake-quantized weights (quantized then stored back in their dtype); see quantscope_plan.json".into(),
        );
        let mut failure: Option<PlanError> = None;
        let dest = out.join(&file_name);
        let written = write_safetensors(&dest, Some(&meta), &entries, |k| {
            let i = order[k];
            let t = &model.tensors[i];
            if progress.is_cancelled() {
                failure = Some(PlanError::Cancelled);
                return Err(crate::model::ModelError::Other("cancelled".into()));
            }
            let Some(spec) = resolved[i] else {
                return Ok(model.bytes(t).to_vec());
            };
            on_tensor(&t.name);
            let keep = match (&packed, spec.family) {
                (None, _) => Keep::Nothing,
                // the packed form of a cast is its values
                (Some(_), Family::Bf16 | Family::Fp16) => Keep::Everything,
                (Some(_), _) => Keep::Codes,
            };
            let (q, stored, bytes) = match quantize_tensor(model, t, &spec, keep, Store::Bytes) {
                Ok((q, e, b)) => (q, e, b.expect("stored")),
                Err(e) => {
                    let msg = e.to_string();
                    failure = Some(e);
                    return Err(crate::model::ModelError::Other(msg));
                }
            };
            layers.push(TensorReport::new(t, &spec, &q, stored));
            if let Some(p) = packed.as_mut() {
                if let Err(e) = p.add(&t.name, &q, &t.shape, t.dtype) {
                    let msg = e.to_string();
                    failure = Some(e);
                    return Err(crate::model::ModelError::Other(msg));
                }
            }
            progress.add(t.nbytes() as u64);
            Ok(bytes)
        });
        if let Err(e) = written {
            return Err(failure.take().unwrap_or(PlanError::Model(e)));
        }
        files.push(file_name);
    }
    if model.kind == SourceKind::Sharded {
        // the index maps names to the same file names: copy it as it is
        let index = if model.source.is_dir() {
            std::fs::read_dir(&model.source)
                .map_err(io(&model.source))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.to_string_lossy().ends_with(".safetensors.index.json"))
        } else {
            Some(model.source.clone())
        };
        if let Some(ix) = index {
            let name = ix
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(&ix).map_err(io(&ix))?;
            write_atomic(&out.join(&name), &bytes)?;
            files.push(name);
        }
    }
    if let Some(dir) = side_folder(model) {
        copy_side_files(&dir, out, Path::new(""), &mut files)?;
    }
    if let Some(p) = packed {
        p.finish(&out.join(PACKED_FILE))?;
        files.push(PACKED_FILE.into());
    }
    finish(model, plan, out, files, layers)
}

/// Write the plan (with its summary) and the report beside an applied model, and return the report.
pub(super) fn finish(
    model: &Model,
    plan: &Plan,
    out: &Path,
    mut files: Vec<String>,
    layers: Vec<TensorReport>,
) -> Result<ApplyReport, PlanError> {
    let numel: u64 = layers
        .iter()
        .map(|l| l.shape.iter().product::<usize>() as u64)
        .sum();
    let bits: f64 = layers
        .iter()
        .map(|l| l.bits_per_weight * l.shape.iter().product::<usize>() as f64)
        .sum();
    let summary = SummaryFile {
        bits_per_weight: if numel > 0 { bits / numel as f64 } else { 0.0 },
        bytes: layers.iter().map(|l| l.bytes).sum(),
    };
    let original_bytes = layers
        .iter()
        .filter_map(|l| model.find(&l.name))
        .map(|i| model.tensors[i].nbytes() as u64)
        .sum();
    write_atomic(
        &out.join(PLAN_FILE),
        plan.to_json(model, Some(summary.clone())).as_bytes(),
    )?;
    files.push(PLAN_FILE.into());
    files.push(REPORT_FILE.into());
    let report = ApplyReport {
        out: out.to_path_buf(),
        files,
        layers,
        summary,
        original_bytes,
    };
    write_atomic(
        &out.join(REPORT_FILE),
        serde_json::to_string_pretty(&report)
            .expect("serializes")
            .as_bytes(),
    )?;
    Ok(report)
}

// ------------------------------------------------------------------------------------------------
// the packed form

fn code_dtype(codes: &[i16]) -> Dtype {
    let (lo, hi) = codes
        .par_chunks(1 << 16)
        .map(|c| {
            c.iter()
                .fold((i16::MAX, i16::MIN), |(a, b), &c| (a.min(c), b.max(c)))
        })
        .reduce(
            || (i16::MAX, i16::MIN),
            |(a, b), (c, d)| (a.min(c), b.max(d)),
        );
    if lo >= 0 && hi <= 255 {
        Dtype::U8
    } else if lo >= -128 && hi <= 127 {
        Dtype::I8
    } else {
        Dtype::I16
    }
}

fn packable(spec: &Spec) -> Result<(), String> {
    if let Family::MicroExp(m) = spec.family {
        return Err(format!(
            "{}: the packed form cannot hold its per-pair micro-exponents",
            m.name()
        ));
    }
    Ok(())
}

/// Writes the packed form tensor by tensor: each tensor's parts go to a spill file beside the output
/// as it is quantized (a part's dtype is known only then, and the header comes first), and
/// [`PackedWriter::finish`] writes the header and copies the parts over one at a time, so memory holds
/// one tensor's parts, not the model's.
struct PackedWriter {
    spill_path: PathBuf,
    spill: std::io::BufWriter<std::fs::File>,
    entries: Vec<TensorEntry>,
    lens: Vec<usize>,
    meta: HashMap<String, String>,
}

impl PackedWriter {
    fn new(out: &Path) -> Result<PackedWriter, PlanError> {
        let spill_path = out.join(".quantscope_packed.spill");
        let file = std::fs::File::create(&spill_path).map_err(io(&spill_path))?;
        let mut meta = HashMap::new();
        meta.insert("quantscope_packed".to_string(), "1".to_string());
        Ok(PackedWriter {
            spill: std::io::BufWriter::with_capacity(1 << 20, file),
            spill_path,
            entries: Vec::new(),
            lens: Vec::new(),
            meta,
        })
    }

    fn push(
        &mut self,
        name: String,
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: &[u8],
    ) -> Result<(), PlanError> {
        use std::io::Write;
        self.spill.write_all(bytes).map_err(io(&self.spill_path))?;
        self.entries.push(TensorEntry { name, dtype, shape });
        self.lens.push(bytes.len());
        Ok(())
    }

    fn add(
        &mut self,
        name: &str,
        q: &Quantized,
        shape: &[usize],
        dtype: Dtype,
    ) -> Result<(), PlanError> {
        packable(&q.spec).map_err(|e| PlanError::Invalid(format!("{name}: {e}")))?;
        self.meta.insert(
            name.to_string(),
            serde_json::json!({"spec": q.spec.to_string(), "shape": shape, "dtype": format!("{dtype:?}")}).to_string(),
        );
        let part = |suffix: &str| format!("{name}.{suffix}");
        match q.spec.family {
            // the packed form of a cast is its values
            Family::Bf16 | Family::Fp16 => {
                let d = if q.spec.family == Family::Bf16 {
                    Dtype::BF16
                } else {
                    Dtype::F16
                };
                self.push(part("values"), d, shape.to_vec(), &encode(&q.dequant, d))
            }
            _ => {
                let cd = code_dtype(&q.codes);
                let bytes: Vec<u8> = match cd {
                    Dtype::U8 => q.codes.par_iter().map(|&c| c as u8).collect(),
                    Dtype::I8 => q.codes.par_iter().map(|&c| c as i8 as u8).collect(),
                    _ => le_bytes(&q.codes),
                };
                self.push(part("codes"), cd, shape.to_vec(), &bytes)?;
                self.push(
                    part("scales"),
                    Dtype::F32,
                    vec![q.scales.len()],
                    &le_bytes(&q.scales),
                )?;
                if !q.zero_points.is_empty() {
                    let z = le_bytes(&q.zero_points);
                    self.push(
                        part("zero_points"),
                        Dtype::I32,
                        vec![q.zero_points.len()],
                        &z,
                    )?;
                }
                if !q.outer_scales.is_empty() {
                    let o = le_bytes(&q.outer_scales);
                    self.push(
                        part("outer_scales"),
                        Dtype::F32,
                        vec![q.outer_scales.len()],
                        &o,
                    )?;
                }
                if !q.codebook.is_empty() {
                    let c = le_bytes(&q.codebook);
                    self.push(part("codebook"), Dtype::F32, vec![q.codebook.len()], &c)?;
                }
                Ok(())
            }
        }
    }

    fn finish(mut self, path: &Path) -> Result<(), PlanError> {
        use std::io::{Read, Write};
        self.spill.flush().map_err(io(&self.spill_path))?;
        let mut back = std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(&self.spill_path).map_err(io(&self.spill_path))?,
        );
        let spill_path = self.spill_path.clone();
        write_safetensors(path, Some(&self.meta), &self.entries, |k| {
            let mut b = vec![0u8; self.lens[k]];
            back.read_exact(&mut b)
                .map_err(|e| crate::model::ModelError::io(&spill_path, e))?;
            Ok(b)
        })?;
        Ok(())
    }
}

impl Drop for PackedWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spill_path);
    }
}

/// The parts of one packed tensor.
pub struct Packed<'a> {
    pub spec: Spec,
    pub shape: Vec<usize>,
    pub codes: Vec<i16>,
    pub scales: &'a [f32],
    pub zero_points: &'a [i32],
    pub outer_scales: &'a [f32],
    pub codebook: &'a [f32],
}

/// Decode codes and scales to values, as the quantizers computed them.
pub fn dequantize_packed(p: &Packed) -> Result<Vec<f32>, String> {
    packable(&p.spec)?;
    let layout = Layout::new(&p.shape, p.spec.granularity);
    let n = layout.rows * layout.cols;
    if p.codes.len() != n {
        return Err(format!("{} codes for {n} weights", p.codes.len()));
    }
    if p.scales.len() != layout.groups() && !matches!(p.spec.family, Family::Kmeans(_)) {
        return Err(format!(
            "{} scales for {} groups",
            p.scales.len(),
            layout.groups()
        ));
    }
    let gpr = layout.groups_per_row();
    let group_of = |i: usize| (i / layout.cols) * gpr + (i % layout.cols) / layout.group;
    let elem = |name: &str| lookup(name).map(|f| f.format).map_err(|e| e.to_string());
    let at = |v: &[f32], i: usize, what: &str| -> Result<f32, String> {
        v.get(i)
            .copied()
            .ok_or_else(|| format!("{what} index {i} is out of range"))
    };
    let mut out = vec![0f32; n];
    match p.spec.family {
        Family::Int(_) => {
            for (i, o) in out.iter_mut().enumerate() {
                let g = group_of(i);
                let s = if p.spec.vsq {
                    at(p.scales, g, "scale")? * at(p.outer_scales, i / layout.cols, "outer scale")?
                } else {
                    at(p.scales, g, "scale")?
                };
                *o = p.codes[i] as f32 * s;
            }
        }
        Family::Uint(_) => {
            for (i, o) in out.iter_mut().enumerate() {
                let g = group_of(i);
                let s = if p.spec.vsq {
                    at(p.scales, g, "scale")? * at(p.outer_scales, i / layout.cols, "outer scale")?
                } else {
                    at(p.scales, g, "scale")?
                };
                let z = *p.zero_points.get(g).ok_or("missing zero points")? as f32;
                *o = (p.codes[i] as f32 - z) * s;
            }
        }
        Family::Float(f) => {
            let fmt = elem(f.name())?;
            for (i, o) in out.iter_mut().enumerate() {
                *o = fmt.decode(p.codes[i] as u16 as u64) as f32
                    * at(p.scales, group_of(i), "scale")?;
            }
        }
        Family::Nf4 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = at(p.codebook, p.codes[i] as usize, "codebook")?
                    * at(p.scales, group_of(i), "scale")?;
            }
        }
        Family::Mx(e) => {
            let fmt = match e {
                MxElem::Float(f) => Some(elem(f.name())?),
                MxElem::Int8 => None,
            };
            for (i, o) in out.iter_mut().enumerate() {
                let val = match &fmt {
                    Some(f) => f.decode(p.codes[i] as u16 as u64) as f32,
                    None => p.codes[i] as f32 / 64.0,
                };
                *o = (val as f64 * at(p.scales, group_of(i), "scale")? as f64) as f32;
            }
        }
        Family::Nvfp4 => {
            let fmt = elem("fp4_e2m1")?;
            let t = at(p.outer_scales, 0, "tensor scale")?;
            for (i, o) in out.iter_mut().enumerate() {
                let s = at(p.scales, group_of(i), "scale")?;
                *o = if s == 0.0 {
                    0.0
                } else {
                    (t * s) * fmt.decode(p.codes[i] as u16 as u64) as f32
                };
            }
        }
        Family::Kmeans(_) => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = at(p.codebook, p.codes[i] as usize, "codebook")?;
            }
        }
        Family::Binary => {
            for (i, o) in out.iter_mut().enumerate() {
                let a = at(p.scales, group_of(i), "scale")?;
                *o = if p.codes[i] != 0 { a } else { -a };
            }
        }
        Family::Ternary => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = p.codes[i] as f32 * at(p.scales, group_of(i), "scale")?;
            }
        }
        Family::MicroExp(_) | Family::Bf16 | Family::Fp16 | Family::None => {
            return Err(format!("{}: not decoded from codes", p.spec))
        }
    }
    Ok(out)
}

/// Read a packed file back: every tensor's values, decoded.
pub fn read_packed(path: &Path) -> Result<Vec<(String, Vec<f32>)>, PlanError> {
    let model = Model::open(path)?;
    let meta = model
        .metadata()
        .filter(|m| m.get("quantscope_packed").map(String::as_str) == Some("1"))
        .ok_or_else(|| {
            PlanError::Invalid(format!("{}: not a quantscope packed file", path.display()))
        })?
        .clone();
    let f32s = |name: &str| -> Result<Vec<f32>, PlanError> {
        match model.find(name) {
            Some(i) => Ok(model.read_f32(&model.tensors[i])?),
            None => Ok(Vec::new()),
        }
    };
    let mut names: Vec<&String> = meta.keys().filter(|k| *k != "quantscope_packed").collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let bad = |why: String| PlanError::Invalid(format!("{}: {name}: {why}", path.display()));
        let info: serde_json::Value =
            serde_json::from_str(&meta[name]).map_err(|e| bad(e.to_string()))?;
        let spec = Spec::parse(info["spec"].as_str().unwrap_or_default())
            .map_err(|e| bad(e.to_string()))?;
        let shape: Vec<usize> =
            serde_json::from_value(info["shape"].clone()).map_err(|e| bad(e.to_string()))?;
        if matches!(spec.family, Family::Bf16 | Family::Fp16) {
            out.push((name.clone(), f32s(&format!("{name}.values"))?));
            continue;
        }
        let codes: Vec<i16> = f32s(&format!("{name}.codes"))?
            .iter()
            .map(|&c| c as i16)
            .collect();
        let zp: Vec<i32> = f32s(&format!("{name}.zero_points"))?
            .iter()
            .map(|&z| z as i32)
            .collect();
        let (scales, outer, book) = (
            f32s(&format!("{name}.scales"))?,
            f32s(&format!("{name}.outer_scales"))?,
            f32s(&format!("{name}.codebook"))?,
        );
        let values = dequantize_packed(&Packed {
            spec,
            shape,
            codes,
            scales: &scales,
            zero_points: &zp,
            outer_scales: &outer,
            codebook: &book,
        })
        .map_err(bad)?;
        out.push((name.clone(), values));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;

    #[test]
    fn sixteen_bit_stores_agree_with_the_element_codec() {
        let mut vals: Vec<f32> = (0..20_000)
            .map(|i| (crate::quant::uniform(9, i) - 0.5) * 10f32.powi((i % 30) as i32 - 15))
            .collect();
        vals.extend([
            0.0,
            -0.0,
            1e-40,
            3.0e38,
            -7e4,
            65504.0,
            65520.0,
            f32::MIN_POSITIVE,
        ]);
        // values halfway between 16-bit neighbours: ties go to even
        vals.extend((0..64).map(|k| f32::from_bits(0x3f80_8000 + (k << 16))));
        let orig: Vec<f32> = vals.iter().map(|v| v * 1.001).collect();
        for dtype in [Dtype::BF16, Dtype::F16] {
            let codec = ElementCodec::new(dtype).unwrap();
            let mut want = vec![0u8; vals.len() * 2];
            let mut want_err = 0f64;
            for ((c, &v), &o) in want.chunks_exact_mut(2).zip(&vals).zip(&orig) {
                codec.write(v as f64, c);
                want_err = want_err.max((codec.read(c) - o as f64).abs());
            }
            let mut got = vec![0u8; vals.len() * 2];
            let got_err = store_into(dtype, &vals, &orig, &mut got);
            if let Some(k) =
                (0..vals.len()).find(|&k| got[2 * k..2 * k + 2] != want[2 * k..2 * k + 2])
            {
                panic!(
                    "{dtype:?}: {} stored as {:?}, the codec writes {:?}",
                    vals[k],
                    &got[2 * k..2 * k + 2],
                    &want[2 * k..2 * k + 2]
                );
            }
            assert_eq!(got_err.to_bits(), want_err.to_bits(), "{dtype:?}");
        }
    }

    fn weights(rows: usize, cols: usize) -> Vec<f32> {
        // a reproducible mix of scales and signs, some exact zeros
        (0..rows * cols)
            .map(|i| {
                let r = crate::quant::uniform(5, i as u64) - 0.5;
                let row = (i / cols) as f32;
                if i % 37 == 0 {
                    0.0
                } else {
                    r * (0.1 + row * 0.3)
                }
            })
            .collect()
    }

    #[test]
    fn every_packable_family_decodes_to_the_fake_quantized_values() {
        let x = weights(6, 96);
        for s in [
            "int8",
            "int4:g32",
            "int3:tensor",
            "uint4:g16",
            "uint8",
            "int4:g16:vsq",
            "fp8_e4m3",
            "fp8_e5m2:g32",
            "fp6_e2m3",
            "fp4_e2m1:g16",
            "nf4",
            "mxfp4",
            "mxfp8_e4m3",
            "mxfp6_e3m2",
            "mxint8",
            "nvfp4",
            "kmeans3",
            "kmeans1",
            "binary",
            "ternary:g32",
            "int8:clip=mse",
            "int4:round=stochastic:seed=3",
        ] {
            let spec = Spec::parse(s).unwrap();
            let q = quantize(&x, &[6, 96], &spec).unwrap();
            let back = dequantize_packed(&Packed {
                spec,
                shape: vec![6, 96],
                codes: q.codes.clone(),
                scales: &q.scales,
                zero_points: &q.zero_points,
                outer_scales: &q.outer_scales,
                codebook: &q.codebook,
            })
            .unwrap_or_else(|e| panic!("{s}: {e}"));
            for (i, (a, b)) in back.iter().zip(&q.dequant).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{s} at {i}: {a} vs {b}");
            }
        }
        let spec = Spec::parse("smx4").unwrap();
        assert!(packable(&spec).is_err());
    }
}
