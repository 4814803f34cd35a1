//! The safetensors header, parsed and checked.
//!
//! The `safetensors` crate parses headers too, but it stops at the first problem with messages that do
//! not name the tensor (a size mismatch says only "invalid info"), lets duplicate names overwrite each
//! other silently, and insists on contiguous data. A user opening a broken file deserves to know which
//! tensor is wrong and how, so the header is read here; the crate's `Dtype` names the element types.
//! Nothing here allocates more than the header itself, whatever the file claims.

use safetensors::Dtype;
use serde::de::{Deserializer, MapAccess, Visitor};
use std::collections::HashMap;
use std::fmt;

/// Headers larger than this are refused (the safetensors crate uses the same limit).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// One tensor's entry, with offsets relative to the start of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Header {
    /// 8 + the JSON length: where the data region starts.
    pub data_start: usize,
    pub tensors: Vec<RawTensor>,
    pub metadata: Option<HashMap<String, String>>,
}

/// JSON object entries in file order, duplicates kept (serde_json's maps keep only the last).
/// Nested objects that must be checked too are read as raw JSON (`Entries<Box<RawValue>>`) and parsed
/// again with `Entries`.
pub(crate) struct Entries<T = serde_json::Value>(pub Vec<(String, T)>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Entries<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<T>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Parse and check the header of a safetensors file held in `bytes` (the whole file, usually mapped).
/// Errors are plain sentences; the caller adds the file name.
pub fn parse(bytes: &[u8]) -> Result<Header, String> {
    let len = bytes.len() as u64;
    if len < 8 {
        return Err(format!(
            "the file is {len} bytes long, too short for the 8-byte header length"
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > len - 8 {
        return Err(format!("the header length ({n} bytes) goes beyond the end of the file ({len} bytes): truncated or not a safetensors file"));
    }
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "the header is {n} bytes, more than the {MAX_HEADER_BYTES}-byte limit"
        ));
    }
    let data_start = 8 + n as usize;
    let text = std::str::from_utf8(&bytes[8..data_start])
        .map_err(|e| format!("the header is not UTF-8 ({e})"))?;
    let entries: Entries = serde_json::from_str(text.trim_end_matches(' '))
        .map_err(|e| format!("the header is not a JSON object ({e})"))?;

    let data_len = bytes.len() - data_start;
    let mut seen = std::collections::HashSet::new();
    let mut header = Header {
        data_start,
        ..Default::default()
    };
    for (name, value) in entries.0 {
        if !seen.insert(name.clone()) {
            return Err(format!("the name '{name}' appears twice in the header"));
        }
        if name == "__metadata__" {
            let map: HashMap<String, String> = serde_json::from_value(value)
                .map_err(|_| "__metadata__ must map strings to strings".to_string())?;
            header.metadata = Some(map);
            continue;
        }
        header
            .tensors
            .push(tensor_entry(&name, value, data_start, data_len)?);
    }

    // overlapping data regions: two tensors would share bytes
    let mut by_start: Vec<&RawTensor> = header.tensors.iter().filter(|t| t.end > t.start).collect();
    by_start.sort_by_key(|t| t.start);
    for w in by_start.windows(2) {
        if w[1].start < w[0].end {
            return Err(format!(
                "tensors '{}' and '{}' overlap in the file",
                w[0].name, w[1].name
            ));
        }
    }
    Ok(header)
}

fn tensor_entry(
    name: &str,
    value: serde_json::Value,
    data_start: usize,
    data_len: usize,
) -> Result<RawTensor, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("tensor '{name}': its entry is not an object"))?;
    let dtype_v = obj
        .get("dtype")
        .ok_or_else(|| format!("tensor '{name}': no dtype"))?;
    let dtype: Dtype = serde_json::from_value(dtype_v.clone())
        .map_err(|_| format!("tensor '{name}': unknown dtype {dtype_v}"))?;
    let shape: Vec<usize> = obj
        .get("shape")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .ok_or_else(|| format!("tensor '{name}': shape must be a list of non-negative integers"))?;
    let offsets: [usize; 2] = obj
        .get("data_offsets")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .ok_or_else(|| {
            format!("tensor '{name}': data_offsets must be two non-negative integers")
        })?;
    let [s, e] = offsets;
    if e < s {
        return Err(format!(
            "tensor '{name}': data_offsets [{s}, {e}] end before they start"
        ));
    }
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let nbytes = numel
        .and_then(|n| n.checked_mul(dtype.bitsize()))
        .map(|bits| bits.div_ceil(8))
        .ok_or_else(|| format!("tensor '{name}': shape {shape:?} is too large"))?;
    if e - s != nbytes {
        return Err(format!(
            "tensor '{name}': {} bytes in the file, but {dtype:?} × {shape:?} needs {nbytes}",
            e - s
        ));
    }
    if e > data_len {
        return Err(format!(
            "tensor '{name}': data_offsets [{s}, {e}] go beyond the data ({data_len} bytes): the file is truncated"
        ));
    }
    Ok(RawTensor {
        name: name.to_string(),
        dtype,
        shape,
        start: data_start + s,
        end: data_start + e,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A safetensors file from a header written as JSON text and `data_len` zero bytes of data.
    pub fn file_with_header(json: &str, data_len: usize) -> Vec<u8> {
        let mut v = (json.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v.resize(v.len() + data_len, 0);
        v
    }

    #[test]
    fn a_good_header() {
        let f = file_with_header(
            r#"{"__metadata__":{"a":"b"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"s":{"dtype":"BF16","shape":[],"data_offsets":[24,26]},"z":{"dtype":"F16","shape":[0,4],"data_offsets":[26,26]}}"#,
            26,
        );
        let h = parse(&f).unwrap();
        assert_eq!(h.tensors.len(), 3);
        assert_eq!(h.tensors[0].shape, vec![2, 3]);
        assert_eq!(h.tensors[1].end - h.tensors[1].start, 2); // a scalar
        assert_eq!(h.metadata.unwrap()["a"], "b");
    }

    #[test]
    fn broken_headers_say_what_is_wrong() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![1, 2, 3], "too short"),
            (file_with_header("{}", 0)[..9].to_vec(), "beyond the end"),
            (
                {
                    let mut f = file_with_header("{}", 0);
                    f[0] = 200;
                    f
                },
                "beyond the end",
            ),
            (file_with_header("{\"a\": [1,", 0), "not a JSON object"),
            (
                {
                    let mut f = file_with_header("{\"\u{e9}\":1}", 0);
                    f[10] = 0xff;
                    f
                },
                "not UTF-8",
            ),
            (
                file_with_header(
                    r#"{"w":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}}"#,
                    4,
                ),
                "unknown dtype",
            ),
            (
                file_with_header(
                    r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                    4,
                ),
                "needs 8",
            ),
            (
                file_with_header(
                    r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                    2,
                ),
                "truncated",
            ),
            (
                file_with_header(
                    r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
                    4,
                ),
                "end before",
            ),
            (
                file_with_header(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    12,
                ),
                "overlap",
            ),
            (
                file_with_header(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    8,
                ),
                "appears twice",
            ),
            (
                file_with_header(
                    r#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,4]}}"#,
                    4,
                ),
                "too large",
            ),
            (
                file_with_header(
                    r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                    4,
                ),
                "shape must be",
            ),
            (
                file_with_header(r#"{"__metadata__":{"a":1}}"#, 0),
                "__metadata__",
            ),
            (file_with_header(r#"[1,2]"#, 0), "not a JSON object"),
        ];
        for (bytes, want) in cases {
            let e = parse(&bytes).unwrap_err();
            assert!(e.contains(want), "expected '{want}' in: {e}");
        }
    }
}
