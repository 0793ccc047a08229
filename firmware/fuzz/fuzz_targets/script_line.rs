//! The simulator's script parser on arbitrary lines (see `bodies/script_line.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../bodies/script_line.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
