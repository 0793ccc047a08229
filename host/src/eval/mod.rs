//! Few-shot evaluation: N-way K-shot episodes and Lake's one-shot runs;
//! the door's open-set protocol in [`door`].

pub mod door;
pub mod pairs;

use fewshot_core::prototype::mean_into;
use fewshot_core::{nearest, CoreError, Distance};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::embed::Embeddings;
use crate::episode::{Episode, EpisodeSampler, EpisodeShape};
use crate::nn::finetune::FineTune;
use crate::nn::maml::MamlModel;
use crate::nn::matching::MatchingHead;
use crate::stats::{mean_ci95, MeanCi};

/// Accuracy of nearest-prototype classification on one episode, over
/// precomputed embeddings of every image.
pub fn episode_accuracy(
    embeddings: &Embeddings,
    episode: &Episode,
    shape: EpisodeShape,
    distance: Distance,
) -> Result<f64, CoreError> {
    let dim = embeddings.dim;
    let mut prototypes = vec![0.0f32; shape.k_way * dim];
    for (c, proto) in prototypes.chunks_mut(dim).enumerate() {
        let shots = &episode.support[c * shape.n_shot..(c + 1) * shape.n_shot];
        mean_into(shots.iter().map(|&i| embeddings.row(i)), proto)?;
    }
    let mut correct = 0usize;
    for (q, &image) in episode.query.iter().enumerate() {
        let found = nearest(embeddings.row(image), prototypes.chunks(dim), distance)?;
        if found.index == q / shape.q_queries {
            correct += 1;
        }
    }
    Ok(correct as f64 / episode.query.len() as f64)
}

/// How the queries of an episode are classified.
#[derive(Debug, Clone)]
pub enum EpisodeClassifier {
    /// The nearest class-mean prototype under a distance.
    Prototypes(Distance),
    /// A cosine classifier initialised with the prototypes of the unit
    /// embeddings and fine-tuned on the support (and the unlabelled queries).
    FineTuned(FineTune),
    /// A Matching Network's attention over the support set (with its full
    /// context embeddings, if it has them).
    Matching(std::sync::Arc<MatchingHead>),
}

/// Errors of evaluating episodes.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The embeddings or prototypes were unusable.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The episodes do not fit the classifier (a MAML head of another way).
    #[error("{0}")]
    Ways(String),
    /// Fine-tuning or the Matching Network's head failed.
    #[error("classifier: {0}")]
    FineTune(#[from] candle_core::Error),
}

/// Accuracy of a fine-tuned cosine classifier ([`FineTune`]) on one
/// episode, over precomputed embeddings of every image.
pub fn episode_accuracy_finetuned(
    embeddings: &Embeddings,
    episode: &Episode,
    shape: EpisodeShape,
    finetune: &FineTune,
) -> Result<f64, EvalError> {
    let labels: Vec<u32> = (0..episode.support.len())
        .map(|i| (i / shape.n_shot) as u32)
        .collect();
    let logits = finetune.query_logits(
        &stack_rows(embeddings, episode.support.iter().copied())?,
        &labels,
        &stack_rows(embeddings, episode.query.iter().copied())?,
        shape.k_way,
    )?;
    query_accuracy(&logits, shape.q_queries)
}

/// Fraction of the class-major queries (`q_queries` a class) whose largest
/// logit is their class's.
fn query_accuracy(logits: &candle_core::Tensor, q_queries: usize) -> Result<f64, EvalError> {
    let predicted: Vec<u32> = logits.argmax(1)?.to_vec1()?;
    let correct = predicted
        .iter()
        .enumerate()
        .filter(|&(q, &p)| p as usize == q / q_queries)
        .count();
    Ok(correct as f64 / predicted.len().max(1) as f64)
}

/// Accuracy of a Matching Network's head on one episode, over precomputed
/// embeddings of every image.
pub fn episode_accuracy_matching(
    embeddings: &Embeddings,
    episode: &Episode,
    shape: EpisodeShape,
    head: &MatchingHead,
) -> Result<f64, EvalError> {
    let logits = head.logits(
        &stack_rows(embeddings, episode.support.iter().copied())?,
        &stack_rows(embeddings, episode.query.iter().copied())?,
        shape,
    )?;
    query_accuracy(&logits, shape.q_queries)
}

/// Accuracy of a MAML network on one episode of preprocessed `images`
/// (the test-time inner loop on its support set, then its queries).
pub fn episode_accuracy_maml(
    images: &crate::data::Tensors,
    episode: &Episode,
    shape: EpisodeShape,
    model: &MamlModel,
) -> Result<f64, EvalError> {
    let logits = model.episode_logits(
        &image_rows(images, &episode.support)?,
        shape.n_shot,
        &image_rows(images, &episode.query)?,
    )?;
    query_accuracy(&logits, shape.q_queries)
}

