//! ReLU followed by 2×2 max pooling (stride 2, an odd trailing row or
//! column dropped) as one pass over memory, with a backward pass that
//! differentiates again: the gradient goes to each window's maximum where it
//! is positive (every tied maximum, as candle's `max` does), through a
//! constant 0/1 gate, so a second derivative sees a linear map (max
//! pooling's second derivative is zero almost everywhere).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

use super::kernel::{run_cpu, Kernel};

/// `max_pool2x2(relu(y))` of `(A, B, H, W)` activations: `(A, B, H/2, W/2)`.
pub fn relu_pool(y: &Tensor) -> Result<Tensor> {
    let (a, b, h, w) = y.dims4()?;
    if h < 2 || w < 2 {
        candle_core::bail!("relu_pool: a {h}×{w} map has no 2×2 window");
    }
    y.contiguous()?.apply_op1(ReluPool(Planes { a, b, h, w }))
}

/// The constant gate of [`relu_pool`]'s backward pass: `(A, B, 2·(H/2),
/// 2·(W/2))`, 1 where `y` is positive and the maximum of its window
/// (`pooled` the op's output), else 0.
pub fn gate(y: &Tensor, pooled: &Tensor) -> Result<Tensor> {
    let (a, b, h, w) = y.dims4()?;
    if pooled.dims4()? != (a, b, h / 2, w / 2) {
        candle_core::bail!(
            "relu_pool gate: pooled {:?} is not the pooling of {:?}",
            pooled.dims(),
            y.dims()
        );
    }
    y.contiguous()?
        .apply_op2_no_bwd(&pooled.contiguous()?, &Gate(Planes { a, b, h, w }))
}

/// The gradient `(A, B, H, W)` of [`relu_pool`]'s input from that of its
/// output `dpooled` `(A, B, H/2, W/2)` through `gate`: each window's gradient
/// where the gate lets it, zero in a dropped row or column. Linear in
/// `dpooled`, with the window sum through the gate as its backward pass (and
/// this as that one's), so it differentiates again; the gate is constant.
pub fn unpool(gate: &Tensor, dpooled: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    let (a, b, h2, w2) = dpooled.dims4()?;
    if (h / 2, w / 2) != (h2, w2) || gate.dims4()? != (a, b, 2 * h2, 2 * w2) {
        candle_core::bail!(
            "unpool: gate {:?} and pooled gradient {:?} do not fit a {h}×{w} map",
            gate.dims(),
            dpooled.dims()
        );
    }
    let planes = Planes { a, b, h, w };
    gate.contiguous()?
        .apply_op2(&dpooled.contiguous()?, Unpool(planes))
}

/// `Σ` over each 2×2 window of `gate ⊙ g` (`g` `(A, B, H, W)`, `gate` as
/// from [`gate`]): the adjoint of [`unpool`].
fn gated_sum(gate: &Tensor, g: &Tensor, planes: Planes) -> Result<Tensor> {
    gate.contiguous()?
        .apply_op2(&g.contiguous()?, GatedSum(planes))
}

#[derive(Debug, Clone, Copy)]
struct Planes {
    a: usize,
    b: usize,
    h: usize,
    w: usize,
}

impl Planes {
    /// Calls `f(plane, i, j)` for each output position, `plane` counting
    /// the `A·B` planes.
    fn each(&self, mut f: impl FnMut(usize, usize, usize)) {
        for p in 0..self.a * self.b {
            for i in 0..self.h / 2 {
                for j in 0..self.w / 2 {
                    f(p, i, j);
                }
            }
        }
    }

    /// Width of the pooled part of a row, `2·(W/2)`.
    fn w2(&self) -> usize {
        2 * (self.w / 2)
    }

    /// Values of the gate, `A·B·2·(H/2)·2·(W/2)`.
    fn gate_len(&self) -> usize {
        self.a * self.b * 2 * (self.h / 2) * self.w2()
    }

    /// Calls `f(gate row start, input row start, pooled row start)` for each
    /// row of the pooled part of every plane (two per pooled row).
    fn rows(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (h2, w2) = (self.h / 2, self.w / 2);
        for p in 0..self.a * self.b {
            for i in 0..h2 {
                for r in 0..2 {
                    let row = 2 * i + r;
                    f(
                        (p * 2 * h2 + row) * 2 * w2,
                        (p * self.h + row) * self.w,
                        (p * h2 + i) * w2,
                    );
                }
            }
        }
    }

