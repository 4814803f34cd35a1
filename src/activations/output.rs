//! Output-aware error (docs/DESIGN.md §3): with a layer's calibration inputs X, compare `Y = X·Wᵀ` with
//! `Ŷ = X̂·Ŵᵀ`, where Ŵ is the quantized weight and X̂ the inputs as an activation quantizer leaves them
//! (or X itself for weight-only quantization, e.g. W4A16). Bias is left out: it is the same on both sides.

use super::{LayerActivations, Lookup};
use crate::kernels::gemm::xwt;
use crate::quant::fixed::FixedQuant;
use crate::quant::metrics::Acc;
use crate::quant::Metrics;

/// (calibration rows, input columns, output features) of a weight of `values` values on `layer`.
fn shape(layer: &LayerActivations, values: usize) -> Result<(usize, usize, usize), String> {
    let k = layer.k;
    if k == 0 || !values.is_multiple_of(k) {
        return Err(format!(
            "{}: the weight has {values} values, which is not a multiple of the {k} input columns",
            layer.name
        ));
    }
    match layer.row_count() {
        0 => Err(format!("{}: no calibration rows", layer.name)),
        rows => Ok((rows, k, values / k)),
    }
}

/// Metrics of the layer's output (mse, sqnr_db, cosine, max_abs_err; bits and bytes are 0).
/// `w` and `w_hat` are `[out, k]` row-major.
pub fn output_metrics(
    layer: &LayerActivations,
    w: &[f32],
    w_hat: &[f32],
    act: Option<&FixedQuant>,
) -> Result<Metrics, String> {
    if w.len() != w_hat.len() {
        return Err(format!(
            "{}: the weight and its quantized form differ in size",
            layer.name
        ));
    }
    let (rows, k, out) = shape(layer, w.len())?;
    let y = xwt(&layer.rows, rows, k, w, out, None);
    let y_hat = match act {
        None => xwt(&layer.rows, rows, k, w_hat, out, None),
        Some(q) => {
            let mut x = layer.rows.clone();
            q.apply(&mut x);
            xwt(&x, rows, k, w_hat, out, None)
        }
    };
    Ok(Acc::of(&y, &y_hat).finish(rows * out, 0))
}

/// ‖X·Eᵀ‖² over the calibration rows X, for `e` any run of whole rows (`[n, k]` row-major) of a weight
/// or of its error W − Ŵ: the output's energy, or the output error's (X·(W − Ŵ)ᵀ = Y − Ŷ, without
/// the cancellation of subtracting two products), so a weight's output SQNR adds up a block at a time.
pub fn output_energy(layer: &LayerActivations, e: &[f32]) -> Result<f64, String> {
    let (rows, k, out) = shape(layer, e.len())?;
    let y = xwt(&layer.rows, rows, k, e, out, None);
    Ok(crate::stats::sum_squares(&y, None))
}

/// What a weight's output error is measured on.
#[derive(Debug, Clone, Copy)]
pub enum Outputs<'a> {
    /// A linear layer's calibration rows X: the output is X·Wᵀ.
    Linear(&'a LayerActivations),
    /// An embedding's lookups: the output is the looked-up rows of W.
    Lookup(&'a Lookup),
}

impl<'a> Outputs<'a> {
    /// The output energy that the rows `rows` of a weight (or of its error W − Ŵ), given as `e`,
    /// contribute: ‖X·Eᵀ‖² for a linear layer ([`output_energy`]), Σ count·‖e_r‖² over the looked-up
    /// rows of an embedding. Summed over any split of the rows it is the whole weight's.
    pub fn energy(&self, rows: std::ops::Range<usize>, e: &[f32]) -> Result<f64, String> {
        match self {
            Outputs::Linear(l) => output_energy(l, e),
            Outputs::Lookup(t) => {
                if rows.is_empty() || !e.len().is_multiple_of(rows.len()) {
                    return Err(format!(
                        "{}: {} values are not {} whole rows",
                        t.weight,
                        e.len(),
                        rows.len()
                    ));
                }
                let cols = e.len() / rows.len();
                let seen = &t.counts[t.counts.partition_point(|c| c.0 < rows.start)
                    ..t.counts.partition_point(|c| c.0 < rows.end)];
                Ok(seen
                    .iter()
                    .map(|&(r, n)| {
                        let i = (r - rows.start) * cols;
                        n as f64 * crate::stats::sum_squares(&e[i..i + cols], None)
                    })
                    .sum())
            }
        }
    }

    /// The linear layer's activations (an embedding has none).
    pub fn linear(self) -> Option<&'a LayerActivations> {
        match self {
            Outputs::Linear(l) => Some(l),
            Outputs::Lookup(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize, Spec};

    #[test]
    fn output_error_matches_a_direct_computation() {
        let (rows, k, out) = (64, 16, 8);
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37) % 19) as f32 / 19.0)
            .collect();
        let w: Vec<f32> = (0..out * k)
            .map(|i| ((i * 53) % 23) as f32 / 23.0 - 0.5)
            .collect();
        let layer = LayerActivations {
            name: "l".into(),
            weight: "l.weight".into(),
            k,
            rows: x.clone(),
            inputs: x.clone(),
            outputs: Vec::new(),
            batch_ranges: vec![(0.0, 1.0)],
            channel_absmax: vec![1.0; k],
            importance: Vec::new(),
            seen: x.len() as u64,
        };
        let wq = quantize(&w, &[out, k], &Spec::parse("int4").unwrap())
            .unwrap()
            .into_dequant();
        let m = output_metrics(&layer, &w, &wq, None).unwrap();
        // the same in f64 by the definition
        let (mut se, mut sy) = (0f64, 0f64);
        for r in 0..rows {
            for o in 0..out {
                let (mut y, mut yq) = (0f64, 0f64);
                for j in 0..k {
                    y += x[r * k + j] as f64 * w[o * k + j] as f64;
                    yq += x[r * k + j] as f64 * wq[o * k + j] as f64;
                }
                se += (y - yq).powi(2);
                sy += y * y;
            }
        }
        let want = 10.0 * (sy / se).log10();
        // the energies of the output and of its error, a block of 3 output rows at a time
        let e: Vec<f32> = w.iter().zip(&wq).map(|(a, b)| a - b).collect();
        let by_blocks = |v: &[f32]| -> f64 {
            v.chunks(3 * k)
                .map(|b| output_energy(&layer, b).unwrap())
                .sum()
        };
        assert!((by_blocks(&w) - sy).abs() <= 1e-6 * sy);
        assert!(
            (by_blocks(&e) - se).abs() <= 1e-5 * se,
            "{} vs {se}",
            by_blocks(&e)
        );
        assert!(output_energy(&layer, &w[..k - 1]).is_err());
        assert!((m.sqnr_db - want).abs() < 1e-3, "{} vs {want}", m.sqnr_db);
        // quantizing the inputs too can only add error here
        let a = FixedQuant::new(&Spec::parse("uint4").unwrap(), 0.0, 1.0).unwrap();
        let m2 = output_metrics(&layer, &w, &wq, Some(&a)).unwrap();
        assert!(m2.sqnr_db < m.sqnr_db);
        assert!(output_metrics(&layer, &w[..out * k - 1], &wq[..out * k - 1], None).is_err());
    }
}
