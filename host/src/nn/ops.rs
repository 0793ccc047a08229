//! Fused CPU kernels for the layers our encoders use, as candle custom ops
//! with their own backward passes: batch norm in training mode and 2×2 max
//! pooling. Each replaces a chain of generic candle ops (and the fresh buffer
//! each of those allocates) with one pass forward and one backward.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;

use super::kernel::{run_cpu, Kernel};

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

/// Per-channel mean and biased variance of `(N, C, H, W)` values.
pub(crate) fn channel_stats<T: WithDType>(
    x: &[T],
    (n, c, h, w): (usize, usize, usize, usize),
) -> Vec<(f64, f64)> {
    let plane = h * w;
    let m = (n * plane) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut sum = 0.0;
            for i in 0..n {
                sum += x[(i * c + ch) * plane..][..plane]
                    .iter()
                    .map(|v| v.to_f64())
                    .sum::<f64>();
            }
            let mean = sum / m;
            let mut sq = 0.0;
            for i in 0..n {
                sq += x[(i * c + ch) * plane..][..plane]
                    .iter()
                    .map(|v| (v.to_f64() - mean).powi(2))
                    .sum::<f64>();
            }
            (mean, sq / m)
        })
        .collect()
}

/// Batch-norm backward: from `x`, `gamma`, the batch statistics and the
/// output gradient `dy`, writes `dx` into `out[..N·C·H·W]`, then `dgamma`
/// and `dbeta` (`C` each). With `x̂ = (x − μ)/σ`: `dβ = Σ dy`,
/// `dγ = Σ dy x̂`, `dx = γ/(σ M) (M dy − dβ − x̂ dγ)` over the `M = N·H·W`
/// values of a channel.
///
/// `out[..N·C·H·W]` holds `dy` on entry and is overwritten with `dx` (no
/// second full-size buffer).
pub(crate) fn bn_backward<T: WithDType>(
    x: &[T],
    gamma: &[T],
    stats: &[(f64, f64)],
    (n, c, h, w): (usize, usize, usize, usize),
    eps: f64,
    out: &mut [T],
) {
    let hw = h * w;
    let total = n * c * hw;
    let m = (n * hw) as f64;
    let channel = |ch: usize| {
        let (mean, var) = stats[ch];
        (gamma[ch].to_f64(), mean, 1.0 / (var + eps).sqrt())
    };
    let (dx, tail) = out.split_at_mut(total);
    let dy: &[T] = dx;
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (_, mean, inv) = channel(ch);
            let (mut sdy, mut sdyx) = (0.0, 0.0);
            for i in 0..n {
                let at = (i * c + ch) * hw;
                for (xv, g) in x[at..at + hw].iter().zip(&dy[at..at + hw]) {
                    let g = g.to_f64();
                    sdy += g;
                    sdyx += g * (xv.to_f64() - mean) * inv;
                }
            }
            (sdy, sdyx)
        })
        .collect();
    dx.par_chunks_mut(hw).enumerate().for_each(|(k, dst)| {
        let ch = k % c;
        let (gamma, mean, inv) = channel(ch);
        let (sdy, sdyx) = sums[ch];
        let k0 = gamma * inv / m;
        for (d, xv) in dst.iter_mut().zip(&x[k * hw..(k + 1) * hw]) {
            let xhat = (xv.to_f64() - mean) * inv;
            *d = T::from_f64(k0 * (m * d.to_f64() - sdy - xhat * sdyx));
        }
    });
    for (ch, (sdy, sdyx)) in sums.into_iter().enumerate() {
        tail[ch] = T::from_f64(sdyx);
        tail[c + ch] = T::from_f64(sdy);
    }
}

/// Batch norm, training mode, over `(N, C, H, W)`: normalises each channel by
/// its batch mean and (biased) variance, then scales by `gamma` and shifts by
/// `beta`. The output is packed: `N·C·H·W` values of `y`, then the `C` batch
/// means, then the `C` batch variances (for the running statistics).
#[derive(Debug, Clone, Copy)]
pub struct BatchNormTrain {
    /// Added to the variance.
    pub eps: f64,
}

