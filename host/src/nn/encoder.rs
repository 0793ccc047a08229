//! Encoders: images in, embeddings out.

use candle_core::{Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use super::block::ConvBnReluPool;
use super::conv::Conv2dOp;
use super::ops::{BatchNormTrain, BnReluPool, MaxPool2x2};

/// What an encoder is built from; stored in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EncoderConfig {
    /// Four blocks of 3×3 convolution, batch norm, ReLU and 2×2 max pooling.
    Conv4 {
        /// Input channels (1 grey, 3 RGB).
        in_channels: usize,
        /// Channels of every block (unless `widths` says otherwise).
        hidden: usize,
        /// Channels of each block, when they differ (e.g. wider late blocks,
        /// where the maps are small); none: `hidden` for all four.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        widths: Option<[usize; 4]>,
        /// 3×3 convolutions (each with batch norm and ReLU) in each block, the
        /// last one pooled; none: one per block (the Conv-4 of the literature).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        depths: Option<[usize; 4]>,
        /// Input side in pixels (square inputs).
        input_size: usize,
        /// A linear embedding of this size on the flattened features (for
        /// distillation to a teacher's embedding size); none: the features.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        embedding: Option<usize>,
    },
    /// A MobileFaceNet-style network of depthwise-separable bottlenecks
    /// ([`super::mobile`]), always ending in a linear embedding.
    Mobile {
        /// Input channels (1 grey, 3 RGB).
        in_channels: usize,
        /// Channels of the stem; the stages scale with it (64: MobileFaceNet's widths).
        width: usize,
        /// Input side in pixels (square inputs, a multiple of 16).
        input_size: usize,
        /// Embedding size.
        embedding: usize,
    },
}

impl EncoderConfig {
    /// Embedding size for this configuration.
    pub fn dim(&self) -> usize {
        match *self {
            EncoderConfig::Conv4 { embedding, .. } => embedding.unwrap_or(self.features()),
            EncoderConfig::Mobile { embedding, .. } => embedding,
        }
    }

    /// Input channels and side.
    pub fn input(&self) -> (usize, usize) {
        match *self {
            EncoderConfig::Conv4 {
                in_channels,
                input_size,
                ..
            }
            | EncoderConfig::Mobile {
                in_channels,
                input_size,
                ..
            } => (in_channels, input_size),
        }
    }

    /// Gives the encoder a linear embedding of `dim` (a teacher's size).
    pub fn set_embedding(&mut self, dim: usize) {
        match self {
            EncoderConfig::Conv4 { embedding, .. } => *embedding = Some(dim),
            EncoderConfig::Mobile { embedding, .. } => *embedding = dim,
        }
    }

    /// Channels of Conv-4's four blocks (none for other encoders).
    pub fn block_widths(&self) -> Option<[usize; 4]> {
        match *self {
            EncoderConfig::Conv4 { hidden, widths, .. } => Some(widths.unwrap_or([hidden; 4])),
            EncoderConfig::Mobile { .. } => None,
        }
    }

    /// Convolutions in each of Conv-4's four blocks (none for other encoders).
    pub fn block_depths(&self) -> Option<[usize; 4]> {
        match *self {
            EncoderConfig::Conv4 { depths, .. } => Some(depths.unwrap_or([1; 4])),
            EncoderConfig::Mobile { .. } => None,
        }
    }

    /// Size of the flattened convolutional features (before any linear embedding).
    pub fn features(&self) -> usize {
        match *self {
            EncoderConfig::Conv4 {
                hidden,
                widths,
                input_size,
                ..
            } => {
                let side = (0..4).fold(input_size, |s, _| s / 2);
                widths.unwrap_or([hidden; 4])[3] * side * side
            }
            EncoderConfig::Mobile { width, .. } => super::mobile::widen(width).cout,
        }
    }

    /// Builds the encoder with variables from `vb`.
    pub fn build(&self, vb: VarBuilder) -> Result<Box<dyn Encoder>> {
        match *self {
            EncoderConfig::Conv4 {
                in_channels,
                hidden,
                widths,
                depths,
                input_size,
                embedding,
            } => {
                if input_size < 16 {
                    candle_core::bail!(
                        "Conv-4 needs inputs of at least 16×16 pixels, got {input_size}"
                    );
                }
                let widths = widths.unwrap_or([hidden; 4]);
                if widths.contains(&0) {
                    candle_core::bail!(
                        "every Conv-4 block needs at least one channel, got {widths:?}"
                    );
                }
                let depths = depths.unwrap_or([1; 4]);
                if depths.contains(&0) {
                    candle_core::bail!(
                        "every Conv-4 block needs at least one convolution, got depths {depths:?}"
                    );
                }
                let mut conv4 = Conv4::with_shape(in_channels, widths, depths, vb.clone())?;
                if let Some(dim) = embedding {
                    if dim == 0 {
                        candle_core::bail!("the linear embedding needs at least one dimension");
                    }
                    conv4.embed = Some(candle_nn::linear(self.features(), dim, vb.pp("embed"))?);
                }
                Ok(Box::new(conv4))
            }
            EncoderConfig::Mobile {
                in_channels,
                width,
                input_size,
                embedding,
            } => Ok(Box::new(super::mobile::MobileFace::new(
                in_channels,
                width,
                input_size,
                embedding,
                vb,
            )?)),
        }
    }
}

