//! Arbitrary bytes as a stored gallery (see `bodies/gallery_decode.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../bodies/gallery_decode.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
