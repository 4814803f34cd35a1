//! Opening a model: one safetensors file, a sharded checkpoint (its `*.safetensors.index.json` or the
//! folder holding it), a Hugging Face model folder, or bytes in memory. Opening maps the files and reads
//! only their headers; tensor data is read on demand.

use super::header::{self, Entries};
use super::{is_float_dtype, map_file, ElementCodec, ModelError};
use rayon::prelude::*;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The bytes of one file: a read-only map, or bytes held in memory (the bundled sample model).
enum Backing {
    Map(memmap2::Mmap),
    Bytes(Arc<[u8]>),
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Bytes(b) => b,
        }
    }
}

pub struct Shard {
    pub path: PathBuf,
    bytes: Backing,
    pub metadata: Option<HashMap<String, String>>,
    /// The header's tensors, moved into the model's list when the model is assembled.
    pending: Vec<header::RawTensor>,
}

impl Shard {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A tensor as a matrix: rows along dimension 0 and the rest flattened into each row (a tensor of fewer
/// than two dimensions is one row). Weights are laid out this way: output channels are the rows.
pub fn rows_and_cols(shape: &[usize]) -> (usize, usize) {
    let n: usize = shape.iter().product();
    match shape {
        [r, _, ..] if *r > 0 => (*r, n / r),
        _ => (1, n),
    }
}

/// One tensor of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub shard: usize,
    /// byte range within the shard file
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn nbytes(&self) -> usize {
        self.end - self.start
    }

    pub fn is_float(&self) -> bool {
        is_float_dtype(self.dtype)
    }

    /// Weights with at least two dimensions in a float dtype are quantized by default.
    pub fn quantizable(&self) -> bool {
        self.is_float() && self.shape.len() >= 2 && self.numel() > 0
    }

    /// Output channels (dimension 0) and the elements per channel (the rest, flattened).
    pub fn channels(&self) -> (usize, usize) {
        if self.numel() == 0 {
            return (1, 0); // a zero-size tensor has no channels worth listing, however long dimension 0 is
        }
        match self.shape.split_first() {
            Some((&o, rest)) if !rest.is_empty() && o > 0 => (o, rest.iter().product()),
            _ => (1, self.numel()),
        }
    }
}

/// What `config.json` says, where a Hugging Face folder has one.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    pub architecture: Option<String>,
    pub model_type: Option<String>,
    pub hidden_size: Option<u64>,
    pub num_hidden_layers: Option<u64>,
    pub num_attention_heads: Option<u64>,
    pub intermediate_size: Option<u64>,
    pub vocab_size: Option<u64>,
    pub torch_dtype: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    File,
    Sharded,
    Folder,
    Memory,
}

pub struct Model {
    /// What the user opened.
    pub source: PathBuf,
    pub kind: SourceKind,
    pub config: Option<ModelConfig>,
    /// A `config.json` that exists but could not be read: not fatal, shown to the user.
    pub config_warning: Option<String>,
    pub shards: Vec<Shard>,
    /// In file order (shard, then offset).
    pub tensors: Vec<TensorInfo>,
}