/// An encoder: `(batch, channels, height, width)` in, `(batch, dim)` out.
pub trait Encoder: Send + Sync {
    /// Embeds a batch; `train` selects batch statistics (and updates the running ones).
    fn embed(&self, x: &Tensor, train: bool) -> Result<Tensor>;
}

/// Batch norm over the channels of `(N, C, H, W)`, with the fused kernels of
/// [`super::ops`] in training mode. Its variables are named as PyTorch's and
/// candle's (`weight`, `bias`, `running_mean`, `running_var`).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    /// Batch norm of `channels` channels (eps 1e-5, momentum 0.1, as PyTorch).
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let running_mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?;
        let running_var = vb.get_with_hints(channels, "running_var", Init::Const(1.0))?;
        Ok(BatchNorm2d {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Updates the running statistics from a batch's mean and biased variance
    /// over `m` values per channel (PyTorch's rule: unbiased variance, momentum).
    pub(crate) fn update_running(&self, mean: Tensor, var: Tensor, m: f64) -> Result<()> {
        let unbiased = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
        let keep = 1.0 - self.momentum;
        let rm = ((self.running_mean.as_detached_tensor() * keep)? + (mean * self.momentum)?)?;
        let rv = ((self.running_var.as_detached_tensor() * keep)?
            + (var * (self.momentum * unbiased))?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }

    /// Scale (`weight`), shift (`bias`) and epsilon, for fused ops.
    pub(crate) fn affine(&self) -> (&Tensor, &Tensor, f64) {
        (&self.weight, &self.bias, self.eps)
    }

    /// Batch norm, ReLU and 2×2 max pooling; in training mode one fused op.
    pub fn forward_relu_pool(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if !train {
            return self.forward_t(x, false)?.relu()?.apply_op1(MaxPool2x2);
        }
        let pooled = n * c * (h / 2) * (w / 2);
        let packed =
            x.contiguous()?
                .apply_op3(&self.weight, &self.bias, BnReluPool { eps: self.eps })?;
        let mean = packed.narrow(0, pooled, c)?.detach();
        let var = packed.narrow(0, pooled + c, c)?.detach();
        self.update_running(mean, var, (n * h * w) as f64)?;
        packed.narrow(0, 0, pooled)?.reshape((n, c, h / 2, w / 2))
    }

    /// Normalises by batch statistics (and updates the running ones) when
    /// `train`, else by the running statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if train {
            let len = n * c * h * w;
            let packed = x.contiguous()?.apply_op3(
                &self.weight,
                &self.bias,
                BatchNormTrain { eps: self.eps },
            )?;
            let mean = packed.narrow(0, len, c)?.detach();
            let var = packed.narrow(0, len + c, c)?.detach();
            self.update_running(mean, var, (n * h * w) as f64)?;
            packed.narrow(0, 0, len)?.reshape((n, c, h, w))
        } else {
            let shape = (1, c, 1, 1);
            let inv = (self.running_var.as_detached_tensor() + self.eps)?
                .sqrt()?
                .recip()?;
            let scale = (&self.weight * &inv)?;
            let shift = (&self.bias - (self.running_mean.as_detached_tensor() * &scale)?)?;
            x.broadcast_mul(&scale.reshape(shape)?)?
                .broadcast_add(&shift.reshape(shape)?)
        }
    }
}

/// A 3×3 convolution with padding 1 and a bias, on the gemm kernels of [`super::conv`].
#[derive(Debug, Clone)]
pub struct Conv3x3 {
    weight: Tensor,
    bias: Tensor,
}

impl Conv3x3 {
    /// From `in_c` to `out_c` channels; variables `weight` and `bias`.
    pub fn new(in_c: usize, out_c: usize, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / ((in_c * 9) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Conv3x3 {
            weight: vb.get_with_hints((out_c, in_c, 3, 3), "weight", init)?,
            bias: vb.get_with_hints(out_c, "bias", init)?,
        })
    }

