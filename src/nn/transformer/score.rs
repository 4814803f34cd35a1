//! How far a changed model's next-token predictions move from the reference's on text: perplexity of
//! both, mean KL(reference ‖ changed) of the next-token distributions, and the share of positions whose
//! most likely token is unchanged. The pass goes block by block over all windows, so each block's
//! weights are read once per pass, and the logits are made a few windows at a time.

use super::{Transformer, Weights};
use crate::nn::NnError;
use ndarray::Array2;
use rayon::prelude::*;

/// What the caller lets a long pass report and whether it should stop.
pub trait Hooks: Sync {
    /// `done` of `total` steps are finished.
    fn progress(&self, _done: usize, _total: usize) {}
    /// True when the caller wants the pass to stop (it then returns [`NnError::Cancelled`]).
    fn cancelled(&self) -> bool {
        false
    }
}

/// Hooks that report nothing and never cancel.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// Sums over the scored positions (every position but a window's last predicts the next token).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub positions: usize,
    /// Σ −log p(next token) under the reference and under the changed model (nats).
    pub nll_reference: f64,
    pub nll: f64,
    /// Σ KL(reference ‖ changed) (nats).
    pub kl: f64,
    /// Positions whose argmax is the same in both.
    pub same_top: usize,
}

impl Comparison {
    pub fn perplexity_reference(&self) -> f64 {
        (self.nll_reference / self.positions.max(1) as f64).exp()
    }
    pub fn perplexity(&self) -> f64 {
        (self.nll / self.positions.max(1) as f64).exp()
    }
    pub fn mean_kl(&self) -> f64 {
        self.kl / self.positions.max(1) as f64
    }
    pub fn top_agreement(&self) -> f64 {
        self.same_top as f64 / self.positions.max(1) as f64
    }
}

/// `log softmax` of one row of logits, in f64.
pub fn log_softmax(x: &[f32]) -> Vec<f64> {
    let lse = log_sum_exp(x);
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// [`log_softmax`] rounded to f32, in place of the logits.
pub fn log_softmax_in_place(x: &mut [f32]) {
    let lse = log_sum_exp(x);
    x.iter_mut().for_each(|v| *v = (*v as f64 - lse) as f32);
}

/// ln Σ eˣ in f64, shifted by the largest value.
fn log_sum_exp(x: &[f32]) -> f64 {
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max
}

/// The index of the first largest value.
pub fn argmax<T: PartialOrd + Copy>(x: &[T]) -> usize {
    (1..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b })
}

/// (row, next token) of every scored position: each but a window's last predicts the token after it.
pub fn next_token_rows(seqs: &[Vec<u32>]) -> Vec<(usize, usize)> {
    let mut rows = Vec::new();
    let mut start = 0;
    for s in seqs {
        for t in 0..s.len().saturating_sub(1) {
            rows.push((start + t, s[t + 1] as usize));
        }
        start += s.len();
    }
    rows
}

/// Compare two logit matrices of the same windows (`lens` tokens each, `ids` their tokens in order).
pub fn compare_logits(
    reference: &Array2<f32>,
    changed: &Array2<f32>,
    seqs: &[Vec<u32>],
) -> Comparison {
    let rows = next_token_rows(seqs);
    // rows in parallel, summed in order: the same total on every run
    let per_row: Vec<Comparison> = rows
        .par_iter()
        .map(|&(r, next)| {
            let a = reference.row(r);
            let b = changed.row(r);
            let (a, b) = (a.as_slice().expect("row"), b.as_slice().expect("row"));
            let (la, lb) = (log_softmax(a), log_softmax(b));
            let kl: f64 = la
                .iter()
                .zip(&lb)
                .map(|(&p, &q)| if p > -745.0 { p.exp() * (p - q) } else { 0.0 })
                .sum();
            Comparison {
                positions: 1,
                nll_reference: -la[next],
                nll: -lb[next],
                kl: kl.max(0.0),
                same_top: (argmax(a) == argmax(b)) as usize,
            }
        })
        .collect();
    let mut sum = Comparison::default();
    for c in &per_row {
        add(&mut sum, c);
    }
    sum
}

/// Hidden states after the last block, block by block over all windows (`steps` counts blocks done).
pub fn last_hidden(
    net: &Transformer,
    w: &dyn Weights,
    seqs: &[Vec<u32>],
    hooks: &dyn Hooks,
    step: &mut usize,
    total: usize,
) -> Result<Array2<f32>, NnError> {
    let mut h = net.embed(w, seqs)?;
    for i in 0..net.blocks.len() {
        if hooks.cancelled() {
            return Err(NnError::Cancelled);
        }
        net.block(i, w, seqs, &mut h, &mut super::Quiet)?;
        *step += 1;
        hooks.progress(*step, total);
    }
    Ok(h)
}

