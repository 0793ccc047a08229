//! `fewshot verify`: face verification on pair lists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use fewshot_core::Distance;
use fewshot_host::data::PairList;
use fewshot_host::embed::Embedder;
use fewshot_host::stats::{accuracy_at, auc, best_threshold, mean_ci95, verification_roc};
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

/// Genuine and impostor distances of a pair list, in file order.
struct PairDistances {
    distances: Vec<f32>,
    same: Vec<bool>,
}

impl PairDistances {
    fn compute(
        model: &dyn Embedder,
        images: &Path,
        pairs: &Path,
        distance: Distance,
    ) -> anyhow::Result<Self> {
        let list = PairList::load(pairs)?;
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        let mut paths = Vec::new();
        let mut pair_rows = Vec::new();
        for pair in &list.pairs {
            let mut row = |p: PathBuf| {
                *index.entry(p.clone()).or_insert_with(|| {
                    paths.push(p);
                    paths.len() - 1
                })
            };
            pair_rows.push((row(pair.a.path(images)), row(pair.b.path(images))));
        }
        for p in &paths {
            if !p.is_file() {
                anyhow::bail!(
                    "{}: image named by {} does not exist",
                    p.display(),
                    pairs.display()
                );
            }
        }
        let emb = super::embed_files(model, &paths, super::progress())?;
        let distances = pair_rows
            .iter()
            .map(|&(a, b)| distance.between(emb.row(a), emb.row(b)))
            .collect();
        Ok(PairDistances {
            distances,
            same: list.pairs.iter().map(|p| p.same).collect(),
        })
    }

    /// Fold of each pair: its rank among the pairs of its kind, cut into `folds` parts.
    fn folds(&self, folds: usize) -> Vec<usize> {
        let n_same = self.same.iter().filter(|s| **s).count();
        let n_diff = self.same.len() - n_same;
        let (mut i_same, mut i_diff) = (0, 0);
        self.same
            .iter()
            .map(|&same| {
                let (i, n) = if same {
                    (&mut i_same, n_same)
                } else {
                    (&mut i_diff, n_diff)
                };
                let f = *i * folds / n;
                *i += 1;
                f
            })
            .collect()
    }

    fn split(&self, keep: impl Fn(usize) -> bool) -> (Vec<f32>, Vec<f32>) {
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for (i, (&d, &same)) in self.distances.iter().zip(&self.same).enumerate() {
            if keep(i) {
                if same {
                    genuine.push(d)
                } else {
                    impostor.push(d)
                }
            }
        }
        (genuine, impostor)
    }
}

/// Runs `fewshot verify`.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let images = super::resolve(&args.images, "--images")?;
    let pairs = super::resolve(&args.pairs, "--pairs")?;
    let model = args.model.load(Defaults::Faces)?;
    let distance = args.distance.or(model.distance()).unwrap_or(Distance::L2);
    let eval = PairDistances::compute(model.as_ref(), &images, &pairs, distance)?;
    let (genuine, impostor) = eval.split(|_| true);
    let auc = auc(&genuine, &impostor)
        .context("AUC needs finite distances and both matched and mismatched pairs")?;

    let (threshold, accuracy, ci95, source) = if let Some(t) = args.threshold {
        (
            t,
            accuracy_at(t, &genuine, &impostor),
            None,
            "given".to_string(),
        )
    } else if let (Some(ti), Some(tp)) = (&args.threshold_images, &args.threshold_pairs) {
        let ti = super::resolve(ti, "--threshold-images")?;
        let tp = super::resolve(tp, "--threshold-pairs")?;
        let other = PairDistances::compute(model.as_ref(), &ti, &tp, distance)?;
        let (g, i) = other.split(|_| true);
        let (t, _) =
            best_threshold(&g, &i).context("no finite distances on the threshold pairs")?;
        (
            t,
            accuracy_at(t, &genuine, &impostor),
            None,
            format!("best on {}", tp.display()),
        )
    } else {
        // 10-fold cross-validation: each fold's threshold is chosen on the other nine.
        // Folds are cut within the matched and within the mismatched pairs, so each
        // fold holds both kinds in the list's proportion.
        let folds = 10usize;
        let fold = eval.folds(folds);
        let fold_of = |i: usize| fold[i];
        let mut accs = Vec::new();
        let mut thresholds = Vec::new();
        for f in 0..folds {
            let (g, i) = eval.split(|k| fold_of(k) != f);
            let (t, _) = best_threshold(&g, &i).context("no finite distances")?;
            let (tg, ti) = eval.split(|k| fold_of(k) == f);
            accs.push(accuracy_at(t, &tg, &ti));
            thresholds.push(f64::from(t));
        }
        let s = mean_ci95(&accs).context("no folds")?;
        let t = thresholds.iter().sum::<f64>() / folds as f64;
        (
            t as f32,
            s.mean,
            Some(s.ci95),
            "10-fold cross-validation".to_string(),
        )
    };

    // With no threshold asked for, also the operating point of the model's own.
    let model_point = if args.threshold.is_none() && args.threshold_pairs.is_none() {
        model.threshold().map(|t| {
            let tar = genuine.iter().filter(|d| **d <= t).count() as f64 / genuine.len() as f64;
            let far = impostor.iter().filter(|d| **d <= t).count() as f64 / impostor.len() as f64;
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
