//! Rounding helpers shared by the quantizer loops.

/// Round to nearest, ties to even, for |v| < 2^22: adding and subtracting 1.5·2^23 leaves the integer
/// part, rounded by the FPU's default mode (nearest-even). Baseline x86-64 has no rounding instruction
/// (`roundss` is SSE4.1), so this keeps the loop vectorisable; callers clamp first.
#[inline(always)]
pub fn rne(v: f32) -> f32 {
    (v + MAGIC) - MAGIC
}

/// 1.5 · 2^23: for |v| < 2^22, `v + MAGIC` is `MAGIC + round_ties_even(v)` exactly, and its bit pattern
/// is `MAGIC_BITS + round_ties_even(v)`, so the integer code can be read from the bits.
pub const MAGIC: f32 = 12_582_912.0;
pub const MAGIC_BITS: i32 = 0x4B40_0000;
