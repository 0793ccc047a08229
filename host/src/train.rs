//! Episodic training of few-shot methods, with validation, checkpoints and resume.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use fewshot_core::{Distance, Recipe};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::{affine, rotate90, AffineRanges, FaceAugment, Shape};
use crate::data::{ClassSet, Layout, Tensors};
use crate::embed::{check_shape, EmbedError, Embedder, Embeddings};
use crate::episode::{ClassSplit, EpisodeSampler, EpisodeShape};
use crate::eval::{evaluate_episodes_with, EpisodeClassifier};
use crate::nn::adam::Adam;
use crate::nn::checkpoint::{self, ModelConfig, RecipeSpec};
use crate::nn::cosface::CosFace;
use crate::nn::encoder::{Encoder, EncoderConfig};
use crate::nn::maml::{self, MamlConfig};
use crate::nn::matching::{MatchingConfig, MatchingHead, MatchingNet};
use crate::nn::method::{BatchLoss, EpisodeTensors, FewShotMethod, ProtoNet};
use crate::nn::siamese::{EmbeddingDistance, Mining, PairwiseHead, TripletLoss};
use crate::plot::{line_chart_png, Series};

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

fn one_view() -> usize {
    1
}

fn is_one_view(views: &usize) -> bool {
    *views == 1
}

/// What `run.json` holds: the shared settings and the objective's own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct RunConfig {
    #[serde(flatten)]
    base: TrainConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cosface: Option<CosFaceConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    siamese: Option<SiameseConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    distill: Option<DistillConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    matching: Option<MatchingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    maml: Option<MamlConfig>,
}

impl RunConfig {
    /// A run of `base` with no objective settings of its own (Prototypical Networks).
    fn new(base: &TrainConfig) -> Self {
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

/// Progress saved with each checkpoint, for resuming.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    /// Episodes completed.
    pub episode: usize,
    /// Best validation accuracy so far (none without validation).
    pub best_val: Option<f64>,
    /// Episode of the best validation.
    pub best_episode: usize,
    /// Seconds spent training so far (over all resumed sessions).
    pub seconds: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricLine {
    /// Episodes completed.
    pub episode: usize,
    /// Mean training loss over the last interval (absent on validation lines).
    pub loss: Option<f64>,
    /// Mean training accuracy over the last interval.
    pub accuracy: Option<f64>,
    /// Validation accuracy (validation lines only).
    pub val_accuracy: Option<f64>,
    /// Its 95% confidence interval.
    pub val_ci95: Option<f64>,
    /// Learning rate.
    pub lr: f64,
    /// Milliseconds per training episode over the interval.
    pub ms_per_episode: Option<f64>,
}

/// Images in memory grouped into classes (a rotated copy counts as its own class).
struct Bank {
    images: Vec<f32>,
    per_image: usize,
    classes: Vec<Vec<usize>>,
    /// The row of the source tensors each image came from.
    source: Vec<usize>,
}

impl Bank {
    fn build(tensors: &Tensors, classes: &[Vec<usize>], rotations: bool, shape: Shape) -> Bank {
        let per_image = shape.len();
        let turns: &[u8] = if rotations { &[0, 1, 2, 3] } else { &[0] };
        let mut images = Vec::new();
        let mut out = Vec::new();
        let mut source = Vec::new();
        for &turn in turns {
            for rows in classes {
                let mut ids = Vec::new();
                for &r in rows {
                    ids.push(images.len() / per_image);
                    images.extend(rotate90(tensors.row(r), shape, turn));
                    source.push(r);
                }
                out.push(ids);
            }
        }
        Bank {
            images,
            per_image,
            classes: out,
            source,
        }
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.images[i * self.per_image..(i + 1) * self.per_image]
    }

    fn as_tensors(&self, recipe: Recipe) -> Tensors {
        Tensors {
            recipe,
            data: self.images.clone(),
            paths: vec![PathBuf::new(); self.images.len() / self.per_image],
        }
    }
}

/// An encoder being trained, seen as an [`Embedder`] (inference mode).
struct Live<'a> {
    encoder: &'a dyn Encoder,
    recipe: Recipe,
    dim: usize,
}

impl Embedder for Live<'_> {
    fn name(&self) -> String {
        "training encoder".into()
    }
    fn recipe(&self) -> Recipe {
        self.recipe
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed(&self, images: &[f32]) -> Result<Vec<f32>, EmbedError> {
        let r = self.recipe;
        check_shape(images, r.len())?;
        let backend = |e: candle_core::Error| EmbedError::Backend(e.to_string());
        let x = Tensor::from_slice(
            images,
            (images.len() / r.len(), r.channels, r.height, r.width),
            &Device::Cpu,
        )
        .map_err(backend)?;
        self.encoder
            .embed(&x, false)
            .and_then(|t| t.flatten_all()?.to_vec1())
            .map_err(backend)
    }
}

/// Paths of a run's files.
pub struct RunFiles {
    /// The output folder.
    pub dir: PathBuf,
}

impl RunFiles {
    /// `run.json`: the training configuration.
    pub fn config(&self) -> PathBuf {
        self.dir.join("run.json")
    }
    /// The latest checkpoint (for resuming).
    pub fn last(&self) -> PathBuf {
        self.dir.join("last.safetensors")
    }
    /// The best checkpoint on validation.
    pub fn best(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }
    /// Adam's moments at the latest checkpoint.
    pub fn optimizer(&self) -> PathBuf {
        self.dir.join("last.adam.safetensors")
    }
    /// Progress at the latest checkpoint.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// Metrics, one JSON object a line.
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    /// The training curve.
    pub fn curve(&self) -> PathBuf {
        self.dir.join("curve.png")
    }
}

/// Sets every encoder variable of `varmap` (all but the objective's `head.`)
/// from checkpoint `path`, whose encoder and recipe must be `config`'s.
fn load_encoder(varmap: &VarMap, path: &Path, config: &TrainConfig) -> anyhow::Result<()> {
    let saved =
        checkpoint::load_config(path).with_context(|| format!("--init {}", path.display()))?;
    if saved.encoder != config.encoder || saved.recipe != config.recipe {
        bail!(
            "--init {}: its encoder {:?} and input {:?} differ from this run's {:?} and {:?}; give the same --hidden and input flags",
            path.display(),
            saved.encoder,
            saved.recipe,
            config.encoder,
            config.recipe
        );
    }
    let weights = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("--init {}: reading the weights", path.display()))?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?;
    for (name, var) in vars.iter().filter(|(n, _)| !n.starts_with("head.")) {
        let w = weights
            .get(name)
            .with_context(|| format!("--init {}: no tensor {name}", path.display()))?;
        var.set(w)
            .with_context(|| format!("--init {}: tensor {name}", path.display()))?;
    }
    Ok(())
}

