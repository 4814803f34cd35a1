//! A tensor quantized a block of rows at a time, so that neither its f32 copy nor its fake-quantized
//! values ever exist whole: memory follows a block (about 16 MB), not the tensor (a 7B model's
//! embedding is 800 MB as f32). Only where no group crosses a row ([`row_local`]); NVFP4's per-tensor
//! scale comes from a first pass over the blocks. Any other spec reads and quantizes the tensor whole.

use std::ops::Range;

use rayon::prelude::*;

use super::metrics::Acc;
use super::{
    bits_of, buffers, check, parts, quantize, Family, Granularity, Layout, QuantError, Quantized,
    RoundMode, Spec,
};
pub use crate::model::rows_and_cols;

/// Elements per block: 16 MB of f32.
pub const BLOCK_ELEMS: usize = 1 << 22;

/// True when quantizing any run of whole rows alone gives the numbers of quantizing the tensor: every
/// group lies in one row (per-channel and per-group scales, the block formats), rounding does not
/// depend on an element's index in the tensor, and no table is fitted to the whole tensor.
pub fn row_local(spec: &Spec, shape: &[usize]) -> bool {
    if spec.adaround || spec.round != RoundMode::Nearest || shape.len() < 2 {
        return false;
    }
    match spec.family {
        Family::Kmeans(_) => false,
        Family::Bf16 | Family::Fp16 | Family::None => true,
        _ => spec.granularity != Granularity::Tensor,
    }
}

/// A run of a tensor's rows quantized alone to the values the whole tensor gets there, for a
/// [`row_local`] spec; NVFP4 needs the tensor's `nvfp4_amax` (its per-tensor scale). No metrics.
pub fn quantize_rows(
    x: &[f32],
    shape: &[usize],
    spec: &Spec,
    nvfp4_amax: Option<f32>,
) -> Result<Quantized, QuantError> {
    check(x.len(), shape, spec)?;
    Ok(parts(x, shape, spec, nvfp4_amax)?.0)
}

/// What the caller keeps of the whole tensor's result besides its scales, metrics and details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Nothing,
    Codes,
    /// Codes and fake-quantized values: the tensor is quantized whole.
    Everything,
}

/// Quantize a tensor of `shape` that `read(rows)` gives a run of rows at a time (row-major f32, rows
/// of dimension 0). `each(rows, x, dequant)` sees every run's values and fake-quantized values, in
/// order. Returns the whole tensor's scales, metrics and details, with `codes` and `dequant` as
/// `keep` says. Equal to [`quantize`] on the whole tensor (the metrics' sums are added in another
/// order: equal to the last bits).
pub fn quantize_by_rows<E: From<QuantError>>(
    shape: &[usize],
    spec: &Spec,
    keep: Keep,
    read: impl FnMut(Range<usize>) -> Result<Vec<f32>, E>,
    each: impl FnMut(Range<usize>, &[f32], &[f32]) -> Result<(), E>,
) -> Result<Quantized, E> {
    in_blocks(shape, spec, keep, BLOCK_ELEMS, read, each)
}

