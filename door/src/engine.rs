//! The core's int8 engine as the door's encoder: a model blob
//! (`fewshot export --mcu`) decoded once, its arena allocated once, each frame
//! preprocessed by the blob's recipe and embedded without tract.

use alloc::vec;
use alloc::vec::Vec;

use fewshot_core::engine::{Arena, Model};
use fewshot_core::{BlobError, EngineError, Frame, PreprocessError};

use crate::door::Encoder;

/// Errors of embedding a frame with the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineEncoderError {
    /// The frame does not fit the blob's recipe.
    #[error("preprocessing: {0}")]
    Preprocess(#[from] PreprocessError),
    /// The engine refused the input or its arena.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
}

/// A model blob run by the core's int8 engine (see the module documentation).
#[derive(Debug)]
pub struct EngineEncoder<'a> {
    model: Model<'a>,
    bytes: Vec<u8>,
    words: Vec<i32>,
    input: Vec<f32>,
}

impl<'a> EngineEncoder<'a> {
    /// Decodes `blob` (every field checked) and allocates the arena it states.
    pub fn new(blob: &'a [u8]) -> Result<Self, BlobError> {
        let model = Model::from_bytes(blob)?;
        let h = model.header();
        Ok(EngineEncoder {
            bytes: vec![0; h.arena_bytes],
            words: vec![0; h.accumulator_words],
            input: vec![0.0; model.input_len()],
            model,
        })
    }

    /// The decoded blob (its header carries the recipe, distance and thresholds).
    pub fn model(&self) -> &Model<'a> {
        &self.model
    }

    /// The embedding of an input already preprocessed by the blob's recipe.
    pub fn embed(&mut self, input: &[f32]) -> Result<Vec<f32>, EngineError> {
        let mut out = vec![0.0; self.model.dim()];
        let mut arena = Arena::new(&mut self.bytes, &mut self.words);
        self.model.embed(input, &mut arena, &mut out)?;
        Ok(out)
    }
}

impl Encoder for EngineEncoder<'_> {
    type Error = EngineEncoderError;

    fn dim(&self) -> usize {
        self.model.dim()
    }

    fn embed_frame(&mut self, frame: &Frame<'_>) -> Result<Vec<f32>, EngineEncoderError> {
        let mut input = core::mem::take(&mut self.input);
        let out = match self.model.header().recipe.apply(frame, &mut input) {
            Ok(()) => self.embed(&input).map_err(Into::into),
            Err(e) => Err(e.into()),
        };
        self.input = input;
        out
    }
}
