//! 2-D convolution (stride 1, zero padding) as a candle custom op: forward,
//! weight gradient and input gradient are all large matrix products over
//! im2col/col2im buffers (the `gemm` crate, already in candle's tree), with
//! images processed in parallel.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::kernel::{run_cpu, Kernel};

/// Images whose weight gradients are summed together before the groups are
/// added in order: fixed, so results do not depend on the thread count.
const GROUP: usize = 8;

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Dims {
    fn new(x: &Layout, w: &Layout, pad: usize) -> Result<Dims> {
        let (n, cin, h, wd) = x.shape().dims4()?;
        let (cout, cin_w, kh, kw) = w.shape().dims4()?;
        if cin != cin_w {
            candle_core::bail!("conv: input has {cin} channels, weight expects {cin_w}");
        }
        Dims::from_sizes((n, cin, h, wd), (cout, kh, kw), pad)
    }

    /// Sizes of a convolution of `(n, cin, h, w)` inputs by `cout` kernels of `kh × kw`.
    pub(crate) fn from_sizes(
        (n, cin, h, wd): (usize, usize, usize, usize),
        (cout, kh, kw): (usize, usize, usize),
        pad: usize,
    ) -> Result<Dims> {
        if h + 2 * pad < kh || wd + 2 * pad < kw {
            candle_core::bail!("conv: {kh}x{kw} kernel larger than the padded {h}x{wd} input");
        }
        Ok(Dims {
            n,
            cin,
            h,
            w: wd,
            cout,
            kh,
            kw,
            pad,
            ho: h + 2 * pad - kh + 1,
            wo: wd + 2 * pad - kw + 1,
        })
    }

    /// Input channels.
    pub(crate) fn cin(&self) -> usize {
        self.cin
    }

    /// Output sizes `(n, cout, ho, wo)`.
    pub(crate) fn out_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.cout, self.ho, self.wo)
    }

    /// Rows of the im2col matrix (`cin·kh·kw`).
    pub(crate) fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Columns of the im2col matrix (output pixels).
    pub(crate) fn p(&self) -> usize {
        self.ho * self.wo
    }
}

/// Output columns `ox` whose input column `ox + kj - pad` lies inside the
/// image: `lo..hi`, with `ox + kj - pad` running over `lo + kj - pad..`.
fn valid_cols(d: &Dims, kj: usize) -> (usize, usize) {
    let lo = d.pad.saturating_sub(kj).min(d.wo);
    let hi = (d.w + d.pad).saturating_sub(kj).min(d.wo).max(lo);
    (lo, hi)
}

/// One image `(cin, h, w)` into its im2col matrix `(cin·kh·kw, ho·wo)`.
fn im2col<T: WithDType>(x: &[T], d: &Dims, col: &mut [T]) {
    let p = d.p();
    for ci in 0..d.cin {
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let row = &mut col[((ci * d.kh + ki) * d.kw + kj) * p..][..p];
                let (lo, hi) = valid_cols(d, kj);
                for oy in 0..d.ho {
                    let iy = oy + ki;
                    let dst = &mut row[oy * d.wo..(oy + 1) * d.wo];
                    if iy < d.pad || iy >= d.h + d.pad {
                        dst.fill(T::zero());
                        continue;
                    }
                    let src = &x[(ci * d.h + iy - d.pad) * d.w..][..d.w];
                    dst[..lo].fill(T::zero());
                    dst[hi..].fill(T::zero());
                    let start = lo + kj - d.pad;
                    dst[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                }
            }
        }
    }
}

