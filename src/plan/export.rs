//! A plan in other tools' config formats.
//!
//! - **compressed-tensors / llm-compressor**: a `quantization_config` (the object a checkpoint's
//!   `config.json` holds under that key, and what `QuantizationConfig` in the `compressed-tensors` Python
//!   package validates): one config group per distinct spec, targeting the exact module names, plus an
//!   `ignore` list of the layers the plan keeps. Only fields that package accepts are written
//!   (`QuantizationArgs` forbids extra fields); field meanings follow its `quant_args.py` and the preset
//!   schemes in `quant_scheme.py` (NVFP4A16, MXFP4A16, …) of compressed-tensors 0.20.
//! - **llama.cpp**: lines `REGEX=TYPE` for `llama-quantize --tensor-type-file` (whitespace-separated
//!   tokens; the name is lower-cased and matched with `std::regex_search`, so every line is anchored
//!   `^…$` to name exactly one tensor), with Hugging Face names mapped to GGUF names the way llama.cpp's
//!   `gguf-py/gguf/tensor_mapping.py` does for llama-family and BERT checkpoints, and the nearest GGML
//!   type for each spec (`ggml_type_name` spellings).
//!
//! Every tensor gets a [`Fit`]: the same method, a close one (same format and scale, different
//! rounding details or block size), the nearest available, or left out; the reasons are returned as notes
//! for the output (neither format has room for comments).

use super::{Choice, Plan, PlanError};
use crate::model::Model;
use crate::quant::spec::{ElemFloat, MicroExp, MxElem};
use crate::quant::{Clip, Family, Granularity, RoundMode, Spec};
use safetensors::Dtype;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    CompressedTensors,
    LlamaCpp,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "compressed-tensors" | "compressed_tensors" | "llm-compressor" | "llmcompressor" => {
                Ok(Target::CompressedTensors)
            }
            "llama.cpp" | "llama-cpp" | "llamacpp" | "gguf" => Ok(Target::LlamaCpp),
            other => Err(format!(
                "unknown export format '{other}': use compressed-tensors or llama.cpp"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::CompressedTensors => "compressed-tensors",
            Target::LlamaCpp => "llama.cpp",
        }
    }
}

/// How well the target expresses a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    Same,
    Close,
    Nearest,
    Omitted,
}

/// One tensor of the plan.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tensor: String,
    pub choice: Choice,
    /// The tensor's dtype in the model, where known (llama.cpp: what a kept tensor stays as).
    pub dtype: Option<Dtype>,
    /// The tensor's shape, where known (llama.cpp: a block type must divide its rows).
    pub shape: Option<Vec<usize>>,
}

/// The tensors of `model` an export of `plan` lists: every weight the plan quantizes or names, and
/// every other quantizable weight too, so a kept matrix gets its own line (llama-quantize would
/// otherwise give it the default type).
pub fn entries_of(plan: &Plan, model: &Model) -> Vec<Entry> {
    model
        .tensors
        .iter()
        .filter_map(|t| {
            let (choice, _) = plan.resolve(&t.name, t.quantizable());
            let listed = t.quantizable()
                || matches!(choice, Choice::Quantize(_))
                || plan.overrides.contains_key(&t.name);
            listed.then(|| Entry {
                tensor: t.name.clone(),
                choice,
                dtype: Some(t.dtype),
                shape: Some(t.shape.clone()),
            })
        })
        .collect()
}

/// A model's `model_type` from the `config.json` beside it, where there is one.
pub fn model_type(model: &Model) -> Option<String> {
    let dir = crate::nn::transformer::model_dir(model);
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get("model_type")?.as_str().map(str::to_string)
}

/// What became of one tensor.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub tensor: String,
    pub spec: String,
    /// The target's name for it: a config group, or a GGUF tensor name.
    pub target_name: String,
    /// The target's setting: a GGML type, or the config group's key.
    pub target: String,
    pub fit: Fit,
    pub note: String,
    /// Stored bits per weight in the target (llama.cpp: the type's block size in bytes), where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_bits_per_weight: Option<f64>,
    /// Weights in the tensor, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numel: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Exported {
    pub target: Target,
    /// The file's contents.
    pub text: String,
    pub rows: Vec<Row>,
}

impl Exported {
    /// The rows that are not an exact match, one line per distinct spec and note, naming the tensors.
    pub fn notes(&self) -> Vec<String> {
        let mut groups: Vec<((String, String), Vec<&str>)> = Vec::new();
        for r in self.rows.iter().filter(|r| r.fit != Fit::Same) {
            let key = (super::short_spec(&r.spec), r.note.clone());
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => g.1.push(&r.tensor),
                None => groups.push((key, vec![&r.tensor])),
            }
        }
        groups
            .into_iter()
            .map(|((spec, note), tensors)| match tensors.len() {
                1 => format!("{} ({spec}): {note}", tensors[0]),
                n => format!("{n} tensors ({spec}, e.g. {}): {note}", tensors[0]),
            })
            .collect()
    }

    /// The average stored bits per weight of the quantized tensors in the target, where every one's size
    /// is known: what the plan really costs there.
    pub fn target_bits_per_weight(&self) -> Option<f64> {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.spec != "none" && r.fit != Fit::Omitted)
            .collect();
        let (mut bits, mut n) = (0f64, 0u64);
        for r in &rows {
            bits += r.target_bits_per_weight? * r.numel? as f64;
            n += r.numel?;
        }
        (n > 0).then(|| bits / n as f64)
    }
}

/// Export `plan` for `model` ([`export_checked`] of its [`entries_of`], with the model's architecture).
pub fn export_plan(
    plan: &Plan,
    model: &Model,
    target: Target,
    lenient: bool,
) -> Result<(Exported, Vec<String>), PlanError> {
    export_checked(
        &entries_of(plan, model),
        target,
        model_type(model).as_deref(),
        lenient,
    )
}

