//! The end-to-end measure for a transformer: the model on calibration windows of text with one tensor
//! changed, against the float model's next-token distributions. The float pass is made once and its
//! state kept every few blocks, so a layer in block `i` recomputes from the nearest kept state on.

use super::sensitivity::{Baseline, EndToEnd};
use super::PlanError;
use crate::model::Model;
use crate::nn::transformer::score::{
    argmax, chunk_windows, log_softmax, log_softmax_in_place, next_token_rows, Hooks,
};
use crate::nn::transformer::{ModelWeights, Quiet, Transformer, Weights};
use crate::nn::NnError;
use ndarray::{s, Array2};
use rayon::prelude::*;
use std::sync::Arc;

/// Float weights, but one tensor replaced.
struct Swap<'a> {
    base: &'a dyn Weights,
    name: &'a str,
    value: Arc<Vec<f32>>,
}

impl Weights for Swap<'_> {
    fn get(&self, name: &str) -> Result<Arc<Vec<f32>>, NnError> {
        if name == self.name {
            Ok(self.value.clone())
        } else {
            self.base.get(name)
        }
    }

    fn parts(&self, name: &str) -> Option<(usize, usize)> {
        (name != self.name).then(|| self.base.parts(name)).flatten()
    }

    fn rows(
        &self,
        name: &str,
        rows: std::ops::Range<usize>,
        cols: usize,
    ) -> Result<Vec<f32>, NnError> {
        if name == self.name {
            crate::nn::transformer::rows_of(&self.value, name, rows, cols)
        } else {
            self.base.rows(name, rows, cols)
        }
    }
}

/// The per-layer passes keep a model's f32 weights in memory when they take at most this many bytes;
/// a larger model's are read anew for each pass, so memory stays bounded (and each pass reads them).
/// 1.25 GiB keeps Gemma 3 270M (1.07 GB as f32).
const KEEP_BYTES: u64 = 5 << 28;

/// The float hidden states kept between blocks take at most this many bytes: a deep or wide model
/// keeps every few blocks' (and the last), and a pass starts at the nearest kept state before its
/// block, so memory does not grow with depth.
const STATES_BYTES: usize = 128 << 20;

/// Calibration windows and the float model's state on them.
pub struct LmEvalSet<'a> {
    pub net: Transformer,
    pub seqs: Vec<Vec<u32>>,
    weights: ModelWeights<'a>,
    /// The float hidden state entering block `i` (`blocks + 1` entries, the last the head's input),
    /// kept every few blocks (within [`STATES_BYTES`]) and for the head.
    states: Vec<Option<Array2<f32>>>,
    /// Float log-probabilities of every row, `[rows, vocab]`.
    log_probs: Vec<f32>,
    pub baseline: Baseline,
    /// Where the windows came from, for reports and the cache key.
    pub source: String,
}

