//! An exported encoder, loaded and run by tract, configured by the model's
//! own metadata (preprocessing, embedding size, distance, threshold); or a
//! model blob (`.fsmcu`, `fewshot export --mcu`) run by the core's int8
//! engine, configured by the blob's header.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fewshot_core::model_meta;
use fewshot_core::preprocess::RecipeSpec;
use fewshot_core::{Distance, Frame, Recipe};
use prost::Message;
use tract_onnx::prelude::*;

/// Errors of loading or running an encoder; each names the model file.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not an ONNX model tract can run.
    #[error("{}: not a usable ONNX model: {message}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file is not a model blob the engine can run, or the door cannot
    /// give it what it needs.
    #[error("{}: not a usable model blob: {message}", path.display())]
    Blob {
        /// The blob file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The model lacks this project's metadata, or it is malformed.
    #[error("{}: metadata {key}: {message}", path.display())]
    Metadata {
        /// The model file.
        path: PathBuf,
        /// The metadata key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An input of the wrong size.
    #[error("input has {found} values, the model takes {expected}")]
    Input {
        /// Values the model takes.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The frame could not be preprocessed.
    #[error("frame: {0}")]
    Frame(#[from] fewshot_core::PreprocessError),
    /// tract failed while running the model.
    #[error("running the model: {0}")]
    Run(String),
}

/// What runs a loaded encoder.
enum Net {
    /// An ONNX model, optimised by tract.
    Tract(std::sync::Arc<TypedRunnableModel>),
    /// A model blob, run by [`fewshot_core::engine`] (checked when loaded).
    Engine(Vec<u8>),
}

/// File extension of model blobs (`fewshot export --mcu`).
pub const BLOB_EXTENSION: &str = "fsmcu";

/// Most working memory (activations and accumulators) a model blob may ask
/// the door for: 64 MiB.
pub const MAX_ARENA_BYTES: usize = 64 << 20;

/// A loaded encoder: an ONNX model run by tract, or a model blob run by the
/// core's int8 engine (as on a microcontroller).
pub struct OnnxEncoder {
    net: Net,
    recipe: Recipe,
    dim: usize,
    distance: Distance,
    threshold: Option<f32>,
    gallery_thresholds: Option<fewshot_core::GalleryThresholds>,
    flip_average: bool,
    metadata: HashMap<String, String>,
    path: PathBuf,
    fce: Option<crate::matching::Fce>,
}

impl OnnxEncoder {
    /// Loads `path`, checks its metadata, fixes the input shape to one image
    /// and optimises the model for running.
    /// A `.fsmcu` file is a model blob: checked field by field, run by the
    /// core's engine.
    pub fn load(path: &Path) -> Result<Self, EncoderError> {
        let bytes = std::fs::read(path).map_err(|source| EncoderError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let model_err = |message: String| EncoderError::Model {
            path: path.to_path_buf(),
            message,
        };
        if path.extension().is_some_and(|e| e == BLOB_EXTENSION) {
            return Self::from_blob(path, bytes);
        }
        let proto =
            tract_onnx::pb::ModelProto::decode(&bytes[..]).map_err(|e| model_err(e.to_string()))?;
        let metadata: HashMap<String, String> = proto
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        let ModelMeta {
            recipe,
            dim,
            distance,
            threshold,
            gallery_thresholds,
            flip_average,
            fce,
        } = ModelMeta::from_metadata(&metadata).map_err(|e| EncoderError::Metadata {
            path: path.to_path_buf(),
            key: e.key,
            message: e.message,
        })?;
        let shape = [1, recipe.channels, recipe.height, recipe.width];
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| model_err(format!("{e:#}")))?;
        let fce = if fce {
            Some(crate::matching::Fce::load_beside(path, dim)?)
        } else {
            None
        };
        let encoder = OnnxEncoder {
            net: Net::Tract(plan),
            recipe,
            dim,
            distance,
            threshold,
            gallery_thresholds,
            flip_average,
            metadata,
            path: path.to_path_buf(),
            fce,
        };
        // The declared embedding size must be what the graph produces.
        let probe = encoder
            .embed(&vec![0.0; recipe.len()])
            .map_err(|e| model_err(e.to_string()))?;
        if probe.len() != dim {
            return Err(EncoderError::Metadata {
                path: path.to_path_buf(),
                key: model_meta::EMBEDDING_SIZE,
                message: format!("says {dim}, the model produces {}", probe.len()),
            });
        }
        Ok(encoder)
    }

    /// A model blob's encoder (its header gives the recipe, embedding size,
    /// distance, threshold and gallery thresholds).
    fn from_blob(path: &Path, bytes: Vec<u8>) -> Result<Self, EncoderError> {
        let model_err = |message: String| EncoderError::Blob {
            path: path.to_path_buf(),
            message,
        };
        let (header, dim) = {
            let model = fewshot_core::engine::Model::from_bytes(&bytes)
                .map_err(|e| model_err(e.to_string()))?;
            (*model.header(), model.dim())
        };
        if header.recipe.len() > MAX_INPUT_VALUES {
            return Err(model_err(format!(
                "its input has {} values, the door takes at most {MAX_INPUT_VALUES}",
                header.recipe.len()
            )));
        }
        let arena = header
            .arena_bytes
            .saturating_add(header.accumulator_words.saturating_mul(4));
        if arena > MAX_ARENA_BYTES {
            return Err(model_err(format!(
                "it needs {arena} bytes of working memory, the door gives at most {MAX_ARENA_BYTES}"
            )));
        }
        Ok(OnnxEncoder {
            net: Net::Engine(bytes),
            recipe: header.recipe,
            dim,
            distance: header.distance,
            threshold: header.threshold,
            gallery_thresholds: header.gallery_thresholds,
            flip_average: false,
            metadata: HashMap::new(),
            path: path.to_path_buf(),
            fce: None,
        })
    }

    /// Embeds one preprocessed image (`recipe().len()` values, CHW).
    /// With [`model_meta::FLIP_AVERAGE`], the mean of the embeddings of the
    /// input and of its mirror image.
    pub fn embed(&self, input: &[f32]) -> Result<Vec<f32>, EncoderError> {
        let r = self.recipe;
        if input.len() != r.len() {
            return Err(EncoderError::Input {
                expected: r.len(),
                found: input.len(),
            });
        }
        let mut out = self.run(input.to_vec())?;
        if self.flip_average {
            let mut mirror = input.to_vec();
            for row in mirror.chunks_mut(r.width) {
                row.reverse();
            }
            for (o, m) in out.iter_mut().zip(self.run(mirror)?) {
                *o = (*o + m) / 2.0;
            }
        }
        Ok(out)
    }

    /// Whether embeddings average the input's and its mirror image's.
    pub fn flip_average(&self) -> bool {
        self.flip_average
    }

    /// One run of the model on one CHW image.
    fn run(&self, input: Vec<f32>) -> Result<Vec<f32>, EncoderError> {
        let r = self.recipe;
        let plan = match &self.net {
            Net::Tract(plan) => plan,
            Net::Engine(bytes) => {
                let run = |e: &dyn std::fmt::Display| EncoderError::Run(e.to_string());
                let mut engine =
                    fewshot_door::engine::EngineEncoder::new(bytes).map_err(|e| run(&e))?;
                return engine.embed(&input).map_err(|e| run(&e));
            }
        };
        let tensor =
            tract_ndarray::Array4::from_shape_vec((1, r.channels, r.height, r.width), input)
                .map_err(|e| EncoderError::Run(e.to_string()))?;
        let out = plan
            .run(tvec!(Tensor::from(tensor).into()))
            .map_err(|e| EncoderError::Run(format!("{e:#}")))?;
        let view = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| EncoderError::Run(e.to_string()))?;
        Ok(view.iter().copied().collect())
    }

    /// Preprocesses a camera frame with the model's recipe and embeds it. A
    /// model that aligns faces needs the landmarks: [`OnnxEncoder::embed_face`].
    pub fn embed_frame(&self, frame: &Frame<'_>) -> Result<Vec<f32>, EncoderError> {
        let mut input = vec![0.0; self.recipe.len()];
        self.recipe.apply(frame, &mut input)?;
        self.embed(&input)
    }

    /// Embeds the face with these five landmarks (frame pixels): aligned
    /// onto the model's template when its recipe aligns, else as
    /// [`OnnxEncoder::embed_frame`].
    pub fn embed_face(
        &self,
        frame: &Frame<'_>,
        landmarks: &fewshot_core::Landmarks,
    ) -> Result<Vec<f32>, EncoderError> {
        let mut input = vec![0.0; self.recipe.len()];
        // The frame under the face, converted once (the warp samples each
        // pixel many times): the same crop, about a fifth of the time.
        let mut plane = vec![0.0; self.recipe.aligned_plane_len(frame, landmarks)?];
        self.recipe
            .apply_aligned_in(frame, landmarks, &mut input, &mut plane)?;
        self.embed(&input)
    }

    /// The preprocessing the model expects.
    pub fn recipe(&self) -> Recipe {
        self.recipe
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The distance the model was trained with.
    pub fn distance(&self) -> Distance {
        self.distance
    }

    /// The calibrated rejection threshold, if the model carries one.
    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// The thresholds for galleries of several sizes, if the model carries them.
    pub fn gallery_thresholds(&self) -> Option<fewshot_core::GalleryThresholds> {
        self.gallery_thresholds
    }

    /// A Matching Network's full context embeddings, if the model has them.
    pub fn fce(&self) -> Option<&crate::matching::Fce> {
        self.fce.as_ref()
    }

    /// All metadata entries.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The door's default configuration for this model: its distance and its
    /// calibrated threshold (and its thresholds for the gallery's size, if
    /// any), unless `given` overrides them. Both door binaries start from this.
    pub fn door_config(&self, given: Option<f32>) -> Result<crate::door::Config, EncoderError> {
        let threshold = given
            .or(self.threshold)
            .ok_or_else(|| EncoderError::Metadata {
                path: self.path.clone(),
                key: model_meta::THRESHOLD,
                message: "the model carries no calibrated threshold: give --threshold".into(),
            })?;
        let mut config = crate::door::Config::new(self.distance, threshold);
        if given.is_none() {
            config.gallery_thresholds = self.gallery_thresholds;
        }
        Ok(config)
    }
}

/// The largest encoder input the door accepts from a model's recipe, in
/// values (`channels × height × width`): 3 × 1024 × 1024. A larger recipe is
/// a metadata error, so a hostile model cannot make the door allocate
/// gigabytes for one input.
pub const MAX_INPUT_VALUES: usize = 3 * 1024 * 1024;

/// The largest embedding size the door accepts from a model's metadata.
pub const MAX_EMBEDDING_SIZE: usize = 1 << 16;

/// A metadata entry that is missing or malformed: which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata {key}: {message}")]
pub struct MetadataError {
    /// The metadata key.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// What the door takes from an exported model's metadata (ONNX
/// `metadata_props`), checked: everything [`OnnxEncoder::load`] reads before
/// it builds the graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelMeta {
    /// The preprocessing recipe ([`model_meta::RECIPE`]), validated, at most
    /// [`MAX_INPUT_VALUES`] values.
    pub recipe: Recipe,
    /// Embedding size ([`model_meta::EMBEDDING_SIZE`]), 1 to [`MAX_EMBEDDING_SIZE`].
    pub dim: usize,
    /// Distance ([`model_meta::DISTANCE`]).
    pub distance: Distance,
    /// Calibrated threshold ([`model_meta::THRESHOLD`]), finite, if present.
    pub threshold: Option<f32>,
    /// Thresholds per gallery size ([`model_meta::GALLERY_THRESHOLDS`]), if present.
    pub gallery_thresholds: Option<fewshot_core::GalleryThresholds>,
    /// Whether embeddings average the image's and its mirror's ([`model_meta::FLIP_AVERAGE`]).
    pub flip_average: bool,
    /// Whether the model is a Matching Network with full context embeddings
    /// ([`model_meta::MATCHING`] with a non-null `fce`), whose graphs lie beside it.
    pub fce: bool,
}

impl ModelMeta {
    /// Reads and checks the metadata of an exported model. Any map is
    /// answered (never a panic): missing keys and malformed values are a
    /// [`MetadataError`] naming the key.
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Result<Self, MetadataError> {
        let err = |key: &'static str, message: String| MetadataError { key, message };
        let get = |key: &'static str| {
            metadata.get(key).map(String::as_str).ok_or_else(|| {
                err(
                    key,
                    "missing: not a model exported by `fewshot export`".into(),
                )
            })
        };
        let spec: RecipeSpec = serde_json::from_str(get(model_meta::RECIPE)?)
            .map_err(|e| err(model_meta::RECIPE, e.to_string()))?;
        let recipe = spec
            .recipe()
            .map_err(|e| err(model_meta::RECIPE, e.to_string()))?;
        let values = recipe
            .channels
            .checked_mul(recipe.height)
            .and_then(|n| n.checked_mul(recipe.width))
            .filter(|&n| n <= MAX_INPUT_VALUES);
        if values.is_none() {
            return Err(err(
                model_meta::RECIPE,
                format!(
                    "input {}×{}×{} is larger than the door accepts ({MAX_INPUT_VALUES} values)",
                    recipe.channels, recipe.height, recipe.width
                ),
            ));
        }
        let size = get(model_meta::EMBEDDING_SIZE)?;
        let dim: usize = size.parse().map_err(|_| {
            err(
                model_meta::EMBEDDING_SIZE,
                format!("expected a whole number, got {size:?}"),
            )
        })?;
        if !(1..=MAX_EMBEDDING_SIZE).contains(&dim) {
            return Err(err(
                model_meta::EMBEDDING_SIZE,
                format!("expected 1 to {MAX_EMBEDDING_SIZE}, got {dim}"),
            ));
        }
        let name = get(model_meta::DISTANCE)?;
        let distance = Distance::from_name(name).ok_or_else(|| {
            err(
                model_meta::DISTANCE,
                format!("expected l2, cosine or dot, got {name:?}"),
            )
        })?;
        let threshold = match metadata.get(model_meta::THRESHOLD) {
            Some(t) => match t.parse::<f32>() {
                Ok(v) if v.is_finite() => Some(v),
                _ => {
                    return Err(err(
                        model_meta::THRESHOLD,
                        format!("expected a finite number, got {t:?}"),
                    ))
                }
            },
            None => None,
        };
        let flip_average = match metadata.get(model_meta::FLIP_AVERAGE).map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(err(
                    model_meta::FLIP_AVERAGE,
                    format!("expected true or false, got {other:?}"),
                ))
            }
        };
        let gallery_thresholds = match metadata.get(model_meta::GALLERY_THRESHOLDS) {
            Some(text) => Some(
                parse_gallery_thresholds(text)
                    .map_err(|m| err(model_meta::GALLERY_THRESHOLDS, m))?,
            ),
            None => None,
        };
        let fce = match metadata.get(model_meta::MATCHING) {
            Some(text) => {
                crate::matching::has_fce(text).map_err(|m| err(model_meta::MATCHING, m))?
            }
            None => false,
        };
        Ok(ModelMeta {
            recipe,
            dim,
            distance,
            threshold,
            gallery_thresholds,
            flip_average,
            fce,
        })
    }
}

/// Reads [`model_meta::GALLERY_THRESHOLDS`]: a JSON list of objects with at
/// least `gallery` and `threshold`, in increasing gallery size.
fn parse_gallery_thresholds(text: &str) -> Result<fewshot_core::GalleryThresholds, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let list = value
        .as_array()
        .ok_or("expected a JSON list of {gallery, threshold} objects")?;
    let points = list
        .iter()
        .map(|p| match (p["gallery"].as_u64(), p["threshold"].as_f64()) {
            (Some(g), Some(t)) => Ok((g as usize, t as f32)),
            _ => Err(format!(
                "{p}: expected an integer gallery and a number threshold"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    fewshot_core::GalleryThresholds::new(&points).map_err(|e| e.to_string())
}
