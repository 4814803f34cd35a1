//! A runtime for real transformers read from a Hugging Face folder (`config.json` + safetensors): the
//! Llama family (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, SmolLM), Gemma 3 and BERT-style encoders.
//!
//! It is a pure runner: weights come from a [`Weights`] the caller passes (so a caller can hand it
//! quantized tensors), every linear layer's input and output can be shown to an [`Observer`], and the
//! forward pass goes block by block over all tokens of a batch, so a block's weights are needed only
//! while it runs (a model larger than memory streams). Everything is computed in f32.

pub mod config;
pub mod ops;
pub mod score;

pub use config::{Config, Family};

use crate::kernels::gemm::xwt;
use crate::model::Model;
use crate::nn::NnError;
use ndarray::Array2;
use ops::AttnShape;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a model's weights come from, as f32 in the layout stored (`[out, in]` for a linear layer).
pub trait Weights: Sync {
    fn get(&self, name: &str) -> Result<Arc<Vec<f32>>, NnError>;

    /// `(values, part)` when `name` is better read `part` values at a time through [`Weights::rows`]
    /// than whole: a stored tensor larger than a part. `None` when the whole is in memory anyway.
    fn parts(&self, _name: &str) -> Option<(usize, usize)> {
        None
    }

    /// Rows `rows` of `name` seen as row-major with `cols` columns.
    fn rows(&self, name: &str, rows: Range<usize>, cols: usize) -> Result<Vec<f32>, NnError> {
        rows_of(&self.get(name)?, name, rows, cols)
    }
}

/// Rows `rows` of `all`, a row-major weight with `cols` columns.
pub(crate) fn rows_of(
    all: &[f32],
    name: &str,
    rows: Range<usize>,
    cols: usize,
) -> Result<Vec<f32>, NnError> {
    all.get(rows.start * cols..rows.end * cols)
        .map(<[f32]>::to_vec)
        .ok_or_else(|| {
            NnError::NotRunnable(format!("'{name}' has no rows {rows:?} of {cols} values"))
        })
}

/// The values of a part of a weight that [`ModelWeights`] reads in parts ([`Weights::parts`]): a linear
/// layer multiplies a part's output rows at a time, so a forward pass holds a part's f32, not the
/// weight's (a 7B's LM head is 800 MB as f32).
pub const PART: usize = 1 << 23;

/// A linear layer's input and output on one sequence during a forward pass.
pub struct LinearIo<'a> {
    /// Which sequence of the batch.
    pub seq: usize,
    /// The weight tensor's name, e.g. `model.layers.0.self_attn.q_proj.weight` (for a tied LM head, the
    /// embedding tensor's).
    pub weight: &'a str,
    /// Tokens (rows) of this sequence.
    pub rows: usize,
    /// Input features.
    pub k: usize,
    /// Output features.
    pub out: usize,
    /// `[rows, k]`.
    pub input: &'a [f32],
    /// `[rows, out]`, with the bias.
    pub output: &'a [f32],
}

