//! The door on a Cortex-M4F, under qemu's `mps2-an386` machine: frames linked
//! into the binary (Omniglot characters standing in for people), the core's
//! int8 engine on the committed model blob, the gallery and its open-set rule,
//! the gallery stored in two "flash" slots (files on the host, through
//! semihosting) so that it survives a reset. No allocator.
//!
//! Output (semihosting, one line each): `booted …`, `enrolled …`, `opened …`,
//! `refused …`, `saved …`, `frame instructions …`, `done`. `mcu/run.sh`
//! builds and runs it; the end-to-end test `tests/tests/mcu_qemu.rs` checks
//! its decisions against the same core code on the host.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use fewshot_core::engine::{Arena, Model};
use fewshot_core::{store, Frame, Gallery, OpenSet, PixelFormat};

mod flash;
mod rt;
mod stack;

use rt::{fail, now_ns};

/// A step of the door's script.
pub enum Step {
    /// The enrollment button, then this frame: a new person.
    Enroll {
        /// Frame index.
        frame: usize,
        /// The person's name.
        name: &'static str,
    },
    /// A frame at the door; `person` is who it shows (enrollment order), if
    /// anyone enrolled.
    Probe {
        /// Frame index.
        frame: usize,
        /// Who it shows.
        person: Option<u32>,
    },
}

include!(concat!(env!("OUT_DIR"), "/script.rs"));

/// The committed Omniglot model blob (`fewshot export --mcu`).
static BLOB: &[u8] = include_bytes!("../../models/omniglot-protonet.fsmcu");
/// The frames, `SIDE × SIDE` grey bytes each.
static FRAMES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/frames.bin"));

/// Embedding size of the model.
const DIM: usize = 64;
/// People the gallery holds.
const CAPACITY: usize = 8;
/// Activation bytes and accumulators given to the engine (the blob states
/// what it needs; the boot checks).
const ARENA_BYTES: usize = 32 * 1024;
const ARENA_WORDS: usize = 1024;
/// Values of the engine's input (28 × 28).
const INPUT: usize = 28 * 28;
/// The door's threshold when the blob carries none (squared l2 distance).
const THRESHOLD: f32 = 5.0;
/// Bytes of a stored gallery of `CAPACITY` people.
const STORED: usize = store::encoded_len(CAPACITY, DIM);

#[entry]
fn main() -> ! {
    stack::paint();
    rt::start_clock();

    let model = Model::from_bytes(BLOB).unwrap_or_else(|e| fail(&e));
    let h = *model.header();
    rt::check_fits(&model, ARENA_BYTES, ARENA_WORDS, INPUT, DIM);
    let bytes = cortex_m::singleton!(: [u8; ARENA_BYTES] = [0; ARENA_BYTES])
        .unwrap_or_else(|| fail(&"arena taken"));
    let words = cortex_m::singleton!(: [i32; ARENA_WORDS] = [0; ARENA_WORDS])
        .unwrap_or_else(|| fail(&"arena taken"));
    let mut arena = Arena::new(bytes, words);
    // The pair threshold, and the one for the gallery's size when the blob
    // carries them (as the Linux door picks them).
    let threshold = h.threshold.unwrap_or(THRESHOLD);
    let rule_for = |people: usize| {
        OpenSet::threshold(
            h.gallery_thresholds
                .map_or(threshold, |t| t.for_gallery(people)),
        )
    };

    // The newest complete gallery of the two slots, or an empty one.
    let stored = cortex_m::singleton!(: [[u8; STORED]; 2] = [[0; STORED]; 2])
        .unwrap_or_else(|| fail(&"slots taken"));
    let lens = [
        flash::read(0, &mut stored[0]),
        flash::read(1, &mut stored[1]),
    ];
    let (mut gallery, mut generation, mut slot) =
        match store::newest::<CAPACITY, DIM>(&stored[0][..lens[0]], &stored[1][..lens[1]]) {
            Ok((slot, s)) => (s.gallery, s.generation, slot),
            Err(_) => (Gallery::<CAPACITY, DIM>::new(), 0, 1),
        };
    hprintln!(
        "booted blob={}B arena={}B+{}words threshold={} opens_at={} people={} generation={}",
        BLOB.len(),
        h.arena_bytes,
        h.accumulator_words,
        threshold,
        rule_for(gallery.len()).max_distance,
        gallery.len(),
        generation
    );

    let mut input = [0f32; INPUT];
    let mut embedding = [0f32; DIM];
    let (mut frames, mut min_ns, mut max_ns, mut total_ns) = (0u64, u64::MAX, 0u64, 0u64);
    let mut embed = |frame: usize, embedding: &mut [f32; DIM]| {
        let side = SIDE;
        let pixels = &FRAMES[frame * side * side..(frame + 1) * side * side];
        let frame = Frame::new(side, side, PixelFormat::Gray8, pixels).unwrap_or_else(|e| fail(&e));
        let start = now_ns();
        h.recipe
            .apply(&frame, &mut input)
            .unwrap_or_else(|e| fail(&e));
        model
            .embed(&input, &mut arena, embedding)
            .unwrap_or_else(|e| fail(&e));
        let ns = now_ns() - start;
        frames += 1;
        total_ns += ns;
        min_ns = min_ns.min(ns);
        max_ns = max_ns.max(ns);
    };
    let enrolling = gallery.is_empty();
    for step in STEPS {
        match *step {
            Step::Enroll { frame, name } if enrolling => {
                embed(frame, &mut embedding);
                let id = gallery
                    .enroll(name, &embedding)
                    .unwrap_or_else(|e| fail(&e));
                hprintln!("enrolled id={} name={} file={}", id, name, FILES[frame]);
                // Save to the slot that does not hold the newest gallery.
                generation += 1;
                slot = 1 - slot;
                let n = store::encode(&gallery, generation, &mut stored[slot])
                    .unwrap_or_else(|e| fail(&e));
                flash::write(slot, &stored[slot][..n]);
                hprintln!("saved slot={} generation={} bytes={}", slot, generation, n);
            }
            Step::Enroll { .. } => {}
            Step::Probe { frame, person } => {
                embed(frame, &mut embedding);
                let (id, decision) = gallery
                    .identify(&embedding, h.distance, &rule_for(gallery.len()))
                    .unwrap_or_else(|e| fail(&e));
                let nearest = match decision {
                    fewshot_core::Decision::Known(n) | fewshot_core::Decision::Unknown(Some(n)) => {
                        n.distance
                    }
                    fewshot_core::Decision::Unknown(None) => f32::INFINITY,
                };
                let shows = match person {
                    Some(p) => p as i64,
                    None => -1,
                };
                match id {
                    Some(id) => hprintln!(
                        "opened id={} distance={:08x} ({}) shows={} file={}",
                        id,
                        nearest.to_bits(),
                        nearest,
                        shows,
                        FILES[frame]
                    ),
                    None => hprintln!(
                        "refused distance={:08x} ({}) shows={} file={}",
                        nearest.to_bits(),
                        nearest,
                        shows,
                        FILES[frame]
                    ),
                }
            }
        }
    }
    hprintln!(
        "frame instructions min={} mean={} max={} frames={}",
        min_ns,
        total_ns / frames.max(1),
        max_ns,
        frames
    );
    let (used, bss) = (stack::used(), stack::static_ram());
    hprintln!(
        "ram static={} stack_peak={} total={}",
        bss,
        used,
        bss + used
    );
    hprintln!("done");
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        cortex_m::asm::wfi();
    }
}
