//! `fewshot train`: episodic training.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use fewshot_core::Distance;
use fewshot_host::augment::AffineRanges;
use fewshot_host::episode::EpisodeShape;
use fewshot_host::nn::encoder::EncoderConfig;
use fewshot_host::train::{train_protonet, RunFiles, StopAt, TrainConfig};

use super::model::{Defaults, ModelArgs};

/// Methods `fewshot train` knows.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Prototypical Networks (Snell et al., 2017): class-mean prototypes, softmax over negative distances.
    Protonet(ProtonetArgs),
}

/// Arguments of `fewshot train protonet`.
#[derive(Debug, Args)]
pub struct ProtonetArgs {
    /// Class folders to train on (validation classes are held out of them by --seed).
    #[arg(long, default_value = "omniglot/images_background_small1")]
    data: PathBuf,
    /// Output folder: checkpoints (best, last), metrics.jsonl, curve.png, run.json.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Classes per training episode.
    #[arg(long, default_value_t = 20)]
    k_way: usize,
    /// Support images per class.
    #[arg(long, default_value_t = 1)]
    n_shot: usize,
    /// Query images per class.
    #[arg(long, default_value_t = 5)]
    q_queries: usize,
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
    /// Do not add 90° rotations as new classes.
    #[arg(long)]
    no_rotations: bool,
    /// Random affine distortions (±15° rotation, ±0.3 shear, ±20 % scale, ±10 % shift).
    #[arg(long)]
    affine: bool,
    /// Channels of each Conv-4 block.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Distance.
    #[arg(long, default_value = "l2", value_parser = super::parse_distance)]
    distance: Distance,
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
    #[command(flatten)]
    input: ModelArgs,
}

/// Runs `fewshot train`.
pub fn run(command: TrainCommand) -> anyhow::Result<()> {
    match command {
        TrainCommand::Protonet(args) => protonet(args),
    }
}

fn protonet(args: ProtonetArgs) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting --threads")?;
    }
    let data = super::resolve(&args.data, "--data")?;
    let recipe = args.input.recipe(Defaults::Omniglot)?;
    if recipe.width != recipe.height {
        anyhow::bail!("Conv-4 training needs square inputs");
    }
    let config = TrainConfig {
        data: std::fs::canonicalize(&data).unwrap_or(data),
        shape: EpisodeShape {
            k_way: args.k_way,
            n_shot: args.n_shot,
            q_queries: args.q_queries,
        },
        episodes: args.episodes,
        lr: args.lr,
        lr_step: args.lr_step,
        lr_gamma: args.lr_gamma,
        val_every: args.val_every.max(1),
        val_episodes: args.val_episodes,
        val_fraction: args.val_fraction,
        rotations: !args.no_rotations,
        affine: args.affine.then_some(AffineRanges::OMNIGLOT),
        encoder: EncoderConfig::Conv4 {
            in_channels: recipe.channels,
            hidden: args.hidden,
            input_size: recipe.width,
        },
        recipe: recipe.into(),
        distance: args.distance.name().into(),
        seed: args.seed,
    };
    let stop = StopAt {
        episode: args.stop_at,
        seconds: args.max_minutes.map(|m| m * 60.0),
    };
    let state = train_protonet(&config, &args.out, args.resume, stop, super::progress())?;
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
