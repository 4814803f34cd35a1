//! What the runtime a plan is made for requires of it: which layers it fuses (and so must share one
//! spec), which schemes it can load, and a check of a whole plan against those rules.
//!
//! - **vLLM** (compressed-tensors checkpoints): the modules a model's `packed_modules_mapping` fuses
//!   (`qkv_proj` ← q/k/v, `gate_up_proj` ← gate/up in `vllm/model_executor/models/llama.py`, qwen2,
//!   qwen3, gemma3, mistral; BERT's `qkv_proj` ← query/key/value in `bert.py`; a MoE layer's experts in
//!   one `FusedMoE`) must all get the same scheme: `compressed_tensors/utils.py` `should_ignore_layer`
//!   refuses a fused layer whose
//!   shards are partly ignored; where targets differ it silently uses the first shard's scheme, so the
//!   rule is ours to enforce. Embeddings are kept (a quantized one has no weight to tie the head to).
//! - **llama.cpp** quantizes every tensor on its own (no fused groups); its rules (type names, block
//!   sizes and the fallback for rows a block does not divide) live in [`super::export`].

use super::Choice;
use crate::quant::spec::{ElemFloat, MxElem};
use crate::quant::{Family, Granularity, Spec};
use std::collections::BTreeMap;

/// The program a plan is meant to run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// No runtime's rules: every layer on its own.
    #[default]
    None,
    Vllm,
    LlamaCpp,
}

impl Runtime {
    pub fn parse(s: &str) -> Result<Runtime, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Runtime::None),
            "vllm" | "compressed-tensors" | "compressed_tensors" => Ok(Runtime::Vllm),
            "llama.cpp" | "llama-cpp" | "llamacpp" | "gguf" => Ok(Runtime::LlamaCpp),
            other => Err(format!(
                "unknown target '{other}': use vllm, llama.cpp or none"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Runtime::None => "none",
            Runtime::Vllm => "vllm",
            Runtime::LlamaCpp => "llama.cpp",
        }
    }

    /// Whether layers the runtime fuses must share one spec.
    pub fn ties(self) -> bool {
        self == Runtime::Vllm
    }
}

/// Layers a runtime runs as one fused layer: all must get the same spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedGroup {
    /// The fused module's name in the runtime, e.g. `model.layers.3.self_attn.qkv_proj`.
    pub name: String,
    /// The tensors (`….q_proj.weight`, …) in model order.
    pub members: Vec<String>,
}

impl FusedGroup {
    /// `qkv_proj of model.layers.3.self_attn (q_proj, k_proj, v_proj)`: for messages.
    pub fn describe(&self) -> String {
        let (prefix, fused) = self.name.rsplit_once('.').unwrap_or(("", &self.name));
        let parts: Vec<&str> = self
            .members
            .iter()
            .map(|m| {
                let stem = m.strip_suffix(".weight").unwrap_or(m);
                stem.strip_prefix(prefix)
                    .map(|s| s.trim_start_matches('.'))
                    .unwrap_or(stem)
            })
            .collect();
        if parts.len() > 4 {
            format!("{fused} of {prefix} ({} tensors)", parts.len())
        } else {
            format!("{fused} of {prefix} ({})", parts.join(", "))
        }
    }
}

/// The shards vLLM's models pack into one layer: (fused name, shard names), per module prefix.
const PACKED: &[(&str, &[&str])] = &[
    ("qkv_proj", &["q_proj", "k_proj", "v_proj"]),
    ("gate_up_proj", &["gate_proj", "up_proj"]),
    ("qkv_proj", &["query", "key", "value"]),
];

/// vLLM's fused groups among the weight tensors `names` (any order): q/k/v and gate/up of each block,
/// BERT's query/key/value, and every expert of a MoE layer (`….experts.N.….weight`). A group forms only
/// where all its shards are present.
pub fn fused_groups<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<FusedGroup> {
    let weights: Vec<&str> = names
        .into_iter()
        .filter(|n| n.ends_with(".weight"))
        .collect();
    let present: std::collections::HashSet<&str> = weights.iter().copied().collect();
    let mut out: Vec<FusedGroup> = Vec::new();
    for w in &weights {
        let stem = &w[..w.len() - ".weight".len()];
        let Some((prefix, last)) = stem.rsplit_once('.') else {
            continue;
        };
        for (fused, shards) in PACKED {
            if shards[0] != last {
                continue;
            }
            let members: Vec<String> = shards
                .iter()
                .map(|s| format!("{prefix}.{s}.weight"))
                .collect();
            if members.iter().all(|m| present.contains(m.as_str())) {
                out.push(FusedGroup {
                    name: format!("{prefix}.{fused}"),
                    members,
                });
            }
        }
    }
    // a MoE layer: every `<prefix>.experts.<n>.<rest>.weight` of one prefix
    let mut experts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for w in &weights {
        if let Some(i) = w.find(".experts.") {
            let tail = &w[i + ".experts.".len()..];
            if tail
                .split('.')
                .next()
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            {
                experts
                    .entry(format!("{}.experts", &w[..i]))
                    .or_default()
                    .push(w.to_string());
            }
        }
    }
    for (name, members) in experts {
        // experts replace the q/k/v-style groups of their own shards
        out.retain(|g| !g.members.iter().any(|m| members.contains(m)));
        out.push(FusedGroup { name, members });
    }
    out
}

