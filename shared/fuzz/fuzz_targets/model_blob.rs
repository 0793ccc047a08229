//! Arbitrary bytes as an engine model blob (see `bodies/model_blob.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../bodies/model_blob.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
