//! The `fewshot` subcommands.

pub mod bench;
pub mod door_eval;
pub mod eval;
pub mod eval_runs;
pub mod export;
pub mod model;
pub mod pairs;
pub mod split;
pub mod train;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::Context;
use fewshot_core::Distance;
use fewshot_host::data::{self, Tensors};
use fewshot_host::embed::{Embedder, Embeddings};

/// Parses a distance name for clap.
pub fn parse_distance(s: &str) -> Result<Distance, String> {
    Distance::from_name(s)
        .ok_or_else(|| format!("unknown distance {s:?}: expected l2, cosine or dot"))
}

/// Resolves a data path (as given, or under the data folder) with a clear error.
pub fn resolve(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    data::resolve(path).with_context(|| format!("{what} {}", path.display()))
}

/// Decodes `paths` with the model's preprocessing and embeds them all once.
pub fn embed_files(
    model: &dyn Embedder,
    paths: &[PathBuf],
    progress: bool,
) -> anyhow::Result<Embeddings> {
    let tensors = Tensors::load(paths, &model.recipe(), progress)?;
    Ok(Embeddings::compute(model, &tensors, 256, progress)?)
}

/// Prints `value` as one line of JSON.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Whether to draw progress bars: only when standard error is a terminal.
pub fn progress() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
