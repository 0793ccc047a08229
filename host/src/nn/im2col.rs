//! The 3×3, padding-1 im2col of channel-first activations and its adjoint
//! (col2im) as custom ops, each the other's backward pass, so a convolution
//! built on them differentiates to any order (MAML's second order).
//!
//! Layout: activations `(C, N, H, W)`; the im2col matrix `(C·9, N·H·W)`,
//! row `(c, dy, dx)`, column `(n, y, x)`, holding the input at
//! `(c, n, y + dy − 1, x + dx − 1)`, or 0 where that falls outside the image.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};

use super::kernel::{run_cpu, Kernel};

/// The im2col matrix `(C·9, N·H·W)` of contiguous or strided `(C, N, H, W)`
/// activations.
pub fn im2col(a: &Tensor) -> Result<Tensor> {
    let (c, n, h, w) = a.dims4()?;
    a.contiguous()?.apply_op1(Unfold(Dims { c, n, h, w }))
}

/// The adjoint of [`im2col`]: activations `(C, N, H, W)` with each tap of
/// `cols` `(C·9, N·H·W)` added where it was read from.
pub fn col2im(cols: &Tensor, (c, n, h, w): (usize, usize, usize, usize)) -> Result<Tensor> {
    let dims = Dims { c, n, h, w };
    if cols.dims2()? != (c * 9, n * h * w) {
        candle_core::bail!(
            "col2im: a matrix of {:?} is not the im2col of ({c}, {n}, {h}, {w})",
            cols.dims()
        );
    }
    cols.contiguous()?.apply_op1(Fold(dims))
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    c: usize,
    n: usize,
    h: usize,
    w: usize,
}

impl Dims {
    /// For each tap `(dy, dx)`: the output columns `x` whose input column
    /// `x + dx − 1` is inside the image, as `x0..x1`.
    fn columns(&self, dx: usize) -> (usize, usize) {
        (usize::from(dx == 0), self.w - usize::from(dx == 2))
    }

    /// Calls `f(input row start, cols row start, x0, x1)` for every run of
    /// one tap over one image row that reads inside the image (`x` from `x0`
    /// to `x1` in the im2col row, `x + dx − 1` in the input row).
    fn runs(&self, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let Dims { c, n, h, w } = *self;
        let plane = n * h * w;
        for ci in 0..c {
            for dy in 0..3 {
                for dx in 0..3 {
                    let row = (ci * 9 + dy * 3 + dx) * plane;
                    let (x0, x1) = self.columns(dx);
                    for ni in 0..n {
                        for y in 0..h {
                            let Some(yy) = (y + dy).checked_sub(1).filter(|&v| v < h) else {
                                continue;
                            };
                            let src = ((ci * n + ni) * h + yy) * w;
                            let dst = row + (ni * h + y) * w;
                            f(src, dst, x0, x1, dx);
                        }
                    }
                }
            }
        }
    }
}

/// im2col (forward) of [`Dims`].
struct Unfold(Dims);
/// col2im (forward) of [`Dims`].
struct Fold(Dims);

impl Kernel for Unfold {
    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<T> {
        let d = self.0;
        let a = inputs[0];
        let mut out = vec![T::zero(); d.c * 9 * d.n * d.h * d.w];
        d.runs(|src, dst, x0, x1, dx| {
            // Input column x + dx − 1 for x in x0..x1.
            let from = src + x0 + dx - 1;
            out[dst + x0..dst + x1].copy_from_slice(&a[from..from + (x1 - x0)]);
        });
        out
    }
}