/// The commit the trainer was built from, else the working directory's, else
/// `unknown`.
pub fn git_commit() -> String {
    if let Some(commit) = option_env!("FEWSHOT_BUILD_COMMIT") {
        return commit.to_string();
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// When a training process should stop early (checkpointing first), so a long
/// run can be split into pieces that fit a working session.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopAt {
    /// Stop once this many episodes are done.
    pub episode: Option<usize>,
    /// Stop after this many seconds of this process.
    pub seconds: Option<f64>,
}

/// Trains Prototypical Networks. With `resume`, continues the run in `out`
/// from its last checkpoint (its `run.json` must match `config`).
pub fn train_protonet(
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    stop: StopAt,
    progress: bool,
) -> anyhow::Result<TrainState> {
    train(&RunConfig::new(config), out, resume, stop, progress)
}

/// Pre-trains the encoder as a CosFace classifier over the training classes
/// (validated, checkpointed and resumed as [`train_protonet`]; validation
/// uses episodes of `config.shape` on the held-out classes).
pub fn train_cosface(
    config: &TrainConfig,
    cosface: &CosFaceConfig,
    out: &Path,
    resume: bool,
    stop: StopAt,
    progress: bool,
) -> anyhow::Result<TrainState> {
    if cosface.batch < 2 {
        bail!("CosFace needs batches of at least 2 images");
    }
    let run = RunConfig {
        cosface: Some(cosface.clone()),
        ..RunConfig::new(config)
    };
    train(&run, out, resume, stop, progress)
}

/// Pre-trains the encoder with a Siamese objective (pair-wise or triplet) on
/// batches of P classes × K images (validated, checkpointed and resumed as
/// [`train_protonet`]; validation uses episodes of `config.shape` on the
/// held-out classes with `config.distance`).
pub fn train_siamese(
    config: &TrainConfig,
    siamese: &SiameseConfig,
    out: &Path,
    resume: bool,
    stop: StopAt,
    progress: bool,
) -> anyhow::Result<TrainState> {
    if siamese.classes < 2 || siamese.per_class < 2 {
        bail!(
            "Siamese batches need at least 2 classes of 2 images (got {} × {})",
            siamese.classes,
            siamese.per_class
        );
    }
    if let SiameseLoss::Triplet { margin, .. } = siamese.loss {
        if !(margin.is_finite() && margin >= 0.0) {
            bail!("the triplet margin must be a finite number ≥ 0, got {margin}");
        }
    }
    let run = RunConfig {
        siamese: Some(siamese.clone()),
        ..RunConfig::new(config)
    };
    train(&run, out, resume, stop, progress)
}

/// Trains a student encoder to reproduce a teacher's embeddings (validated,
/// checkpointed and resumed as [`train_protonet`]; validation uses episodes
/// of `config.shape` on the held-out classes). The teacher's targets are
/// computed once per image and cached ([`crate::distill::targets`]); the
/// encoder's embedding size must be the teacher's.
pub fn train_distill(
    config: &TrainConfig,
    distill: &DistillConfig,
    out: &Path,
    resume: bool,
    stop: StopAt,
    progress: bool,
) -> anyhow::Result<TrainState> {
    if distill.batch < 2 {
        bail!("distillation needs batches of at least 2 images");
    }
    if distill.views == 0 {
        bail!("--views counts the plain alignment too: at least 1");
    }
    if !(distill.relation.is_finite() && distill.relation >= 0.0) {
        bail!(
            "the relation weight must be a finite number ≥ 0, got {}",
            distill.relation
        );
    }
    if let Some(b) = distill.bank {
        if !(b.weight.is_finite() && b.weight > 0.0) {
            bail!(
                "the bank term's weight must be a finite number > 0, got {}",
                b.weight
            );
        }
        if !(b.temperature.is_finite() && b.temperature > 0.0) {
            bail!(
                "the bank term's temperature must be a finite number > 0, got {}",
                b.temperature
            );
        }
    }
    let run = RunConfig {
        distill: Some(distill.clone()),
        ..RunConfig::new(config)
    };
    train(&run, out, resume, stop, progress)
}

/// Trains a Matching Network (validated on held-out classes with its own
/// attention and FCE; checkpointed and resumed as [`train_protonet`]). The
/// run's `distance` is the attention's similarity.
pub fn train_matching(
    config: &TrainConfig,
    matching: &MatchingConfig,
    out: &Path,
    resume: bool,
    stop: StopAt,
    progress: bool,
) -> anyhow::Result<TrainState> {
    if let Some(fce) = matching.fce {
        if fce.lstm_layers == 0 || fce.unrolling_steps == 0 {
            bail!(
                "full context embeddings need --lstm-layers ≥ 1 and --unrolling-steps ≥ 1 (got {} and {})",
                fce.lstm_layers,
                fce.unrolling_steps
            );
        }
    }
    let run = RunConfig {
        matching: Some(*matching),
        ..RunConfig::new(config)
    };
    train(&run, out, resume, stop, progress)
}

/// Meta-trains Conv-4 and an N-way head with MAML (validated on held-out
/// classes by the test-time inner loop; checkpointed and resumed as
/// [`train_protonet`]; `config.episodes` counts meta-steps).
pub fn train_maml(
    config: &TrainConfig,
    maml_config: &MamlConfig,
    out: &Path,
    resume: bool,
    stop: StopAt,
    progress: bool,
) -> anyhow::Result<TrainState> {
    if !matches!(maml_config.order, 1 | 2) {
        bail!("--order must be 1 or 2, got {}", maml_config.order);
    }
    if maml_config.meta_batch == 0 || maml_config.inner_steps == 0 {
        bail!("MAML needs --meta-batch ≥ 1 and --inner-steps ≥ 1");
    }
    if !(maml_config.inner_lr.is_finite() && maml_config.inner_lr > 0.0) {
        bail!(
            "--inner-lr must be a positive number, got {}",
            maml_config.inner_lr
        );
    }
    let run = RunConfig {
        maml: Some(*maml_config),
        ..RunConfig::new(config)
    };
    train(&run, out, resume, stop, progress)
}

/// A batch of `p` distinct classes × `k` images each (distinct while the
/// class has `k`), with labels `0..p`.
fn pk_batch(
    classes: &[Vec<usize>],
    p: usize,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<usize>, Vec<u32>) {
    let mut ids = Vec::with_capacity(p * k);
    let mut labels = Vec::with_capacity(p * k);
    for (label, c) in rand::seq::index::sample(rng, classes.len(), p)
        .into_iter()
        .enumerate()
    {
        let images = &classes[c];
        if images.len() >= k {
            ids.extend(
                rand::seq::index::sample(rng, images.len(), k)
                    .into_iter()
                    .map(|i| images[i]),
            );
        } else {
            ids.extend((0..k).map(|_| images[rng.random_range(0..images.len())]));
        }
        labels.extend(std::iter::repeat_n(label as u32, k));
    }
    (ids, labels)
}

/// The training images a step draws from, and how a drawn batch becomes a
/// tensor (augmented as the run says).
struct Batches<'a> {
    /// The training images.
    bank: &'a Bank,
    /// Their shape.
    shape: Shape,
    /// The training classes: image ids of the bank.
    classes: &'a [Vec<usize>],
    /// The images of `ids` as a `(n, c, h, w)` tensor, augmented with `rng`.
    gather: &'a dyn Fn(&[usize], &mut ChaCha8Rng) -> candle_core::Result<Tensor>,
}

