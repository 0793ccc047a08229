//! The Cortex-M4F door (`mcu/`: the `no_std` door loop of `fewshot-door` with
//! the core's int8 engine) under qemu's `mps2-an386`: built, run twice
//! (`mcu/run.sh`: enroll and decide, then a reset on the stored gallery), and
//! each enrollment and decision checked against the same core code on the
//! host: the engine's embedding of the same frame, the gallery, the
//! enrollment and open-set rules, the relay. Needs
//! `qemu-system-arm` and the `thumbv7em-none-eabihf` target (`./test.sh`
//! installs both when it can); fails, saying so, without them.
use std::path::{Path, PathBuf};
use std::process::Command;

use fewshot_core::engine::{Arena, Model};
use fewshot_core::{store, Gallery, OpenSet};
use fewshot_e2e::data_dir;
use fewshot_firmware::camera::load_image;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `key=value` field of an output line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn the_microcontroller_door_decides_as_the_host_and_survives_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("mcu/run.sh"))
        .arg(dir.path())
        .env("FEWSHOT_DATA", data_dir())
        .output()
        .expect("running mcu/run.sh");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "mcu/run.sh failed (it needs qemu-system-arm and `rustup target add thumbv7em-none-eabihf`):\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (door, face) = text.split_once("== face").expect("the face run's output");
    let boots: Vec<&str> = door.split("== boot ").skip(1).collect();
    assert_eq!(boots.len(), 2, "{text}");

    // The host's run of the same frames.
    let blob = std::fs::read(repo().join("models/omniglot-protonet.fsmcu")).unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let h = *model.header();
    let (mut act, mut acc) = (vec![0u8; h.arena_bytes], vec![0i32; h.accumulator_words]);
    let mut arena = Arena::new(&mut act, &mut acc);
    let mut embed = |file: &str| -> Vec<f32> {
        let frame = load_image(&data_dir().join(file)).unwrap();
        let mut input = vec![0f32; model.input_len()];
        h.recipe
            .apply(&frame.as_frame().unwrap(), &mut input)
            .unwrap();
        let mut e = vec![0f32; model.dim()];
        model.embed(&input, &mut arena, &mut e).unwrap();
        e
    };
    // The door's rules, from the blob: enrollment agreement by the pair
    // threshold, opening by the threshold for the gallery's size.
    let pair = h
        .threshold
        .expect("the committed blob carries a pair threshold");
    let thresholds = h
        .gallery_thresholds
        .expect("the committed blob carries gallery thresholds");

    // Boot 1, line by line: enrollments (two frames each) and decisions, each
    // replayed on the host.
    let mut gallery = Gallery::<8, 64>::new();
    let mut shots: Vec<Vec<f32>> = Vec::new();
    let mut probes = Vec::new();
    let (mut right, mut opens) = (0, 0);
    let mut lines = boots[0].lines().skip(1);
    assert!(lines.next().unwrap().contains("people=0"), "{}", boots[0]);
    while let Some(line) = lines.next() {
        if line.starts_with("frame enroll") {
            shots.push(embed(field(line, "file")));
        } else if line.starts_with("enrolled") {
            assert_eq!(shots.len(), 2, "{line}");
            assert!(h.distance.between(&shots[0], &shots[1]) <= pair, "{line}");
            let id = gallery.enroll(field(line, "name"), &shots[0]).unwrap();
            gallery.add_shot(id, &shots[1]).unwrap();
            assert_eq!(id.to_string(), field(line, "id"));
            shots.clear();
        } else if line.starts_with("enroll_refused") {
            assert!(h.distance.between(&shots[0], &shots[1]) > pair, "{line}");
            shots.clear();
        } else if line.starts_with("frame probe") {
            let decision = lines.next().expect("a decision after each probe");
            probes.push((line, decision));
            let e = embed(field(line, "file"));
            let rule = OpenSet::threshold(thresholds.for_gallery(gallery.len()));
            let (id, d) = gallery.identify(&e, h.distance, &rule).unwrap();
            let nearest = match d {
                fewshot_core::Decision::Known(n) | fewshot_core::Decision::Unknown(Some(n)) => {
                    n.distance
                }
                fewshot_core::Decision::Unknown(None) => f32::INFINITY,
            };
            // The same arithmetic on both: the same f32 bits.
            assert_eq!(
                field(decision, "distance"),
                format!("{:08x}", nearest.to_bits()),
                "{decision}"
            );
            match id {
                Some(id) => {
                    assert!(
                        decision.starts_with(&format!("opened id={id} ")),
                        "{decision}"
                    );
                    opens += 1;
                }
                None => assert!(decision.starts_with("refused"), "{decision}"),
            }
            let person: i64 = field(line, "person").parse().unwrap();
            right += usize::from(id.map_or(-1, i64::from) == person);
        }
    }
    assert_eq!(gallery.len(), 5, "{}", boots[0]);
    assert_eq!(probes.len(), 15, "{}", boots[0]);
    eprintln!("{right} of 15 decisions right on the MCU");
    // The relay moved exactly once per open.
    let relay = boots[0].lines().find(|l| l.starts_with("relay")).unwrap();
    assert_eq!(field(relay, "pulses"), opens.to_string(), "{relay}");
    // After the reset: the stored gallery, no enrollment, the same decisions.
    assert!(
        boots[1].starts_with("2\nbooted") && boots[1].contains("people=5"),
        "{}",
        boots[1]
    );
    let again: Vec<(&str, &str)> = {
        let mut lines = boots[1].lines();
        let mut out = Vec::new();
        while let Some(line) = lines.next() {
            assert!(!line.starts_with("frame enroll"), "{line}");
            if line.starts_with("frame probe") {
                out.push((line, lines.next().unwrap()));
            }
        }
        out
    };
    assert_eq!(again, probes);
    // The newest slot holds the host's gallery, saved once per enrollment.
    let slot = |n: u8| std::fs::read(dir.path().join(format!("slot{n}.fsgl"))).unwrap();
    let (_, stored) = store::newest::<8, 64>(&slot(0), &slot(1)).unwrap();
    assert_eq!(stored.gallery, gallery);
    assert_eq!(stored.generation, 5);
    check_face(face);
    // Within the Omniglot door's RAM goal (statics with the whole heap
    // region, and the stack's peak), with instructions counted.
    for boot in &boots {
        let ram = boot.lines().find(|l| l.starts_with("ram")).unwrap();
        let total: usize = field(ram, "total").parse().unwrap();
        assert!(total <= 256 * 1024, "{ram}");
        let heap: usize = field(ram, "heap_peak").parse().unwrap();
        assert!(
            heap > 0 && heap <= field(ram, "heap_region").parse().unwrap(),
            "{ram}"
        );
        let ins = boot
            .lines()
            .find(|l| l.starts_with("frame instructions"))
            .unwrap();
        assert!(
            field(ins, "mean").parse::<u64>().unwrap() > 1_000_000,
            "{ins}"
        );
    }
}

