//! The fused kernels against candle's own ops (forward and autograd) and
//! finite differences, on odd shapes too.
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{BatchNormConfig, VarBuilder, VarMap};
use fewshot_host::nn::encoder::BatchNorm2d;
use fewshot_host::nn::ops::MaxPool2x2;
use fewshot_host::nn::pool::max_pool2x2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

const SHAPES: [[usize; 4]; 4] = [[2, 3, 4, 4], [3, 5, 7, 5], [1, 2, 3, 3], [4, 1, 6, 9]];

#[test]
fn batch_norm_matches_candle_forward_backward_and_running_stats() {
    for (k, shape) in SHAPES.iter().enumerate() {
        let c = shape[1];
        let x = Var::from_tensor(&tensor(shape, k as u64)).unwrap();
        let gamma = tensor(&[c], 100 + k as u64);
        let beta = tensor(&[c], 200 + k as u64);
        let dy = tensor(shape, 300 + k as u64);
        let run = |fused: bool| {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
            let y = if fused {
                let bn = BatchNorm2d::new(c, vb.clone()).unwrap();
                varmap.data().lock().unwrap()["weight"].set(&gamma).unwrap();
                varmap.data().lock().unwrap()["bias"].set(&beta).unwrap();
                bn.forward_t(x.as_tensor(), true).unwrap()
            } else {
                let cfg = BatchNormConfig {
                    eps: 1e-5,
                    remove_mean: true,
                    affine: true,
                    momentum: 0.1,
                };
                let bn = candle_nn::batch_norm(c, cfg, vb.clone()).unwrap();
                varmap.data().lock().unwrap()["weight"].set(&gamma).unwrap();
                varmap.data().lock().unwrap()["bias"].set(&beta).unwrap();
                bn.forward_t(x.as_tensor(), true).unwrap()
            };
            let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let data = varmap.data().lock().unwrap();
            let g = |t: &Tensor| grads.get(t).unwrap().clone();
            (
                y,
                g(x.as_tensor()),
                g(data["weight"].as_tensor()),
                g(data["bias"].as_tensor()),
                data["running_mean"].as_tensor().copy().unwrap(),
                data["running_var"].as_tensor().copy().unwrap(),
            )
        };
        let (a, b) = (run(true), run(false));
        for (name, p, q) in [
            ("y", &a.0, &b.0),
            ("dx", &a.1, &b.1),
            ("dgamma", &a.2, &b.2),
            ("dbeta", &a.3, &b.3),
            ("running_mean", &a.4, &b.4),
            ("running_var", &a.5, &b.5),
        ] {
            let d = max_diff(p, q);
            assert!(d < 1e-10, "{shape:?} {name}: {d}");
        }
    }
}

