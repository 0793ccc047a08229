//! Depthwise convolution (one square kernel per channel, any stride, zero
//! padding, no bias) as a candle custom op with its own backward pass. candle's
//! grouped `conv2d` runs one small convolution per channel, and its backward
//! is not defined for groups; this op runs each `(image, channel)` plane in one
//! pass of shifted multiply-adds, planes in parallel.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::kernel::{run_cpu, Kernel};

/// Depthwise convolution: `(x (N, C, H, W), weight (C, 1, k, k))` to
/// `(N, C, Ho, Wo)` with `Ho = (H + 2·padding − k) / stride + 1`; with
/// `channel_major`, `x` is `(C, N, H, W)` and so is the output.
#[derive(Debug, Clone, Copy)]
pub struct DepthwiseConv {
    /// Step between output pixels, in input pixels.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Channels on the first axis, images on the second.
    pub channel_major: bool,
}

/// Sizes of one depthwise convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    channel_major: bool,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Dims {
    fn new(x: &Layout, weight: &Layout, op: DepthwiseConv) -> Result<Dims> {
        let (a, b, h, w) = x.shape().dims4()?;
        let (n, c) = if op.channel_major { (b, a) } else { (a, b) };
        let (cw, one, kh, kw) = weight.shape().dims4()?;
        if cw != c || one != 1 || kh != kw {
            candle_core::bail!(
                "depthwise conv: weight {:?} for {c} channels, expected ({c}, 1, k, k)",
                weight.shape().dims()
            );
        }
        Dims::from_sizes((n, c, h, w), kh, op)
    }

    /// Sizes of `n` images of `c` channels of `h × w` by `k × k` kernels.
    pub(crate) fn from_sizes(
        (n, c, h, w): (usize, usize, usize, usize),
        kh: usize,
        op: DepthwiseConv,
    ) -> Result<Dims> {
        if op.stride == 0 {
            candle_core::bail!("depthwise conv: stride 0");
        }
        if h + 2 * op.padding < kh || w + 2 * op.padding < kh {
            candle_core::bail!("depthwise conv: {kh}x{kh} kernel larger than the padded {h}x{w}");
        }
        Ok(Dims {
            channel_major: op.channel_major,
            n,
            c,
            h,
            w,
            k: kh,
            stride: op.stride,
            pad: op.padding,
            ho: (h + 2 * op.padding - kh) / op.stride + 1,
            wo: (w + 2 * op.padding - kh) / op.stride + 1,
        })
    }

    /// Output positions `lo..hi` (of `out` along an axis of `len` inputs) whose
    /// input `o·stride + tap − pad` lies inside `0..len`.
    fn valid(&self, tap: usize, len: usize, out: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = if tap >= self.pad {
            0
        } else {
            (self.pad - tap).div_ceil(s)
        };
        let hi = if len + self.pad > tap {
            ((len + self.pad - tap - 1) / s + 1).min(out)
        } else {
            0
        };
        (lo.min(out), hi.max(lo.min(out)))
    }

    /// The channel of plane `plane` (planes in memory order).
    fn channel(&self, plane: usize) -> usize {
        if self.channel_major {
            plane / self.n
        } else {
            plane % self.c
        }
    }

    /// The memory-order plane of image `img`, channel `ch`.
    fn plane(&self, img: usize, ch: usize) -> usize {
        if self.channel_major {
            ch * self.n + img
        } else {
            img * self.c + ch
        }
    }

    /// Output side `(ho, wo)`.
    pub(crate) fn out_side(&self) -> (usize, usize) {
        (self.ho, self.wo)
    }

    /// The output's shape.
    pub(crate) fn out_shape(&self) -> Shape {
        if self.channel_major {
            Shape::from((self.c, self.n, self.ho, self.wo))
        } else {
            Shape::from((self.n, self.c, self.ho, self.wo))
        }
    }

    /// The input index of output `o` at kernel tap `tap` (inside the valid range).
    fn input(&self, o: usize, tap: usize) -> usize {
        o * self.stride + tap - self.pad
    }
}

/// The runs that kernel tap `(ki, kj)` connects within one plane: for each
/// output row, `(first output, first input, count)`; output `first + t` reads
/// input `first + t·stride`.
fn tap_rows(d: &Dims, ki: usize, kj: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let (ylo, yhi) = d.valid(ki, d.h, d.ho);
    let (xlo, xhi) = d.valid(kj, d.w, d.wo);
    (ylo..yhi).map(move |oy| {
        (
            oy * d.wo + xlo,
            d.input(oy, ki) * d.w + d.input(xlo, kj),
            xhi - xlo,
        )
    })
}

/// `dst[t] += scale · src[t·stride]` for `t < dst.len()`.
fn axpy<T: WithDType>(dst: &mut [T], src: &[T], stride: usize, scale: T) {
    if stride == 1 {
        for (a, b) in dst.iter_mut().zip(src) {
            *a += scale * *b;
        }
    } else {
        for (a, b) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            *a += scale * *b;
        }
    }
}

/// `dst[t·stride] += scale · src[t]` for `t < src.len()`.
fn scatter<T: WithDType>(dst: &mut [T], src: &[T], stride: usize, scale: T) {
    if stride == 1 {
        for (a, b) in dst.iter_mut().zip(src) {
            *a += scale * *b;
        }
    } else {
        for (a, b) in dst.iter_mut().step_by(stride).zip(src) {
            *a += scale * *b;
        }
    }
}

