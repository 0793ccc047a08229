//! Model blobs (`fewshot export --mcu`) as [`Embedder`]s: the device's loader
//! runs them with the core's int8 engine, exactly as a microcontroller does;
//! the `.json` that the export writes beside a blob adds its training record.

use std::path::Path;

use anyhow::Context;
use fewshot_core::{Distance, Recipe};

use crate::embed::{EmbedError, Embedder};
use crate::onnx_model::OnnxEmbedder;

/// A model blob seen as an embedding function.
pub struct McuEmbedder {
    inner: OnnxEmbedder,
    training: Option<serde_json::Value>,
}

impl McuEmbedder {
    /// Reads and checks the blob at `path` (and the `training` record of the
    /// `.json` beside it, if present).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let inner = OnnxEmbedder::load(path)?;
        let side = path.with_extension("json");
        let training = match std::fs::read_to_string(&side) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("{}: not JSON", side.display()))?
                .get("training")
                .cloned(),
            Err(_) => None,
        };
        Ok(McuEmbedder { inner, training })
    }
}

impl Embedder for McuEmbedder {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn recipe(&self) -> Recipe {
        self.inner.recipe()
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn embed(&self, images: &[f32]) -> Result<Vec<f32>, EmbedError> {
        self.inner.embed(images)
    }

    fn distance(&self) -> Option<Distance> {
        self.inner.distance()
    }

    fn threshold(&self) -> Option<f32> {
        self.inner.threshold()
    }

    fn trained_classes(&self) -> Option<Vec<String>> {
        crate::nn::checkpoint::trained_classes(self.training.as_ref()?)
    }
}