/// A training objective: what one step draws and the loss it trains. The
/// loop around it (learning rate, checkpoints, validation, resume) is one
/// for every objective.
trait Objective {
    /// The method name checkpoints record.
    fn method(&self) -> String;
    /// The encoder being trained (validated and saved).
    fn encoder(&self) -> &dyn Encoder;
    /// The face augmentation of its training images, if any (else the
    /// run's affine distortions apply).
    fn face_augment(&self) -> Option<FaceAugment> {
        None
    }
    /// Accuracy on the validation episodes; by default the encoder's
    /// embeddings classified by prototypes.
    fn validate(&self, v: &Validation<'_>) -> anyhow::Result<crate::eval::EpisodeReport> {
        v.by_embeddings(self.encoder(), &EpisodeClassifier::Prototypes(v.distance))
    }
    /// The loss value, training accuracy and gradients of step `step`
    /// (0-based), drawing its batch from `batches` with `rng`.
    fn gradients(
        &self,
        batches: &Batches<'_>,
        step: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)>;
}

/// The value, accuracy and backward pass of a step's loss.
fn backward(
    (loss, accuracy): (Tensor, f64),
) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)> {
    let value = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
    Ok((value, accuracy, loss.backward()?))
}

/// The held-out episodes a run validates on.
struct Validation<'a> {
    images: &'a Tensors,
    sampler: &'a EpisodeSampler,
    episodes: usize,
    seed: u64,
    recipe: Recipe,
    dim: usize,
    /// The run's distance (prototypes' default).
    distance: Distance,
}

impl Validation<'_> {
    /// The episodes classified by `classifier` over `encoder`'s embeddings.
    fn by_embeddings(
        &self,
        encoder: &dyn Encoder,
        classifier: &EpisodeClassifier,
    ) -> anyhow::Result<crate::eval::EpisodeReport> {
        let live = Live {
            encoder,
            recipe: self.recipe,
            dim: self.dim,
        };
        let emb = Embeddings::compute(&live, self.images, 512, false)?;
        Ok(evaluate_episodes_with(
            &emb,
            self.sampler,
            self.episodes,
            self.seed,
            classifier,
            false,
        )?)
    }
}

/// An episodic method (Prototypical Networks, Matching Networks): one N-way
/// K-shot episode a step.
struct Episodic<M> {
    method: M,
    name: &'static str,
    /// How validation classifies (else by prototypes).
    classifier: Option<EpisodeClassifier>,
    sampler: EpisodeSampler,
    shape: EpisodeShape,
    seed: u64,
}

