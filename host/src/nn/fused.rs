//! One layer of the mobile encoder in training — convolution (1×1 or
//! depthwise, no bias), batch norm with batch statistics, optional ReLU — as
//! a single candle custom op on channel-major activations `(C, N, H, W)`.
//! Only the output leaves the op: the convolution output is kept inside it for
//! the backward pass (recomputed if gone), so autograd allocates and adds one
//! gradient per layer instead of three.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::conv::{matmul_with, Mat};
use super::depthwise::{self, DepthwiseConv};
use super::kernel::{run_cpu, Kernel};
use super::ops::{bn_backward, channel_stats};

/// Per channel (mean, biased variance).
type Stats = Vec<(f64, f64)>;

/// The convolution of a [`ConvBnAct`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerConv {
    /// 1×1, stride 1: one matrix product over the batch.
    Pointwise,
    /// One `kernel × kernel` filter per channel.
    Depthwise {
        /// Kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
    },
}

/// The fused layer. Inputs: `x (Cin, N, H, W)` and the parameters packed as
/// `[weight, gamma (Cout), beta (Cout)]` (weight `(Cout, Cin)` pointwise,
/// `(C, k, k)` depthwise). Output `(Cout, N, Ho, Wo)`; the batch means and
/// variances of the convolution output are kept for [`ConvBnAct::batch_stats`]
/// (no packed output to slice, whose gradient candle would pad to full size).
#[derive(Debug, Clone)]
pub struct ConvBnAct {
    /// The convolution.
    pub conv: LayerConv,
    /// Output channels.
    pub cout: usize,
    /// ReLU after batch norm.
    pub relu: bool,
    /// Batch norm's epsilon.
    pub eps: f64,
    /// The convolution output of the forward pass, for the backward pass.
    conv_out: Arc<Mutex<Option<CpuStorage>>>,
    /// Per channel (mean, biased variance) of the forward pass.
    stats: Arc<Mutex<Option<Stats>>>,
}

/// Sizes of one application.
#[derive(Debug, Clone, Copy)]
struct Dims {
    cin: usize,
    n: usize,
    h: usize,
    w: usize,
    cout: usize,
    ho: usize,
    wo: usize,
    /// Weight values.
    weight: usize,
    dw: Option<depthwise::Dims>,
}

impl Dims {
    /// Values of the output (without the statistics).
    fn out_len(&self) -> usize {
        self.cout * self.n * self.ho * self.wo
    }

    /// Batch norm's view: one "image" of `N·Ho` rows per channel.
    fn bn_dims(&self) -> (usize, usize, usize, usize) {
        (1, self.cout, self.n * self.ho, self.wo)
    }
}

impl ConvBnAct {
    /// A layer of `cout` output channels.
    pub fn new(conv: LayerConv, cout: usize, relu: bool, eps: f64) -> Self {
        ConvBnAct {
            conv,
            cout,
            relu,
            eps,
            conv_out: Arc::new(Mutex::new(None)),
            stats: Arc::new(Mutex::new(None)),
        }
    }

    /// Per output channel (mean, biased variance) of the last forward pass.
    pub fn batch_stats(&self) -> Option<Vec<(f64, f64)>> {
        self.stats.lock().ok().and_then(|s| s.clone())
    }

    /// Weight values for `cin` input channels.
    pub fn weight_len(&self, cin: usize) -> usize {
        match self.conv {
            LayerConv::Pointwise => self.cout * cin,
            LayerConv::Depthwise { kernel, .. } => self.cout * kernel * kernel,
        }
    }

    fn dims(&self, x: &Layout, params: usize) -> Result<Dims> {
        let (cin, n, h, w) = x.shape().dims4()?;
        let weight = self.weight_len(cin);
        if params != weight + 2 * self.cout {
            candle_core::bail!(
                "conv-bn layer: {params} parameter values, expected {}",
                weight + 2 * self.cout
            );
        }
        let (ho, wo, dw) = match self.conv {
            LayerConv::Pointwise => (h, w, None),
            LayerConv::Depthwise {
                kernel,
                stride,
                padding,
            } => {
                if cin != self.cout {
                    candle_core::bail!(
                        "depthwise layer: {cin} input channels for {} outputs",
                        self.cout
                    );
                }
                let op = DepthwiseConv {
                    stride,
                    padding,
                    channel_major: true,
                };
                let d = depthwise::Dims::from_sizes((n, cin, h, w), kernel, op)?;
                let (ho, wo) = d.out_side();
                (ho, wo, Some(d))
            }
        };
        Ok(Dims {
            cin,
            n,
            h,
            w,
            cout: self.cout,
            ho,
            wo,
            weight,
            dw,
        })
    }
}