    /// The input offsets of window `(plane, i, j)`.
    fn window(&self, p: usize, i: usize, j: usize) -> [usize; 4] {
        let at = (p * self.h + 2 * i) * self.w + 2 * j;
        [at, at + 1, at + self.w, at + self.w + 1]
    }
}

struct ReluPool(Planes);
struct Gate(Planes);
/// `(gate, dpooled)` → the gated, upsampled gradient.
struct Unpool(Planes);
/// `(gate, g)` → the gated window sums.
struct GatedSum(Planes);

impl Kernel for ReluPool {
    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<T> {
        let d = self.0;
        let y = inputs[0];
        let mut out = Vec::with_capacity(d.a * d.b * (d.h / 2) * (d.w / 2));
        d.each(|p, i, j| {
            let m = d
                .window(p, i, j)
                .iter()
                .fold(T::zero(), |m, &k| if y[k] > m { y[k] } else { m });
            out.push(m);
        });
        out
    }
}

impl Kernel for Gate {
    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<T> {
        let d = self.0;
        let (y, pooled) = (inputs[0], inputs[1]);
        let mut out = vec![T::zero(); d.gate_len()];
        d.rows(|gate, input, pooled_at| {
            let (row, m) = (&y[input..][..d.w2()], &pooled[pooled_at..][..d.w / 2]);
            for (k, (o, &v)) in out[gate..][..d.w2()].iter_mut().zip(row).enumerate() {
                if v > T::zero() && v == m[k / 2] {
                    *o = T::one();
                }
            }
        });
        out
    }
}

impl Kernel for Unpool {
    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<T> {
        let d = self.0;
        let (gate, dp) = (inputs[0], inputs[1]);
        let mut out = vec![T::zero(); d.a * d.b * d.h * d.w];
        d.rows(|gate_at, input, pooled_at| {
            let (row, g) = (&gate[gate_at..][..d.w2()], &dp[pooled_at..][..d.w / 2]);
            for (k, (o, &m)) in out[input..][..d.w2()].iter_mut().zip(row).enumerate() {
                *o = m * g[k / 2];
            }
        });
        out
    }
}

impl Kernel for GatedSum {
    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<T> {
        let d = self.0;
        let (gate, g) = (inputs[0], inputs[1]);
        let mut out = vec![T::zero(); d.a * d.b * (d.h / 2) * (d.w / 2)];
        d.rows(|gate_at, input, pooled_at| {
            let (row, v) = (&gate[gate_at..][..d.w2()], &g[input..][..d.w2()]);
            let o = &mut out[pooled_at..][..d.w / 2];
            for (k, (&m, &x)) in row.iter().zip(v).enumerate() {
                o[k / 2] += m * x;
            }
        });
        out
    }
}

impl CustomOp2 for Unpool {
    fn name(&self) -> &'static str {
        "unpool2x2"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Planes { a, b, h, w } = self.0;
        let out = run_cpu(self, self.name(), &[(s1, l1), (s2, l2)])?;
        Ok((out, Shape::from((a, b, h, w))))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        _dpooled: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((None, Some(gated_sum(gate, grad, self.0)?)))
    }
}

impl CustomOp2 for GatedSum {
    fn name(&self) -> &'static str {
        "gated_sum2x2"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Planes { a, b, h, w } = self.0;
        let out = run_cpu(self, self.name(), &[(s1, l1), (s2, l2)])?;
        Ok((out, Shape::from((a, b, h / 2, w / 2))))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        _g: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((None, Some(unpool(gate, grad, (self.0.h, self.0.w))?)))
    }
}

impl CustomOp1 for ReluPool {
    fn name(&self) -> &'static str {
        "relu_pool2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Planes { a, b, h, w } = self.0;
        let out = run_cpu(self, self.name(), &[(s, l)])?;
        Ok((out, Shape::from((a, b, h / 2, w / 2))))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = gate(&arg.detach(), &res.detach())?;
        unpool(&g, grad, (self.0.h, self.0.w)).map(Some)
    }
}

