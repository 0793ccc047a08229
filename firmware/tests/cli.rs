//! The `doorkeeper` binary: the README's demo, and its documented behaviour on
//! bad input (missing or corrupt model, no threshold, bad images, bad script
//! lines, a corrupt gallery file), never a panic.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn doorkeeper(args: &[&str], script: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_doorkeeper"));
    cmd.current_dir(repo_root())
        .env("FEWSHOT_DATA", common::data_dir())
        .args(args);
    match script {
        None => cmd.output().unwrap(),
        Some(text) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // The door may stop before reading it all (a bad model).
            let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
            child.wait_with_output().unwrap()
        }
    }
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// Runs the door on `args` with no standard input; it must succeed without
/// a panic. Its events.
fn json_events(args: &[&str]) -> Vec<Value> {
    let out = doorkeeper(args, None);
    no_panic(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    events(&out)
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

fn no_panic(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

const MODEL: &str = "models/omniglot-protonet.onnx";

#[test]
fn the_readme_demo_enrolls_opens_and_refuses_a_stranger() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery = tmp.path().join("door.fsgl");
    let ev = json_events(&[
        "--model",
        MODEL,
        "--gallery",
        gallery.to_str().unwrap(),
        "--script",
        "firmware/scripts/demo.txt",
        "--json",
    ]);
    assert_eq!(
        names(&ev),
        [
            "booted",
            "enroll_started",
            "enrolled",
            "opened",
            "opened",
            "refused",
            "refused",
            "deleted",
            "refused"
        ]
    );
    assert_eq!(ev[2]["id"], 0);
    assert_eq!(ev[2]["name"], "person-0");
    assert_eq!(ev[3]["id"], 0);
    // Without --threshold the door opens by the model's threshold for one
    // person enrolled.
    assert_eq!(ev[0]["gallery_threshold_size"], 1);
    let opens_at = ev[0]["gallery_threshold"].as_f64().unwrap();
    assert!(opens_at < ev[0]["threshold"].as_f64().unwrap());
    assert!(ev[3]["distance"].as_f64().unwrap() <= opens_at);
    assert!(ev[5]["distance"].as_f64().unwrap() > opens_at);
    assert_eq!(ev[7]["id"], 0);
    // The gallery file was written (then emptied by the delete).
    assert!(gallery.is_file());
}

/// The demo on the Omniglot model blob (`models/omniglot-protonet.fsmcu`),
/// run by the core's int8 engine: the same decisions as with the ONNX model,
/// at distances within a few percent of its.
#[test]
fn the_readme_demo_runs_on_the_engine_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |model: &str, name: &str| {
        let gallery = tmp.path().join(name);
        json_events(&[
            "--model",
            model,
            "--gallery",
            gallery.to_str().unwrap(),
            "--script",
            "firmware/scripts/demo.txt",
            "--json",
        ])
    };
    let onnx = run(MODEL, "a.fsgl");
    let blob = run("models/omniglot-protonet.fsmcu", "b.fsgl");
    assert_eq!(names(&blob), names(&onnx));
    for (a, b) in onnx.iter().zip(&blob) {
        if let (Some(x), Some(y)) = (a["distance"].as_f64(), b["distance"].as_f64()) {
            assert!((x - y).abs() <= 0.05 * x.max(1.0), "{x} vs {y}");
        }
    }
}

#[test]
fn a_missing_or_corrupt_model_stops_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let junk_blob = tmp.path().join("junk.fsmcu");
    std::fs::write(&junk_blob, b"not a model").unwrap();
    let gallery = tmp.path().join("g.fsgl");
    for (model, says) in [
        (tmp.path().join("missing.onnx"), "missing.onnx"),
        (junk.clone(), "not a usable ONNX model"),
        (junk_blob.clone(), "not a usable model blob"),
    ] {
        let out = doorkeeper(
            &[
                "--model",
                model.to_str().unwrap(),
                "--gallery",
                gallery.to_str().unwrap(),
                "--threshold",
                "5",
                "--json",
            ],
            Some("wait 10\n"),
        );
        no_panic(&out);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("loading the model") && err.contains(says),
            "{err}"
        );
        let ev = events(&out);
        assert_eq!(names(&ev), ["error"]);
        assert!(ev[0]["message"].as_str().unwrap().contains(says));
    }
    assert!(!gallery.exists(), "nothing written");
}

#[test]
fn a_model_without_a_threshold_needs_one_given() {
    let tmp = tempfile::tempdir().unwrap();
    // The Matching Network's encoder was exported without a threshold.
    let out = doorkeeper(
        &[
            "--model",
            "models/omniglot-matching.onnx",
            "--gallery",
            tmp.path().join("g").to_str().unwrap(),
        ],
        Some(""),
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give --threshold"), "{err}");
}

#[test]
fn bad_images_and_bad_lines_are_reported_and_the_script_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("notes.png");
    std::fs::write(&text, b"this is not a PNG").unwrap();
    let a = "omniglot/images_background_small2/Sanskrit/character01";
    let script = format!(
        "frame {}\nframe {}/nope.png\nfly 10\npress soon\npress 100\nframe {a}/0851_01.png\nframe {a}/0851_02.png\nframe {a}/0851_03.png\n",
        text.display(),
        tmp.path().display(),
    );
    let gallery = tmp.path().join("g.fsgl");
    // Read from standard input, as the keyboard mode does.
    let out = doorkeeper(
        &[
            "--model",
            MODEL,
            "--gallery",
            gallery.to_str().unwrap(),
            "--threshold",
            "5",
            "--json",
        ],
        Some(&script),
    );
    no_panic(&out);
    assert!(out.status.success());
    let ev = events(&out);
    assert_eq!(
        names(&ev),
        [
            "booted",
            "error",
            "error",
            "error",
            "error",
            "enroll_started",
            "enrolled",
            "opened"
        ]
    );
    let message = |i: usize| ev[i]["message"].as_str().unwrap().to_string();
    assert!(message(1).contains("notes.png"), "{}", message(1));
    assert!(message(2).contains("nope.png"), "{}", message(2));
    assert!(message(3).contains("line 3") && message(3).contains("unknown command `fly`"));
    assert!(message(4).contains("line 4") && message(4).contains("milliseconds"));
}