/// Adds an im2col-shaped gradient back onto one image `(cin, h, w)`.
fn col2im<T: WithDType>(col: &[T], d: &Dims, x: &mut [T]) {
    let p = d.p();
    x.fill(T::zero());
    for ci in 0..d.cin {
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let row = &col[((ci * d.kh + ki) * d.kw + kj) * p..][..p];
                let (lo, hi) = valid_cols(d, kj);
                let start = lo + kj - d.pad.min(lo + kj);
                for oy in 0..d.ho {
                    let iy = oy + ki;
                    if iy < d.pad || iy >= d.h + d.pad {
                        continue;
                    }
                    let dst = &mut x[(ci * d.h + iy - d.pad) * d.w..][..d.w];
                    for (t, g) in dst[start..start + hi - lo]
                        .iter_mut()
                        .zip(&row[oy * d.wo + lo..oy * d.wo + hi])
                    {
                        *t += *g;
                    }
                }
            }
        }
    }
}

/// A matrix operand: values with row and column strides.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    /// The values.
    pub(crate) data: &'a [T],
    /// Step between rows.
    pub(crate) rs: usize,
    /// Step between columns.
    pub(crate) cs: usize,
}

/// `dst (m × n, row-major) [+]= a (m × k) · b (k × n)`, single-threaded
/// (the convolutions here run images in parallel instead).
fn matmul<T: WithDType>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    accumulate: bool,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
) {
    matmul_with(gemm::Parallelism::None, (m, n, k), dst, accumulate, a, b)
}

/// [`matmul`] with gemm's own `parallelism`.
pub(crate) fn matmul_with<T: WithDType>(
    parallelism: gemm::Parallelism,
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    accumulate: bool,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |mat: Mat<'_, T>, rows: usize, cols: usize| {
        (rows - 1) * mat.rs + (cols.max(1) - 1) * mat.cs
    };
    assert!(dst.len() >= m * n, "matmul: destination too small");
    assert!(
        k == 0 || a.data.len() > last(a, m, k),
        "matmul: left operand too small"
    );
    assert!(
        k == 0 || b.data.len() > last(b, k, n),
        "matmul: right operand too small"
    );
    // SAFETY: the asserts above keep every index gemm touches inside the slices:
    // dst spans m×n row-major, `a` and `b` span their strided extents.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Convolution with stride 1 and `padding` zeros on each side:
/// `(x (N, Cin, H, W), weight (Cout, Cin, kh, kw), bias (Cout))` to
/// `(N, Cout, Ho, Wo)`.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dOp {
    /// Zero padding on each side.
    pub padding: usize,
}

pub(crate) fn conv_fwd<T: WithDType>(x: &[T], wt: &[T], bias: &[T], d: &Dims) -> Vec<T> {
    let (k, p) = (d.k(), d.p());
    let mut out = vec![T::zero(); d.n * d.cout * p];
    out.par_chunks_mut(d.cout * p)
        .zip(x.par_chunks(d.cin * d.h * d.w))
        .for_each_init(
            || vec![T::zero(); k * p],
            |col, (y, xn)| {
                im2col(xn, d, col);
                for (row, b) in y.chunks_mut(p).zip(bias) {
                    row.fill(*b);
                }
                matmul(
                    d.cout,
                    p,
                    k,
                    y,
                    true,
                    Mat {
                        data: wt,
                        rs: k,
                        cs: 1,
                    },
                    Mat {
                        data: col,
                        rs: p,
                        cs: 1,
                    },
                );
            },
        );
    out
}

