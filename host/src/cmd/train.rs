//! `fewshot train`: episodic training.

use std::path::PathBuf;

use anyhow::Context;
use clap::builder::TypedValueParser;
use clap::{Args, Subcommand};
use fewshot_core::Distance;
use fewshot_host::augment::AffineRanges;
use fewshot_host::augment::FaceAugment;
use fewshot_host::episode::EpisodeShape;
use fewshot_host::nn::encoder::EncoderConfig;
use fewshot_host::nn::maml::MamlConfig;
use fewshot_host::nn::matching::{FceConfig, MatchingConfig};
use fewshot_host::nn::siamese::{EmbeddingDistance, Mining};
use fewshot_host::train::{
    train_cosface, train_distill, train_maml, train_matching, train_protonet, train_siamese,
    CosFaceConfig, DistillConfig, RunFiles, SiameseConfig, SiameseLoss, StopAt, TrainConfig,
    TrainState,
};

use super::model::{Defaults, ModelArgs};

/// Methods `fewshot train` knows.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Prototypical Networks (Snell et al., 2017): class-mean prototypes, softmax over negative distances.
    Protonet(ProtonetArgs),
    /// CosFace (Wang et al., 2018) pre-training: a cosine-margin classifier over all training
    /// classes (for faces: identities), validated on episodes of held-out classes.
    Cosface(CosfaceArgs),
    /// Siamese pre-training on batches of P classes × K images: pair-wise similarity
    /// (Koch et al., 2015) or the triplet loss (Schroff et al., 2015) with random
    /// triplets or batch-hard mining (Hermans et al., 2017).
    Siamese(SiameseArgs),
    /// Matching Networks (Vinyals et al., 2016): softmax attention over the support set,
    /// optionally with full context embeddings (a bidirectional LSTM over the support
    /// set, an attention LSTM over each query).
    Matching(MatchingArgs),
    /// MAML (Finn et al., 2017): meta-learns Conv-4 and an N-way head from which a few SGD
    /// steps on a task's support set classify it; first or second order (--episodes counts
    /// meta-steps of --meta-batch tasks).
    Maml(MamlArgs),
    /// Distillation (Hinton et al., 2015, on embeddings): the student learns the unit
    /// embedding a teacher face encoder gives each image and its mirror image (targets
    /// computed once and cached); no identity labels needed.
    Distill(DistillArgs),
}

impl TrainCommand {
    /// The `--threads` flag of any method.
    pub fn threads(&self) -> Option<usize> {
        let common = match self {
            TrainCommand::Protonet(a) => &a.common,
            TrainCommand::Cosface(a) => &a.common,
            TrainCommand::Siamese(a) => &a.common,
            TrainCommand::Matching(a) => &a.common,
            TrainCommand::Maml(a) => &a.common,
            TrainCommand::Distill(a) => &a.common,
        };
        common.threads
    }
}