impl Kernel for Fold {
    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<T> {
        let d = self.0;
        let cols = inputs[0];
        let mut out = vec![T::zero(); d.c * d.n * d.h * d.w];
        d.runs(|src, dst, x0, x1, dx| {
            let to = src + x0 + dx - 1;
            for (o, &v) in out[to..to + (x1 - x0)]
                .iter_mut()
                .zip(&cols[dst + x0..dst + x1])
            {
                *o += v;
            }
        });
        out
    }
}

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "im2col3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Dims { c, n, h, w } = self.0;
        let out = run_cpu(self, self.name(), &[(s, l)])?;
        Ok((out, Shape::from((c * 9, n * h * w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        grad.contiguous()?.apply_op1(Fold(self.0)).map(Some)
    }
}

impl CustomOp1 for Fold {
    fn name(&self) -> &'static str {
        "col2im3x3"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Dims { c, n, h, w } = self.0;
        let out = run_cpu(self, self.name(), &[(s, l)])?;
        Ok((out, Shape::from((c, n, h, w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        grad.contiguous()?.apply_op1(Unfold(self.0)).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::{check_gradient, values};
    use candle_core::Device;

    /// im2col from its definition, in f64.
    fn naive(a: &[f64], (c, n, h, w): (usize, usize, usize, usize)) -> Vec<f64> {
        let mut out = Vec::new();
        for ci in 0..c {
            for dy in 0..3 {
                for dx in 0..3 {
                    for ni in 0..n {
                        for y in 0..h {
                            for x in 0..w {
                                let (yy, xx) = (y as i64 + dy as i64 - 1, x as i64 + dx as i64 - 1);
                                let inside =
                                    yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w;
                                out.push(if inside {
                                    a[((ci * n + ni) * h + yy as usize) * w + xx as usize]
                                } else {
                                    0.0
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn im2col_is_its_definition_and_col2im_its_adjoint() {
        for dims in [(2, 3, 5, 4), (1, 1, 1, 1), (3, 2, 2, 7), (2, 2, 6, 6)] {
            let (c, n, h, w) = dims;
            let a = values(c * n * h * w, 1);
            let t = Tensor::from_vec(a.clone(), (c, n, h, w), &Device::Cpu).unwrap();
            let got: Vec<f64> = im2col(&t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got, naive(&a, dims), "{dims:?}");
            // <im2col(a), b> = <a, col2im(b)> for any b.
            let b = values(c * 9 * n * h * w, 2);
            let bt = Tensor::from_vec(b.clone(), (c * 9, n * h * w), &Device::Cpu).unwrap();
            let folded: Vec<f64> = col2im(&bt, dims)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let lhs: f64 = naive(&a, dims).iter().zip(&b).map(|(x, y)| x * y).sum();
            let rhs: f64 = a.iter().zip(&folded).map(|(x, y)| x * y).sum();
            assert!((lhs - rhs).abs() < 1e-9, "{dims:?}: {lhs} vs {rhs}");
        }
        let t = Tensor::zeros((9, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(col2im(&t, (1, 1, 2, 3)).is_err());
    }

    /// The gradient of `Σ (op(x) ⊙ k)²` against central differences, for
    /// `op` im2col or col2im (each one's backward is the other op, so this
    /// checks both as forward and as backward passes, which is all that a
    /// higher-order derivative runs).
    fn check_op(op: impl Fn(&Tensor) -> Tensor, shape: &[usize], out_len: usize) {
        let len: usize = shape.iter().product();
        let k = Tensor::from_vec(values(out_len, 4), out_len, &Device::Cpu).unwrap();
        let f = |x: &Tensor| -> Tensor {
            let y = op(x).flatten_all().unwrap();
            y.mul(&k).unwrap().sqr().unwrap().sum_all().unwrap()
        };
        check_gradient(&f, &values(len, 3), shape);
    }

    #[test]
    fn gradients_through_both_ops_match_finite_differences() {
        let dims = (2, 2, 3, 4);
        let (c, n, h, w) = dims;
        let (small, big) = (c * n * h * w, c * 9 * n * h * w);
        check_op(|a| im2col(a).unwrap(), &[c, n, h, w], big);
        check_op(|b| col2im(b, dims).unwrap(), &[c * 9, n * h * w], small);
    }
}
