//! The door on a Cortex-M4F, under qemu's `mps2-an386` machine: the door loop
//! of `fewshot-door` (the one the Linux door runs) with the core's int8
//! engine as its encoder, on the committed model blob; frames linked into the
//! binary (Omniglot characters standing in for people), a scripted button,
//! simulated relay and LED pins, the gallery in two "flash" slots (files on
//! the host, through semihosting) so that it survives a reset.
//!
//! Output (semihosting, one line each): the door's events (`booted …`,
//! `name_set …`, `enroll_started …`, `enrolled …`, `opened …`, `refused …`,
//! …), `frame …` before each frame the camera delivers, `saved …` for each
//! slot written, then `relay …`, `frame instructions …`, `ram …`, `done`.
//! `mcu/run.sh` builds and runs it; the end-to-end test
//! `tests/tests/mcu_qemu.rs` checks its decisions against the same core code
//! on the host.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use fewshot_core::{Frame, PixelFormat};
use fewshot_door::admin::{check_name, Admin};
use fewshot_door::camera::OwnedFrame;
use fewshot_door::door::{Config, Encoder};
use fewshot_door::engine::EngineEncoder;
use fewshot_door::events::{Event, EventSink};
use fewshot_door::sim::{SimDoor, SimHardware};
use fewshot_door::storage::TwoSlots;

mod flash;
mod heap;
mod rt;
mod stack;

use rt::{fail, now_ns};

/// A step of the door's script.
pub enum Step {
    /// Name the next enrollment, press the button, show these frames: a new
    /// person.
    Enroll {
        /// Frame indices: the door's two enrollment shots.
        frames: [usize; 2],
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
/// The door's threshold when the blob carries none (squared l2 distance).
const THRESHOLD: f32 = 5.0;
/// Time between probe frames: longer than the door's cool-down, so that each
/// probe is decided (the cool-down itself is the host tests' business).
const PROBE_GAP_MS: u64 = 31_000;

/// The engine, with the instructions each frame took (preprocessing and
/// encoder) counted.
struct Timed {
    engine: EngineEncoder<'static>,
    frames: u64,
    total_ns: u64,
    min_ns: u64,
    max_ns: u64,
}

impl Encoder for Timed {
    type Error = <EngineEncoder<'static> as Encoder>::Error;

    fn dim(&self) -> usize {
        self.engine.dim()
    }

    fn embed_frame(&mut self, frame: &Frame<'_>) -> Result<Vec<f32>, Self::Error> {
        let start = now_ns();
        let out = self.engine.embed_frame(frame);
        let ns = now_ns() - start;
        self.frames += 1;
        self.total_ns += ns;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        out
    }
}

/// The door's events on the semihosting console; distances also as their
/// f32 bits, which the host's test compares exactly.
struct Console;

impl EventSink for Console {
    fn emit(&mut self, at_ms: u64, event: &Event) {
        match event {
            Event::Booted {
                identities,
                threshold,
                gallery_threshold,
                ..
            } => hprintln!(
                "booted t_ms={} blob={}B people={} threshold={} opens_at={:?}",
                at_ms,
                BLOB.len(),
                identities,
                threshold,
                gallery_threshold
            ),
            Event::Enrolled { id, name, shots } => {
                hprintln!("enrolled id={} name={} shots={}", id, name, shots)
            }
            Event::Opened { id, distance, .. } => hprintln!(
                "opened id={} distance={:08x} ({})",
                id,
                distance.to_bits(),
                distance
            ),
            Event::Refused { distance, .. } => {
                let d = distance.unwrap_or(f32::INFINITY);
                hprintln!("refused distance={:08x} ({})", d.to_bits(), d)
            }
            other => hprintln!("{} t_ms={}: {}", other.name(), at_ms, other.describe()),
        }
    }
}

type McuDoor = SimDoor<DIM, Timed, TwoSlots<flash::Semihosted, DIM>, Console>;

/// The script's hands on the simulated hardware: the button, the camera and
/// time.
struct Hands(SimHardware);

impl Hands {
    fn poll(&self, door: &mut McuDoor) {
        door.poll().unwrap_or_else(|e| fail(&e));
        self.0.clock.advance_ms(10);
    }

    fn press(&self, door: &mut McuDoor, ms: u64) {
        self.0.button.set(true);
        for _ in 0..ms / 10 {
            self.poll(door);
        }
        self.0.button.set(false);
        for _ in 0..5 {
            self.poll(door);
        }
    }

    fn show(&self, door: &mut McuDoor, frame: usize, role: &str, person: i64) {
        hprintln!("frame {} person={} file={}", role, person, FILES[frame]);
        self.0.camera.push(OwnedFrame {
            width: SIDE,
            height: SIDE,
            format: PixelFormat::Gray8,
            pixels: FRAMES[frame * SIDE * SIDE..(frame + 1) * SIDE * SIDE].to_vec(),
        });
        self.poll(door);
    }
}

#[entry]
fn main() -> ! {
    stack::paint();
    heap::init();
    rt::start_clock();

    let engine = EngineEncoder::new(BLOB).unwrap_or_else(|e| fail(&e));
    let h = *engine.model().header();
    let mut config = Config::new(h.distance, h.threshold.unwrap_or(THRESHOLD));
    config.gallery_thresholds = h.gallery_thresholds;
    config.capacity = CAPACITY;
    let hands = Hands(SimHardware::new());
    let timed = Timed {
        engine,
        frames: 0,
        total_ns: 0,
        min_ns: u64::MAX,
        max_ns: 0,
    };
    let storage = TwoSlots::new(flash::Semihosted, CAPACITY);
    let hw = &hands.0;
    let mut door = McuDoor::boot(timed, hw.io(), hw.camera.clone(), storage, Console, config)
        .unwrap_or_else(|e| fail(&e));

    // The first boot enrolls; after a reset the stored gallery is back and
    // the door only decides.
    let enrolling = door.gallery().is_empty();
    for step in STEPS {
        match *step {
            Step::Enroll { frames, name } if enrolling => {
                let name = check_name(name).unwrap_or_else(|e| fail(&e));
                door.admin(Admin::Name(name));
                hands.press(&mut door, 200);
                let person = i64::from(door.gallery().next_id());
                for frame in frames {
                    hands.show(&mut door, frame, "enroll", person);
                }
            }
            Step::Enroll { .. } => {}
            Step::Probe { frame, person } => {
                hw.clock.advance_ms(PROBE_GAP_MS);
                hands.show(&mut door, frame, "probe", person.map_or(-1, i64::from));
            }
        }
    }
    hprintln!("relay pulses={}", hw.relay.rises());
    let timed = door.encoder();
    hprintln!(
        "frame instructions min={} mean={} max={} frames={}",
        timed.min_ns,
        timed.total_ns / timed.frames.max(1),
        timed.max_ns,
        timed.frames
    );
    rt::finish()
}