/// Arguments of `fewshot train distill`. Defaults suit faces: LFW-devtrain (and any
/// --extra-train folders), MobileFaceNet as the teacher, the student's input from the
/// input flags (e.g. --align --size 64 --channels 3).
#[derive(Debug, Args)]
pub struct DistillArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The teacher: an ONNX model exported by `fewshot export`, or a TensorFlow Lite face
    /// encoder taking MobileFaceNet's input (112×112 RGB aligned, (x − 127.5) / 128;
    /// needs a build with `--features tflite`).
    #[arg(long, default_value = "models/mobilefacenet.tflite")]
    teacher: PathBuf,
    /// Images per training batch (--episodes counts batches).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Weight of the term on the batch's cosine-similarity structure (0: none).
    #[arg(long, default_value_t = 0.0)]
    relation: f64,
    /// Weight of the term that matches the student's softmax of cosine similarities to the
    /// teacher's embeddings of all training images (each image's own left out) to the
    /// teacher's: it weighs each face's nearest neighbours, where look-alikes are told apart.
    #[arg(long, value_name = "WEIGHT")]
    bank: Option<f64>,
    /// Temperature of the bank term's softmaxes.
    #[arg(long, default_value_t = 0.1, requires = "bank")]
    bank_temperature: f64,
    /// More class folders to train on, never held out for validation (repeatable),
    /// e.g. faces/celeba-10k.
    #[arg(long, value_name = "DIR")]
    extra_train: Vec<PathBuf>,
    /// No brightness/contrast jitter or shifts (flips stay: each has its own target).
    #[arg(long)]
    no_augment: bool,
    /// Largest random shift in pixels (the teacher's target is of the unshifted face).
    #[arg(long, default_value_t = 0)]
    max_shift: usize,
    /// Aligned views of each training image: the plain alignment and N − 1 jittered ones
    /// (rotation ±8°, scale ±10 %, shift ±3 % of the crop, fixed per view), each with the
    /// teacher's own target for that view (computed once per view and cached). Needs --align.
    #[arg(long, default_value_t = 1)]
    views: usize,
    /// Mixed views besides them: each blends every aligned training face with another at a
    /// fixed share of 10-50 % (drawn once per view), the teacher's target being its embedding
    /// of the blend (computed once per view and cached). 0: none.
    #[arg(long, default_value_t = 0)]
    mixup: usize,
    /// The crops the teacher's targets are made from: `own` (its own input, 112×112 RGB for
    /// MobileFaceNet) or `student` (the student's crops resampled to the teacher's input, so
    /// the target depends only on what the student sees).
    #[arg(long, value_parser = parse_teacher_input, default_value = "own")]
    teacher_input: fewshot_host::distill::TeacherInput,
    /// Largest brightness offset.
    #[arg(long, default_value_t = FaceAugment::FACES.brightness)]
    brightness: f32,
    /// Largest relative contrast change.
    #[arg(long, default_value_t = FaceAugment::FACES.contrast)]
    contrast: f32,
    /// Distance of validation.
    #[arg(long, value_parser = super::parse_distance, default_value = "cosine")]
    distance: Distance,
}

/// How the episodic methods (protonet, matching, maml) draw their Omniglot episodes.
#[derive(Debug, Args)]
pub struct EpisodeArgs {
    /// Do not add 90° rotations as new classes.
    #[arg(long)]
    no_rotations: bool,
    /// Random affine distortions (±15° rotation, ±0.3 shear, ±20 % scale, ±10 % shift).
    #[arg(long)]
    affine: bool,
    /// Share of training episodes (0 to 1) drawn from one alphabet, as Lake's
    /// one-shot runs are (Omniglot's layout; each quarter turn of an alphabet
    /// counts as an alphabet; an alphabet of fewer than --k-way characters
    /// gives them all and the rest come from others)
    #[arg(long, default_value_t = 0.0, value_parser = super::parse_share)]
    within_alphabet: f64,
}

impl EpisodeArgs {
    /// The run's settings: `common`'s, with these episodes.
    fn config(&self, common: &CommonArgs, distance: Distance) -> anyhow::Result<TrainConfig> {
        let mut config = common.config(
            !self.no_rotations,
            self.affine.then_some(AffineRanges::OMNIGLOT),
            distance,
            Defaults::Omniglot,
        )?;
        config.within_alphabet = self.within_alphabet;
        Ok(config)
    }
}

/// Arguments of `fewshot train protonet`.
#[derive(Debug, Args)]
pub struct ProtonetArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    omniglot: EpisodeArgs,
    /// Distance of prototypes and validation.
    #[arg(long, value_parser = super::parse_distance, default_value = "l2")]
    distance: Distance,
}