/// The compressed-tensors scheme class of vLLM that loads a spec, or why none does. From vLLM 0.34's
/// `compressed_tensors/compressed_tensors.py` (`_get_scheme_from_parts`) and `schemes/`: weight-only
/// integers of 2 to 8 bits, symmetric or with zero points, per channel or in groups (Marlin's group sizes
/// are 32, 64 and 128; widths other than 4 and 8 run on its newer kernel) are `CompressedTensorsWNA16`;
/// FP8 per tensor or channel, NVFP4 and MXFP4 have their own classes.
pub fn vllm_scheme(spec: &Spec) -> Result<&'static str, String> {
    let group_ok = |g: Granularity| match g {
        Granularity::Channel => true,
        Granularity::Group(k) => [32, 64, 128].contains(&k),
        Granularity::Tensor => false,
    };
    match spec.family {
        Family::Int(b) | Family::Uint(b) if (2..=8).contains(&b) => {
            if spec.vsq {
                return Err("two-level (VS-Quant) scales have no compressed-tensors scheme".into());
            }
            if !group_ok(spec.granularity) {
                return Err(format!(
                    "weight-only int{b} (CompressedTensorsWNA16) takes per-channel scales or groups of 32, 64 or 128, not {}",
                    granularity_text(spec.granularity)
                ));
            }
            Ok("CompressedTensorsWNA16")
        }
        Family::Float(ElemFloat::Fp8E4m3) => match spec.granularity {
            Granularity::Tensor | Granularity::Channel => Ok("CompressedTensorsW8A16Fp8"),
            g => Err(format!(
                "FP8 weights (CompressedTensorsW8A16Fp8) take one scale per tensor or channel, not {}",
                granularity_text(g)
            )),
        },
        Family::Nvfp4 => Ok("CompressedTensorsW4A4Fp4 (weight-only)"),
        Family::Mx(MxElem::Float(ElemFloat::Fp4E2m1)) => Ok("CompressedTensorsW4A4Mxfp4 (weight-only)"),
        _ => Err(format!(
            "no compressed-tensors scheme in vLLM loads {} weights",
            spec.family.name()
        )),
    }
}

fn granularity_text(g: Granularity) -> String {
    match g {
        Granularity::Tensor => "one scale per tensor".into(),
        Granularity::Channel => "one scale per channel".into(),
        Granularity::Group(k) => format!("groups of {k}"),
    }
}

/// Whether vLLM can give a fused group this spec with each shard scaled on its own (NVFP4 cannot: one
/// global scale per fused layer, `CompressedTensorsW4A4Fp4.process_weights_after_loading`).
pub fn vllm_tieable(spec: &Spec) -> bool {
    spec.family != Family::Nvfp4
}

/// `spec` as vLLM would hold it for weights of `dtype`: compressed-tensors keeps integer and FP8 scales
/// in the weight's dtype, so a plan for vLLM quantizes with scales rounded to that dtype (its values are
/// then the ones the checkpoint holds). Other specs are returned unchanged.
pub fn for_vllm(spec: Spec, dtype: safetensors::Dtype) -> Spec {
    use crate::quant::spec::ScaleType;
    let scale = match dtype {
        safetensors::Dtype::BF16 => ScaleType::Bf16,
        safetensors::Dtype::F16 => ScaleType::Fp16,
        safetensors::Dtype::F32 => ScaleType::Fp32,
        _ => return spec,
    };
    match spec.family {
        Family::Int(_) | Family::Uint(_) | Family::Float(ElemFloat::Fp8E4m3) => {
            Spec { scale, ..spec }
        }
        _ => spec,
    }
}