impl<M: FewShotMethod> Objective for Episodic<M> {
    fn method(&self) -> String {
        self.name.into()
    }
    fn encoder(&self) -> &dyn Encoder {
        self.method.encoder()
    }
    fn validate(&self, v: &Validation<'_>) -> anyhow::Result<crate::eval::EpisodeReport> {
        let classifier =
            (self.classifier.clone()).unwrap_or(EpisodeClassifier::Prototypes(v.distance));
        v.by_embeddings(self.encoder(), &classifier)
    }
    fn gradients(
        &self,
        batches: &Batches<'_>,
        step: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)> {
        let episode = self.sampler.episode(self.seed, step as u64);
        let batch = EpisodeTensors {
            support: (batches.gather)(&episode.support, rng)?,
            query: (batches.gather)(&episode.query, rng)?,
            shape: self.shape,
        };
        backward(self.method.loss(&batch, true)?)
    }
}

/// MAML ([`maml`]): a meta-batch of N-way K-shot tasks a step; each task's
/// query loss after the inner loop is back-propagated on its own (so one
/// task's graph is held at a time) and the gradients summed.
struct Maml {
    /// The Conv-4 encoder over the same variables (validated by prototypes
    /// nowhere; saved and exported).
    encoder: Box<dyn Encoder>,
    /// The meta-parameters in [`maml::forward`]'s order.
    params: Vec<Tensor>,
    /// Running mean and variance of each block's batch norm.
    running: Vec<(Var, Var)>,
    config: MamlConfig,
    sampler: EpisodeSampler,
    shape: EpisodeShape,
    seed: u64,
}

impl Objective for Maml {
    fn method(&self) -> String {
        "maml".into()
    }
    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }
    fn gradients(
        &self,
        batches: &Batches<'_>,
        step: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)> {
        let tasks = self.config.meta_batch.max(1);
        let ys = maml::class_major_labels(self.shape.k_way, self.shape.n_shot, &Device::Cpu)?;
        let yq = maml::class_major_labels(self.shape.k_way, self.shape.q_queries, &Device::Cpu)?;
        // Only the meta-parameters' gradients are kept (detached) between
        // tasks: a task's whole gradient store, every node's gradient with its
        // graph under second order, is dropped as soon as it is read.
        let mut total = candle_core::backprop::GradStore::default();
        let (mut loss_sum, mut acc_sum) = (0.0, 0.0);
        for t in 0..tasks {
            let episode = self.sampler.episode(self.seed, (step * tasks + t) as u64);
            let support = (batches.gather)(&episode.support, rng)?;
            let query = (batches.gather)(&episode.query, rng)?;
            let mut stats = Vec::new();
            let (loss, acc) = maml::task_loss(
                &self.params,
                &support,
                &ys,
                &query,
                &yq,
                &self.config,
                self.config.inner_steps,
                (t == 0).then_some(&mut stats),
            )?;
            if t == 0 {
                maml::update_running(&self.running, &stats)?;
            }
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            acc_sum += acc;
            let grads = (loss / tasks as f64)?.backward()?;
            for p in &self.params {
                if let Some(g) = grads.get(p) {
                    let added = match total.get(p) {
                        Some(s) => (s + g.detach())?,
                        None => g.detach(),
                    };
                    total.insert(p, added);
                }
            }
        }
        if tasks == 0 {
            bail!("a meta-batch of no tasks");
        }
        let grads = total;
        Ok((loss_sum / tasks as f64, acc_sum / tasks as f64, grads))
    }
    /// By the test-time inner loop on each episode's images.
    fn validate(&self, v: &Validation<'_>) -> anyhow::Result<crate::eval::EpisodeReport> {
        let model = maml::MamlModel {
            params: self.params.clone(),
            config: self.config,
            k_way: self.shape.k_way,
        };
        Ok(crate::eval::evaluate_episodes_maml(
            v.images, v.sampler, v.episodes, v.seed, &model, false,
        )?)
    }
}

/// How a batch objective draws its images.
enum Draw {
    /// `batch` images uniformly over every training image, each with its class.
    Uniform {
        batch: usize,
        ids: Vec<usize>,
        labels: Vec<u32>,
    },
    /// P classes × K images ([`pk_batch`]).
    ClassesTimesImages { classes: usize, per_class: usize },
}

/// A loss over a labelled batch of embeddings (CosFace, the Siamese losses).
struct Batched {
    encoder: Box<dyn Encoder>,
    loss: Box<dyn BatchLoss>,
    draw: Draw,
    name: &'static str,
    augment: Option<FaceAugment>,
}

impl Objective for Batched {
    fn method(&self) -> String {
        self.name.into()
    }
    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }
    fn face_augment(&self) -> Option<FaceAugment> {
        self.augment
    }
    fn gradients(
        &self,
        batches: &Batches<'_>,
        _step: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)> {
        let (ids, y) = match &self.draw {
            Draw::Uniform { batch, ids, labels } => {
                let picks: Vec<usize> = (0..*batch)
                    .map(|_| rng.random_range(0..ids.len()))
                    .collect();
                (
                    picks.iter().map(|&p| ids[p]).collect::<Vec<_>>(),
                    picks.iter().map(|&p| labels[p]).collect(),
                )
            }
            Draw::ClassesTimesImages { classes, per_class } => {
                pk_batch(batches.classes, *classes, *per_class, rng)
            }
        };
        let x = (batches.gather)(&ids, rng)?;
        backward(
            self.loss
                .batch_loss(&self.encoder.embed(&x, true)?, &y, rng)?,
        )
    }
}

