//! The `no_std` few-shot core shared by the trainer and the device.
//!
//! Everything here works on fixed buffers with no allocator: distances between
//! embeddings, class prototypes, nearest-prototype classification with an
//! open-set ("unknown person") decision, int8 embedding storage, a
//! fixed-capacity [`Gallery`] of enrolled identities and its checksummed
//! stored form, and the fine-tuning of a cosine classifier over fixed
//! embeddings ([`finetune`]), and an int8 inference [`engine`] that runs an
//! encoder from a checksummed model blob in a caller-provided arena.
#![no_std]
// Unsafe code only for the DSP extension's instructions (feature `dsp`).
#![cfg_attr(not(feature = "dsp"), forbid(unsafe_code))]
#![cfg_attr(feature = "dsp", deny(unsafe_code))]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod align;
pub mod classify;
pub mod detect;
pub mod distance;
pub mod engine;
pub mod error;
pub mod finetune;
pub mod gallery;
pub mod model_meta;
pub mod openset;
pub mod preprocess;
pub mod prototype;
pub mod quant;
pub mod slots;
pub mod store;

pub use align::{FaceTemplate, Landmarks, Similarity};
pub use classify::{nearest, softmax_neg_distances, Nearest};
pub use detect::{DetectConfig, Face, Letterbox};
pub use distance::Distance;
pub use error::{
    BlobError, CoreError, DetectError, EngineError, GalleryError, PreprocessError, StoreError,
};
pub use finetune::CosineClassifier;
#[cfg(feature = "alloc")]
pub use gallery::HeapGallery;
pub use gallery::{Gallery, GalleryIn, Identity, Match, Name, NAME_CAP};
pub use openset::{Decision, GalleryThresholds, GalleryThresholdsError, OpenSet};
pub use preprocess::{Crop, Frame, PixelFormat, Recipe, Resize};