/// The candidates of a search for `runtime`, as the runtime will hold them: for vLLM, every spec it
/// cannot load is refused (one message naming them all) and the rest get scales in the weights' dtype
/// (`dtype`, the dtype most searched weights have). Returns the candidates and a line per spec changed.
pub fn candidates_for(
    runtime: Runtime,
    candidates: &[Spec],
    dtype: Option<safetensors::Dtype>,
) -> Result<(Vec<Spec>, Vec<String>), String> {
    if runtime != Runtime::Vllm {
        return Ok((candidates.to_vec(), Vec::new()));
    }
    let bad: Vec<String> = candidates
        .iter()
        .filter_map(|s| vllm_scheme(s).err().map(|e| format!("{}: {e}", s.short())))
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "vLLM cannot load {}; choose among int2..int8 / uint2..uint8 (per channel or g32/g64/g128), fp8_e4m3 (per tensor or channel), nvfp4, mxfp4, or no runtime",
            bad.join("; ")
        ));
    }
    let moved: Vec<Spec> = candidates
        .iter()
        .map(|&c| dtype.map_or(c, |d| for_vllm(c, d)))
        .collect();
    let changed = candidates
        .iter()
        .zip(&moved)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("{} -> {}", a.short(), b.short()))
        .collect();
    Ok((moved, changed))
}

/// The dtype most of `model`'s tensors `layers` have.
pub fn dominant_dtype(model: &crate::model::Model, layers: &[usize]) -> Option<safetensors::Dtype> {
    let mut counts: Vec<(safetensors::Dtype, usize)> = Vec::new();
    for &i in layers {
        let d = model.tensors[i].dtype;
        match counts.iter_mut().find(|c| c.0 == d) {
            Some(c) => c.1 += 1,
            None => counts.push((d, 1)),
        }
    }
    counts.into_iter().max_by_key(|c| c.1).map(|c| c.0)
}

/// A rule of the runtime the plan breaks, with the tensors involved.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub why: String,
    pub tensors: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<&str> = self.tensors.iter().take(6).map(String::as_str).collect();
        write!(
            f,
            "{} ({}{})",
            self.why,
            shown.join(", "),
            if self.tensors.len() > 6 {
                format!(", and {} more", self.tensors.len() - 6)
            } else {
                String::new()
            }
        )
    }
}

/// Whether a tensor is an embedding table (a runtime's embedding layer, not a linear layer).
pub fn is_embedding(name: &str) -> bool {
    let stem = name.strip_suffix(".weight").unwrap_or(name);
    stem.ends_with("embed_tokens")
        || stem.ends_with("word_embeddings")
        || stem.ends_with("position_embeddings")
        || stem.ends_with("token_type_embeddings")
        || stem.ends_with("wte")
        || stem.ends_with("wpe")
}

/// Every rule of `runtime` the plan's choices (tensor → choice, for every listed tensor) break. Similar
/// violations are merged into one, naming all their tensors.
pub fn check(choices: &[(String, Choice)], runtime: Runtime) -> Vec<Violation> {
    if runtime != Runtime::Vllm {
        return Vec::new();
    }
    let mut out: Vec<Violation> = Vec::new();
    let mut push = |why: String, t: &str| match out.iter_mut().find(|v| v.why == why) {
        Some(v) => v.tensors.push(t.to_string()),
        None => out.push(Violation {
            why,
            tensors: vec![t.to_string()],
        }),
    };
    let of: BTreeMap<&str, &Choice> = choices.iter().map(|(t, c)| (t.as_str(), c)).collect();
    for (t, c) in choices {
        let Choice::Quantize(s) = c else { continue };
        if s.family.is_cast() {
            continue;
        }
        if is_embedding(t) {
            push(
                "keep embedding tables for vLLM: a quantized embedding has no plain weight to tie the LM head to, and untied ones take symmetric integers only (VocabParallelEmbedding)".into(),
                t,
            );
            continue;
        }
        if let Err(why) = vllm_scheme(s) {
            push(format!("{}: {why}", s.short()), t);
        }
    }
    for g in fused_groups(choices.iter().map(|(t, _)| t.as_str())) {
        let specs: Vec<String> = g
            .members
            .iter()
            .map(|m| {
                of.get(m.as_str())
                    .map_or("none".into(), |c| short_choice(c))
            })
            .collect();
        if specs.iter().all(|s| s == "nvfp4") {
            out.push(Violation {
                why: format!(
                    "vLLM keeps one NVFP4 global scale for {} (the largest of its shards'), while these shards were scaled each on its own: the others would decode wrongly",
                    g.describe()
                ),
                tensors: g.members.clone(),
            });
        }
        if specs.iter().any(|s| s != &specs[0]) {
            out.push(Violation {
                why: format!(
                    "vLLM runs {} as one layer, so its shards need one spec; here they have {}",
                    g.describe(),
                    specs.join(" / ")
                ),
                tensors: g.members.clone(),
            });
        }
    }
    out
}