/// Arguments of `fewshot train matching`. Defaults suit Omniglot (as protonet).
#[derive(Debug, Args)]
pub struct MatchingArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Full context embeddings (the paper's appendix A.2).
    #[arg(long)]
    fce: bool,
    /// Layers of the support set's bidirectional LSTM (with --fce).
    #[arg(long, default_value_t = 1, requires = "fce")]
    lstm_layers: usize,
    /// Steps K of the query's attention LSTM (with --fce).
    #[arg(long, default_value_t = 5, requires = "fce")]
    unrolling_steps: usize,
    /// Similarity c of the attention: cosine (the paper's), minus squared l2, or dot.
    #[arg(long, value_parser = super::parse_distance, default_value = "cosine")]
    similarity: Distance,
    /// A factor s on the similarities before the attention's softmax, softmax(s · c)
    /// [default: 1, the paper's]; cosine similarities lie in [−1, 1], so a softmax
    /// over them alone cannot be confident (e.g. --attention-scale 10).
    #[arg(long, value_parser = super::parse_positive::<f32>)]
    attention_scale: Option<f32>,
    #[command(flatten)]
    omniglot: EpisodeArgs,
}

/// Arguments of `fewshot train maml`. Defaults suit Omniglot 5-way 1-shot as in the paper
/// (inner rate 0.4, 1 inner step in training, 3 at test, meta-batch 32).
#[derive(Debug, Args)]
pub struct MamlArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// 1: first order (inner gradients detached); 2: second order (through the inner steps).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    order: u8,
    /// Inner SGD steps on each task's support set while meta-training.
    #[arg(long, default_value_t = 1)]
    inner_steps: usize,
    /// Inner SGD steps at validation and test time.
    #[arg(long, default_value_t = 3)]
    inner_steps_test: usize,
    /// Inner learning rate α.
    #[arg(long, default_value_t = 0.4)]
    inner_lr: f64,
    /// Tasks per meta-step.
    #[arg(long, default_value_t = 32)]
    meta_batch: usize,
    /// Start every task's head at zero and leave it out of meta-learning (the zero trick:
    /// one inner step makes each class's row its prototype less the mean prototype).
    #[arg(long)]
    zero_head: bool,
    #[command(flatten)]
    omniglot: EpisodeArgs,
}

/// The Siamese objectives on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LossArg {
    /// A fully connected layer on |e1 − e2|, sigmoid, binary cross-entropy on
    /// balanced same/different pairs.
    Pairwise,
    /// max(0, d(a, p) − d(a, n) + margin).
    Triplet,
}

/// Triplet mining on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MiningArg {
    /// A random positive and negative for each anchor of the batch.
    Random,
    /// The farthest positive and the nearest negative for each anchor.
    BatchHard,
}

/// Encoder architectures on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchArg {
    /// Four blocks of 3×3 convolution, batch norm, ReLU, 2×2 max pooling.
    Conv4,
    /// MobileFaceNet-style depthwise-separable bottlenecks, a global depthwise
    /// convolution and a linear embedding (input side a multiple of 16).
    Mobile,
}

impl ArchArg {
    /// The encoder for `channels × size²` inputs: Conv-4 of `hidden` channels
    /// or of `widths` (with a linear embedding only when `embedding` is
    /// given), or the mobile one of width `hidden` and `embedding` (default
    /// [`MOBILE_EMBEDDING`]).
    pub fn encoder(
        self,
        channels: usize,
        hidden: usize,
        widths: Option<[usize; 4]>,
        depths: Option<[usize; 4]>,
        size: usize,
        embedding: Option<usize>,
    ) -> anyhow::Result<EncoderConfig> {
        Ok(match self {
            ArchArg::Conv4 => EncoderConfig::Conv4 {
                in_channels: channels,
                hidden: widths.map_or(hidden, |w| w[0]),
                widths,
                depths: depths.filter(|d| *d != [1; 4]),
                input_size: size,
                embedding,
            },
            ArchArg::Mobile if widths.is_some() || depths.is_some() => {
                anyhow::bail!(
                    "--widths and --depths are for --arch conv4; --arch mobile scales with --hidden"
                )
            }
            ArchArg::Mobile => EncoderConfig::Mobile {
                in_channels: channels,
                width: hidden,
                input_size: size,
                embedding: embedding.unwrap_or(MOBILE_EMBEDDING),
            },
        })
    }
}