/// Windows per head chunk, so a chunk's logits stay near 256 MB.
pub fn chunk_windows(net: &Transformer, seqs: &[Vec<u32>]) -> usize {
    let longest = seqs.iter().map(Vec::len).max().unwrap_or(1).max(1);
    ((256usize << 20) / (longest * net.config.vocab.max(1) * 4)).max(1)
}

/// Score `changed` weights against `reference` ones on `seqs` (a decoder's windows). With `changed`
/// `None`, the reference is compared with itself (its perplexity; KL 0).
pub fn compare(
    net: &Transformer,
    reference: &dyn Weights,
    changed: Option<&dyn Weights>,
    seqs: &[Vec<u32>],
    hooks: &dyn Hooks,
) -> Result<Comparison, NnError> {
    let changed: Vec<&dyn Weights> = changed.into_iter().collect();
    Ok(compare_many(net, reference, &changed, seqs, hooks)?
        .pop()
        .expect("one comparison"))
}

/// Score several changed weight sets against one reference on `seqs`, the reference's pass made once.
/// With none, one comparison of the reference with itself (its perplexity; KL 0).
pub fn compare_many(
    net: &Transformer,
    reference: &dyn Weights,
    changed: &[&dyn Weights],
    seqs: &[Vec<u32>],
    hooks: &dyn Hooks,
) -> Result<Vec<Comparison>, NnError> {
    if !net.config.is_decoder() {
        return Err(NnError::NotRunnable(format!(
            "{} is an encoder: it predicts no next token",
            net.config.model_type
        )));
    }
    let chunk = chunk_windows(net, seqs);
    let chunks = seqs.len().div_ceil(chunk);
    let total = (1 + changed.len()) * (net.blocks.len() + chunks);
    let mut step = 0;
    let ha = last_hidden(net, reference, seqs, hooks, &mut step, total)?;
    let hb: Vec<Array2<f32>> = changed
        .iter()
        .map(|w| last_hidden(net, *w, seqs, hooks, &mut step, total))
        .collect::<Result<_, _>>()?;
    let mut sums = vec![Comparison::default(); changed.len().max(1)];
    let mut row = 0;
    for part in seqs.chunks(chunk) {
        if hooks.cancelled() {
            return Err(NnError::Cancelled);
        }
        let n: usize = part.iter().map(Vec::len).sum();
        let rows = ndarray::s![row..row + n, ..];
        let la = net.finish(
            reference,
            part,
            ha.slice(rows).to_owned(),
            &mut super::Quiet,
        )?;
        step += 1;
        if changed.is_empty() {
            add(&mut sums[0], &compare_logits(&la, &la, part));
            hooks.progress(step, total);
        }
        for ((w, h), sum) in changed.iter().zip(&hb).zip(&mut sums) {
            let lb = net.finish(*w, part, h.slice(rows).to_owned(), &mut super::Quiet)?;
            add(sum, &compare_logits(&la, &lb, part));
            step += 1;
            hooks.progress(step, total);
        }
        row += n;
    }
    Ok(sums)
}

fn add(sum: &mut Comparison, c: &Comparison) {
    sum.positions += c.positions;
    sum.nll_reference += c.nll_reference;
    sum.nll += c.nll;
    sum.kl += c.kl;
    sum.same_top += c.same_top;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_and_perplexity_of_known_distributions() {
        // reference logits ln(0.5, 0.25, 0.25), changed uniform; the next token is 0
        let a = Array2::from_shape_vec(
            (2, 3),
            vec![0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln(), 0.0, 0.0, 0.0],
        )
        .unwrap();
        let b = Array2::from_shape_vec((2, 3), vec![0.0; 6]).unwrap();
        let c = compare_logits(&a, &b, &[vec![1, 0]]);
        assert_eq!(c.positions, 1);
        let kl = 0.5 * (0.5f64 * 3.0).ln() + 2.0 * 0.25 * (0.25f64 * 3.0).ln();
        assert!((c.kl - kl).abs() < 1e-6, "{} {kl}", c.kl);
        assert!((c.perplexity_reference() - 2.0).abs() < 1e-6);
        assert!((c.perplexity() - 3.0).abs() < 1e-6);
        assert_eq!(c.same_top, 1);
    }
}