/// The entries in the target's format, after checking the rules of the runtime that reads that format
/// (compressed-tensors: vLLM's, [`super::runtime::check`]). `lenient` writes entries that break them
/// anyway; the broken rules are returned, one line each.
pub fn export_checked(
    entries: &[Entry],
    target: Target,
    arch: Option<&str>,
    lenient: bool,
) -> Result<(Exported, Vec<String>), PlanError> {
    if entries.is_empty() {
        return Err(PlanError::Invalid(
            "the plan names no tensor to export".into(),
        ));
    }
    let broken = rule_check(entries, target);
    if !broken.is_empty() && !lenient {
        return Err(PlanError::Invalid(format!(
            "the plan breaks {} rule(s) of {}:\n  {}\nsearch with --target {} (fused layers then share one spec), edit the plan, or pass --lenient to write it anyway",
            broken.len(),
            runtime_of(target).name(),
            shown_lines(&broken, 8),
            runtime_of(target).name()
        )));
    }
    Ok((export(entries, target, arch)?, broken))
}

/// At most `n` lines, then how many more there are.
pub fn shown_lines(lines: &[String], n: usize) -> String {
    let mut out = lines
        .iter()
        .take(n)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n  ");
    if lines.len() > n {
        out.push_str(&format!("\n  … and {} more", lines.len() - n));
    }
    out
}

/// The runtime that reads a target's files.
pub fn runtime_of(target: Target) -> super::runtime::Runtime {
    match target {
        Target::CompressedTensors => super::runtime::Runtime::Vllm,
        Target::LlamaCpp => super::runtime::Runtime::LlamaCpp,
    }
}

/// The runtime's rules that `entries` break, one line each.
pub fn rule_check(entries: &[Entry], target: Target) -> Vec<String> {
    let choices: Vec<(String, Choice)> = entries
        .iter()
        .map(|e| (e.tensor.clone(), e.choice.clone()))
        .collect();
    super::runtime::check(&choices, runtime_of(target))
        .iter()
        .map(|v| v.to_string())
        .collect()
}

/// The plan's entries in the target's format. `arch` is the model's `model_type` (config.json), where
/// known: GGUF names depend on it.
pub fn export(
    entries: &[Entry],
    target: Target,
    arch: Option<&str>,
) -> Result<Exported, PlanError> {
    match target {
        Target::CompressedTensors => compressed_tensors(entries),
        Target::LlamaCpp => llama_cpp(entries, arch),
    }
}

// ------------------------------------------------------------------------------------------------
// compressed-tensors

struct CtArgs {
    args: Value,
    format: &'static str,
    fit: Fit,
    notes: Vec<String>,
}

fn strategy(g: Granularity, args: &mut serde_json::Map<String, Value>) {
    match g {
        Granularity::Tensor => {
            args.insert("strategy".into(), json!("tensor"));
        }
        Granularity::Channel => {
            args.insert("strategy".into(), json!("channel"));
        }
        Granularity::Group(k) => {
            args.insert("strategy".into(), json!("group"));
            args.insert("group_size".into(), json!(k));
        }
    }
}

