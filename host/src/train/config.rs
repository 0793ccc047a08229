//! What defines a training run: the settings written to `run.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::augment::{AffineRanges, FaceAugment};
use crate::episode::EpisodeShape;
use crate::nn::checkpoint::RecipeSpec;
use crate::nn::encoder::EncoderConfig;
use crate::nn::maml::MamlConfig;
use crate::nn::matching::MatchingConfig;
use crate::nn::siamese::{EmbeddingDistance, Mining};

/// Everything that defines a training run; written to `run.json` in the output folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// Class folders to train on.
    pub data: PathBuf,
    /// Episode shape.
    pub shape: EpisodeShape,
    /// Training episodes in all.
    pub episodes: usize,
    /// Adam learning rate at the start.
    pub lr: f64,
    /// Episodes between learning-rate cuts.
    pub lr_step: usize,
    /// Factor of each cut.
    pub lr_gamma: f64,
    /// Episodes between validations (and checkpoints).
    pub val_every: usize,
    /// Validation episodes.
    pub val_episodes: usize,
    /// Fraction of classes held out for validation.
    pub val_fraction: f64,
    /// Classes per validation episode when not the training episodes' (a
    /// harder yardstick than training's, or an easier one than 60-way
    /// training); capped by the validation classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_k_way: Option<usize>,
    /// Rotations by 90° as new classes (×4).
    pub rotations: bool,
    /// Random affine distortions, if any.
    pub affine: Option<AffineRanges>,
    /// Encoder.
    pub encoder: EncoderConfig,
    /// Preprocessing.
    pub recipe: RecipeSpec,
    /// Distance.
    pub distance: String,
    /// Seed of the split, the initialisation and the episode stream.
    pub seed: u64,
    /// Start from this checkpoint's encoder weights (same encoder and recipe)
    /// instead of a seeded initialisation: fine-tuning a pre-trained encoder
    /// with another objective. Objective heads are not carried over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// More class folders, for training only (never split into validation):
    /// e.g. CelebA identities beside LFW's, whose validation people stay as
    /// `data`'s split makes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_train: Vec<PathBuf>,
    /// Share of training episodes (0 to 1) whose classes come from one
    /// alphabet (all but the last folder of the class name; with rotations
    /// each quarter turn of an alphabet is an alphabet; an alphabet of fewer
    /// than `k_way` classes gives them all and the rest come from others), as
    /// Lake's one-shot runs are drawn. Episodic objectives only.
    #[serde(default, skip_serializing_if = "is_zero_share")]
    pub within_alphabet: f64,
}

fn is_zero_share(x: &f64) -> bool {
    *x == 0.0
}

impl TrainConfig {
    /// The validation episodes' shape over `classes` validation classes:
    /// `val_k_way` (else the training way), at most `classes`.
    pub fn val_shape(&self, classes: usize) -> EpisodeShape {
        EpisodeShape {
            k_way: self.val_k_way.unwrap_or(self.shape.k_way).min(classes),
            ..self.shape
        }
    }
}

/// CosFace pre-training: batches of labelled images over every training
/// identity instead of episodes (`episodes` then counts batches).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CosFaceConfig {
    /// Images per batch.
    pub batch: usize,
    /// Scale `s` of the logits.
    pub scale: f64,
    /// Cosine margin `m`.
    pub margin: f64,
    /// Face augmentation of each training image, if any.
    pub augment: Option<FaceAugment>,
}

/// Which Siamese objective to train.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(tag = "loss", rename_all = "snake_case")]
pub enum SiameseLoss {
    /// Pair-wise similarity: a fully connected layer on `|e1 − e2|`, sigmoid,
    /// binary cross-entropy on balanced same/different pairs of the batch.
    Pairwise,
    /// The triplet loss `max(0, d(a, p) − d(a, n) + margin)`.
    Triplet {
        /// How triplets are drawn from the batch.
        mining: Mining,
        /// Margin `α`.
        margin: f64,
        /// The distance `d`.
        distance: EmbeddingDistance,
    },
}

/// Siamese pre-training: batches of `classes` (P) training classes ×
/// `per_class` (K) images instead of episodes (`episodes` then counts batches).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SiameseConfig {
    /// The objective.
    pub loss: SiameseLoss,
    /// Classes per batch (P).
    pub classes: usize,
    /// Images per class in a batch (K).
    pub per_class: usize,
    /// Face augmentation of each training image, if any (else `affine` applies).
    pub augment: Option<FaceAugment>,
}

impl SiameseConfig {
    /// The method name checkpoints record (`siamese-pairwise`, `siamese-triplet`).
    pub fn method(&self) -> &'static str {
        match self.loss {
            SiameseLoss::Pairwise => "siamese-pairwise",
            SiameseLoss::Triplet { .. } => "siamese-triplet",
        }
    }
}

/// Distillation from a teacher encoder: batches of images drawn uniformly
/// over the training images, the student trained towards the teacher's unit
/// embedding of each image (or of its mirror image, when flipped).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DistillConfig {
    /// The teacher model (`.onnx`, or `.tflite` with the `tflite` feature).
    pub teacher: PathBuf,
    /// Images per batch.
    pub batch: usize,
    /// Weight of the term on the batch's similarity structure (0: none).
    pub relation: f64,
    /// Shift and brightness/contrast jitter of each training image, if any
    /// (its flip is always random, with the mirror's own target).
    pub augment: Option<FaceAugment>,
    /// Aligned views of each training image, each with the teacher's target
    /// of the same view: the plain alignment and `views − 1` jittered ones
    /// ([`crate::distill::views`]).
    #[serde(default = "one_view", skip_serializing_if = "is_one_view")]
    pub views: usize,
    /// Mixed views besides them: each blends every training image with
    /// another at a fixed share ([`crate::distill::views::mixes`]), the
    /// teacher's target being its embedding of the blend.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mixup: usize,
    /// The term on each image's similarities to the teacher's embeddings of
    /// all training images ([`crate::distill::bank_loss`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank: Option<crate::distill::BankTerm>,
    /// Which crops the teacher's targets are made from (the teacher's own,
    /// or the student's resampled to the teacher's input).
    #[serde(default, skip_serializing_if = "is_own_input")]
    pub teacher_input: crate::distill::TeacherInput,
}

fn is_own_input(input: &crate::distill::TeacherInput) -> bool {
    *input == crate::distill::TeacherInput::Own
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn one_view() -> usize {
    1
}

fn is_one_view(views: &usize) -> bool {
    *views == 1
}

/// What `run.json` holds: the shared settings and the objective's own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct RunConfig {
    #[serde(flatten)]
    pub(super) base: TrainConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cosface: Option<CosFaceConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) siamese: Option<SiameseConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) distill: Option<DistillConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) matching: Option<MatchingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) maml: Option<MamlConfig>,
}

impl RunConfig {
    /// A run of `base` with no objective settings of its own (Prototypical Networks).
    pub(super) fn new(base: &TrainConfig) -> Self {
        RunConfig {
            base: base.clone(),
            cosface: None,
            siamese: None,
            distill: None,
            matching: None,
            maml: None,
        }
    }
}
