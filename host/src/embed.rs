//! Embedding functions: anything that maps preprocessed images to vectors.

use fewshot_core::Recipe;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::Tensors;

/// Errors of embedding functions.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The input does not have the shape the model expects.
    #[error("input has {found} values, expected a multiple of {expected} (one {expected}-value image per row)")]
    Shape {
        /// Values per image the model expects.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The model's runtime failed.
    #[error("model failed: {0}")]
    Backend(String),
}

/// An embedding function: preprocessed images in, one vector per image out.
pub trait Embedder: Send + Sync {
    /// A short name for reports (`pixels`, a checkpoint path).
    fn name(&self) -> String;
    /// The preprocessing its inputs must go through.
    fn recipe(&self) -> Recipe;
    /// Embedding size.
    fn dim(&self) -> usize;
    /// Embeds `n` images given as `n × recipe().len()` values; returns `n × dim()` values.
    fn embed(&self, images: &[f32]) -> Result<Vec<f32>, EmbedError>;
    /// The distance the model was trained with, if it records one.
    fn distance(&self) -> Option<fewshot_core::Distance> {
        None
    }
    /// Names of the classes the model was trained (or selected) on, if it
    /// records them: evaluations leave these out.
    fn trained_classes(&self) -> Option<Vec<String>> {
        None
    }
    /// The calibrated rejection threshold the model carries, if any.
    fn threshold(&self) -> Option<f32> {
        None
    }
    /// The thresholds for galleries of several sizes the model carries, if any.
    fn gallery_thresholds(&self) -> Option<fewshot_core::GalleryThresholds> {
        None
    }
}

/// The baseline: the preprocessed pixels are the embedding.
#[derive(Debug, Clone)]
pub struct Pixels {
    /// How images are preprocessed (and so what the embedding is).
    pub recipe: Recipe,
}

impl Embedder for Pixels {
    fn name(&self) -> String {
        "pixels".into()
    }

    fn recipe(&self) -> Recipe {
        self.recipe
    }

    fn dim(&self) -> usize {
        self.recipe.len()
    }

    fn embed(&self, images: &[f32]) -> Result<Vec<f32>, EmbedError> {
        check_shape(images, self.recipe.len())?;
        Ok(images.to_vec())
    }
}

/// Checks that `images` is a whole number of `per_image`-value rows.
pub fn check_shape(images: &[f32], per_image: usize) -> Result<(), EmbedError> {
    if per_image == 0 || images.len() % per_image != 0 {
        return Err(EmbedError::Shape {
            expected: per_image,
            found: images.len(),
        });
    }
    Ok(())
}

/// Embeddings of a set of images, one row each.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// Values per row.
    pub dim: usize,
    /// `n × dim` values.
    pub data: Vec<f32>,
}

impl Embeddings {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Embeds every image of `tensors` once, in batches, with a progress bar.
    pub fn compute(
        model: &dyn Embedder,
        tensors: &Tensors,
        batch: usize,
        progress: bool,
    ) -> Result<Embeddings, EmbedError> {
        let per = model.recipe().len();
        if tensors.recipe.len() != per {
            return Err(EmbedError::Shape {
                expected: per,
                found: tensors.recipe.len(),
            });
        }
        let bar = if progress && tensors.len() > batch {
            let bar = ProgressBar::new(tensors.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("embedding {bar:40} {pos}/{len} images ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let dim = model.dim();
        let mut data = Vec::with_capacity(tensors.len() * dim);
        for chunk in tensors.data.chunks(batch.max(1) * per) {
            let out = model.embed(chunk)?;
            if out.len() != chunk.len() / per * dim {
                return Err(EmbedError::Backend(format!(
                    "model returned {} values for {} images of embedding size {dim}",
                    out.len(),
                    chunk.len() / per
                )));
            }
            data.extend_from_slice(&out);
            bar.inc((chunk.len() / per) as u64);
        }
        bar.finish_and_clear();
        Ok(Embeddings { dim, data })
    }
}
