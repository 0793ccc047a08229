//! The Cortex-M4F door (`mcu/`) under qemu's `mps2-an386`: built, run twice
//! (`mcu/run.sh`: enroll and decide, then a reset on the stored gallery), and
//! each decision checked against the same core code on the host: the engine's
//! embedding of the same frame, the gallery, the open-set rule. Needs
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
    // The blob's threshold for a gallery of 5 people, as the MCU door picks it.
    let rule = OpenSet::threshold(
        h.gallery_thresholds
            .expect("the committed blob carries gallery thresholds")
            .for_gallery(5),
    );
    let mut gallery = Gallery::<8, 64>::new();
    let first = boots[0];
    assert!(first.contains("people=0 generation=0"), "{first}");
    for line in first.lines().filter(|l| l.starts_with("enrolled")) {
        let id = gallery
            .enroll(field(line, "name"), &embed(field(line, "file")))
            .unwrap();
        assert_eq!(id.to_string(), field(line, "id"));
    }
    assert_eq!(gallery.len(), 5, "{first}");
    let decisions = |boot: &str| -> Vec<String> {
        boot.lines()
            .filter(|l| l.starts_with("opened") || l.starts_with("refused"))
            .map(String::from)
            .collect()
    };
    let (probes, again) = (decisions(first), decisions(boots[1]));
    assert_eq!(probes.len(), 15, "{first}");
    let mut right = 0;
    for line in &probes {
        let e = embed(field(line, "file"));
        let (id, decision) = gallery.identify(&e, h.distance, &rule).unwrap();
        let nearest = match decision {
            fewshot_core::Decision::Known(n) | fewshot_core::Decision::Unknown(Some(n)) => {
                n.distance
            }
            fewshot_core::Decision::Unknown(None) => f32::INFINITY,
        };
        // The same arithmetic on both: the same f32 bits.
        assert_eq!(
            field(line, "distance"),
            format!("{:08x}", nearest.to_bits()),
            "{line}"
        );
        match id {
            Some(id) => assert!(line.starts_with(&format!("opened id={id} ")), "{line}"),
            None => assert!(line.starts_with("refused"), "{line}"),
        }
        let shows: i64 = field(line, "shows").parse().unwrap();
        right += usize::from(id.map_or(-1, i64::from) == shows);
    }
    eprintln!("{right} of 15 decisions right on the MCU");
    // After the reset: the stored gallery, the same decisions.
    assert!(boots[1].contains("people=5 generation=5"), "{}", boots[1]);
    assert_eq!(again, probes);
    // The newest slot holds the host's gallery.
    let slot = |n: u8| std::fs::read(dir.path().join(format!("slot{n}.fsgl"))).unwrap();
    let (_, stored) = store::newest::<8, 64>(&slot(0), &slot(1)).unwrap();
    assert_eq!(stored.gallery, gallery);
    assert_eq!(stored.generation, 5);
    check_face(face);
    // Within the Omniglot door's RAM goal, with instructions counted.
    for boot in &boots {
        let ram = boot.lines().find(|l| l.starts_with("ram")).unwrap();
        let total: usize = field(ram, "total").parse().unwrap();
        assert!(total <= 256 * 1024, "{ram}");
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
