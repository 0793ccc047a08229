//! The host side of the few-shot toolkit: data sets, episode sampling,
//! evaluation, and (later) training and export.
#![warn(missing_docs)]

pub mod augment;
pub mod data;
pub mod distill;
pub mod embed;
pub mod episode;
pub mod eval;
pub mod export;
pub mod mcu_model;
pub mod nn;
pub mod onnx_model;
pub mod plot;
pub mod stats;
pub mod train;
