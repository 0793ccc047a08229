use std::path::{Path, PathBuf};

use fewshot_core::{Frame, PixelFormat, Recipe};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::DataError;

/// A decoded image in the formats the core preprocesses (grey or RGB).
#[derive(Debug, Clone)]
pub struct OwnedFrame {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixel layout.
    pub format: PixelFormat,
    /// Row-major pixels.
    pub pixels: Vec<u8>,
}

impl OwnedFrame {
    /// A borrowed view for the core.
    pub fn frame(&self) -> Frame<'_> {
        Frame {
            width: self.width,
            height: self.height,
            format: self.format,
            pixels: &self.pixels,
        }
    }
}

/// Decodes an image file. Grey images stay grey and everything else becomes
/// RGB, so the colour conversion is the core's, as on the device.
pub fn decode_frame(path: &Path) -> Result<OwnedFrame, DataError> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let img = reader.decode().map_err(|source| DataError::Image {
        path: path.to_path_buf(),
        source,
    })?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (format, pixels) = if img.color().has_color() {
        (PixelFormat::Rgb8, img.into_rgb8().into_raw())
    } else {
        (PixelFormat::Gray8, img.into_luma8().into_raw())
    };
    Ok(OwnedFrame {
        width,
        height,
        format,
        pixels,
    })
}

/// Decodes and preprocesses one image file.
pub fn preprocess_file(path: &Path, recipe: &Recipe) -> Result<Vec<f32>, DataError> {
    let owned = decode_frame(path)?;
    let mut out = vec![0.0; recipe.len()];
    recipe
        .apply(&owned.frame(), &mut out)
        .map_err(|source| DataError::Preprocess {
            path: path.to_path_buf(),
            source,
        })?;
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
