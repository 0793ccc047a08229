//! Encoders: images in, embeddings out.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{batch_norm, conv2d, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};

use super::pool::max_pool2x2;

/// What an encoder is built from; stored in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EncoderConfig {
    /// Four blocks of 3×3 convolution, batch norm, ReLU and 2×2 max pooling.
    Conv4 {
        /// Input channels (1 grey, 3 RGB).
        in_channels: usize,
        /// Channels of every block.
        hidden: usize,
        /// Input side in pixels (square inputs).
        input_size: usize,
    },
}

impl EncoderConfig {
    /// Embedding size for this configuration.
    pub fn dim(&self) -> usize {
        match *self {
            EncoderConfig::Conv4 {
                hidden, input_size, ..
            } => {
                let side = (0..4).fold(input_size, |s, _| s / 2);
                hidden * side * side
            }
        }
    }

    /// Builds the encoder with variables from `vb`.
    pub fn build(&self, vb: VarBuilder) -> Result<Box<dyn Encoder>> {
        match *self {
            EncoderConfig::Conv4 {
                in_channels,
                hidden,
                input_size,
            } => {
                if input_size < 16 {
                    candle_core::bail!(
                        "Conv-4 needs inputs of at least 16×16 pixels, got {input_size}"
                    );
                }
                Ok(Box::new(Conv4::new(in_channels, hidden, vb)?))
            }
        }
    }
}

/// An encoder: `(batch, channels, height, width)` in, `(batch, dim)` out.
pub trait Encoder: Send + Sync {
    /// Embeds a batch; `train` selects batch statistics (and updates the running ones).
    fn embed(&self, x: &Tensor, train: bool) -> Result<Tensor>;
}

/// One conv block: 3×3 convolution (padding 1), batch norm, ReLU, 2×2 max pooling.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBlock {
    /// A block from `in_c` to `out_c` channels.
    pub fn new(in_c: usize, out_c: usize, vb: VarBuilder) -> Result<Self> {
        let conv = conv2d(
            in_c,
            out_c,
            3,
            Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
            vb.pp("conv"),
        )?;
        let bn = batch_norm(
            out_c,
            BatchNormConfig {
                eps: 1e-5,
                remove_mean: true,
                affine: true,
                momentum: 0.1,
            },
            vb.pp("bn"),
        )?;
        Ok(ConvBlock { conv, bn })
    }

    /// Runs the block.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.conv.forward(x)?;
        let x = self.bn.forward_t(&x, train)?;
        max_pool2x2(&x.relu()?)
    }
}

/// The Conv-4 encoder of the few-shot literature.
#[derive(Debug, Clone)]
pub struct Conv4 {
    blocks: Vec<ConvBlock>,
}

impl Conv4 {
    /// Four blocks of `hidden` channels from `in_channels` input channels.
    pub fn new(in_channels: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        let blocks = (0..4)
            .map(|i| {
                ConvBlock::new(
                    if i == 0 { in_channels } else { hidden },
                    hidden,
                    vb.pp(format!("block{i}")),
                )
            })
            .collect::<Result<_>>()?;
        Ok(Conv4 { blocks })
    }
}

impl Encoder for Conv4 {
    fn embed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        x.flatten_from(1)
    }
}
