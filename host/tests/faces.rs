//! Aligned preprocessing of image files: faces found by the device's
//! detector, cached on disk and read back, and the stated fallback for an
//! image without a face.
mod common;

use fewshot_core::{FaceTemplate, Recipe};
use fewshot_firmware::camera::load_image;
use fewshot_firmware::detect::{FaceDetector, DEFAULT_DETECTOR};
use fewshot_host::data::faces::{fallback_landmarks, FaceIndex, Found};

fn aligned() -> Recipe {
    common::aligned_grey(64)
}

#[test]
fn faces_are_found_cached_read_back_and_missing_ones_reported() {
    let data = common::data_dir();
    let detector_path = data.join(DEFAULT_DETECTOR);
    let cache = tempfile::tempdir().unwrap();
    let template = FaceTemplate::ARCFACE;
    let orl = data.join("faces/orl/s1/1.pgm");
    let character = data.join("omniglot/images_background_small2/Sanskrit/character01/0851_03.png");

    let index = FaceIndex::open(&detector_path, Some(cache.path())).unwrap();
    let image = load_image(&orl).unwrap();
    let found = index
        .face_of(&orl, &image.as_frame().unwrap(), &template)
        .unwrap();
    // The face is the device's: the detector's `find_face` on the same frame.
    let device = FaceDetector::load(&detector_path, None).unwrap();
    let (_, want) = device.find_face(&image.as_frame().unwrap()).unwrap();
    assert_eq!(found, Found::Face(want.unwrap()));

    // A drawing has no face: the template on the centred half square, recorded.
    let drawing = load_image(&character).unwrap();
    let fallback = index
        .face_of(&character, &drawing.as_frame().unwrap(), &template)
        .unwrap();
    assert_eq!(
        fallback,
        Found::Fallback(fallback_landmarks(105, 105, &template))
    );
    // By hand: the square is 52.5 px at (26.25, 26.25); the first eye is at
    // 38.2946 / 112 of it.
    let eye = fallback_landmarks(105, 105, &template)[0];
    assert!((eye[0] - (26.25 + 52.5 * 38.2946 / 112.0)).abs() < 1e-4);
    assert_eq!(index.no_face_files(), vec![character.clone()]);

    // The cache holds both, one JSON line each, and a new index reads them
    // back instead of detecting: a face edited in the file is what it returns.
    let file = index.cache_file().unwrap().to_path_buf();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let orl_line = lines.iter_mut().find(|l| l["face"].is_object()).unwrap();
    orl_line["face"]["landmarks"][0][0] = serde_json::json!(1.5);
    let edited: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, edited + "{not json, a write cut short\n").unwrap();
    let again = FaceIndex::open(&detector_path, Some(cache.path())).unwrap();
    let read = again
        .face_of(&orl, &image.as_frame().unwrap(), &template)
        .unwrap();
    assert_eq!(read.landmarks()[0][0], 1.5);
    assert!(matches!(
        again
            .face_of(&character, &drawing.as_frame().unwrap(), &template)
            .unwrap(),
        Found::Fallback(_)
    ));

    // Another detector (the 640×640 one) does not read these faces.
    let other = FaceIndex::open(
        &data.join("models/yunet_s_640_640.onnx"),
        Some(cache.path()),
    )
    .unwrap();
    assert_ne!(other.cache_file(), index.cache_file());

    // A file that is not a detector is named.
    let junk = cache.path().join("junk.onnx");
    std::fs::write(&junk, b"junk").unwrap();
    let err = FaceIndex::open(&junk, None).err().unwrap().to_string();
    assert!(
        err.contains("junk.onnx") && err.contains("FEWSHOT_DETECTOR"),
        "{err}"
    );
}

#[test]
fn an_aligned_recipe_preprocesses_files_through_the_face() {
    // The process-wide index reads FEWSHOT_DATA and FEWSHOT_CACHE.
    let data = common::data_dir();
    let cache = tempfile::tempdir().unwrap();
    // SAFETY of the test: set before any index is opened in this process
    // (this test binary's other test uses explicit indexes only).
    std::env::set_var("FEWSHOT_DATA", &data);
    std::env::set_var("FEWSHOT_CACHE", cache.path());
    let yale = data.join("faces/yale/subject02/normal.png");
    let character = data.join("omniglot/images_background_small2/Sanskrit/character01/0851_03.png");
    let tensors =
        fewshot_host::data::Tensors::load(&[yale.clone(), character.clone()], &aligned(), false)
            .unwrap();
    assert_eq!(fewshot_host::data::faces::no_face_files(), vec![character]);
    // Row 0 is the core's warp of the frame by the device's face.
    let frame = load_image(&yale).unwrap();
    let device = FaceDetector::load(&data.join(DEFAULT_DETECTOR), None).unwrap();
    let (_, face) = device.find_face(&frame.as_frame().unwrap()).unwrap();
    let mut want = vec![0.0; aligned().len()];
    aligned()
        .apply_aligned(
            &frame.as_frame().unwrap(),
            &face.unwrap().landmarks,
            &mut want,
        )
        .unwrap();
    assert_eq!(tensors.row(0), &want[..]);
}
