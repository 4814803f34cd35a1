//! `apply --format compressed-tensors`: the plan written as a checkpoint that transformers (with the
//! `compressed-tensors` package) and vLLM load directly, not as fake-quantized floats.
//!
//! Layout, from compressed-tensors 0.20 (`compressors/pack_quantized/{base,helpers}.py`,
//! `compressors/naive_quantized/base.py`, `quantization/lifecycle/forward_helpers.py::_dequantize`),
//! per quantized module `M` (a tensor `M.weight`):
//!
//! | scheme | tensors |
//! |---|---|
//! | intN / uintN, N = 2..8 (`pack-quantized`) | `M.weight_packed` I32 `[rows, ceil(cols·N/32)]`, `M.weight_scale` `[rows, groups]`, `M.weight_shape` I64 `[2]`; uintN also `M.weight_zero_point` I32 packed along rows |
//! | fp8_e4m3 per tensor or channel (`float-quantized`) | `M.weight` F8_E4M3, `M.weight_scale` `[rows, 1]` or `[1]` |
//!
//! Codes are stored with 2^(N−1) added and packed densely, least significant bits first: element i of
//! each run of 32 occupies bits i·N … i·N+N−1 of the run's N words. Zero points are stored in the same
//! signed domain as the codes. Decompression computes `(code − zero_point) · scale` in the scale's
//! dtype, which compressed-tensors takes from the weight's dtype: so a spec is written only when its
//! scales are stored in that dtype (`int4:g64:scale=bf16` for a bfloat16 model), and then the
//! decompressed weights equal the fake-quantized ones bit for bit (codes of eight bits or fewer and a
//! 16-bit scale multiply exactly in f32, so both round the same product once).

use super::apply::{
    check_out, copy_side_files, encode, finish, io, quantize_tensor, shard_layout, side_folder,
    write_atomic, ApplyReport, Store, TensorReport,
};
use super::export::{export_plan, Target};
use super::{Choice, Plan, PlanError};
use crate::formats::{lookup, Overflow};
use crate::jobs::Progress;
use crate::model::{le_bytes, write_safetensors, Model, SourceKind, TensorEntry};
use crate::quant::rows::Keep;
use crate::quant::spec::{ElemFloat, MxElem, ScaleType};
use crate::quant::{Family, Granularity, Spec};
use rayon::prelude::*;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The compressed-tensors version whose layout this writes (the one its tests were checked with).
pub const CT_VERSION: &str = "0.20.1";

/// How one quantized tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Packed { bits: u32, symmetric: bool },
    Fp8,
    Nvfp4,
    Mxfp4,
}

fn scale_type_of(d: Dtype) -> Option<ScaleType> {
    match d {
        Dtype::BF16 => Some(ScaleType::Bf16),
        Dtype::F16 => Some(ScaleType::Fp16),
        Dtype::F32 => Some(ScaleType::Fp32),
        _ => None,
    }
}

/// How `spec` is stored for a weight of `dtype` and `shape`, or why it cannot be.
fn kind(spec: &Spec, dtype: Dtype, shape: &[usize]) -> Result<Kind, String> {
    if shape.len() != 2 {
        return Err(format!(
            "{} dimensions: the packed form here takes matrices",
            shape.len()
        ));
    }
    let k = match spec.family {
        Family::Int(b) | Family::Uint(b) if (2..=8).contains(&b) && !spec.vsq => {
            let symmetric = matches!(spec.family, Family::Int(_));
            if !symmetric && spec.granularity == Granularity::Tensor {
                return Err("asymmetric per-tensor zero points are not packed by compressed-tensors (group or channel)".into());
            }
            Kind::Packed { bits: b, symmetric }
        }
        Family::Float(ElemFloat::Fp8E4m3)
            if matches!(spec.granularity, Granularity::Tensor | Granularity::Channel) =>
        {
            Kind::Fp8
        }
        Family::Nvfp4 if shape[1].is_multiple_of(16) => return Ok(Kind::Nvfp4),
        Family::Mx(MxElem::Float(ElemFloat::Fp4E2m1)) if shape[1].is_multiple_of(32) => {
            return Ok(Kind::Mxfp4)
        }
        _ => {
            return Err(format!(
                "{} is not written as a compressed-tensors checkpoint here (intN/uintN packs, FP8 per tensor or channel); apply without --format writes its fake-quantized values",
                spec.short()
            ))
        }
    };
    if let Granularity::Group(g) = spec.granularity {
        if !shape[1].is_multiple_of(g) {
            return Err(format!(
                "groups of {g} do not divide its rows of {} weights (compressed-tensors needs whole groups)",
                shape[1]
            ));
        }
    }
    let want =
        scale_type_of(dtype).ok_or_else(|| format!("weights of dtype {dtype:?} are not float"))?;
    if spec.scale != want {
        let mut fixed = *spec;
        fixed.scale = want;
        return Err(format!(
            "compressed-tensors stores scales in the weight's dtype ({dtype:?}) and this spec's are {}: the checkpoint could not hold its values; use {} (search --target vllm does)",
            spec.scale.name(),
            fixed.short()
        ));
    }
    Ok(k)
}

