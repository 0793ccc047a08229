//! The door application (see the firmware issue); for now only the core it builds on.
pub use fewshot_core as core;
