//! A plan judged on text by the model's own output: the transformer runs with float weights and with
//! the plan's quantized ones on evaluation windows (never the calibration ones), and the two are
//! compared (decoders: perplexity, KL, top-token agreement; encoders: sentence-embedding cosine).
//! A runnable sample model is judged by its accuracy on its held-out examples ([`held_out_accuracy`]).

use super::{Choice, Plan};
use crate::jobs::Progress;
use crate::model::Model;
use crate::nn::text::{self, Split, Text, TextTokenizer};
use crate::nn::transformer::score::{compare, Comparison, Hooks};
use crate::nn::transformer::{mean_pool, model_dir, ModelWeights, Quiet, Transformer};
use crate::nn::NnError;
use crate::quant::rows::{quantize_rows, row_local, BLOCK_ELEMS};
use crate::quant::{quantize, Family};
use std::collections::HashMap;
use std::sync::Mutex;

/// A job's progress and cancel flag, as the runtime's hooks.
pub struct ProgressHooks<'a>(pub &'a Progress);

impl Hooks for ProgressHooks<'_> {
    fn progress(&self, done: usize, total: usize) {
        self.0.set_total(total as u64);
        self.0.set_done(done as u64);
    }
    fn cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// The model's weights as `plan` quantizes them (tensors it keeps are read as stored). A large
/// tensor whose spec keeps every group within a row is read and quantized a part of rows at a time,
/// as the pass uses it (NVFP4 with its tensor scale from a first pass over the tensor).
pub fn planned_weights<'a>(model: &'a Model, plan: &'a Plan, keep: bool) -> ModelWeights<'a> {
    let spec = move |name: &str| {
        let t = model.find(name).map(|i| &model.tensors[i]);
        match plan.resolve(name, t.is_some_and(|t| t.quantizable())).0 {
            Choice::Quantize(spec) if spec.family != Family::None => Some(spec),
            _ => None,
        }
    };
    let amax: Mutex<HashMap<String, f32>> = Mutex::new(HashMap::new());
    ModelWeights::new(model, keep)
        .with_transform(Box::new(move |name, shape, x| {
            let Some(spec) = spec(name) else {
                return Ok(x);
            };
            let t = model.find(name).map(|i| &model.tensors[i]);
            let q = match t {
                Some(t) if spec.family == Family::Nvfp4 && t.shape[..] != shape[..] => {
                    let a = tensor_amax(model, t, &amax)?;
                    quantize_rows(&x, shape, &spec, Some(a))
                }
                _ => quantize(&x, shape, &spec),
            };
            Ok(q.map_err(|e| NnError::Quant(name.to_string(), e))?
                .into_dequant())
        }))
        .transform_by_rows(Box::new(move |name| match spec(name) {
            Some(s) => model
                .find(name)
                .is_some_and(|i| row_local(&s, &model.tensors[i].shape)),
            None => true,
        }))
}

/// max |x| over a stored tensor, read a block of rows at a time and remembered in `seen`.
fn tensor_amax(
    model: &Model,
    t: &crate::model::TensorInfo,
    seen: &Mutex<HashMap<String, f32>>,
) -> Result<f32, NnError> {
    if let Some(&a) = seen.lock().expect("not poisoned").get(&t.name) {
        return Ok(a);
    }
    let (rows, cols) = crate::model::rows_and_cols(&t.shape);
    let step = (BLOCK_ELEMS / cols.max(1)).max(1);
    let mut a = 0f32;
    for r in (0..rows).step_by(step) {
        let x = model.take_rows_f32(t, r..(r + step).min(rows))?;
        a = a.max(crate::stats::abs_max(&x));
        crate::kernels::buffers::give_f32(x);
    }
    seen.lock().expect("not poisoned").insert(t.name.clone(), a);
    Ok(a)
}

/// A sample model's accuracy on its held-out examples in float and under a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldOutAccuracy {
    pub float: f64,
    pub planned: f64,
    pub examples: usize,
}

/// Whether `model` is a runnable sample model with held-out examples ([`held_out_accuracy`] applies).
pub fn has_held_out(model: &Model) -> bool {
    model
        .metadata()
        .is_some_and(|m| m.contains_key("architecture") && m.contains_key("test_indices"))
}

/// The accuracy of a runnable sample model on its held-out examples, in float and under `plan`.
pub fn held_out_accuracy(model: &Model, plan: &Plan) -> Result<HeldOutAccuracy, NnError> {
    use crate::nn::{dataset_bytes, evaluate, held_out, Network};
    let data = held_out(model, &dataset_bytes(model)?)?;
    let float = evaluate(&Network::from_model(model, None)?, &data)?.0;
    let planned = evaluate(&Network::from_model(model, Some(plan))?, &data)?.0;
    Ok(HeldOutAccuracy {
        float,
        planned,
        examples: data.y.len(),
    })
}

/// Text windows for a model: its tokenizer on `text` (the bundled text when `None`), windows of `ctx`
/// tokens (at most the model's positions).
pub fn windows(
    model: &Model,
    net: &Transformer,
    text: Option<&Text>,
    ctx: usize,
    calib: usize,
    eval: usize,
) -> Result<Split, NnError> {
    let tok = TextTokenizer::from_dir(&model_dir(model))?;
    let default;
    let text = match text {
        Some(t) => t,
        None => {
            default = text::default_text();
            &default
        }
    };
    text::split(&tok, text, ctx.min(net.config.max_positions), calib, eval)
}

/// Named plans judged against float on a transformer's evaluation windows.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The text and windows, in words.
    pub describe: String,
    pub float_perplexity: f64,
    /// (name, bits per weight, comparison with float), in the order given.
    pub rows: Vec<(String, f64, Comparison)>,
}

