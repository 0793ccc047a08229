//! `fewshot pairs`: a verification pair list in LFW's manner from any folder
//! of LFW-style identities (for example the validation part from `fewshot split`).

use std::path::PathBuf;

use clap::Args;
use fewshot_host::data::{ClassSet, Layout, PairList};

/// Arguments of `fewshot pairs`.
#[derive(Debug, Args)]
pub struct PairsArgs {
    /// Identity folders `<Name>/<Name>_NNNN.jpg`.
    #[arg(long)]
    data: PathBuf,
    /// Where to write the pair list.
    #[arg(long)]
    out: PathBuf,
    /// Folds (people never appear in two).
    #[arg(long, default_value_t = 10)]
    folds: usize,
    /// Matched pairs per fold, and as many mismatched.
    #[arg(long, default_value_t = 20)]
    per_fold: usize,
    /// Seed of the fold deal and the pair draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs `fewshot pairs`.
pub fn run(args: PairsArgs) -> anyhow::Result<()> {
    if args.folds == 0 || args.per_fold == 0 {
        anyhow::bail!("--folds and --per-fold must be at least 1");
    }
    let root = super::resolve(&args.data, "--data")?;
    let set = ClassSet::load(&root, Layout::Flat)?;
    let list = PairList::sample(&set.classes, args.folds, args.per_fold, args.seed)?;
    fewshot_host::nn::checkpoint::write_atomic(&args.out, list.to_lfw_text(args.folds).as_bytes())?;
    println!(
        "wrote {}: {} folds × ({} matched + {} mismatched) pairs from {} people of {}",
        args.out.display(),
        args.folds,
        args.per_fold,
        args.per_fold,
        set.classes.len(),
        root.display()
    );
    Ok(())
}
