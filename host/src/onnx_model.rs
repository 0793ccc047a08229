//! Exported ONNX encoders as [`Embedder`]s, run by the device's own loader,
//! so `fewshot eval` measures an export exactly as the device runs it.

use std::path::Path;

use fewshot_core::{Distance, Recipe};
use fewshot_firmware::encoder::{EncoderError, OnnxEncoder};

use crate::embed::{check_shape, EmbedError, Embedder};

/// An exported model seen as an embedding function (one image per run, as on the device).
pub struct OnnxEmbedder {
    name: String,
    encoder: OnnxEncoder,
}

impl OnnxEmbedder {
    /// Loads an exported model.
    pub fn load(path: &Path) -> Result<Self, EncoderError> {
        Ok(OnnxEmbedder {
            name: path.display().to_string(),
            encoder: OnnxEncoder::load(path)?,
        })
    }

    /// The device-side encoder.
    pub fn encoder(&self) -> &OnnxEncoder {
        &self.encoder
    }
}

impl Embedder for OnnxEmbedder {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn recipe(&self) -> Recipe {
        self.encoder.recipe()
    }

    fn dim(&self) -> usize {
        self.encoder.dim()
    }

    fn embed(&self, images: &[f32]) -> Result<Vec<f32>, EmbedError> {
        let per = self.encoder.recipe().len();
        check_shape(images, per)?;
        let mut out = Vec::with_capacity(images.len() / per * self.dim());
        for image in images.chunks(per) {
            out.extend(
                self.encoder
                    .embed(image)
                    .map_err(|e| EmbedError::Backend(e.to_string()))?,
            );
        }
        Ok(out)
    }

    fn distance(&self) -> Option<Distance> {
        Some(self.encoder.distance())
    }

    fn threshold(&self) -> Option<f32> {
        self.encoder.threshold()
    }

    fn gallery_thresholds(&self) -> Option<fewshot_core::GalleryThresholds> {
        self.encoder.gallery_thresholds()
    }

    fn trained_classes(&self) -> Option<Vec<String>> {
        let record = self
            .encoder
            .metadata()
            .get(fewshot_core::model_meta::TRAINING)?;
        crate::nn::checkpoint::trained_classes(&serde_json::from_str(record).ok()?)
    }
}