impl BatchNormTrain {
    fn fwd<T: WithDType>(
        &self,
        x: &[T],
        g: &[T],
        b: &[T],
        (n, c, h, w): (usize, usize, usize, usize),
    ) -> Vec<T> {
        let plane = h * w;
        let stats = channel_stats(x, (n, c, h, w));
        let mut out = vec![T::zero(); n * c * plane + 2 * c];
        let (y, tail) = out.split_at_mut(n * c * plane);
        y.par_chunks_mut(plane).enumerate().for_each(|(k, dst)| {
            let ch = k % c;
            let (scale, shift) = affine_of(g, b, &stats, ch, self.eps);
            for (d, s) in dst.iter_mut().zip(&x[k * plane..(k + 1) * plane]) {
                *d = T::from_f64(s.to_f64() * scale + shift);
            }
        });
        write_stats(&stats, tail);
        out
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
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
        let dims = dims4(l1)?;
        let (n, c, h, w) = dims;
        check_affine(l2, l3, c)?;
        let len = n * c * h * w + 2 * c;
        let out = run_cpu(
            &(*self, dims),
            "batch norm",
            &[(s1, l1), (s2, l2), (s3, l3)],
        )?;
        Ok((out, Shape::from(len)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let len = n * c * h * w;
        let stats = res.narrow(0, len, 2 * c)?.detach();
        let grad_y = grad_res.narrow(0, 0, len)?.contiguous()?;
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &Tensor::cat(&[gamma.flatten_all()?, stats], 0)?,
            &grad_y,
            &BatchNormTrainBwd {
                eps: self.eps,
                dims: (n, c, h, w),
            },
        )?;
        unpack_bn_grads(&packed, x, gamma)
    }
}

/// Backward of [`BatchNormTrain`]: inputs `x`, `[gamma, mean, var]` and the
/// output gradient; output packed as `dx`, `dgamma`, `dbeta`. With
/// `x̂ = (x − μ)/σ`: `dβ = Σ dy`, `dγ = Σ dy x̂`,
/// `dx = γ/(σ M) (M dy − dβ − x̂ dγ)` over the `M = N·H·W` values of a channel.
#[derive(Debug, Clone, Copy)]
struct BatchNormTrainBwd {
    eps: f64,
    dims: (usize, usize, usize, usize),
}

impl BatchNormTrainBwd {
    fn bwd<T: WithDType>(&self, x: &[T], params: &[T], dy: &[T]) -> Vec<T> {
        let (n, c, h, w) = self.dims;
        let stats = read_stats(&params[c..]);
        let mut out = vec![T::zero(); n * c * h * w + 2 * c];
        out[..dy.len()].copy_from_slice(dy);
        bn_backward(x, &params[..c], &stats, self.dims, self.eps, &mut out);
        out
    }
}

impl CustomOp3 for BatchNormTrainBwd {
    fn name(&self) -> &'static str {
        "batch-norm-train-bwd"
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
        let (n, c, h, w) = self.dims;
        let out = run_cpu(self, "batch norm backward", &[(s1, l1), (s2, l2), (s3, l3)])?;
        Ok((out, Shape::from(n * c * h * w + 2 * c)))
    }
}

/// 2×2 max pooling with stride 2 over `(N, C, H, W)` (odd trailing rows and
/// columns dropped). The backward pass sends each output's gradient to the
/// first maximum of its window, as PyTorch does.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2x2;

