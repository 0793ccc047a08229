//! An int8 inference engine for the project's encoders, `no_std` and without
//! an allocator: the model is a [`blob`] read in place, activations live in a
//! caller-provided [`Arena`] whose size the model states.
//!
//! The arithmetic is that of ONNX's `QuantizeLinear`, `QLinearConv` (u8
//! activations, i8 weights with one scale per output channel, i32 bias and
//! accumulation), `MaxPool` and `DequantizeLinear`, with the requantisation in
//! fixed point ([`ops::Requant`]): a blob converted to that ONNX graph runs in
//! tract to within one quantization step of this engine (`fewshot export
//! --mcu` and the host's tests check it).

pub mod blob;
mod dsp;
pub mod ops;

use crate::error::{BlobError, EngineError};
use blob::{ConvLayer, Header, Output, MAX_LAYERS};

/// A decoded model blob, ready to run.
pub struct Model<'a> {
    header: Header,
    layers: heapless::Vec<ConvLayer<'a>, MAX_LAYERS>,
    output: Output<'a>,
}

impl core::fmt::Debug for Model<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Model")
            .field("header", &self.header)
            .field("layers", &self.layers.len())
            .finish()
    }
}

/// The working memory of one [`Model::embed`]: `arena_bytes` bytes for two
/// activation buffers and `accumulator_words` i32 words for a layer's
/// accumulators, biases and requantisation.
pub struct Arena<'a> {
    bytes: &'a mut [u8],
    words: &'a mut [i32],
}

impl<'a> Arena<'a> {
    /// An arena over the caller's buffers (checked against a model when used).
    pub fn new(bytes: &'a mut [u8], words: &'a mut [i32]) -> Arena<'a> {
        Arena { bytes, words }
    }
}

impl<'a> Model<'a> {
    /// Decodes `bytes` (every field checked; see [`blob`]).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Model<'a>, BlobError> {
        let d = blob::decode(bytes)?;
        Ok(Model {
            header: d.header,
            layers: d.layers,
            output: d.output,
        })
    }

    /// What the blob says about itself.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The convolution layers.
    pub fn layers(&self) -> &[ConvLayer<'a>] {
        &self.layers
    }

    /// The output stage.
    pub fn output(&self) -> &Output<'a> {
        &self.output
    }

    /// Values of the input (`channels × height × width` of the recipe).
    pub fn input_len(&self) -> usize {
        self.header.recipe.len()
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.header.embedding
    }

    /// Runs the layers on `input` (the recipe's preprocessed f32 tensor) and
    /// returns the last layer's u8 activations (in `arena`) and their
    /// quantization.
    pub fn features<'b>(
        &self,
        input: &[f32],
        arena: &'b mut Arena<'_>,
    ) -> Result<(&'b [u8], blob::Affine), EngineError> {
        if input.len() != self.input_len() {
            return Err(EngineError::InputLen {
                expected: self.input_len(),
                found: input.len(),
            });
        }
        if arena.bytes.len() < self.header.arena_bytes
            || arena.words.len() < self.header.accumulator_words
        {
            return Err(EngineError::ArenaTooSmall {
                bytes: self.header.arena_bytes,
                words: self.header.accumulator_words,
            });
        }
        let half = self.header.arena_bytes / 2;
        let (mut a, mut b) = arena.bytes[..2 * half].split_at_mut(half);
        let input_q = self.header.input;
        let r = self.header.recipe;
        let (mut c, mut h, mut w) = (r.channels, r.height, r.width);
        ops::quantize_channel_last(
            input,
            (c, h, w),
            input_q.scale,
            input_q.zero_point,
            &mut a[..input.len()],
        );
        let mut in_q = input_q;
        for layer in &self.layers {
            let q = ops::Requantize {
                bias: layer.bias,
                weight_scale: layer.weight_scale,
                in_scale: in_q.scale,
                out_scale: layer.out.scale,
                out_zero: layer.out.zero_point,
                relu: layer.relu,
                pool: layer.pool,
            };
            let len = c * h * w;
            (c, h, w) = layer.out_dims();
            ops::conv(
                &layer.shape,
                &a[..len],
                in_q.zero_point,
                layer.weight,
                &q,
                arena.words,
                &mut b[..c * h * w],
            );
            in_q = layer.out;
            core::mem::swap(&mut a, &mut b);
        }
        // The output stage reads channel first, as ONNX's Flatten does.
        let len = c * h * w;
        ops::to_channel_first(&a[..len], (c, h, w), &mut b[..len]);
        Ok((&b[..len], in_q))
    }

    /// The embedding of `input` (the recipe's preprocessed f32 tensor) into
    /// `out` ([`Model::dim`] values).
    pub fn embed(
        &self,
        input: &[f32],
        arena: &mut Arena<'_>,
        out: &mut [f32],
    ) -> Result<(), EngineError> {
        if out.len() != self.dim() {
            return Err(EngineError::OutputLen {
                expected: self.dim(),
                found: out.len(),
            });
        }
        let (x, q) = self.features(input, arena)?;
        match self.output {
            Output::Flatten => ops::dequantize(x, q.zero_point, q.scale, out),
            Output::Linear {
                weight_scale,
                bias,
                weight,
                ..
            } => ops::linear(x, q.zero_point, q.scale, weight, weight_scale, bias, out),
        }
        Ok(())
    }
}
