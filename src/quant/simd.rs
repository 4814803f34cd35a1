//! Speed helpers for the quantizer loops: one function compiled twice (baseline x86-64 and AVX2+FMA,
//! chosen at run time), and large output buffers backed by huge pages.
//!
//! The AVX2 copy runs the same IEEE-754 operations as the baseline one: Rust never contracts `a*b + c`
//! into a fused multiply-add on its own, and every operation used (add, mul, div, min/max, conversions)
//! is exactly rounded, so both copies give bit-identical results; only the width of the vectors differs.

/// Whether the AVX2 copies may run (checked once; the standard library caches the answer).
#[inline]
pub(crate) fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Define `fn name(args) -> R` whose body is compiled for baseline x86-64 and for AVX2+FMA, the faster
/// one picked at run time. The body should only call `#[inline(always)]` helpers (or code the compiler
/// inlines anyway), so that they are compiled with the wider vectors too. No generics.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident : $t:ty),* $(,)?) -> $r:ty $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) -> $r {
            #[inline(always)]
            fn inner($($a: $t),*) -> $r $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($a: $t),*) -> $r {
                    inner($($a),*)
                }
                if $crate::quant::simd::avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { wide($($a),*) };
                }
            }
            inner($($a),*)
        }
    };
}
pub(crate) use multiversion;

/// `max` and `min` as the comparison the hardware instruction performs (`maxps`/`minps`), which the
/// compiler vectorises in one instruction; `f32::max` also handles NaN and costs three. Inputs here
/// are never NaN.
#[inline(always)]
pub(crate) fn fmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

#[inline(always)]
pub(crate) fn fmin(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// A zeroed buffer of `n` values for a large output (dequantized values, codes). The allocator hands
/// a fresh, untouched mapping for sizes this large; on Linux we ask the kernel to back it with 2 MiB
/// transparent huge pages before the first write, which replaces ~25,000 page faults per 100 MB by
/// ~50 (measured: the faults cost ~15 ms per 4096 × 4096 layer). Only advice: if the kernel declines,
/// nothing changes but the speed.
pub(crate) fn zeroed_f32(n: usize) -> Vec<f32> {
    let v = vec![0f32; n];
    advise_huge(v.as_ptr() as usize, n * 4);
    v
}

pub(crate) fn zeroed_i16(n: usize) -> Vec<i16> {
    let v = vec![0i16; n];
    advise_huge(v.as_ptr() as usize, n * 2);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge(addr: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    if len < 4 * HUGE {
        return;
    }
    let start = addr.next_multiple_of(HUGE);
    let end = (addr + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: madvise only changes how the kernel backs pages of this live allocation (the range
        // lies inside it); MADV_HUGEPAGE never changes the contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_addr: usize, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    multiversion! {
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            a.iter().zip(b).map(|(x, y)| x * y).fold(0.0, |s, v| s + v)
        }
    }

    #[test]
    fn both_copies_agree_and_buffers_are_zero() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let plain = a.iter().zip(&a).map(|(x, y)| x * y).fold(0.0, |s, v| s + v);
        assert_eq!(dot(&a, &a).to_bits(), plain.to_bits());
        let z = zeroed_f32(5 << 20);
        assert!(z.iter().all(|&v| v == 0.0));
        assert_eq!(zeroed_i16(3).len(), 3);
        assert_eq!((fmax(1.0, 2.0), fmin(1.0, 2.0)), (2.0, 1.0));
    }
}
