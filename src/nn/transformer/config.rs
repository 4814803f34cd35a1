//! A transformer's `config.json`, read into what the runtime needs. Both config dialects are read:
//! transformers 4.x (`rope_theta`, `rope_scaling`, `rope_local_base_freq`, `sliding_window_pattern`) and
//! 5.x (`rope_parameters`, per layer type for Gemma 3; `layer_types`).

use serde_json::Value;

/// The architectures the runtime runs, by `model_type`.
pub const SUPPORTED: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma3_text",
    "gemma3",
    "bert",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Llama, Mistral, Qwen2/2.5, Qwen3, SmolLM: pre-norm RMSNorm blocks, SwiGLU, RoPE.
    Llama,
    /// Gemma 3: RMSNorm with `(1 + w)`, four norms per block, GeGLU, scaled embeddings, local/global layers.
    Gemma3,
    /// BERT-style encoders: post-norm LayerNorm blocks, GELU, absolute positions.
    Bert,
}

/// How RoPE's inverse frequencies are made (transformers' `modeling_rope_utils.py`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rope {
    /// `θ^(−2i/d)`.
    Default { theta: f64 },
    /// Positions divided by `factor` (the same as frequencies divided by it).
    Linear { theta: f64, factor: f64 },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth blend between.
    Llama3 {
        theta: f64,
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

impl Rope {
    /// The `d/2` inverse frequencies for a head of `d` dimensions.
    pub fn inv_freq(&self, d: usize) -> Vec<f64> {
        let base = |theta: f64| -> Vec<f64> {
            (0..d / 2)
                .map(|i| 1.0 / theta.powf((2 * i) as f64 / d as f64))
                .collect()
        };
        match *self {
            Rope::Default { theta } => base(theta),
            Rope::Linear { theta, factor } => base(theta).into_iter().map(|f| f / factor).collect(),
            Rope::Llama3 {
                theta,
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base(theta)
                    .into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x·σ(x)` (SwiGLU's gate).
    Silu,
    /// The exact GELU `x·Φ(x)`.
    Gelu,
    /// GELU's tanh approximation (`gelu_pytorch_tanh`, Gemma's GeGLU).
    GeluTanh,
}

/// What the runtime needs from `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Config {
    pub model_type: String,
    pub family: Family,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub norm_eps: f64,
    pub act: Activation,
    /// The LM head is the embedding tensor.
    pub tied_embeddings: bool,
    /// RoPE of full-attention layers (decoders).
    pub rope: Option<Rope>,
    /// RoPE of sliding-window layers where it differs (Gemma 3's local base frequency).
    pub rope_local: Option<Rope>,
    /// Per layer: `Some(w)` attends to the last `w` positions only (itself included).
    pub windows: Vec<Option<usize>>,
    /// Attention scores are multiplied by this (`1/√head_dim`, Gemma 3: `query_pre_attn_scalar^−½`).
    pub attn_scale: f64,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// BERT's token-type vocabulary (segment embeddings).
    pub type_vocab: usize,
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn uint(v: &Value, key: &str) -> Option<usize> {
    v.get(key).and_then(Value::as_u64).map(|x| x as usize)
}

fn need(v: &Value, key: &str) -> Result<usize, String> {
    uint(v, key).ok_or_else(|| format!("config.json has no integer '{key}'"))
}

/// A RoPE dict in either dialect (`rope_parameters` or `rope_scaling` with a separate `theta`).
fn rope_of(p: Option<&Value>, theta: f64) -> Result<Rope, String> {
    let Some(p) = p.filter(|p| p.is_object()) else {
        return Ok(Rope::Default { theta });
    };
    let theta = num(p, "rope_theta").unwrap_or(theta);
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = num(p, "factor").unwrap_or(1.0);
    match kind {
        "default" => Ok(Rope::Default { theta }),
        "linear" => Ok(Rope::Linear { theta, factor }),
        "llama3" => Ok(Rope::Llama3 {
            theta,
            factor,
            low_freq_factor: num(p, "low_freq_factor").unwrap_or(1.0),
            high_freq_factor: num(p, "high_freq_factor").unwrap_or(4.0),
            original_max_position_embeddings: num(p, "original_max_position_embeddings")
                .unwrap_or(8192.0),
        }),
        other => Err(format!(
            "RoPE type '{other}' is not supported (default, linear and llama3 are)"
        )),
    }
}

impl Config {
    /// Read a parsed `config.json`. An unsupported `model_type` is an error naming it and what is
    /// supported.
    pub fn from_json(v: &Value) -> Result<Config, String> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or("config.json has no 'model_type'")?
            .to_string();
        if !SUPPORTED.contains(&model_type.as_str()) {
            return Err(format!(
                "model_type '{model_type}' is not supported by the runtime (supported: {}); \
                 its weights can still be explored",
                SUPPORTED.join(", ")
            ));
        }
        // A multimodal Gemma 3 keeps its language model's settings in `text_config`.
        let t = match model_type.as_str() {
            "gemma3" => v
                .get("text_config")
                .ok_or("a gemma3 config without text_config")?,
            _ => v,
        };
        let family = match model_type.as_str() {
            "gemma3" | "gemma3_text" => Family::Gemma3,
            "bert" => Family::Bert,
            _ => Family::Llama,
        };
        let hidden = need(t, "hidden_size")?;
        let layers = need(t, "num_hidden_layers")?;
        let heads = need(t, "num_attention_heads")?;
        let kv_heads = uint(t, "num_key_value_heads").unwrap_or(heads);
        let head_dim = uint(t, "head_dim").unwrap_or(hidden / heads.max(1));
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(format!(
                "{heads} attention heads cannot share {kv_heads} key/value heads"
            ));
        }
        let act_name = t
            .get("hidden_activation")
            .or_else(|| t.get("hidden_act"))
            .and_then(Value::as_str)
            .unwrap_or(match family {
                Family::Bert => "gelu",
                Family::Gemma3 => "gelu_pytorch_tanh",
                Family::Llama => "silu",
            });
        let act = match act_name {
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            other => return Err(format!("activation '{other}' is not supported")),
        };
        // transformers' defaults: Gemma ties the LM head to the embedding, the Llama family does not
        let tied_embeddings = v
            .get("tie_word_embeddings")
            .or_else(|| t.get("tie_word_embeddings"))
            .and_then(Value::as_bool)
            .unwrap_or(family == Family::Gemma3);
        let window = uint(t, "sliding_window");
        let layer_types: Option<Vec<String>> = t.get("layer_types").and_then(|l| {
            l.as_array().map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or("").to_string())
                    .collect()
            })
        });
        let sliding: Vec<bool> = match (&layer_types, family) {
            (Some(types), _) => {
                if types.len() != layers {
                    return Err(format!(
                        "layer_types lists {} layers, num_hidden_layers is {layers}",
                        types.len()
                    ));
                }
                types.iter().map(|s| s == "sliding_attention").collect()
            }
            (None, Family::Gemma3) => {
                let pattern = uint(t, "sliding_window_pattern").unwrap_or(6).max(1);
                (0..layers).map(|i| (i + 1) % pattern != 0).collect()
            }
            (None, _) if model_type == "mistral" => vec![window.is_some(); layers],
            (None, _) if model_type.starts_with("qwen") => {
                let on = t
                    .get("use_sliding_window")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let from = uint(t, "max_window_layers").unwrap_or(layers);
                (0..layers).map(|i| on && i >= from).collect()
            }
            _ => vec![false; layers],
        };
        let windows = sliding
            .iter()
            .map(|&s| if s { window } else { None })
            .collect();
        let (rope, rope_local) = match family {
            Family::Bert => (None, None),
            Family::Gemma3 => {
                let params = t.get("rope_parameters");
                let per_type = params.is_some_and(|p| p.get("full_attention").is_some());
                if per_type {
                    let p = params.expect("checked");
                    (
                        Some(rope_of(p.get("full_attention"), 1e6)?),
                        Some(rope_of(p.get("sliding_attention"), 1e4)?),
                    )
                } else {
                    let theta = num(t, "rope_theta").unwrap_or(1e6);
                    let local = num(t, "rope_local_base_freq").unwrap_or(1e4);
                    (
                        Some(rope_of(t.get("rope_scaling"), theta)?),
                        Some(Rope::Default { theta: local }),
                    )
                }
            }
            Family::Llama => {
                let theta = num(t, "rope_theta").unwrap_or(10000.0);
                let p = t
                    .get("rope_parameters")
                    .filter(|p| p.is_object())
                    .or_else(|| t.get("rope_scaling"));
                (Some(rope_of(p, theta)?), None)
            }
        };
        if let Some(p) = t.get("partial_rotary_factor").and_then(Value::as_f64) {
            if p != 1.0 {
                return Err(format!("partial_rotary_factor {p} is not supported"));
            }
        }
        let attn_scale = match family {
            Family::Gemma3 => num(t, "query_pre_attn_scalar").unwrap_or(head_dim as f64),
            _ => head_dim as f64,
        }
        .powf(-0.5);
        let eps_key = if family == Family::Bert {
            "layer_norm_eps"
        } else {
            "rms_norm_eps"
        };
        Ok(Config {
            family,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            intermediate: need(t, "intermediate_size")?,
            vocab: need(t, "vocab_size")?,
            max_positions: uint(t, "max_position_embeddings").unwrap_or(usize::MAX),
            norm_eps: num(t, eps_key).unwrap_or(if family == Family::Bert { 1e-12 } else { 1e-6 }),
            act,
            tied_embeddings,
            rope,
            rope_local,
            windows,
            attn_scale,
            attn_softcap: num(t, "attn_logit_softcapping"),
            final_softcap: num(t, "final_logit_softcapping"),
            type_vocab: uint(t, "type_vocab_size").unwrap_or(0),
            model_type,
        })
    }

    pub fn is_decoder(&self) -> bool {
        self.family != Family::Bert
    }

    /// The RoPE of layer `i` (Gemma 3's sliding layers have their own).
    pub fn rope_of_layer(&self, i: usize) -> Option<Rope> {
        match (self.windows.get(i).copied().flatten(), self.rope_local) {
            (Some(_), Some(local)) => Some(local),
            _ => self.rope,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn llama3_frequencies_follow_the_published_rule() {
        // Llama 3.1 8B: θ = 500000, factor 8, low 1, high 4, original 8192 (its config.json)
        let r = Rope::Llama3 {
            theta: 500000.0,
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let f = r.inv_freq(128);
        let b = Rope::Default { theta: 500000.0 }.inv_freq(128);
        assert_eq!(f[0], b[0]); // wavelength 2π < 2048: kept
        assert!((f[63] - b[63] / 8.0).abs() < 1e-18); // longest wavelength: divided by 8
                                                      // a middle one: between the two
        let i = (0..64)
            .find(|&i| {
                let w = 2.0 * std::f64::consts::PI / b[i];
                w > 2048.0 && w < 8192.0
            })
            .unwrap();
        assert!(f[i] < b[i] && f[i] > b[i] / 8.0);
    }

    #[test]
    fn an_unknown_model_type_names_what_is_supported() {
        let e = Config::from_json(&json!({"model_type": "gpt2"})).unwrap_err();
        assert!(
            e.contains("'gpt2'") && e.contains("llama") && e.contains("bert"),
            "{e}"
        );
    }

    #[test]
    fn gemma3_layers_slide_by_pattern_in_the_old_dialect() {
        let c = Config::from_json(&json!({
            "model_type": "gemma3_text", "hidden_size": 8, "num_hidden_layers": 7,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
            "intermediate_size": 16, "vocab_size": 10, "sliding_window": 3,
            "rope_theta": 1e6, "rope_local_base_freq": 1e4, "query_pre_attn_scalar": 16
        }))
        .unwrap();
        let slid: Vec<bool> = c.windows.iter().map(Option::is_some).collect();
        assert_eq!(slid, [true, true, true, true, true, false, true]);
        assert_eq!(c.rope_of_layer(0), Some(Rope::Default { theta: 1e4 }));
        assert_eq!(c.rope_of_layer(5), Some(Rope::Default { theta: 1e6 }));
        assert_eq!(c.attn_scale, 0.25);
        assert!(c.tied_embeddings);
        assert_eq!(c.act, Activation::GeluTanh);
    }
}
