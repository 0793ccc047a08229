//! `fewshot door-eval`: the door scenario on an identity folder.

use std::path::PathBuf;

use anyhow::Context;
use clap::builder::TypedValueParser;
use clap::Args;
use fewshot_core::prototype::mean_into;
use fewshot_core::{nearest, Distance};
use fewshot_host::data::{ClassSet, Layout};
use fewshot_host::eval::finetuned_prototypes;
use fewshot_host::stats::{open_set_roc, tar_at_far};
use serde_json::json;

use super::model::{Defaults, ModelArgs};

/// Identities with at least this many images are enrolled; the rest are strangers.
const MIN_ENROLLED_IMAGES: usize = 3;

/// Arguments of `fewshot door-eval`.
#[derive(Debug, Args)]
pub struct DoorEvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Identity folders (`<person>/<image>`).
    #[arg(long, default_value = "faces/orl")]
    data: PathBuf,
    /// Images per person used to enroll (the first by file name).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=2).map(usize::from))]
    enroll_shots: usize,
    /// Identity folders whose every image is a stranger.
    #[arg(long)]
    strangers: Option<PathBuf>,
    /// Distance between embeddings and prototypes.
    /// [default: the model's own, l2 for pixels]
    #[arg(long, value_parser = super::parse_distance)]
    distance: Option<Distance>,
    /// Accept distances up to this threshold [default: the model's calibrated one, if it has one].
    #[arg(long)]
    threshold: Option<f32>,
    /// Where to write the ROC curve (PNG).
    #[arg(long, default_value = "door-eval-roc.png")]
    roc: PathBuf,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    finetune: super::FineTuneArgs,
}

