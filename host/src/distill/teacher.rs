//! A teacher: any face encoder that tract runs (ONNX, or TensorFlow Lite with
//! the `tflite` feature), seen as an [`Embedder`] that embeds in batches.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fewshot_core::preprocess::RecipeSpec;
use fewshot_core::{Crop, FaceTemplate, Recipe, Resize};
use prost::Message;
use rayon::prelude::*;
use tract_onnx::prelude::*;

use crate::embed::{check_shape, EmbedError, Embedder};

/// MobileFaceNet's input: the face aligned onto the ArcFace template at
/// 112×112 RGB, bilinear, `(x − 127.5) / 128`.
pub const MOBILEFACENET: Recipe = Recipe {
    width: 112,
    height: 112,
    channels: 3,
    crop: Crop::Aligned(FaceTemplate::ARCFACE),
    resize: Resize::Bilinear,
    invert: false,
    mean: [0.5; 3],
    std: [128.0 / 255.0; 3],
};

/// Images per run for models whose batch size is free.
const BATCH: usize = 16;

/// Errors of loading or running a teacher; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// The file could not be read.
    #[error("teacher {}: {source}", path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a model tract can run with this input.
    #[error("teacher {}: {message}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// How the model lays out its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `(batch, channels, height, width)` (ONNX).
    Nchw,
    /// `(batch, height, width, channels)` (TensorFlow Lite).
    Nhwc,
}

/// Which crops the teacher's targets are made from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherInput {
    /// The teacher's own input (MobileFaceNet: 112×112 RGB).
    #[default]
    Own,
    /// The student's crops (size, colour, alignment and resizing), resampled
    /// to the teacher's input: the target is then a function of what the
    /// student sees.
    Student,
}

/// A loaded teacher model.
pub struct Teacher {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    /// The crops [`Embedder::embed`] takes.
    recipe: Recipe,
    /// The model's own input; differs from `recipe` after [`Teacher::at_input`].
    native: Recipe,
    layout: Layout,
    batch: usize,
    dim: usize,
    id: u64,
}

impl Teacher {
    /// Loads `path` (`.onnx` or `.tflite`). `recipe` is the preprocessing
    /// its inputs need; when `None`, an ONNX model exported by `fewshot
    /// export` gives its own and a `.tflite` file gets [`MOBILEFACENET`].
    pub fn load(path: &Path, recipe: Option<Recipe>) -> Result<Teacher, TeacherError> {
        let err = |message: String| TeacherError::Model {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|source| TeacherError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let (model, recipe) = match ext.as_str() {
            "onnx" => {
                let proto = tract_onnx::pb::ModelProto::decode(&bytes[..])
                    .map_err(|e| err(format!("not an ONNX model: {e}")))?;
                let recipe = match recipe {
                    Some(r) => r,
                    None => recipe_of(&proto).map_err(&err)?,
                };
                let shape = [BATCH, recipe.channels, recipe.height, recipe.width];
                let model = tract_onnx::onnx()
                    .model_for_proto_model(&proto)
                    .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
                    .and_then(|m| m.into_typed())
                    .map_err(|e| err(format!("{e:#}")))?;
                (model, recipe)
            }
            "tflite" => (
                load_tflite(&bytes).map_err(&err)?,
                recipe.unwrap_or(MOBILEFACENET),
            ),
            _ => return Err(err("expected a .onnx or .tflite file".into())),
        };
        recipe.validate().map_err(|e| err(format!("recipe: {e}")))?;
        let fact = model
            .input_fact(0)
            .map_err(|e| err(format!("{e:#}")))?
            .clone();
        let dims: Vec<usize> = fact
            .shape
            .as_concrete()
            .ok_or_else(|| err("the input shape is not fixed".into()))?
            .to_vec();
        let (c, h, w) = (recipe.channels, recipe.height, recipe.width);
        let layout = match dims[..] {
            [_, a, b, d] if (a, b, d) == (c, h, w) => Layout::Nchw,
            [_, a, b, d] if (a, b, d) == (h, w, c) => Layout::Nhwc,
            _ => {
                return Err(err(format!(
                    "takes input {dims:?}; its recipe gives {c}×{h}×{w} images"
                )))
            }
        };
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| err(format!("{e:#}")))?;
        // The version of how targets are made is part of their key.
        let mut id_bytes = b"targets v1".to_vec();
        id_bytes.extend(bytes);
        id_bytes
            .extend(serde_json::to_vec(&RecipeSpec::from(recipe)).map_err(|e| err(e.to_string()))?);
        let mut teacher = Teacher {
            path: path.to_path_buf(),
            plan,
            recipe,
            native: recipe,
            layout,
            batch: dims[0],
            dim: 0,
            id: crate::data::faces::fnv1a(id_bytes.iter()),
        };
        let probe = teacher
            .run_batch(&vec![0.0; recipe.len()], 1)
            .map_err(|e| err(e.to_string()))?;
        teacher.dim = probe.len();
        if teacher.dim == 0 {
            return Err(err("produces an empty embedding".into()));
        }
        Ok(teacher)
    }

