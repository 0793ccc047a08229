//! Per-frame latency of the door with the committed Omniglot model: a camera
//! frame through `Door::poll` (preprocessing, tract encoder, nearest of 64
//! enrolled identities, open-set decision, events), with the frame already
//! decoded, and with reading and decoding its PNG file included.
//!
//! `cargo bench -p fewshot-firmware --bench frame` (data from `FEWSHOT_DATA`,
//! else `../shared/data`; another 64-d model with `DOOR_BENCH_MODEL=path`,
//! given from the `firmware/` folder or absolute).
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use fewshot_firmware::camera::load_image;
use fewshot_firmware::door::{Config, DEFAULT_CAPACITY};
use fewshot_firmware::encoder::OnnxEncoder;

// The integration tests' helpers: the data folder and the committed model.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{data_dir, model_path};

/// People enrolled in the measured door (the figures of the README were taken at 64).
const PEOPLE: usize = 64;

fn images(dir: PathBuf) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn frame_latency(c: &mut Criterion) {
    let model = std::env::var_os("DOOR_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(model_path);
    let encoder = OnnxEncoder::load(&model).unwrap();
    let mut config = Config::new(encoder.distance(), 5.0);
    // Every frame is matched: no cool-down however many strangers.
    config.max_rejections = u32::MAX;
    // A full gallery: 64 characters of images_background_small2, one image each.
    let alphabets = data_dir().join("omniglot/images_background_small2");
    let mut gallery = fewshot_firmware::door::DoorGallery::<64>::with_capacity(DEFAULT_CAPACITY);
    'fill: for alphabet in images(alphabets) {
        for character in images(alphabet) {
            let f = load_image(&images(character)[0]).unwrap();
            let e = encoder.embed_frame(&f.as_frame().unwrap()).unwrap();
            gallery.enroll("x", &e).unwrap();
            if gallery.len() == PEOPLE {
                break 'fill;
            }
        }
    }
    let (mut door, hw, events) = common::door_with_gallery::<64, _>(encoder, &gallery, config);
    assert_eq!(door.gallery().len(), PEOPLE);
    let path =
        data_dir().join("omniglot/images_background_small2/Sanskrit/character01/0851_03.png");
    let decoded = load_image(&path).unwrap();

    let mut group = c.benchmark_group("door frame (105x105 PNG, 64 identities)");
    group.bench_function("decoded frame: preprocess, encode, match, decide", |b| {
        b.iter(|| {
            hw.camera.push(black_box(decoded.clone()));
            door.poll().unwrap();
            events.take()
        })
    });
    group.bench_function("from the file: read and decode PNG, then the same", |b| {
        b.iter(|| {
            hw.camera.push(load_image(black_box(&path)).unwrap());
            door.poll().unwrap();
            events.take()
        })
    });
    group.bench_function("decode alone: read and decode PNG", |b| {
        b.iter(|| load_image(black_box(&path)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, frame_latency);
criterion_main!(benches);
