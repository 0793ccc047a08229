//! The face model on the Cortex-M4F: the committed `face-distilled.fsmcu`
//! blob (64×64 grey aligned crops, 192-d) run by the core's engine on a
//! fixed input, with its instructions, flash and RAM. No camera or detector
//! here (the face door's detection and alignment run on the Linux board);
//! this measures what the encoder alone would cost a microcontroller.
#![no_std]
#![no_main]

#[path = "../heap.rs"]
mod heap;
#[path = "../rt.rs"]
mod rt;
#[path = "../stack.rs"]
mod stack;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use fewshot_core::engine::{Arena, Model};
use rt::{fail, now_ns};

static BLOB: &[u8] = include_bytes!("../../../models/face-distilled.fsmcu");
const ARENA_BYTES: usize = 128 * 1024;
const ARENA_WORDS: usize = 4096;
const INPUT: usize = 64 * 64;
const DIM: usize = 192;

#[entry]
fn main() -> ! {
    stack::paint();
    heap::init();
    rt::start_clock();
    let model = Model::from_bytes(BLOB).unwrap_or_else(|e| fail(&e));
    let h = *model.header();
    check_fits(&model, ARENA_BYTES, ARENA_WORDS, INPUT, DIM);
    let bytes = cortex_m::singleton!(: [u8; ARENA_BYTES] = [0; ARENA_BYTES])
        .unwrap_or_else(|| fail(&"arena taken"));
    let words = cortex_m::singleton!(: [i32; ARENA_WORDS] = [0; ARENA_WORDS])
        .unwrap_or_else(|| fail(&"arena taken"));
    let mut arena = Arena::new(bytes, words);
    let input =
        cortex_m::singleton!(: [f32; INPUT] = [0.0; INPUT]).unwrap_or_else(|| fail(&"input taken"));
    // A fixed face-like input: a bright centre fading out, with a ripple
    // (the host's test builds the same values).
    for (i, v) in input.iter_mut().enumerate() {
        let (y, x) = ((i / 64) as f32 - 32.0, (i % 64) as f32 - 32.0);
        *v = 0.8 - (x * x + y * y) / 2048.0 + 0.1 * ((i % 7) as f32 / 7.0);
    }
    let mut embedding = [0f32; DIM];
    let start = now_ns();
    model
        .embed(&input[..], &mut arena, &mut embedding)
        .unwrap_or_else(|e| fail(&e));
    let ns = now_ns() - start;
    let norm: f32 = embedding.iter().map(|v| v * v).sum();
    hprintln!(
        "face blob={}B arena={}B+{}words instructions={} first={:08x} norm2={:08x} ({})",
        BLOB.len(),
        h.arena_bytes,
        h.accumulator_words,
        ns,
        embedding[0].to_bits(),
        norm.to_bits(),
        norm
    );
    rt::finish()
}

/// Fails unless `model` fits this firmware's buffers: its arena within
/// `arena_bytes` and `arena_words`, its input `input` values, its embedding
/// `dim` values.
fn check_fits(
    model: &fewshot_core::engine::Model<'_>,
    arena_bytes: usize,
    arena_words: usize,
    input: usize,
    dim: usize,
) {
    let h = model.header();
    if h.arena_bytes > arena_bytes
        || h.accumulator_words > arena_words
        || model.input_len() != input
        || model.dim() != dim
    {
        rt::fail(&"the blob does not fit this firmware's buffers");
    }
}