fn pool_fwd<T: WithDType>(x: &[T], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<T> {
    let (h2, w2) = (h / 2, w / 2);
    let mut out = vec![T::zero(); n * c * h2 * w2];
    out.par_chunks_mut(h2 * w2)
        .enumerate()
        .for_each(|(k, dst)| {
            let src = &x[k * h * w..(k + 1) * h * w];
            for i in 0..h2 {
                for j in 0..w2 {
                    let (a, b) = (src[2 * i * w + 2 * j], src[2 * i * w + 2 * j + 1]);
                    let (cc, d) = (
                        src[(2 * i + 1) * w + 2 * j],
                        src[(2 * i + 1) * w + 2 * j + 1],
                    );
                    let m1 = if b > a { b } else { a };
                    let m2 = if d > cc { d } else { cc };
                    dst[i * w2 + j] = if m2 > m1 { m2 } else { m1 };
                }
            }
        });
    out
}

fn pool_bwd<T: WithDType>(
    x: &[T],
    grad: &[T],
    (n, c, h, w): (usize, usize, usize, usize),
) -> Vec<T> {
    let (h2, w2) = (h / 2, w / 2);
    let mut out = vec![T::zero(); n * c * h * w];
    out.par_chunks_mut(h * w).enumerate().for_each(|(k, dst)| {
        let src = &x[k * h * w..(k + 1) * h * w];
        let g = &grad[k * h2 * w2..(k + 1) * h2 * w2];
        for i in 0..h2 {
            for j in 0..w2 {
                let window = [
                    2 * i * w + 2 * j,
                    2 * i * w + 2 * j + 1,
                    (2 * i + 1) * w + 2 * j,
                    (2 * i + 1) * w + 2 * j + 1,
                ];
                let mut best = window[0];
                for &p in &window[1..] {
                    if src[p] > src[best] {
                        best = p;
                    }
                }
                dst[best] = g[i * w2 + j];
            }
        }
    });
    out
}

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "max-pool-2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(l)?;
        let (n, c, h, w) = dims;
        let out = run_cpu(&PoolFwd(dims), "max pool", &[(s, l)])?;
        Ok((out, Shape::from((n, c, h / 2, w / 2))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &MaxPool2x2Bwd,
        )?))
    }
}

/// Backward of [`MaxPool2x2`]: inputs `x` and the output gradient.
#[derive(Debug, Clone, Copy)]
struct MaxPool2x2Bwd;

impl CustomOp2 for MaxPool2x2Bwd {
    fn name(&self) -> &'static str {
        "max-pool-2x2-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(l1)?;
        let out = run_cpu(&PoolBwd(dims), "max pool backward", &[(s1, l1), (s2, l2)])?;
        Ok((out, l1.shape().clone()))
    }
}

/// Batch norm (training mode), ReLU and 2×2 max pooling in one op over
/// `(N, C, H, W)`: only the pooled output is stored (no full-size
/// intermediate), and the backward pass recomputes the normalised values it
/// needs. Output packed as the pooled `(N, C, H/2, W/2)` values, then the `C`
/// batch means and `C` batch variances.
#[derive(Debug, Clone, Copy)]
pub struct BnReluPool {
    /// Added to the variance.
    pub eps: f64,
}

/// Writes the batch means, then the batch variances, after a packed output.
pub(crate) fn write_stats<T: WithDType>(stats: &[(f64, f64)], tail: &mut [T]) {
    let c = stats.len();
    for (ch, (mean, var)) in stats.iter().enumerate() {
        tail[ch] = T::from_f64(*mean);
        tail[c + ch] = T::from_f64(*var);
    }
}

/// Reads means then variances written by [`write_stats`].
pub(crate) fn read_stats<T: WithDType>(packed: &[T]) -> Vec<(f64, f64)> {
    let c = packed.len() / 2;
    (0..c)
        .map(|ch| (packed[ch].to_f64(), packed[c + ch].to_f64()))
        .collect()
}

/// Gradients of `x`, `gamma` and `beta`.
type BnGrads = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// Splits a packed `[dx, dgamma, dbeta]` gradient into tensors shaped like
/// `x` and `gamma` (`beta` has gamma's shape).
fn unpack_bn_grads(packed: &Tensor, x: &Tensor, gamma: &Tensor) -> Result<BnGrads> {
    let (len, c) = (x.elem_count(), gamma.elem_count());
    let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
    let dgamma = packed.narrow(0, len, c)?.reshape(gamma.shape())?;
    let dbeta = packed.narrow(0, len + c, c)?.reshape(gamma.shape())?;
    Ok((Some(dx), Some(dgamma), Some(dbeta)))
}

