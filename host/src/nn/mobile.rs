//! A face encoder in the manner of MobileFaceNet (Chen et al., 2018):
//! inverted-residual bottlenecks (1×1 expansion, 3×3 depthwise, linear 1×1
//! projection, a skip connection where shapes allow), a 1×1 widening, a global
//! depthwise convolution over the last map instead of global pooling, and a
//! linear embedding with batch norm. Differences from the paper, for a small
//! grey input and the device: the stem is a Conv-4 block (3×3 convolution,
//! batch norm, ReLU, 2×2 max pooling, one fused op in training), and ReLU
//! stands for PReLU.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::depthwise::DepthwiseConv;
use super::encoder::{BatchNorm2d, ConvBlock, Encoder};
use super::fused::{ConvBnAct, LayerConv};

/// The bottleneck stages: (expansion, output channels at width 64, repeats,
/// stride of the first), as in MobileFaceNet.
pub const STAGES: [(usize, usize, usize, usize); 5] = [
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
];

/// Channels of the 1×1 widening before the global depthwise convolution, at width 64.
pub const WIDE: usize = 512;

/// How much the network shrinks its input: the stem's pooling and three
/// stride-2 stages.
pub const REDUCTION: usize = 16;

/// Channels scaled from width 64 to `width`.
pub fn scaled(channels: usize, width: usize) -> usize {
    (channels * width / 64).max(1)
}

/// One convolution of the network (with its batch norm), as training and export see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// One kernel per channel (`cin == cout`).
    pub depthwise: bool,
    /// Followed by ReLU.
    pub relu: bool,
}

impl LayerSpec {
    /// The convolution's kind (the pointwise layers are 1×1, stride 1, by construction).
    pub fn conv(&self) -> LayerConv {
        if self.depthwise {
            LayerConv::Depthwise {
                kernel: self.kernel,
                stride: self.stride,
                padding: self.padding,
            }
        } else {
            LayerConv::Pointwise
        }
    }
}

/// The layers of one bottleneck: expansion, depthwise, projection; and
/// whether its input is added to its output.
#[derive(Debug, Clone, Copy)]
pub struct BottleneckSpec {
    /// 1×1 expansion, ReLU.
    pub expand: LayerSpec,
    /// 3×3 depthwise, ReLU.
    pub dw: LayerSpec,
    /// 1×1 linear projection.
    pub project: LayerSpec,
    /// Input added to output (stride 1, same channels).
    pub residual: bool,
}

/// The bottlenecks of a network of `width`, after a stem of `width` channels,
/// with their variable prefixes (`stage{s}.{i}`).
pub fn bottlenecks(width: usize) -> Vec<(String, BottleneckSpec)> {
    let pw = |cin, cout, relu| LayerSpec {
        cin,
        cout,
        kernel: 1,
        stride: 1,
        padding: 0,
        depthwise: false,
        relu,
    };
    let mut cin = width;
    let mut out = Vec::new();
    for (s, &(t, c, n, first_stride)) in STAGES.iter().enumerate() {
        let cout = scaled(c, width);
        for i in 0..n {
            let hidden = cin * t;
            let stride = if i == 0 { first_stride } else { 1 };
            out.push((
                format!("stage{s}.{i}"),
                BottleneckSpec {
                    expand: pw(cin, hidden, true),
                    dw: LayerSpec {
                        cin: hidden,
                        cout: hidden,
                        kernel: 3,
                        stride,
                        padding: 1,
                        depthwise: true,
                        relu: true,
                    },
                    project: pw(hidden, cout, false),
                    residual: stride == 1 && cin == cout,
                },
            ));
            cin = cout;
        }
    }
    out
}

/// The depthwise 3×3 layer after the stem.
pub fn stem_dw(width: usize) -> LayerSpec {
    LayerSpec {
        cin: width,
        cout: width,
        kernel: 3,
        stride: 1,
        padding: 1,
        depthwise: true,
        relu: true,
    }
}

/// The 1×1 widening from the last stage.
pub fn widen(width: usize) -> LayerSpec {
    let last = scaled(STAGES[STAGES.len() - 1].1, width);
    LayerSpec {
        cin: last,
        cout: scaled(WIDE, width),
        kernel: 1,
        stride: 1,
        padding: 0,
        depthwise: false,
        relu: true,
    }
}

/// The global depthwise convolution over the last `side × side` map.
pub fn gdc(width: usize, side: usize) -> LayerSpec {
    let c = scaled(WIDE, width);
    LayerSpec {
        cin: c,
        cout: c,
        kernel: side,
        stride: 1,
        padding: 0,
        depthwise: true,
        relu: false,
    }
}

/// A convolution (no bias: batch norm follows) and its batch norm, on
/// channel-major activations `(C, N, H, W)`: a pointwise convolution is then
/// one matrix product over the whole batch, and batch norm sees each
/// channel's values in one run.
#[derive(Debug, Clone)]
struct ConvBn {
    spec: LayerSpec,
    weight: Tensor,
    bn: BatchNorm2d,
}