/// Distillation: a batch drawn uniformly over the training images (and,
/// with several views, over their views), each flipped or not at random,
/// against the teacher's target for what it shows.
struct Distill {
    encoder: Box<dyn Encoder>,
    /// View 0 (the training bank's own images) first; each view's targets
    /// indexed by the bank's image ids.
    views: Vec<View>,
    batch: usize,
    relation: f64,
    augment: Option<FaceAugment>,
    /// The teacher's plain embeddings of the training images `(n, dim)` and
    /// the bank term's settings, if the run has one.
    bank: Option<(Tensor, crate::distill::BankTerm)>,
}

/// One view of the training images and the teacher's targets for it.
struct View {
    /// The images in bank id order (`None`: the bank's own, view 0).
    images: Option<Vec<f32>>,
    targets: crate::distill::Targets,
}

impl Objective for Distill {
    fn method(&self) -> String {
        "distill".into()
    }
    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }
    /// The mean student-teacher cosine stands for the accuracy.
    fn gradients(
        &self,
        batches: &Batches<'_>,
        _step: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<(f64, f64, candle_core::backprop::GradStore)> {
        let shape = batches.shape;
        let dim = self.views[0].targets.dim;
        let per = shape.len();
        let mut data = Vec::with_capacity(self.batch * per);
        let mut targets = Vec::with_capacity(self.batch * dim);
        let mut ids = Vec::with_capacity(self.batch);
        for _ in 0..self.batch {
            let id = rng.random_range(0..self.views[0].targets.len());
            ids.push(id);
            let mirror = rng.random_bool(0.5);
            // One view draws nothing more, so such runs keep their batches.
            let view = match self.views.len() {
                1 => &self.views[0],
                n => &self.views[rng.random_range(0..n)],
            };
            let image = match &view.images {
                Some(images) => &images[id * per..(id + 1) * per],
                None => batches.bank.row(id),
            };
            match &self.augment {
                Some(a) => data.extend(a.apply_with_flip(rng, image, shape, mirror)),
                None if mirror => data.extend(crate::augment::hflip(image, shape)),
                None => data.extend_from_slice(image),
            }
            targets.extend_from_slice(view.targets.row(id, mirror));
        }
        let x = Tensor::from_vec(
            data,
            (self.batch, shape.channels, shape.height, shape.width),
            &Device::Cpu,
        )?;
        let t = Tensor::from_vec(targets, (self.batch, dim), &Device::Cpu)?;
        let student = self.encoder.embed(&x, true)?;
        let (mut loss, mean_cos) = crate::distill::distill_loss(&student, &t, self.relation)?;
        if let Some((bank, term)) = &self.bank {
            let kl = crate::distill::bank_loss(&student, &t, bank, &ids, term.temperature)?;
            loss = (loss + (kl * term.weight)?)?;
        }
        backward((loss, mean_cos))
    }
}

/// Each view of the training bank's images (view 0: the bank's own) with
/// the teacher's targets for it, in bank id order.
fn distill_views(
    distill: &DistillConfig,
    bank: &Bank,
    tensors: &Tensors,
    dim: usize,
    progress: bool,
) -> anyhow::Result<Vec<View>> {
    use crate::distill::views::view_recipe;
    use crate::distill::TeacherInput;
    let plain = crate::distill::Teacher::load(&distill.teacher, None)?;
    if plain.dim() != dim {
        bail!(
            "the teacher {} embeds in {} dimensions, the student in {dim}: give the student a linear embedding of {}",
            distill.teacher.display(),
            plain.dim(),
            plain.dim()
        );
    }
    let paths: Vec<PathBuf> = bank
        .source
        .iter()
        .map(|&r| tensors.paths[r].clone())
        .collect();
    let cache = crate::distill::targets::default_cache();
    let teacher_recipe = plain.recipe();
    let mut views = Vec::with_capacity(distill.views);
    for v in 0..distill.views {
        let student = view_recipe(&tensors.recipe, v)
            .map_err(|e| anyhow::anyhow!("the student's recipe: {e}"))?;
        let own;
        let teacher = match (distill.teacher_input, v) {
            (TeacherInput::Own, 0) => &plain,
            (TeacherInput::Own, _) => {
                let recipe = view_recipe(&teacher_recipe, v)
                    .map_err(|e| anyhow::anyhow!("teacher {}: {e}", distill.teacher.display()))?;
                own = crate::distill::Teacher::load(&distill.teacher, Some(recipe))?;
                &own
            }
            (TeacherInput::Student, _) => {
                own = crate::distill::Teacher::load(&distill.teacher, None)?.at_input(&student)?;
                &own
            }
        };
        let images = match v {
            0 => None,
            _ => Some(Tensors::load(&paths, &student, progress)?.data),
        };
        let targets = crate::distill::teacher_targets(teacher, &paths, cache.as_deref(), progress)?;
        views.push(View { images, targets });
    }
    Ok(views)
}