/// Pack signed codes of `bits` bits row by row as compressed-tensors does (`pack_to_int32`): each
/// code plus 2^(bits−1), densely, least significant bits first, every run of 32 codes in `bits` words.
pub fn pack_int32(codes: &[i16], rows: usize, cols: usize, bits: u32) -> Vec<i32> {
    let words = (cols * bits as usize).div_ceil(32);
    let offset = 1i32 << (bits - 1);
    let mut out = vec![0i32; rows * words];
    if out.is_empty() {
        return out;
    }
    // rows on all cores
    out.par_chunks_mut(words)
        .zip(codes.par_chunks(cols))
        .for_each(|(row, codes)| {
            for (c, &code) in codes.iter().enumerate() {
                let v = ((code as i32 + offset) as u32) & ((1u32 << bits) - 1);
                let bit = c * bits as usize;
                let (w, o) = (bit / 32, bit % 32);
                row[w] = (row[w] as u32 | v << o) as i32;
                if o + bits as usize > 32 {
                    row[w + 1] = (row[w + 1] as u32 | v >> (32 - o)) as i32;
                }
            }
        });
    out
}

/// The inverse of [`pack_int32`] (for checks).
pub fn unpack_int32(words: &[i32], rows: usize, cols: usize, bits: u32) -> Vec<i16> {
    let per_row = (cols * bits as usize).div_ceil(32);
    let offset = 1i32 << (bits - 1);
    let mask = (1u64 << bits) - 1;
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let row = &words[r * per_row..(r + 1) * per_row];
        for c in 0..cols {
            let bit = c * bits as usize;
            let (w, o) = (bit / 32, bit % 32);
            let lo = row[w] as u32 as u64;
            let hi = row.get(w + 1).map_or(0, |&x| x as u32 as u64);
            let v = (((hi << 32) | lo) >> o) & mask;
            out.push((v as i32 - offset) as i16);
        }
    }
    out
}

/// The stored tensors of one quantized module, in file order: (suffix, dtype, shape).
fn layout(k: Kind, spec: &Spec, shape: &[usize]) -> Vec<(&'static str, Dtype, Vec<usize>)> {
    let (rows, cols) = (shape[0], shape[1]);
    let groups = match spec.granularity {
        Granularity::Tensor => 0,
        Granularity::Channel => 1,
        Granularity::Group(g) => cols.div_ceil(g),
    };
    let scale_shape = if groups == 0 {
        vec![1]
    } else {
        vec![rows, groups]
    };
    match k {
        Kind::Packed { bits, symmetric } => {
            let mut v = vec![
                (
                    "weight_packed",
                    Dtype::I32,
                    vec![rows, (cols * bits as usize).div_ceil(32)],
                ),
                ("weight_scale", Dtype::F32, scale_shape), // dtype set by the caller
                ("weight_shape", Dtype::I64, vec![2]),
            ];
            if !symmetric {
                v.push((
                    "weight_zero_point",
                    Dtype::I32,
                    vec![(rows * bits as usize).div_ceil(32), groups],
                ));
            }
            v
        }
        Kind::Fp8 => vec![
            ("weight", Dtype::F8_E4M3, shape.to_vec()),
            ("weight_scale", Dtype::F32, scale_shape),
        ],
        Kind::Nvfp4 => vec![
            ("weight_packed", Dtype::U8, vec![rows, cols / 2]),
            ("weight_scale", Dtype::F8_E4M3, vec![rows, cols / 16]),
            ("weight_global_scale", Dtype::F32, vec![1]),
        ],
        Kind::Mxfp4 => vec![
            ("weight_packed", Dtype::U8, vec![rows, cols / 2]),
            ("weight_scale", Dtype::U8, vec![rows, cols / 32]),
        ],
    }
}

