//! Episodic training of few-shot methods, with validation, checkpoints and resume.
//!
//! `config` holds what defines a run, `objective` what each method minimises
//! (one `Objective` trait), `files` what a run writes; this module runs the
//! one loop for all of them.

mod config;
mod files;
mod objective;

pub use config::{CosFaceConfig, DistillConfig, SiameseConfig, SiameseLoss, TrainConfig};
pub use files::{git_commit, plot_curve, read_metrics, RunFiles};

use config::RunConfig;
use files::{append_metric, load_encoder, start_or_resume};
use objective::{objective, Bank, Batches, Teach, Validation};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fewshot_core::Distance;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::{affine, Shape};
use crate::data::{ClassSet, Layout, Tensors};
use crate::episode::{ClassSplit, EpisodeSampler};
use crate::nn::adam::Adam;
use crate::nn::checkpoint::{self, ModelConfig};
use crate::nn::maml::MamlConfig;
use crate::nn::matching::MatchingConfig;

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

/// The variables of `varmap` that the optimiser updates: all but batch
/// norm's running statistics (`running_*`), with their names.
pub fn trainable(varmap: &VarMap) -> anyhow::Result<Vec<(String, candle_core::Var)>> {
    Ok(varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?
        .iter()
        .filter(|(name, _)| !name.contains("running_"))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect())
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
    if config.within_alphabet > 0.0 && !set.has_alphabets() {
        anyhow::bail!(
            "--within-alphabet needs class folders inside alphabet folders (the Omniglot \
             layout); {} holds its classes at its root",
            config.data.display()
        );
    }
    // Each class's alphabet; an extra folder's alphabets are its own.
    let mut groups = set.alphabet_ids();
    let mut extra_names = Vec::new();
    for extra in &config.extra_train {
        let more = ClassSet::load(extra, Layout::Auto)?;
        let offset = groups.iter().max().map_or(0, |g| g + 1);
        groups.extend(more.alphabet_ids().into_iter().map(|g| g + offset));
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
    let pick_groups = |ids: &[usize]| ids.iter().map(|&c| groups[c]).collect::<Vec<_>>();
    let train_bank = Bank::build(
        &tensors,
        &pick(&train_classes),
        &pick_groups(&train_classes),
        config.rotations,
        shape,
    );
    let val_bank = Bank::build(
        &tensors,
        &pick(&split.val),
        &pick_groups(&split.val),
        config.rotations,
        shape,
    );
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
    objective.initialise()?;
    let restoring = resume && files.state().exists();
    if let (Some(init), false) = (&config.init, restoring) {
        load_encoder(&varmap, init, config)?;
    }
    let mut adam = Adam::new(trainable(&varmap)?, config.lr)?;
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
