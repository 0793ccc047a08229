//! Helpers shared by the firmware's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use fewshot_firmware::camera::{load_image, OwnedFrame};

/// The data folder: `FEWSHOT_DATA`, else `../shared/data` beside the repo.
/// Fails, saying where it looked, when it is missing.
pub fn data_dir() -> PathBuf {
    let d = std::env::var_os("FEWSHOT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    assert!(
        d.join("MANIFEST.sha256").is_file(),
        "test data not found at {} (set FEWSHOT_DATA)",
        d.display()
    );
    d
}

/// The committed Omniglot model.
pub fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/omniglot-protonet.onnx")
}

/// Image `n` (1-20) of a Sanskrit character in `images_background_small2`
/// (not among the committed model's training classes).
pub fn sanskrit(character: u32, n: u32) -> PathBuf {
    let dir = data_dir().join(format!(
        "omniglot/images_background_small2/Sanskrit/character{character:02}"
    ));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files[n as usize - 1].clone()
}

/// An image as a camera frame.
pub fn frame(path: &std::path::Path) -> OwnedFrame {
    load_image(path).unwrap_or_else(|e| panic!("{e}"))
}

/// A door on simulated hardware booted with `gallery` already stored (the
/// benches' setup): the door, its hardware and its events.
pub fn door_with_gallery<const DIM: usize, E: fewshot_firmware::door::Encoder>(
    encoder: E,
    gallery: &fewshot_firmware::door::DoorGallery<DIM>,
    config: fewshot_firmware::door::Config,
) -> (
    fewshot_firmware::sim::SimDoor<
        DIM,
        E,
        fewshot_firmware::storage::MemStorage,
        fewshot_firmware::events::Recorder,
    >,
    fewshot_firmware::sim::SimHardware,
    fewshot_firmware::events::Recorder,
) {
    let mut bytes = vec![0; gallery.encoded_len()];
    fewshot_firmware::core::store::encode(gallery, 1, &mut bytes).unwrap();
    let hw = fewshot_firmware::sim::SimHardware::new();
    let events = fewshot_firmware::events::Recorder::new();
    let door = fewshot_firmware::door::Door::boot(
        encoder,
        hw.io(),
        hw.camera.clone(),
        fewshot_firmware::storage::MemStorage::with_bytes(bytes),
        events.clone(),
        config,
    )
    .unwrap();
    (door, hw, events)
}

/// Small deterministic generator for placements.
pub struct Lcg(pub u64);
impl Lcg {
    /// The next number in `0..n`.
    pub fn next(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }
}