fn ct_args(spec: &Spec) -> CtArgs {
    let mut a = serde_json::Map::new();
    let mut notes = Vec::new();
    let mut fit = Fit::Close;
    let mut format = "pack-quantized";
    let int = |a: &mut serde_json::Map<String, Value>, bits: u32, symmetric: bool| {
        a.insert("num_bits".into(), json!(bits));
        a.insert("type".into(), json!("int"));
        a.insert("symmetric".into(), json!(symmetric));
    };
    let float = |a: &mut serde_json::Map<String, Value>, bits: u32| {
        a.insert("num_bits".into(), json!(bits));
        a.insert("type".into(), json!("float"));
        a.insert("symmetric".into(), json!(true));
    };
    match spec.family {
        Family::Int(b) => {
            int(&mut a, b, true);
            strategy(spec.granularity, &mut a);
            if spec.vsq {
                fit = Fit::Nearest;
                notes.push(
                    "VS-Quant's two-level scales have no equivalent; one scale per group".into(),
                );
            } else {
                notes.push(format!(
                    "compressed-tensors' symmetric int{b} scales by amax/{} and uses codes down to -{}; quantscope's restricted range scales by amax/{} (codes +-{})",
                    ((1u32 << b) - 1) as f64 / 2.0,
                    1u32 << (b - 1),
                    (1u32 << (b - 1)) - 1,
                    (1u32 << (b - 1)) - 1
                ));
            }
            // weight-only integers of every width are pack-quantized: vLLM's WNA16 scheme asserts it
        }
        Family::Uint(b) => {
            int(&mut a, b, false);
            strategy(spec.granularity, &mut a);
            fit = Fit::Same;
            if spec.vsq {
                fit = Fit::Nearest;
                notes.push(
                    "VS-Quant's two-level scales have no equivalent; one scale per group".into(),
                );
            }
        }
        Family::Float(ElemFloat::Fp8E4m3) => {
            float(&mut a, 8);
            strategy(spec.granularity, &mut a);
            format = "float-quantized";
            fit = Fit::Same;
        }
        Family::Float(f) => {
            let (bits, why) = match f {
                ElemFloat::Fp8E5m2 => (8, "compressed-tensors' 8-bit float is E4M3; E5M2 has no equivalent"),
                ElemFloat::Fp6E3m2 | ElemFloat::Fp6E2m3 => (6, "compressed-tensors' 6-bit float is the MX element type (E2M3); a plain scaled FP6 is the nearest"),
                _ => (4, "compressed-tensors' 4-bit float (E2M1) with a plain scale; its native FP4 schemes are NVFP4 and MXFP4"),
            };
            float(&mut a, bits);
            strategy(spec.granularity, &mut a);
            format = if bits == 8 {
                "float-quantized"
            } else {
                "pack-quantized"
            };
            fit = Fit::Nearest;
            notes.push(why.into());
        }
        Family::Nvfp4 => {
            // the NVFP4A16 preset
            float(&mut a, 4);
            a.insert("strategy".into(), json!("tensor_group"));
            a.insert("group_size".into(), json!(16));
            a.insert("scale_dtype".into(), json!("torch.float8_e4m3fn"));
            format = "nvfp4-pack-quantized";
            fit = Fit::Same;
        }
        Family::Mx(e) => {
            // the MXFP4A16 / MXFP6A16 / MXFP8A16 presets: groups of 32, uint8 (E8M0) scales
            let (bits, kind) = match e {
                MxElem::Float(ElemFloat::Fp4E2m1) => (4, "float"),
                MxElem::Float(ElemFloat::Fp6E2m3) | MxElem::Float(ElemFloat::Fp6E3m2) => {
                    (6, "float")
                }
                MxElem::Float(_) => (8, "float"),
                MxElem::Int8 => (8, "int"),
            };
            a.insert("num_bits".into(), json!(bits));
            a.insert("type".into(), json!(kind));
            a.insert("symmetric".into(), json!(true));
            a.insert("strategy".into(), json!("group"));
            a.insert("group_size".into(), json!(32));
            a.insert("scale_dtype".into(), json!("torch.uint8"));
            format = match bits {
                4 => "mxfp4-pack-quantized",
                6 => "mxfp6-pack-quantized",
                _ => "mxfp8-quantized",
            };
            fit = Fit::Close;
            notes.push("same layout (elements + one E8M0 exponent per 32); compressed-tensors' own observer rounds the block maximum to the nearest power of two at the element's precision before taking the exponent (`round_to_power_2`), where quantscope follows OCP MX (floor(log2 amax) - emax), so blocks whose maximum lies just under the next power of two get an exponent one higher there; apply --format compressed-tensors stores quantscope's exponents".into());
            match e {
                MxElem::Float(ElemFloat::Fp8E5m2) => {
                    fit = Fit::Nearest;
                    notes.push("MXFP8 there is E4M3, not E5M2".into());
                }
                MxElem::Float(ElemFloat::Fp6E3m2) => {
                    fit = Fit::Nearest;
                    notes.push("MXFP6 there is E2M3, not E3M2".into());
                }
                MxElem::Int8 => {
                    fit = Fit::Nearest;
                    format = "pack-quantized";
                    notes.push("MXINT8 has no preset; int8 in groups of 32 with power-of-two scales is the nearest".into());
                }
                _ => {}
            }
        }
        Family::Nf4 => {
            int(&mut a, 4, true);
            strategy(spec.granularity, &mut a);
            fit = Fit::Nearest;
            notes.push("NF4's normal-float codebook has no equivalent; symmetric int4 with the same groups is the nearest".into());
        }
        Family::Kmeans(b) => {
            int(&mut a, b.max(2), false);
            a.insert("strategy".into(), json!("channel"));
            fit = Fit::Nearest;
            notes.push(format!(
                "a k-means codebook has no equivalent; asymmetric int{} per channel is the nearest",
                b.max(2)
            ));
        }
        Family::Binary | Family::Ternary => {
            int(&mut a, 2, true);
            a.insert("strategy".into(), json!("channel"));
            fit = Fit::Nearest;
            notes.push("binary/ternary weights have no equivalent; symmetric int2 per channel is the nearest".into());
        }
        Family::MicroExp(m) => {
            let bits = match m {
                MicroExp::Mx4 => 4,
                MicroExp::Mx6 => 6,
                MicroExp::Mx9 => 8,
            };
            int(&mut a, bits, true);
            a.insert("strategy".into(), json!("group"));
            a.insert("group_size".into(), json!(16));
            fit = Fit::Nearest;
            notes.push(format!("shared micro-exponents have no equivalent; int{bits} in groups of 16 is the nearest"));
        }
        Family::Bf16 | Family::Fp16 | Family::None => {
            unreachable!("casts are handled by the caller")
        }
    }
    match spec.clip {
        Clip::MinMax => {}
        Clip::Mse => {
            a.insert("observer".into(), json!("mse"));
        }
        Clip::Percentile(p) => {
            if fit == Fit::Same {
                fit = Fit::Close;
            }
            notes.push(format!("no percentile observer: clip=p{p} becomes min-max"));
        }
        Clip::Kl => {
            if fit == Fit::Same {
                fit = Fit::Close;
            }
            notes.push("no KL observer: clip=kl becomes min-max".into());
        }
    }
    if spec.round == RoundMode::Stochastic {
        if fit == Fit::Same {
            fit = Fit::Close;
        }
        notes.push("stochastic rounding has no equivalent (nearest is used)".into());
    }
    a.insert("dynamic".into(), json!(false));
    CtArgs {
        args: Value::Object(a),
        format,
        fit,
        notes,
    }
}

fn module_name(tensor: &str) -> Option<&str> {
    tensor.strip_suffix(".weight")
}

