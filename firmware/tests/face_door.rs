//! The door with a face detector in front of an aligning face model, on
//! frames a door camera delivers: faces anywhere in a 640×480 scene, none,
//! two, or too small.
mod common;

use std::path::{Path, PathBuf};

use common::{data_dir, Lcg};
use fewshot_firmware::door::Config;
use fewshot_firmware::encoder::OnnxEncoder;
use fewshot_firmware::events::{Event, Recorder};
use fewshot_firmware::face::{DoorEncoder, FaceArgs};
use fewshot_firmware::sim::{Command, Simulator};
use fewshot_firmware::storage::MemStorage;

/// The committed aligned face model (`models/face-aligned.onnx`, trained on
/// aligned LFW crops, with its calibrated threshold).
fn aligned_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/face-aligned.onnx")
}

fn face_args() -> FaceArgs {
    FaceArgs {
        detector: None,
        detector_input: None,
        min_eye_px: 16.0,
    }
}

type FaceSim<const DIM: usize = 1024> = Simulator<DIM, DoorEncoder, MemStorage, Recorder>;

fn door<const DIM: usize>(
    model: &Path,
    min_eye_px: f32,
    config: impl FnOnce(&mut Config),
) -> (FaceSim<DIM>, Recorder) {
    let args = FaceArgs {
        min_eye_px,
        ..face_args()
    };
    let encoder = DoorEncoder::load(model, &args, &data_dir()).unwrap();
    assert!(
        matches!(encoder, DoorEncoder::Face(_)),
        "an aligning model loads the detector"
    );
    let mut c = encoder.model().door_config(None).unwrap();
    c.max_rejections = u32::MAX;
    config(&mut c);
    let events = Recorder::new();
    let sim =
        Simulator::<DIM, _, _, _>::boot(encoder, MemStorage::default(), events.clone(), c).unwrap();
    (sim, events)
}

/// A 640×480 RGB scene of `grey` with `photo` resized to `height` px high,
/// its top-left at `(x, y)`, written as a PNG in `dir`.
fn scene(dir: &Path, name: &str, grey: u8, photos: &[(&Path, u32, u32, u32)]) -> PathBuf {
    let mut canvas = image::RgbImage::from_pixel(640, 480, image::Rgb([grey, grey, grey]));
    for &(photo, x, y, height) in photos {
        let img = image::open(photo).unwrap().into_rgb8();
        let width = (img.width() as f32 * height as f32 / img.height() as f32).round() as u32;
        let img =
            image::imageops::resize(&img, width, height, image::imageops::FilterType::Triangle);
        image::imageops::overlay(&mut canvas, &img, i64::from(x), i64::from(y));
    }
    let path = dir.join(format!("{name}.png"));
    canvas.save(&path).unwrap();
    path
}

fn orl(person: u32, n: u32) -> PathBuf {
    data_dir().join(format!("faces/orl/s{person}/{n}.pgm"))
}

/// The decision a frame led to: `Some(id)` opened, `None` refused.
fn decision(events: &[Event]) -> Option<Option<u32>> {
    events.iter().find_map(|e| match e {
        Event::Opened { id, .. } => Some(Some(*id)),
        Event::Refused { .. } => Some(None),
        _ => None,
    })
}

/// 20 ORL people enrolled from one photo each; 200 probes (their other nine
/// photos, and 20 strangers) shown alone and placed in a 640×480 scene: how
/// often the two decisions agree, of how many, and how often the photo alone
/// opened for the right person.
/// Genuine probes of [`off_centre`], nine a person.
const GENUINE: usize = 180;