/// Sees every linear layer's input and output, in the order the network runs them, one sequence at
/// a time.
pub trait Observer {
    fn linear(&mut self, io: &LinearIo<'_>);
}

/// An observer that looks at nothing.
pub struct Quiet;
impl Observer for Quiet {
    fn linear(&mut self, _: &LinearIo<'_>) {}
}

/// The folder a model was opened from (its `config.json` and `tokenizer.json` live there).
pub fn model_dir(model: &Model) -> PathBuf {
    if model.source.is_dir() {
        model.source.clone()
    } else {
        model
            .source
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// Whether `model` is a transformer folder (a `config.json` beside it) rather than a self-describing
/// sample model.
pub fn is_transformer(model: &Model) -> bool {
    model_dir(model).join("config.json").is_file()
        && model
            .metadata()
            .is_none_or(|m| !m.contains_key("architecture"))
}

/// The tensor names of one block.
#[derive(Debug, Clone)]
pub struct BlockNames {
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    pub gate: Option<String>,
    pub up: String,
    pub down: String,
    /// Pre-attention norm (decoders) or the attention output's LayerNorm (BERT).
    pub norm_attn: String,
    /// Pre-MLP norm (Llama: post_attention_layernorm; Gemma: pre_feedforward_layernorm) or BERT's
    /// output LayerNorm.
    pub norm_mlp: String,
    /// Gemma 3's norms of the attention and MLP outputs.
    pub post_attn: Option<String>,
    pub post_mlp: Option<String>,
    pub q_norm: Option<String>,
    pub k_norm: Option<String>,
}

impl BlockNames {
    /// The block's linear layers' weight names, in the order they run.
    pub fn linears(&self) -> Vec<&str> {
        let mut v = vec![
            self.q.as_str(),
            self.k.as_str(),
            self.v.as_str(),
            self.o.as_str(),
        ];
        v.extend(self.gate.as_deref());
        v.extend([self.up.as_str(), self.down.as_str()]);
        v
    }
}

/// A transformer ready to run: its configuration and the names of its tensors.
#[derive(Debug, Clone)]
pub struct Transformer {
    pub config: Config,
    pub embed: String,
    /// BERT's position and token-type embeddings, and the embedding LayerNorm.
    pub positions: Option<String>,
    pub token_types: Option<String>,
    pub embed_norm: Option<String>,
    pub blocks: Vec<BlockNames>,
    /// The final norm (decoders).
    pub final_norm: Option<String>,
    /// The LM head's weight: `lm_head.weight`, or the embedding when tied.
    pub head: Option<String>,
    /// The tensors with a bias (`{name}.weight` → `{name}.bias`) present in the model.
    biases: HashMap<String, String>,
}

impl Transformer {
    /// Read `config.json` beside the model and find its tensors. An unsupported architecture is an
    /// error naming its `model_type` and the supported ones.
    pub fn from_model(model: &Model) -> Result<Transformer, NnError> {
        let dir = model_dir(model);
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            NnError::NotRunnable(format!(
                "{}: {e} (a transformer needs its config.json)",
                path.display()
            ))
        })?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| NnError::NotRunnable(format!("{}: {e}", path.display())))?;
        let config = Config::from_json(&json).map_err(NnError::NotRunnable)?;
        let names: Vec<&str> = model.tensors.iter().map(|t| t.name.as_str()).collect();
        Self::with_names(config, &names)
    }