/// Embedding size of `--arch mobile` when `--embedding` is not given.
pub const MOBILE_EMBEDDING: usize = 128;

/// Embedding distances on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DistanceArg {
    /// Squared Euclidean distance.
    SquaredL2,
    /// Euclidean distance.
    L2,
    /// 1 − cosine similarity (distance of the unit embeddings).
    Cosine,
}

/// Arguments of `fewshot train siamese`. Defaults suit Omniglot (as protonet).
#[derive(Debug, Args)]
pub struct SiameseArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The objective.
    #[arg(long, value_enum)]
    loss: LossArg,
    /// How triplets are drawn from a batch (triplet loss).
    #[arg(long, value_enum, default_value = "batch-hard")]
    mining: MiningArg,
    /// Triplet margin α (try ~0.2 with --distance cosine).
    #[arg(long, default_value_t = 1.0)]
    margin: f64,
    /// Distance of the triplet loss; also of prototypes and validation (squared
    /// L2 for both L2 forms).
    #[arg(long, value_enum, default_value = "squared-l2")]
    distance: DistanceArg,
    /// Classes per batch (P); --episodes counts batches.
    #[arg(long, default_value_t = 20)]
    p_classes: usize,
    /// Images per class in a batch (K).
    #[arg(long, default_value_t = 4)]
    k_images: usize,
    /// Do not add 90° rotations as new classes.
    #[arg(long)]
    no_rotations: bool,
    /// Random affine distortions (±15° rotation, ±0.3 shear, ±20 % scale, ±10 % shift).
    #[arg(long)]
    affine: bool,
    /// Face augmentation instead (flips, shifts of 4 pixels, brightness ±0.1,
    /// contrast ±20 %), for face data (give --data and the face recipe flags).
    #[arg(long, conflicts_with = "affine")]
    face_augment: bool,
}

/// Arguments of `fewshot train cosface`. Defaults suit faces: LFW-devtrain,
/// 64×64 grey centre crop, flips, shifts and brightness/contrast jitter.
#[derive(Debug, Args)]
pub struct CosfaceArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Images per training batch (--episodes counts batches).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Scale s of the logits s·(cos − m).
    #[arg(long, default_value_t = 30.0)]
    scale: f64,
    /// Cosine margin m.
    #[arg(long, default_value_t = 0.35)]
    margin: f64,
    /// Train without augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Distance of validation.
    #[arg(long, value_parser = super::parse_distance, default_value = "cosine")]
    distance: Distance,
    /// Largest random shift in pixels.
    #[arg(long, default_value_t = FaceAugment::FACES.max_shift)]
    max_shift: usize,
    /// Largest brightness offset.
    #[arg(long, default_value_t = FaceAugment::FACES.brightness)]
    brightness: f32,
    /// Largest relative contrast change.
    #[arg(long, default_value_t = FaceAugment::FACES.contrast)]
    contrast: f32,
}