#[test]
fn a_frame_of_the_wrong_size_is_an_error_and_the_door_stays_shut() {
    let tmp = tempfile::tempdir().unwrap();
    let a = "omniglot/images_background_small2/Sanskrit/character01";
    let script = format!("press 100\nframe {a}/0851_01.png\n");
    let out = doorkeeper(
        &[
            "--model",
            MODEL,
            "--gallery",
            tmp.path().join("g").to_str().unwrap(),
            "--threshold",
            "5",
            "--camera",
            "640x480",
            "--json",
        ],
        Some(&script),
    );
    no_panic(&out);
    let ev = events(&out);
    assert_eq!(names(&ev), ["booted", "enroll_started", "error"]);
    assert!(ev[2]["message"]
        .as_str()
        .unwrap()
        .contains("105x105, the camera is set up for 640x480"));
}

#[test]
fn a_corrupt_gallery_file_is_kept_aside_and_the_door_starts_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery = tmp.path().join("door.fsgl");
    std::fs::write(&gallery, b"FSGL but then garbage").unwrap();
    let a = "omniglot/images_background_small2/Sanskrit/character01";
    let out = doorkeeper(
        &[
            "--model",
            MODEL,
            "--gallery",
            gallery.to_str().unwrap(),
            "--threshold",
            "5",
            "--json",
        ],
        Some(&format!("frame {a}/0851_03.png\n")),
    );
    no_panic(&out);
    assert!(out.status.success());
    let ev = events(&out);
    assert_eq!(names(&ev), ["gallery_corrupt", "booted", "refused"]);
    let kept = Path::new(ev[0]["kept_at"].as_str().unwrap());
    assert_eq!(kept, tmp.path().join("door.fsgl.corrupt-1"));
    assert_eq!(std::fs::read(kept).unwrap(), b"FSGL but then garbage");
    assert_eq!(ev[1]["identities"], 0);
    assert!(ev[2]["distance"].is_null(), "locked: nobody enrolled");
    assert!(!gallery.exists());
}

/// The README's face demo script with `model`: its events, checked to be
/// enroll, open for the genuine photo, refuse the stranger, no face.
fn face_demo(model: &str, gallery: &Path) -> Vec<Value> {
    let ev = json_events(&[
        "--model",
        model,
        "--gallery",
        gallery.to_str().unwrap(),
        "--script",
        "firmware/scripts/face-demo.txt",
        "--json",
    ]);
    let expected = [
        "booted",
        "enroll_started",
        "enrolled",
        "opened",
        "refused",
        "no_face",
    ];
    assert_eq!(names(&ev), expected, "{model}");
    ev
}

#[test]
fn the_face_demo_finds_faces_and_reports_frames_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery = tmp.path().join("faces.fsgl");
    let ev = face_demo("models/face-aligned.onnx", &gallery);
    // The decisions carry the face's box, inside the 92×112 ORL photo.
    for e in &ev[3..5] {
        let b: Vec<f64> = e["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            b[0] > -10.0 && b[1] > -10.0 && b[0] + b[2] < 102.0 && b[1] + b[3] < 122.0,
            "{e}"
        );
    }
    // A missing detector file is named, exit status 1.
    let out = doorkeeper(
        &[
            "--model",
            "models/face-aligned.onnx",
            "--gallery",
            gallery.to_str().unwrap(),
            "--detector",
            "no-such-yunet.onnx",
            "--script",
            "firmware/scripts/face-demo.txt",
        ],
        None,
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-yunet.onnx"));
}

/// The README's face door with the committed file it ships
/// (`models/face-int8.onnx`, the distilled student, flip-averaged): enrolled
/// by its pair threshold, opening by its threshold for the gallery's size
/// (that of 10 people for one enrolled): the genuine photo is within it, the
/// stranger not.
#[test]
fn the_committed_face_model_runs_the_face_demo_by_its_gallery_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let gallery = tmp.path().join("faces.fsgl");
    let ev = face_demo("models/face-int8.onnx", &gallery);
    let model =
        fewshot_firmware::encoder::OnnxEncoder::load(&repo_root().join("models/face-int8.onnx"))
            .unwrap();
    assert!(model.flip_average());
    let thresholds = model.gallery_thresholds().unwrap();
    let for_one = thresholds.for_gallery(1);
    let pair = model.threshold().unwrap();
    assert!(for_one < pair, "{for_one} {pair}");
    // Booting with an empty gallery reports both: the pair threshold and the
    // one it opens by (the smallest calibrated gallery's).
    let (size, first) = thresholds.points().next().unwrap();
    assert_eq!(ev[0]["threshold"].as_f64().unwrap() as f32, pair);
    assert_eq!(ev[0]["gallery_threshold"].as_f64().unwrap() as f32, first);
    assert_eq!(
        ev[0]["gallery_threshold_size"].as_u64().unwrap() as usize,
        size
    );
    let opened = ev[3]["distance"].as_f64().unwrap() as f32;
    let refused = ev[4]["distance"].as_f64().unwrap() as f32;
    assert!(
        opened <= for_one && refused > for_one,
        "{opened} {refused} {for_one}"
    );
}
