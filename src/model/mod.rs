//! Reading and writing safetensors files, element conversion between dtypes and f64, and the
//! whole-file cast through a number format.

mod cast;
mod dtype;
pub mod header;
mod layers;
mod source;
mod writer;

pub use cast::{cast_file, CastReport};
pub use dtype::{float_dtype_format, is_float_dtype, ElementCodec};
pub use layers::{group_layers, layer_patterns, natural_cmp, Layer, LayerPattern, Role};
pub use source::{decode_f32, rows_and_cols, Model, ModelConfig, SourceKind, TensorInfo};
pub use writer::{le_bytes, tmp_beside, write_atomic, write_safetensors, TensorEntry};

use std::path::{Path, PathBuf};

/// Errors from reading or writing model files.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: not a valid safetensors file: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("{0}")]
    Other(String),
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_path_buf(),
            err: source,
        }
    }
}

/// A read-only memory map of a file. The source is never written.
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap, ModelError> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the map is read-only; a file changed underneath by another process gives wrong numbers, not
    // memory unsafety in our code paths, which only read bytes and never hold references across calls.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))
}
