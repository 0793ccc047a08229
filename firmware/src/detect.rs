//! The YuNet face detector run by tract: a frame in, faces with boxes and
//! five landmarks out (decoding and suppression are the core's
//! [`fewshot_core::detect`]).

use std::path::{Path, PathBuf};

use fewshot_core::detect::{self, DetectConfig, Face, Letterbox, StrideOutputs};
use fewshot_core::Frame;
use prost::Message;
use tract_onnx::prelude::*;

/// The file name of the detector in the data folder's `models/`.
pub const DEFAULT_DETECTOR: &str = "models/yunet_s_dynamic.onnx";

/// At most this many faces are kept per frame (the best-scoring ones).
pub const MAX_FACES: usize = 32;

/// The second pass of [`FaceDetector::find_face`] looks again in a square
/// window this many times the face box's larger side, so the face fills
/// the same share of the detector's input whatever its size in the frame.
pub const REFINE_WINDOW: f32 = 2.0;

/// The IoU above which a candidate's landmarks count in a found face's
/// ([`DetectConfig::vote_iou`]): on 200 ORL photos pasted into 640×480
/// frames it took the landmarks' shift against the photo alone from 0.067
/// to 0.046 eye distances with one refine pass (`cargo run --release -p
/// fewshot-firmware --example off_centre`); 0.3 gave the same.
pub const VOTE_IOU: f32 = 0.5;

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

/// The detector's input sizes, each (width, height), multiples of 32:
/// `scan` for the whole frame, `rescan` for the whole frame again when the
/// scan finds no face (a larger input finds smaller faces), `refine` for
/// the second look around the face, `again` for a third look around what
/// the second found ([`FaceDetector::find_face`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSizes {
    /// The input the whole frame is fitted into first.
    pub scan: (usize, usize),
    /// The input it is fitted into when the scan finds no face.
    pub rescan: Option<(usize, usize)>,
    /// The input the window around a found face is fitted into.
    pub refine: (usize, usize),
    /// The input of the second refine pass, if any.
    pub again: Option<(usize, usize)>,
}

impl InputSizes {
    /// Every pass at one size, no rescan.
    pub fn same(size: (usize, usize)) -> Self {
        InputSizes {
            scan: size,
            rescan: None,
            refine: size,
            again: Some(size),
        }
    }

    /// Each size used, in the order scan, rescan, refine, again.
    pub fn all(&self) -> impl Iterator<Item = (usize, usize)> {
        [Some(self.scan), self.rescan, Some(self.refine), self.again]
            .into_iter()
            .flatten()
    }
}

/// The sizes a detector with a dynamic input runs at unless told otherwise,
/// chosen by measurement on 640×480 frames (README, "The face path"): the
/// 160×128 scan misses faces whose eyes are under about 50 px apart and
/// costs about a quarter of a 320×320 pass or less; the 320×256 rescan finds them; a
/// 128×128 refine moves the landmarks little more than 320×320 passes do; a
/// second refine pass at 96×96, centred on the first's face, averaged with
/// it, took the landmarks' shift between a photo and the photo pasted into a
/// scene from 0.046 to 0.031 eye distances (at 128×128: 0.028, for about 1 ms
/// more a frame; `cargo run --release -p fewshot-firmware --example off_centre`).
pub const DEFAULT_SIZES: InputSizes = InputSizes {
    scan: (160, 128),
    rescan: Some((320, 256)),
    refine: (128, 128),
    again: Some((96, 96)),
};

impl std::fmt::Display for InputSizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = |(w, h): (usize, usize)| format!("{w}x{h}");
        let rescan = self.rescan.map_or("none".to_string(), size);
        let again = self.again.map_or("none".to_string(), size);
        write!(
            f,
            "{},{},{},{}",
            size(self.scan),
            rescan,
            size(self.refine),
            again
        )
    }
}

impl std::str::FromStr for InputSizes {
    type Err = String;

