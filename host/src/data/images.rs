use std::path::{Path, PathBuf};

use fewshot_core::{Crop, Recipe};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::{faces, DataError};

/// Image files are decoded as on the device: grey stays grey, everything
/// else becomes RGB, so the colour conversion is the core's.
pub use fewshot_firmware::camera::{load_image as decode_frame, OwnedFrame};

/// Decodes and preprocesses one image file; a recipe that aligns faces
/// aligns the image's largest face ([`super::faces`]; an image without one
/// by the centred fallback, recorded in [`super::faces::no_face_files`]).
pub fn preprocess_file(path: &Path, recipe: &Recipe) -> Result<Vec<f32>, DataError> {
    let owned = decode_frame(path)?;
    let mut out = vec![0.0; recipe.len()];
    let preprocess = |source| DataError::Preprocess {
        path: path.to_path_buf(),
        source,
    };
    let frame = owned.as_frame().map_err(preprocess)?;
    match recipe.crop {
        Crop::Aligned(template) => {
            let found = faces::face_of(path, &frame, &template)?;
            recipe.apply_aligned(&frame, &found.landmarks(), &mut out)
        }
        _ => recipe.apply(&frame, &mut out),
    }
    .map_err(preprocess)?;
    Ok(out)
}

/// Preprocessed images held in memory, one `recipe.len()` row each.
#[derive(Debug, Clone)]
pub struct Tensors {
    /// The preprocessing they went through.
    pub recipe: Recipe,
    /// `n × recipe.len()` values.
    pub data: Vec<f32>,
    /// The source files, in row order.
    pub paths: Vec<PathBuf>,
}

impl Tensors {
    /// Decodes and preprocesses every file once, in parallel, with a progress
    /// bar on standard error (hidden when `progress` is false). The first
    /// unreadable file stops the load with an error naming it.
    pub fn load(paths: &[PathBuf], recipe: &Recipe, progress: bool) -> Result<Tensors, DataError> {
        recipe.validate().map_err(|source| DataError::Preprocess {
            path: PathBuf::from("<recipe>"),
            source,
        })?;
        let bar = if progress {
            let bar = ProgressBar::new(paths.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "decoding {bar:40} {pos}/{len} images ({elapsed}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        if recipe.needs_landmarks() {
            bar.set_message("(detecting faces; cached for the next run)");
        }
        let rows: Vec<Vec<f32>> = paths
            .par_iter()
            .map(|p| {
                let row = preprocess_file(p, recipe);
                bar.inc(1);
                row
            })
            .collect::<Result<_, _>>()?;
        bar.finish_and_clear();
        let missing = faces::no_face_files();
        let no_face = paths.iter().filter(|p| missing.contains(p)).count();
        if no_face > 0 {
            eprintln!(
                "{no_face} of {} images have no detected face: aligned by the centred fallback \
                 (the files are listed with --json)",
                paths.len()
            );
        }
        Ok(Tensors {
            recipe: *recipe,
            data: rows.concat(),
            paths: paths.to_vec(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let n = self.recipe.len();
        &self.data[i * n..(i + 1) * n]
    }
}