impl ConvBn {
    fn new(spec: LayerSpec, vb: VarBuilder) -> Result<Self> {
        let per = if spec.depthwise { 1 } else { spec.cin };
        let bound = 1.0 / ((per * spec.kernel * spec.kernel) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight =
            vb.get_with_hints((spec.cout, per, spec.kernel, spec.kernel), "weight", init)?;
        Ok(ConvBn {
            spec,
            weight,
            bn: BatchNorm2d::new(spec.cout, vb.pp("bn"))?,
        })
    }

    /// `x (Cin, N, H, W)` to `(Cout, N, Ho, Wo)`; in training one fused op.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            return self.forward_fused(x);
        }
        let s = self.spec;
        let (cin, n, h, w) = x.dims4()?;
        let y = match s.conv() {
            LayerConv::Depthwise {
                stride, padding, ..
            } => x.contiguous()?.apply_op2(
                &self.weight,
                DepthwiseConv {
                    stride,
                    padding,
                    channel_major: true,
                },
            )?,
            LayerConv::Pointwise => self
                .weight
                .reshape((s.cout, cin))?
                .matmul(&x.reshape((cin, n * h * w))?)?
                .reshape((s.cout, n, h, w))?,
        };
        let (c, n, ho, wo) = y.dims4()?;
        // Per-channel running statistics over N·H·W: one "image" of N·H rows.
        let y = self
            .bn
            .forward_t(&y.reshape((1, c, n * ho, wo))?, false)?
            .reshape((c, n, ho, wo))?;
        if s.relu {
            y.relu()
        } else {
            Ok(y)
        }
    }
}

impl ConvBn {
    fn forward_fused(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.spec;
        let n = x.dims4()?.1;
        let (gamma, beta, eps) = self.bn.affine();
        let params = Tensor::cat(
            &[self.weight.flatten_all()?, gamma.clone(), beta.clone()],
            0,
        )?;
        let op = ConvBnAct::new(s.conv(), s.cout, s.relu, eps);
        let y = x.contiguous()?.apply_op2(&params, op.clone())?;
        let (_, _, ho, wo) = y.dims4()?;
        let stats = op
            .batch_stats()
            .ok_or_else(|| candle_core::Error::Msg("conv-bn layer kept no statistics".into()))?;
        let (mean, var): (Vec<f64>, Vec<f64>) = stats.into_iter().unzip();
        let dtype = y.dtype();
        let mean = Tensor::new(mean, y.device())?.to_dtype(dtype)?;
        let var = Tensor::new(var, y.device())?.to_dtype(dtype)?;
        self.bn.update_running(mean, var, (n * ho * wo) as f64)?;
        Ok(y)
    }
}

#[derive(Debug, Clone)]
struct Bottleneck {
    expand: ConvBn,
    dw: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl Bottleneck {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.expand.forward_t(x, train)?;
        let h = self.dw.forward_t(&h, train)?;
        let h = self.project.forward_t(&h, train)?;
        if self.residual {
            h + x
        } else {
            Ok(h)
        }
    }
}

/// The MobileFaceNet-style encoder.
#[derive(Debug, Clone)]
pub struct MobileFace {
    stem: ConvBlock,
    stem_dw: ConvBn,
    blocks: Vec<Bottleneck>,
    widen: ConvBn,
    gdc: ConvBn,
    embed: candle_nn::Linear,
    embed_bn: BatchNorm2d,
}

impl MobileFace {
    /// The network for `in_channels × input_size²` inputs (`input_size` a
    /// multiple of [`REDUCTION`]), stem `width` channels, an embedding of `dim`.
    pub fn new(
        in_channels: usize,
        width: usize,
        input_size: usize,
        dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        if input_size == 0 || input_size % REDUCTION != 0 {
            candle_core::bail!(
                "the mobile encoder needs an input side that is a multiple of {REDUCTION}, got {input_size}"
            );
        }
        if width < 8 || dim == 0 {
            candle_core::bail!("the mobile encoder needs a width of at least 8 and an embedding");
        }
        let blocks = bottlenecks(width)
            .into_iter()
            .map(|(name, b)| {
                let vb = vb.pp(name);
                Ok(Bottleneck {
                    expand: ConvBn::new(b.expand, vb.pp("expand"))?,
                    dw: ConvBn::new(b.dw, vb.pp("dw"))?,
                    project: ConvBn::new(b.project, vb.pp("project"))?,
                    residual: b.residual,
                })
            })
            .collect::<Result<_>>()?;
        let wide = widen(width);
        Ok(MobileFace {
            stem: ConvBlock::new(in_channels, width, vb.pp("block0"))?,
            stem_dw: ConvBn::new(stem_dw(width), vb.pp("stem_dw"))?,
            blocks,
            widen: ConvBn::new(wide, vb.pp("widen"))?,
            gdc: ConvBn::new(gdc(width, input_size / REDUCTION), vb.pp("gdc"))?,
            embed: candle_nn::linear_no_bias(wide.cout, dim, vb.pp("embed"))?,
            embed_bn: BatchNorm2d::new(dim, vb.pp("embed").pp("bn"))?,
        })
    }
}

impl Encoder for MobileFace {
    fn embed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let stem = self.stem.forward_t(x, train)?;
        let mut h = self
            .stem_dw
            .forward_t(&stem.transpose(0, 1)?.contiguous()?, train)?;
        for block in &self.blocks {
            h = block.forward_t(&h, train)?;
        }
        h = self.widen.forward_t(&h, train)?;
        let (c, n, _, _) = h.dims4()?;
        let pooled = self
            .gdc
            .forward_t(&h, train)?
            .reshape((c, n))?
            .t()?
            .contiguous()?;
        let e = self.embed.forward(&pooled)?;
        let (n, dim) = e.dims2()?;
        self.embed_bn
            .forward_t(&e.reshape((n, dim, 1, 1))?, train)?
            .reshape((n, dim))
    }
}
