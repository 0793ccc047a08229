//! The face path of a camera frame: detect, pick the face, check its size,
//! align it (when the model's recipe asks for it), embed it.

use fewshot_core::Frame;

use crate::detect::{DetectorError, FaceDetector};
use crate::encoder::{EncoderError, OnnxEncoder};

/// The smallest eye distance, in frame pixels, of a face the door accepts by default.
pub const DEFAULT_MIN_EYE_PX: f32 = 16.0;

pub use fewshot_door::sight::Sight;

/// Errors of the face path.
#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    /// Detection failed.
    #[error(transparent)]
    Detect(#[from] DetectorError),
    /// Preprocessing or embedding failed.
    #[error(transparent)]
    Encode(#[from] EncoderError),
}

/// An encoder with a face detector in front of it.
pub struct FacePipeline {
    /// The face detector.
    pub detector: FaceDetector,
    /// The encoder.
    pub encoder: OnnxEncoder,
    /// Faces whose eyes are closer than this (frame pixels) are refused.
    pub min_eye_px: f32,
}

impl FacePipeline {
    /// A pipeline with the default smallest eye distance.
    pub fn new(detector: FaceDetector, encoder: OnnxEncoder) -> Self {
        FacePipeline {
            detector,
            encoder,
            min_eye_px: DEFAULT_MIN_EYE_PX,
        }
    }

    /// Finds the face in `frame` ([`FaceDetector::find_face`]: the
    /// largest, detected again around itself) and embeds it aligned by its
    /// landmarks (the model's recipe decides whether it aligns or crops as
    /// before).
    pub fn look(&self, frame: &Frame<'_>) -> Result<Sight, FaceError> {
        let (_, found) = self.detector.find_face(frame)?;
        let Some(face) = found else {
            return Ok(Sight::NoFace);
        };
        let eye_px = face.eye_distance();
        if eye_px.is_nan() || eye_px < self.min_eye_px {
            return Ok(Sight::TooSmall {
                face,
                eye_px,
                min_eye_px: self.min_eye_px,
            });
        }
        let embedding = self.encoder.embed_face(frame, &face.landmarks)?;
        Ok(Sight::Face {
            embedding,
            face: Some(face),
        })
    }
}

/// The encoder a door runs: the model alone, or a face detector in front of it.
pub enum DoorEncoder {
    /// The model on the whole frame (its recipe crops).
    Plain(Box<OnnxEncoder>),
    /// Detection and alignment, then the model.
    Face(Box<FacePipeline>),
}

/// The door binaries' face options.
#[derive(Debug, Clone, clap::Args)]
pub struct FaceArgs {
    /// YuNet face detector (.onnx) run on every frame before the encoder;
    /// the largest face is taken. A model that aligns faces uses
    /// <data>/models/yunet_s_dynamic.onnx when this is not given.
    #[arg(long)]
    pub detector: Option<std::path::PathBuf>,
    /// The detector's input sizes, SCAN,RESCAN,REFINE,AGAIN (RESCAN and
    /// AGAIN may be none): the whole frame is scanned at SCAN, again at
    /// RESCAN when no face is found, then the largest face's surroundings at
    /// REFINE, and around what that found at AGAIN (landmarks averaged).
    /// Only for a detector with a dynamic input; default
    /// 160x128,320x256,128x128,96x96. The host's face commands detect at the
    /// default: other sizes give other crops than the model trained on.
    #[arg(long, value_name = "SCAN,RESCAN,REFINE,AGAIN")]
    pub detector_input: Option<crate::detect::InputSizes>,
    /// Faces whose eyes are closer than this many frame pixels are refused.
    #[arg(long, default_value_t = DEFAULT_MIN_EYE_PX)]
    pub min_eye_px: f32,
}

impl DoorEncoder {
    /// Loads `model`, and the detector when `args` names one or the model
    /// aligns faces (then from `data`'s `models/` unless named).
    pub fn load(
        model: &std::path::Path,
        args: &FaceArgs,
        data: &std::path::Path,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let encoder = OnnxEncoder::load(model).context("loading the model")?;
        let detector = match &args.detector {
            Some(path) => Some(path.clone()),
            None if encoder.recipe().needs_landmarks() => {
                Some(data.join(crate::detect::DEFAULT_DETECTOR))
            }
            None => None,
        };
        let Some(path) = detector else {
            return Ok(DoorEncoder::Plain(Box::new(encoder)));
        };
        if !(args.min_eye_px.is_finite() && args.min_eye_px >= 0.0) {
            anyhow::bail!(
                "--min-eye-px {}: expected a number of pixels, 0 or more",
                args.min_eye_px
            );
        }
        let detector =
            FaceDetector::load(&path, args.detector_input).context("loading the face detector")?;
        let mut pipeline = FacePipeline::new(detector, encoder);
        pipeline.min_eye_px = args.min_eye_px;
        Ok(DoorEncoder::Face(Box::new(pipeline)))
    }

    /// The model.
    pub fn model(&self) -> &OnnxEncoder {
        match self {
            DoorEncoder::Plain(e) => e,
            DoorEncoder::Face(p) => &p.encoder,
        }
    }
}
