//! Per-frame cost of a Matching Network's full context embeddings at the
//! door, against plain prototypes: `Door::poll` on a decoded frame with 64
//! enrolled identities for the FCE model and for the committed Prototypical
//! Network (the same Conv-4 encoder, so the difference is the attention
//! LSTM), and the two FCE graphs alone (a frame's attention over 64 people;
//! recomputing the 64 people's context after a gallery change).
//!
//! `cargo bench -p fewshot-firmware --bench fce` (data from `FEWSHOT_DATA`;
//! the FCE model `models/omniglot-matching-fce.onnx`, or
//! `DOOR_BENCH_FCE_MODEL=path` from the `firmware/` folder or absolute).
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use fewshot_firmware::camera::load_image;
use fewshot_firmware::door::{Config, DoorGallery, DEFAULT_CAPACITY};
use fewshot_firmware::encoder::OnnxEncoder;

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

/// 64 characters of images_background_small2, one image each.
fn gallery(encoder: &OnnxEncoder) -> DoorGallery<64> {
    let mut gallery = DoorGallery::<64>::with_capacity(DEFAULT_CAPACITY);
    'fill: for alphabet in images(data_dir().join("omniglot/images_background_small2")) {
        for character in images(alphabet) {
            let f = load_image(&images(character)[0]).unwrap();
            let e = encoder.embed_frame(&f.as_frame().unwrap()).unwrap();
            gallery.enroll("x", &e).unwrap();
            if gallery.len() == PEOPLE {
                break 'fill;
            }
        }
    }
    gallery
}

fn fce_cost(c: &mut Criterion) {
    let fce_model = std::env::var_os("DOOR_BENCH_FCE_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| model_path().with_file_name("omniglot-matching-fce.onnx"));
    let path =
        data_dir().join("omniglot/images_background_small2/Sanskrit/character01/0851_03.png");
    let decoded = load_image(&path).unwrap();
    let mut group = c.benchmark_group("door frame with 64 identities");
    for (name, model) in [("prototypes", model_path()), ("fce", fce_model)] {
        let encoder =
            OnnxEncoder::load(&model).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
        assert_eq!(
            encoder.fce().is_some(),
            name == "fce",
            "{}",
            model.display()
        );
        let gallery = gallery(&encoder);
        if let Some(fce) = encoder.fce() {
            let prototypes: Vec<f32> = gallery
                .iter()
                .flat_map(|i| i.prototype.iter().copied())
                .collect();
            let context = fce.context(&prototypes).unwrap();
            let frame = encoder.embed_frame(&decoded.as_frame().unwrap()).unwrap();
            group.bench_function("fce: a frame's attention over the gallery", |b| {
                b.iter(|| fce.attend(black_box(&frame), black_box(&context)).unwrap())
            });
            group.bench_function("fce: the gallery's context, after a change", |b| {
                b.iter(|| fce.context(black_box(&prototypes)).unwrap())
            });
        }
        let mut config = Config::new(encoder.distance(), 5.0);
        config.max_rejections = u32::MAX;
        let (mut door, hw, events) = common::door_with_gallery::<64, _>(encoder, &gallery, config);
        group.bench_function(format!("{name}: Door::poll on a decoded frame"), |b| {
            b.iter(|| {
                hw.camera.push(black_box(decoded.clone()));
                door.poll().unwrap();
                events.take()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fce_cost);
criterion_main!(benches);
