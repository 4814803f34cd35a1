//! Grouping tensors into layers (modules) and recognising what each layer is.

use super::TensorInfo;
use serde::Serialize;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Linear,
    Conv,
    Embedding,
    Norm,
    LmHead,
    Other,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Linear => "linear",
            Role::Conv => "conv",
            Role::Embedding => "embedding",
            Role::Norm => "norm",
            Role::LmHead => "lm_head",
            Role::Other => "other",
        }
    }
}

/// A module: its tensors (`q_proj.weight` + `q_proj.bias`), its role and its main weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Layer {
    /// The module path, e.g. `encoder.layer.0.attention.self.query`.
    pub name: String,
    pub role: Role,
    /// Index (into `Model::tensors`) of the main weight, if the module has one.
    pub weight: Option<usize>,
    pub tensors: Vec<usize>,
    pub quantizable: bool,
    pub parameters: u64,
}

/// Last path components that name a parameter of a module rather than a module.
const PARAM_NAMES: &[&str] = &[
    "weight",
    "bias",
    "scale",
    "gamma",
    "beta",
    "running_mean",
    "running_var",
    "num_batches_tracked",
    "g",
    "b",
];

fn split_module(name: &str) -> (&str, &str) {
    match name.rsplit_once('.') {
        Some((module, param)) if PARAM_NAMES.contains(&param) => (module, param),
        _ => (name, ""),
    }
}

fn role_of(module: &str, weight: Option<&TensorInfo>) -> Role {
    let lower = module.to_ascii_lowercase();
    let last = lower.rsplit('.').next().unwrap_or("");
    let ndim = weight.map(|w| w.shape.len()).unwrap_or(0);
    let has = |s: &str| lower.contains(s);
    if weight.is_some_and(|w| !w.is_float()) {
        // integer buffers such as position ids are not weights
        Role::Other
    } else if ndim == 2 && (last == "lm_head" || has("lm_head") || last == "output" && has("head"))
    {
        Role::LmHead
    } else if ndim == 2 && (has("embed") || last == "wte" || last == "wpe" || has("embeddings")) {
        Role::Embedding
    } else if has("norm")
        || last.starts_with("ln")
        || has("layer_norm")
        || (ndim == 1 && last.starts_with("bn"))
    {
        Role::Norm
    } else if ndim >= 3 {
        Role::Conv
    } else if ndim == 2 {
        Role::Linear
    } else {
        Role::Other
    }
}

/// Group tensors by module, in natural name order (`layers.2` before `layers.10`).
pub fn group_layers(tensors: &[TensorInfo]) -> Vec<Layer> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| natural_cmp(&tensors[a].name, &tensors[b].name));
    let mut layers: Vec<Layer> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for i in order {
        let (module, _) = split_module(&tensors[i].name);
        let li = *index.entry(module).or_insert_with(|| {
            layers.push(Layer {
                name: module.to_string(),
                role: Role::Other,
                weight: None,
                tensors: Vec::new(),
                quantizable: false,
                parameters: 0,
            });
            layers.len() - 1
        });
        layers[li].tensors.push(i);
    }
    for l in &mut layers {
        // the main weight: `.weight`, else the tensor with the most dimensions (then the most elements)
        l.weight = l
            .tensors
            .iter()
            .copied()
            .find(|&t| split_module(&tensors[t].name).1 == "weight")
            .or_else(|| {
                l.tensors
                    .iter()
                    .copied()
                    .max_by_key(|&t| (tensors[t].shape.len(), tensors[t].numel()))
            });
        let w = l.weight.map(|t| &tensors[t]);
        l.role = role_of(&l.name, w);
        l.quantizable = w.is_some_and(|w| w.quantizable()) && l.role != Role::Norm;
        l.parameters = l.tensors.iter().map(|&t| tensors[t].numel() as u64).sum();
    }
    layers
}

/// Layers that repeat across blocks, named by a pattern: `encoder.layer.{0..5}.attention.self.query`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerPattern {
    pub pattern: String,
    /// Indices into the layer list, in natural order.
    pub layers: Vec<usize>,
}