/// Run every plan of `named` (name, bits per weight, plan) and float on `eval` evaluation windows of
/// `ctx` tokens of `text` (the bundled text when `None`), in one pass over the windows.
pub fn judge(
    model: &Model,
    named: &[(String, f64, Plan)],
    text: Option<&Text>,
    ctx: usize,
    eval: usize,
    progress: &Progress,
) -> Result<Judged, NnError> {
    let net = Transformer::from_model(model)?;
    let split = windows(model, &net, text, ctx, 0, eval)?;
    let weights: Vec<_> = named
        .iter()
        .map(|(_, _, p)| planned_weights(model, p, false))
        .collect();
    let float = ModelWeights::new(model, false);
    let refs: Vec<&dyn crate::nn::transformer::Weights> = weights
        .iter()
        .map(|w| w as &dyn crate::nn::transformer::Weights)
        .collect();
    let comps = crate::nn::transformer::score::compare_many(
        &net,
        &float,
        &refs,
        &split.evaluation,
        &ProgressHooks(progress),
    )?;
    Ok(Judged {
        describe: split.describe,
        float_perplexity: comps.first().map_or(f64::NAN, |c| c.perplexity_reference()),
        rows: named
            .iter()
            .zip(comps)
            .map(|((n, b, _), c)| (n.clone(), *b, c))
            .collect(),
    })
}

/// What scoring a plan found.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Score {
    /// A decoder: next-token predictions on the evaluation windows.
    NextToken {
        windows: usize,
        comparison: Comparison,
    },
    /// An encoder: the sentence embedding (mean over tokens) of each evaluation window.
    Embedding {
        windows: usize,
        mean_cosine: f64,
        min_cosine: f64,
    },
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(f64::MIN_POSITIVE)
}

/// Score `plan` (float against itself when `None`) on `seqs`.
pub fn score(
    model: &Model,
    net: &Transformer,
    plan: Option<&Plan>,
    seqs: &[Vec<u32>],
    progress: &Progress,
) -> Result<Score, NnError> {
    let hooks = ProgressHooks(progress);
    let float = ModelWeights::new(model, false);
    let planned = plan.map(|p| planned_weights(model, p, false));
    if net.config.is_decoder() {
        let changed = planned.as_ref().map(|w| w as _);
        let comparison = compare(net, &float, changed, seqs, &hooks)?;
        return Ok(Score::NextToken {
            windows: seqs.len(),
            comparison,
        });
    }
    let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
    let steps = 1 + planned.is_some() as usize;
    let embed = |w: &ModelWeights, k: usize| -> Result<Vec<Vec<f32>>, NnError> {
        if hooks.cancelled() {
            return Err(NnError::Cancelled);
        }
        let h = net.forward(w, seqs, &mut Quiet)?;
        hooks.progress(k, steps);
        Ok(mean_pool(&h, &lens))
    };
    let a = embed(&float, 1)?;
    let b = match &planned {
        Some(p) => embed(p, 2)?,
        None => a.clone(),
    };
    let cos: Vec<f64> = a.iter().zip(&b).map(|(x, y)| cosine(x, y)).collect();
    Ok(Score::Embedding {
        windows: seqs.len(),
        mean_cosine: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
        min_cosine: cos.iter().copied().fold(f64::INFINITY, f64::min),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A planned tensor read a part of rows at a time is the whole quantized tensor's rows: for a spec
    /// whose groups stay in a row (NVFP4 with its tensor scale); one that is not is read whole.
    #[test]
    fn planned_weights_read_in_parts_are_the_whole_tensors_rows() {
        use crate::nn::transformer::Weights;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lm/llama");
        let m = Model::open(&dir).unwrap();
        for (spec, by_rows) in [("int4:g16", true), ("int4:tensor", false), ("nvfp4", true)] {
            let plan = Plan {
                default: Choice::parse(spec).unwrap(),
                ..Default::default()
            };
            let whole = planned_weights(&m, &plan, false);
            let parts = planned_weights(&m, &plan, false).in_parts(100);
            let mut compared = 0;
            for t in m
                .tensors
                .iter()
                .filter(|t| t.quantizable() && t.shape.len() == 2)
            {
                assert_eq!(parts.parts(&t.name).is_some(), by_rows, "{spec} {}", t.name);
                let cols = t.shape[1];
                let want = whole.get(&t.name).unwrap();
                for r in [0..1, 1..t.shape[0].min(7), 0..t.shape[0]] {
                    let got = parts.rows(&t.name, r.clone(), cols).unwrap();
                    assert_eq!(
                        got[..],
                        want[r.start * cols..r.end * cols],
                        "{spec} {}",
                        t.name
                    );
                    compared += 1;
                }
            }
            assert!(compared > 10);
        }
    }

    #[test]
    fn the_sample_models_held_out_accuracy_follows_the_plan() {
        let m = crate::nn::sample_mlp();
        assert!(has_held_out(&m));
        let plan = |spec: &str| Plan {
            default: Choice::parse(spec).unwrap(),
            ..Default::default()
        };
        let int8 = held_out_accuracy(&m, &plan("int8")).unwrap();
        assert_eq!(int8.examples, 359);
        assert!((int8.float - 0.9694).abs() < 1e-4, "{int8:?}");
        assert!((int8.planned - int8.float).abs() < 0.01, "{int8:?}");
        let keep = held_out_accuracy(&m, &plan("none")).unwrap();
        assert_eq!(keep.planned, keep.float);
        assert!(held_out_accuracy(&m, &plan("binary")).unwrap().planned < 0.8);
        // a model without held-out examples has none
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lm/llama");
        assert!(!has_held_out(&Model::open(&dir).unwrap()));
    }
}
