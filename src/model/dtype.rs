//! Element conversion between a tensor's on-disk dtype and f64.

use crate::formats::{lookup, Format, Overflow};
use safetensors::Dtype;

/// The catalog format that a float dtype stores its elements in.
pub fn float_dtype_format(dtype: Dtype) -> Option<Format> {
    let name = match dtype {
        Dtype::F64 => "fp64",
        Dtype::F32 => "fp32",
        Dtype::F16 => "fp16",
        Dtype::BF16 => "bf16",
        Dtype::F8_E4M3 => "fp8_e4m3",
        Dtype::F8_E5M2 => "fp8_e5m2",
        Dtype::F8_E4M3FNUZ => "fp8_e4m3fnuz",
        Dtype::F8_E5M2FNUZ => "fp8_e5m2fnuz",
        Dtype::F8_E8M0 => "e8m0",
        _ => return None,
    };
    lookup(name).ok().map(|f| f.format)
}

/// True for the dtypes whose elements are numbers we can read (packed F4/F6 are not read element-wise).
pub fn is_float_dtype(dtype: Dtype) -> bool {
    float_dtype_format(dtype).is_some()
}

/// Reads and writes the elements of one float dtype, little-endian.
#[derive(Debug, Clone)]
pub struct ElementCodec {
    pub dtype: Dtype,
    format: Format,
    width: usize,
}

impl ElementCodec {
    pub fn new(dtype: Dtype) -> Option<Self> {
        let format = float_dtype_format(dtype)?;
        Some(ElementCodec {
            dtype,
            width: dtype.bitsize() / 8,
            format,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// The element at byte offset `i · width` as f64 (exact).
    #[inline]
    pub fn read(&self, bytes: &[u8]) -> f64 {
        match self.dtype {
            Dtype::F32 => f32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as f64,
            Dtype::F64 => f64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            Dtype::F16 => half::f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f64(),
            Dtype::BF16 => half::bf16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f64(),
            _ => self.format.decode(bytes[0] as u64),
        }
    }

    /// Store `v` (round to nearest even, IEEE overflow) into `out` (`width` bytes).
    #[inline]
    pub fn write(&self, v: f64, out: &mut [u8]) {
        match self.dtype {
            Dtype::F32 => out.copy_from_slice(&(v as f32).to_le_bytes()),
            Dtype::F64 => out.copy_from_slice(&v.to_le_bytes()),
            Dtype::F16 => out.copy_from_slice(&half::f16::from_f64(v).to_bits().to_le_bytes()),
            Dtype::BF16 => out.copy_from_slice(&half::bf16::from_f64(v).to_bits().to_le_bytes()),
            _ => out[0] = self.format.encode(v, Overflow::NoSaturate).code as u8,
        }
    }
}
