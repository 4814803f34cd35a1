//! `quantscope cast`: every float tensor through a number format and back to its own dtype, element by
//! element, with no scaling. Other tensors are copied unchanged.

use super::{map_file, write_safetensors, ElementCodec, ModelError, TensorEntry};
use crate::formats::{Format, Overflow, Rounding};
use rayon::prelude::*;
use safetensors::SafeTensors;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize)]
pub struct CastTensorReport {
    pub name: String,
    pub dtype: String,
    pub numel: usize,
    /// false for tensors copied unchanged (integer, bool, packed dtypes)
    pub cast: bool,
    pub changed: usize,
    pub saturated: usize,
    pub overflowed: usize,
    pub underflowed: usize,
    pub nan_out: usize,
    pub max_abs_err: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CastReport {
    pub format: String,
    pub saturate: bool,
    pub tensors: Vec<CastTensorReport>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    changed: usize,
    saturated: usize,
    overflowed: usize,
    underflowed: usize,
    nan_out: usize,
    max_abs_err: f64,
}

impl Counts {
    fn add(mut self, o: Counts) -> Counts {
        self.changed += o.changed;
        self.saturated += o.saturated;
        self.overflowed += o.overflowed;
        self.underflowed += o.underflowed;
        self.nan_out += o.nan_out;
        self.max_abs_err = self.max_abs_err.max(o.max_abs_err);
        self
    }
}

/// Cast every float tensor of `input` through `format`, writing `output` (via a temporary file).
pub fn cast_file(
    input: &Path,
    output: &Path,
    format_name: &str,
    format: &Format,
    overflow: Overflow,
) -> Result<CastReport, ModelError> {
    if same_file(input, output) {
        return Err(ModelError::Other(format!(
            "refusing to overwrite the input {}: choose another --out",
            input.display()
        )));
    }
    let map = map_file(input)?;
    let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| ModelError::Invalid {
        path: input.to_path_buf(),
        why: e.to_string(),
    })?;
    let st = SafeTensors::deserialize(&map).map_err(|e| ModelError::Invalid {
        path: input.to_path_buf(),
        why: e.to_string(),
    })?;
    let mut names: Vec<(String, usize)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let start = v.data().as_ptr() as usize - map.as_ptr() as usize;
            (n, start)
        })
        .collect();
    names.sort_by_key(|&(_, start)| start);
    let entries: Vec<TensorEntry> = names
        .iter()
        .map(|(n, _)| {
            let v = st.tensor(n).expect("listed tensor");
            TensorEntry {
                name: n.clone(),
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
            }
        })
        .collect();

    let mut report = CastReport {
        format: format_name.to_string(),
        saturate: overflow == Overflow::Saturate,
        tensors: Vec::new(),
    };
    write_safetensors(output, meta.metadata().as_ref(), &entries, |i| {
        let entry = &entries[i];
        let view = st.tensor(&entry.name).expect("listed tensor");
        let data = view.data();
        let mut rep = CastTensorReport {
            name: entry.name.clone(),
            dtype: format!("{:?}", entry.dtype),
            numel: entry.shape.iter().product(),
            ..Default::default()
        };
        let out = match ElementCodec::new(entry.dtype) {
            None => data.to_vec(),
            Some(codec) => {
                let (bytes, c) = cast_elements(&codec, data, format, overflow);
                rep.cast = true;
                rep.changed = c.changed;
                rep.saturated = c.saturated;
                rep.overflowed = c.overflowed;
                rep.underflowed = c.underflowed;
                rep.nan_out = c.nan_out;
                rep.max_abs_err = c.max_abs_err;
                bytes
            }
        };
        report.tensors.push(rep);
        Ok(out)
    })?;
    Ok(report)
}

fn cast_elements(
    codec: &ElementCodec,
    data: &[u8],
    format: &Format,
    overflow: Overflow,
) -> (Vec<u8>, Counts) {
    let w = codec.width();
    let mut out = vec![0u8; data.len()];
    let one = |src: &[u8], dst: &mut [u8]| -> Counts {
        let x = codec.read(src);
        let e = format.encode(x, overflow);
        codec.write(e.value, dst);
        let y = codec.read(dst);
        let mut c = Counts::default();
        let same_bits = src == &dst[..];
        c.changed = (!same_bits) as usize;
        match e.rounding {
            Rounding::Saturated => c.saturated = 1,
            Rounding::OverflowToInf | Rounding::OverflowToNan => c.overflowed = 1,
            Rounding::Underflow => c.underflowed = 1,
            _ => {}
        }
        c.nan_out = (y.is_nan() && !x.is_nan()) as usize;
        if x.is_finite() && y.is_finite() {
            c.max_abs_err = (x - y).abs();
        }
        c
    };
    let counts = if w <= 2 {
        // ≤ 16-bit dtypes: convert each distinct code once, then look every element up
        let n_codes = 1usize << (8 * w);
        let table: Vec<(Vec<u8>, Counts)> = (0..n_codes)
            .into_par_iter()
            .map(|code| {
                let src = &(code as u16).to_le_bytes()[..w];
                let mut dst = vec![0u8; w];
                let c = one(src, &mut dst);
                (dst, c)
            })
            .collect();
        out.par_chunks_mut(w * 4096)
            .zip(data.par_chunks(w * 4096))
            .map(|(o, d)| {
                let mut acc = Counts::default();
                for (oe, de) in o.chunks_exact_mut(w).zip(d.chunks_exact(w)) {
                    let code = if w == 1 {
                        de[0] as usize
                    } else {
                        u16::from_le_bytes([de[0], de[1]]) as usize
                    };
                    let (bytes, c) = &table[code];
                    oe.copy_from_slice(bytes);
                    acc = acc.add(*c);
                }
                acc
            })
            .reduce(Counts::default, Counts::add)
    } else {
        out.par_chunks_mut(w * 4096)
            .zip(data.par_chunks(w * 4096))
            .map(|(o, d)| {
                let mut acc = Counts::default();
                for (oe, de) in o.chunks_exact_mut(w).zip(d.chunks_exact(w)) {
                    acc = acc.add(one(de, oe));
                }
                acc
            })
            .reduce(Counts::default, Counts::add)
    };
    (out, counts)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
