//! Per-frame cost of the face path on a 640×480 camera frame holding one
//! face (an ORL photo scaled to 300 px high at (170, 90)), stage by stage:
//! PNG decode, detection (letterbox, YuNet in tract, decoding, suppression;
//! `find_face` is the scan and two refine passes), alignment (the similarity
//! and the warp to the encoder's input), detection and alignment together, the
//! encoder, the nearest of 64 enrolled identities; then all of it through
//! `Door::poll`. The default detector (`yunet_s_dynamic.onnx` at its
//! default sizes) and the fixed 320×320 and 640×640 files are measured.
//!
//! `cargo bench -p fewshot-firmware --bench face_frame` (data from
//! `FEWSHOT_DATA`, else `../shared/data`; the encoder is the committed
//! `models/face-aligned.onnx`, or `FACE_BENCH_MODEL=path`, an aligning
//! 1 024-d model).
use std::hint::black_box;
use std::io::Cursor;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use fewshot_firmware::camera::OwnedFrame;
use fewshot_firmware::core::{Distance, Letterbox, PixelFormat};
use fewshot_firmware::detect::{FaceDetector, InputSizes, DEFAULT_DETECTOR, REFINE_WINDOW};
use fewshot_firmware::door::{Config, DEFAULT_CAPACITY};
use fewshot_firmware::encoder::OnnxEncoder;
use fewshot_firmware::face::{DoorEncoder, FacePipeline};

#[path = "../tests/common/mod.rs"]
mod common;
use common::data_dir;

/// People enrolled in the measured door (the figures of the README were taken at 64).
const PEOPLE: usize = 64;

fn aligned_model() -> PathBuf {
    std::env::var_os("FACE_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/face-aligned.onnx")
        })
}

/// The 640×480 scene, as PNG bytes and decoded.
fn scene() -> (Vec<u8>, OwnedFrame) {
    let mut canvas = image::RgbImage::from_pixel(640, 480, image::Rgb([90, 90, 90]));
    let photo = image::open(data_dir().join("faces/orl/s1/2.pgm"))
        .unwrap()
        .into_rgb8();
    let photo = image::imageops::resize(&photo, 246, 300, image::imageops::FilterType::Triangle);
    image::imageops::overlay(&mut canvas, &photo, 170, 90);
    let mut png = Vec::new();
    canvas
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let frame = OwnedFrame {
        width: 640,
        height: 480,
        format: PixelFormat::Rgb8,
        pixels: canvas.into_raw(),
    };
    (png, frame)
}

fn decode_png(png: &[u8]) -> OwnedFrame {
    let img = image::load_from_memory(png).unwrap().into_rgb8();
    OwnedFrame {
        width: img.width() as usize,
        height: img.height() as usize,
        format: PixelFormat::Rgb8,
        pixels: img.into_raw(),
    }
}