fn off_centre<const DIM: usize>(model: &Path) -> (usize, usize, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut sim, events) = door::<DIM>(model, 16.0, |c| c.enroll_shots = 1);
    // 20 ORL people enrolled from their first photo.
    let mut ids = Vec::new();
    for p in 1..=20 {
        sim.step(&Command::Press(200)).unwrap();
        sim.step(&Command::Frame(orl(p, 1))).unwrap();
        let enrolled: Vec<u32> = events
            .take()
            .iter()
            .filter_map(|e| match e {
                Event::Enrolled { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(enrolled.len(), 1, "person {p}");
        ids.push(enrolled[0]);
        sim.step(&Command::Wait(4000)).unwrap();
    }
    // Probes: the nine other photos of each, and 20 strangers (ORL people 21-40).
    let mut probes: Vec<PathBuf> = (1..=20)
        .flat_map(|p| (2..=10).map(move |n| orl(p, n)))
        .collect();
    probes.extend((21..=40).map(|p| orl(p, 1)));
    let mut rng = Lcg(7);
    let (mut same, mut total, mut opened_right) = (0, 0, 0);
    for (i, probe) in probes.iter().enumerate() {
        sim.step(&Command::Frame(probe.clone())).unwrap();
        let alone =
            decision(&events.take()).unwrap_or_else(|| panic!("{}: no decision", probe.display()));
        sim.step(&Command::Wait(4000)).unwrap();
        events.take();
        // The same photo at a random place and size (150-400 px high) in a
        // black 640×480 frame. Black, as the warp fills outside a photo: an
        // ORL photo is narrower than its aligned crop (eyes 34 px apart make
        // a crop about 110 px wide, the photo is 92), so another background
        // puts other pixels into the crop, which tests the encoder, not the
        // geometry.
        let height = 150 + rng.next(250);
        let width = height * 92 / 112;
        let (x, y) = (rng.next(640 - width), rng.next(480 - height.min(479)));
        let frame = scene(
            tmp.path(),
            &format!("probe{i}"),
            0,
            &[(probe, x, y, height)],
        );
        sim.step(&Command::Frame(frame)).unwrap();
        let placed = decision(&events.take())
            .unwrap_or_else(|| panic!("{}: no decision in the scene", probe.display()));
        sim.step(&Command::Wait(4000)).unwrap();
        events.take();
        total += 1;
        same += usize::from(alone == placed);
        if i < GENUINE && alone == Some(ids[i / 9]) {
            opened_right += 1;
        }
    }
    (same, total, opened_right)
}

#[test]
fn a_face_anywhere_in_the_frame_gets_the_decision_of_the_photo() {
    let (same, total, opened_right) = off_centre::<1024>(&aligned_model());
    eprintln!("same decision for {same} of {total} probes; the photos alone opened for the right person {opened_right} of {GENUINE} times");
    assert_eq!(total, 200);
    // The goal is the same decision in at least 98 % of cases. A photo and
    // the same photo in a scene get landmarks that differ by a few percent
    // of the eye distance, which moves probes near the threshold across it;
    // with voted landmarks and two refine passes the aligned model gets 195
    // of 200 (2026-12-03; with one pass and no voting it got 78 of the 80
    // probes this test had then, three a person). A geometry error (a wrong
    // scale or offset back to the frame) agrees far less often; this bound
    // guards against that.
    assert!(
        same * 100 >= 95 * total,
        "same decision for only {same} of {total}"
    );
}

#[test]
fn no_face_two_faces_and_a_small_face() {
    let tmp = tempfile::tempdir().unwrap();
    let model = aligned_model();
    let (mut sim, events) = door::<1024>(&model, 16.0, |c| c.enroll_shots = 1);
    let empty = scene(tmp.path(), "empty", 120, &[]);

    // Enrollment skips frames without a face and takes the next face.
    sim.step(&Command::Press(200)).unwrap();
    sim.step(&Command::Frame(empty.clone())).unwrap();
    assert_eq!(
        events
            .take()
            .iter()
            .filter(|e| matches!(e, Event::NoFace))
            .count(),
        1
    );
    sim.step(&Command::Frame(scene(
        tmp.path(),
        "s1",
        90,
        &[(&orl(1, 1), 100, 80, 300)],
    )))
    .unwrap();
    assert!(events
        .take()
        .iter()
        .any(|e| matches!(e, Event::Enrolled { shots: 1, .. })));
    sim.step(&Command::Wait(4000)).unwrap();
    events.take();

    // No face: reported once, then not again within 5 s, then again.
    sim.step(&Command::Frame(empty.clone())).unwrap();
    assert_eq!(events.take(), vec![Event::NoFace]);
    sim.step(&Command::Frame(empty.clone())).unwrap();
    assert!(events.take().is_empty());
    sim.step(&Command::Wait(5000)).unwrap();
    sim.step(&Command::Frame(empty)).unwrap();
    assert_eq!(events.take(), vec![Event::NoFace]);

    // Two faces: the larger one decides, and the event carries its box.
    let both = scene(
        tmp.path(),
        "both",
        90,
        &[(&orl(1, 2), 20, 100, 330), (&orl(30, 1), 420, 150, 180)],
    );
    sim.step(&Command::Frame(both)).unwrap();
    let ev = events.take();
    match &ev[..] {
        [Event::Opened {
            bbox: Some([x, _, w, _]),
            ..
        }] => assert!(x + w / 2.0 < 320.0, "{ev:?}"),
        other => panic!("expected the enrolled (larger) face to open: {other:?}"),
    }
    sim.step(&Command::Wait(4000)).unwrap();
    events.take();
    let stranger_larger = scene(
        tmp.path(),
        "swapped",
        90,
        &[(&orl(1, 2), 20, 150, 180), (&orl(30, 1), 300, 100, 330)],
    );
    sim.step(&Command::Frame(stranger_larger)).unwrap();
    let ev = events.take();
    assert!(
        matches!(&ev[..], [Event::Refused { bbox: Some([x, ..]), .. }] if *x > 250.0),
        "{ev:?}"
    );

    // A face too small to recognise (eyes about 50 px apart, 60 asked for):
    // refused with its eye distance.
    let (mut strict, events) = door::<1024>(&model, 60.0, |_| {});
    assert!(matches!(&events.take()[..], [Event::Booted { .. }]));
    let small = scene(tmp.path(), "small", 90, &[(&orl(1, 2), 300, 200, 150)]);
    strict.step(&Command::Frame(small)).unwrap();
    let ev = events.take();
    match &ev[..] {
        [Event::FaceTooSmall {
            eye_px, min_eye_px, ..
        }] => {
            assert!(*eye_px < *min_eye_px && *eye_px > 30.0, "{ev:?}")
        }
        other => panic!("expected face_too_small: {other:?}"),
    }
}

#[test]
fn an_aligning_model_without_a_detector_file_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let model = aligned_model();
    let args = FaceArgs {
        detector: Some(tmp.path().join("missing-yunet.onnx")),
        detector_input: None,
        min_eye_px: 16.0,
    };
    let err = DoorEncoder::load(&model, &args, &data_dir()).err().unwrap();
    assert!(format!("{err:#}").contains("missing-yunet.onnx"), "{err:#}");
    // Without a detector the encoder alone cannot embed a frame: it says why.
    let encoder = OnnxEncoder::load(&model).unwrap();
    let frame = common::frame(&orl(1, 1));
    let err = encoder.embed_frame(&frame.as_frame().unwrap()).unwrap_err();
    assert!(err.to_string().contains("landmarks"), "{err}");
    // A plain model stays plain: no detector is loaded unless asked.
    let plain = DoorEncoder::load(&common::model_path(), &face_args(), &data_dir()).unwrap();
    assert!(matches!(plain, DoorEncoder::Plain(_)));
}

/// The distilled model (`models/face-distilled.onnx`, 192-d, opening by its
/// threshold for the gallery's size) on the same frames.
#[test]
fn the_distilled_model_gets_the_decision_of_the_photo_off_centre() {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/face-distilled.onnx");
    let (same, total, opened_right) = off_centre::<192>(&model);
    eprintln!("distilled: same decision for {same} of {total} probes; the photos alone opened for the right person {opened_right} of {GENUINE} times");
    assert_eq!(total, 200);
    // 196 of 200 (98.0 %, the goal) with voted landmarks and two refine
    // passes; 192 with one pass and no voting (`cargo run --release -p
    // fewshot-firmware --example off_centre`, the same probes). This model
    // opens by its stricter threshold for the gallery's size (that of 50
    // people for these 20), where more genuine probes sit near it. The
    // bound leaves room for two flips, which a CPU whose kernels round
    // differently could bring; a geometry error agrees far less often.
    assert!(
        same * 100 >= 97 * total,
        "same decision for only {same} of {total}"
    );
}

/// The same model as a blob (`models/face-distilled.fsmcu`, run by the core's
/// int8 engine as on a microcontroller, opening by the thresholds for the
/// gallery's size that it carries, calibrated with the engine) makes the face
/// door work on the same frames: placing the photos in a scene changes the
/// decision as rarely as with the ONNX model, and the photos alone open for
/// the right person about as often.
#[test]
fn the_distilled_blob_runs_the_face_door_off_centre() {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/face-distilled.fsmcu");
    let encoder = fewshot_firmware::encoder::OnnxEncoder::load(&model).unwrap();
    assert!(
        encoder.gallery_thresholds().is_some(),
        "the blob carries gallery thresholds"
    );
    let (same, total, opened_right) = off_centre::<192>(&model);
    eprintln!("distilled blob: same decision for {same} of {total} probes; the photos alone opened for the right person {opened_right} of {GENUINE} times");
    assert_eq!(total, 200);
    assert!(
        same * 100 >= 97 * total,
        "same decision for only {same} of {total}"
    );
    assert!(
        opened_right * 10 >= 8 * GENUINE,
        "opened for the right person only {opened_right} of {GENUINE} times"
    );
}