/// `acc[t] += a[t] · b[t·stride]`: products kept apart (so the loop
/// vectorises), summed once at the end.
fn mul_acc<T: WithDType>(acc: &mut [T], a: &[T], b: &[T], stride: usize) {
    if stride == 1 {
        for ((s, x), y) in acc.iter_mut().zip(a).zip(b) {
            *s += *x * *y;
        }
    } else {
        for ((s, x), y) in acc.iter_mut().zip(a).zip(b.iter().step_by(stride)) {
            *s += *x * *y;
        }
    }
}

/// The input slice a run of `count` outputs reads from `first`.
fn span<T>(v: &[T], first: usize, count: usize, stride: usize) -> &[T] {
    &v[first..first + (count - 1) * stride + 1]
}

/// The convolution of `x` by `weight`.
pub(crate) fn fwd<T: WithDType>(x: &[T], weight: &[T], d: &Dims) -> Vec<T> {
    let (plane_in, plane_out, kk) = (d.h * d.w, d.ho * d.wo, d.k * d.k);
    let mut out = vec![T::zero(); d.n * d.c * plane_out];
    out.par_chunks_mut(plane_out)
        .zip(x.par_chunks(plane_in))
        .enumerate()
        .for_each(|(plane, (y, xp))| {
            let kernel = &weight[d.channel(plane) * kk..][..kk];
            for ki in 0..d.k {
                for kj in 0..d.k {
                    let wv = kernel[ki * d.k + kj];
                    for (o, i, count) in tap_rows(d, ki, kj).filter(|r| r.2 > 0) {
                        axpy(
                            &mut y[o..o + count],
                            span(xp, i, count, d.stride),
                            d.stride,
                            wv,
                        );
                    }
                }
            }
        });
    out
}

/// Packed `[dx, dweight]` from `x`, `weight` and the output gradient `dy`.
/// `extra` zeros follow, for the caller to fill.
pub(crate) fn bwd<T: WithDType>(x: &[T], weight: &[T], dy: &[T], d: &Dims, extra: usize) -> Vec<T> {
    let (plane_in, plane_out, kk) = (d.h * d.w, d.ho * d.wo, d.k * d.k);
    let mut out = vec![T::zero(); d.n * d.c * plane_in + d.c * kk + extra];
    let (dx, rest) = out.split_at_mut(d.n * d.c * plane_in);
    let dw = &mut rest[..d.c * kk];
    dx.par_chunks_mut(plane_in)
        .zip(dy.par_chunks(plane_out))
        .enumerate()
        .for_each(|(plane, (gx, gy))| {
            let kernel = &weight[d.channel(plane) * kk..][..kk];
            for ki in 0..d.k {
                for kj in 0..d.k {
                    let wv = kernel[ki * d.k + kj];
                    for (o, i, count) in tap_rows(d, ki, kj).filter(|r| r.2 > 0) {
                        let end = i + (count - 1) * d.stride + 1;
                        scatter(&mut gx[i..end], &gy[o..o + count], d.stride, wv);
                    }
                }
            }
        });
    // Per channel, images summed in order: independent of the thread count.
    dw.par_chunks_mut(kk).enumerate().for_each(|(ch, gw)| {
        let mut acc = vec![T::zero(); kk * d.wo];
        for img in 0..d.n {
            let plane = d.plane(img, ch);
            let xp = &x[plane * plane_in..][..plane_in];
            let gy = &dy[plane * plane_out..][..plane_out];
            for (tap, lanes) in acc.chunks_mut(d.wo).enumerate() {
                for (o, i, count) in tap_rows(d, tap / d.k, tap % d.k).filter(|r| r.2 > 0) {
                    let xs = span(xp, i, count, d.stride);
                    mul_acc(&mut lanes[..count], &gy[o..o + count], xs, d.stride);
                }
            }
        }
        for (g, lanes) in gw.iter_mut().zip(acc.chunks(d.wo)) {
            *g = lanes.iter().fold(T::zero(), |a, v| a + *v);
        }
    });
    out
}

struct Fwd(Dims);

impl Kernel for Fwd {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        fwd(i[0], i[1], &self.0)
    }
}

struct Bwd(Dims);

impl Kernel for Bwd {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        bwd(i[0], i[1], i[2], &self.0, 0)
    }
}

impl CustomOp2 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "depthwise-conv"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(l1, l2, *self)?;
        let out = run_cpu(&Fwd(d), "depthwise conv", &[(s1, l1), (s2, l2)])?;
        Ok((out, d.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &weight.contiguous()?,
            &grad_res.contiguous()?,
            &DepthwiseBwd(*self),
        )?;
        let xl = x.elem_count();
        let dx = packed.narrow(0, 0, xl)?.reshape(x.shape())?;
        let dw = packed
            .narrow(0, xl, weight.elem_count())?
            .reshape(weight.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Backward of [`DepthwiseConv`]: `(x, weight, dy)` to packed `[dx, dweight]`.
#[derive(Debug, Clone, Copy)]
struct DepthwiseBwd(DepthwiseConv);

impl CustomOp3 for DepthwiseBwd {
    fn name(&self) -> &'static str {
        "depthwise-conv-bwd"
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
        let d = Dims::new(l1, l2, self.0)?;
        if *l3.shape() != d.out_shape() {
            candle_core::bail!(
                "depthwise conv backward: gradient has shape {:?}",
                l3.shape()
            );
        }
        let len = d.n * d.c * d.h * d.w + d.c * d.k * d.k;
        let out = run_cpu(
            &Bwd(d),
            "depthwise conv backward",
            &[(s1, l1), (s2, l2), (s3, l3)],
        )?;
        Ok((out, Shape::from(len)))
    }
}
