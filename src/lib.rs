//! Quantscope's engine: number formats, model files, quantizers and plans, shared by the window and the
//! command-line tool. It never depends on the GUI; build it alone with `--no-default-features`.
//!
//! ```
//! use quantscope::formats::{lookup, Overflow};
//! let fp4 = lookup("fp4_e2m1").unwrap().format;
//! let e = fp4.encode(2.6, Overflow::Saturate);
//! assert_eq!(e.value, 3.0);
//! assert_eq!(e.code, 0b0101);
//! ```

pub mod activations;
pub mod calib;
pub mod formats;
pub mod intmm;
pub mod jobs;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod plan;
pub mod quant;
pub mod stats;

#[cfg(feature = "gui")]
pub mod gui;
