//! Helpers shared by the host tests.
#![allow(dead_code)]
use std::path::PathBuf;

/// The real data folder (`FEWSHOT_DATA` or `../shared/data` beside the repo).
/// Fails the test, saying where it looked, when the data is not there.
pub fn data_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("FEWSHOT_DATA") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
            PathBuf::from("../shared/data"),
        ],
    };
    for c in &candidates {
        if c.join("MANIFEST.sha256").is_file() {
            return c.clone();
        }
    }
    panic!(
        "test data not found: looked for MANIFEST.sha256 in {} (set FEWSHOT_DATA to the data folder)",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(" and ")
    );
}

/// The aligned grey face recipe at `size`×`size` (ArcFace template, area resize).
pub fn aligned_grey(size: usize) -> fewshot_core::Recipe {
    use fewshot_core::{Crop, FaceTemplate, Recipe, Resize};
    Recipe {
        width: size,
        height: size,
        channels: 1,
        crop: Crop::Aligned(FaceTemplate::ARCFACE),
        resize: Resize::Area,
        invert: false,
        mean: [0.0; 3],
        std: [1.0; 3],
    }
}

/// A folder `dir/Greek` of symbolic links to the first `n` characters of the
/// Greek alphabet of `images_background_small1`.
pub fn greek_subset(dir: &std::path::Path, n: usize) {
    let greek = data_dir().join("omniglot/images_background_small1/Greek");
    let alphabet = dir.join("Greek");
    std::fs::create_dir_all(&alphabet).unwrap();
    let mut chars: Vec<_> = std::fs::read_dir(&greek)
        .unwrap_or_else(|e| panic!("{}: {e}", greek.display()))
        .map(|e| e.unwrap().path())
        .collect();
    chars.sort();
    for c in chars.iter().take(n) {
        std::os::unix::fs::symlink(c, alphabet.join(c.file_name().unwrap())).unwrap();
    }
}

/// The tiny runs' settings: 5-way 1-shot 5-query episodes on `data`, Conv-4
/// of 16 channels on Omniglot's 28×28 recipe, Adam 3e-3, validation every 20
/// episodes on 50 episodes of a quarter of the classes, rotations, seed 1.
pub fn tiny_config(data: &std::path::Path, episodes: usize) -> fewshot_host::train::TrainConfig {
    use fewshot_host::episode::EpisodeShape;
    use fewshot_host::nn::encoder::EncoderConfig;
    fewshot_host::train::TrainConfig {
        data: data.to_path_buf(),
        shape: EpisodeShape {
            k_way: 5,
            n_shot: 1,
            q_queries: 5,
        },
        episodes,
        lr: 3e-3,
        lr_step: 1000,
        lr_gamma: 0.5,
        val_every: 20,
        val_episodes: 50,
        val_fraction: 0.25,
        val_k_way: None,
        rotations: true,
        affine: None,
        encoder: EncoderConfig::Conv4 {
            in_channels: 1,
            hidden: 16,
            widths: None,
            depths: None,
            input_size: 28,
            embedding: None,
        },
        recipe: fewshot_core::Recipe::OMNIGLOT_28.into(),
        distance: "l2".into(),
        seed: 1,
        init: None,
        extra_train: Vec::new(),
        within_alphabet: 0.0,
    }
}