    /// The teacher fed `input`'s crops (its size, channels, alignment and
    /// resizing; normalised as the teacher's own input), each resampled
    /// bilinearly to the teacher's size and, if grey, repeated over its
    /// channels. Cached targets are keyed by this input too.
    pub fn at_input(mut self, input: &Recipe) -> Result<Teacher, TeacherError> {
        let native = self.native;
        if input.channels != 1 && input.channels != native.channels {
            return Err(TeacherError::Model {
                path: self.path.clone(),
                message: format!(
                    "takes {} channels; crops of {} channels cannot be fed to it (1 or {} can)",
                    native.channels, input.channels, native.channels
                ),
            });
        }
        let recipe = Recipe {
            width: input.width,
            height: input.height,
            channels: input.channels,
            crop: input.crop,
            resize: input.resize,
            ..native
        };
        recipe.validate().map_err(|e| TeacherError::Model {
            path: self.path.clone(),
            message: format!("input recipe: {e}"),
        })?;
        let spec =
            serde_json::to_vec(&RecipeSpec::from(recipe)).map_err(|e| TeacherError::Model {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        let mut id_bytes = self.id.to_le_bytes().to_vec();
        id_bytes.extend(b"at input");
        id_bytes.extend(spec);
        self.id = crate::data::faces::fnv1a(id_bytes.iter());
        self.recipe = recipe;
        Ok(self)
    }

    /// A hash of the model file and its recipe: what cached targets are keyed by.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// `images` (rows of [`Teacher::recipe`]) as rows of the model's own input.
    fn to_native<'a>(&self, images: &'a [f32]) -> Cow<'a, [f32]> {
        let (from, to) = (self.recipe, self.native);
        if (from.width, from.height, from.channels) == (to.width, to.height, to.channels) {
            return Cow::Borrowed(images);
        }
        let plane = from.width * from.height;
        let mut out = Vec::with_capacity(images.len() / from.len() * to.len());
        for image in images.chunks(from.len()) {
            for c in 0..to.channels {
                let src = if from.channels == 1 { 0 } else { c };
                out.extend(resample(
                    &image[src * plane..(src + 1) * plane],
                    (from.width, from.height),
                    (to.width, to.height),
                ));
            }
        }
        Cow::Owned(out)
    }

    /// Runs one batch of `n ≤ batch` images (CHW rows of the model's own
    /// input); returns `n × dim` values.
    fn run_batch(&self, images: &[f32], n: usize) -> Result<Vec<f32>, EmbedError> {
        let r = self.native;
        let per = r.len();
        let backend = |e: String| EmbedError::Backend(format!("{}: {e}", self.path.display()));
        let mut input = vec![0.0f32; self.batch * per];
        match self.layout {
            Layout::Nchw => input[..n * per].copy_from_slice(&images[..n * per]),
            Layout::Nhwc => {
                let plane = r.height * r.width;
                for (i, image) in images.chunks(per).take(n).enumerate() {
                    let out = &mut input[i * per..(i + 1) * per];
                    for ch in 0..r.channels {
                        for p in 0..plane {
                            out[p * r.channels + ch] = image[ch * plane + p];
                        }
                    }
                }
            }
        }
        let shape = match self.layout {
            Layout::Nchw => [self.batch, r.channels, r.height, r.width],
            Layout::Nhwc => [self.batch, r.height, r.width, r.channels],
        };
        let tensor = tract_ndarray::ArrayD::from_shape_vec(&shape[..], input)
            .map_err(|e| backend(e.to_string()))?;
        let out = self
            .plan
            .run(tvec!(Tensor::from(tensor).into()))
            .map_err(|e| backend(format!("{e:#}")))?;
        let view = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| backend(e.to_string()))?;
        let values: Vec<f32> = view.iter().copied().collect();
        let dim = values.len() / self.batch;
        Ok(values[..n * dim].to_vec())
    }
}

