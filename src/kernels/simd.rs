//! Speed helpers for the quantizer loops: one function compiled twice (baseline x86-64 and AVX2+FMA,
//! chosen at run time), and comparisons that vectorise.
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
                if $crate::kernels::simd::avx2() {
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

#[cfg(test)]
mod tests {
    use super::*;

    multiversion! {
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            a.iter().zip(b).map(|(x, y)| x * y).fold(0.0, |s, v| s + v)
        }
    }

    #[test]
    fn both_copies_agree() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let plain = a.iter().zip(&a).map(|(x, y)| x * y).fold(0.0, |s, v| s + v);
        assert_eq!(dot(&a, &a).to_bits(), plain.to_bits());
        assert_eq!((fmax(1.0, 2.0), fmin(1.0, 2.0)), (2.0, 1.0));
    }
}