impl Model {
    /// Open a `.safetensors` file, a `*.safetensors.index.json`, or a folder.
    pub fn open(path: &Path) -> Result<Model, ModelError> {
        let meta = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?;
        if meta.is_dir() {
            return Self::open_folder(path);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.ends_with(".index.json") {
            let mut m = Self::open_index(path)?;
            m.kind = SourceKind::Sharded;
            m.load_config(path.parent().unwrap_or(Path::new(".")));
            return Ok(m);
        }
        let shard = Shard::open(path)?;
        let mut m = Self::from_shards(path, SourceKind::File, vec![shard], None)?;
        if let Some(dir) = path.parent() {
            if dir.join("config.json").is_file() {
                m.load_config(dir);
            }
        }
        Ok(m)
    }

    /// A model held in memory (the bundled sample model; also what the fuzz target feeds).
    pub fn from_bytes(name: &str, bytes: Arc<[u8]>) -> Result<Model, ModelError> {
        let path = PathBuf::from(name);
        let shard = Shard::from_backing(&path, Backing::Bytes(bytes))?;
        Self::from_shards(&path, SourceKind::Memory, vec![shard], None)
    }

    fn open_folder(dir: &Path) -> Result<Model, ModelError> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let mut m = if index.is_file() {
            let mut m = Self::open_index(&index)?;
            m.kind = SourceKind::Sharded;
            m
        } else if single.is_file() {
            Self::from_shards(dir, SourceKind::Folder, vec![Shard::open(&single)?], None)?
        } else {
            // any other index, else every .safetensors file in the folder
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| ModelError::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            if let Some(idx) = files
                .iter()
                .find(|p| p.to_string_lossy().ends_with(".safetensors.index.json"))
            {
                let mut m = Self::open_index(idx)?;
                m.kind = SourceKind::Sharded;
                m
            } else {
                let st: Vec<&PathBuf> = files
                    .iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                    .collect();
                if st.is_empty() {
                    return Err(ModelError::Other(format!(
                        "{}: no .safetensors file and no model.safetensors.index.json in this folder",
                        dir.display()
                    )));
                }
                let shards = st
                    .into_iter()
                    .map(|p| Shard::open(p))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::from_shards(dir, SourceKind::Folder, shards, None)?
            }
        };
        m.source = dir.to_path_buf();
        m.load_config(dir);
        Ok(m)
    }