/// Checks that batch norm's scale and shift have one value per channel.
fn check_affine(gamma: &Layout, beta: &Layout, c: usize) -> Result<()> {
    if gamma.shape().elem_count() != c || beta.shape().elem_count() != c {
        candle_core::bail!("batch norm: gamma and beta need {c} values");
    }
    Ok(())
}

/// Scale and shift that apply batch norm to channel `ch`.
fn affine_of<T: WithDType>(
    g: &[T],
    b: &[T],
    stats: &[(f64, f64)],
    ch: usize,
    eps: f64,
) -> (f64, f64) {
    let (mean, var) = stats[ch];
    let scale = g[ch].to_f64() / (var + eps).sqrt();
    (scale, b[ch].to_f64() - mean * scale)
}

/// The four positions of pooling window `(i, j)` in a `w`-wide plane.
fn window(i: usize, j: usize, w: usize) -> [usize; 4] {
    [
        2 * i * w + 2 * j,
        2 * i * w + 2 * j + 1,
        (2 * i + 1) * w + 2 * j,
        (2 * i + 1) * w + 2 * j + 1,
    ]
}

/// Batch norm with the given statistics, ReLU and 2×2 max pooling of `x`:
/// writes the pooled values into `out` (`N·C·(H/2)·(W/2)`).
pub(crate) fn bn_relu_pool_fwd<T: WithDType>(
    x: &[T],
    (g, b): (&[T], &[T]),
    stats: &[(f64, f64)],
    eps: f64,
    (_, c, h, w): (usize, usize, usize, usize),
    out: &mut [T],
) {
    let (h2, w2) = (h / 2, w / 2);
    if h2 * w2 == 0 {
        return;
    }
    out.par_chunks_mut(h2 * w2)
        .enumerate()
        .for_each(|(k, dst)| {
            let (scale, shift) = affine_of(g, b, stats, k % c, eps);
            let src = &x[k * h * w..(k + 1) * h * w];
            for i in 0..h2 {
                for j in 0..w2 {
                    let best = window(i, j, w)
                        .iter()
                        .map(|&p| src[p].to_f64() * scale + shift)
                        .fold(f64::NEG_INFINITY, f64::max);
                    dst[i * w2 + j] = T::from_f64(best.max(0.0));
                }
            }
        });
}

/// The gradient at the batch-norm output of [`bn_relu_pool_fwd`], from the
/// pooled output's gradient: each window's gradient goes to its first maximum
/// if that value passed the ReLU. Written into `out[..N·C·H·W]`, which must be zero.
pub(crate) fn bn_relu_pool_grad<T: WithDType>(
    x: &[T],
    (g, b): (&[T], &[T]),
    stats: &[(f64, f64)],
    eps: f64,
    grad: &[T],
    (n, c, h, w): (usize, usize, usize, usize),
    out: &mut [T],
) {
    let (h2, w2) = (h / 2, w / 2);
    out[..n * c * h * w]
        .par_chunks_mut(h * w)
        .enumerate()
        .for_each(|(k, dst)| {
            let (scale, shift) = affine_of(g, b, stats, k % c, eps);
            let src = &x[k * h * w..(k + 1) * h * w];
            let gk = &grad[k * h2 * w2..(k + 1) * h2 * w2];
            for i in 0..h2 {
                for j in 0..w2 {
                    let win = window(i, j, w);
                    let mut best = win[0];
                    let mut best_v = src[best].to_f64() * scale + shift;
                    for &p in &win[1..] {
                        let v = src[p].to_f64() * scale + shift;
                        if v > best_v {
                            best = p;
                            best_v = v;
                        }
                    }
                    if best_v > 0.0 {
                        dst[best] = gk[i * w2 + j];
                    }
                }
            }
        });
}