    /// Runs the convolution.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?
            .apply_op3(&self.weight, &self.bias, Conv2dOp { padding: 1 })
    }
}

/// One conv block: 3×3 convolution (padding 1), batch norm, ReLU, 2×2 max pooling.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    conv: Conv3x3,
    bn: BatchNorm2d,
}

impl ConvBlock {
    /// A block from `in_c` to `out_c` channels.
    pub fn new(in_c: usize, out_c: usize, vb: VarBuilder) -> Result<Self> {
        let conv = Conv3x3::new(in_c, out_c, vb.pp("conv"))?;
        let bn = BatchNorm2d::new(out_c, vb.pp("bn"))?;
        Ok(ConvBlock { conv, bn })
    }

    /// Runs the block; in training mode as one fused op ([`ConvBnReluPool`]).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            return self.bn.forward_relu_pool(&self.conv.forward(x)?, false);
        }
        let (n, _, h, w) = x.dims4()?;
        let cout = self.bn.weight.elem_count();
        let params = Tensor::cat(
            &[
                self.conv.weight.flatten_all()?,
                self.conv.bias.clone(),
                self.bn.weight.clone(),
                self.bn.bias.clone(),
            ],
            0,
        )?;
        let op = ConvBnReluPool::new(cout, 3, 1, self.bn.eps);
        let packed = x.contiguous()?.apply_op2(&params, op)?;
        let pooled = n * cout * (h / 2) * (w / 2);
        let mean = packed.narrow(0, pooled, cout)?.detach();
        let var = packed.narrow(0, pooled + cout, cout)?.detach();
        self.bn.update_running(mean, var, (n * h * w) as f64)?;
        packed
            .narrow(0, 0, pooled)?
            .reshape((n, cout, h / 2, w / 2))
    }
}

/// A 3×3 convolution (padding 1), batch norm and ReLU, without pooling: the
/// leading convolutions of a deeper Conv-4 block.
#[derive(Debug, Clone)]
pub struct ConvLayer {
    conv: Conv3x3,
    bn: BatchNorm2d,
}

impl ConvLayer {
    /// A layer from `in_c` to `out_c` channels.
    pub fn new(in_c: usize, out_c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(ConvLayer {
            conv: Conv3x3::new(in_c, out_c, vb.pp("conv"))?,
            bn: BatchNorm2d::new(out_c, vb.pp("bn"))?,
        })
    }

    /// Runs the layer (batch statistics when `train`).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)?.relu()
    }
}

/// The Conv-4 encoder of the few-shot literature.
#[derive(Debug, Clone)]
pub struct Conv4 {
    /// Each block's leading unpooled layers (`block{b}.pre{j}`; none at depth 1).
    pre: Vec<Vec<ConvLayer>>,
    blocks: Vec<ConvBlock>,
    /// The linear embedding on the flattened features, if any.
    embed: Option<candle_nn::Linear>,
}

impl Conv4 {
    /// Four blocks of `hidden` channels from `in_channels` input channels.
    pub fn new(in_channels: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_widths(in_channels, [hidden; 4], vb)
    }

    /// Four blocks of `widths[i]` channels from `in_channels` input channels.
    pub fn with_widths(in_channels: usize, widths: [usize; 4], vb: VarBuilder) -> Result<Self> {
        Self::with_shape(in_channels, widths, [1; 4], vb)
    }

    /// Four blocks of `widths[i]` channels and `depths[i]` convolutions
    /// each (the first from the block's input, the last pooled).
    pub fn with_shape(
        in_channels: usize,
        widths: [usize; 4],
        depths: [usize; 4],
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut pre = Vec::new();
        let mut blocks = Vec::new();
        for i in 0..4 {
            let cin = if i == 0 { in_channels } else { widths[i - 1] };
            let vb = vb.pp(format!("block{i}"));
            let layers = (0..depths[i].saturating_sub(1))
                .map(|j| {
                    let from = if j == 0 { cin } else { widths[i] };
                    ConvLayer::new(from, widths[i], vb.pp(format!("pre{j}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let from = if layers.is_empty() { cin } else { widths[i] };
            pre.push(layers);
            blocks.push(ConvBlock::new(from, widths[i], vb)?);
        }
        Ok(Conv4 {
            pre,
            blocks,
            embed: None,
        })
    }
}

impl Encoder for Conv4 {
    fn embed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (pre, block) in self.pre.iter().zip(&self.blocks) {
            for layer in pre {
                x = layer.forward_t(&x, train)?;
            }
            x = block.forward_t(&x, train)?;
        }
        let features = x.flatten_from(1)?;
        match &self.embed {
            Some(linear) => candle_core::Module::forward(linear, &features),
            None => Ok(features),
        }
    }
}
