//! A model's metadata map, checked by `ModelMeta::from_metadata` (see
//! `bodies/model_metadata.rs` for the input format).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../bodies/model_metadata.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