/// Settings every training method shares.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Class folders to train on (validation classes are held out of them by --seed).
    /// [default: omniglot/images_background_small1 for protonet and siamese, faces/lfw-devtrain for cosface]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder: checkpoints (best, last), metrics.jsonl, curve.png, run.json.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Classes per episode (cosface, siamese: per validation episode) [default: 20]
    #[arg(long)]
    k_way: Option<usize>,
    /// Classes per validation episode, when not --k-way's (e.g. 20 for a run
    /// trained 60-way, or 100 for a face student held to a larger door)
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..).map(usize::from))]
    val_k_way: Option<usize>,
    /// Support images per class [default: 1]
    #[arg(long)]
    n_shot: Option<usize>,
    /// Query images per class [default: 5 for protonet, 1 for cosface, as most
    /// LFW people have two images]
    #[arg(long)]
    q_queries: Option<usize>,
    /// Training episodes.
    #[arg(long, default_value_t = 20_000)]
    episodes: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Halve (× --lr-gamma) the learning rate every this many episodes.
    #[arg(long, default_value_t = 4_000)]
    lr_step: usize,
    /// Learning-rate factor at each step.
    #[arg(long, default_value_t = 0.5)]
    lr_gamma: f64,
    /// Validate and checkpoint every this many episodes.
    #[arg(long, default_value_t = 500)]
    val_every: usize,
    /// Validation episodes (on cached embeddings of the held-out classes).
    #[arg(long, default_value_t = 500)]
    val_episodes: usize,
    /// Fraction of classes held out for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// The encoder's architecture.
    #[arg(long, value_enum, default_value_t = ArchArg::Conv4)]
    arch: ArchArg,
    /// Channels of each Conv-4 block; for `--arch mobile` the stem's channels,
    /// which the stages scale with (64: MobileFaceNet's widths).
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Conv-4 only: the channels of each of the four blocks, e.g. 64,64,128,192
    /// (wider where the maps are small); overrides --hidden.
    #[arg(long, value_parser = super::parse_widths, conflicts_with = "hidden")]
    widths: Option<[usize; 4]>,
    /// Conv-4 only: 3×3 convolutions (batch norm, ReLU) in each of the four
    /// blocks, the last one pooled, e.g. 1,2,2,2 (a deeper student at the
    /// same pooling) [default: 1,1,1,1].
    #[arg(long, value_parser = super::parse_depths)]
    depths: Option<[usize; 4]>,
    /// Size of the linear embedding: `--arch mobile`'s (default 128), or one
    /// added after Conv-4's features (default: none; e.g. 192 to start a
    /// CosFace run from a distilled student with --init). Distillation
    /// takes the teacher's.
    #[arg(long)]
    embedding: Option<usize>,
    /// Seed of the class split, the initialisation order and the episodes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop (after a checkpoint) once this many episodes are done; --resume continues.
    #[arg(long)]
    stop_at: Option<usize>,
    /// Stop (after a checkpoint) after this many minutes; --resume continues.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Threads for the tensor work (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Start from this checkpoint's encoder (`best.safetensors` of an earlier
    /// run, same --hidden and input flags) instead of random weights, e.g. a
    /// CosFace encoder fine-tuned with the triplet loss.
    #[arg(long, value_name = "CHECKPOINT")]
    init: Option<PathBuf>,
    #[command(flatten)]
    input: ModelArgs,
}

