//! A run's files: settings, checkpoints, metrics and the curve.

use super::config::{RunConfig, TrainConfig};
use super::MetricLine;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::Device;
use candle_nn::VarMap;

use crate::nn::checkpoint::{self};
use crate::plot::{line_chart_png, Series};

/// Paths of a run's files.
pub struct RunFiles {
    /// The output folder.
    pub dir: PathBuf,
}

impl RunFiles {
    /// `run.json`: the training configuration.
    pub fn config(&self) -> PathBuf {
        self.dir.join("run.json")
    }
    /// The latest checkpoint (for resuming).
    pub fn last(&self) -> PathBuf {
        self.dir.join("last.safetensors")
    }
    /// The best checkpoint on validation.
    pub fn best(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }
    /// Adam's moments at the latest checkpoint.
    pub fn optimizer(&self) -> PathBuf {
        self.dir.join("last.adam.safetensors")
    }
    /// Progress at the latest checkpoint.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// Metrics, one JSON object a line.
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    /// The training curve.
    pub fn curve(&self) -> PathBuf {
        self.dir.join("curve.png")
    }
}

/// Sets every encoder variable of `varmap` (all but the objective's `head.`)
/// from checkpoint `path`, whose encoder and recipe must be `config`'s.
pub(super) fn load_encoder(
    varmap: &VarMap,
    path: &Path,
    config: &TrainConfig,
) -> anyhow::Result<()> {
    let saved =
        checkpoint::load_config(path).with_context(|| format!("--init {}", path.display()))?;
    if saved.encoder != config.encoder || saved.recipe != config.recipe {
        bail!(
            "--init {}: its encoder {:?} and input {:?} differ from this run's {:?} and {:?}; give the same --hidden and input flags",
            path.display(),
            saved.encoder,
            saved.recipe,
            config.encoder,
            config.recipe
        );
    }
    let weights = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("--init {}: reading the weights", path.display()))?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?;
    for (name, var) in vars.iter().filter(|(n, _)| !n.starts_with("head.")) {
        let w = weights
            .get(name)
            .with_context(|| format!("--init {}: no tensor {name}", path.display()))?;
        var.set(w)
            .with_context(|| format!("--init {}: tensor {name}", path.display()))?;
    }
    Ok(())
}

/// The commit the trainer was built from, else the working directory's, else
/// `unknown`.
pub fn git_commit() -> String {
    if let Some(commit) = option_env!("FEWSHOT_BUILD_COMMIT") {
        return commit.to_string();
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Checks that a resumed run has `run`'s settings, or starts a new run in
/// `files.dir` (which must not hold one) by writing `run.json`.
pub(super) fn start_or_resume(
    run: &RunConfig,
    files: &RunFiles,
    resume: bool,
) -> anyhow::Result<()> {
    if resume {
        let saved: RunConfig = serde_json::from_slice(
            &std::fs::read(files.config())
                .with_context(|| format!("resuming: reading {}", files.config().display()))?,
        )
        .with_context(|| format!("resuming: {}", files.config().display()))?;
        if &saved != run {
            bail!(
                "resuming: the settings differ from those {} was started with; use the same flags or a new --out",
                files.config().display()
            );
        }
    } else {
        if files.state().exists() {
            bail!(
                "{} already holds a run: pass --resume to continue it, or choose another --out",
                files.dir.display()
            );
        }
        std::fs::create_dir_all(&files.dir)
            .with_context(|| format!("creating {}", files.dir.display()))?;
        checkpoint::write_atomic(&files.config(), &serde_json::to_vec_pretty(run)?)?;
    }

    Ok(())
}

pub(super) fn append_metric(path: &Path, line: &MetricLine) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(line)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads `metrics.jsonl`, skipping lines a crash may have cut short.
pub fn read_metrics(path: &Path) -> Vec<MetricLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Draws training loss, training accuracy and validation accuracy against episodes.
pub fn plot_curve(path: &Path, history: &[MetricLine]) -> anyhow::Result<()> {
    let pts = |f: &dyn Fn(&MetricLine) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|m| f(m).map(|v| (m.episode as f64, v)))
            .collect()
    };
    let train_acc = pts(&|m| m.accuracy);
    let val_acc = pts(&|m| m.val_accuracy);
    let loss = pts(&|m| m.loss);
    line_chart_png(
        path,
        "Training",
        "episode",
        "accuracy / loss",
        &[
            Series {
                name: "train accuracy",
                points: &train_acc,
            },
            Series {
                name: "validation accuracy",
                points: &val_acc,
            },
            Series {
                name: "train loss",
                points: &loss,
            },
        ],
        false,
    )
}
