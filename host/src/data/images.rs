use std::path::{Path, PathBuf};

use fewshot_core::Recipe;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::DataError;

/// Image files are decoded as on the device: grey stays grey, everything
/// else becomes RGB, so the colour conversion is the core's.
pub use fewshot_firmware::camera::{load_image as decode_frame, OwnedFrame};

/// Decodes and preprocesses one image file.
pub fn preprocess_file(path: &Path, recipe: &Recipe) -> Result<Vec<f32>, DataError> {
    let owned = decode_frame(path)?;
    let mut out = vec![0.0; recipe.len()];
    let preprocess = |source| DataError::Preprocess {
        path: path.to_path_buf(),
        source,
    };
    recipe
        .apply(&owned.as_frame().map_err(preprocess)?, &mut out)
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
                ProgressStyle::with_template("decoding {bar:40} {pos}/{len} images ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let rows: Vec<Vec<f32>> = paths
            .par_iter()
            .map(|p| {
                let row = preprocess_file(p, recipe);
                bar.inc(1);
                row
            })
            .collect::<Result<_, _>>()?;
        bar.finish_and_clear();
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
