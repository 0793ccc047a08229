//! Few-shot evaluation: N-way K-shot episodes and Lake's one-shot runs.

use fewshot_core::prototype::mean_into;
use fewshot_core::{nearest, CoreError, Distance};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::embed::Embeddings;
use crate::episode::{Episode, EpisodeSampler, EpisodeShape};
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

/// The result of [`evaluate_episodes`].
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeReport {
    /// Mean accuracy with its 95% confidence interval.
    pub summary: MeanCi,
    /// Accuracy of each episode, in order.
    pub accuracies: Vec<f64>,
}

/// Evaluates `episodes` episodes `0..episodes` of stream `seed` in parallel.
pub fn evaluate_episodes(
    embeddings: &Embeddings,
    sampler: &EpisodeSampler,
    episodes: usize,
    seed: u64,
    distance: Distance,
    progress: bool,
) -> Result<EpisodeReport, CoreError> {
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
            let acc = episode_accuracy(embeddings, &episode, sampler.shape(), distance);
            bar.inc(1);
            acc
        })
        .collect::<Result<_, _>>()?;
    bar.finish_and_clear();
    let summary = mean_ci95(&accuracies).ok_or(CoreError::Empty)?;
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
    let mut errors = 0;
    for (t, &label) in labels.iter().enumerate() {
        let found = nearest(
            embeddings.row(n_training + t),
            training.iter().copied(),
            distance,
        )?;
        if found.index != label {
            errors += 1;
        }
    }
    Ok(RunResult {
        run: name.to_string(),
        errors,
        items: labels.len(),
        error_rate: errors as f64 / labels.len().max(1) as f64,
    })
}
