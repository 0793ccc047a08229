//! `fewshot eval`: N-way K-shot episodes.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fewshot_core::Distance;
use fewshot_host::data::{ClassSet, Layout};
use fewshot_host::episode::{EpisodeSampler, EpisodeShape};
use fewshot_host::eval::{evaluate_episodes_maml, evaluate_episodes_with, EpisodeClassifier};
use serde_json::json;

use super::model::{Defaults, ModelArgs};

/// Arguments of `fewshot eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Class folders to draw episodes from.
    #[arg(long, default_value = "omniglot/images_background_small2")]
    data: PathBuf,
    /// How classes are laid out under --data.
    #[arg(long, value_enum, default_value = "auto")]
    layout: Layout,
    /// Leave out classes that also appear here (e.g. the training split's alphabets).
    #[arg(long)]
    exclude: Option<PathBuf>,
    /// Classes per episode (N-way).
    #[arg(long, default_value_t = 5)]
    k_way: usize,
    /// Support images per class (K-shot).
    #[arg(long, default_value_t = 1)]
    n_shot: usize,
    /// Query images per class.
    #[arg(long, default_value_t = 15)]
    q_queries: usize,
    /// Episodes to average over.
    #[arg(long, default_value_t = 1000)]
    episodes: usize,
    /// Seed of the episode stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of episodes (0 to 1) whose classes come from one alphabet, as in
    /// Lake's one-shot runs (1: all; an alphabet of fewer than --k-way
    /// characters gives them all and the rest come from others)
    #[arg(long, default_value_t = 0.0, value_parser = super::parse_share)]
    within_alphabet: f64,
    /// Use at most this many images per class (chosen once by the seed).
    #[arg(long)]
    cap: Option<usize>,
    /// Distance between embeddings and prototypes.
    /// [default: the model's own, l2 for pixels]
    #[arg(long, value_parser = super::parse_distance)]
    distance: Option<Distance>,
    #[command(flatten)]
    finetune: super::FineTuneArgs,
    #[command(flatten)]
    inner: super::InnerLoopArgs,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

/// Runs `fewshot eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let root = super::resolve(&args.data, "--data")?;
    let mut set = ClassSet::load(&root, args.layout)?;
    let defaults = if set.has_alphabets() {
        Defaults::Omniglot
    } else {
        Defaults::Faces
    };
    let model = args.model.load(defaults)?;
    let distance = args.distance.or(model.distance()).unwrap_or(Distance::L2);
    // Leave out the classes the model was trained on: given, or recorded in the model.
    let excluded = match &args.exclude {
        Some(other) => set.exclude(&ClassSet::load(
            &super::resolve(other, "--exclude")?,
            args.layout,
        )?),
        None => match model.trained_classes() {
            Some(names) => {
                let n = set.exclude_names(names.iter().map(String::as_str));
                eprintln!("left out {n} classes the model was trained on");
                n
            }
            None => 0,
        },
    };
    let shape = EpisodeShape {
        k_way: args.k_way,
        n_shot: args.n_shot,
        q_queries: args.q_queries,
    };
    let mut ids = Vec::new();
    let mut paths = Vec::new();
    for class in &set.classes {
        ids.push((paths.len()..paths.len() + class.images.len()).collect::<Vec<_>>());
        paths.extend(class.images.iter().cloned());
    }
    if args.within_alphabet > 0.0 && !set.has_alphabets() {
        anyhow::bail!(
            "--within-alphabet needs class folders inside alphabet folders; {} holds its classes at its root",
            root.display()
        );
    }
    let mut sampler = EpisodeSampler::new(&ids, shape, args.cap, args.seed)
        .with_context(|| format!("sampling episodes from {}", root.display()))?;
    if args.within_alphabet > 0.0 {
        sampler = sampler.within_groups(&set.alphabet_ids(), args.within_alphabet)?;
    }
    if sampler.dropped > 0 {
        eprintln!(
            "left out {} of {} classes with fewer than {} images",
            sampler.dropped,
            set.classes.len(),
            shape.per_class()
        );
    }
    let progress = super::progress();
    let super::Classifier {
        finetune,
        matching,
        maml,
        name: classifier_name,
    } = super::Classifier::of(
        &args.model,
        args.finetune.finetune()?,
        args.distance.is_some(),
        distance,
        &args.inner,
    )?;
    let report = match maml {
        Some(m) => {
            let images = fewshot_host::data::Tensors::load(&paths, &model.recipe(), progress)?;
            evaluate_episodes_maml(&images, &sampler, args.episodes, args.seed, &m, progress)?
        }
        None => {
            let embeddings = super::embed_files(model.as_ref(), &paths, progress)?;
            let classifier = match (finetune, matching) {
                (Some(f), _) => EpisodeClassifier::FineTuned(f),
                (None, Some(head)) => EpisodeClassifier::Matching(std::sync::Arc::new(head)),
                (None, None) => EpisodeClassifier::Prototypes(distance),
            };
            evaluate_episodes_with(
                &embeddings,
                &sampler,
                args.episodes,
                args.seed,
                &classifier,
                progress,
            )?
        }
    };
    let s = report.summary;
    if args.json {
        super::print_json(&json!({
            "command": "eval",
            "model": model.name(),
            "data": root,
            "classes": sampler.eligible(),
            "excluded_classes": excluded,
            "k_way": shape.k_way, "n_shot": shape.n_shot, "q_queries": shape.q_queries,
            "distance": if finetune.is_some() { "cosine" } else { distance.name() },
            "classifier": classifier_name,
            "finetune": finetune,
            "seed": args.seed,
            "within_alphabet": args.within_alphabet,
            "episodes": s.n,
            "accuracy": s.mean,
            "ci95": s.ci95,
        }))?;
    } else {
        let within = if args.within_alphabet > 0.0 {
            format!(
                " ({:.0}% within one alphabet)",
                100.0 * args.within_alphabet
            )
        } else {
            String::new()
        };
        println!(
            "{}-way {}-shot, {} queries per class, {} episodes{within} on {} classes of {} ({} excluded), {}",
            shape.k_way,
            shape.n_shot,
            shape.q_queries,
            s.n,
            sampler.eligible(),
            root.display(),
            excluded,
            classifier_name
        );
        println!(
            "model {}: accuracy {:.2}% ± {:.2}% (95% CI)",
            model.name(),
            100.0 * s.mean,
            100.0 * s.ci95
        );
    }
    Ok(())
}