impl<'a> LmEvalSet<'a> {
    /// Run the float model on `seqs` once, keeping what the per-layer passes need.
    pub fn new(
        model: &'a Model,
        net: Transformer,
        seqs: Vec<Vec<u32>>,
        source: String,
        hooks: &dyn Hooks,
    ) -> Result<LmEvalSet<'a>, PlanError> {
        Self::keeping(model, net, seqs, source, hooks, STATES_BYTES)
    }

    /// [`new`](Self::new), the kept states within `state_bytes`.
    fn keeping(
        model: &'a Model,
        net: Transformer,
        seqs: Vec<Vec<u32>>,
        source: String,
        hooks: &dyn Hooks,
        state_bytes: usize,
    ) -> Result<LmEvalSet<'a>, PlanError> {
        let nn = |e: NnError| PlanError::Invalid(e.to_string());
        if !net.config.is_decoder() {
            return Err(PlanError::Invalid(format!(
                "{} is an encoder: the end-to-end measure needs next-token predictions",
                net.config.model_type
            )));
        }
        let keep = model.parameters().saturating_mul(4) <= KEEP_BYTES;
        let weights = ModelWeights::new(model, keep);
        let mut h = net.embed(&weights, &seqs).map_err(nn)?;
        let blocks = net.blocks.len();
        let kept = (state_bytes / (4 * h.len()).max(1)).max(1);
        let every = blocks.div_ceil(kept).max(1);
        let mut states = Vec::with_capacity(blocks + 1);
        for i in 0..blocks {
            if hooks.cancelled() {
                return Err(PlanError::Cancelled);
            }
            states.push(i.is_multiple_of(every).then(|| h.clone()));
            net.block(i, &weights, &seqs, &mut h, &mut Quiet)
                .map_err(nn)?;
            hooks.progress(i + 1, blocks);
        }
        states.push(Some(h));
        let head_input = states[blocks].as_ref().expect("the head's input is kept");
        let mut log_probs = Vec::with_capacity(head_input.nrows() * net.config.vocab);
        let mut vocab = 0;
        head(&net, &weights, &seqs, head_input, |_, v, logits| {
            logits.par_chunks_mut(v).for_each(log_softmax_in_place);
            log_probs.extend_from_slice(logits);
            vocab = v;
        })
        .map_err(nn)?;
        let rows = next_token_rows(&seqs);
        let (nll, correct) = rows.iter().fold((0f64, 0usize), |(l, c), &(r, next)| {
            let lp = &log_probs[r * vocab..(r + 1) * vocab];
            (l - lp[next] as f64, c + (argmax(lp) == next) as usize)
        });
        let n = rows.len().max(1);
        Ok(LmEvalSet {
            baseline: Baseline {
                accuracy: correct as f64 / n as f64,
                loss: nll / n as f64,
                examples: rows.len(),
            },
            net,
            seqs,
            weights,
            states,
            log_probs,
            source,
        })
    }

    /// The float weights (kept in memory once read).
    pub fn weights(&self) -> &dyn Weights {
        &self.weights
    }

    /// The first block a change to `name` affects (`blocks` for the LM head alone), or `None` for a
    /// tensor the network does not use.
    fn first_block(&self, name: &str) -> Option<usize> {
        if name == self.net.embed {
            return Some(0);
        }
        if let Some(i) = self
            .net
            .blocks
            .iter()
            .position(|b| b.linears().contains(&name))
        {
            return Some(i);
        }
        (self.net.head.as_deref() == Some(name)).then_some(self.net.blocks.len())
    }

    /// The model with `name` replaced by `value`, against the float model: mean KL of the next-token
    /// distributions, next-token accuracy and loss, and agreement of the top token.
    pub fn run(&self, name: &str, value: Vec<f32>) -> Result<EndToEnd, PlanError> {
        let nn = |e: NnError| PlanError::Invalid(e.to_string());
        let first = self.first_block(name).ok_or_else(|| {
            PlanError::Invalid(format!("'{name}' is not a weight the network runs"))
        })?;
        let w = Swap {
            base: &self.weights,
            name,
            value: Arc::new(value),
        };
        // from the nearest kept float state at or before the first changed block
        let start = (0..=first).rev().find(|&i| self.states[i].is_some());
        let (mut h, start) = match start {
            Some(i) if name != self.net.embed => (self.states[i].clone().expect("kept"), i),
            _ => (self.net.embed(&w, &self.seqs).map_err(nn)?, 0),
        };
        for i in start..self.net.blocks.len() {
            self.net
                .block(i, &w, &self.seqs, &mut h, &mut Quiet)
                .map_err(nn)?;
        }
        self.against_float(&w, &h)
    }

    /// [`run`](Self::run) without the kept float inputs: every block from the embedding on. The block
    /// cache must give the same answer; this is the reference it is checked and timed against.
    pub fn run_from_embedding(&self, name: &str, value: Vec<f32>) -> Result<EndToEnd, PlanError> {
        self.first_block(name).ok_or_else(|| {
            PlanError::Invalid(format!("'{name}' is not a weight the network runs"))
        })?;
        self.run_weights(&Swap {
            base: &self.weights,
            name,
            value: Arc::new(value),
        })
    }

    /// Every tensor the network runs, in the order it runs them: the embedding, each block's linear
    /// layers, and an untied head.
    pub fn tensors(&self) -> Vec<String> {
        let mut all = vec![self.net.embed.clone()];
        all.extend(
            self.net
                .linears()
                .into_iter()
                .filter(|n| *n != self.net.embed),
        );
        all
    }

    /// A whole model (every tensor as `w` gives it) against the float model on the calibration windows.
    pub fn run_weights(&self, w: &dyn Weights) -> Result<EndToEnd, PlanError> {
        let nn = |e: NnError| PlanError::Invalid(e.to_string());
        let mut h = self.net.embed(w, &self.seqs).map_err(nn)?;
        for i in 0..self.net.blocks.len() {
            self.net
                .block(i, w, &self.seqs, &mut h, &mut Quiet)
                .map_err(nn)?;
        }
        self.against_float(w, &h)
    }

    /// The head on the last hidden state `h`, scored against the float log-probabilities.
    fn against_float(&self, w: &dyn Weights, h: &Array2<f32>) -> Result<EndToEnd, PlanError> {
        let nn = |e: NnError| PlanError::Invalid(e.to_string());
        let rows = next_token_rows(&self.seqs);
        let mut scored = Vec::with_capacity(rows.len());
        head(&self.net, w, &self.seqs, h, |first, vocab, logits| {
            // the scored rows among this part's (rows are in order)
            let end = first + logits.len() / vocab;
            let part =
                &rows[rows.partition_point(|r| r.0 < first)..rows.partition_point(|r| r.0 < end)];
            scored.par_extend(part.par_iter().map(|&(r, next)| {
                let lq = log_softmax(&logits[(r - first) * vocab..(r - first + 1) * vocab]);
                let lp = &self.log_probs[r * vocab..(r + 1) * vocab];
                let kl: f64 = lp
                    .iter()
                    .zip(&lq)
                    .map(|(&p, &q)| {
                        let p = p as f64;
                        if p > -700.0 {
                            p.exp() * (p - q)
                        } else {
                            0.0
                        }
                    })
                    .sum();
                let top = argmax(&lq);
                (
                    kl.max(0.0),
                    -lq[next],
                    (top == next) as usize,
                    (top == argmax(lp)) as usize,
                )
            }));
        })
        .map_err(nn)?;
        // summed in row order: the same cell on every run
        let (kl, nll, correct, agree) = scored.into_iter().fold((0.0, 0.0, 0, 0), |a, b| {
            (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3)
        });
        let n = rows.len().max(1) as f64;
        Ok(EndToEnd {
            accuracy: correct as f64 / n,
            loss: nll / n,
            kl: kl / n,
            agreement: agree as f64 / n,
        })
    }
}

