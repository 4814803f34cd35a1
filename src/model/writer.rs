//! A streaming safetensors writer.
//!
//! The `safetensors` crate serialises from views that must all be in memory at once; a model-sized
//! output would need model-sized memory. The format is simple (an 8-byte header length, a JSON header
//! of names, dtypes, shapes and offsets, then the bytes), and every output size is known before any
//! data is produced, so this writer emits one tensor at a time. It writes to a temporary file beside
//! the destination and renames it at the end; on any error the temporary file is removed.

use super::ModelError;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorEntry {
    pub fn nbytes(&self) -> usize {
        let n: usize = self.shape.iter().product();
        (n * self.dtype.bitsize()).div_ceil(8)
    }
}

/// Write `tensors` in order; `produce(i)` returns the bytes of tensor `i` (exactly `nbytes()` long).
pub fn write_safetensors(
    path: &Path,
    metadata: Option<&std::collections::HashMap<String, String>>,
    tensors: &[TensorEntry],
    mut produce: impl FnMut(usize) -> Result<Vec<u8>, ModelError>,
) -> Result<(), ModelError> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for t in tensors {
        let n = t.nbytes();
        let mut entry = BTreeMap::new();
        entry.insert("dtype", serde_json::Value::String(format!("{:?}", t.dtype)));
        entry.insert("shape", serde_json::json!(t.shape));
        entry.insert("data_offsets", serde_json::json!([offset, offset + n]));
        if header
            .insert(t.name.clone(), serde_json::json!(entry))
            .is_some()
        {
            return Err(ModelError::Other(format!(
                "tensor name '{}' appears twice",
                t.name
            )));
        }
        offset += n;
    }
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), serde_json::json!(m));
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| ModelError::Other(e.to_string()))?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }

    let tmp = tmp_beside(path);
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let io = |e| ModelError::io(&tmp, e);
        w.write_all(&(json.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(&json).map_err(io)?;
        for (i, t) in tensors.iter().enumerate() {
            let bytes = produce(i)?;
            if bytes.len() != t.nbytes() {
                return Err(ModelError::Other(format!(
                    "internal: tensor '{}' produced {} bytes, expected {}",
                    t.name,
                    bytes.len(),
                    t.nbytes()
                )));
            }
            w.write_all(&bytes).map_err(io)?;
        }
        let file = w
            .into_inner()
            .map_err(|e| ModelError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A temporary name beside `path` (same folder, so the final rename is atomic).
/// A number as a safetensors entry stores it: little-endian bytes.
pub trait LeBytes: Copy + Send + Sync {
    fn le(self) -> impl IntoIterator<Item = u8>;
}

macro_rules! le_bytes_of {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            fn le(self) -> impl IntoIterator<Item = u8> {
                self.to_le_bytes()
            }
        }
    )*};
}
le_bytes_of!(i16, i32, i64, f32);

/// The little-endian bytes of `v`, converted on all cores (packed codes run to gigabytes).
pub fn le_bytes<T: LeBytes>(v: &[T]) -> Vec<u8> {
    use rayon::prelude::*;
    v.par_iter().flat_map_iter(|&x| x.le()).collect()
}

pub fn tmp_beside(path: &Path) -> std::path::PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{file_name}.tmp-{}", std::process::id()))
}

/// Write `bytes` to `path` whole or not at all: to a temporary file beside it, then renamed
/// (docs/DESIGN.md §6); the temporary file is removed if anything fails.
pub fn write_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    let tmp = tmp_beside(path);
    let r = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}
