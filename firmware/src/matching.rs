//! A Matching Network's full context embeddings on the device: the two graphs
//! `fewshot export` writes beside the encoder, run by tract.
//!
//! The door keeps its gallery of prototypes (each person's mean embedding) as
//! for any model; with FCE it also keeps their context embeddings `g`, one
//! sequence over the whole gallery in enrollment order, recomputed whenever
//! the gallery changes. A frame's embedding `f'` then attends over them
//! (`f`), and the open-set rule compares `f` with the nearest `g_i` under
//! the model's distance: that distance is the score the door thresholds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fewshot_core::model_meta;
use tract_onnx::prelude::*;

use crate::encoder::EncoderError;

/// The FCE graphs of one model.
pub struct Fce {
    support: Arc<TypedRunnableModel>,
    query: Arc<TypedRunnableModel>,
    dim: usize,
    paths: (PathBuf, PathBuf),
}

/// The files of the FCE graphs beside the model `path`.
pub fn paths(path: &Path) -> (PathBuf, PathBuf) {
    let stem = path.with_extension("");
    let with = |suffix: &str| {
        let mut s = stem.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    (
        with(model_meta::FCE_SUPPORT_SUFFIX),
        with(model_meta::FCE_QUERY_SUFFIX),
    )
}

/// Reads [`model_meta::MATCHING`]: a JSON object whose `fce` member, when
/// present and not null, says the model has full context embeddings.
pub fn has_fce(text: &str) -> Result<bool, String> {
    let meta: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !meta.is_object() {
        return Err("expected a JSON object".into());
    }
    Ok(!meta.get("fce").is_none_or(serde_json::Value::is_null))
}

fn load_graph(path: &Path) -> Result<Arc<TypedRunnableModel>, EncoderError> {
    let model_err = |message: String| EncoderError::Model {
        path: path.to_path_buf(),
        message,
    };
    if !path.is_file() {
        return Err(EncoderError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the model is a Matching Network with full context embeddings: its graph must lie beside it (fewshot export writes it)",
            ),
        });
    }
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| model_err(format!("{e:#}")))?;
    Ok(plan)
}

impl Fce {
    /// The FCE graphs beside the model at `path`, whose metadata says it
    /// has them ([`has_fce`]), each probed with `dim`-value embeddings.
    pub fn load_beside(path: &Path, dim: usize) -> Result<Fce, EncoderError> {
        let (support, query) = paths(path);
        let fce = Fce {
            support: load_graph(&support)?,
            query: load_graph(&query)?,
            dim,
            paths: (support, query),
        };
        // A probe: two prototypes in, two context embeddings out.
        let probe = vec![0.5; 2 * dim];
        let context = fce.context(&probe)?;
        fce.attend(&probe[..dim], &context)?;
        Ok(fce)
    }

    fn run(
        &self,
        plan: &Arc<TypedRunnableModel>,
        path: &Path,
        inputs: &[&[f32]],
    ) -> Result<Vec<f32>, EncoderError> {
        let run_err = |m: String| EncoderError::Run(format!("{}: {m}", path.display()));
        let tensors = inputs
            .iter()
            .map(|v| {
                tract_ndarray::Array2::from_shape_vec((v.len() / self.dim, self.dim), v.to_vec())
                    .map(|a| a.into_tensor().into())
                    .map_err(|e| run_err(e.to_string()))
            })
            .collect::<Result<TVec<TValue>, _>>()?;
        let out = plan.run(tensors).map_err(|e| run_err(format!("{e:#}")))?;
        let view = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| run_err(e.to_string()))?;
        Ok(view.iter().copied().collect())
    }

    fn check(&self, values: &[f32], what: &str) -> Result<(), EncoderError> {
        if values.is_empty() || values.len() % self.dim != 0 {
            return Err(EncoderError::Run(format!(
                "{what}: {} values are not a whole number of {}-d embeddings",
                values.len(),
                self.dim
            )));
        }
        Ok(())
    }

    /// The gallery's context embeddings `g` `(n × dim)` of its prototypes
    /// `(n × dim)`, in the same order.
    pub fn context(&self, prototypes: &[f32]) -> Result<Vec<f32>, EncoderError> {
        self.check(prototypes, "gallery")?;
        self.run(&self.support, &self.paths.0, &[prototypes])
    }

    /// A frame's embedding `f'` attended over the gallery's context `g`.
    pub fn attend(&self, embedding: &[f32], context: &[f32]) -> Result<Vec<f32>, EncoderError> {
        self.check(context, "context")?;
        if embedding.len() != self.dim {
            return Err(EncoderError::Input {
                expected: self.dim,
                found: embedding.len(),
            });
        }
        self.run(&self.query, &self.paths.1, &[embedding, context])
    }
}