    /// `SCAN,RESCAN,REFINE,AGAIN`, each `WIDTHxHEIGHT` (RESCAN and AGAIN may
    /// be `none`; AGAIN left out is none), e.g. `160x128,320x256,128x128,96x96`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("{text:?}: expected SCAN,RESCAN,REFINE[,AGAIN] as WxH,WxH,WxH,WxH (RESCAN and AGAIN may be none), multiples of 32, e.g. {DEFAULT_SIZES}")
        };
        let size = |part: &str| -> Result<(usize, usize), String> {
            let (w, h) = part.trim().split_once('x').ok_or_else(bad)?;
            let (w, h) = (w.parse::<usize>(), h.parse::<usize>());
            match (w, h) {
                (Ok(w), Ok(h)) if usable_size((w, h)) => Ok((w, h)),
                _ => Err(bad()),
            }
        };
        let optional = |part: &str| match part.trim() {
            "none" => Ok(None),
            p => size(p).map(Some),
        };
        let parts: Vec<&str> = text.split(',').collect();
        let (scan, rescan, refine, again) = match parts[..] {
            [scan, rescan, refine] => (scan, rescan, refine, "none"),
            [scan, rescan, refine, again] => (scan, rescan, refine, again),
            _ => return Err(bad()),
        };
        Ok(InputSizes {
            scan: size(scan)?,
            rescan: optional(rescan)?,
            refine: size(refine)?,
            again: optional(again)?,
        })
    }
}

/// Whether YuNet can take an input of `(width, height)`: both positive
/// multiples of its largest stride, 32.
fn usable_size((width, height): (usize, usize)) -> bool {
    width > 0 && height > 0 && width % 32 == 0 && height % 32 == 0
}

/// The input's (width, height) when the file fixes it, `None` when dynamic.
fn fixed_input_size(graph: &tract_onnx::pb::GraphProto) -> Option<(usize, usize)> {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value as Dim, type_proto::Value};
    let shape = match &graph.input.first()?.r#type.as_ref()?.value {
        Some(Value::TensorType(t)) => t.shape.as_ref()?,
        _ => return None,
    };
    let dims: Vec<Option<i64>> = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Dim::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect();
    match dims[..] {
        [_, _, Some(h), Some(w)] if h > 0 && w > 0 => Some((w as usize, h as usize)),
        _ => None,
    }
}

/// The model optimised for one input size.
struct Plan {
    plan: std::sync::Arc<TypedRunnableModel>,
    width: usize,
    height: usize,
}

/// A loaded YuNet detector, optimised for each of its input sizes.
pub struct FaceDetector {
    /// One plan per distinct size.
    plans: Vec<Plan>,
    sizes: InputSizes,
    /// For each group and stride, the index of that output in the plan.
    order: [[usize; 3]; 4],
    config: DetectConfig,
    path: PathBuf,
}