/// Runs `fewshot train`.
pub fn run(command: TrainCommand) -> anyhow::Result<()> {
    match command {
        TrainCommand::Protonet(args) => {
            let config = args.omniglot.config(&args.common, args.distance)?;
            let stop = args.common.stop();
            let state = train_protonet(
                &config,
                &args.common.out,
                args.common.resume,
                stop,
                super::progress(),
            )?;
            report(&args.common, &config, &state)
        }
        TrainCommand::Matching(args) => {
            let config = args.omniglot.config(&args.common, args.similarity)?;
            let matching = MatchingConfig {
                fce: args.fce.then_some(FceConfig {
                    lstm_layers: args.lstm_layers,
                    unrolling_steps: args.unrolling_steps,
                }),
                scale: args.attention_scale,
            };
            let stop = args.common.stop();
            let state = train_matching(
                &config,
                &matching,
                &args.common.out,
                args.common.resume,
                stop,
                super::progress(),
            )?;
            report(&args.common, &config, &state)
        }
        TrainCommand::Maml(args) => {
            let config = args.omniglot.config(&args.common, Distance::L2)?;
            let maml = MamlConfig {
                order: args.order,
                inner_steps: args.inner_steps,
                inner_steps_test: args.inner_steps_test,
                inner_lr: args.inner_lr,
                meta_batch: args.meta_batch,
                zero_head: args.zero_head,
            };
            let stop = args.common.stop();
            let state = train_maml(
                &config,
                &maml,
                &args.common.out,
                args.common.resume,
                stop,
                super::progress(),
            )?;
            report(&args.common, &config, &state)
        }
        TrainCommand::Cosface(args) => {
            let config = args
                .common
                .config(false, None, args.distance, Defaults::Faces)?;
            let cosface = CosFaceConfig {
                batch: args.batch,
                scale: args.scale,
                margin: args.margin,
                augment: face_augment(
                    args.no_augment,
                    args.max_shift,
                    args.brightness,
                    args.contrast,
                ),
            };
            let stop = args.common.stop();
            let state = train_cosface(
                &config,
                &cosface,
                &args.common.out,
                args.common.resume,
                stop,
                super::progress(),
            )?;
            report(&args.common, &config, &state)
        }
        TrainCommand::Siamese(args) => {
            let distance = match args.distance {
                DistanceArg::SquaredL2 => EmbeddingDistance::SquaredL2,
                DistanceArg::L2 => EmbeddingDistance::L2,
                DistanceArg::Cosine => EmbeddingDistance::Cosine,
            };
            let config = args.common.config(
                !args.no_rotations,
                args.affine.then_some(AffineRanges::OMNIGLOT),
                distance.core(),
                Defaults::Omniglot,
            )?;
            let siamese = SiameseConfig {
                loss: match args.loss {
                    LossArg::Pairwise => SiameseLoss::Pairwise,
                    LossArg::Triplet => SiameseLoss::Triplet {
                        mining: match args.mining {
                            MiningArg::Random => Mining::Random,
                            MiningArg::BatchHard => Mining::BatchHard,
                        },
                        margin: args.margin,
                        distance,
                    },
                },
                classes: args.p_classes,
                per_class: args.k_images,
                augment: args.face_augment.then_some(FaceAugment::FACES),
            };
            let stop = args.common.stop();
            let state = train_siamese(
                &config,
                &siamese,
                &args.common.out,
                args.common.resume,
                stop,
                super::progress(),
            )?;
            report(&args.common, &config, &state)
        }
        TrainCommand::Distill(args) => {
            let mut config = args
                .common
                .config(false, None, args.distance, Defaults::Faces)?;
            let teacher = super::resolve(&args.teacher, "--teacher")?;
            let loaded = fewshot_host::distill::Teacher::load(&teacher, None)?;
            config
                .encoder
                .set_embedding(fewshot_host::embed::Embedder::dim(&loaded));
            for extra in &args.extra_train {
                let dir = super::resolve(extra, "--extra-train")?;
                config
                    .extra_train
                    .push(std::fs::canonicalize(&dir).unwrap_or(dir));
            }
            let distill = DistillConfig {
                teacher: std::fs::canonicalize(&teacher).unwrap_or(teacher),
                batch: args.batch,
                relation: args.relation,
                augment: face_augment(
                    args.no_augment,
                    args.max_shift,
                    args.brightness,
                    args.contrast,
                ),
                views: args.views,
                mixup: args.mixup,
                teacher_input: args.teacher_input,
                bank: args.bank.map(|weight| fewshot_host::distill::BankTerm {
                    weight,
                    temperature: args.bank_temperature,
                }),
            };
            let stop = args.common.stop();
            let state = train_distill(
                &config,
                &distill,
                &args.common.out,
                args.common.resume,
                stop,
                super::progress(),
            )?;
            report(&args.common, &config, &state)
        }
    }
}

/// The face augmentation the flags ask for (flips always; none with `--no-augment`).
fn face_augment(
    no_augment: bool,
    max_shift: usize,
    brightness: f32,
    contrast: f32,
) -> Option<FaceAugment> {
    (!no_augment).then_some(FaceAugment {
        max_shift,
        flip: true,
        brightness,
        contrast,
    })
}