    fn open_index(index: &Path) -> Result<Model, ModelError> {
        let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
        let invalid = |why: String| ModelError::Invalid {
            path: index.to_path_buf(),
            why,
        };
        let top: Entries<Box<serde_json::value::RawValue>> =
            serde_json::from_str(&text).map_err(|e| invalid(format!("not a JSON object ({e})")))?;
        let weight_map = top
            .0
            .into_iter()
            .find(|(k, _)| k == "weight_map")
            .map(|(_, v)| v)
            .ok_or_else(|| invalid("no \"weight_map\"".into()))?;
        let entries: Entries = serde_json::from_str(weight_map.get())
            .map_err(|_| invalid("\"weight_map\" must be an object".into()))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut expected: HashMap<String, String> = HashMap::new();
        let mut files: Vec<String> = Vec::new();
        for (tensor, file) in entries.0 {
            let file = file
                .as_str()
                .ok_or_else(|| {
                    invalid(format!("tensor '{tensor}' maps to {file}, not a file name"))
                })?
                .to_string();
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(invalid(format!("shard '{file}' is not a plain file name")));
            }
            if expected.insert(tensor.clone(), file.clone()).is_some() {
                return Err(invalid(format!("tensor '{tensor}' is listed twice")));
            }
            if !files.contains(&file) {
                files.push(file);
            }
        }
        files.sort();
        let mut shards = Vec::with_capacity(files.len());
        for f in &files {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(invalid(format!("the shard '{f}' it names is missing")));
            }
            shards.push(Shard::open(&p)?);
        }
        Self::from_shards(index, SourceKind::Sharded, shards, Some((index, expected)))
    }

    fn from_shards(
        source: &Path,
        kind: SourceKind,
        mut shards: Vec<Shard>,
        index: Option<(&Path, HashMap<String, String>)>,
    ) -> Result<Model, ModelError> {
        let mut tensors = Vec::new();
        let mut owner: HashMap<String, usize> = HashMap::new();
        for si in 0..shards.len() {
            let mut raw = std::mem::take(&mut shards[si].pending);
            raw.sort_by_key(|t| t.start);
            for t in raw {
                if let Some(&other) = owner.get(&t.name) {
                    return Err(ModelError::Other(format!(
                        "tensor '{}' is in both {} and {}",
                        t.name,
                        shards[other].path.display(),
                        shards[si].path.display()
                    )));
                }
                owner.insert(t.name.clone(), si);
                tensors.push(TensorInfo {
                    name: t.name,
                    dtype: t.dtype,
                    shape: t.shape,
                    shard: si,
                    start: t.start,
                    end: t.end,
                });
            }
        }
        if let Some((index, expected)) = index {
            for (name, file) in &expected {
                match owner.get(name) {
                    None => {
                        return Err(ModelError::Invalid {
                            path: index.to_path_buf(),
                            why: format!(
                                "tensor '{name}' is listed in the index but is not in '{file}'"
                            ),
                        })
                    }
                    Some(&si) if !shards[si].path.ends_with(file) => {
                        return Err(ModelError::Invalid {
                            path: index.to_path_buf(),
                            why: format!(
                                "tensor '{name}' is listed in '{file}' but found in {}",
                                shards[si].path.display()
                            ),
                        })
                    }
                    _ => {}
                }
            }
        }
        Ok(Model {
            source: source.to_path_buf(),
            kind,
            config: None,
            config_warning: None,
            shards,
            tensors,
        })
    }

    fn load_config(&mut self, dir: &Path) {
        let p = dir.join("config.json");
        if !p.is_file() {
            return;
        }
        let parsed = std::fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(v) => {
                let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
                let n = |k: &str| v.get(k).and_then(|x| x.as_u64());
                self.config = Some(ModelConfig {
                    architecture: v
                        .get("architectures")
                        .and_then(|a| a.get(0))
                        .and_then(|a| a.as_str())
                        .map(String::from),
                    model_type: s("model_type"),
                    hidden_size: n("hidden_size")
                        .or_else(|| n("d_model"))
                        .or_else(|| n("n_embd")),
                    num_hidden_layers: n("num_hidden_layers").or_else(|| n("n_layer")),
                    num_attention_heads: n("num_attention_heads").or_else(|| n("n_head")),
                    intermediate_size: n("intermediate_size"),
                    vocab_size: n("vocab_size"),
                    torch_dtype: s("torch_dtype").or_else(|| s("dtype")),
                });
            }
            Err(e) => self.config_warning = Some(format!("{}: could not read ({e})", p.display())),
        }
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// The raw little-endian bytes of a tensor.
    pub fn bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.shards[t.shard].bytes[t.start..t.end]
    }

    /// Tell the OS that a tensor's bytes are no longer needed by this process, so a scan over a large
    /// model does not keep every mapped page resident: memory stays near one tensor, not the model.
    /// The pages stay in the page cache and are read again if the tensor is used again.
    pub fn release(&self, t: &TensorInfo) {
        self.release_span(t.shard, t.start, t.end);
    }

    /// [`Model::release`] for the bytes `start..end` of a shard (whole pages inside them).
    fn release_span(&self, shard: usize, start: usize, end: usize) {
        #[cfg(unix)]
        if let Backing::Map(map) = &self.shards[shard].bytes {
            const PAGE: usize = 4096;
            let start = start.div_ceil(PAGE) * PAGE;
            let end = end / PAGE * PAGE;
            if end > start {
                // SAFETY: the map is a read-only, private file mapping that nothing writes to; after
                // DONTNEED a later read refills the pages from the file, so every view stays valid.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = (shard, start, end);
    }

    /// Rows `rows` of a tensor's dimension 0 as f32 (a tensor of fewer than two dimensions is one row),
    /// then their pages released: the reader of [`crate::quant::rows::quantize_by_rows`].
    pub fn take_rows_f32(
        &self,
        t: &TensorInfo,
        rows: std::ops::Range<usize>,
    ) -> Result<Vec<f32>, ModelError> {
        let (_, per_row) = rows_and_cols(&t.shape);
        let width = t.dtype.bitsize() / 8;
        let (start, end) = (
            t.start + rows.start * per_row * width,
            t.start + rows.end * per_row * width,
        );
        if end > t.end || rows.start > rows.end {
            return Err(ModelError::Other(format!(
                "tensor '{}': rows {rows:?} are outside its shape {:?}",
                t.name, t.shape
            )));
        }
        let x = decode_f32(t.dtype, &self.shards[t.shard].bytes[start..end])
            .map_err(|why| ModelError::Other(format!("tensor '{}': {why}", t.name)))?;
        self.release_span(t.shard, start, end);
        Ok(x)
    }

    /// A fingerprint of the model's structure: SHA-256 of every tensor's name, dtype and shape, sorted by
    /// name (so it is the same for one file and for its shards). Plans use it to refuse another model.
    pub fn header_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut names: Vec<&TensorInfo> = self.tensors.iter().collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        let mut h = Sha256::new();
        for t in names {
            h.update(format!("{}\t{:?}\t{:?}\n", t.name, t.dtype, t.shape).as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Bytes on disk over all shards.
    pub fn file_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.len() as u64).sum()
    }

    pub fn parameters(&self) -> u64 {
        self.tensors.iter().map(|t| t.numel() as u64).sum()
    }

    /// Metadata of the first shard (sample models keep their description there).
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.shards.first().and_then(|s| s.metadata.as_ref())
    }

    /// A tensor's elements as f32, converted in parallel (see [`decode_f32`]).
    pub fn read_f32(&self, t: &TensorInfo) -> Result<Vec<f32>, ModelError> {
        decode_f32(t.dtype, self.bytes(t))
            .map_err(|why| ModelError::Other(format!("tensor '{}': {why}", t.name)))
    }
}

