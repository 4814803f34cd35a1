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
            Dtype::F16 => out.copy_from_slice(
                &half::f16::from_f32(f32_round_to_odd(v))
                    .to_bits()
                    .to_le_bytes(),
            ),
            Dtype::BF16 => out.copy_from_slice(
                &half::bf16::from_f32(f32_round_to_odd(v))
                    .to_bits()
                    .to_le_bytes(),
            ),
            _ => out[0] = self.format.encode(v, Overflow::NoSaturate).code as u8,
        }
    }
}

/// `v` as an f32 rounded to odd: exact when `v` is an f32, otherwise the f32 toward zero with its last
/// bit set, so that rounding it once more to a 16-bit float gives the correctly rounded result. (half's
/// `from_f64` drops the low 32 bits of the f64 before rounding, and misrounds values just above a tie.)
pub fn f32_round_to_odd(v: f64) -> f32 {
    let f = v as f32;
    if !f.is_finite() || f as f64 == v {
        return f;
    }
    let toward_zero = if (f as f64).abs() > v.abs() {
        f32::from_bits(f.to_bits() - 1)
    } else {
        f
    };
    f32::from_bits(toward_zero.to_bits() | 1)
}

#[cfg(test)]
mod codec_tests {
    use super::*;

    #[test]
    fn sixteen_bit_writes_round_like_the_exact_encoder() {
        // f32 values just above and below ties, f64 values between f32s, subnormals, overflow
        let mut vals: Vec<f64> = Vec::new();
        for k in 0..4000u32 {
            let tie = f32::from_bits(0x3f80_8000 + (k << 13)) as f64;
            vals.extend([
                tie,
                f32::from_bits(0x2fee_8003 + k) as f64,
                tie * (1.0 + 1e-12),
                tie * (1.0 - 1e-12),
            ]);
            vals.push(f64::from_bits(
                0x3e20_0000_0000_0001 + (k as u64) * 0x0000_1000_0000_0003,
            ));
        }
        vals.extend([
            0.0, -0.0, 1e-40, 1e-45, 6e-8, 3.0e38, 3.5e38, -7e4, 65504.0, 65519.99, 65520.0,
        ]);
        for dtype in [Dtype::BF16, Dtype::F16] {
            let codec = ElementCodec::new(dtype).unwrap();
            let exact = float_dtype_format(dtype).unwrap();
            for &v in &vals {
                let mut b = [0u8; 2];
                codec.write(v, &mut b);
                let want = exact.encode(v, Overflow::NoSaturate).code as u16;
                assert_eq!(u16::from_le_bytes(b), want, "{dtype:?} {v:e}");
            }
        }
    }
}
