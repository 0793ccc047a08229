//! Model blobs (`fewshot export --mcu`) as [`Embedder`]s, run by the core's
//! int8 engine exactly as a microcontroller runs them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use fewshot_core::engine::{Arena, Model};
use fewshot_core::{Distance, Recipe};

use crate::embed::{check_shape, EmbedError, Embedder};

/// A model blob seen as an embedding function.
pub struct McuEmbedder {
    path: PathBuf,
    bytes: Vec<u8>,
    recipe: Recipe,
    dim: usize,
    distance: Distance,
    threshold: Option<f32>,
    training: Option<serde_json::Value>,
}

impl McuEmbedder {
    /// Reads and checks the blob at `path` (and the `training` record of the
    /// `.json` beside it, which `fewshot export --mcu` writes, if present).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading model blob {}", path.display()))?;
        let (h, dim) = {
            let model = Model::from_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (*model.header(), model.dim())
        };
        let side = path.with_extension("json");
        let training = match std::fs::read_to_string(&side) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("{}: not JSON", side.display()))?
                .get("training")
                .cloned(),
            Err(_) => None,
        };
        Ok(McuEmbedder {
            path: path.to_path_buf(),
            dim,
            bytes,
            recipe: h.recipe,
            distance: h.distance,
            threshold: h.threshold,
            training,
        })
    }

    /// The blob's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Embedder for McuEmbedder {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn recipe(&self) -> Recipe {
        self.recipe
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, images: &[f32]) -> Result<Vec<f32>, EmbedError> {
        let per = self.recipe.len();
        check_shape(images, per)?;
        let model =
            Model::from_bytes(&self.bytes).map_err(|e| EmbedError::Backend(e.to_string()))?;
        let h = model.header();
        let (mut bytes, mut words) = (vec![0u8; h.arena_bytes], vec![0i32; h.accumulator_words]);
        let mut arena = Arena::new(&mut bytes, &mut words);
        let mut out = vec![0f32; images.len() / per * self.dim];
        for (image, row) in images.chunks(per).zip(out.chunks_mut(self.dim)) {
            model
                .embed(image, &mut arena, row)
                .map_err(|e| EmbedError::Backend(e.to_string()))?;
        }
        Ok(out)
    }

    fn distance(&self) -> Option<Distance> {
        Some(self.distance)
    }

    fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    fn trained_classes(&self) -> Option<Vec<String>> {
        crate::nn::checkpoint::trained_classes(self.training.as_ref()?)
    }
}
