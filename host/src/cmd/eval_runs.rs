//! `fewshot eval-runs`: Lake's 20-way one-shot runs.

use std::path::PathBuf;

use clap::Args;
use fewshot_core::Distance;
use fewshot_host::data::RunSet;
use fewshot_host::eval::{run_errors, run_errors_finetuned, run_errors_maml, run_errors_matching};
use serde_json::json;

use super::model::{Defaults, ModelArgs};

/// Arguments of `fewshot eval-runs`.
#[derive(Debug, Args)]
pub struct EvalRunsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A folder of runs (`runNN/class_labels.txt`), or one run folder.
    #[arg(long, default_value = "omniglot/runs")]
    runs: PathBuf,
    /// Distance between embeddings.
    /// [default: the model's own, l2 for pixels]
    #[arg(long, value_parser = super::parse_distance)]
    distance: Option<Distance>,
    #[command(flatten)]
    finetune: super::FineTuneArgs,
    #[command(flatten)]
    inner: super::InnerLoopArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `fewshot eval-runs`.
pub fn run(args: EvalRunsArgs) -> anyhow::Result<()> {
    let root = super::resolve(&args.runs, "--runs")?;
    let set = RunSet::load(&root)?;
    let model = args.model.load(Defaults::Omniglot)?;
    let distance = args.distance.or(model.distance()).unwrap_or(Distance::L2);
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
    let mut results = Vec::new();
    for run in &set.runs {
        let mut paths = run.training.clone();
        paths.extend(run.test.iter().map(|(p, _)| p.clone()));
        let labels: Vec<usize> = run.test.iter().map(|(_, l)| *l).collect();
        if let Some(m) = &maml {
            let images = fewshot_host::data::Tensors::load(&paths, &model.recipe(), false)?;
            results.push(run_errors_maml(
                &run.name,
                &images,
                run.training.len(),
                &labels,
                m,
            )?);
            continue;
        }
        let embeddings = super::embed_files(model.as_ref(), &paths, false)?;
        results.push(match (&finetune, &matching) {
            (Some(f), _) => {
                run_errors_finetuned(&run.name, &embeddings, run.training.len(), &labels, f)?
            }
            (None, Some(head)) => {
                run_errors_matching(&run.name, &embeddings, run.training.len(), &labels, head)?
            }
            (None, None) => run_errors(
                &run.name,
                &embeddings,
                run.training.len(),
                &labels,
                distance,
            )?,
        });
    }
    let error_rate = results.iter().map(|r| r.error_rate).sum::<f64>() / results.len() as f64;
    let errors: usize = results.iter().map(|r| r.errors).sum();
    let items: usize = results.iter().map(|r| r.items).sum();
    // Every item counts once: the interval of all the runs' items together.
    let ci = fewshot_host::stats::proportion_ci95(errors, items)
        .ok_or_else(|| anyhow::anyhow!("{}: the runs hold no test items", root.display()))?;
    if args.json {
        super::print_json(&json!({
            "command": "eval-runs",
            "model": model.name(),
            "runs_folder": root,
            "distance": if finetune.is_some() { "cosine" } else { distance.name() },
            "classifier": classifier_name,
            "finetune": finetune,
            "error_rate": error_rate,
            "errors": errors,
            "items": items,
            "error_rate_ci95": [ci.low, ci.high],
            "runs": results,
        }))?;
    } else {
        println!(
            "model {} on {} ({})",
            model.name(),
            root.display(),
            classifier_name
        );
        for r in &results {
            println!(
                "  {:8} {:2}/{:2} wrong  {:5.1}% error",
                r.run,
                r.errors,
                r.items,
                100.0 * r.error_rate
            );
        }
        println!(
            "error rate over {} runs: {:.2}% ({errors} of {items} items; 95% interval {:.1}-{:.1}%, Wilson)",
            results.len(),
            100.0 * error_rate,
            100.0 * ci.low,
            100.0 * ci.high
        );
    }
    Ok(())
}
