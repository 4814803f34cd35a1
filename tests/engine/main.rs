//! The engine against independent oracles and its own structure, in one test binary: number formats
//! against ml_dtypes and `half` (formats_golden), quantizers against numpy, scikit-learn and
//! TensorRT-entropy references (quant), and the library's one-way layers (layers).

mod formats_golden;
mod layers;
mod quant;