/// [`quantize_by_rows`] with blocks of about `block_elems` elements (whole rows; tests pick small ones).
pub fn in_blocks<E: From<QuantError>>(
    shape: &[usize],
    spec: &Spec,
    keep: Keep,
    block_elems: usize,
    mut read: impl FnMut(Range<usize>) -> Result<Vec<f32>, E>,
    mut each: impl FnMut(Range<usize>, &[f32], &[f32]) -> Result<(), E>,
) -> Result<Quantized, E> {
    let (rows, cols) = rows_and_cols(shape);
    let n = rows * cols;
    let keep_codes = keep != Keep::Nothing;
    let lean = |mut q: Quantized| {
        if keep != Keep::Everything {
            buffers::give_f32(std::mem::take(&mut q.dequant));
        }
        if !keep_codes {
            buffers::give_i16(std::mem::take(&mut q.codes));
        }
        q
    };
    if !row_local(spec, shape) || n <= block_elems || rows == 1 || keep == Keep::Everything {
        let x = read(0..rows)?;
        let q = quantize(&x, shape, spec)?;
        each(0..rows, &x, &q.dequant)?;
        buffers::give_f32(x);
        return Ok(lean(q));
    }
    check(n, shape, spec)?;
    let step = (block_elems / cols.max(1)).max(1);
    let blocks = || {
        (0..rows)
            .step_by(step)
            .map(move |r| r..(r + step).min(rows))
    };
    let non_finite = |x: &[f32]| -> usize {
        x.par_chunks(1 << 16)
            .map(crate::stats::count_non_finite)
            .sum()
    };
    let nvfp4_amax = match spec.family {
        Family::Nvfp4 => {
            let (mut amax, mut bad) = (0f32, 0);
            for b in blocks() {
                let x = read(b)?;
                bad += non_finite(&x);
                amax = amax.max(
                    x.par_chunks(1 << 16)
                        .map(crate::stats::abs_max)
                        .reduce(|| 0f32, f32::max),
                );
                buffers::give_f32(x);
            }
            if bad > 0 {
                return Err(QuantError::NotFinite(bad).into());
            }
            Some(amax)
        }
        _ => None,
    };
    let mut acc = Acc::default();
    let mut whole: Option<Quantized> = None;
    for b in blocks() {
        let x = read(b.clone())?;
        let mut block_shape = shape.to_vec();
        block_shape[0] = b.len();
        let (q, a) = match parts(&x, &block_shape, spec, nvfp4_amax) {
            Ok(r) => r,
            // the error counts the whole tensor's NaN/Inf, as quantizing it whole does
            Err(QuantError::NotFinite(k)) => {
                let mut bad = k;
                for rest in blocks().filter(|r| r.start > b.start) {
                    let x = read(rest)?;
                    bad += non_finite(&x);
                    buffers::give_f32(x);
                }
                return Err(QuantError::NotFinite(bad).into());
            }
            Err(e) => return Err(e.into()),
        };
        acc = acc.merge(a.unwrap_or_else(|| {
            let mut a = Acc::default();
            a.add(&x, &q.dequant);
            a
        }));
        each(b, &x, &q.dequant)?;
        buffers::give_f32(x);
        match whole.as_mut() {
            None => whole = Some(lean(q)),
            Some(w) => {
                if keep_codes {
                    w.codes.extend_from_slice(&q.codes);
                }
                w.scales.extend_from_slice(&q.scales);
                w.zero_points.extend_from_slice(&q.zero_points);
                w.thresholds.extend_from_slice(&q.thresholds);
                // NVFP4's second level is the tensor's (the same in every block); VS-Quant's is per row
                if spec.family != Family::Nvfp4 {
                    w.outer_scales.extend_from_slice(&q.outer_scales);
                }
            }
        }
    }
    let mut q = whole.expect("a tensor of two or more rows has a block");
    q.layout = Layout::new(shape, spec.granularity);
    q.metrics = acc.finish(n, bits_of(&q, n));
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                // a heavy tail now and then, and rows of different scales
                u * (1.0 + (i % 7) as f32) * if s.is_multiple_of(97) { 20.0 } else { 1.0 }
            })
            .collect()
    }

    #[test]
    fn blocks_of_rows_give_the_numbers_of_the_whole_tensor() {
        let specs = [
            "int8",
            "int4:g128",
            "int4:g64:clip=mse",
            "int3:g32:clip=p99.9",
            "uint4:g64",
            "int4:channel",
            "int8:scale=bf16",
            "int4:g64:vsq",
            "fp8_e4m3:channel",
            "fp4_e2m1:g32",
            "nf4",
            "mxfp4",
            "mxfp8_e4m3",
            "mxint8",
            "nvfp4",
            "smx4",
            "binary:channel",
            "ternary:g64",
            "bf16",
            "fp16",
            // not row-local: read whole, and still the same
            "int4:tensor",
            "kmeans3",
            "int4:g64:round=stochastic",
        ];
        for shape in [vec![37, 192], vec![9, 5, 64]] {
            let n: usize = shape.iter().product();
            let x = values(n, n as u64);
            let (_, cols) = rows_and_cols(&shape);
            for text in specs {
                let spec = Spec::parse(text).unwrap();
                let want = quantize(&x, &shape, &spec).unwrap();
                // blocks of 4 rows (the last one shorter)
                let mut dequant = Vec::new();
                let mut seen = Vec::new();
                let got = in_blocks::<QuantError>(
                    &shape,
                    &spec,
                    Keep::Codes,
                    4 * cols,
                    |r| Ok(x[r.start * cols..r.end * cols].to_vec()),
                    |r, xs, dq| {
                        assert_eq!(xs, &x[r.start * cols..r.end * cols]);
                        seen.push(r);
                        dequant.extend_from_slice(dq);
                        Ok(())
                    },
                )
                .unwrap();
                let local = row_local(&spec, &shape);
                assert_eq!(seen.len() > 1, local, "{text}: {seen:?}");
                assert_eq!(dequant, want.dequant, "{text}");
                assert!(got.dequant.is_empty());
                assert_eq!(got.codes, want.codes, "{text}");
                assert_eq!(got.scales, want.scales, "{text}");
                assert_eq!(got.zero_points, want.zero_points, "{text}");
                assert_eq!(got.outer_scales, want.outer_scales, "{text}");
                assert_eq!(got.codebook, want.codebook, "{text}");
                assert_eq!(got.thresholds, want.thresholds, "{text}");
                assert_eq!(got.layout, want.layout, "{text}");
                let (g, w) = (got.metrics, want.metrics);
                assert_eq!(
                    (g.bits_per_weight, g.bytes),
                    (w.bits_per_weight, w.bytes),
                    "{text}"
                );
                assert_eq!(g.max_abs_err, w.max_abs_err, "{text}");
                for (a, b) in [(g.mse, w.mse), (g.sqnr_db, w.sqnr_db), (g.cosine, w.cosine)] {
                    assert!(
                        (a - b).abs() <= 1e-12 * b.abs().max(1e-30) || a == b,
                        "{text}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn codes_are_dropped_unless_kept_and_errors_pass_through() {
        let shape = [16, 64];
        let x = values(16 * 64, 1);
        let spec = Spec::parse("int4:g32").unwrap();
        let q = in_blocks::<QuantError>(
            &shape,
            &spec,
            Keep::Nothing,
            128,
            |r| Ok(x[r.start * 64..r.end * 64].to_vec()),
            |_, _, _| Ok(()),
        )
        .unwrap();
        assert!(q.codes.is_empty() && q.dequant.is_empty());
        assert_eq!(q.scales.len(), 32);
        // NaN/Inf in two blocks: the error counts them all, like quantizing the tensor whole
        let mut bad = x.clone();
        bad[100] = f32::NAN;
        bad[900] = f32::INFINITY;
        for text in ["nvfp4", "int4:g32", "mxfp4"] {
            let spec = Spec::parse(text).unwrap();
            let e = in_blocks::<QuantError>(
                &shape,
                &spec,
                Keep::Nothing,
                128,
                |r| Ok(bad[r.start * 64..r.end * 64].to_vec()),
                |_, _, _| Ok(()),
            );
            let whole = quantize(&bad, &shape, &spec).unwrap_err();
            assert_eq!(whole, QuantError::NotFinite(2), "{text}");
            assert_eq!(e.unwrap_err(), whole, "{text}");
        }
    }
}