/// What a transformer's sensitivity needs: its activations on calibration windows of `text` (the bundled
/// text when `None`; `windows` of `ctx` tokens) and, with `end_to_end`, the float pass's kept states.
/// No activations when `covered(data)` says every cell the run needs is already measured on `data`
/// (the data description a sensitivity cache is keyed by). `(None, None)` for a model that is not a
/// transformer decoder (an unsupported one: a note on stderr).
#[allow(clippy::type_complexity)]
pub fn prepare<'a>(
    model: &'a Model,
    text: Option<&crate::nn::text::Text>,
    ctx: usize,
    windows_n: usize,
    end_to_end: bool,
    covered: &dyn Fn(&str) -> bool,
    progress: &crate::jobs::Progress,
) -> Result<
    (
        Option<LmEvalSet<'a>>,
        Option<crate::activations::Calibration>,
    ),
    String,
> {
    use super::score::{windows, ProgressHooks};
    if !crate::nn::transformer::is_transformer(model) {
        return Ok((None, None));
    }
    let net = match Transformer::from_model(model) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("note: no end-to-end measure: {e}");
            return Ok((None, None));
        }
    };
    if !net.config.is_decoder() {
        return Ok((None, None));
    }
    let e = |e: NnError| e.to_string();
    let split = windows(model, &net, text, ctx, windows_n, 0).map_err(e)?;
    let hooks = ProgressHooks(progress);
    let source = format!("calibration windows of {}", split.describe);
    // the activations serve only cells not measured yet
    let acts = if covered(if end_to_end { &source } else { "" }) {
        None
    } else {
        Some(
            crate::activations::lm::capture(
                model,
                &net,
                &split.calibration,
                &split.describe,
                crate::activations::lm::Keep::rows_within_budget(model),
                &hooks,
            )
            .map_err(e)?,
        )
    };
    let lm = if end_to_end {
        Some(
            LmEvalSet::new(model, net, split.calibration, source, &hooks)
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    Ok((lm, acts))
}

/// The head on the last hidden state `h`, a few windows at a time: `each(first row, vocab, logits)`
/// sees each part's `[rows, vocab]` logits, so the logits of all rows never exist at once.
fn head(
    net: &Transformer,
    w: &dyn Weights,
    seqs: &[Vec<u32>],
    h: &Array2<f32>,
    mut each: impl FnMut(usize, usize, &mut [f32]),
) -> Result<(), NnError> {
    let mut row = 0;
    for part in seqs.chunks(chunk_windows(net, seqs)) {
        let n: usize = part.iter().map(Vec::len).sum();
        let mut l = net.finish(
            w,
            part,
            h.slice(s![row..row + n, ..]).to_owned(),
            &mut Quiet,
        )?;
        let vocab = l.ncols().max(1);
        each(row, vocab, l.as_slice_mut().expect("standard layout"));
        row += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block cache changes the work, never the answer: a cell started at its own block equals the
    /// same cell run from the embedding, for every tensor of a tied and an untied model.
    #[test]
    fn the_block_cache_gives_the_answer_of_a_full_pass() {
        for name in ["llama", "smollm_tied"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/lm")
                .join(name);
            let model = Model::open(&dir).unwrap();
            let progress = crate::jobs::Progress::default();
            let (lm, _) = prepare(&model, None, 24, 2, true, &|_| false, &progress).unwrap();
            let lm = lm.unwrap();
            // every block's state kept, and only every other block's (a state is 2 × 24 × d f32)
            let state = 4 * 2 * 24 * lm.net.config.hidden;
            let sparse = LmEvalSet::keeping(
                &model,
                lm.net.clone(),
                lm.seqs.clone(),
                lm.source.clone(),
                &crate::nn::transformer::score::NoHooks,
                state * lm.net.blocks.len().div_ceil(2),
            )
            .unwrap();
            let kept = |l: &LmEvalSet| l.states.iter().filter(|s| s.is_some()).count();
            assert_eq!(kept(&lm), lm.net.blocks.len() + 1, "{name}");
            assert!(kept(&sparse) < kept(&lm), "{name}");
            let tensors = lm.tensors();
            assert!(tensors.len() > 3, "{name}: {tensors:?}");
            for (lm, t) in tensors.iter().flat_map(|t| [(&lm, t), (&sparse, t)]) {
                let w = lm.weights().get(t).unwrap();
                let changed: Vec<f32> = w.iter().map(|v| (v * 8.0).round() / 8.0).collect();
                let cached = lm.run(t, changed.clone()).unwrap();
                let full = lm.run_from_embedding(t, changed).unwrap();
                assert!(cached.kl > 0.0, "{name} {t}: the change must show");
                for (a, b) in [
                    (cached.kl, full.kl),
                    (cached.loss, full.loss),
                    (cached.accuracy, full.accuracy),
                    (cached.agreement, full.agreement),
                ] {
                    assert!(
                        (a - b).abs() <= 1e-9 * b.abs().max(1e-6),
                        "{name} {t}: {cached:?} vs {full:?}"
                    );
                }
            }
            assert!(lm.run_from_embedding("no.such.weight", vec![]).is_err());
        }
    }
}
