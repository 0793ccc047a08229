//! `fewshot verify`: face verification on pair lists.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use fewshot_core::Distance;
use fewshot_host::embed::Embedder;
use fewshot_host::eval::pairs::{PairDistances, PairSet, Verification};
use fewshot_host::stats::{auc, verification_roc};
use serde_json::json;

use super::model::{Defaults, ModelArgs};

/// Arguments of `fewshot verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder of `<Name>/<Name>_NNNN.jpg` images the pairs refer to.
    #[arg(long, default_value = "faces/lfw-devtrain")]
    images: PathBuf,
    /// Pair list to measure on (LFW format).
    #[arg(long, default_value = "faces/lfw-pairsDevTrain.txt")]
    pairs: PathBuf,
    /// Images of the pair list the threshold is chosen on.
    #[arg(long, requires = "threshold_pairs", conflicts_with = "threshold")]
    threshold_images: Option<PathBuf>,
    /// Pair list the threshold is chosen on (best accuracy there).
    #[arg(long, requires = "threshold_images", conflicts_with = "threshold")]
    threshold_pairs: Option<PathBuf>,
    /// A fixed distance threshold: pairs at or below it are "same".
    /// Without any threshold option, 10-fold cross-validation on --pairs chooses it.
    #[arg(long)]
    threshold: Option<f32>,
    /// Distance between embeddings.
    /// [default: the model's own, l2 for pixels]
    #[arg(long, value_parser = super::parse_distance)]
    distance: Option<Distance>,
    /// Write the ROC curve to this PNG.
    #[arg(long)]
    roc: Option<PathBuf>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

/// The pairs' distances by `model`.
fn pair_distances(
    model: &dyn Embedder,
    images: &Path,
    pairs: &Path,
    distance: Distance,
) -> anyhow::Result<PairDistances> {
    let set = PairSet::load(images, pairs)?;
    let emb = super::embed_files(model, &set.paths, super::progress())?;
    Ok(set.distances(&emb, distance))
}

/// Runs `fewshot verify`.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let images = super::resolve(&args.images, "--images")?;
    let pairs = super::resolve(&args.pairs, "--pairs")?;
    let model = args.model.load(Defaults::Faces)?;
    let distance = args.distance.or(model.distance()).unwrap_or(Distance::L2);
    let eval = pair_distances(model.as_ref(), &images, &pairs, distance)?;
    let (genuine, impostor) = eval.genuine_impostor();
    let auc = auc(&genuine, &impostor)
        .context("AUC needs finite distances and both matched and mismatched pairs")?;

    let (verification, source) = if let Some(t) = args.threshold {
        (eval.at(t), "given".to_string())
    } else if let (Some(ti), Some(tp)) = (&args.threshold_images, &args.threshold_pairs) {
        let ti = super::resolve(ti, "--threshold-images")?;
        let tp = super::resolve(tp, "--threshold-pairs")?;
        let other = pair_distances(model.as_ref(), &ti, &tp, distance)?;
        let t = other
            .best_threshold()
            .with_context(|| format!("--threshold-pairs {}", tp.display()))?;
        (eval.at(t), format!("best on {}", tp.display()))
    } else {
        (
            eval.cross_validate(10)?,
            "10-fold cross-validation".to_string(),
        )
    };
    let Verification {
        threshold,
        accuracy,
        ci95,
    } = verification;

    // With no threshold asked for, also the operating point of the model's own.
    let model_point = if args.threshold.is_none() && args.threshold_pairs.is_none() {
        model.threshold().map(|t| {
            let (tar, far) = eval.operating_point(t);
            (t, tar, far)
        })
    } else {
        None
    };
    if let Some(path) = &args.roc {
        let roc = verification_roc(&genuine, &impostor);
        let name = model.name();
        let label = fewshot_host::plot::file_label(&name);
        fewshot_host::plot::roc_png(
            path,
            &format!("Verification ROC: {label}"),
            &[(label, &roc)],
        )?;
    }
    if args.json {
        super::print_json(&json!({
            "command": "verify",
            "model": model.name(),
            "pairs": pairs,
            "distance": distance.name(),
            "matched": genuine.len(),
            "mismatched": impostor.len(),
            "accuracy": accuracy,
            "accuracy_ci95": ci95,
            "auc": auc,
            "threshold": threshold,
            "threshold_source": source,
            "model_threshold": model_point.map(|p| json!({"threshold": p.0, "tar": p.1, "far": p.2})),
        }))?;
    } else {
        println!(
            "{} matched and {} mismatched pairs from {}, model {}, {} distance",
            genuine.len(),
            impostor.len(),
            pairs.display(),
            model.name(),
            distance.name()
        );
        match ci95 {
            Some(ci) => println!(
                "accuracy {:.2}% ± {:.2}% (95% CI over folds)",
                100.0 * accuracy,
                100.0 * ci
            ),
            None => println!("accuracy {:.2}%", 100.0 * accuracy),
        }
        println!("ROC AUC {auc:.4}; threshold {threshold:.6} ({source})");
        if let Some((t, tar, far)) = model_point {
            println!(
                "at the model's threshold {t:.6}: TAR {:.2}%, FAR {:.2}%",
                100.0 * tar,
                100.0 * far
            );
        }
        if let Some(path) = &args.roc {
            println!("ROC curve written to {}", path.display());
        }
    }
    Ok(())
}
