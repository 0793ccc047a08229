//! The core's fuzz targets (`shared/fuzz`: `gallery_decode`, `model_blob`)
//! on stable: each body over every seed (`shared/fuzz/seeds/<target>`) and
//! over a few thousand mutated seeds from proptest (a short fuzz run for CI).

use std::path::{Path, PathBuf};

use proptest::prelude::*;

#[path = "../fuzz/bodies/gallery_decode.rs"]
mod gallery_decode;
#[path = "../fuzz/bodies/model_blob.rs"]
mod model_blob;

/// The seeds of `target`, sorted by name.
fn seeds_of(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seeds", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    seeds_of("gallery_decode")
}

#[test]
fn gallery_decode_seeds() {
    for (path, bytes) in seeds() {
        let result = std::panic::catch_unwind(|| gallery_decode::run(&bytes));
        assert!(result.is_ok(), "seed {} panicked", path.display());
    }
}

/// The seeds are real galleries (after the mode byte), so the mutations
/// below start from inputs that decode.
#[test]
fn gallery_decode_seeds_decode() {
    for (path, bytes) in seeds() {
        let decoded = fewshot_core::store::decode::<8, 4>(&bytes[1..]);
        assert!(decoded.is_ok(), "seed {}: {decoded:?}", path.display());
    }
}

/// A seed (mode byte chosen at random) with up to eight bytes replaced, then
/// cut or not.
fn mutated(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = seeds_of(target).into_iter().map(|(_, b)| b).collect();
    (
        0..seeds.len(),
        any::<u8>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(move |(i, mode, edits, cut)| {
            let mut bytes = seeds[i].clone();
            bytes[0] = mode;
            for (at, b) in edits {
                let at = 1 + at.index(bytes.len() - 1);
                bytes[at] = b;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn gallery_decode_mutated(bytes in mutated("gallery_decode")) {
        gallery_decode::run(&bytes);
    }

    #[test]
    fn gallery_decode_random(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        gallery_decode::run(&bytes);
    }

    #[test]
    fn model_blob_mutated(bytes in mutated("model_blob")) {
        model_blob::run(&bytes);
    }

    #[test]
    fn model_blob_random(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        model_blob::run(&bytes);
    }
}

#[test]
fn model_blob_seeds() {
    for (path, bytes) in seeds_of("model_blob") {
        let result = std::panic::catch_unwind(|| model_blob::run(&bytes));
        assert!(result.is_ok(), "seed {} panicked", path.display());
    }
}

/// The blob seeds are real blobs (after the mode byte) that the engine runs;
/// the fuzzer's finds (`crash-*`) are kept beside them as regressions.
#[test]
fn model_blob_seeds_decode() {
    for (path, bytes) in seeds_of("model_blob").into_iter().filter(|(p, _)| {
        !p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("crash-")
    }) {
        let model = fewshot_core::engine::Model::from_bytes(&bytes[1..]);
        assert!(model.is_ok(), "seed {}: {model:?}", path.display());
    }
}

/// Writes the `model_blob` seeds: three small blobs (a plain Conv stack, a
/// linear head on an aligned three-channel face, depthwise and strided
/// layers). `cargo test -p fewshot-core --test fuzz -- --ignored`.
#[test]
#[ignore]
fn write_model_blob_seeds() {
    use fewshot_core::engine::blob::{encode, Affine, LayerSpec, OutputSpec, Spec};
    use fewshot_core::{Crop, Distance, FaceTemplate, Recipe};
    let layer = |cout: usize, cin: usize, k: usize, stride: usize, depthwise: bool, pool: bool| {
        let gin = if depthwise { 1 } else { cin };
        LayerSpec {
            cout,
            k,
            stride,
            pad: k / 2,
            depthwise,
            relu: true,
            pool,
            out: Affine {
                scale: 0.05,
                zero_point: 0,
            },
            weight_scale: (0..cout).map(|c| 0.01 + c as f32 * 0.001).collect(),
            bias: (0..cout).map(|c| c as i32 * 7 - 10).collect(),
            weight: (0..cout * gin * k * k)
                .map(|i| ((i * 37) % 255) as u8 as i8)
                .collect(),
        }
    };
    let omniglot = Spec {
        recipe: Recipe {
            width: 8,
            height: 8,
            ..Recipe::OMNIGLOT_28
        },
        distance: Distance::L2,
        threshold: None,
        gallery_thresholds: None,
        input: Affine {
            scale: 1.0 / 255.0,
            zero_point: 0,
        },
        layers: vec![
            layer(4, 1, 3, 1, false, true),
            layer(4, 4, 3, 1, false, true),
        ],
        output: OutputSpec::Flatten,
    };
    let face = Spec {
        recipe: Recipe {
            width: 8,
            height: 8,
            channels: 3,
            crop: Crop::Aligned(FaceTemplate::ARCFACE),
            invert: false,
            mean: [0.5; 3],
            std: [0.5; 3],
            ..Recipe::OMNIGLOT_28
        },
        distance: Distance::Cosine,
        threshold: Some(0.4),
        gallery_thresholds: fewshot_core::GalleryThresholds::new(&[(10, 0.45), (50, 0.4)]).ok(),
        input: Affine {
            scale: 2.0 / 255.0,
            zero_point: 128,
        },
        layers: vec![layer(3, 3, 3, 1, false, true)],
        output: OutputSpec::Linear {
            dim: 5,
            weight_scale: vec![0.01; 5],
            bias: vec![0.1, -0.1, 0.0, 0.2, -0.2],
            weight: (0..5 * 3 * 16)
                .map(|i: usize| ((i * 11) % 255) as u8 as i8)
                .collect(),
        },
    };
    let mobile = Spec {
        recipe: Recipe {
            width: 9,
            height: 9,
            ..Recipe::OMNIGLOT_28
        },
        distance: Distance::Dot,
        threshold: None,
        gallery_thresholds: None,
        input: Affine {
            scale: 1.0 / 255.0,
            zero_point: 3,
        },
        layers: vec![
            layer(4, 1, 3, 2, false, false),
            layer(4, 4, 3, 1, true, false),
            layer(6, 4, 1, 1, false, false),
        ],
        output: OutputSpec::Flatten,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/model_blob");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, spec) in [
        ("conv", omniglot),
        ("face-linear", face),
        ("depthwise-stride", mobile),
    ] {
        let mut bytes = vec![0u8];
        bytes.extend(encode(&spec).unwrap());
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The fuzzer's find `crash-i32-overflow` (mode byte odd: length and CRC
/// patched) is refused for what it is: sums that overflow i32.
#[test]
fn the_overflow_find_is_refused_by_its_field() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/model_blob/crash-i32-overflow");
    let mut bytes = std::fs::read(path).unwrap()[1..].to_vec();
    let n = bytes.len();
    bytes[8..12].copy_from_slice(&(n as u32).to_le_bytes());
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    let err = fewshot_core::engine::Model::from_bytes(&bytes).unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");
}
