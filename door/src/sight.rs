//! What the camera saw in a frame: an embedded face, no face, or a face too
//! small to recognise.

use alloc::vec::Vec;

use fewshot_core::detect::Face;

/// What the camera saw in a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Sight {
    /// A face (or, without a detector, the whole frame), embedded.
    Face {
        /// Its embedding.
        embedding: Vec<f32>,
        /// The detected face, when a detector found it.
        face: Option<Face>,
    },
    /// The detector found no face.
    NoFace,
    /// The largest face is too small to recognise.
    TooSmall {
        /// The face.
        face: Face,
        /// Its eye distance, in pixels.
        eye_px: f32,
        /// The smallest accepted.
        min_eye_px: f32,
    },
}
