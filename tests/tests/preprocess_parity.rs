//! Host and device apply the same preprocessing: the host decodes an image file
//! with the `image` crate, the device gets raw camera bytes; both go through
//! `fewshot_core::Recipe::apply`, and the tensors must be bit-identical.

use fewshot_core::{Crop, Frame, PixelFormat, Recipe, Resize};
use fewshot_e2e::data_dir;
use fewshot_host::data::preprocess_file;

/// A camera-style frame from a binary PGM, parsed by hand (no image crate).
fn raw_pgm(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8(bytes[start..at].to_vec()).unwrap());
    }
    assert_eq!(fields[0], "P5");
    assert_eq!(fields[3], "255");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let pixels = bytes[at + 1..at + 1 + w * h].to_vec();
    (w, h, pixels)
}

#[test]
fn host_file_path_and_device_frame_path_give_identical_tensors() {
    let path = data_dir().join("faces/orl/s7/3.pgm");
    let (w, h, pixels) = raw_pgm(&std::fs::read(&path).unwrap());
    let frame = Frame::new(w, h, PixelFormat::Gray8, &pixels).unwrap();
    for recipe in [
        Recipe::OMNIGLOT_28,
        Recipe {
            width: 64,
            height: 64,
            channels: 1,
            crop: Crop::CenterSquare(0.8),
            resize: Resize::Bilinear,
            invert: false,
            mean: [0.5; 3],
            std: [0.25; 3],
        },
        Recipe {
            channels: 3,
            resize: Resize::Area,
            ..Recipe::OMNIGLOT_28
        },
    ] {
        let host = preprocess_file(&path, &recipe).unwrap();
        let mut device = vec![0.0f32; recipe.len()];
        recipe.apply(&frame, &mut device).unwrap();
        assert_eq!(host.len(), device.len());
        assert!(
            host.iter()
                .zip(&device)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "tensors differ for {recipe:?}"
        );
    }
}