fn compressed_tensors(entries: &[Entry]) -> Result<Exported, PlanError> {
    // groups keyed by their args (one group per distinct setting), in first-seen order
    let mut groups: Vec<(String, Value, &'static str, Vec<String>)> = Vec::new();
    let mut ignore = Vec::new();
    let mut rows = Vec::new();
    for e in entries {
        let spec_text = e.choice.text();
        let Some(module) = module_name(&e.tensor) else {
            rows.push(Row {
                tensor: e.tensor.clone(),
                spec: spec_text,
                target_name: String::new(),
                target: String::new(),
                fit: Fit::Omitted,
                note: "not a module's .weight: compressed-tensors quantizes module weights only"
                    .into(),
                target_bits_per_weight: None,
                numel: e.shape.as_ref().map(|s| s.iter().product::<usize>() as u64),
            });
            continue;
        };
        let spec = match &e.choice {
            Choice::Quantize(s) if !s.family.is_cast() => *s,
            Choice::Quantize(s) => {
                ignore.push(module.to_string());
                rows.push(Row {
                    tensor: e.tensor.clone(),
                    spec: spec_text,
                    target_name: module.into(),
                    target: "ignore".into(),
                    fit: Fit::Nearest,
                    note: format!("{} is a plain cast, not a quantization scheme: listed in ignore; save the checkpoint in that dtype instead", s),
                    target_bits_per_weight: None,
                    numel: e.shape.as_ref().map(|s| s.iter().product::<usize>() as u64),
                });
                continue;
            }
            Choice::Keep => {
                ignore.push(module.to_string());
                rows.push(Row {
                    tensor: e.tensor.clone(),
                    spec: spec_text,
                    target_name: module.into(),
                    target: "ignore".into(),
                    fit: Fit::Same,
                    note: "kept as it is".into(),
                    target_bits_per_weight: None,
                    numel: e.shape.as_ref().map(|s| s.iter().product::<usize>() as u64),
                });
                continue;
            }
        };
        let ct = ct_args(&spec);
        let k = match groups
            .iter()
            .position(|g| g.1 == ct.args && g.2 == ct.format)
        {
            Some(k) => k,
            None => {
                groups.push((
                    format!("group_{}", groups.len()),
                    ct.args.clone(),
                    ct.format,
                    Vec::new(),
                ));
                groups.len() - 1
            }
        };
        groups[k].3.push(module.to_string());
        rows.push(Row {
            tensor: e.tensor.clone(),
            spec: spec_text,
            target_name: module.into(),
            target: groups[k].0.clone(),
            fit: ct.fit,
            note: if ct.notes.is_empty() {
                "same method".into()
            } else {
                ct.notes.join("; ")
            },
            target_bits_per_weight: None,
            numel: e.shape.as_ref().map(|s| s.iter().product::<usize>() as u64),
        });
    }
    let formats: std::collections::BTreeSet<&str> = groups.iter().map(|g| g.2).collect();
    let mut config_groups = serde_json::Map::new();
    for (name, args, format, targets) in &groups {
        config_groups.insert(
            name.clone(),
            json!({
                "targets": targets,
                "weights": args,
                "input_activations": null,
                "output_activations": null,
                "format": format,
            }),
        );
    }
    let top_format = if formats.len() == 1 {
        formats.iter().next().copied().unwrap_or("dense")
    } else if formats.is_empty() {
        "dense"
    } else {
        "mixed-precision"
    };
    let cfg = json!({
        "quant_method": "compressed-tensors",
        "format": top_format,
        "config_groups": config_groups,
        "ignore": ignore,
        "kv_cache_scheme": null,
    });
    Ok(Exported {
        target: Target::CompressedTensors,
        text: serde_json::to_string_pretty(&cfg).expect("serializes") + "\n",
        rows,
    })
}

// ------------------------------------------------------------------------------------------------
// llama.cpp

/// A Hugging Face tensor name as llama.cpp's converter names it, for the architecture `arch`
/// (config.json's `model_type`; Gemma 3 names its norms differently, `gguf-py/gguf/tensor_mapping.py`).
pub fn gguf_name_for(hf: &str, arch: Option<&str>) -> Option<String> {
    if arch.is_some_and(|a| a.starts_with("gemma3")) {
        let stem = hf
            .strip_prefix("model.language_model.")
            .map(|r| format!("model.{r}"));
        let hf = stem.as_deref().unwrap_or(hf);
        for (from, to) in [
            ("post_attention_layernorm", "post_attention_norm"),
            ("pre_feedforward_layernorm", "ffn_norm"),
            ("post_feedforward_layernorm", "post_ffw_norm"),
        ] {
            if let Some((head, tail)) = hf.split_once(&format!(".{from}.")) {
                let n = head.strip_prefix("model.layers.")?;
                return Some(format!("blk.{n}.{to}.{tail}"));
            }
        }
        return gguf_name(hf);
    }
    gguf_name(hf)
}

/// A Hugging Face tensor name as llama.cpp's converter names it for llama-family and BERT checkpoints
/// (None: the converter drops it or the architecture is not one this map knows).
pub fn gguf_name(hf: &str) -> Option<String> {
    let (stem, suffix) = match hf.rsplit_once('.') {
        Some((s, x)) if x == "weight" || x == "bias" => (s, x),
        _ => return None,
    };
    // BERT checkpoints saved from a task model carry a "bert." prefix, which the converter strips
    let stem = stem.strip_prefix("bert.").unwrap_or(stem);
    let fixed: &[(&str, &str)] = &[
        // llama family (tensor_mapping.py: llama-hf)
        ("model.embed_tokens", "token_embd"),
        ("model.norm", "output_norm"),
        ("lm_head", "output"),
        // BERT
        ("embeddings.word_embeddings", "token_embd"),
        ("embeddings.token_type_embeddings", "token_types"),
        ("embeddings.position_embeddings", "position_embd"),
        ("embeddings.LayerNorm", "token_embd_norm"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == stem) {
        return Some(format!("{g}.{suffix}"));
    }
    let block: &[(&str, &str, &str)] = &[
        ("model.layers.", "self_attn.q_proj", "attn_q"),
        ("model.layers.", "self_attn.k_proj", "attn_k"),
        ("model.layers.", "self_attn.v_proj", "attn_v"),
        ("model.layers.", "self_attn.o_proj", "attn_output"),
        ("model.layers.", "self_attn.q_norm", "attn_q_norm"),
        ("model.layers.", "self_attn.k_norm", "attn_k_norm"),
        ("model.layers.", "input_layernorm", "attn_norm"),
        ("model.layers.", "post_attention_layernorm", "ffn_norm"),
        ("model.layers.", "mlp.gate_proj", "ffn_gate"),
        ("model.layers.", "mlp.up_proj", "ffn_up"),
        ("model.layers.", "mlp.down_proj", "ffn_down"),
        ("encoder.layer.", "attention.self.query", "attn_q"),
        ("encoder.layer.", "attention.self.key", "attn_k"),
        ("encoder.layer.", "attention.self.value", "attn_v"),
        ("encoder.layer.", "attention.output.dense", "attn_output"),
        (
            "encoder.layer.",
            "attention.output.LayerNorm",
            "attn_output_norm",
        ),
        ("encoder.layer.", "intermediate.dense", "ffn_up"),
        ("encoder.layer.", "output.dense", "ffn_down"),
        ("encoder.layer.", "output.LayerNorm", "layer_output_norm"),
    ];
    for (prefix, rest, g) in block {
        if let Some(tail) = stem.strip_prefix(prefix) {
            if let Some((n, r)) = tail.split_once('.') {
                if r == *rest && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                    return Some(format!("blk.{n}.{g}.{suffix}"));
                }
            }
        }
    }
    None
}

/// Tensors llama.cpp's converter leaves out (so no line is needed).
fn dropped_by_converter(hf: &str) -> bool {
    let s = hf.strip_prefix("bert.").unwrap_or(hf);
    s.starts_with("pooler.") || s.ends_with("position_ids") || s.ends_with("rotary_emb.inv_freq")
}

fn ggml_type(spec: &Spec) -> (&'static str, Fit, String) {
    let block_note = |block: usize| -> Option<String> {
        match spec.granularity {
            Granularity::Group(k) if k == block => None,
            Granularity::Group(k) => Some(format!(
                "llama.cpp scales blocks of {block}, not groups of {k}"
            )),
            Granularity::Channel => Some(format!(
                "llama.cpp scales blocks of {block}, finer than one scale per channel"
            )),
            Granularity::Tensor => Some(format!(
                "llama.cpp scales blocks of {block}, not one scale per tensor"
            )),
        }
    };
    let (t, mut fit, mut notes): (&str, Fit, Vec<String>) = match spec.family {
        Family::Int(8) => ("q8_0", Fit::Close, vec!["Q8_0: symmetric int8 (codes +-127) with an fp16 scale amax/127 per block, rounding ties away from zero".into()]),
        Family::Uint(8) => ("q8_0", Fit::Nearest, vec!["no asymmetric 8-bit type; Q8_0 is symmetric".into()]),
        Family::Int(6) | Family::Uint(6) => ("q6_K", Fit::Nearest, vec!["Q6_K: 6-bit super-blocks of 256 with 8-bit sub-block scales".into()]),
        Family::Int(5) => ("q5_0", Fit::Close, vec!["Q5_0 codes -16..15 with the scale from the largest-magnitude value".into()]),
        Family::Uint(5) => ("q5_1", Fit::Close, vec!["Q5_1: 5-bit codes with a scale and a minimum per block".into()]),
        Family::Int(4) => ("q4_0", Fit::Close, vec!["Q4_0 codes -8..7 with the scale from the largest-magnitude value".into()]),
        Family::Uint(4) => ("q4_1", Fit::Close, vec!["Q4_1: 4-bit codes with a scale and a minimum per block".into()]),
        Family::Int(3) | Family::Uint(3) => ("q3_K", Fit::Nearest, vec!["Q3_K: 3-bit super-blocks of 256 with 6-bit sub-block scales".into()]),
        Family::Int(_) | Family::Uint(_) => ("q2_K", Fit::Nearest, vec!["Q2_K: 2-bit super-blocks of 256 with 4-bit sub-block scales and minimums".into()]),
        Family::Float(ElemFloat::Fp8E4m3 | ElemFloat::Fp8E5m2) => ("q8_0", Fit::Nearest, vec!["GGML has no FP8 weight type; Q8_0 is the nearest 8-bit type".into()]),
        Family::Float(ElemFloat::Fp6E3m2 | ElemFloat::Fp6E2m3) => ("q6_K", Fit::Nearest, vec!["GGML has no FP6 type; Q6_K is the nearest 6-bit type".into()]),
        Family::Float(ElemFloat::Fp4E2m1) => ("mxfp4", Fit::Nearest, vec!["FP4 with a plain scale: MXFP4 (E2M1 with an E8M0 scale per 32) is the nearest".into()]),
        Family::Mx(MxElem::Float(ElemFloat::Fp4E2m1)) => ("mxfp4", Fit::Close, vec!["same layout (E2M1 + one E8M0 exponent per 32); llama.cpp chooses the shared exponent its own way".into()]),
        Family::Mx(MxElem::Float(ElemFloat::Fp6E3m2 | ElemFloat::Fp6E2m3)) => ("q6_K", Fit::Nearest, vec!["GGML has no MXFP6; Q6_K is the nearest 6-bit type".into()]),
        Family::Mx(_) => ("q8_0", Fit::Nearest, vec!["GGML has no MXFP8/MXINT8; Q8_0 (int8 per 32 with an fp16 scale) is the nearest".into()]),
        Family::Nvfp4 => ("nvfp4", Fit::Close, vec!["GGML_TYPE_NVFP4 (llama.cpp from March 2026): E2M1 with an E4M3 scale per 16, stored in blocks of 64; older builds reject the type".into()]),
        Family::Nf4 => ("iq4_nl", Fit::Nearest, vec!["IQ4_NL: a non-uniform 4-bit grid in blocks of 32, the nearest to NF4's normal-float codebook".into()]),
        Family::Kmeans(b) if b >= 4 => ("iq4_nl", Fit::Nearest, vec!["a k-means codebook has no equivalent; IQ4_NL's fixed non-uniform grid is the nearest".into()]),
        Family::Kmeans(3) => ("q3_K", Fit::Nearest, vec!["a k-means codebook has no equivalent; Q3_K is the nearest 3-bit type".into()]),
        Family::Kmeans(_) => ("q2_K", Fit::Nearest, vec!["a k-means codebook has no equivalent; Q2_K is the nearest 2-bit type".into()]),
        Family::Ternary => ("tq2_0", Fit::Nearest, vec!["TQ2_0 stores {-1, 0, 1} with one scale per 256 (the block's largest magnitude), not TWN's threshold and mean".into()]),
        Family::Binary => ("tq1_0", Fit::Nearest, vec!["GGML has no 1-bit sign type; TQ1_0 (ternary, 1.69 bits) is the nearest".into()]),
        Family::MicroExp(MicroExp::Mx4) => ("q4_0", Fit::Nearest, vec!["shared micro-exponents have no equivalent; Q4_0 is the nearest".into()]),
        Family::MicroExp(MicroExp::Mx6) => ("q6_K", Fit::Nearest, vec!["shared micro-exponents have no equivalent; Q6_K is the nearest".into()]),
        Family::MicroExp(MicroExp::Mx9) => ("q8_0", Fit::Nearest, vec!["shared micro-exponents have no equivalent; Q8_0 is the nearest".into()]),
        Family::Bf16 => ("bf16", Fit::Same, vec![]),
        Family::Fp16 => ("f16", Fit::Same, vec![]),
        Family::None => ("f32", Fit::Same, vec![]),
    };
    let block = match t {
        "q8_0" | "q5_0" | "q5_1" | "q4_0" | "q4_1" | "iq4_nl" | "mxfp4" => Some(32),
        "nvfp4" => Some(16), // one scale per 16 (stored four to a block of 64)
        "q6_K" | "q3_K" | "q2_K" | "tq2_0" | "tq1_0" => Some(256),
        _ => None,
    };
    let family_fixed = matches!(spec.family, Family::Mx(_) | Family::Nvfp4);
    if let (Some(b), false) = (block, family_fixed) {
        if let Some(n) = block_note(b) {
            if matches!(spec.family, Family::Int(_) | Family::Uint(_)) && fit == Fit::Close {
                notes.push(n);
            }
        }
    }
    if !matches!(spec.clip, Clip::MinMax) && !spec.family.is_cast() {
        notes.push(
            "clipping is llama-quantize's own choice (an importance matrix helps), not this spec's"
                .into(),
        );
        if fit == Fit::Same {
            fit = Fit::Close;
        }
    }
    (t, fit, notes.join("; "))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        if r"\.+*?()|[]{}^$".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn dtype_type(d: Option<Dtype>) -> (&'static str, Fit, &'static str) {
    match d {
        Some(Dtype::F32) => ("f32", Fit::Same, "kept as it is"),
        Some(Dtype::F16) => ("f16", Fit::Same, "kept as it is"),
        Some(Dtype::BF16) => ("bf16", Fit::Same, "kept as it is"),
        _ => (
            "f16",
            Fit::Nearest,
            "kept: the source dtype is unknown here (pass --model), so f16",
        ),
    }
}

/// A GGML type's block: (weights per block, bytes per block), from `type_traits` in llama.cpp's
/// `ggml/src/ggml.c` (block structs in `ggml-common.h`).
pub fn ggml_block(t: &str) -> Option<(usize, usize)> {
    Some(match t {
        "f32" => (1, 4),
        "f16" | "bf16" => (1, 2),
        "q4_0" | "iq4_nl" => (32, 18),
        "q4_1" => (32, 20),
        "q5_0" => (32, 22),
        "q5_1" => (32, 24),
        "q8_0" => (32, 34),
        "mxfp4" => (32, 17),
        "nvfp4" => (64, 36),
        "q2_K" => (256, 84),
        "q3_K" => (256, 110),
        "q4_K" => (256, 144),
        "q5_K" => (256, 176),
        "q6_K" => (256, 210),
        "iq4_xs" => (256, 136),
        "iq3_s" => (256, 110),
        "tq1_0" => (256, 54),
        "tq2_0" => (256, 66),
        _ => return None,
    })
}

/// What llama-quantize really stores for a requested type on rows of `ncols` weights (GGUF `ne[0]`,
/// the Hugging Face `in_features`): `tensor_type_fallback` in llama.cpp's `src/llama-quant.cpp` remaps a
/// type whose block does not divide the row in one step, then to f16 if that does not divide either.
/// Err: the type has no fallback there and llama-quantize stops.
pub fn ggml_fallback(t: &'static str, ncols: usize) -> Result<&'static str, String> {
    let (block, _) = ggml_block(t).unwrap_or((1, 0));
    if ncols.is_multiple_of(block) {
        return Ok(t);
    }
    let f = match t {
        "iq4_xs" | "iq3_s" => "iq4_nl",
        "q2_K" | "q3_K" | "tq1_0" | "tq2_0" => "q4_0",
        "q4_K" => "q5_0",
        "q5_K" => "q5_1",
        "q6_K" => "q8_0",
        _ if block <= 32 => t,
        _ => {
            return Err(format!(
                "{t} needs rows that are multiples of {block} weights and this one has {ncols}; llama-quantize has no fallback for it and stops"
            ))
        }
    };
    let (fb, _) = ggml_block(f).unwrap_or((1, 0));
    Ok(if ncols.is_multiple_of(fb) { f } else { "f16" })
}

/// The GGML type llama-quantize really stores for `spec` on rows of `ncols` weights (the nearest type,
/// then the row rule of [`ggml_fallback`]) and its bits per weight.
pub fn llama_cpp_type(spec: &Spec, ncols: usize) -> Result<(&'static str, f64), String> {
    let (asked, _, _) = ggml_type(spec);
    let t = ggml_fallback(asked, ncols)?;
    let (b, bytes) = ggml_block(t).unwrap_or((1, 2));
    Ok((t, bytes as f64 * 8.0 / b as f64))
}

/// Tensors llama-quantize never quantizes, whatever the file asks (`tensor_allows_quantization` in
/// `src/llama-quant.cpp`): norms, position and token-type embeddings, MoE routers.
fn never_quantized(gguf: &str) -> bool {
    gguf.contains("_norm.")
        || gguf.starts_with("position_embd.")
        || gguf.starts_with("token_types.")
        || gguf.contains("ffn_gate_inp.")
        || !gguf.ends_with("weight")
}

fn llama_cpp(entries: &[Entry], arch: Option<&str>) -> Result<Exported, PlanError> {
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    let mut unknown = Vec::new();
    let mut stops = Vec::new();
    for e in entries {
        let spec_text = e.choice.text();
        let numel = e.shape.as_ref().map(|s| s.iter().product::<usize>() as u64);
        let Some(g) = gguf_name_for(&e.tensor, arch) else {
            if dropped_by_converter(&e.tensor) {
                rows.push(Row {
                    tensor: e.tensor.clone(),
                    spec: spec_text,
                    target_name: String::new(),
                    target: String::new(),
                    fit: Fit::Omitted,
                    note: "llama.cpp's converter drops this tensor".into(),
                    target_bits_per_weight: None,
                    numel,
                });
            } else {
                unknown.push(e.tensor.clone());
            }
            continue;
        };
        if never_quantized(&g) {
            rows.push(Row {
                tensor: e.tensor.clone(),
                spec: spec_text,
                target_name: g,
                target: String::new(),
                fit: if e.choice == Choice::Keep {
                    Fit::Same
                } else {
                    Fit::Omitted
                },
                note:
                    "llama-quantize never quantizes this tensor: it stays as the converter wrote it"
                        .into(),
                target_bits_per_weight: None,
                numel,
            });
            continue;
        }
        let (asked, mut fit, mut note) = match &e.choice {
            Choice::Quantize(s) => ggml_type(s),
            Choice::Keep => {
                let (t, f, n) = dtype_type(e.dtype);
                (t, f, n.to_string())
            }
        };
        // the row rule: what llama-quantize will really store
        let ncols = e.shape.as_ref().and_then(|s| s.last().copied());
        let t = match ncols.map(|n| ggml_fallback(asked, n)) {
            Some(Ok(t)) => t,
            Some(Err(why)) => {
                stops.push(format!("{} ({g}): {why}", e.tensor));
                asked
            }
            None => asked,
        };
        if t != asked {
            fit = Fit::Nearest;
            let n = ncols.expect("a fallback needs the row length");
            note = format!(
                "{asked} needs rows that are multiples of {} weights and this tensor's rows have {n}: llama-quantize falls back to {t}, which is written here and sized{}{}",
                ggml_block(asked).map_or(1, |b| b.0),
                if note.is_empty() { "" } else { "; " },
                note
            );
        }
        let bpw = ggml_block(t).map(|(b, bytes)| bytes as f64 * 8.0 / b as f64);
        lines.push(format!("^{}$={t}", regex_escape(&g.to_ascii_lowercase())));
        rows.push(Row {
            tensor: e.tensor.clone(),
            spec: spec_text,
            target_name: g,
            target: t.into(),
            fit,
            note: if note.is_empty() {
                "same method".into()
            } else {
                note
            },
            target_bits_per_weight: bpw,
            numel,
        });
    }
    if !unknown.is_empty() {
        let shown: Vec<_> = unknown.iter().take(4).cloned().collect();
        return Err(PlanError::Invalid(format!(
            "no GGUF name for {} tensor(s) ({}{}): the llama.cpp export knows llama-family (model.layers.N.…: llama, mistral, qwen2, qwen3, gemma3) and BERT (encoder.layer.N.…) checkpoints",
            unknown.len(),
            shown.join(", "),
            if unknown.len() > 4 { ", …" } else { "" }
        )));
    }
    if !stops.is_empty() {
        return Err(PlanError::Invalid(format!(
            "llama-quantize would stop on {} tensor(s): {}",
            stops.len(),
            stops.join("; ")
        )));
    }
    Ok(Exported {
        target: Target::LlamaCpp,
        text: lines.join("\n") + if lines.is_empty() { "" } else { "\n" },
        rows,
    })
}

/// The rows grouped by how well they fit, for a summary line.
pub fn fit_counts(rows: &[Row]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        let k = match r.fit {
            Fit::Same => "same",
            Fit::Close => "close",
            Fit::Nearest => "nearest",
            Fit::Omitted => "omitted",
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(t: &str, s: &str) -> Entry {
        Entry {
            tensor: t.into(),
            choice: Choice::parse(s).unwrap(),
            dtype: Some(Dtype::BF16),
            shape: None,
        }
    }

    #[test]
    fn gguf_names_follow_llama_cpp() {
        for (hf, g) in [
            ("model.embed_tokens.weight", "token_embd.weight"),
            (
                "model.layers.0.self_attn.q_proj.weight",
                "blk.0.attn_q.weight",
            ),
            (
                "model.layers.31.mlp.down_proj.weight",
                "blk.31.ffn_down.weight",
            ),
            (
                "model.layers.2.post_attention_layernorm.weight",
                "blk.2.ffn_norm.weight",
            ),
            ("lm_head.weight", "output.weight"),
            (
                "encoder.layer.5.attention.output.dense.weight",
                "blk.5.attn_output.weight",
            ),
            (
                "encoder.layer.0.intermediate.dense.bias",
                "blk.0.ffn_up.bias",
            ),
            (
                "bert.encoder.layer.1.output.LayerNorm.weight",
                "blk.1.layer_output_norm.weight",
            ),
            ("embeddings.word_embeddings.weight", "token_embd.weight"),
        ] {
            assert_eq!(gguf_name(hf).as_deref(), Some(g), "{hf}");
        }
        // Gemma 3 names its four norms its own way (tensor_mapping.py)
        for (hf, g) in [
            (
                "model.layers.3.post_attention_layernorm.weight",
                "blk.3.post_attention_norm.weight",
            ),
            (
                "model.layers.3.pre_feedforward_layernorm.weight",
                "blk.3.ffn_norm.weight",
            ),
            (
                "model.layers.3.post_feedforward_layernorm.weight",
                "blk.3.post_ffw_norm.weight",
            ),
            (
                "model.layers.3.input_layernorm.weight",
                "blk.3.attn_norm.weight",
            ),
            (
                "model.layers.3.self_attn.k_norm.weight",
                "blk.3.attn_k_norm.weight",
            ),
        ] {
            assert_eq!(
                gguf_name_for(hf, Some("gemma3_text")).as_deref(),
                Some(g),
                "{hf}"
            );
        }
        assert_eq!(
            gguf_name_for(
                "model.layers.3.post_attention_layernorm.weight",
                Some("qwen3")
            )
            .as_deref(),
            Some("blk.3.ffn_norm.weight")
        );
        // the row rule: one step of fallback, then f16
        assert_eq!(ggml_fallback("q3_K", 576), Ok("q4_0"));
        assert_eq!(ggml_fallback("q6_K", 1536), Ok("q6_K"));
        assert_eq!(ggml_fallback("q4_K", 640), Ok("q5_0"));
        assert_eq!(ggml_fallback("q3_K", 48), Ok("f16"));
        assert!(ggml_fallback("nvfp4", 48).is_err());
        assert_eq!(gguf_name("model.layers.x.mlp.down_proj.weight"), None);
        assert_eq!(gguf_name("fc1.weight"), None);
    }

    #[test]
    fn llama_cpp_lines_and_notes() {
        let e = export(
            &[
                entry("model.layers.0.self_attn.q_proj.weight", "int8:g32"),
                entry("model.layers.0.mlp.down_proj.weight", "int4:g128"),
                entry("model.layers.0.mlp.up_proj.weight", "nf4"),
                entry("lm_head.weight", "none"),
            ],
            Target::LlamaCpp,
            None,
        )
        .unwrap();
        let lines: Vec<&str> = e.text.lines().collect();
        assert_eq!(lines[0], r"^blk\.0\.attn_q\.weight$=q8_0");
        assert_eq!(lines[1], r"^blk\.0\.ffn_down\.weight$=q4_0");
        assert_eq!(lines[2], r"^blk\.0\.ffn_up\.weight$=iq4_nl");
        assert_eq!(lines[3], r"^output\.weight$=bf16");
        // every token is NAME=TYPE with no spaces (llama-quantize reads whitespace-separated tokens)
        assert!(e
            .text
            .split_whitespace()
            .all(|t| t.matches('=').count() == 1));
        assert!(
            e.rows[1].note.contains("blocks of 32, not groups of 128"),
            "{}",
            e.rows[1].note
        );
        assert_eq!(e.rows[2].fit, Fit::Nearest);
        assert!(e.notes().iter().any(|n| n.contains("NF4")));
        // an architecture the map does not know is an error, not a file llama.cpp would ignore
        let err = export(&[entry("fc1.weight", "int8")], Target::LlamaCpp, None).unwrap_err();
        assert!(err.to_string().contains("fc1.weight"));
    }

    #[test]
    fn compressed_tensors_groups_targets_and_ignore() {
        let e = export(
            &[
                entry("encoder.layer.0.attention.self.query.weight", "int4:g128"),
                entry("encoder.layer.0.attention.self.key.weight", "int4:g128"),
                entry("encoder.layer.0.output.dense.weight", "nvfp4"),
                entry("encoder.layer.0.intermediate.dense.weight", "none"),
            ],
            Target::CompressedTensors,
            None,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&e.text).unwrap();
        assert_eq!(v["quant_method"], "compressed-tensors");
        assert_eq!(v["format"], "mixed-precision");
        let g0 = &v["config_groups"]["group_0"];
        assert_eq!(
            g0["targets"],
            json!([
                "encoder.layer.0.attention.self.query",
                "encoder.layer.0.attention.self.key"
            ])
        );
        assert_eq!(g0["weights"]["num_bits"], 4);
        assert_eq!(g0["weights"]["strategy"], "group");
        assert_eq!(g0["weights"]["group_size"], 128);
        let g1 = &v["config_groups"]["group_1"]["weights"];
        assert_eq!(g1["strategy"], "tensor_group");
        assert_eq!(g1["scale_dtype"], "torch.float8_e4m3fn");
        assert_eq!(v["ignore"], json!(["encoder.layer.0.intermediate.dense"]));
        assert_eq!(e.rows[2].fit, Fit::Same);
        assert_eq!(e.rows[0].fit, Fit::Close);
    }
}
