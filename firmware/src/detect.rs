//! The YuNet face detector run by tract: a frame in, faces with boxes and
//! five landmarks out (decoding and suppression are the core's
//! [`fewshot_core::detect`]).

use std::path::{Path, PathBuf};

use fewshot_core::detect::{self, DetectConfig, Face, Letterbox, StrideOutputs};
use fewshot_core::Frame;
use prost::Message;
use tract_onnx::prelude::*;

/// The file name of the detector in the data folder's `models/`.
pub const DEFAULT_DETECTOR: &str = "models/yunet_s_320_320.onnx";

/// At most this many faces are kept per frame (the best-scoring ones).
pub const MAX_FACES: usize = 32;

/// The second pass of [`FaceDetector::find_face`] looks again in a square
/// window this many times the face box's larger side, so the face fills
/// the same share of the detector's input whatever its size in the frame.
pub const REFINE_WINDOW: f32 = 2.0;

/// YuNet's strides, in the order of its outputs.
const STRIDES: [usize; 3] = [8, 16, 32];
/// YuNet's output groups, each one tensor per stride.
const GROUPS: [&str; 4] = ["cls", "obj", "bbox", "kps"];

/// Errors of loading or running the detector; each names the model file.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a YuNet ONNX model tract can run.
    #[error("{}: not a usable YuNet face detector: {message}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The frame could not be fitted into the input.
    #[error("frame: {0}")]
    Frame(#[from] fewshot_core::PreprocessError),
    /// The outputs did not decode.
    #[error("decoding the detector's outputs: {0}")]
    Decode(#[from] fewshot_core::DetectError),
    /// tract failed while running the model.
    #[error("running the detector: {0}")]
    Run(String),
}

/// A loaded YuNet detector with a fixed input size.
pub struct FaceDetector {
    plan: std::sync::Arc<TypedRunnableModel>,
    width: usize,
    height: usize,
    /// For each group and stride, the index of that output in the plan.
    order: [[usize; 3]; 4],
    config: DetectConfig,
    path: PathBuf,
}

impl FaceDetector {
    /// Loads `path`. A model with a fixed input (`yunet_s_320_320.onnx`) runs
    /// at its size; one with a dynamic input (`yunet_s_dynamic.onnx`) at
    /// `input` (width, height; multiples of 32), 320×320 when not given.
    pub fn load(path: &Path, input: Option<(usize, usize)>) -> Result<Self, DetectorError> {
        let err = |message: String| DetectorError::Model {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|source| DetectorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let proto =
            tract_onnx::pb::ModelProto::decode(&bytes[..]).map_err(|e| err(e.to_string()))?;
        let graph = proto.graph.as_ref().ok_or_else(|| err("no graph".into()))?;
        let names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let mut order = [[0; 3]; 4];
        for (g, group) in GROUPS.iter().enumerate() {
            for (s, stride) in STRIDES.iter().enumerate() {
                let name = format!("{group}_{stride}");
                order[g][s] = names.iter().position(|n| *n == name).ok_or_else(|| {
                    err(format!("no output {name} (outputs: {})", names.join(", ")))
                })?;
            }
        }
        let fixed = graph
            .input
            .first()
            .and_then(|i| i.r#type.as_ref())
            .and_then(|t| match &t.value {
                Some(tract_onnx::pb::type_proto::Value::TensorType(t)) => t.shape.as_ref(),
                _ => None,
            })
            .and_then(|shape| {
                let dims: Vec<Option<i64>> = shape
                    .dim
                    .iter()
                    .map(|d| match d.value {
                        Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                            Some(v)
                        }
                        _ => None,
                    })
                    .collect();
                match dims[..] {
                    [_, _, Some(h), Some(w)] if h > 0 && w > 0 => Some((w as usize, h as usize)),
                    _ => None,
                }
            });
        let (width, height) = match (fixed, input) {
            (Some(fixed), Some(asked)) if fixed != asked => {
                return Err(err(format!(
                    "its input is fixed at {}x{}, not {}x{}",
                    fixed.0, fixed.1, asked.0, asked.1
                )))
            }
            (Some(fixed), _) => fixed,
            (None, asked) => asked.unwrap_or((320, 320)),
        };
        if width == 0 || height == 0 || width % 32 != 0 || height % 32 != 0 {
            return Err(err(format!(
                "input {width}x{height}: width and height must be positive multiples of 32"
            )));
        }
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, height, width]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| err(format!("{e:#}")))?;
        Ok(FaceDetector {
            plan,
            width,
            height,
            order,
            config: DetectConfig::default(),
            path: path.to_path_buf(),
        })
    }

    /// The model's input size (width, height).
    pub fn input_size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The decoding settings.
    pub fn config(&self) -> DetectConfig {
        self.config
    }

    /// Sets the decoding settings.
    pub fn set_config(&mut self, config: DetectConfig) {
        self.config = config;
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The faces in `frame`, best score first (at most [`MAX_FACES`]).
    pub fn detect(&self, frame: &Frame<'_>) -> Result<Vec<Face>, DetectorError> {
        let letterbox = Letterbox::fit(frame.width, frame.height, self.width, self.height);
        self.detect_in(frame, &letterbox)
    }

    /// The face to recognise in `frame`, and how many faces it holds: the
    /// largest face, found again in a window around it
    /// ([`REFINE_WINDOW`]): one pass's landmarks move with the face's size
    /// in the detector's input (by up to a quarter of the eye distance,
    /// measured on ORL photos pasted into 640×480 frames at different
    /// sizes), the second pass sees every face at about the same size. When
    /// the second pass loses the face, the first pass's face is kept.
    pub fn find_face(&self, frame: &Frame<'_>) -> Result<(usize, Option<Face>), DetectorError> {
        let faces = self.detect(frame)?;
        let Some(first) = detect::largest(&faces).copied() else {
            return Ok((0, None));
        };
        let side = REFINE_WINDOW * first.bbox[2].max(first.bbox[3]);
        let [cx, cy] = first.centre();
        let window = [cx - side / 2.0, cy - side / 2.0, side, side];
        let letterbox = Letterbox::fit_region(window, self.width, self.height);
        let again = self.detect_in(frame, &letterbox)?;
        let refined = again
            .iter()
            .filter(|f| f.iou(&first) > 0.3)
            .min_by(|a, b| {
                let d = |f: &Face| {
                    let [x, y] = f.centre();
                    (x - cx).hypot(y - cy)
                };
                d(a).total_cmp(&d(b))
            })
            .copied()
            .unwrap_or(first);
        Ok((faces.len(), Some(refined)))
    }

    /// The faces in the part of `frame` that `letterbox` fits into the input.
    pub fn detect_in(
        &self,
        frame: &Frame<'_>,
        letterbox: &Letterbox,
    ) -> Result<Vec<Face>, DetectorError> {
        let letterbox = *letterbox;
        if (letterbox.width, letterbox.height) != (self.width, self.height) {
            return Err(DetectorError::Run(format!(
                "a letterbox for {}x{}, the detector takes {}x{}",
                letterbox.width, letterbox.height, self.width, self.height
            )));
        }
        let mut input = vec![0.0; 3 * self.width * self.height];
        letterbox.fill(frame, &mut input)?;
        let outputs = self.run(&input)?;
        let per_stride: Vec<StrideOutputs<'_>> = STRIDES
            .iter()
            .enumerate()
            .map(|(s, &stride)| StrideOutputs {
                stride,
                cls: &outputs[self.order[0][s]],
                obj: &outputs[self.order[1][s]],
                bbox: &outputs[self.order[2][s]],
                kps: &outputs[self.order[3][s]],
            })
            .collect();
        let mut faces = heapless::Vec::<Face, MAX_FACES>::new();
        detect::decode(&letterbox, &per_stride, &self.config, &mut faces)?;
        Ok(faces.to_vec())
    }

    /// Runs the model on a prepared input (`3 × height × width`, B G R,
    /// 0-255) and returns every output, flattened, in the model's order.
    pub fn run(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, DetectorError> {
        let tensor =
            tract_ndarray::Array4::from_shape_vec((1, 3, self.height, self.width), input.to_vec())
                .map_err(|e| DetectorError::Run(e.to_string()))?;
        let out = self
            .plan
            .run(tvec!(Tensor::from(tensor).into()))
            .map_err(|e| DetectorError::Run(format!("{e:#}")))?;
        out.iter()
            .map(|t| {
                t.to_plain_array_view::<f32>()
                    .map(|v| v.iter().copied().collect())
                    .map_err(|e| DetectorError::Run(e.to_string()))
            })
            .collect()
    }
}