/// Images `ids` of `images` as one `(n, c, h, w)` tensor.
fn image_rows(
    images: &crate::data::Tensors,
    ids: &[usize],
) -> candle_core::Result<candle_core::Tensor> {
    let r = images.recipe;
    let mut data = Vec::with_capacity(ids.len() * r.len());
    for &i in ids {
        data.extend_from_slice(images.row(i));
    }
    candle_core::Tensor::from_vec(
        data,
        (ids.len(), r.channels, r.height, r.width),
        &candle_core::Device::Cpu,
    )
}

/// Evaluates a MAML network on `episodes` episodes `0..episodes` of stream
/// `seed` over preprocessed `images`, in parallel; the episodes must have
/// the head's number of ways.
pub fn evaluate_episodes_maml(
    images: &crate::data::Tensors,
    sampler: &EpisodeSampler,
    episodes: usize,
    seed: u64,
    model: &MamlModel,
    progress: bool,
) -> Result<EpisodeReport, EvalError> {
    let Some(model) = model.for_ways(sampler.shape().k_way)? else {
        return Err(EvalError::Ways(format!(
            "the MAML head is {}-way: evaluate {}-way episodes (--k-way {})",
            model.k_way, model.k_way, model.k_way
        )));
    };
    evaluate(sampler, episodes, seed, progress, |episode| {
        episode_accuracy_maml(images, episode, sampler.shape(), &model)
    })
}

/// [`run_errors`] for a MAML network on a run's preprocessed images (the
/// training images first, then the test items): the training images are the
/// support set, one shot of each class.
pub fn run_errors_maml(
    name: &str,
    images: &crate::data::Tensors,
    n_training: usize,
    labels: &[usize],
    model: &MamlModel,
) -> Result<RunResult, EvalError> {
    let Some(model) = model.for_ways(n_training)? else {
        return Err(EvalError::Ways(format!(
            "run {name} is {n_training}-way, the MAML head {}-way: train with --k-way {n_training} or --zero-head",
            model.k_way
        )));
    };
    let support: Vec<usize> = (0..n_training).collect();
    let query: Vec<usize> = (n_training..n_training + labels.len()).collect();
    let logits = model.episode_logits(
        &image_rows(images, &support)?,
        1,
        &image_rows(images, &query)?,
    )?;
    run_result(name, &logits, labels)
}

/// The door's prototypes after fine-tuning ([`FineTune::fit`]): the unit rows
/// of the cosine classifier's weights `(classes × dim)`, flat, to be scored
/// with the cosine distance. `support` rows carry `labels`; `query` rows are
/// the unlabelled probes of the entropy term.
pub fn finetuned_prototypes(
    embeddings: &Embeddings,
    support: &[usize],
    labels: &[u32],
    query: &[usize],
    classes: usize,
    finetune: &FineTune,
) -> Result<Vec<f32>, EvalError> {
    let weights = finetune.fit(
        &stack_rows(embeddings, support.iter().copied())?,
        labels,
        &stack_rows(embeddings, query.iter().copied())?,
        classes,
    )?;
    Ok(crate::nn::cosface::normalize_rows(&weights)?
        .flatten_all()?
        .to_vec1()?)
}

/// The embeddings of images `ids` as one `(n, dim)` tensor.
fn stack_rows(
    embeddings: &Embeddings,
    ids: impl IntoIterator<Item = usize>,
) -> candle_core::Result<candle_core::Tensor> {
    let mut data = Vec::new();
    for i in ids {
        data.extend_from_slice(embeddings.row(i));
    }
    let n = data.len() / embeddings.dim.max(1);
    candle_core::Tensor::from_vec(data, (n, embeddings.dim), &candle_core::Device::Cpu)
}

/// The result of [`evaluate_episodes`].
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeReport {
    /// Mean accuracy with its 95% confidence interval.
    pub summary: MeanCi,
    /// Accuracy of each episode, in order.
    pub accuracies: Vec<f64>,
}

/// Evaluates `episodes` episodes `0..episodes` of stream `seed` in parallel
/// by nearest prototype.
pub fn evaluate_episodes(
    embeddings: &Embeddings,
    sampler: &EpisodeSampler,
    episodes: usize,
    seed: u64,
    distance: Distance,
    progress: bool,
) -> Result<EpisodeReport, CoreError> {
    evaluate(sampler, episodes, seed, progress, |episode| {
        episode_accuracy(embeddings, episode, sampler.shape(), distance)
    })
}

