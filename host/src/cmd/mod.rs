//! The `fewshot` subcommands.

pub mod bench;
pub mod detect;
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
use fewshot_host::nn::finetune::FineTune;

/// A MAML checkpoint's test-time inner loop, other than the run's (`fewshot eval`,
/// `fewshot eval-runs`).
#[derive(Debug, Clone, clap::Args)]
pub struct InnerLoopArgs {
    /// MAML checkpoints: inner SGD steps on each support set [default: the run's --inner-steps-test]
    #[arg(long)]
    pub inner_steps_test: Option<usize>,
    /// MAML checkpoints: inner learning rate [default: the run's --inner-lr]
    #[arg(long, value_parser = parse_positive::<f64>)]
    pub inner_lr: Option<f64>,
}

/// `--finetune` and its settings (`fewshot eval`, `fewshot eval-runs`, `fewshot door-eval`).
#[derive(Debug, Clone, clap::Args)]
pub struct FineTuneArgs {
    /// Classify by a cosine classifier fine-tuned on each support set for this
    /// many gradient steps: its weights start as the class means of the unit
    /// support embeddings (0 steps: the prototypes with cosine distance), the
    /// loss is the support's cross-entropy plus --entropy-weight × the mean
    /// entropy of the query predictions (transductive). The encoder stays fixed.
    #[arg(long, value_name = "STEPS")]
    pub finetune: Option<usize>,
    /// Learning rate of the fine-tuning (plain gradient descent) [default: 0.1]
    #[arg(long, requires = "finetune")]
    pub finetune_lr: Option<f64>,
    /// Weight λ of the query entropy in the fine-tuning loss [default: 0.1]
    #[arg(long, requires = "finetune")]
    pub entropy_weight: Option<f64>,
    /// Scale s of the cosine classifier's logits s·cos(w, f) [default: 10]
    #[arg(long, requires = "finetune")]
    pub scale: Option<f64>,
}

impl FineTuneArgs {
    /// The fine-tuning asked for, if any.
    pub fn finetune(&self) -> anyhow::Result<Option<FineTune>> {
        let Some(steps) = self.finetune else {
            return Ok(None);
        };
        let finetune = FineTune {
            steps,
            lr: self.finetune_lr.unwrap_or(0.1),
            entropy_weight: self.entropy_weight.unwrap_or(0.1),
            scale: self.scale.unwrap_or(10.0),
        };
        if !(finetune.lr.is_finite() && finetune.lr >= 0.0) {
            anyhow::bail!("--finetune-lr must be a finite number ≥ 0");
        }
        if !finetune.entropy_weight.is_finite() {
            anyhow::bail!("--entropy-weight must be finite");
        }
        if !(finetune.scale.is_finite() && finetune.scale > 0.0) {
            anyhow::bail!("--scale must be a finite number > 0");
        }
        Ok(Some(finetune))
    }
}

/// A one-line description of a fine-tuning for reports.
pub fn describe_finetune(f: &FineTune) -> String {
    format!(
        "cosine classifier fine-tuned {} steps (lr {}, entropy weight {}, scale {})",
        f.steps, f.lr, f.entropy_weight, f.scale
    )
}

/// A Matching Network's classifier in words.
pub fn describe_matching(head: &fewshot_host::nn::matching::MatchingHead) -> String {
    let scale = if head.scale == 1.0 {
        String::new()
    } else {
        format!(" × {}", head.scale)
    };
    match head.fce.as_ref().map(|f| f.config()) {
        Some(f) => format!(
            "Matching Network attention ({} similarity{scale}) with full context embeddings ({} LSTM layer(s), {} unrolling steps)",
            head.similarity.name(),
            f.lstm_layers,
            f.unrolling_steps
        ),
        None => format!(
            "Matching Network attention ({} similarity{scale})",
            head.similarity.name()
        ),
    }
}

/// How `eval` and `eval-runs` classify: a Matching Network's or MAML's own
/// way when the model is one, else fine-tuned or by prototypes.
pub struct Classifier {
    /// Fine-tuning of a cosine classifier, if asked for.
    pub finetune: Option<FineTune>,
    /// A Matching Network's head.
    pub matching: Option<fewshot_host::nn::matching::MatchingHead>,
    /// A MAML network.
    pub maml: Option<fewshot_host::nn::maml::MamlModel>,
    /// The classifier in words.
    pub name: String,
}