impl FaceDetector {
    /// Loads `path`. A model with a fixed input (`yunet_s_320_320.onnx`) runs
    /// every pass at its size, without a rescan; one with a dynamic input
    /// (`yunet_s_dynamic.onnx`) at `sizes`, [`DEFAULT_SIZES`] when not given.
    pub fn load(path: &Path, sizes: Option<InputSizes>) -> Result<Self, DetectorError> {
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
        let fixed = fixed_input_size(graph);
        let sizes = match (fixed, sizes) {
            (Some(fixed), Some(asked)) if asked.all().any(|s| s != fixed) => {
                return Err(err(format!(
                    "its input is fixed at {}x{}, not {asked}",
                    fixed.0, fixed.1
                )))
            }
            (Some(fixed), _) => InputSizes::same(fixed),
            (None, asked) => asked.unwrap_or(DEFAULT_SIZES),
        };
        if let Some((width, height)) = sizes.all().find(|&s| !usable_size(s)) {
            return Err(err(format!(
                "input {width}x{height}: width and height must be positive multiples of 32"
            )));
        }
        // Intermediate and output shapes (`value_info`) in the dynamic file
        // carry a symbolic batch that tract cannot unify with the concrete
        // input: drop them and let tract infer every shape from the input.
        let mut proto = proto;
        if let Some(graph) = proto.graph.as_mut() {
            graph.value_info.clear();
            for output in &mut graph.output {
                output.r#type = None;
            }
        }
        let plan = |(width, height): (usize, usize)| {
            tract_onnx::onnx()
                .model_for_proto_model(&proto)
                .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, height, width]).into()))
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .map(|plan| Plan {
                    plan,
                    width,
                    height,
                })
                .map_err(|e| err(format!("{e:#}")))
        };
        let mut plans: Vec<Plan> = Vec::new();
        for size in sizes.all() {
            if !plans.iter().any(|p| (p.width, p.height) == size) {
                plans.push(plan(size)?);
            }
        }
        Ok(FaceDetector {
            plans,
            sizes,
            order,
            config: DetectConfig {
                vote_iou: Some(VOTE_IOU),
                ..DetectConfig::default()
            },
            path: path.to_path_buf(),
        })
    }

    /// The plan for an input of `size`.
    fn plan(&self, size: (usize, usize)) -> Option<&Plan> {
        self.plans.iter().find(|p| (p.width, p.height) == size)
    }

    /// The input sizes of the passes.
    pub fn input_sizes(&self) -> InputSizes {
        self.sizes
    }

    /// The decoding settings.
    pub fn config(&self) -> DetectConfig {
        self.config
    }

    /// Sets the decoding settings.
    pub fn set_config(&mut self, config: DetectConfig) {
        self.config = config;
    }

    /// The settings that decide what [`FaceDetector::find_face`] finds,
    /// besides the model file, as text (for caches of its results).
    pub fn settings(&self) -> String {
        let c = self.config;
        format!(
            "{} score {} nms {} vote {:?} refine window {REFINE_WINDOW}",
            self.sizes, c.score_threshold, c.nms_iou, c.vote_iou
        )
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The faces in `frame`, best score first (at most [`MAX_FACES`]): the
    /// scan's, or when it finds none, the rescan's.
    pub fn detect(&self, frame: &Frame<'_>) -> Result<Vec<Face>, DetectorError> {
        let whole = |(width, height)| Letterbox::fit(frame.width, frame.height, width, height);
        let faces = self.detect_in(frame, &whole(self.sizes.scan))?;
        match self.sizes.rescan {
            Some(size) if faces.is_empty() => self.detect_in(frame, &whole(size)),
            _ => Ok(faces),
        }
    }

    /// The face to recognise in `frame`, and how many faces it holds: the
    /// largest face, found again in a window around it
    /// ([`REFINE_WINDOW`]): one pass's landmarks move with the face's size
    /// in the detector's input (by up to a quarter of the eye distance,
    /// measured on ORL photos pasted into 640×480 frames at different
    /// sizes), the refine pass sees every face at about the same size. The
    /// second refine pass ([`InputSizes::again`]) centres its window on the
    /// first's face, and the landmarks are the mean of the two passes' (each
    /// sees the face at another offset from the detector's cell grid, and its
    /// landmarks err differently). A pass that loses the face ends the
    /// refining; when the first does, the scan's face is kept.
    pub fn find_face(&self, frame: &Frame<'_>) -> Result<(usize, Option<Face>), DetectorError> {
        let faces = self.detect(frame)?;
        let Some(first) = detect::largest(&faces).copied() else {
            return Ok((0, None));
        };
        let mut around = first;
        let mut sum = [[0.0f32; 2]; 5];
        let mut passes = 0;
        for (width, height) in [Some(self.sizes.refine), self.sizes.again]
            .into_iter()
            .flatten()
        {
            let side = REFINE_WINDOW * around.bbox[2].max(around.bbox[3]);
            let [cx, cy] = around.centre();
            let window = [cx - side / 2.0, cy - side / 2.0, side, side];
            let letterbox = Letterbox::fit_region(window, width, height);
            let found = self
                .detect_in(frame, &letterbox)?
                .into_iter()
                .filter(|f| f.iou(&around) > 0.3)
                .min_by(|a, b| {
                    let d = |f: &Face| {
                        let [x, y] = f.centre();
                        (x - cx).hypot(y - cy)
                    };
                    d(a).total_cmp(&d(b))
                });
            let Some(found) = found else { break };
            for (s, p) in sum.iter_mut().zip(&found.landmarks) {
                s[0] += p[0];
                s[1] += p[1];
            }
            passes += 1;
            around = found;
        }
        if passes > 1 {
            let n = passes as f32;
            around.landmarks = sum.map(|[x, y]| [x / n, y / n]);
        }
        Ok((faces.len(), Some(around)))
    }

    /// The faces in the part of `frame` that `letterbox` fits into the input.
    pub fn detect_in(
        &self,
        frame: &Frame<'_>,
        letterbox: &Letterbox,
    ) -> Result<Vec<Face>, DetectorError> {
        let letterbox = *letterbox;
        let plan = self
            .plan((letterbox.width, letterbox.height))
            .ok_or_else(|| {
                DetectorError::Run(format!(
                    "a letterbox for {}x{}, the detector takes {}",
                    letterbox.width,
                    letterbox.height,
                    self.sizes_text()
                ))
            })?;
        // The letterbox is written straight into tract's input tensor, and
        // the outputs are read where tract left them: no copies.
        let run_err = |e: TractError| DetectorError::Run(format!("{e:#}"));
        let mut input = Tensor::zero::<f32>(&[1, 3, plan.height, plan.width]).map_err(run_err)?;
        {
            let mut view = input.try_as_plain_ram_mut().map_err(run_err)?;
            letterbox.fill(frame, view.as_slice_mut::<f32>().map_err(run_err)?)?;
        }
        let outputs = plan.run_tensor(input)?;
        let output = |group: usize, s: usize| -> Result<&[f32], DetectorError> {
            outputs
                .get(self.order[group][s])
                .ok_or_else(|| DetectorError::Run("fewer outputs than the file names".into()))?
                .try_as_plain_ram()
                .and_then(|view| view.as_slice::<f32>())
                .map_err(run_err)
        };
        let per_stride = STRIDES
            .iter()
            .enumerate()
            .map(|(s, &stride)| {
                Ok(StrideOutputs {
                    stride,
                    cls: output(0, s)?,
                    obj: output(1, s)?,
                    bbox: output(2, s)?,
                    kps: output(3, s)?,
                })
            })
            .collect::<Result<Vec<_>, DetectorError>>()?;
        let mut faces = heapless::Vec::<Face, MAX_FACES>::new();
        detect::decode(&letterbox, &per_stride, &self.config, &mut faces)?;
        Ok(faces.to_vec())
    }

    /// Runs the model on a prepared input (`3 × height × width`, B G R,
    /// 0-255) at the first of its sizes (scan, rescan, refine) with that
    /// many values, and returns every output, flattened, in the model's order.
    pub fn run(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, DetectorError> {
        self.sizes
            .all()
            .find(|(w, h)| 3 * w * h == input.len())
            .and_then(|size| self.plan(size))
            .ok_or_else(|| {
                DetectorError::Run(format!(
                    "an input of {} values, the detector takes 3 x {}",
                    input.len(),
                    self.sizes_text()
                ))
            })?
            .run(input)
    }

    fn sizes_text(&self) -> String {
        let sizes: Vec<String> = self
            .plans
            .iter()
            .map(|p| format!("{}x{}", p.width, p.height))
            .collect();
        sizes.join(" or ")
    }
}

impl Plan {
    fn run_tensor(&self, input: Tensor) -> Result<TVec<TValue>, DetectorError> {
        self.plan
            .run(tvec!(input.into()))
            .map_err(|e| DetectorError::Run(format!("{e:#}")))
    }

    fn run(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, DetectorError> {
        let tensor =
            tract_ndarray::Array4::from_shape_vec((1, 3, self.height, self.width), input.to_vec())
                .map_err(|e| DetectorError::Run(e.to_string()))?;
        let out = self.run_tensor(Tensor::from(tensor))?;
        out.iter()
            .map(|t| {
                t.to_plain_array_view::<f32>()
                    .map(|v| v.iter().copied().collect())
                    .map_err(|e| DetectorError::Run(e.to_string()))
            })
            .collect()
    }
}
