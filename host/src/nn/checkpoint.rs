//! Checkpoints: weights in safetensors plus a JSON file of the same name that
//! records everything needed to rebuild and evaluate the model.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fewshot_core::{Distance, Recipe};
use serde::{Deserialize, Serialize};

use super::encoder::{Encoder, EncoderConfig};
use super::matching::{MatchingConfig, MatchingHead};
use crate::embed::{check_shape, EmbedError, Embedder};

/// Version of the checkpoint JSON this code writes.
pub const FORMAT: u32 = 1;

pub use fewshot_core::preprocess::RecipeSpec;

/// Everything needed to rebuild and evaluate a trained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Checkpoint format version.
    pub format: u32,
    /// The few-shot method that trained it (`protonet`).
    pub method: String,
    /// Encoder architecture.
    pub encoder: EncoderConfig,
    /// Input preprocessing.
    pub recipe: RecipeSpec,
    /// Distance the method classifies with (`l2`, `cosine`, `dot`).
    pub distance: String,
    /// A Matching Network's head (its variables under `head.`), if the
    /// method is `matching`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<MatchingConfig>,
    /// MAML's settings (its N-way head under `head.`), if the method is `maml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maml: Option<super::maml::MamlConfig>,
    /// Free-form record of the training run (data, split, seed, episodes, commit, figures).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// Errors reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The JSON config is malformed.
    #[error("{}: not a valid checkpoint config: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The weights do not load or do not match the config.
    #[error("{}: {message}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The JSON file that goes with a weights file (`best.safetensors` → `best.json`).
pub fn config_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Writes `weights` (safetensors) and its JSON config, each through a
/// temporary file and a rename so a crash never leaves a half-written file.
pub fn save(weights: &Path, varmap: &VarMap, config: &ModelConfig) -> Result<(), CheckpointError> {
    let tmp = weights.with_extension("safetensors.tmp");
    varmap.save(&tmp).map_err(|e| CheckpointError::Weights {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    let json = serde_json::to_vec_pretty(config).map_err(|source| CheckpointError::Json {
        path: config_path(weights),
        source,
    })?;
    write_atomic(&config_path(weights), &json)?;
    std::fs::rename(&tmp, weights).map_err(|source| CheckpointError::Io {
        path: weights.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    use std::io::Write;
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a checkpoint's JSON config.
pub fn load_config(weights: &Path) -> Result<ModelConfig, CheckpointError> {
    let path = config_path(weights);
    let text = std::fs::read(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?;
    let config: ModelConfig =
        serde_json::from_slice(&text).map_err(|source| CheckpointError::Json {
            path: path.clone(),
            source,
        })?;
    if config.format != FORMAT {
        return Err(CheckpointError::Weights {
            path,
            message: format!(
                "checkpoint format {} is not supported (expected {FORMAT})",
                config.format
            ),
        });
    }
    Ok(config)
}

/// The classes a training record names: its `classes` list, or else the
/// classes found in its training folder if that folder is here.
pub fn trained_classes(training: &serde_json::Value) -> Option<Vec<String>> {
    if let Some(list) = training["classes"].as_array() {
        return list.iter().map(|c| c.as_str().map(String::from)).collect();
    }
    let dir = PathBuf::from(training["run"]["data"].as_str()?);
    let set = crate::data::ClassSet::load(&dir, crate::data::Layout::Auto).ok()?;
    Some(set.classes.into_iter().map(|c| c.name).collect())
}

/// The Matching Network head of checkpoint `weights` (none if it is not a
/// Matching Network).
pub fn load_matching_head(weights: &Path) -> Result<Option<MatchingHead>, CheckpointError> {
    let config = load_config(weights)?;
    let Some(matching) = config.matching else {
        return Ok(None);
    };
    let bad = |message: String| CheckpointError::Weights {
        path: weights.to_path_buf(),
        message,
    };
    let similarity = Distance::from_name(&config.distance)
        .ok_or_else(|| bad(format!("unknown similarity `{}`", config.distance)))?;
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let head = MatchingHead::new(matching, similarity, config.encoder.dim(), vb.pp("head"))
        .map_err(|e| bad(e.to_string()))?;
    varmap.load(weights).map_err(|e| {
        bad(format!(
            "the Matching Network head {matching:?} does not load: {e}"
        ))
    })?;
    Ok(Some(head))
}

/// The meta-parameters of a MAML checkpoint `weights` (none if it is not one).
pub fn load_maml(weights: &Path) -> Result<Option<super::maml::MamlModel>, CheckpointError> {
    let config = load_config(weights)?;
    let Some(maml) = config.maml else {
        return Ok(None);
    };
    let bad = |message: String| CheckpointError::Weights {
        path: weights.to_path_buf(),
        message,
    };
    let tensors =
        candle_core::safetensors::load(weights, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    let params = super::maml::parameter_names()
        .iter()
        .map(|n| {
            tensors
                .get(n)
                .cloned()
                .ok_or_else(|| bad(format!("a MAML checkpoint without {n}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let k_way = params[super::maml::HEAD]
        .dim(0)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Some(super::maml::MamlModel {
        params,
        config: maml,
        k_way,
    }))
}

/// A trained encoder loaded for evaluation (batch norm in inference mode).
pub struct CandleEmbedder {
    name: String,
    config: ModelConfig,
    recipe: Recipe,
    encoder: Box<dyn Encoder>,
}

impl CandleEmbedder {
    /// Loads `weights` and the JSON config beside it.
    pub fn load(weights: &Path) -> Result<Self, CheckpointError> {
        let config = load_config(weights)?;
        let bad = |message: String| CheckpointError::Weights {
            path: weights.to_path_buf(),
            message,
        };
        let recipe = config.recipe.recipe().map_err(|e| bad(e.to_string()))?;
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let encoder = config.encoder.build(vb).map_err(|e| bad(e.to_string()))?;
        varmap.load(weights).map_err(|e| {
            bad(format!(
                "weights do not match the {:?} encoder: {e}",
                config.encoder
            ))
        })?;
        Ok(CandleEmbedder {
            name: weights.display().to_string(),
            config,
            recipe,
            encoder,
        })
    }

    /// The checkpoint's config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
}

impl Embedder for CandleEmbedder {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn recipe(&self) -> Recipe {
        self.recipe
    }

    fn dim(&self) -> usize {
        self.config.encoder.dim()
    }

    fn embed(&self, images: &[f32]) -> Result<Vec<f32>, EmbedError> {
        let r = self.recipe;
        check_shape(images, r.len())?;
        let n = images.len() / r.len();
        let backend = |e: candle_core::Error| EmbedError::Backend(e.to_string());
        let x = Tensor::from_slice(images, (n, r.channels, r.height, r.width), &Device::Cpu)
            .map_err(backend)?;
        let out = self.encoder.embed(&x, false).map_err(backend)?;
        out.flatten_all()
            .map_err(backend)?
            .to_vec1::<f32>()
            .map_err(backend)
    }

    fn distance(&self) -> Option<Distance> {
        Distance::from_name(&self.config.distance)
    }

    fn trained_classes(&self) -> Option<Vec<String>> {
        trained_classes(&self.config.training)
    }
}
