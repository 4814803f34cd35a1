//! The lowest layer of the engine: loops every numeric module shares. Matrix products
//! ([`gemm`]), round-to-nearest-even on the FPU ([`round`]), functions compiled for baseline x86-64
//! and AVX2 ([`simd`]), a pool of large buffers for reuse ([`buffers`]), and the hook through which the owner of a thread asks long kernels to step
//! aside ([`pause`]). Nothing here knows about formats, models, plans or the window.

pub mod buffers;
pub mod gemm;
pub mod pause;
pub mod round;
pub(crate) mod simd;