/// Little-endian elements of `dtype` as f32, converted in parallel. Floats of 16 bits or fewer and all
/// 8-bit dtypes convert exactly; F64 rounds to the nearest f32; integers wider than 24 bits may round.
pub fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, String> {
    let n = bytes.len() / (dtype.bitsize() / 8).max(1);
    // every element is written below
    let mut out = crate::kernels::buffers::f32_overwritten(n);
    const CHUNK: usize = 1 << 16;
    macro_rules! ints {
        ($ty:ty, $w:expr) => {
            out.par_chunks_mut(CHUNK)
                .zip(bytes.par_chunks(CHUNK * $w))
                .for_each(|(o, b)| {
                    for (x, c) in o.iter_mut().zip(b.chunks_exact($w)) {
                        *x = <$ty>::from_le_bytes(c.try_into().expect("width")) as f32;
                    }
                })
        };
    }
    match dtype {
        Dtype::F32 => ints!(f32, 4),
        Dtype::F64 => ints!(f64, 8),
        Dtype::F16 => out
            .par_chunks_mut(CHUNK)
            .zip(bytes.par_chunks(CHUNK * 2))
            .for_each(|(o, b)| {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *x = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }),
        Dtype::BF16 => out
            .par_chunks_mut(CHUNK)
            .zip(bytes.par_chunks(CHUNK * 2))
            .for_each(|(o, b)| {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *x = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                }
            }),
        Dtype::I64 => ints!(i64, 8),
        Dtype::I32 => ints!(i32, 4),
        Dtype::I16 => ints!(i16, 2),
        Dtype::U16 => ints!(u16, 2),
        Dtype::U32 => ints!(u32, 4),
        Dtype::U64 => ints!(u64, 8),
        Dtype::I8 => ints!(i8, 1),
        Dtype::U8 => ints!(u8, 1),
        Dtype::BOOL => ints!(u8, 1),
        other => match ElementCodec::new(other) {
            // the 8-bit float dtypes: decode every code once, then look up
            Some(codec) if codec.width() == 1 => {
                let table: Vec<f32> = (0..256u32).map(|c| codec.read(&[c as u8]) as f32).collect();
                out.par_chunks_mut(CHUNK)
                    .zip(bytes.par_chunks(CHUNK))
                    .for_each(|(o, b)| {
                        for (x, &c) in o.iter_mut().zip(b) {
                            *x = table[c as usize];
                        }
                    })
            }
            _ => return Err(format!("reading {other:?} elements is not supported")),
        },
    }
    Ok(out)
}

impl Shard {
    fn open(path: &Path) -> Result<Shard, ModelError> {
        let map = map_file(path)?;
        Self::from_backing(path, Backing::Map(map))
    }

    fn from_backing(path: &Path, bytes: Backing) -> Result<Shard, ModelError> {
        let h = header::parse(&bytes).map_err(|why| ModelError::Invalid {
            path: path.to_path_buf(),
            why,
        })?;
        Ok(Shard {
            path: path.to_path_buf(),
            bytes,
            metadata: h.metadata,
            pending: h.tensors,
        })
    }
}