/// `dst (m × n, row-major) = a · b`, operands given with their `(row, column)`
/// strides, on all threads.
fn gemm<T: WithDType>(
    dims: (usize, usize, usize),
    dst: &mut [T],
    a: &[T],
    (ars, acs): (usize, usize),
    b: &[T],
    (brs, bcs): (usize, usize),
) {
    let threads = gemm::Parallelism::Rayon(rayon::current_num_threads());
    let a = Mat {
        data: a,
        rs: ars,
        cs: acs,
    };
    let b = Mat {
        data: b,
        rs: brs,
        cs: bcs,
    };
    matmul_with(threads, dims, dst, false, a, b);
}

/// The convolution output `(Cout, N, Ho, Wo)`.
fn conv_fwd<T: WithDType>(x: &[T], weight: &[T], d: &Dims) -> Vec<T> {
    match &d.dw {
        Some(dw) => depthwise::fwd(x, weight, dw),
        None => {
            let p = d.n * d.h * d.w;
            let mut z = vec![T::zero(); d.cout * p];
            gemm((d.cout, p, d.cin), &mut z, weight, (d.cin, 1), x, (p, 1));
            z
        }
    }
}

/// `[dx, dweight]` from `x`, `weight` and the convolution output's gradient
/// `dz`, then `extra` zeros for the caller to fill.
fn conv_bwd<T: WithDType>(x: &[T], weight: &[T], dz: &[T], d: &Dims, extra: usize) -> Vec<T> {
    match &d.dw {
        Some(dw) => depthwise::bwd(x, weight, dz, dw, extra),
        None => {
            let p = d.n * d.h * d.w;
            let mut out = vec![T::zero(); d.cin * p + d.weight + extra];
            let (dx, rest) = out.split_at_mut(d.cin * p);
            let dwt = &mut rest[..d.weight];
            // dx = Wᵀ dz; dW = dz xᵀ.
            gemm((d.cin, p, d.cout), dx, weight, (1, d.cin), dz, (p, 1));
            gemm((d.cout, d.cin, p), dwt, dz, (p, 1), x, (1, p));
            out
        }
    }
}

/// The packed parameters' pieces: weight, gamma, beta.
fn split<T>(p: &[T], weight: usize, c: usize) -> (&[T], &[T], &[T]) {
    let (w, rest) = p.split_at(weight);
    let (gamma, beta) = rest.split_at(c);
    (w, gamma, beta)
}

/// Per channel `(scale, shift)` of batch norm: `y = scale · z + shift`.
fn affine<T: WithDType>(
    gamma: &[T],
    beta: &[T],
    stats: &[(f64, f64)],
    eps: f64,
) -> Vec<(f64, f64)> {
    stats
        .iter()
        .zip(gamma.iter().zip(beta))
        .map(|(&(mean, var), (g, b))| {
            let s = g.to_f64() / (var + eps).sqrt();
            (s, b.to_f64() - mean * s)
        })
        .collect()
}

struct Fwd<'a> {
    op: &'a ConvBnAct,
    d: Dims,
}

impl Kernel for Fwd<'_> {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        let d = &self.d;
        let (weight, gamma, beta) = split(i[1], d.weight, d.cout);
        let z = conv_fwd(i[0], weight, d);
        let stats = channel_stats(&z, d.bn_dims());
        let coef = affine(gamma, beta, &stats, self.op.eps);
        let plane = d.n * d.ho * d.wo;
        let mut out = vec![T::zero(); d.out_len()];
        let relu = self.op.relu;
        out.par_chunks_mut(plane)
            .zip(z.par_chunks(plane))
            .zip(&coef)
            .for_each(|((yc, zc), &(s, t))| {
                for (a, b) in yc.iter_mut().zip(zc) {
                    let v = s * b.to_f64() + t;
                    *a = T::from_f64(if relu && v < 0.0 { 0.0 } else { v });
                }
            });
        if let Ok(mut slot) = self.op.stats.lock() {
            *slot = Some(stats);
        }
        if let Ok(mut slot) = self.op.conv_out.lock() {
            *slot = Some(T::to_cpu_storage_owned(z));
        }
        out
    }
}