/// Group layers whose names differ only in their numeric path components (block indices). Each numeric
/// component becomes `{a..b}` when its values are contiguous, `{a,b,c}` otherwise. Groups keep the order
/// of their first layer.
pub fn layer_patterns(layers: &[Layer]) -> Vec<LayerPattern> {
    let template = |name: &str| -> (String, Vec<u64>) {
        let mut nums = Vec::new();
        let t: Vec<String> = name
            .split('.')
            .map(|c| match c.parse::<u64>() {
                Ok(n) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) => {
                    nums.push(n);
                    "{}".to_string()
                }
                _ => c.to_string(),
            })
            .collect();
        (t.join("."), nums)
    };
    let mut groups: Vec<(String, Vec<usize>, Vec<Vec<u64>>)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, l) in layers.iter().enumerate() {
        let (t, nums) = template(&l.name);
        let gi = *index.entry(t.clone()).or_insert_with(|| {
            groups.push((t, Vec::new(), Vec::new()));
            groups.len() - 1
        });
        groups[gi].1.push(i);
        groups[gi].2.push(nums);
    }
    groups
        .into_iter()
        .map(|(t, members, nums)| {
            let pattern = if members.len() == 1 {
                layers[members[0]].name.clone()
            } else {
                let mut out = String::new();
                let mut k = 0;
                for (ci, part) in t.split('.').enumerate() {
                    if ci > 0 {
                        out.push('.');
                    }
                    if part == "{}" {
                        let mut vals: Vec<u64> = nums.iter().map(|v| v[k]).collect();
                        vals.sort_unstable();
                        vals.dedup();
                        k += 1;
                        let contiguous = vals.windows(2).all(|w| w[1] == w[0] + 1);
                        if vals.len() == 1 {
                            out.push_str(&vals[0].to_string());
                        } else if contiguous {
                            out.push_str(&format!("{{{}..{}}}", vals[0], vals[vals.len() - 1]));
                        } else {
                            let list: Vec<String> = vals.iter().map(|v| v.to_string()).collect();
                            out.push_str(&format!("{{{}}}", list.join(",")));
                        }
                    } else {
                        out.push_str(part);
                    }
                }
                out
            };
            LayerPattern {
                pattern,
                layers: members,
            }
        })
        .collect()
}

/// Compare names with runs of digits compared as numbers.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let k = d.iter().take_while(|&&c| c == b'0').count();
    &d[k.min(d.len().saturating_sub(1))..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::Dtype;

    fn t(name: &str, shape: &[usize]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            shard: 0,
            start: 0,
            end: 0,
        }
    }

    #[test]
    fn modules_roles_and_order() {
        let ts = vec![
            t("model.layers.10.mlp.down_proj.weight", &[64, 256]),
            t("model.layers.2.mlp.down_proj.weight", &[64, 256]),
            t("model.layers.2.input_layernorm.weight", &[64]),
            t("model.embed_tokens.weight", &[1000, 64]),
            t("lm_head.weight", &[1000, 64]),
            t("conv1.weight", &[8, 1, 3, 3]),
            t("conv1.bias", &[8]),
            t("bn1.running_mean", &[8]),
            t("bn1.weight", &[8]),
            t("cls_token", &[1, 1, 64]),
        ];
        let layers = group_layers(&ts);
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bn1",
                "cls_token",
                "conv1",
                "lm_head",
                "model.embed_tokens",
                "model.layers.2.input_layernorm",
                "model.layers.2.mlp.down_proj",
                "model.layers.10.mlp.down_proj"
            ]
        );
        let role = |n: &str| layers.iter().find(|l| l.name == n).unwrap().role;
        assert_eq!(role("conv1"), Role::Conv);
        assert_eq!(role("bn1"), Role::Norm);
        assert_eq!(role("lm_head"), Role::LmHead);
        assert_eq!(role("model.embed_tokens"), Role::Embedding);
        assert_eq!(role("model.layers.2.input_layernorm"), Role::Norm);
        assert_eq!(role("model.layers.10.mlp.down_proj"), Role::Linear);
        let conv = layers.iter().find(|l| l.name == "conv1").unwrap();
        assert_eq!(
            (conv.tensors.len(), conv.parameters, conv.quantizable),
            (2, 80, true)
        );
        assert!(!layers.iter().find(|l| l.name == "bn1").unwrap().quantizable);
    }

    #[test]
    fn repeated_blocks_become_patterns() {
        let mut ts = Vec::new();
        for i in 0..30 {
            ts.push(t(
                &format!("model.layers.{i}.self_attn.q_proj.weight"),
                &[8, 8],
            ));
            ts.push(t(
                &format!("model.layers.{i}.mlp.down_proj.weight"),
                &[8, 8],
            ));
        }
        ts.push(t("model.embed_tokens.weight", &[100, 8]));
        ts.push(t("blocks.1.conv.weight", &[8, 8, 3, 3]));
        ts.push(t("blocks.3.conv.weight", &[8, 8, 3, 3]));
        let layers = group_layers(&ts);
        let p = layer_patterns(&layers);
        let names: Vec<&str> = p.iter().map(|p| p.pattern.as_str()).collect();
        assert_eq!(
            names,
            [
                "blocks.{1,3}.conv",
                "model.embed_tokens",
                "model.layers.{0..29}.mlp.down_proj",
                "model.layers.{0..29}.self_attn.q_proj"
            ]
        );
        assert_eq!(p[3].layers.len(), 30);
        assert_eq!(
            layers[p[3].layers[29]].name,
            "model.layers.29.self_attn.q_proj"
        );
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["a.10", "a.9", "a.1", "b", "a.01x"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["a.1", "a.01x", "a.9", "a.10", "b"]);
    }
}
