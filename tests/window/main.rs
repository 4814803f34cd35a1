//! The window, driven through egui_kittest as a person would (click, type, read what is shown), in one
//! test binary: one module per view.
#![cfg(feature = "gui")]

#[path = "../common/mod.rs"]
mod common;

mod activations;
mod app;
mod labs;
mod lm;
mod mixed;
mod train;
