//! `fewshot detect`: how often the face detector finds a face in a folder.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fewshot_host::data::{faces, ClassSet, Layout};

/// Arguments of `fewshot detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Folder of identity folders of images (as given, or under the data folder).
    #[arg(long)]
    data: PathBuf,
    /// Print one JSON object (with the files where no face was found).
    #[arg(long)]
    json: bool,
}

/// Runs `fewshot detect`.
pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    let root = super::resolve(&args.data, "--data")?;
    let set = ClassSet::load(&root, Layout::Auto)?;
    let paths: Vec<PathBuf> = set
        .classes
        .iter()
        .flat_map(|c| c.images.iter().cloned())
        .collect();
    let started = std::time::Instant::now();
    let seen = faces::survey(&paths, super::progress()).context("detecting faces")?;
    let seconds = started.elapsed().as_secs_f64();
    let missing: Vec<String> = paths
        .iter()
        .zip(&seen)
        .filter(|(_, s)| s.faces == 0)
        .map(|(p, _)| p.display().to_string())
        .collect();
    let several = seen.iter().filter(|s| s.faces > 1).count();
    let mut eyes: Vec<f32> = seen
        .iter()
        .filter_map(|s| s.largest.map(|f| f.eye_distance()))
        .collect();
    eyes.sort_by(f32::total_cmp);
    let quantile =
        |q: f64| (!eyes.is_empty()).then(|| eyes[((eyes.len() - 1) as f64 * q).round() as usize]);
    let found = paths.len() - missing.len();
    let rate = 100.0 * found as f64 / paths.len().max(1) as f64;
    let detector = faces::detector_path()?;
    if args.json {
        super::print_json(&serde_json::json!({
            "data": root.display().to_string(),
            "detector": detector.display().to_string(),
            "images": paths.len(),
            "found": found,
            "found_percent": rate,
            "several_faces": several,
            "eye_px": {"p5": quantile(0.05), "median": quantile(0.5), "p95": quantile(0.95)},
            "seconds": seconds,
            "no_face_files": missing,
        }))?;
    } else {
        println!(
            "{}: a face in {found} of {} images ({rate:.2} %), several faces in {several}; \
             eye distance of the largest face: median {:.1} px (5-95 %: {:.1}-{:.1}); \
             {seconds:.1} s with {}",
            root.display(),
            paths.len(),
            quantile(0.5).unwrap_or(f32::NAN),
            quantile(0.05).unwrap_or(f32::NAN),
            quantile(0.95).unwrap_or(f32::NAN),
            detector.display()
        );
        for m in missing.iter().take(20) {
            println!("  no face: {m}");
        }
        if missing.len() > 20 {
            println!(
                "  ... and {} more (--json lists them all)",
                missing.len() - 20
            );
        }
    }
    Ok(())
}
