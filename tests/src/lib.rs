//! End-to-end tests live in `tests/`; this library holds what they share.
use std::path::{Path, PathBuf};

use fewshot_core::Recipe;
use fewshot_host::episode::EpisodeShape;
use fewshot_host::nn::encoder::EncoderConfig;
use fewshot_host::train::{train_protonet, StopAt, TrainConfig};

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

/// The Python that runs the second ONNX runtime (onnx, onnxruntime, numpy):
/// `FEWSHOT_PYTHON`, which `./test.sh` sets to the virtual environment it
/// makes, else `python3`.
pub fn python() -> String {
    std::env::var("FEWSHOT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Trains a Conv-4 of `hidden` channels with Prototypical Networks (5-way
/// 1-shot 3-query, rotations, seed 3) for `episodes` episodes on the first
/// `characters` Greek characters of `images_background_small1`, in `dir`, so
/// batch norm has real running statistics. Returns the best checkpoint.
pub fn tiny_checkpoint(dir: &Path, characters: usize, hidden: usize, episodes: usize) -> PathBuf {
    tiny_checkpoint_embedding(dir, characters, hidden, episodes, None)
}

/// [`tiny_checkpoint`] with a linear embedding of `embedding` dimensions on
/// the flattened features (as distilled students have).
pub fn tiny_checkpoint_embedding(
    dir: &Path,
    characters: usize,
    hidden: usize,
    episodes: usize,
    embedding: Option<usize>,
) -> PathBuf {
    tiny_checkpoint_with(
        dir,
        characters,
        conv4_28(hidden, embedding),
        Recipe::OMNIGLOT_28,
        episodes,
    )
}

/// Conv-4 of `hidden` channels on 28×28 grey inputs.
fn conv4_28(hidden: usize, embedding: Option<usize>) -> EncoderConfig {
    EncoderConfig::Conv4 {
        in_channels: 1,
        hidden,
        widths: None,
        depths: None,
        input_size: 28,
        embedding,
    }
}

/// [`tiny_checkpoint`] of any encoder and input recipe.
pub fn tiny_checkpoint_with(
    dir: &Path,
    characters: usize,
    encoder: EncoderConfig,
    recipe: Recipe,
    episodes: usize,
) -> PathBuf {
    tiny_run(dir, characters, encoder, recipe, episodes, Method::Protonet)
}

/// [`tiny_checkpoint`] trained by `method` (a Matching Network with l2
/// attention, or MAML with a 5-way head) instead of Prototypical Networks.
pub fn tiny_checkpoint_by(
    dir: &Path,
    characters: usize,
    hidden: usize,
    episodes: usize,
    method: Method,
) -> PathBuf {
    let encoder = conv4_28(hidden, None);
    tiny_run(
        dir,
        characters,
        encoder,
        Recipe::OMNIGLOT_28,
        episodes,
        method,
    )
}

/// How a tiny run trains.
pub enum Method {
    /// Prototypical Networks.
    Protonet,
    /// A Matching Network of this head.
    Matching(fewshot_host::nn::matching::MatchingConfig),
    /// MAML of these settings.
    Maml(fewshot_host::nn::maml::MamlConfig),
}

fn tiny_run(
    dir: &Path,
    characters: usize,
    encoder: EncoderConfig,
    recipe: Recipe,
    episodes: usize,
    method: Method,
) -> PathBuf {
    let greek = data_dir().join("omniglot/images_background_small1/Greek");
    let data = dir.join("data/Greek");
    std::fs::create_dir_all(&data).unwrap();
    for i in 1..=characters {
        let c = format!("character{i:02}");
        std::os::unix::fs::symlink(greek.join(&c), data.join(&c)).unwrap();
    }
    let config = TrainConfig {
        data: dir.join("data"),
        shape: EpisodeShape {
            k_way: 5,
            n_shot: 1,
            q_queries: 3,
        },
        episodes,
        lr: 3e-3,
        lr_step: 1000,
        lr_gamma: 0.5,
        val_every: episodes,
        val_episodes: 0,
        val_fraction: 0.0,
        val_k_way: None,
        rotations: true,
        affine: None,
        encoder,
        recipe: recipe.into(),
        distance: "l2".into(),
        seed: 3,
        init: None,
        extra_train: Vec::new(),
        within_alphabet: 0.0,
    };
    let out = dir.join("run");
    let stop = StopAt::default();
    match method {
        Method::Protonet => train_protonet(&config, &out, false, stop, false),
        Method::Matching(m) => {
            fewshot_host::train::train_matching(&config, &m, &out, false, stop, false)
        }
        Method::Maml(m) => fewshot_host::train::train_maml(&config, &m, &out, false, stop, false),
    }
    .unwrap();
    dir.join("run/best.safetensors")
}

/// Image `n` (1-20) of a Tagalog character of `images_background_small2`
/// (an alphabet the tiny models never saw).
pub fn tagalog(character: u32, n: usize) -> PathBuf {
    let dir = data_dir().join(format!(
        "omniglot/images_background_small2/Tagalog/character{character:02}"
    ));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files[n - 1].clone()
}
