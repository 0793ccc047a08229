//! The door loop ([`fewshot_door::door`], re-exported here) with this crate's
//! encoders behind its [`Encoder`] trait: tract's ([`OnnxEncoder`]), the face
//! path ([`FacePipeline`]) and either ([`DoorEncoder`]); a Matching Network's
//! context embeddings ([`crate::matching::Fce`]) behind [`FullContext`].

use fewshot_core::Frame;

pub use fewshot_door::door::*;

use crate::encoder::{EncoderError, OnnxEncoder};
use crate::face::{DoorEncoder, FacePipeline, Sight};
use crate::matching::Fce;

impl Encoder for OnnxEncoder {
    type Error = EncoderError;

    fn dim(&self) -> usize {
        OnnxEncoder::dim(self)
    }

    fn embed_frame(&mut self, frame: &Frame<'_>) -> Result<Vec<f32>, EncoderError> {
        OnnxEncoder::embed_frame(self, frame)
    }

    fn fce(&self) -> Option<&dyn FullContext> {
        OnnxEncoder::fce(self).map(|f| f as &dyn FullContext)
    }
}

impl Encoder for DoorEncoder {
    type Error = EncoderError;

    fn dim(&self) -> usize {
        self.model().dim()
    }

    fn embed_frame(&mut self, frame: &Frame<'_>) -> Result<Vec<f32>, EncoderError> {
        self.model().embed_frame(frame)
    }

    fn fce(&self) -> Option<&dyn FullContext> {
        self.model().fce().map(|f| f as &dyn FullContext)
    }

    fn look(&mut self, frame: &Frame<'_>) -> Result<Sight, String> {
        match self {
            DoorEncoder::Plain(e) => Encoder::look(e.as_mut(), frame),
            DoorEncoder::Face(p) => Encoder::look(p.as_mut(), frame),
        }
    }
}

impl Encoder for FacePipeline {
    type Error = EncoderError;

    fn dim(&self) -> usize {
        self.encoder.dim()
    }

    fn embed_frame(&mut self, frame: &Frame<'_>) -> Result<Vec<f32>, EncoderError> {
        self.encoder.embed_frame(frame)
    }

    fn fce(&self) -> Option<&dyn FullContext> {
        self.encoder.fce().map(|f| f as &dyn FullContext)
    }

    fn look(&mut self, frame: &Frame<'_>) -> Result<Sight, String> {
        FacePipeline::look(self, frame).map_err(|e| e.to_string())
    }
}

impl FullContext for Fce {
    fn context(&self, prototypes: &[f32]) -> Result<Vec<f32>, String> {
        Fce::context(self, prototypes).map_err(|e| e.to_string())
    }

    fn attend(&self, embedding: &[f32], context: &[f32]) -> Result<Vec<f32>, String> {
        Fce::attend(self, embedding, context).map_err(|e| e.to_string())
    }
}