/// `[dx, dweight, dbias]`, followed by `extra` zeros for the caller to fill.
pub(crate) fn conv_bwd<T: WithDType>(
    x: &[T],
    wt: &[T],
    dy: &[T],
    d: &Dims,
    extra: usize,
) -> Vec<T> {
    let (k, p) = (d.k(), d.p());
    let image = d.cin * d.h * d.w;
    let mut out = vec![T::zero(); d.n * image + d.cout * k + d.cout + extra];
    let (dx, rest) = out.split_at_mut(d.n * image);
    // Input gradient: dcol = Wᵀ · dy_n, then col2im.
    dx.par_chunks_mut(image)
        .zip(dy.par_chunks(d.cout * p))
        .for_each_init(
            || vec![T::zero(); k * p],
            |dcol, (dxn, dyn_)| {
                matmul(
                    k,
                    p,
                    d.cout,
                    dcol,
                    false,
                    Mat {
                        data: wt,
                        rs: 1,
                        cs: k,
                    },
                    Mat {
                        data: dyn_,
                        rs: p,
                        cs: 1,
                    },
                );
                col2im(dcol, d, dxn);
            },
        );
    // Weight gradient: Σ_n dy_n · col_nᵀ, in fixed groups of images.
    let groups: Vec<Vec<T>> = (0..d.n.div_ceil(GROUP))
        .into_par_iter()
        .map(|g| {
            let mut col = vec![T::zero(); k * p];
            let mut acc = vec![T::zero(); d.cout * k];
            for i in g * GROUP..((g + 1) * GROUP).min(d.n) {
                im2col(&x[i * image..(i + 1) * image], d, &mut col);
                let dyn_ = &dy[i * d.cout * p..(i + 1) * d.cout * p];
                matmul(
                    d.cout,
                    k,
                    p,
                    &mut acc,
                    true,
                    Mat {
                        data: dyn_,
                        rs: p,
                        cs: 1,
                    },
                    Mat {
                        data: &col,
                        rs: 1,
                        cs: p,
                    },
                );
            }
            acc
        })
        .collect();
    let (dw, rest) = rest.split_at_mut(d.cout * k);
    let db = &mut rest[..d.cout];
    for g in &groups {
        for (a, v) in dw.iter_mut().zip(g) {
            *a += *v;
        }
    }
    // Bias gradient: Σ over images and pixels, per output channel.
    for (c, b) in db.iter_mut().enumerate() {
        *b = (0..d.n).fold(T::zero(), |acc, i| {
            acc + dy[(i * d.cout + c) * p..][..p]
                .iter()
                .fold(T::zero(), |s, v| s + *v)
        });
    }
    out
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d-gemm"
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
        let d = Dims::new(l1, l2, self.padding)?;
        if l3.shape().elem_count() != d.cout {
            candle_core::bail!("conv: bias needs {} values", d.cout);
        }
        let out = run_cpu(&ConvFwd(d), "conv", &[(s1, l1), (s2, l2), (s3, l3)])?;
        Ok((out, Shape::from((d.n, d.cout, d.ho, d.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &weight.contiguous()?,
            &grad_res.contiguous()?,
            &Conv2dBwd {
                padding: self.padding,
            },
        )?;
        let (xl, wl) = (x.elem_count(), weight.elem_count());
        let dx = packed.narrow(0, 0, xl)?.reshape(x.shape())?;
        let dw = packed.narrow(0, xl, wl)?.reshape(weight.shape())?;
        let db = packed
            .narrow(0, xl + wl, bias.elem_count())?
            .reshape(bias.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Backward of [`Conv2dOp`]: `(x, weight, dy)` to packed `[dx, dweight, dbias]`.
#[derive(Debug, Clone, Copy)]
struct Conv2dBwd {
    padding: usize,
}

impl CustomOp3 for Conv2dBwd {
    fn name(&self) -> &'static str {
        "conv2d-gemm-bwd"
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
        let d = Dims::new(l1, l2, self.padding)?;
        if l3.shape().dims() != [d.n, d.cout, d.ho, d.wo] {
            candle_core::bail!("conv backward: gradient has shape {:?}", l3.shape());
        }
        let len = d.n * d.cin * d.h * d.w + d.cout * d.k() + d.cout;
        let out = run_cpu(
            &ConvBwd(d),
            "conv backward",
            &[(s1, l1), (s2, l2), (s3, l3)],
        )?;
        Ok((out, Shape::from(len)))
    }
}

struct ConvFwd(Dims);

impl Kernel for ConvFwd {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        conv_fwd(i[0], i[1], i[2], &self.0)
    }
}

struct ConvBwd(Dims);

impl Kernel for ConvBwd {
    fn run<T: WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        conv_bwd(i[0], i[1], i[2], &self.0, 0)
    }
}