/// Runs `fewshot door-eval`.
pub fn run(args: DoorEvalArgs) -> anyhow::Result<()> {
    let root = super::resolve(&args.data, "--data")?;
    let set = ClassSet::load(&root, Layout::Flat)?;
    let model = args.model.load(Defaults::Faces)?;
    let finetune = args.finetune.finetune()?;
    if finetune.is_some() && args.distance.is_some_and(|d| d != Distance::Cosine) {
        anyhow::bail!(
            "--finetune scores with the cosine distance; leave out --distance or give cosine"
        );
    }
    let distance = match finetune {
        Some(_) => Distance::Cosine,
        None => args.distance.or(model.distance()).unwrap_or(Distance::L2),
    };
    let k = args.enroll_shots;

    // Rows: enrolment shots of each enrolled identity, its genuine probes, then strangers.
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut enrolled: Vec<(String, Vec<usize>)> = Vec::new();
    let mut genuine: Vec<(usize, usize)> = Vec::new(); // (row, identity)
    let mut strangers: Vec<usize> = Vec::new();
    let push = |paths: &mut Vec<PathBuf>, p: &PathBuf| {
        paths.push(p.clone());
        paths.len() - 1
    };
    for class in &set.classes {
        if class.images.len() >= MIN_ENROLLED_IMAGES {
            let id = enrolled.len();
            let shots = class.images[..k]
                .iter()
                .map(|p| push(&mut paths, p))
                .collect();
            enrolled.push((class.name.clone(), shots));
            genuine.extend(class.images[k..].iter().map(|p| (push(&mut paths, p), id)));
        } else {
            strangers.extend(class.images.iter().map(|p| push(&mut paths, p)));
        }
    }
    if let Some(dir) = &args.strangers {
        let dir = super::resolve(dir, "--strangers")?;
        for class in ClassSet::load(&dir, Layout::Flat)?.classes {
            strangers.extend(class.images.iter().map(|p| push(&mut paths, p)));
        }
    }
    if enrolled.is_empty() {
        anyhow::bail!(
            "{}: no identity has {MIN_ENROLLED_IMAGES} or more images to enroll",
            root.display()
        );
    }

    let emb = super::embed_files(model.as_ref(), &paths, super::progress())?;
    let dim = emb.dim;
    let prototypes = match &finetune {
        // Transductive: every probe, genuine or stranger, is an unlabelled query.
        Some(f) => {
            let (support, labels): (Vec<usize>, Vec<u32>) = enrolled
                .iter()
                .enumerate()
                .flat_map(|(id, (_, shots))| shots.iter().map(move |&r| (r, id as u32)))
                .unzip();
            let probes: Vec<usize> = genuine
                .iter()
                .map(|&(row, _)| row)
                .chain(strangers.iter().copied())
                .collect();
            finetuned_prototypes(&emb, &support, &labels, &probes, enrolled.len(), f)?
        }
        None => {
            let mut prototypes = vec![0.0f32; enrolled.len() * dim];
            for ((_, shots), proto) in enrolled.iter().zip(prototypes.chunks_mut(dim)) {
                mean_into(shots.iter().map(|&r| emb.row(r)), proto)?;
            }
            prototypes
        }
    };
    let nearest_of = |row: usize| nearest(emb.row(row), prototypes.chunks(dim), distance);
    let genuine_scores: Vec<(f32, bool)> = genuine
        .iter()
        .map(|&(row, id)| nearest_of(row).map(|n| (n.distance, n.index == id)))
        .collect::<Result<_, _>>()?;
    let stranger_scores: Vec<f32> = strangers
        .iter()
        .map(|&row| nearest_of(row).map(|n| n.distance))
        .collect::<Result<_, _>>()?;
    if genuine_scores.is_empty() {
        anyhow::bail!(
            "{}: enrolled identities have no images left to probe with",
            root.display()
        );
    }
    let rank1 =
        genuine_scores.iter().filter(|(_, ok)| *ok).count() as f64 / genuine_scores.len() as f64;
    let roc = open_set_roc(&genuine_scores, &stranger_scores);
    let at = |far| {
        if stranger_scores.is_empty() {
            None
        } else {
            tar_at_far(&roc, far)
        }
    };
    let (at2, at3) = (at(1e-2), at(1e-3));
    // The operating point: the given threshold or the model's own.
    let operating = args.threshold.or(model.threshold()).map(|t| {
        let tar = genuine_scores
            .iter()
            .filter(|(d, ok)| *ok && *d <= t)
            .count() as f64
            / genuine_scores.len() as f64;
        let far = stranger_scores.iter().filter(|d| **d <= t).count() as f64
            / stranger_scores.len().max(1) as f64;
        let source = if args.threshold.is_some() {
            "given"
        } else {
            "the model's"
        };
        (t, tar, far, source)
    });
    let name = model.name();
    let label = fewshot_host::plot::file_label(&name);
    let title = format!("Door: {} enrolled, K = {k}, {label}", enrolled.len());
    fewshot_host::plot::roc_png(&args.roc, &title, &[(label, &roc)])
        .with_context(|| format!("writing the ROC curve to {}", args.roc.display()))?;

    if args.json {
        super::print_json(&json!({
            "command": "door-eval",
            "model": model.name(),
            "data": root,
            "strangers_folder": args.strangers,
            "enroll_shots": k,
            "distance": distance.name(),
            "finetune": finetune,
            "enrolled": enrolled.len(),
            "genuine_probes": genuine_scores.len(),
            "stranger_probes": stranger_scores.len(),
            "rank1": rank1,
            "tar_at_far_1e-2": at2.map(|p| p.tar),
            "threshold_at_far_1e-2": at2.map(|p| p.threshold),
            "tar_at_far_1e-3": at3.map(|p| p.tar),
            "threshold_at_far_1e-3": at3.map(|p| p.threshold),
            "roc_png": args.roc,
            "threshold": operating.map(|o| o.0),
            "threshold_source": operating.map(|o| o.3),
            "tar_at_threshold": operating.map(|o| o.1),
            "far_at_threshold": operating.map(|o| o.2),
        }))?;
    } else {
        println!(
            "{} identities enrolled with {k} image(s) each from {}; {} genuine probes, {} stranger probes; model {}, {} distance",
            enrolled.len(),
            root.display(),
            genuine_scores.len(),
            stranger_scores.len(),
            model.name(),
            distance.name()
        );
        if let Some(f) = &finetune {
            println!("prototypes: {}", super::describe_finetune(f));
        }
        println!("rank-1 (closed set): {:.2}%", 100.0 * rank1);
        for (far, p) in [("1%", at2), ("0.1%", at3)] {
            match p {
                Some(p) => println!(
                    "TAR at FAR {far}: {:.2}% (threshold {:.6})",
                    100.0 * p.tar,
                    p.threshold
                ),
                None => println!("TAR at FAR {far}: no stranger probes to measure it"),
            }
        }
        if let Some((t, tar, far, source)) = operating {
            println!(
                "at {source} threshold {t:.6}: TAR {:.2}%, FAR {:.3}%",
                100.0 * tar,
                100.0 * far
            );
        }
        println!("ROC curve written to {}", args.roc.display());
    }
    Ok(())
}