    /// Find every tensor of `config`'s architecture among `names`.
    pub fn with_names(config: Config, names: &[&str]) -> Result<Transformer, NnError> {
        let has = |n: &str| names.contains(&n);
        let missing = |n: &str| NnError::NotRunnable(format!("tensor '{n}' is missing"));
        let biases = names
            .iter()
            .filter_map(|n| n.strip_suffix(".bias"))
            .map(|stem| (format!("{stem}.weight"), format!("{stem}.bias")))
            .collect();
        let need = |n: String| if has(&n) { Ok(n) } else { Err(missing(&n)) };
        let opt = |n: String| has(&n).then_some(n);
        if config.family == config::Family::Bert {
            let p = ["", "bert.", "model."]
                .into_iter()
                .find(|p| has(&format!("{p}embeddings.word_embeddings.weight")))
                .ok_or_else(|| missing("embeddings.word_embeddings.weight"))?;
            let blocks = (0..config.layers)
                .map(|i| {
                    let b = format!("{p}encoder.layer.{i}.");
                    Ok(BlockNames {
                        q: need(format!("{b}attention.self.query.weight"))?,
                        k: need(format!("{b}attention.self.key.weight"))?,
                        v: need(format!("{b}attention.self.value.weight"))?,
                        o: need(format!("{b}attention.output.dense.weight"))?,
                        gate: None,
                        up: need(format!("{b}intermediate.dense.weight"))?,
                        down: need(format!("{b}output.dense.weight"))?,
                        norm_attn: need(format!("{b}attention.output.LayerNorm.weight"))?,
                        norm_mlp: need(format!("{b}output.LayerNorm.weight"))?,
                        post_attn: None,
                        post_mlp: None,
                        q_norm: None,
                        k_norm: None,
                    })
                })
                .collect::<Result<Vec<_>, NnError>>()?;
            return Ok(Transformer {
                embed: format!("{p}embeddings.word_embeddings.weight"),
                positions: Some(need(format!("{p}embeddings.position_embeddings.weight"))?),
                token_types: opt(format!("{p}embeddings.token_type_embeddings.weight")),
                embed_norm: Some(need(format!("{p}embeddings.LayerNorm.weight"))?),
                blocks,
                final_norm: None,
                head: None,
                biases,
                config,
            });
        }
        let p = [
            "model.",
            "model.language_model.",
            "language_model.model.",
            "",
        ]
        .into_iter()
        .find(|p| has(&format!("{p}embed_tokens.weight")))
        .ok_or_else(|| missing("model.embed_tokens.weight"))?;
        let gemma = config.family == config::Family::Gemma3;
        let blocks = (0..config.layers)
            .map(|i| {
                let b = format!("{p}layers.{i}.");
                Ok(BlockNames {
                    q: need(format!("{b}self_attn.q_proj.weight"))?,
                    k: need(format!("{b}self_attn.k_proj.weight"))?,
                    v: need(format!("{b}self_attn.v_proj.weight"))?,
                    o: need(format!("{b}self_attn.o_proj.weight"))?,
                    gate: Some(need(format!("{b}mlp.gate_proj.weight"))?),
                    up: need(format!("{b}mlp.up_proj.weight"))?,
                    down: need(format!("{b}mlp.down_proj.weight"))?,
                    norm_attn: need(format!("{b}input_layernorm.weight"))?,
                    norm_mlp: need(if gemma {
                        format!("{b}pre_feedforward_layernorm.weight")
                    } else {
                        format!("{b}post_attention_layernorm.weight")
                    })?,
                    post_attn: if gemma {
                        Some(need(format!("{b}post_attention_layernorm.weight"))?)
                    } else {
                        None
                    },
                    post_mlp: if gemma {
                        Some(need(format!("{b}post_feedforward_layernorm.weight"))?)
                    } else {
                        None
                    },
                    q_norm: opt(format!("{b}self_attn.q_norm.weight")),
                    k_norm: opt(format!("{b}self_attn.k_norm.weight")),
                })
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        let embed = format!("{p}embed_tokens.weight");
        let untied = ["lm_head.weight", "language_model.lm_head.weight"]
            .into_iter()
            .find(|n| has(n));
        let head = match (config.tied_embeddings, untied) {
            (false, Some(h)) => h.to_string(),
            (false, None) => return Err(missing("lm_head.weight")),
            (true, _) => embed.clone(),
        };
        Ok(Transformer {
            positions: None,
            token_types: None,
            embed_norm: None,
            blocks,
            final_norm: Some(need(format!("{p}norm.weight"))?),
            head: Some(head),
            biases,
            embed,
            config,
        })
    }

    /// Whether the LM head is the embedding tensor.
    pub fn head_is_embedding(&self) -> bool {
        self.head.as_deref() == Some(self.embed.as_str())
    }

    /// Every linear layer's weight name in the order they run; the LM head last.
    pub fn linears(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .blocks
            .iter()
            .flat_map(|b| b.linears().into_iter().map(str::to_string))
            .collect();
        v.extend(self.head.clone());
        v
    }

    fn bias(&self, w: &dyn Weights, weight: &str) -> Result<Option<Arc<Vec<f32>>>, NnError> {
        self.biases.get(weight).map(|b| w.get(b)).transpose()
    }

    fn norm_bias(&self, weight: &str) -> String {
        weight.strip_suffix(".weight").unwrap_or(weight).to_string() + ".bias"
    }

    /// `x·Wᵀ + b` for the layer whose weight is `name`, shown to the observer.
    fn linear(
        &self,
        w: &dyn Weights,
        name: &str,
        x: &[f32],
        lens: &[usize],
        obs: &mut dyn Observer,
    ) -> Result<Vec<f32>, NnError> {
        let rows: usize = lens.iter().sum();
        let k = x.len() / rows.max(1);
        let b = self.bias(w, name)?;
        let b = b.as_deref().map(|b| &b[..]);
        let y = match w.parts(name) {
            Some((n, part)) if k > 0 && n.is_multiple_of(k) => {
                let out = n / k;
                let block = (part / k).max(1);
                let mut y = vec![0f32; rows * out];
                for o0 in (0..out).step_by(block) {
                    let o1 = (o0 + block).min(out);
                    let part = w.rows(name, o0..o1, k)?;
                    let yb = xwt(x, rows, k, &part, o1 - o0, b.map(|b| &b[o0..o1]));
                    for (dst, src) in y.chunks_exact_mut(out).zip(yb.chunks_exact(o1 - o0)) {
                        dst[o0..o1].copy_from_slice(src);
                    }
                }
                y
            }
            _ => {
                let weight = w.get(name)?;
                let out = weight.len() / k.max(1);
                if out * k != weight.len() {
                    return Err(NnError::NotRunnable(format!(
                        "'{name}' has {} values, not a multiple of its {k} inputs",
                        weight.len()
                    )));
                }
                xwt(x, rows, k, &weight, out, b)
            }
        };
        let out = y.len() / rows.max(1);
        let mut start = 0;
        for (seq, &n) in lens.iter().enumerate() {
            obs.linear(&LinearIo {
                seq,
                weight: name,
                rows: n,
                k,
                out,
                input: &x[start * k..(start + n) * k],
                output: &y[start * out..(start + n) * out],
            });
            start += n;
        }
        Ok(y)
    }

    fn check(&self, seqs: &[Vec<u32>]) -> Result<(), NnError> {
        let c = &self.config;
        for s in seqs {
            if s.is_empty() {
                return Err(NnError::Data("an empty sequence".into()));
            }
            if s.len() > c.max_positions {
                return Err(NnError::Data(format!(
                    "a sequence of {} tokens is longer than the model's {} positions",
                    s.len(),
                    c.max_positions
                )));
            }
            if let Some(&t) = s.iter().find(|&&t| t as usize >= c.vocab) {
                return Err(NnError::Data(format!(
                    "token id {t} is outside the vocabulary of {}",
                    c.vocab
                )));
            }
        }
        Ok(())
    }

    /// The hidden states entering block 0: `[tokens, hidden]` over all sequences in order.
    pub fn embed(&self, w: &dyn Weights, seqs: &[Vec<u32>]) -> Result<Array2<f32>, NnError> {
        self.check(seqs)?;
        let d = self.config.hidden;
        let rows: usize = seqs.iter().map(Vec::len).sum();
        let mut h = Array2::<f32>::zeros((rows, d));
        let flat = h.as_slice_mut().expect("standard layout");
        // a large table read in parts gives only the tokens' rows
        if w.parts(&self.embed).is_some() {
            for (row, &t) in flat.chunks_mut(d).zip(seqs.iter().flatten()) {
                let t = t as usize;
                row.copy_from_slice(&w.rows(&self.embed, t..t + 1, d)?);
            }
        } else {
            let table = w.get(&self.embed)?;
            for (row, &t) in flat.chunks_mut(d).zip(seqs.iter().flatten()) {
                row.copy_from_slice(&table[t as usize * d..(t as usize + 1) * d]);
            }
        }
        match self.config.family {
            Family::Gemma3 => {
                let s = (d as f64).sqrt() as f32;
                flat.iter_mut().for_each(|v| *v *= s);
            }
            Family::Bert => {
                let pos = w.get(self.positions.as_deref().expect("BERT has positions"))?;
                let types = self.token_types.as_deref().map(|n| w.get(n)).transpose()?;
                let positions = seqs.iter().flat_map(|s| 0..s.len());
                for (row, p) in flat.chunks_mut(d).zip(positions) {
                    for (i, v) in row.iter_mut().enumerate() {
                        *v += pos[p * d + i] + types.as_ref().map_or(0.0, |t| t[i]);
                    }
                }
                let norm = self
                    .embed_norm
                    .as_deref()
                    .expect("BERT has an embedding norm");
                let g = w.get(norm)?;
                let b = w.get(&self.norm_bias(norm))?;
                ops::layer_norm(flat, d, &g, &b, self.config.norm_eps);
            }
            Family::Llama => {}
        }
        Ok(h)
    }

    /// Run block `i` on `h` in place.
    pub fn block(
        &self,
        i: usize,
        w: &dyn Weights,
        seqs: &[Vec<u32>],
        h: &mut Array2<f32>,
        obs: &mut dyn Observer,
    ) -> Result<(), NnError> {
        let c = &self.config;
        let names = &self.blocks[i];
        let d = c.hidden;
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let hs = h.as_slice_mut().expect("standard layout");
        let gemma = c.family == Family::Gemma3;
        let bert = c.family == Family::Bert;

        // attention
        let mut x = hs.to_vec();
        if !bert {
            ops::rms_norm(&mut x, d, &w.get(&names.norm_attn)?, c.norm_eps, gemma);
        }
        let mut q = self.linear(w, &names.q, &x, &lens, obs)?;
        let mut k = self.linear(w, &names.k, &x, &lens, obs)?;
        let v = self.linear(w, &names.v, &x, &lens, obs)?;
        let hd = c.head_dim;
        for (m, norm) in [(&mut q, &names.q_norm), (&mut k, &names.k_norm)] {
            if let Some(n) = norm {
                ops::rms_norm(m, hd, &w.get(n)?, c.norm_eps, gemma);
            }
        }
        if let Some(rope) = c.rope_of_layer(i) {
            let longest = lens.iter().copied().max().unwrap_or(0);
            let (cos, sin) = ops::rope_table(&rope, hd, longest);
            let pos: Vec<usize> = lens.iter().flat_map(|&l| 0..l).collect();
            ops::apply_rope(&mut q, c.heads * hd, hd, &pos, &cos, &sin);
            ops::apply_rope(&mut k, c.kv_heads * hd, hd, &pos, &cos, &sin);
        }
        let shape = AttnShape {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: hd,
            scale: c.attn_scale as f32,
            causal: !bert,
            window: c.windows[i],
            softcap: c.attn_softcap.map(|s| s as f32),
        };
        let ctx = ops::attention(&q, &k, &v, &lens, shape);
        drop((q, k, v));
        let mut a = self.linear(w, &names.o, &ctx, &lens, obs)?;
        if let Some(n) = &names.post_attn {
            ops::rms_norm(&mut a, d, &w.get(n)?, c.norm_eps, true);
        }
        add(hs, &a);
        if bert {
            let g = w.get(&names.norm_attn)?;
            let b = w.get(&self.norm_bias(&names.norm_attn))?;
            ops::layer_norm(hs, d, &g, &b, c.norm_eps);
        }

        // MLP
        let mut x = hs.to_vec();
        if !bert {
            ops::rms_norm(&mut x, d, &w.get(&names.norm_mlp)?, c.norm_eps, gemma);
        }
        let mut up = self.linear(w, &names.up, &x, &lens, obs)?;
        let inner = match &names.gate {
            Some(g) => {
                // SwiGLU / GeGLU: act(gate) · up (the gate runs first, as transformers calls it)
                let mut gate = self.linear(w, g, &x, &lens, obs)?;
                ops::activate(&mut gate, c.act);
                gate.iter_mut().zip(&up).for_each(|(g, u)| *g *= u);
                gate
            }
            None => {
                ops::activate(&mut up, c.act);
                up
            }
        };
        let mut m = self.linear(w, &names.down, &inner, &lens, obs)?;
        if let Some(n) = &names.post_mlp {
            ops::rms_norm(&mut m, d, &w.get(n)?, c.norm_eps, true);
        }
        add(hs, &m);
        if bert {
            let g = w.get(&names.norm_mlp)?;
            let b = w.get(&self.norm_bias(&names.norm_mlp))?;
            ops::layer_norm(hs, d, &g, &b, c.norm_eps);
        }
        Ok(())
    }

    /// After the last block: a decoder's logits `[tokens, vocab]`; an encoder's last hidden state.
    pub fn finish(
        &self,
        w: &dyn Weights,
        seqs: &[Vec<u32>],
        h: Array2<f32>,
        obs: &mut dyn Observer,
    ) -> Result<Array2<f32>, NnError> {
        let c = &self.config;
        let (Some(norm), Some(head)) = (&self.final_norm, &self.head) else {
            return Ok(h);
        };
        let rows = h.nrows();
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let mut x = h.into_raw_vec_and_offset().0;
        ops::rms_norm(
            &mut x,
            c.hidden,
            &w.get(norm)?,
            c.norm_eps,
            c.family == Family::Gemma3,
        );
        let mut logits = self.linear(w, head, &x, &lens, obs)?;
        if let Some(cap) = c.final_softcap {
            let cap = cap as f32;
            logits.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        }
        let vocab = logits.len() / rows.max(1);
        Ok(Array2::from_shape_vec((rows, vocab), logits).expect("rows × vocab"))
    }

    /// The whole forward pass over a batch of sequences (each from position 0).
    pub fn forward(
        &self,
        w: &dyn Weights,
        seqs: &[Vec<u32>],
        obs: &mut dyn Observer,
    ) -> Result<Array2<f32>, NnError> {
        let mut h = self.embed(w, seqs)?;
        for i in 0..self.blocks.len() {
            self.block(i, w, seqs, &mut h, &mut *obs)?;
        }
        self.finish(w, seqs, h, obs)
    }
}

fn add(h: &mut [f32], y: &[f32]) {
    h.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// Attention-mask mean pooling of an encoder's hidden states: one `[hidden]` vector per sequence.
pub fn mean_pool(h: &Array2<f32>, lens: &[usize]) -> Vec<Vec<f32>> {
    let mut start = 0;
    lens.iter()
        .map(|&l| {
            let rows = h.slice(ndarray::s![start..start + l, ..]);
            start += l;
            rows.mean_axis(ndarray::Axis(0))
                .map(|m| m.to_vec())
                .unwrap_or_default()
        })
        .collect()
}

/// A model's weights read from its safetensors as f32, through an optional transform (a plan's
/// quantizer), and kept once read when `keep` is set (repeated forward passes), else read anew per use
/// (one pass over a model larger than memory).
pub struct ModelWeights<'a> {
    model: &'a Model,
    transform: Option<Box<Transform<'a>>>,
    /// Whether the transform of a tensor may be applied to any run of its rows alone.
    by_rows: Option<Box<ByRows<'a>>>,
    keep: bool,
    kept: Mutex<HashMap<String, Arc<Vec<f32>>>>,
    /// Tensors larger than this many values are read in parts of it.
    part: usize,
}

/// Turns a stored tensor's values into the ones the network uses: `(name, shape, values)`.
pub type Transform<'a> =
    dyn Fn(&str, &[usize], Vec<f32>) -> Result<Vec<f32>, NnError> + Send + Sync + 'a;

/// Whether a tensor's [`Transform`] may be applied to a run of its rows alone.
pub type ByRows<'a> = dyn Fn(&str) -> bool + Send + Sync + 'a;

impl<'a> ModelWeights<'a> {
    pub fn new(model: &'a Model, keep: bool) -> Self {
        ModelWeights {
            model,
            transform: None,
            by_rows: None,
            keep,
            kept: Mutex::new(HashMap::new()),
            part: PART,
        }
    }

    /// Read tensors larger than `values` in parts of that many ([`PART`] by default).
    pub fn in_parts(mut self, values: usize) -> Self {
        self.part = values.max(1);
        self
    }

    pub fn with_transform(mut self, t: Box<Transform<'a>>) -> Self {
        self.transform = Some(t);
        self
    }

    /// Say which tensors' transform gives the same values on any run of whole rows (dimension 0) as
    /// on the tensor: those are read and transformed in parts too.
    pub fn transform_by_rows(mut self, f: Box<ByRows<'a>>) -> Self {
        self.by_rows = Some(f);
        self
    }
}

impl Weights for ModelWeights<'_> {
    fn get(&self, name: &str) -> Result<Arc<Vec<f32>>, NnError> {
        if let Some(v) = self.kept.lock().expect("not poisoned").get(name) {
            return Ok(v.clone());
        }
        let t = self
            .model
            .find(name)
            .map(|i| &self.model.tensors[i])
            .ok_or_else(|| NnError::NotRunnable(format!("tensor '{name}' is missing")))?;
        let mut x = self.model.read_f32(t)?;
        self.model.release(t);
        if let Some(f) = &self.transform {
            x = f(name, &t.shape, x)?;
        }
        let x = Arc::new(x);
        if self.keep {
            self.kept
                .lock()
                .expect("not poisoned")
                .insert(name.to_string(), x.clone());
        }
        Ok(x)
    }

    fn parts(&self, name: &str) -> Option<(usize, usize)> {
        let whole = self.transform.is_some() && !self.by_rows.as_ref().is_some_and(|f| f(name));
        if self.keep || whole {
            return None;
        }
        let n = self.model.tensors[self.model.find(name)?].numel();
        (n > self.part).then_some((n, self.part))
    }

    fn rows(&self, name: &str, rows: Range<usize>, cols: usize) -> Result<Vec<f32>, NnError> {
        let t = match self.model.find(name) {
            Some(i) if self.parts(name).is_some() => &self.model.tensors[i],
            _ => return rows_of(&self.get(name)?, name, rows, cols),
        };
        if crate::model::rows_and_cols(&t.shape).1 != cols {
            return Err(NnError::NotRunnable(format!(
                "'{name}' of shape {:?} does not have rows of {cols} values",
                t.shape
            )));
        }
        let n = rows.len();
        let x = self.model.take_rows_f32(t, rows)?;
        match &self.transform {
            Some(f) => {
                let mut shape = t.shape.clone();
                shape[0] = n;
                f(name, &shape, x)
            }
            None => Ok(x),
        }
    }
}

/// The embedding tensor (index into `Model::tensors`) of a transformer whose LM head is tied to it:
/// one tensor in both roles, so a spec for it is a spec for both.
pub fn tied_embedding(model: &Model) -> Option<usize> {
    if !is_transformer(model) {
        return None;
    }
    let net = Transformer::from_model(model).ok()?;
    net.head_is_embedding()
        .then(|| model.find(&net.embed))
        .flatten()
}

/// What the front ends add to the name of a tied embedding tensor.
pub const TIED_LABEL: &str = "(also the LM head: tied)";