impl CustomOp2 for Gate {
    fn name(&self) -> &'static str {
        "relu_pool2x2_gate"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Planes { a, b, h, w } = self.0;
        let out = run_cpu(self, self.name(), &[(s1, l1), (s2, l2)])?;
        Ok((out, Shape::from((a, b, 2 * (h / 2), 2 * (w / 2)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::{check_gradient, values};
    use candle_core::{Device, Var};

    /// candle's own ReLU and pooling (reshape and two `max`), whose backward
    /// passes are candle's.
    fn reference(y: &Tensor) -> Tensor {
        let (a, b, h, w) = y.dims4().unwrap();
        y.relu()
            .unwrap()
            .narrow(2, 0, 2 * (h / 2))
            .unwrap()
            .narrow(3, 0, 2 * (w / 2))
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((a, b, h / 2, 2, w / 2, 2))
            .unwrap()
            .max(5)
            .unwrap()
            .max(3)
            .unwrap()
    }

    #[test]
    fn forward_and_gradient_are_candles_relu_and_pooling() {
        for shape in [(2, 3, 4, 6), (1, 2, 7, 5), (3, 1, 3, 3)] {
            let (a, b, h, w) = shape;
            let len = a * b * h * w;
            let mut v = values(len, 7);
            // A tie and a window of negatives.
            v[1] = v[0].abs();
            v[0] = v[1];
            let y = Var::from_vec(v, shape, &Device::Cpu).unwrap();
            let k = Tensor::from_vec(
                values(a * b * (h / 2) * (w / 2), 8),
                (a, b, h / 2, w / 2),
                &Device::Cpu,
            )
            .unwrap();
            let ours = relu_pool(y.as_tensor()).unwrap();
            let theirs = reference(y.as_tensor());
            let diff: f64 = (&ours - &theirs)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(diff, 0.0, "{shape:?}");
            let grad = |t: &Tensor| -> Vec<f64> {
                let gs = t.mul(&k).unwrap().sum_all().unwrap().backward().unwrap();
                gs.get(y.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            assert_eq!(grad(&ours), grad(&theirs), "{shape:?}");
            // The gate and unpool give the same gradient by hand.
            let g = gate(y.as_tensor(), &ours).unwrap();
            let by_hand: Vec<f64> = unpool(&g, &k, (h, w))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(by_hand, grad(&ours), "{shape:?}");
        }
        let y = Tensor::zeros((1, 1, 1, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(relu_pool(&y).is_err());
    }

    #[test]
    fn unpool_and_its_backward_are_adjoint_and_match_finite_differences() {
        for shape in [(2, 3, 4, 6), (1, 2, 7, 5)] {
            let (a, b, h, w) = shape;
            let y = Tensor::from_vec(values(a * b * h * w, 3), shape, &Device::Cpu).unwrap();
            let pooled = relu_pool(&y).unwrap();
            let g = gate(&y, &pooled).unwrap();
            let small = a * b * (h / 2) * (w / 2);
            // Unpool from its definition: gate × the window's value, 0 outside.
            let d = values(small, 4);
            let dt = Tensor::from_vec(d.clone(), (a, b, h / 2, w / 2), &Device::Cpu).unwrap();
            let up: Vec<f64> = unpool(&g, &dt, (h, w))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let gv: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
            for p in 0..a * b {
                for r in 0..h {
                    for c in 0..w {
                        let want = if r < 2 * (h / 2) && c < 2 * (w / 2) {
                            gv[(p * 2 * (h / 2) + r) * 2 * (w / 2) + c]
                                * d[(p * (h / 2) + r / 2) * (w / 2) + c / 2]
                        } else {
                            0.0
                        };
                        assert_eq!(up[(p * h + r) * w + c], want, "{shape:?} ({p}, {r}, {c})");
                    }
                }
            }
            // Its backward, through f(d) = Σ (unpool(d) ⊙ k)², by central
            // differences (f is quadratic: exact up to rounding); and the
            // backward's backward through f₂(e) = Σ (gated_sum(e) ⊙ k₂)².
            let k = Tensor::from_vec(values(a * b * h * w, 5), shape, &Device::Cpu).unwrap();
            let f = |x: &Tensor| {
                unpool(&g, x, (h, w))
                    .unwrap()
                    .mul(&k)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
            };
            check_gradient(&f, &d, &[a, b, h / 2, w / 2]);
            let k2 =
                Tensor::from_vec(values(small, 6), (a, b, h / 2, w / 2), &Device::Cpu).unwrap();
            let planes = Planes { a, b, h, w };
            let f2 = |x: &Tensor| {
                gated_sum(&g, x, planes)
                    .unwrap()
                    .mul(&k2)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
            };
            check_gradient(&f2, &values(a * b * h * w, 7), &[a, b, h, w]);
        }
    }
}
