//! The soak in a short form (the README has the 100 000-frame command): the
//! face door, its detector and real photos, with enrollments, deletions,
//! listings and restarts mixed in; the gallery must follow the model and
//! resident memory must not grow. Alone in its test binary, so the memory
//! read is this test's.
mod common;

use common::data_dir;
use fewshot_firmware::camera::{load_image, OwnedFrame};
use fewshot_firmware::face::{DoorEncoder, FaceArgs, DEFAULT_MIN_EYE_PX};
use fewshot_firmware::soak::{soak, Material, Plan};

fn photos(dir: std::path::PathBuf) -> Vec<OwnedFrame> {
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| load_image(f).unwrap()).collect()
}

#[test]
fn a_short_soak_follows_the_model_without_growing() {
    let data = data_dir();
    let model = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/face-distilled-int8.onnx");
    let material = Material {
        people: (1..=12)
            .map(|s| photos(data.join(format!("faces/orl/s{s}"))))
            .collect(),
        strangers: (1..=4)
            .flat_map(|s| photos(data.join(format!("faces/yale/subject{s:02}"))))
            .collect(),
    };
    let face = FaceArgs {
        detector: None,
        detector_input: None,
        min_eye_px: DEFAULT_MIN_EYE_PX,
    };
    let make = || DoorEncoder::load(&model, &face, &data).unwrap();
    let mut config = make().model().door_config(None).unwrap();
    // Small enough that the gallery fills and refuses.
    config.capacity = 20;
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan {
        frames: 1500,
        report_every: 150,
        restart_every: 500,
        seed: 7,
        people: 24,
    };
    let report = soak::<192, _, _>(
        make,
        &material,
        config,
        &dir.path().join("gallery.fsgl"),
        &plan,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report:?}");
    let count = |name: &str| report.events.get(name).copied().unwrap_or(0);
    for kind in [
        "enrolled",
        "shots_added",
        "deleted",
        "roster",
        "opened",
        "refused",
        "no_face",
        "error",
        "name_set",
    ] {
        assert!(count(kind) > 0, "no {kind} events: {:?}", report.events);
    }
    assert_eq!(report.restarts, 2);
    assert!(report.checks > 50, "{} checks", report.checks);
    // Memory: after the first reports (the allocator's and tract's warm-up),
    // resident memory stays within 4 MiB of where it was.
    let rss = &report.rss_kib;
    assert!(rss.len() >= 10, "{rss:?}");
    let settled = rss[2].1;
    let peak = rss[2..].iter().map(|r| r.1).max().unwrap();
    assert!(
        peak <= settled + 4096,
        "resident memory grew from {settled} to {peak} KiB: {rss:?}"
    );
}