/// The run's objective over the training classes, its variables in `vb`
/// (the encoder's first, then the head's under `head.`).
fn objective(
    run: &RunConfig,
    teach: Teach<'_>,
    distance: Distance,
    vb: VarBuilder,
) -> anyhow::Result<Box<dyn Objective>> {
    let classes = &teach.bank.classes[..];
    let config = &run.base;
    let encoder = config.encoder.build(vb.clone())?;
    let dim = config.encoder.dim();
    let objectives = [
        run.cosface.is_some(),
        run.siamese.is_some(),
        run.distill.is_some(),
        run.matching.is_some(),
        run.maml.is_some(),
    ];
    if objectives.iter().filter(|&&o| o).count() > 1 {
        bail!("internal: a run has one objective");
    }
    if run.maml.is_some() && config.val_k_way.is_some_and(|k| k != config.shape.k_way) {
        bail!(
            "MAML validates with its own {}-way head: leave out --val-k-way",
            config.shape.k_way
        );
    }
    if let Some(m) = run.maml {
        let EncoderConfig::Conv4 {
            embedding: None, ..
        } = config.encoder
        else {
            bail!("MAML trains Conv-4 without a linear embedding (--arch conv4)");
        };
        if config.encoder.block_depths() != Some([1; 4]) {
            bail!("MAML's functional Conv-4 has one convolution per block: leave out --depths");
        }
        candle_nn::linear(dim, config.shape.k_way, vb.pp("head"))?;
        let (Some(widths), (in_channels, _)) =
            (config.encoder.block_widths(), config.encoder.input())
        else {
            bail!("internal: MAML's encoder is Conv-4");
        };
        let get = |name: &str, shape: &[usize]| -> anyhow::Result<Var> {
            let (prefix, last) = name.rsplit_once('.').unwrap_or(("", name));
            let t = vb.pp(prefix).get(shape, last)?;
            Ok(Var::from_tensor(&t)?)
        };
        let shapes = maml::parameter_shapes(in_channels, widths, dim, config.shape.k_way);
        let params = maml::parameter_names()
            .iter()
            .zip(&shapes)
            .map(|(n, s)| get(n, s).map(|v| v.as_tensor().clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let running = (0..4)
            .map(|b| {
                Ok((
                    get(&format!("block{b}.bn.running_mean"), &[widths[b]])?,
                    get(&format!("block{b}.bn.running_var"), &[widths[b]])?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok(Box::new(Maml {
            encoder,
            params,
            running,
            config: m,
            sampler: EpisodeSampler::new(classes, config.shape, None, config.seed)
                .context("training episodes")?,
            shape: config.shape,
            seed: config.seed,
        }));
    }
    if let Some(m) = run.matching {
        let head = MatchingHead::new(m, distance, dim, vb.pp("head"))?;
        return Ok(Box::new(Episodic {
            classifier: Some(EpisodeClassifier::Matching(std::sync::Arc::new(
                head.clone(),
            ))),
            method: MatchingNet { encoder, head },
            name: "matching",
            sampler: EpisodeSampler::new(classes, config.shape, None, config.seed)
                .context("training episodes")?,
            shape: config.shape,
            seed: config.seed,
        }));
    }
    if let Some(d) = &run.distill {
        let views = distill_views(d, teach.bank, teach.tensors, dim, teach.progress)?;
        let bank = match d.bank {
            None => None,
            Some(term) => {
                let plain = &views[0].targets;
                let rows: Vec<f32> = (0..plain.len())
                    .flat_map(|i| plain.row(i, false).iter().copied())
                    .collect();
                let rows = Tensor::from_vec(rows, (plain.len(), plain.dim), &Device::Cpu)?;
                Some((rows, term))
            }
        };
        return Ok(Box::new(Distill {
            encoder,
            views,
            batch: d.batch,
            relation: d.relation,
            augment: d.augment,
            bank,
        }));
    }
    Ok(match (&run.cosface, &run.siamese) {
        (None, None) => Box::new(Episodic {
            method: ProtoNet { encoder, distance },
            name: "protonet",
            classifier: None,
            sampler: EpisodeSampler::new(classes, config.shape, None, config.seed)
                .context("training episodes")?,
            shape: config.shape,
            seed: config.seed,
        }),
        (Some(c), None) => Box::new(Batched {
            encoder,
            loss: Box::new(CosFace::new(
                classes.len(),
                dim,
                c.scale,
                c.margin,
                vb.pp("head"),
            )?),
            // CosFace draws images uniformly; each knows its class.
            draw: Draw::Uniform {
                batch: c.batch,
                ids: classes.iter().flatten().copied().collect(),
                labels: classes
                    .iter()
                    .enumerate()
                    .flat_map(|(c, ids)| ids.iter().map(move |_| c as u32))
                    .collect(),
            },
            name: "cosface",
            augment: c.augment,
        }),
        (None, Some(s)) => {
            if classes.len() < s.classes {
                bail!(
                    "Siamese batches of {} classes, but only {} training classes",
                    s.classes,
                    classes.len()
                );
            }
            let loss: Box<dyn BatchLoss> = match s.loss {
                SiameseLoss::Pairwise => Box::new(PairwiseHead::new(dim, vb.pp("head"))?),
                SiameseLoss::Triplet {
                    mining,
                    margin,
                    distance,
                } => Box::new(TripletLoss {
                    margin,
                    distance,
                    mining,
                }),
            };
            Box::new(Batched {
                encoder,
                loss,
                draw: Draw::ClassesTimesImages {
                    classes: s.classes,
                    per_class: s.per_class,
                },
                name: s.method(),
                augment: s.augment,
            })
        }
        (Some(_), Some(_)) => bail!("internal: a run has one objective"),
    })
}

/// What an objective is built over: the training images (and, for
/// distillation, the files they came from).
struct Teach<'a> {
    bank: &'a Bank,
    tensors: &'a Tensors,
    progress: bool,
}

/// Checks that a resumed run has `run`'s settings, or starts a new run in
/// `files.dir` (which must not hold one) by writing `run.json`.
fn start_or_resume(run: &RunConfig, files: &RunFiles, resume: bool) -> anyhow::Result<()> {
    if resume {
        let saved: RunConfig = serde_json::from_slice(
            &std::fs::read(files.config())
                .with_context(|| format!("resuming: reading {}", files.config().display()))?,
        )
        .with_context(|| format!("resuming: {}", files.config().display()))?;
        if &saved != run {
            bail!(
                "resuming: the settings differ from those {} was started with; use the same flags or a new --out",
                files.config().display()
            );
        }
    } else {
        if files.state().exists() {
            bail!(
                "{} already holds a run: pass --resume to continue it, or choose another --out",
                files.dir.display()
            );
        }
        std::fs::create_dir_all(&files.dir)
            .with_context(|| format!("creating {}", files.dir.display()))?;
        checkpoint::write_atomic(&files.config(), &serde_json::to_vec_pretty(run)?)?;
    }

    Ok(())
}

/// The training progress bar, at `done` of `total` (hidden when not wanted).
fn progress_bar(progress: bool, total: usize, done: usize) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} episodes ({elapsed}, eta {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(done as u64);
    bar
}

fn train(
    run: &RunConfig,
    out: &Path,
    resume: bool,
    stop: StopAt,
    progress: bool,
) -> anyhow::Result<TrainState> {
    let config = &run.base;
    let started = Instant::now();
    let files = RunFiles {
        dir: out.to_path_buf(),
    };
    let distance = Distance::from_name(&config.distance).context("unknown distance")?;
    let recipe = config.recipe.recipe().map_err(anyhow::Error::msg)?;
    let shape = Shape {
        channels: recipe.channels,
        height: recipe.height,
        width: recipe.width,
    };
    start_or_resume(run, &files, resume)?;

    // Data: decode once, split classes, build the rotated banks.
    let set = ClassSet::load(&config.data, Layout::Auto)?;
    let split = ClassSplit::new(set.classes.len(), config.val_fraction, 0.0, config.seed);
    let mut paths = Vec::new();
    let mut rows = Vec::new();
    let mut train_classes = split.train.clone();
    let mut extra_names = Vec::new();
    for extra in &config.extra_train {
        let more = ClassSet::load(extra, Layout::Auto)?;
        for class in more.classes {
            train_classes.push(set.classes.len() + extra_names.len());
            extra_names.push(class);
        }
    }
    for class in set.classes.iter().chain(&extra_names) {
        rows.push((paths.len()..paths.len() + class.images.len()).collect::<Vec<_>>());
        paths.extend(class.images.iter().cloned());
    }
    let tensors = Tensors::load(&paths, &recipe, progress)?;
    let pick = |ids: &[usize]| ids.iter().map(|&c| rows[c].clone()).collect::<Vec<_>>();
    let train_bank = Bank::build(&tensors, &pick(&train_classes), config.rotations, shape);
    let val_bank = Bank::build(&tensors, &pick(&split.val), config.rotations, shape);
    let val_shape = config.val_shape(val_bank.classes.len());
    let val_sampler = if config.val_episodes > 0 && val_bank.classes.len() >= 2 {
        Some(
            EpisodeSampler::new(&val_bank.classes, val_shape, None, config.seed)
                .context("validation episodes")?,
        )
    } else {
        None
    };
    let val_tensors = val_bank.as_tensors(recipe);

    // Model and optimiser, fresh or restored.
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let teach = Teach {
        bank: &train_bank,
        tensors: &tensors,
        progress,
    };
    let objective = objective(run, teach, distance, vb)?;
    crate::nn::init::seeded_init(&varmap, config.seed)?;
    let restoring = resume && files.state().exists();
    if let (Some(init), false) = (&config.init, restoring) {
        load_encoder(&varmap, init, config)?;
    }
    let trainable: Vec<_> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?
        .iter()
        .filter(|(name, _)| !name.contains("running_"))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut adam = Adam::new(trainable, config.lr)?;
    let mut state = TrainState {
        episode: 0,
        best_val: None,
        best_episode: 0,
        seconds: 0.0,
    };
    if restoring {
        state = serde_json::from_slice(&std::fs::read(files.state())?)
            .with_context(|| format!("resuming: {}", files.state().display()))?;
        varmap
            .load(files.last())
            .with_context(|| format!("resuming: {}", files.last().display()))?;
        adam.load(&files.optimizer(), state.episode)
            .with_context(|| format!("resuming: {}", files.optimizer().display()))?;
    }
    // Metrics written after the checkpoint we resume from describe episodes
    // that will be trained again: drop them.
    let mut history: Vec<MetricLine> = read_metrics(&files.metrics())
        .into_iter()
        .filter(|m| m.episode <= state.episode)
        .collect();
    let kept: String = history
        .iter()
        .map(|m| serde_json::to_string(m).map(|l| l + "\n"))
        .collect::<Result<_, _>>()?;
    checkpoint::write_atomic(&files.metrics(), kept.as_bytes())?;

    let model_config = |state: &TrainState| ModelConfig {
        format: checkpoint::FORMAT,
        method: objective.method(),
        encoder: config.encoder,
        recipe: config.recipe,
        distance: config.distance.clone(),
        matching: run.matching,
        maml: run.maml,
        training: serde_json::json!({
            "run": config,
            "split": { "seed": split.seed, "val_classes": split.val.iter().map(|&c| &set.classes[c].name).collect::<Vec<_>>() },
            "classes": set.classes.iter().chain(&extra_names).map(|c| &c.name).collect::<Vec<_>>(),
            "episodes_done": state.episode,
            "best_val_accuracy": state.best_val,
            "best_episode": state.best_episode,
            "train_seconds": state.seconds,
            "commit": git_commit(),
        }),
    };

    let bar = progress_bar(progress, config.episodes, state.episode);
    let log_every = config.val_every.clamp(1, 100);
    let (mut sum_loss, mut sum_acc, mut count) = (0.0, 0.0, 0usize);
    let mut interval = Instant::now();
    let mut session = Instant::now();
    let per = recipe.len();
    let face_augment = objective.face_augment();
    let gather = |ids: &[usize], rng: &mut ChaCha8Rng| -> candle_core::Result<Tensor> {
        let mut data = Vec::with_capacity(ids.len() * per);
        for &i in ids {
            let image = train_bank.row(i);
            match (&config.affine, face_augment) {
                (_, Some(face)) => data.extend(face.apply(rng, image, shape)),
                (Some(ranges), None) => {
                    data.extend(affine(image, shape, ranges.sample(rng, shape.width), 0.0))
                }
                (None, None) => data.extend_from_slice(image),
            }
        }
        Tensor::from_vec(
            data,
            (ids.len(), shape.channels, shape.height, shape.width),
            &Device::Cpu,
        )
    };
    let batches = Batches {
        bank: &train_bank,
        shape,
        classes: &train_bank.classes,
        gather: &gather,
    };
    while state.episode < config.episodes {
        let lr = config.lr
            * config
                .lr_gamma
                .powi((state.episode / config.lr_step.max(1)) as i32);
        adam.lr = lr;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed_a11e);
        rng.set_stream(state.episode as u64);
        let (loss_value, acc, grads) = objective.gradients(&batches, state.episode, &mut rng)?;
        if !loss_value.is_finite() {
            bail!(
                "training diverged at episode {}: loss is {loss_value}",
                state.episode
            );
        }
        adam.step(&grads)?;
        state.episode += 1;
        sum_loss += loss_value;
        sum_acc += acc;
        count += 1;
        bar.inc(1);

        if state.episode % log_every == 0 || state.episode == config.episodes {
            let line = MetricLine {
                episode: state.episode,
                loss: Some(sum_loss / count as f64),
                accuracy: Some(sum_acc / count as f64),
                val_accuracy: None,
                val_ci95: None,
                lr,
                ms_per_episode: Some(interval.elapsed().as_secs_f64() * 1000.0 / count as f64),
            };
            bar.set_message(format!(
                "loss {:.3} acc {:.1}% best val {:.1}%",
                sum_loss / count as f64,
                100.0 * sum_acc / count as f64,
                100.0 * state.best_val.unwrap_or(0.0)
            ));
            append_metric(&files.metrics(), &line)?;
            history.push(line);
            (sum_loss, sum_acc, count) = (0.0, 0.0, 0);
            interval = Instant::now();
        }
        let stopping = stop.episode.is_some_and(|e| state.episode >= e)
            || stop
                .seconds
                .is_some_and(|s| started.elapsed().as_secs_f64() >= s);
        if state.episode % config.val_every == 0 || state.episode == config.episodes || stopping {
            state.seconds += session.elapsed().as_secs_f64();
            session = Instant::now();
            if let Some(val_sampler) = &val_sampler {
                let report = objective.validate(&Validation {
                    images: &val_tensors,
                    sampler: val_sampler,
                    episodes: config.val_episodes,
                    seed: config.seed,
                    recipe,
                    dim: config.encoder.dim(),
                    distance,
                })?;
                let line = MetricLine {
                    episode: state.episode,
                    loss: None,
                    accuracy: None,
                    val_accuracy: Some(report.summary.mean),
                    val_ci95: Some(report.summary.ci95),
                    lr,
                    ms_per_episode: None,
                };
                append_metric(&files.metrics(), &line)?;
                history.push(line);
                if state.best_val.is_none_or(|best| report.summary.mean > best) {
                    state.best_val = Some(report.summary.mean);
                    state.best_episode = state.episode;
                    checkpoint::save(&files.best(), &varmap, &model_config(&state))?;
                }
            } else {
                state.best_episode = state.episode;
                checkpoint::save(&files.best(), &varmap, &model_config(&state))?;
            }
            // The resume point: weights, optimiser, then the state that names them.
            checkpoint::save(&files.last(), &varmap, &model_config(&state))?;
            adam.save(&files.optimizer())?;
            checkpoint::write_atomic(&files.state(), &serde_json::to_vec_pretty(&state)?)?;
            if let Err(e) = plot_curve(&files.curve(), &history) {
                eprintln!("warning: could not draw {}: {e:#}", files.curve().display());
            }
            if stopping {
                break;
            }
        }
    }
    bar.finish();
    Ok(state)
}

fn append_metric(path: &Path, line: &MetricLine) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(line)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads `metrics.jsonl`, skipping lines a crash may have cut short.
pub fn read_metrics(path: &Path) -> Vec<MetricLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Draws training loss, training accuracy and validation accuracy against episodes.
pub fn plot_curve(path: &Path, history: &[MetricLine]) -> anyhow::Result<()> {
    let pts = |f: &dyn Fn(&MetricLine) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|m| f(m).map(|v| (m.episode as f64, v)))
            .collect()
    };
    let train_acc = pts(&|m| m.accuracy);
    let val_acc = pts(&|m| m.val_accuracy);
    let loss = pts(&|m| m.loss);
    line_chart_png(
        path,
        "Training",
        "episode",
        "accuracy / loss",
        &[
            Series {
                name: "train accuracy",
                points: &train_acc,
            },
            Series {
                name: "validation accuracy",
                points: &val_acc,
            },
            Series {
                name: "train loss",
                points: &loss,
            },
        ],
        false,
    )
}