/// E2M1 codes two to a byte, the even element in the low nibble (`pack_fp4_to_uint8`).
fn pack_fp4(codes: &[i16]) -> Vec<u8> {
    codes
        .par_chunks_exact(2)
        .map(|p| (p[0] as u8 & 0x0f) | ((p[1] as u8 & 0x0f) << 4))
        .collect()
}

/// Write `model` with `plan` applied as a compressed-tensors checkpoint in the folder `out`. Every
/// tensor the plan quantizes must be storable ([`kind`]); unless `lenient`, the plan must also keep
/// vLLM's rules ([`super::runtime::check`]): the checkpoint is for vLLM.
pub fn write_compressed(
    model: &Model,
    plan: &Plan,
    out: &Path,
    lenient: bool,
    progress: &Progress,
    on_tensor: &mut dyn FnMut(&str),
) -> Result<ApplyReport, PlanError> {
    // the quantization_config, and vLLM's rules checked (the checkpoint is for vLLM)
    let (exported, _) = export_plan(plan, model, Target::CompressedTensors, lenient)?;
    let Some(dir) = side_folder(model) else {
        return Err(PlanError::Invalid(
            "a compressed-tensors checkpoint needs the model's config.json (open its folder)"
                .into(),
        ));
    };
    let mut config: Value = {
        let p = dir.join("config.json");
        let text = std::fs::read_to_string(&p).map_err(io(&p))?;
        serde_json::from_str(&text)
            .map_err(|e| PlanError::Invalid(format!("{}: {e}", p.display())))?
    };
    // what each tensor becomes, checked before anything is written
    let mut kinds: Vec<Option<(Spec, Kind)>> = vec![None; model.tensors.len()];
    let mut bad = Vec::new();
    for (i, t) in model.tensors.iter().enumerate() {
        let Choice::Quantize(spec) = plan.resolve(&t.name, t.quantizable()).0 else {
            continue;
        };
        if spec.family.is_cast() || !t.is_float() {
            continue;
        }
        if !t.name.ends_with(".weight") {
            bad.push(format!("{}: not a module's weight", t.name));
            continue;
        }
        match kind(&spec, t.dtype, &t.shape) {
            Ok(k) => kinds[i] = Some((spec, k)),
            Err(e) => bad.push(format!("{}: {e}", t.name)),
        }
    }
    if !bad.is_empty() {
        let shown: Vec<&str> = bad.iter().take(6).map(String::as_str).collect();
        return Err(PlanError::Invalid(format!(
            "{} tensor(s) cannot be written as compressed-tensors: {}{}",
            bad.len(),
            shown.join("; "),
            if bad.len() > 6 { "; …" } else { "" }
        )));
    }
    if kinds.iter().all(Option::is_none) {
        return Err(PlanError::Invalid(
            "the plan quantizes no tensor: nothing to compress".into(),
        ));
    }
    let mut qc: Value = serde_json::from_str(&exported.text).expect("the export writes JSON");
    qc["quantization_status"] = json!("compressed");
    qc["version"] = json!(CT_VERSION);
    config["quantization_config"] = qc;

    check_out(model, out)?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    progress.set_total(
        model
            .tensors
            .iter()
            .zip(&kinds)
            .map(|(t, k)| if k.is_some() { t.nbytes() as u64 } else { 0 })
            .sum::<u64>()
            .max(1),
    );
    let mut files = Vec::new();
    let mut layers = Vec::new();
    let mut weight_map = BTreeMap::new();
    let mut total_size = 0usize;
    for (si, shard) in model.shards.iter().enumerate() {
        let (file_name, order) = shard_layout(model, si);
        // the stored entries, each with its source tensor and its place among that tensor's parts
        let mut stored: Vec<(TensorEntry, usize, usize)> = Vec::new();
        for &i in &order {
            let t = &model.tensors[i];
            match kinds[i] {
                None => stored.push((
                    TensorEntry {
                        name: t.name.clone(),
                        dtype: t.dtype,
                        shape: t.shape.clone(),
                    },
                    i,
                    0,
                )),
                Some((spec, k)) => {
                    let module = t.name.strip_suffix(".weight").expect("checked");
                    for (part, (suffix, dtype, shape)) in
                        layout(k, &spec, &t.shape).into_iter().enumerate()
                    {
                        // integer and FP8 scales are held in the weight's dtype
                        let dtype = if suffix == "weight_scale"
                            && matches!(k, Kind::Packed { .. } | Kind::Fp8)
                        {
                            t.dtype
                        } else {
                            dtype
                        };
                        stored.push((
                            TensorEntry {
                                name: format!("{module}.{suffix}"),
                                dtype,
                                shape,
                            },
                            i,
                            part,
                        ));
                    }
                }
            }
        }
        for (e, _, _) in &stored {
            weight_map.insert(e.name.clone(), file_name.clone());
            total_size += e.nbytes();
        }
        let entries: Vec<TensorEntry> = stored.iter().map(|s| s.0.clone()).collect();
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut failure: Option<PlanError> = None;
        let mut meta = shard.metadata.clone().unwrap_or_default();
        meta.insert("format".into(), "pt".into());
        let dest = out.join(&file_name);
        let written = write_safetensors(&dest, Some(&meta), &entries, |k| {
            let (_, i, part) = &stored[k];
            let t = &model.tensors[*i];
            let Some((spec, kd)) = kinds[*i] else {
                return Ok(model.bytes(t).to_vec());
            };
            if *part > 0 {
                return Ok(std::mem::take(&mut pending[*part]));
            }
            if progress.is_cancelled() {
                failure = Some(PlanError::Cancelled);
                return Err(crate::model::ModelError::Other("cancelled".into()));
            }
            on_tensor(&t.name);
            let (q, stored_err, _) = quantize_tensor(model, t, &spec, Keep::Codes, Store::Error)
                .map_err(|e| {
                    let msg = e.to_string();
                    failure = Some(e);
                    crate::model::ModelError::Other(msg)
                })?;
            let (rows, cols) = (t.shape[0], t.shape[1]);
            pending = match kd {
                Kind::Packed { bits, symmetric } => {
                    let off = 1i32 << (bits - 1);
                    let codes: std::borrow::Cow<[i16]> = if symmetric {
                        std::borrow::Cow::Borrowed(&q.codes)
                    } else {
                        q.codes
                            .par_iter()
                            .map(|&c| (c as i32 - off) as i16)
                            .collect()
                    };
                    let mut parts = vec![
                        le_bytes(&pack_int32(&codes, rows, cols, bits)),
                        encode(&q.scales, t.dtype),
                        le_bytes(&[rows as i64, cols as i64]),
                    ];
                    if !symmetric {
                        // zero points [rows, groups] in the codes' signed domain, packed along rows
                        let groups = q.zero_points.len() / rows;
                        let mut by_col = vec![0i16; groups * rows];
                        for r in 0..rows {
                            for g in 0..groups {
                                by_col[g * rows + r] = (q.zero_points[r * groups + g] - off) as i16;
                            }
                        }
                        let packed = pack_int32(&by_col, groups, rows, bits);
                        let words = (rows * bits as usize).div_ceil(32);
                        let mut t_packed = vec![0i32; words * groups];
                        for g in 0..groups {
                            for w in 0..words {
                                t_packed[w * groups + g] = packed[g * words + w];
                            }
                        }
                        parts.push(le_bytes(&t_packed));
                    }
                    parts
                }
                Kind::Fp8 => vec![
                    q.codes.par_iter().map(|&c| c as u8).collect(),
                    encode(&q.scales, t.dtype),
                ],
                Kind::Nvfp4 => {
                    // block scales as E4M3 codes; the global scale as compressed-tensors defines it,
                    // the reciprocal of quantscope's tensor scale (448·6/amax)
                    let e4m3 = lookup("fp8_e4m3").expect("catalog").format;
                    let t_scale = q.outer_scales.first().copied().unwrap_or(1.0);
                    vec![
                        pack_fp4(&q.codes),
                        q.scales
                            .iter()
                            .map(|&s| e4m3.encode(s as f64, Overflow::Saturate).code as u8)
                            .collect(),
                        (1.0f32 / t_scale).to_le_bytes().to_vec(),
                    ]
                }
                Kind::Mxfp4 => vec![
                    pack_fp4(&q.codes),
                    // E8M0: the power of two's exponent plus 127
                    q.scales
                        .iter()
                        .map(|&s| (s.log2().round() as i32 + 127).clamp(0, 254) as u8)
                        .collect(),
                ],
            };
            // stored_err: the fake-quantized values as the model's dtype holds them (what decompression gives back)
            layers.push(TensorReport::new(t, &spec, &q, stored_err));
            progress.add(t.nbytes() as u64);
            Ok(std::mem::take(&mut pending[0]))
        });
        if let Err(e) = written {
            return Err(failure.take().unwrap_or(PlanError::Model(e)));
        }
        files.push(file_name);
    }
    copy_side_files(&dir, out, Path::new(""), &mut files)?;
    files.retain(|f| !f.ends_with(".safetensors.index.json"));
    write_atomic(
        &out.join("config.json"),
        (serde_json::to_string_pretty(&config).expect("serializes") + "\n").as_bytes(),
    )?;
    if model.kind == SourceKind::Sharded {
        let index = json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
        let name = "model.safetensors.index.json";
        write_atomic(
            &out.join(name),
            serde_json::to_string_pretty(&index)
                .expect("serializes")
                .as_bytes(),
        )?;
        files.push(name.into());
    }
    finish(model, plan, out, files, layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_matches_compressed_tensors() {
        // compressed-tensors' own example: int4 [-8, -7, -1, 0, 1, 2, 6, 7] packs to 0xfea98710
        let codes = [-8i16, -7, -1, 0, 1, 2, 6, 7];
        assert_eq!(pack_int32(&codes, 1, 8, 4), vec![0xfea98710u32 as i32]);
        // any width round-trips, including codes that straddle words (3 bits) and ragged rows
        for bits in 2..=8u32 {
            let (rows, cols) = (3, 45);
            let lo = -(1i32 << (bits - 1));
            let span = 1i32 << bits;
            let codes: Vec<i16> = (0..rows * cols)
                .map(|i| (lo + (i as i32 * 7 + 3) % span) as i16)
                .collect();
            let w = pack_int32(&codes, rows, cols, bits);
            assert_eq!(w.len(), rows * (cols * bits as usize).div_ceil(32));
            assert_eq!(unpack_int32(&w, rows, cols, bits), codes, "{bits} bits");
        }
    }

    #[test]
    fn specs_need_scales_in_the_weights_dtype() {
        let s = |t: &str| Spec::parse(t).unwrap();
        assert!(kind(&s("int4:g64:scale=bf16"), Dtype::BF16, &[8, 64]).is_ok());
        let err = kind(&s("int4:g64"), Dtype::BF16, &[8, 64]).unwrap_err();
        assert!(err.contains("int4:g64:scale=bf16"), "{err}");
        assert!(kind(&s("nf4"), Dtype::BF16, &[8, 64]).is_err());
        assert!(kind(&s("uint4:tensor:scale=bf16"), Dtype::BF16, &[8, 64]).is_err());
        assert_eq!(
            kind(&s("fp8_e4m3:scale=bf16"), Dtype::BF16, &[8, 64]),
            Ok(Kind::Fp8)
        );
    }
}
