//! The door application. For now: loading an exported encoder and running it
//! with tract, with the preprocessing of the shared core.
#![warn(missing_docs)]

pub mod encoder;

pub use fewshot_core as core;