impl BnReluPool {
    fn fwd<T: WithDType>(
        &self,
        x: &[T],
        g: &[T],
        b: &[T],
        dims: (usize, usize, usize, usize),
    ) -> Vec<T> {
        let (n, c, h, w) = dims;
        let stats = channel_stats(x, dims);
        let pooled = n * c * (h / 2) * (w / 2);
        let mut out = vec![T::zero(); pooled + 2 * c];
        let (y, tail) = out.split_at_mut(pooled);
        bn_relu_pool_fwd(x, (g, b), &stats, self.eps, dims, y);
        write_stats(&stats, tail);
        out
    }
}

impl CustomOp3 for BnReluPool {
    fn name(&self) -> &'static str {
        "bn-relu-pool"
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
        let dims = dims4(l1)?;
        let (n, c, h, w) = dims;
        check_affine(l2, l3, c)?;
        let out = run_cpu(
            &(*self, dims),
            "bn-relu-pool",
            &[(s1, l1), (s2, l2), (s3, l3)],
        )?;
        Ok((out, Shape::from(n * c * (h / 2) * (w / 2) + 2 * c)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let pooled = n * c * (h / 2) * (w / 2);
        let params = Tensor::cat(
            &[
                gamma.flatten_all()?,
                beta.flatten_all()?,
                res.narrow(0, pooled, 2 * c)?.detach(),
            ],
            0,
        )?;
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &params,
            &grad_res.narrow(0, 0, pooled)?.contiguous()?,
            &BnReluPoolBwd {
                eps: self.eps,
                dims: (n, c, h, w),
            },
        )?;
        unpack_bn_grads(&packed, x, gamma)
    }
}

/// Backward of [`BnReluPool`]: inputs `x`, `[gamma, beta, mean, var]` and the
/// pooled output's gradient. Each window's gradient goes to its first maximum
/// if that value passed the ReLU; then batch norm's backward.
#[derive(Debug, Clone, Copy)]
struct BnReluPoolBwd {
    eps: f64,
    dims: (usize, usize, usize, usize),
}

impl BnReluPoolBwd {
    fn bwd<T: WithDType>(&self, x: &[T], params: &[T], grad: &[T]) -> Vec<T> {
        let (n, c, h, w) = self.dims;
        let (g, b) = (&params[..c], &params[c..2 * c]);
        let stats = read_stats(&params[2 * c..]);
        let mut out = vec![T::zero(); n * c * h * w + 2 * c];
        bn_relu_pool_grad(x, (g, b), &stats, self.eps, grad, self.dims, &mut out);
        bn_backward(x, g, &stats, self.dims, self.eps, &mut out);
        out
    }
}

impl CustomOp3 for BnReluPoolBwd {
    fn name(&self) -> &'static str {
        "bn-relu-pool-bwd"
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
        let (n, c, h, w) = self.dims;
        let out = run_cpu(
            self,
            "bn-relu-pool backward",
            &[(s1, l1), (s2, l2), (s3, l3)],
        )?;
        Ok((out, Shape::from(n * c * h * w + 2 * c)))
    }
}

type Dims4 = (usize, usize, usize, usize);

impl Kernel for (BatchNormTrain, Dims4) {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        self.0.fwd(i[0], i[1], i[2], self.1)
    }
}

impl Kernel for BatchNormTrainBwd {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        self.bwd(i[0], i[1], i[2])
    }
}

struct PoolFwd(Dims4);

impl Kernel for PoolFwd {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        pool_fwd(i[0], self.0)
    }
}

struct PoolBwd(Dims4);

impl Kernel for PoolBwd {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        pool_bwd(i[0], i[1], self.0)
    }
}

impl Kernel for (BnReluPool, Dims4) {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        self.0.fwd(i[0], i[1], i[2], self.1)
    }
}

impl Kernel for BnReluPoolBwd {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        self.bwd(i[0], i[1], i[2])
    }
}