impl CommonArgs {
    /// The run's settings; sets the thread count.
    fn config(
        &self,
        rotations: bool,
        affine: Option<AffineRanges>,
        distance: Distance,
        defaults: Defaults,
    ) -> anyhow::Result<TrainConfig> {
        let args = self;
        if let Some(n) = args.threads {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .context("setting --threads")?;
        }
        let (default_data, default_q) = match defaults {
            Defaults::Omniglot => ("omniglot/images_background_small1", 5),
            Defaults::Faces => ("faces/lfw-devtrain", 1),
        };
        let data = args
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from(default_data));
        let data = super::resolve(&data, "--data")?;
        let recipe = args.input.recipe(defaults)?;
        if recipe.width != recipe.height {
            anyhow::bail!("training needs square inputs");
        }
        Ok(TrainConfig {
            data: std::fs::canonicalize(&data).unwrap_or(data),
            shape: EpisodeShape {
                k_way: args.k_way.unwrap_or(20),
                n_shot: args.n_shot.unwrap_or(1),
                q_queries: args.q_queries.unwrap_or(default_q),
            },
            episodes: args.episodes,
            lr: args.lr,
            lr_step: args.lr_step,
            lr_gamma: args.lr_gamma,
            val_every: args.val_every.max(1),
            val_episodes: args.val_episodes,
            val_fraction: args.val_fraction,
            val_k_way: args.val_k_way,
            rotations,
            affine,
            encoder: args.arch.encoder(
                recipe.channels,
                args.hidden,
                args.widths,
                args.depths,
                recipe.width,
                args.embedding,
            )?,
            recipe: recipe.into(),
            distance: distance.name().into(),
            seed: args.seed,
            init: args
                .init
                .as_ref()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
            extra_train: Vec::new(),
            within_alphabet: 0.0,
        })
    }

    fn stop(&self) -> StopAt {
        StopAt {
            episode: self.stop_at,
            seconds: self.max_minutes.map(|m| m * 60.0),
        }
    }
}

/// Prints where the run stands and where its files are.
fn report(args: &CommonArgs, config: &TrainConfig, state: &TrainState) -> anyhow::Result<()> {
    let files = RunFiles {
        dir: args.out.clone(),
    };
    if state.episode < config.episodes {
        println!(
            "stopped at episode {} of {}: continue with the same flags and --resume",
            state.episode, config.episodes
        );
    }
    match state.best_val {
        Some(v) => println!(
            "trained {} episodes in {:.0} s; best validation accuracy {:.2}% at episode {}",
            state.episode,
            state.seconds,
            100.0 * v,
            state.best_episode
        ),
        None => println!(
            "trained {} episodes in {:.0} s (no validation classes)",
            state.episode, state.seconds
        ),
    }
    println!("best checkpoint: {}", files.best().display());
    println!("curve: {}", files.curve().display());
    Ok(())
}

/// Parses `--teacher-input`.
fn parse_teacher_input(s: &str) -> Result<fewshot_host::distill::TeacherInput, String> {
    use fewshot_host::distill::TeacherInput;
    match s {
        "own" => Ok(TeacherInput::Own),
        "student" => Ok(TeacherInput::Student),
        _ => Err(format!(
            "unknown teacher input {s:?}: expected own or student"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Conv-4 has a linear embedding only when asked for one (so a CosFace
    /// run can start from a distilled student's checkpoint); the mobile
    /// encoder always has one, 128 unless asked.
    #[test]
    fn embedding_is_conv4s_only_when_given_and_mobiles_always() {
        let conv4 = |e| ArchArg::Conv4.encoder(1, 32, None, None, 64, e).unwrap();
        assert_eq!(conv4(None).dim(), conv4(None).features());
        assert!(matches!(
            conv4(None),
            EncoderConfig::Conv4 {
                embedding: None,
                ..
            }
        ));
        assert_eq!(conv4(Some(192)).dim(), 192);
        let mobile = |e| ArchArg::Mobile.encoder(1, 32, None, None, 64, e).unwrap();
        assert_eq!(mobile(None).dim(), MOBILE_EMBEDDING);
        assert_eq!(mobile(Some(64)).dim(), 64);
    }
}