fn short_choice(c: &Choice) -> String {
    match c {
        Choice::Quantize(s) => s.short(),
        Choice::Keep => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_block(n: usize) -> Vec<String> {
        [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
            "input_layernorm",
        ]
        .iter()
        .map(|s| format!("model.layers.{n}.{s}.weight"))
        .collect()
    }

    #[test]
    fn llama_blocks_fuse_qkv_and_gate_up() {
        let names: Vec<String> = (0..2).flat_map(llama_block).collect();
        let g = fused_groups(names.iter().map(String::as_str));
        assert_eq!(g.len(), 4);
        assert_eq!(g[0].name, "model.layers.0.self_attn.qkv_proj");
        assert_eq!(g[0].members.len(), 3);
        assert_eq!(g[1].name, "model.layers.0.mlp.gate_up_proj");
        assert_eq!(
            g[0].describe(),
            "qkv_proj of model.layers.0.self_attn (q_proj, k_proj, v_proj)"
        );
        // a group forms only with all its shards
        let partial = ["model.layers.0.self_attn.q_proj.weight"];
        assert!(fused_groups(partial.iter().copied()).is_empty());
        // BERT and experts
        let bert: Vec<String> = ["query", "key", "value", "output.dense"]
            .iter()
            .map(|s| format!("encoder.layer.0.attention.self.{s}.weight"))
            .collect();
        assert_eq!(
            fused_groups(bert.iter().map(String::as_str))[0].name,
            "encoder.layer.0.attention.self.qkv_proj"
        );
        let moe: Vec<String> = (0..4)
            .flat_map(|e| {
                ["gate_proj", "up_proj", "down_proj"]
                    .map(|p| format!("model.layers.1.mlp.experts.{e}.{p}.weight"))
            })
            .collect();
        let g = fused_groups(moe.iter().map(String::as_str));
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!(g[0].name, "model.layers.1.mlp.experts");
        assert_eq!(g[0].members.len(), 12);
    }

    #[test]
    fn vllm_rules_name_the_layers() {
        let spec = |s: &str| Choice::parse(s).unwrap();
        let mut choices: Vec<(String, Choice)> = llama_block(0)
            .into_iter()
            .map(|n| (n, spec("int4:g128")))
            .collect();
        assert!(check(&choices, Runtime::Vllm).is_empty());
        choices[1].1 = spec("int8");
        choices[4].1 = spec("nf4");
        choices.push(("model.embed_tokens.weight".into(), spec("int8")));
        let v = check(&choices, Runtime::Vllm);
        let text: Vec<String> = v.iter().map(|v| v.to_string()).collect();
        assert_eq!(v.len(), 4, "{text:#?}");
        assert!(
            text[0].contains("nf4") && text[0].contains("gate_proj"),
            "{}",
            text[0]
        );
        assert!(text[1].contains("embedding"));
        assert!(
            text[2].contains("qkv_proj") && text[2].contains("int4:g128 / int8 / int4:g128"),
            "{}",
            text[2]
        );
        assert!(text[3].contains("gate_up_proj"));
        // no rules without a runtime, and llama.cpp has no fused groups
        assert!(check(&choices, Runtime::None).is_empty());
        assert!(check(&choices, Runtime::LlamaCpp).is_empty());
        assert!(vllm_scheme(&Spec::parse("int4:g16").unwrap()).is_err());
        assert!(vllm_scheme(&Spec::parse("int3:g64").unwrap()).is_ok());
        assert!(vllm_scheme(&Spec::parse("fp8_e4m3:g32").unwrap()).is_err());
        assert!(vllm_scheme(&Spec::parse("nvfp4").unwrap()).is_ok());
        // a search's candidates for vLLM: unloadable ones refused, scales moved to the weights' dtype
        let specs: Vec<Spec> = ["int4:g64", "nvfp4"]
            .iter()
            .map(|t| Spec::parse(t).unwrap())
            .collect();
        let (moved, changed) =
            candidates_for(Runtime::Vllm, &specs, Some(safetensors::Dtype::BF16)).unwrap();
        assert_eq!(moved[0].short(), "int4:g64:scale=bf16");
        assert_eq!(moved[1], specs[1]);
        assert_eq!(changed, ["int4:g64 -> int4:g64:scale=bf16"]);
        let err = candidates_for(Runtime::Vllm, &[Spec::parse("nf4").unwrap()], None).unwrap_err();
        assert!(err.contains("nf4"), "{err}");
        assert_eq!(
            candidates_for(Runtime::None, &specs, None).unwrap().0,
            specs
        );
        assert!(vllm_scheme(&Spec::parse("nf4").unwrap()).is_err());
    }
}