impl Classifier {
    /// The classifier of `model` with the command's fine-tuning and distance
    /// flags (refused for models that classify their own way).
    pub fn of(
        model: &model::ModelArgs,
        finetune: Option<FineTune>,
        distance_flag: bool,
        distance: Distance,
        inner: &InnerLoopArgs,
    ) -> anyhow::Result<Classifier> {
        let matching = model.matching_head()?;
        let mut maml = model.maml()?;
        match &mut maml {
            Some(m) => {
                if let Some(steps) = inner.inner_steps_test {
                    m.config.inner_steps_test = steps;
                }
                if let Some(lr) = inner.inner_lr {
                    m.config.inner_lr = lr;
                }
            }
            None if inner.inner_steps_test.is_some() || inner.inner_lr.is_some() => {
                anyhow::bail!("--inner-steps-test and --inner-lr are for MAML checkpoints (`fewshot train maml`); --model is not one")
            }
            None => {}
        }
        if (matching.is_some() || maml.is_some()) && (finetune.is_some() || distance_flag) {
            anyhow::bail!("--model is a Matching Network or MAML, which classifies its own way: leave out --distance and the fine-tuning flags");
        }
        let name = match (&finetune, &matching, &maml) {
            (Some(f), _, _) => describe_finetune(f),
            (None, Some(head), _) => describe_matching(head),
            (None, None, Some(m)) => describe_maml(m),
            (None, None, None) => format!("{} distance", distance.name()),
        };
        Ok(Classifier {
            finetune,
            matching,
            maml,
            name,
        })
    }
}

/// A MAML network's test-time classifier in words.
pub fn describe_maml(m: &fewshot_host::nn::maml::MamlModel) -> String {
    format!(
        "MAML ({} order): {} inner step{} at rate {} on the support set, {}",
        if m.config.order == 2 {
            "second"
        } else {
            "first"
        },
        m.config.inner_steps_test,
        if m.config.inner_steps_test == 1 {
            ""
        } else {
            "s"
        },
        m.config.inner_lr,
        if m.config.zero_head {
            "zero head (any number of ways)".to_string()
        } else {
            format!("{}-way head", m.k_way)
        }
    )
}

/// Parses a distance name for clap.
pub fn parse_distance(s: &str) -> Result<Distance, String> {
    Distance::from_name(s)
        .ok_or_else(|| format!("unknown distance {s:?}: expected l2, cosine or dot"))
}

/// Parses a positive, finite number (e.g. `--attention-scale`, `--inner-lr`)
/// at the flag's own precision.
pub fn parse_positive<T: std::str::FromStr + Into<f64> + Copy>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(v) if v.into().is_finite() && v.into() > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number, got {s:?}")),
    }
}

/// Parses `--widths`: four positive channel counts separated by commas.
pub fn parse_widths(s: &str) -> Result<[usize; 4], String> {
    parse_four(s, "--widths", "channel counts, e.g. 64,64,128,192")
}

/// Parses `--depths` (convolutions in each Conv-4 block, e.g. 1,2,2,2).
pub fn parse_depths(s: &str) -> Result<[usize; 4], String> {
    parse_four(s, "--depths", "convolution counts, e.g. 1,2,2,2")
}

/// Four positive integers separated by commas.
fn parse_four(s: &str, flag: &str, what: &str) -> Result<[usize; 4], String> {
    let bad = || format!("{flag} {s:?}: expected four positive {what}");
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match <[usize; 4]>::try_from(v) {
        Ok(w) if !w.contains(&0) => Ok(w),
        _ => Err(bad()),
    }
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

/// Prints `value` as one line of JSON. When a recipe aligned faces and some
/// images had none, an object gains `"no_face": {"count", "files"}`.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let missing = data::faces::no_face_files();
    let mut value = value.clone();
    if let (false, Some(map)) = (missing.is_empty(), value.as_object_mut()) {
        map.insert(
            "no_face".into(),
            serde_json::json!({
                "count": missing.len(),
                "files": missing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "rule": "aligned by the template on the centred square of half the shorter side",
            }),
        );
    }
    println!("{}", serde_json::to_string(&value)?);
    Ok(())
}

/// Whether to draw progress bars: only when standard error is a terminal.
pub fn progress() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// A share: a number from 0 to 1.
fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("expected a share from 0 to 1, got {s:?}")),
    }
}
