//! `fewshot split`: a folder of links to the classes a model was validated
//! on (or trained on), so every command can measure on exactly those.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use fewshot_host::data::{ClassSet, Layout};

/// Which part of the model's split.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Part {
    /// The held-out validation classes (never trained on).
    Val,
    /// The classes the model was trained on.
    Train,
}

/// Arguments of `fewshot split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Checkpoint (`.safetensors` with its `.json`) or exported `.onnx` whose training record names the split.
    #[arg(long)]
    model: PathBuf,
    /// The class folders the model was trained from.
    #[arg(long, default_value = "faces/lfw-devtrain")]
    data: PathBuf,
    /// New folder to create, holding one link per class.
    #[arg(long)]
    out: PathBuf,
    /// Which classes.
    #[arg(long, value_enum, default_value_t = Part::Val)]
    part: Part,
}

/// The training record of a checkpoint or an exported model.
pub fn training_record(model: &Path) -> anyhow::Result<serde_json::Value> {
    if model.extension().is_some_and(|e| e == "onnx") {
        let loaded = fewshot_firmware::encoder::OnnxEncoder::load(model)?;
        let text = loaded
            .metadata()
            .get(fewshot_core::model_meta::TRAINING)
            .with_context(|| format!("{}: no training record in its metadata", model.display()))?;
        Ok(serde_json::from_str(text)
            .with_context(|| format!("{}: unreadable training record", model.display()))?)
    } else {
        Ok(fewshot_host::nn::checkpoint::load_config(model)?.training)
    }
}

/// Runs `fewshot split`.
pub fn run(args: SplitArgs) -> anyhow::Result<()> {
    let record = training_record(&args.model)?;
    let val: Vec<String> = record["split"]["val_classes"]
        .as_array()
        .with_context(|| format!("{}: its training record has no split", args.model.display()))?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let root = super::resolve(&args.data, "--data")?;
    let set = ClassSet::load(&root, Layout::Auto)?;
    let chosen: Vec<_> = set
        .classes
        .iter()
        .filter(|c| val.contains(&c.name) == matches!(args.part, Part::Val))
        .collect();
    if chosen.is_empty() {
        bail!(
            "none of the classes in {} belong to {}'s {:?} split: is --data the folder it was trained from?",
            root.display(),
            args.model.display(),
            args.part
        );
    }
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!("--out {}: exists and is not empty", args.out.display());
    }
    for class in &chosen {
        let link = args.out.join(&class.name);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let target = std::fs::canonicalize(root.join(&class.name))?;
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let images: usize = chosen.iter().map(|c| c.images.len()).sum();
    println!(
        "{}: {} classes ({images} images), {:?} part of {}",
        args.out.display(),
        chosen.len(),
        args.part,
        args.model.display()
    );
    Ok(())
}
