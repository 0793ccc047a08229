//! `fewshot door-eval`: the door scenario on an identity folder.

use std::path::PathBuf;

use anyhow::Context;
use clap::builder::TypedValueParser;
use clap::Args;
use fewshot_core::Distance;
use fewshot_host::data::{ClassSet, Layout};
use fewshot_host::eval::door::DoorSet;
use fewshot_host::eval::finetuned_prototypes;
use fewshot_host::stats::tar_at_far;
use serde_json::json;

use super::model::{Defaults, ModelArgs};

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
    let extra = match &args.strangers {
        Some(dir) => Some(ClassSet::load(
            &super::resolve(dir, "--strangers")?,
            Layout::Flat,
        )?),
        None => None,
    };
    let door = DoorSet::new(&set, extra.as_ref(), k).with_context(|| root.display().to_string())?;
    let enrolled = &door.enrolled;

    let emb = super::embed_files(model.as_ref(), &door.paths, super::progress())?;
    let prototypes = match &finetune {
        // Transductive: every probe, genuine or stranger, is an unlabelled query.
        Some(f) => {
            let (support, labels): (Vec<usize>, Vec<u32>) = enrolled
                .iter()
                .enumerate()
                .flat_map(|(id, (_, shots))| shots.iter().map(move |&r| (r, id as u32)))
                .unzip();
            let probes: Vec<usize> = door
                .genuine
                .iter()
                .map(|&(row, _)| row)
                .chain(door.strangers.iter().copied())
                .collect();
            finetuned_prototypes(&emb, &support, &labels, &probes, enrolled.len(), f)?
        }
        None => door.prototypes(&emb)?,
    };
    let scores = door.scores(&emb, &prototypes, distance)?;
    let (genuine_scores, stranger_scores) = (&scores.genuine, &scores.strangers);
    if genuine_scores.is_empty() {
        anyhow::bail!(
            "{}: enrolled identities have no images left to probe with",
            root.display()
        );
    }
    let rank1 = scores.rank1();
    let roc = scores.roc();
    let at = |far| {
        if stranger_scores.is_empty() {
            None
        } else {
            tar_at_far(&roc, far)
        }
    };
    let (at2, at3) = (at(1e-2), at(1e-3));
    // The operating point: the given threshold, the model's for this
    // gallery's size, or its pair threshold.
    let operating = match (
        args.threshold,
        model.gallery_thresholds(),
        model.threshold(),
    ) {
        (Some(t), _, _) => Some((t, "given".to_string())),
        (None, Some(g), _) => Some((
            g.for_gallery(enrolled.len()),
            format!("the model's for {} people", enrolled.len()),
        )),
        (None, None, Some(t)) => Some((t, "the model's".to_string())),
        _ => None,
    }
    .map(|(t, source)| {
        let (tar, far) = scores.at_threshold(t);
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
            "threshold": operating.as_ref().map(|o| o.0),
            "threshold_source": operating.as_ref().map(|o| o.3.clone()),
            "tar_at_threshold": operating.as_ref().map(|o| o.1),
            "far_at_threshold": operating.as_ref().map(|o| o.2),
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