fn face_frame(c: &mut Criterion) {
    let model = aligned_model();
    let encoder = OnnxEncoder::load(&model).unwrap();
    let recipe = encoder.recipe();
    let (png, frame) = scene();
    let f = frame.as_frame().unwrap();
    let mut group = c.benchmark_group("face frame (640x480, one face)");
    group.bench_function("decode PNG", |b| b.iter(|| decode_png(black_box(&png))));
    for (name, file, sizes) in [
        ("default", DEFAULT_DETECTOR, None),
        ("320x320", "models/yunet_s_320_320.onnx", None),
        ("640x640", "models/yunet_s_640_640.onnx", None),
    ] {
        let det = FaceDetector::load(&data_dir().join(file), sizes).unwrap();
        let InputSizes { scan, refine, .. } = det.input_sizes();
        let (_, face) = det.find_face(&f).unwrap();
        let face = face.unwrap();
        assert_eq!(det.detect(&f).unwrap().len(), 1);
        let side = REFINE_WINDOW * face.bbox[2].max(face.bbox[3]);
        let [cx, cy] = face.centre();
        let window = [cx - side / 2.0, cy - side / 2.0, side, side];
        for (pass, (w, h), lb) in [
            ("scan", scan, Letterbox::fit(640, 480, scan.0, scan.1)),
            (
                "refine",
                refine,
                Letterbox::fit_region(window, refine.0, refine.1),
            ),
        ] {
            if pass == "refine" && refine == scan && name != "default" {
                continue;
            }
            let mut input = vec![0.0; 3 * w * h];
            group.bench_function(format!("{name}: letterbox, {pass} {w}x{h}"), |b| {
                b.iter(|| lb.fill(black_box(&f), &mut input).unwrap())
            });
            group.bench_function(format!("{name}: YuNet alone, {pass} {w}x{h}"), |b| {
                b.iter(|| det.run(black_box(&input)).unwrap())
            });
            group.bench_function(
                format!("{name}: the pass (letterbox, YuNet, decoding), {pass} {w}x{h}"),
                |b| b.iter(|| det.detect_in(black_box(&f), &lb).unwrap()),
            );
        }
        group.bench_function(format!("{name}: find_face (scan, then refine)"), |b| {
            b.iter(|| det.find_face(black_box(&f)).unwrap())
        });
    }
    let det = FaceDetector::load(&data_dir().join(DEFAULT_DETECTOR), None).unwrap();
    let face = det.find_face(&f).unwrap().1.unwrap();
    let mut input = vec![0.0; recipe.len()];
    group.bench_function("align: similarity and warp, sampling the frame", |b| {
        b.iter(|| {
            recipe
                .apply_aligned(black_box(&f), black_box(&face.landmarks), &mut input)
                .unwrap()
        })
    });
    group.bench_function(
        "align: similarity and warp through a grey plane (the door's)",
        |b| {
            b.iter(|| {
                let lm = black_box(&face.landmarks);
                let mut plane = vec![0.0; recipe.aligned_plane_len(&f, lm).unwrap()];
                recipe
                    .apply_aligned_in(black_box(&f), lm, &mut input, &mut plane)
                    .unwrap()
            })
        },
    );
    group.bench_function(
        "detect and align: find_face, then the warp (the door's)",
        |b| {
            b.iter(|| {
                let face = det.find_face(black_box(&f)).unwrap().1.unwrap();
                let mut plane = vec![0.0; recipe.aligned_plane_len(&f, &face.landmarks).unwrap()];
                recipe
                    .apply_aligned_in(&f, &face.landmarks, &mut input, &mut plane)
                    .unwrap()
            })
        },
    );
    recipe
        .apply_aligned(&f, &face.landmarks, &mut input)
        .unwrap();
    group.bench_function("encode (tract)", |b| {
        b.iter(|| encoder.embed(black_box(&input)).unwrap())
    });
    let query = encoder.embed(&input).unwrap();
    let mut gallery = fewshot_firmware::door::DoorGallery::<1024>::with_capacity(DEFAULT_CAPACITY);
    for i in 0..PEOPLE {
        let mut e = query.clone();
        e[i] += 1.0;
        gallery.enroll("x", &e).unwrap();
    }
    group.bench_function("match: nearest of 64 (cosine)", |b| {
        b.iter(|| {
            gallery
                .identify(
                    black_box(&query),
                    Distance::Cosine,
                    &fewshot_firmware::core::OpenSet {
                        max_distance: 0.4,
                        min_margin: 0.0,
                    },
                )
                .unwrap()
        })
    });
    let mut config = Config::new(Distance::Cosine, 0.4);
    config.max_rejections = u32::MAX;
    let pipeline = DoorEncoder::Face(Box::new(FacePipeline::new(det, encoder)));
    let (mut door, hw, events) = common::door_with_gallery(pipeline, &gallery, config);
    group.bench_function(
        "whole frame: decode PNG, then Door::poll (default detector)",
        |b| {
            b.iter(|| {
                hw.camera.push(decode_png(black_box(&png)));
                door.poll().unwrap();
                events.take()
            })
        },
    );
    group.finish();
}

criterion_group!(benches, face_frame);
criterion_main!(benches);
