//! The door loop of `fewshot-door` with the core's int8 engine as its
//! encoder (`EngineEncoder`, what the Cortex-M4F door runs) on the host: the
//! same embeddings as the Linux door's loader of the same blob, and the
//! README's demo decided alike.
mod common;

use fewshot_door::engine::EngineEncoder;
use fewshot_firmware::door::{Config, Door, Encoder};
use fewshot_firmware::encoder::OnnxEncoder;
use fewshot_firmware::events::{Event, Recorder};
use fewshot_firmware::sim::SimHardware;
use fewshot_firmware::storage::MemStorage;

use common::{frame, sanskrit};

fn blob_path() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/omniglot-protonet.fsmcu")
}

#[test]
fn the_engine_encoder_embeds_as_the_linux_doors_loader() {
    let bytes = std::fs::read(blob_path()).unwrap();
    let mut engine = EngineEncoder::new(&bytes).unwrap();
    let linux = OnnxEncoder::load(&blob_path()).unwrap();
    assert_eq!(Encoder::dim(&engine), linux.dim());
    for (c, n) in [(1, 1), (1, 7), (4, 2), (9, 20)] {
        let image = frame(&sanskrit(c, n));
        let f = image.as_frame().unwrap();
        let a = engine.embed_frame(&f).unwrap();
        let b = linux.embed_frame(&f).unwrap();
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "character {c} image {n}"
        );
    }
}

/// The README's demo (enroll character 1 from two drawings, two more open,
/// two of character 4 are refused) on a simulated door: its events.
fn demo<E: Encoder>(encoder: E, config: Config) -> Vec<Event> {
    let hw = SimHardware::new();
    let events = Recorder::new();
    let mut door = Door::<64, _, _, _, _, _, _, _, _, _>::boot(
        encoder,
        hw.io(),
        hw.camera.clone(),
        MemStorage::new(),
        events.clone(),
        config,
    )
    .unwrap();
    let mut poll = |ms: u64| {
        door.poll().unwrap();
        hw.clock.advance_ms(ms);
    };
    hw.button.set(true);
    (0..20).for_each(|_| poll(10));
    hw.button.set(false);
    (0..5).for_each(|_| poll(10));
    for (c, n) in [(1, 1), (1, 2), (1, 3), (1, 5), (4, 1), (4, 2)] {
        hw.camera.push(frame(&sanskrit(c, n)));
        poll(10);
    }
    events.take()
}

#[test]
fn the_door_loop_on_the_engine_decides_the_demo_as_the_linux_door() {
    let bytes = std::fs::read(blob_path()).unwrap();
    let linux = OnnxEncoder::load(&blob_path()).unwrap();
    let config = linux.door_config(None).unwrap();
    let on_engine = demo(EngineEncoder::new(&bytes).unwrap(), config.clone());
    let on_linux = demo(linux, config);
    let names: Vec<&str> = on_engine.iter().map(Event::name).collect();
    assert_eq!(
        names,
        [
            "booted",
            "enroll_started",
            "enrolled",
            "opened",
            "opened",
            "refused",
            "refused"
        ]
    );
    assert_eq!(on_engine, on_linux);
}