/// Evaluates `episodes` episodes `0..episodes` of stream `seed` in parallel
/// with the given classifier.
pub fn evaluate_episodes_with(
    embeddings: &Embeddings,
    sampler: &EpisodeSampler,
    episodes: usize,
    seed: u64,
    classifier: &EpisodeClassifier,
    progress: bool,
) -> Result<EpisodeReport, EvalError> {
    match classifier {
        EpisodeClassifier::Prototypes(distance) => Ok(evaluate_episodes(
            embeddings, sampler, episodes, seed, *distance, progress,
        )?),
        EpisodeClassifier::FineTuned(finetune) => {
            evaluate(sampler, episodes, seed, progress, |episode| {
                episode_accuracy_finetuned(embeddings, episode, sampler.shape(), finetune)
            })
        }
        EpisodeClassifier::Matching(head) => {
            evaluate(sampler, episodes, seed, progress, |episode| {
                episode_accuracy_matching(embeddings, episode, sampler.shape(), head)
            })
        }
    }
}

fn evaluate<E: From<CoreError> + Send>(
    sampler: &EpisodeSampler,
    episodes: usize,
    seed: u64,
    progress: bool,
    accuracy: impl Fn(&Episode) -> Result<f64, E> + Sync,
) -> Result<EpisodeReport, E> {
    let bar = if progress {
        let bar = ProgressBar::new(episodes as u64);
        bar.set_style(
            ProgressStyle::with_template("episodes {bar:40} {pos}/{len} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let accuracies: Vec<f64> = (0..episodes)
        .into_par_iter()
        .map(|i| {
            let episode = sampler.episode(seed, i as u64);
            let acc = accuracy(&episode);
            bar.inc(1);
            acc
        })
        .collect::<Result<_, _>>()?;
    bar.finish_and_clear();
    let summary = mean_ci95(&accuracies).ok_or(E::from(CoreError::Empty))?;
    Ok(EpisodeReport {
        summary,
        accuracies,
    })
}

/// Errors of one one-shot run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Run name.
    pub run: String,
    /// Test items classified wrongly.
    pub errors: usize,
    /// Test items.
    pub items: usize,
    /// `errors / items`.
    pub error_rate: f64,
    /// The wrong items, as 0-based positions in the run's list of test items,
    /// so that two models can be compared item by item.
    pub wrong: Vec<usize>,
}

impl RunResult {
    /// The result of run `name` whose `items` test items had these `wrong` ones.
    fn new(name: &str, wrong: Vec<usize>, items: usize) -> RunResult {
        RunResult {
            run: name.to_string(),
            errors: wrong.len(),
            items,
            error_rate: wrong.len() as f64 / items.max(1) as f64,
            wrong,
        }
    }
}

/// Classifies each test item of a run by its nearest training image.
/// `embeddings` holds the training images first, then the test images.
pub fn run_errors(
    name: &str,
    embeddings: &Embeddings,
    n_training: usize,
    labels: &[usize],
    distance: Distance,
) -> Result<RunResult, CoreError> {
    let training: Vec<&[f32]> = (0..n_training).map(|i| embeddings.row(i)).collect();
    let mut wrong = Vec::new();
    for (t, &label) in labels.iter().enumerate() {
        let found = nearest(
            embeddings.row(n_training + t),
            training.iter().copied(),
            distance,
        )?;
        if found.index != label {
            wrong.push(t);
        }
    }
    Ok(RunResult::new(name, wrong, labels.len()))
}

/// [`run_errors`] with a fine-tuned cosine classifier: each training image is
/// its own class (one shot), the test items are the unlabelled queries.
pub fn run_errors_finetuned(
    name: &str,
    embeddings: &Embeddings,
    n_training: usize,
    labels: &[usize],
    finetune: &FineTune,
) -> Result<RunResult, EvalError> {
    let support_labels: Vec<u32> = (0..n_training as u32).collect();
    let logits = finetune.query_logits(
        &stack_rows(embeddings, 0..n_training)?,
        &support_labels,
        &stack_rows(embeddings, n_training..n_training + labels.len())?,
        n_training,
    )?;
    run_result(name, &logits, labels)
}

/// [`run_errors`] with a Matching Network's head: the training images are
/// the support set (one shot of each class), the test items the queries.
pub fn run_errors_matching(
    name: &str,
    embeddings: &Embeddings,
    n_training: usize,
    labels: &[usize],
    head: &MatchingHead,
) -> Result<RunResult, EvalError> {
    let logits = head.logits(
        &stack_rows(embeddings, 0..n_training)?,
        &stack_rows(embeddings, n_training..n_training + labels.len())?,
        EpisodeShape {
            k_way: n_training,
            n_shot: 1,
            q_queries: 1,
        },
    )?;
    run_result(name, &logits, labels)
}

/// Errors of a run from its test items' logits `(items, classes)`.
fn run_result(
    name: &str,
    logits: &candle_core::Tensor,
    labels: &[usize],
) -> Result<RunResult, EvalError> {
    let predicted: Vec<u32> = logits.argmax(1)?.to_vec1()?;
    let wrong = predicted
        .iter()
        .zip(labels)
        .enumerate()
        .filter(|&(_, (&p, &l))| p as usize != l)
        .map(|(t, _)| t)
        .collect();
    Ok(RunResult::new(name, wrong, labels.len()))
}
