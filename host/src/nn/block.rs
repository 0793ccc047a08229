//! One Conv-4 block — 3×3 convolution, batch norm (training mode), ReLU, 2×2
//! max pooling — as a single candle custom op. Only the pooled output leaves
//! the op: the full-size convolution output is kept inside it for the backward
//! pass (which recomputes it if it is gone), so candle's autograd never
//! allocates and accumulates full-size gradients for the block's intermediates.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

use super::conv::{conv_bwd, conv_fwd, Dims};
use super::kernel::{run_cpu, Kernel};
use super::ops::{
    bn_backward, bn_relu_pool_fwd, bn_relu_pool_grad, channel_stats, read_stats, write_stats,
};

/// The fused block. Inputs: `x (N, Cin, H, W)` and the parameters packed as
/// `[weight (Cout·Cin·k·k), bias (Cout), gamma (Cout), beta (Cout)]`. Output
/// packed: the pooled `(N, Cout, Ho/2, Wo/2)` values, then the `Cout` batch
/// means and `Cout` batch variances of the convolution output.
#[derive(Debug, Clone)]
pub struct ConvBnReluPool {
    /// Output channels.
    pub cout: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Zero padding of the convolution.
    pub padding: usize,
    /// Batch norm's epsilon.
    pub eps: f64,
    /// The convolution output of the forward pass, for the backward pass.
    conv_out: Arc<Mutex<Option<CpuStorage>>>,
}

impl ConvBnReluPool {
    /// A block of `cout` output channels and a `kernel × kernel` convolution.
    pub fn new(cout: usize, kernel: usize, padding: usize, eps: f64) -> Self {
        ConvBnReluPool {
            cout,
            kernel,
            padding,
            eps,
            conv_out: Arc::new(Mutex::new(None)),
        }
    }

    /// Values in the packed parameters for `cin` input channels.
    pub fn params_len(&self, cin: usize) -> usize {
        self.cout * cin * self.kernel * self.kernel + 3 * self.cout
    }

    fn dims(&self, x: &Layout, params: usize) -> Result<Dims> {
        let (n, cin, h, w) = x.shape().dims4()?;
        if params != self.params_len(cin) && params != self.params_len(cin) + 2 * self.cout {
            candle_core::bail!(
                "conv block: {params} parameter values, expected {}",
                self.params_len(cin)
            );
        }
        Dims::from_sizes(
            (n, cin, h, w),
            (self.cout, self.kernel, self.kernel),
            self.padding,
        )
    }
}

/// The pieces of the packed parameters.
struct Params<'a, T> {
    weight: &'a [T],
    bias: &'a [T],
    gamma: &'a [T],
    beta: &'a [T],
    rest: &'a [T],
}

fn split<T>(p: &[T], cout: usize, weight: usize) -> Params<'_, T> {
    let (weight, p) = p.split_at(weight);
    let (bias, p) = p.split_at(cout);
    let (gamma, p) = p.split_at(cout);
    let (beta, rest) = p.split_at(cout);
    Params {
        weight,
        bias,
        gamma,
        beta,
        rest,
    }
}

struct Fwd<'a> {
    op: &'a ConvBnReluPool,
    d: Dims,
}

impl Kernel for Fwd<'_> {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        let (d, c) = (&self.d, self.op.cout);
        let p = split(i[1], c, c * d.k());
        let y = conv_fwd(i[0], p.weight, p.bias, d);
        let dims = d.out_dims();
        let stats = channel_stats(&y, dims);
        let pooled = dims.0 * c * (dims.2 / 2) * (dims.3 / 2);
        let mut out = vec![T::zero(); pooled + 2 * c];
        let (head, tail) = out.split_at_mut(pooled);
        bn_relu_pool_fwd(&y, (p.gamma, p.beta), &stats, self.op.eps, dims, head);
        write_stats(&stats, tail);
        if let Ok(mut slot) = self.op.conv_out.lock() {
            *slot = Some(T::to_cpu_storage_owned(y));
        }
        out
    }
}

struct Bwd<'a> {
    op: &'a ConvBnReluPool,
    d: Dims,
}

impl Kernel for Bwd<'_> {
    /// Inputs: `x`, `[params, means, variances]`, the pooled gradient.
    /// Output: `[dx, dweight, dbias, dgamma, dbeta]`.
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        let (d, c) = (&self.d, self.op.cout);
        let p = split(i[1], c, c * d.k());
        let stats = read_stats(p.rest);
        let dims = d.out_dims();
        let kept = self
            .op
            .conv_out
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        let recomputed;
        let y: &[T] = match kept.as_ref().and_then(|s| s.as_slice::<T>().ok()) {
            Some(y) => y,
            None => {
                recomputed = conv_fwd(i[0], p.weight, p.bias, d);
                &recomputed
            }
        };
        let total = y.len();
        let mut dbn = vec![T::zero(); total + 2 * c];
        bn_relu_pool_grad(
            y,
            (p.gamma, p.beta),
            &stats,
            self.op.eps,
            i[2],
            dims,
            &mut dbn,
        );
        bn_backward(y, p.gamma, &stats, dims, self.op.eps, &mut dbn);
        let mut out = conv_bwd(i[0], p.weight, &dbn[..total], d, 2 * c);
        let at = out.len() - 2 * c;
        out[at..].copy_from_slice(&dbn[total..]);
        out
    }
}

impl CustomOp2 for ConvBnReluPool {
    fn name(&self) -> &'static str {
        "conv-bn-relu-pool"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(l1, l2.shape().elem_count())?;
        let (n, _, ho, wo) = d.out_dims();
        let len = n * self.cout * (ho / 2) * (wo / 2) + 2 * self.cout;
        let out = run_cpu(&Fwd { op: self, d }, "conv block", &[(s1, l1), (s2, l2)])?;
        Ok((out, Shape::from(len)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let stats_at = res.elem_count() - 2 * self.cout;
        let with_stats = Tensor::cat(
            &[
                params.flatten_all()?,
                res.narrow(0, stats_at, 2 * self.cout)?.detach(),
            ],
            0,
        )?;
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &with_stats,
            &grad_res.narrow(0, 0, stats_at)?.contiguous()?,
            &BlockBwd(self.clone()),
        )?;
        let xl = x.elem_count();
        let dx = packed.narrow(0, 0, xl)?.reshape(x.shape())?;
        let dparams = packed
            .narrow(0, xl, params.elem_count())?
            .reshape(params.shape())?;
        Ok((Some(dx), Some(dparams)))
    }
}

/// Backward of [`ConvBnReluPool`] as an op of its own (no gradient of its own).
#[derive(Debug, Clone)]
struct BlockBwd(ConvBnReluPool);

impl CustomOp3 for BlockBwd {
    fn name(&self) -> &'static str {
        "conv-bn-relu-pool-bwd"
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
        let len = l1.shape().elem_count() + op.params_len(d.cin());
        let out = run_cpu(
            &Bwd { op, d },
            "conv block backward",
            &[(s1, l1), (s2, l2), (s3, l3)],
        )?;
        Ok((out, Shape::from(len)))
    }
}
