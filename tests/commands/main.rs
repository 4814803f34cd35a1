//! The command-line tool, run as a user runs it (the real binary on real files), in one test binary:
//! one module per command family.

#[path = "../common/mod.rs"]
mod common;

mod calibration;
mod cli;
mod deploy;
mod lab;
mod lm;
mod model;
mod plan;
mod train;