/// The face encoder's run (`mcu/src/bin/face_engine.rs`) against the host's
/// run of the same blob on the same input; within the face door's goals of
/// 512 KB of RAM (its flash, 1 MB, is checked by `size` in the README).
fn check_face(out: &str) {
    let line = out
        .lines()
        .find(|l| l.starts_with("face "))
        .unwrap_or_else(|| panic!("{out}"));
    let blob = std::fs::read(repo().join("models/face-distilled.fsmcu")).unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let h = *model.header();
    let input: Vec<f32> = (0..64 * 64)
        .map(|i| {
            let (y, x) = ((i / 64) as f32 - 32.0, (i % 64) as f32 - 32.0);
            0.8 - (x * x + y * y) / 2048.0 + 0.1 * ((i % 7) as f32 / 7.0)
        })
        .collect();
    let (mut act, mut acc) = (vec![0u8; h.arena_bytes], vec![0i32; h.accumulator_words]);
    let mut e = vec![0f32; model.dim()];
    model
        .embed(&input, &mut Arena::new(&mut act, &mut acc), &mut e)
        .unwrap();
    let norm: f32 = e.iter().map(|v| v * v).sum();
    assert_eq!(
        field(line, "first"),
        format!("{:08x}", e[0].to_bits()),
        "{line}"
    );
    assert_eq!(
        field(line, "norm2"),
        format!("{:08x}", norm.to_bits()),
        "{line}"
    );
    let ram = out.lines().find(|l| l.starts_with("ram")).unwrap();
    assert!(
        field(ram, "total").parse::<usize>().unwrap() <= 512 * 1024,
        "{ram}"
    );
}