struct Bwd<'a> {
    op: &'a ConvBnAct,
    d: Dims,
}

impl Kernel for Bwd<'_> {
    /// Inputs: `x`, the packed parameters, the output's gradient.
    /// Output: `[dx, dweight, dgamma, dbeta]`.
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        let d = &self.d;
        let (weight, gamma, beta) = split(i[1], d.weight, d.cout);
        let kept = self.op.conv_out.lock().ok().and_then(|mut s| s.take());
        let recomputed;
        let z: &[T] = match kept.as_ref().and_then(|s| s.as_slice::<T>().ok()) {
            Some(z) if z.len() == d.out_len() => z,
            _ => {
                recomputed = conv_fwd(i[0], weight, d);
                &recomputed
            }
        };
        let stats = match self.op.batch_stats() {
            Some(s) if s.len() == d.cout => s,
            _ => channel_stats(z, d.bn_dims()),
        };
        let total = d.out_len();
        let plane = d.n * d.ho * d.wo;
        // The ReLU's mask, from the recomputed batch-norm output.
        let mut dbn = Vec::with_capacity(total + 2 * d.cout);
        dbn.extend_from_slice(i[2]);
        dbn.resize(total + 2 * d.cout, T::zero());
        if self.op.relu {
            let coef = affine(gamma, beta, &stats, self.op.eps);
            dbn[..total]
                .par_chunks_mut(plane)
                .zip(z.par_chunks(plane))
                .zip(&coef)
                .for_each(|((g, zc), &(s, t))| {
                    // The ReLU passed nothing where s·z + t ≤ 0.
                    let (s, t) = (T::from_f64(s), T::from_f64(t));
                    for (a, zv) in g.iter_mut().zip(zc) {
                        if s * *zv + t <= T::zero() {
                            *a = T::zero();
                        }
                    }
                });
        }
        bn_backward(z, gamma, &stats, d.bn_dims(), self.op.eps, &mut dbn);
        let mut out = conv_bwd(i[0], weight, &dbn[..total], d, 2 * d.cout);
        let at = out.len() - 2 * d.cout;
        out[at..].copy_from_slice(&dbn[total..]);
        out
    }
}

impl CustomOp2 for ConvBnAct {
    fn name(&self) -> &'static str {
        "conv-bn-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(l1, l2.shape().elem_count())?;
        let out = run_cpu(&Fwd { op: self, d }, "conv-bn layer", &[(s1, l1), (s2, l2)])?;
        Ok((out, Shape::from((d.cout, d.n, d.ho, d.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &params.contiguous()?,
            &grad_res.contiguous()?,
            &LayerBwd(self.clone()),
        )?;
        let xl = x.elem_count();
        let dx = packed.narrow(0, 0, xl)?.reshape(x.shape())?;
        let dparams = packed
            .narrow(0, xl, params.elem_count())?
            .reshape(params.shape())?;
        Ok((Some(dx), Some(dparams)))
    }
}

/// Backward of [`ConvBnAct`] as an op of its own (no gradient of its own).
#[derive(Debug, Clone)]
struct LayerBwd(ConvBnAct);

impl CustomOp3 for LayerBwd {
    fn name(&self) -> &'static str {
        "conv-bn-act-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = &self.0;
        let d = op.dims(l1, l2.shape().elem_count())?;
        if l3.shape().elem_count() != d.out_len() {
            candle_core::bail!(
                "conv-bn layer backward: gradient of {} values, expected {}",
                l3.shape().elem_count(),
                d.out_len()
            );
        }
        let len = l1.shape().elem_count() + d.weight + 2 * d.cout;
        let out = run_cpu(
            &Bwd { op, d },
            "conv-bn layer backward",
            &[(s1, l1), (s2, l2), (s3, l3)],
        )?;
        Ok((out, Shape::from(len)))
    }
}