#[test]
fn batch_norm_gradient_matches_finite_differences() {
    let shape = [3, 2, 3, 5];
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let bn = BatchNorm2d::new(2, vb).unwrap();
    varmap.data().lock().unwrap()["weight"]
        .set(&tensor(&[2], 7))
        .unwrap();
    let x = Var::from_tensor(&tensor(&shape, 8)).unwrap();
    let dy = tensor(&shape, 9);
    let f = |x: &Tensor| {
        (bn.forward_t(x, true).unwrap() * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let grad = f(x.as_tensor())
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for i in (0..base.len()).step_by(7) {
        let at = |d: f64| {
            let mut v = base.clone();
            v[i] += d;
            f(&Tensor::from_vec(v, &shape, &Device::Cpu).unwrap())
                .to_scalar::<f64>()
                .unwrap()
        };
        let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
        assert!(
            (numeric - grad[i]).abs() < 1e-6 + 1e-5 * numeric.abs(),
            "x[{i}]: {} vs {numeric}",
            grad[i]
        );
    }
}

#[test]
fn max_pool_matches_reference_and_finite_differences() {
    for (k, shape) in SHAPES.iter().enumerate() {
        let x = Var::from_tensor(&tensor(shape, 50 + k as u64)).unwrap();
        let fused = x.as_tensor().apply_op1(MaxPool2x2).unwrap();
        let reference = max_pool2x2(x.as_tensor()).unwrap();
        assert_eq!(fused.dims(), reference.dims());
        assert_eq!(max_diff(&fused, &reference), 0.0, "{shape:?}");
        let w = tensor(fused.dims(), 60 + k as u64);
        let f = |x: &Tensor| {
            (x.apply_op1(MaxPool2x2).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let grad = f(x.as_tensor())
            .backward()
            .unwrap()
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                f(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!(
                (numeric - grad[i]).abs() < 1e-6,
                "{shape:?} x[{i}]: {} vs {numeric}",
                grad[i]
            );
        }
    }
}

#[test]
fn conv_matches_candle_forward_and_autograd() {
    use fewshot_host::nn::conv::Conv2dOp;
    // (n, cin, h, w, cout, k, padding)
    for (case, &(n, cin, h, w, cout, k, pad)) in [
        (2, 3, 5, 7, 4, 3, 1),
        (9, 1, 6, 6, 2, 3, 1),
        (3, 2, 4, 5, 3, 1, 0),
        (2, 2, 5, 4, 3, 3, 0),
        (1, 4, 3, 3, 5, 3, 2),
    ]
    .iter()
    .enumerate()
    {
        let s = case as u64 * 10;
        let x = Var::from_tensor(&tensor(&[n, cin, h, w], s)).unwrap();
        let wt = Var::from_tensor(&tensor(&[cout, cin, k, k], s + 1)).unwrap();
        let b = Var::from_tensor(&tensor(&[cout], s + 2)).unwrap();
        let fused = x
            .as_tensor()
            .apply_op3(wt.as_tensor(), b.as_tensor(), Conv2dOp { padding: pad })
            .unwrap();
        let reference = x
            .as_tensor()
            .conv2d(wt.as_tensor(), pad, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.as_tensor().reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        assert_eq!(fused.dims(), reference.dims());
        assert!(max_diff(&fused, &reference) < 1e-12, "case {case} forward");
        let dy = tensor(fused.dims(), s + 3);
        let ga = (&fused * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (&reference * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("dx", &x), ("dw", &wt), ("db", &b)] {
            let d = max_diff(
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-11, "case {case} {name}: {d}");
        }
    }
}

/// Checks the gradients autograd gives `f(x, w)` (a scalar) with respect to
/// `x` and `w` against central differences, at every `every`-th entry.
fn assert_gradients_by_differences(
    x: &Var,
    wt: &Var,
    f: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    every: usize,
    label: &str,
) {
    let grads = f(x.as_tensor(), wt.as_tensor()).backward().unwrap();
    for (var, is_x) in [(x, true), (wt, false)] {
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in (0..base.len()).step_by(every) {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap();
                let out = if is_x {
                    f(&t, wt.as_tensor())
                } else {
                    f(x.as_tensor(), &t)
                };
                out.to_scalar::<f64>().unwrap()
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!(
                (numeric - g[i]).abs() < 1e-6 + 1e-6 * numeric.abs(),
                "{label} {} [{i}]: {} vs {numeric}",
                if is_x { "dx" } else { "dw" },
                g[i]
            );
        }
    }
}

#[test]
fn conv_gradient_matches_finite_differences() {
    use fewshot_host::nn::conv::Conv2dOp;
    let x = Var::from_tensor(&tensor(&[3, 2, 5, 4], 70)).unwrap();
    let wt = Var::from_tensor(&tensor(&[3, 2, 3, 3], 71)).unwrap();
    let b = tensor(&[3], 72);
    let dy = tensor(&[3, 3, 5, 4], 73);
    let f = |x: &Tensor, w: &Tensor| {
        (x.apply_op3(w, &b, Conv2dOp { padding: 1 }).unwrap() * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    assert_gradients_by_differences(&x, &wt, &f, 5, "conv");
}

#[test]
fn fused_bn_relu_pool_matches_the_composition() {
    for (k, shape) in SHAPES.iter().enumerate() {
        let c = shape[1];
        let x = Var::from_tensor(&tensor(shape, 80 + k as u64)).unwrap();
        let gamma = tensor(&[c], 90 + k as u64);
        let beta = tensor(&[c], 95 + k as u64);
        let run = |fused: bool| {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
            let bn = BatchNorm2d::new(c, vb).unwrap();
            varmap.data().lock().unwrap()["weight"].set(&gamma).unwrap();
            varmap.data().lock().unwrap()["bias"].set(&beta).unwrap();
            let y = if fused {
                bn.forward_relu_pool(x.as_tensor(), true).unwrap()
            } else {
                bn.forward_t(x.as_tensor(), true)
                    .unwrap()
                    .relu()
                    .unwrap()
                    .apply_op1(MaxPool2x2)
                    .unwrap()
            };
            let dy = tensor(y.dims(), 99);
            let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
            let data = varmap.data().lock().unwrap();
            let g = |t: &Tensor| grads.get(t).unwrap().clone();
            vec![
                y.clone(),
                g(x.as_tensor()),
                g(data["weight"].as_tensor()),
                g(data["bias"].as_tensor()),
                data["running_mean"].as_tensor().copy().unwrap(),
                data["running_var"].as_tensor().copy().unwrap(),
            ]
        };
        let (a, b) = (run(true), run(false));
        for (i, name) in ["y", "dx", "dgamma", "dbeta", "running_mean", "running_var"]
            .iter()
            .enumerate()
        {
            let d = max_diff(&a[i], &b[i]);
            assert!(d < 1e-10, "{shape:?} {name}: {d}");
        }
    }
}

#[test]
fn fused_conv_block_matches_conv_then_bn_relu_pool() {
    use fewshot_host::nn::encoder::{Conv3x3, ConvBlock};
    use fewshot_host::nn::init::seeded_init;
    for (k, &(n, cin, h, w, cout)) in [(3, 2, 6, 6, 4), (2, 1, 7, 5, 3), (5, 3, 4, 4, 2)]
        .iter()
        .enumerate()
    {
        let x = Var::from_tensor(&tensor(&[n, cin, h, w], 110 + k as u64)).unwrap();
        let run = |fused: bool| {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
            let y = if fused {
                let block = ConvBlock::new(cin, cout, vb).unwrap();
                seeded_init(&varmap, 7).unwrap();
                block.forward_t(x.as_tensor(), true).unwrap()
            } else {
                let conv = Conv3x3::new(cin, cout, vb.pp("conv")).unwrap();
                let bn = BatchNorm2d::new(cout, vb.pp("bn")).unwrap();
                seeded_init(&varmap, 7).unwrap();
                bn.forward_relu_pool(&conv.forward(x.as_tensor()).unwrap(), true)
                    .unwrap()
            };
            let dy = tensor(y.dims(), 120);
            let loss = (&y * &dy).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            // A second backward pass finds the kept convolution output gone and
            // recomputes it: same gradients.
            let again = loss.backward().unwrap();
            assert_eq!(
                max_diff(
                    grads.get(x.as_tensor()).unwrap(),
                    again.get(x.as_tensor()).unwrap()
                ),
                0.0
            );
            let data = varmap.data().lock().unwrap();
            let mut out = vec![
                ("y".to_string(), y.clone()),
                ("dx".into(), grads.get(x.as_tensor()).unwrap().clone()),
            ];
            let mut names: Vec<_> = data.keys().cloned().collect();
            names.sort();
            for name in names {
                let v = &data[&name];
                match grads.get(v.as_tensor()) {
                    Some(g) => out.push((format!("d {name}"), g.clone())),
                    None => out.push((name.clone(), v.as_tensor().copy().unwrap())),
                }
            }
            out
        };
        let (a, b) = (run(true), run(false));
        assert_eq!(
            a.len(),
            8,
            "y, dx, four parameter gradients, two running statistics"
        );
        for ((name, p), (name_b, q)) in a.iter().zip(&b) {
            assert_eq!(name, name_b);
            let d = max_diff(p, q);
            assert!(d < 1e-10, "case {k} {name}: {d}");
        }
    }
}

/// Depthwise cases: (n, c, h, w, k, stride, padding), odd sizes and strides included.
const DEPTHWISE: [(usize, usize, usize, usize, usize, usize, usize); 6] = [
    (2, 3, 5, 7, 3, 1, 1),
    (3, 4, 8, 8, 3, 2, 1),
    (2, 2, 7, 5, 3, 2, 1),
    (1, 5, 4, 4, 4, 1, 0),
    (2, 3, 6, 5, 3, 3, 2),
    (4, 1, 3, 3, 1, 1, 0),
];

#[test]
fn depthwise_conv_matches_candle_grouped_conv() {
    use fewshot_host::nn::depthwise::DepthwiseConv;
    for (case, &(n, c, h, w, k, stride, padding)) in DEPTHWISE.iter().enumerate() {
        let s = 500 + case as u64 * 10;
        let x = tensor(&[n, c, h, w], s);
        let wt = tensor(&[c, 1, k, k], s + 1);
        let op = |channel_major| DepthwiseConv {
            stride,
            padding,
            channel_major,
        };
        let fused = x.apply_op2(&wt, op(false)).unwrap();
        let reference = x.conv2d(&wt, padding, stride, 1, c).unwrap();
        assert_eq!(fused.dims(), reference.dims(), "case {case}");
        let d = max_diff(&fused, &reference);
        assert!(d < 1e-12, "case {case} forward: {d}");
        // Channel-major: (C, N, H, W) in and out.
        let cm = x
            .transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap()
            .apply_op2(&wt, op(true))
            .unwrap()
            .transpose(0, 1)
            .unwrap();
        let d = max_diff(&cm, &reference);
        assert!(d < 1e-12, "case {case} channel-major forward: {d}");
    }
}

#[test]
fn depthwise_conv_gradient_matches_finite_differences() {
    use fewshot_host::nn::depthwise::DepthwiseConv;
    for (case, &(n, c, h, w, k, stride, padding)) in DEPTHWISE.iter().enumerate() {
        let s = 600 + case as u64 * 10;
        let dims = if case % 2 == 1 {
            [c, n, h, w]
        } else {
            [n, c, h, w]
        };
        let x = Var::from_tensor(&tensor(&dims, s)).unwrap();
        let wt = Var::from_tensor(&tensor(&[c, 1, k, k], s + 1)).unwrap();
        // Odd cases in the channel-major layout (x is then (C, N, H, W)).
        let op = DepthwiseConv {
            stride,
            padding,
            channel_major: case % 2 == 1,
        };
        let out_dims = x.as_tensor().apply_op2(wt.as_tensor(), op).unwrap();
        let dy = tensor(out_dims.dims(), s + 2);
        let f = |x: &Tensor, w: &Tensor| {
            (x.apply_op2(w, op).unwrap() * &dy)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        assert_gradients_by_differences(&x, &wt, &f, 1, &format!("case {case}"));
    }
}

/// The mobile encoder's fused layer (1×1 or depthwise convolution, batch norm
/// with batch statistics, optional ReLU, on `(C, N, H, W)`) against the same
/// composition of candle ops: outputs, batch statistics and every gradient.
#[test]
fn fused_conv_bn_act_matches_candle_composition() {
    use fewshot_host::nn::depthwise::DepthwiseConv;
    use fewshot_host::nn::fused::{ConvBnAct, LayerConv};
    // (cin, cout, n, h, w, conv, relu)
    let cases = [
        (3, 5, 2, 4, 3, LayerConv::Pointwise, true),
        (4, 2, 3, 2, 2, LayerConv::Pointwise, false),
        (
            3,
            3,
            2,
            5,
            6,
            LayerConv::Depthwise {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
            true,
        ),
        (
            4,
            4,
            3,
            4,
            4,
            LayerConv::Depthwise {
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            false,
        ),
    ];
    for (case, &(cin, cout, n, h, w, conv, relu)) in cases.iter().enumerate() {
        let s = 700 + case as u64 * 10;
        let x = Var::from_tensor(&tensor(&[cin, n, h, w], s)).unwrap();
        let wdims = match conv {
            LayerConv::Pointwise => vec![cout, cin],
            LayerConv::Depthwise { kernel, .. } => vec![cout, 1, kernel, kernel],
        };
        let wt = Var::from_tensor(&tensor(&wdims, s + 1)).unwrap();
        let gamma = Var::from_tensor(&tensor(&[cout], s + 2)).unwrap();
        let beta = Var::from_tensor(&tensor(&[cout], s + 3)).unwrap();
        // Fused.
        let params = Tensor::cat(
            &[
                wt.as_tensor().flatten_all().unwrap(),
                gamma.as_tensor().clone(),
                beta.as_tensor().clone(),
            ],
            0,
        )
        .unwrap();
        let op = ConvBnAct::new(conv, cout, relu, 1e-5);
        let fused = x
            .as_tensor()
            .apply_op2(&params, op.clone())
            .unwrap()
            .flatten_all()
            .unwrap();
        let len = fused.elem_count();
        // Reference: candle ops in NCHW.
        let xn = x.as_tensor().transpose(0, 1).unwrap();
        let z = match conv {
            LayerConv::Pointwise => xn
                .conv2d(
                    &wt.as_tensor().reshape((cout, cin, 1, 1)).unwrap(),
                    0,
                    1,
                    1,
                    1,
                )
                .unwrap(),
            LayerConv::Depthwise {
                stride, padding, ..
            } => xn
                .contiguous()
                .unwrap()
                .apply_op2(
                    wt.as_tensor(),
                    DepthwiseConv {
                        stride,
                        padding,
                        channel_major: false,
                    },
                )
                .unwrap(),
        };
        let mean = z
            .mean_keepdim(0)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(3)
            .unwrap();
        let centred = z.broadcast_sub(&mean).unwrap();
        let var = centred
            .sqr()
            .unwrap()
            .mean_keepdim(0)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(3)
            .unwrap();
        let shape = (1, cout, 1, 1);
        let mut y = centred
            .broadcast_div(&(var.clone() + 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&gamma.as_tensor().reshape(shape).unwrap())
            .unwrap()
            .broadcast_add(&beta.as_tensor().reshape(shape).unwrap())
            .unwrap();
        if relu {
            y = y.relu().unwrap();
        }
        let reference = y.transpose(0, 1).unwrap().flatten_all().unwrap();
        let d = max_diff(&fused, &reference);
        assert!(d < 1e-10, "case {case} forward: {d}");
        let (means, vars): (Vec<f64>, Vec<f64>) = op.batch_stats().unwrap().into_iter().unzip();
        let stats = Tensor::cat(
            &[
                Tensor::new(means, &Device::Cpu).unwrap(),
                Tensor::new(vars, &Device::Cpu).unwrap(),
            ],
            0,
        )
        .unwrap();
        let want = Tensor::cat(
            &[mean.flatten_all().unwrap(), var.flatten_all().unwrap()],
            0,
        )
        .unwrap();
        assert!(max_diff(&stats, &want) < 1e-12, "case {case} statistics");
        let dy = tensor(&[len], s + 4);
        let ga = (&fused * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gb = (&reference * &dy)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [
            ("dx", &x),
            ("dw", &wt),
            ("dgamma", &gamma),
            ("dbeta", &beta),
        ] {
            let d = max_diff(
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-9, "case {case} {name}: {d}");
        }
    }
}