impl Embedder for Teacher {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn recipe(&self) -> Recipe {
        self.recipe
    }

    fn dim(&self) -> usize {
        self.dim
    }

    /// Face encoders compare unit embeddings.
    fn distance(&self) -> Option<fewshot_core::Distance> {
        Some(fewshot_core::Distance::Cosine)
    }

    /// Embeds in the model's batches, the batches in parallel.
    fn embed(&self, images: &[f32]) -> Result<Vec<f32>, EmbedError> {
        let per = self.recipe.len();
        check_shape(images, per)?;
        let chunks: Vec<Vec<f32>> = images
            .par_chunks(per * self.batch)
            .map(|chunk| self.run_batch(&self.to_native(chunk), chunk.len() / per))
            .collect::<Result<_, _>>()?;
        Ok(chunks.concat())
    }
}

/// Bilinear resampling of one `(width, height)` plane to `to` (pixel
/// centres aligned, edges clamped).
pub fn resample(plane: &[f32], from: (usize, usize), to: (usize, usize)) -> Vec<f32> {
    let ((w, h), (ow, oh)) = (from, to);
    let coord = |o: usize, scale: f32, side: usize| {
        let s = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (side - 1) as f32);
        let i = s.floor() as usize;
        (i, (i + 1).min(side - 1), s - i as f32)
    };
    let (sx, sy) = (w as f32 / ow as f32, h as f32 / oh as f32);
    let mut v = Vec::with_capacity(ow * oh);
    for y in 0..oh {
        let (y0, y1, fy) = coord(y, sy, h);
        for x in 0..ow {
            let (x0, x1, fx) = coord(x, sx, w);
            let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
            let bottom = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
            v.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    v
}

/// The recipe an exported model records.
fn recipe_of(proto: &tract_onnx::pb::ModelProto) -> Result<Recipe, String> {
    let key = fewshot_core::model_meta::RECIPE;
    let spec = proto
        .metadata_props
        .iter()
        .find(|p| p.key == key)
        .ok_or_else(|| {
            format!(
                "has no {key} metadata: an ONNX teacher must be exported by `fewshot export` (a face encoder from elsewhere: a .tflite file with MobileFaceNet's input)"
            )
        })?;
    let spec: RecipeSpec =
        serde_json::from_str(&spec.value).map_err(|e| format!("metadata {key}: {e}"))?;
    spec.recipe().map_err(|e| format!("metadata {key}: {e}"))
}

#[cfg(feature = "tflite")]
fn load_tflite(bytes: &[u8]) -> Result<TypedModel, String> {
    use tract_tflite::prelude::Framework;
    tract_tflite::tflite()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| format!("{e:#}"))
}

#[cfg(not(feature = "tflite"))]
fn load_tflite(_bytes: &[u8]) -> Result<TypedModel, String> {
    Err(
        "this build reads no TensorFlow Lite files: build with `--features tflite` \
         (cargo build --release -p fewshot-host --features tflite)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::resample;

    /// Bilinear interpolation reproduces an affine plane exactly, at each
    /// output pixel's centre mapped back (and clamped) into the source.
    #[test]
    fn resampling_keeps_an_affine_plane_at_mapped_centres() {
        let f = |x: f64, y: f64| 0.3 * x - 0.7 * y + 2.0;
        for (from, to) in [((8, 6), (13, 21)), ((16, 16), (5, 7)), ((4, 4), (4, 4))] {
            let (w, h) = from;
            let plane: Vec<f32> = (0..h)
                .flat_map(|y| (0..w).map(move |x| f(x as f64, y as f64) as f32))
                .collect();
            let out = resample(&plane, from, to);
            assert_eq!(out.len(), to.0 * to.1);
            for oy in 0..to.1 {
                for ox in 0..to.0 {
                    let map = |o: usize, n: usize, side: usize| {
                        ((o as f64 + 0.5) * side as f64 / n as f64 - 0.5)
                            .clamp(0.0, (side - 1) as f64)
                    };
                    let want = f(map(ox, to.0, w), map(oy, to.1, h));
                    let got = f64::from(out[oy * to.0 + ox]);
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{from:?} → {to:?} at ({ox}, {oy}): {got} against {want}"
                    );
                }
            }
        }
    }
}
