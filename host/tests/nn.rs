//! The candle pieces against finite differences and naive f64 references.
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use fewshot_core::Distance;
use fewshot_host::episode::EpisodeShape;
use fewshot_host::nn::adam::Adam;
use fewshot_host::nn::encoder::EncoderConfig;
use fewshot_host::nn::method::{pairwise_distance, EpisodeTensors, FewShotMethod, ProtoNet};
use fewshot_host::nn::pool::max_pool2x2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..shape.iter().product::<usize>())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(random(shape, seed), shape, &Device::Cpu).unwrap()
}

#[test]
fn max_pool_matches_naive_including_odd_sizes() {
    for (h, w) in [(4, 4), (5, 7), (3, 2)] {
        let x = tensor(&[2, 3, h, w], 1);
        let got = max_pool2x2(&x).unwrap();
        assert_eq!(got.dims(), &[2, 3, h / 2, w / 2]);
        let xs = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let g = got.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let mut k = 0;
        for bc in 0..6 {
            for i in 0..h / 2 {
                for j in 0..w / 2 {
                    let at = |y: usize, x: usize| xs[bc * h * w + y * w + x];
                    let want = at(2 * i, 2 * j)
                        .max(at(2 * i + 1, 2 * j))
                        .max(at(2 * i, 2 * j + 1))
                        .max(at(2 * i + 1, 2 * j + 1));
                    assert_eq!(g[k], want);
                    k += 1;
                }
            }
        }
    }
}

/// Central differences of a scalar function of one variable's entries.
fn check_gradient(var: &Var, analytic: &Tensor, f: &dyn Fn() -> f64, entries: usize, seed: u64) {
    check_gradient_step(var, analytic, f, entries, seed, 1e-6, "")
}

/// [`check_gradient`] with step `h` (smaller where many ReLU and pooling
/// kinks lie close to the point).
fn check_gradient_step(
    var: &Var,
    analytic: &Tensor,
    f: &dyn Fn() -> f64,
    entries: usize,
    seed: u64,
    h: f64,
    label: &str,
) {
    let n = var.elem_count();
    let analytic = analytic.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..entries.min(n) {
        let i = rng.random_range(0..n);
        let base = var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let bumped = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            f()
        };
        let numeric = (bumped(h) - bumped(-h)) / (2.0 * h);
        var.set(&Tensor::from_vec(base, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
        let err = (numeric - analytic[i]).abs();
        assert!(
            err <= 1e-6 + 1e-4 * numeric.abs(),
            "{label} entry {i}: analytic {} vs numeric {numeric} (step {h})",
            analytic[i]
        );
    }
}

#[test]
fn max_pool_gradient_matches_finite_differences() {
    let x = Var::from_tensor(&tensor(&[2, 2, 5, 6], 2)).unwrap();
    let w = tensor(&[2, 2, 2, 3], 3);
    let f = || {
        max_pool2x2(x.as_tensor())
            .unwrap()
            .mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let loss = max_pool2x2(x.as_tensor())
        .unwrap()
        .mul(&w)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    check_gradient(&x, grads.get(x.as_tensor()).unwrap(), &f, 60, 4);
}

fn small_protonet(varmap: &VarMap, distance: Distance) -> ProtoNet {
    small_protonet_of(varmap, distance, None)
}

/// [`small_protonet`] with `depths` convolutions in each block.
fn small_protonet_of(varmap: &VarMap, distance: Distance, depths: Option<[usize; 4]>) -> ProtoNet {
    let vb = VarBuilder::from_varmap(varmap, DType::F64, &Device::Cpu);
    let config = EncoderConfig::Conv4 {
        in_channels: 1,
        hidden: 3,
        widths: None,
        depths,
        input_size: 16,
        embedding: None,
    };
    let encoder = config.build(vb).unwrap();
    // Seeded, so the tests see the same model every run.
    fewshot_host::nn::init::seeded_init(varmap, 1).unwrap();
    ProtoNet { encoder, distance }
}

/// Every parameter's gradient of a Prototypical Network's loss against
/// central differences; returns how many parameters were checked.
fn protonet_gradients_checked(distance: Distance, depths: Option<[usize; 4]>) -> usize {
    let shape = EpisodeShape {
        k_way: 3,
        n_shot: 2,
        q_queries: 2,
    };
    let episode = EpisodeTensors {
        support: tensor(&[6, 1, 16, 16], 5),
        query: tensor(&[6, 1, 16, 16], 6),
        shape,
    };
    let varmap = VarMap::new();
    let net = small_protonet_of(&varmap, distance, depths);
    let f = || {
        net.loss(&episode, true)
            .unwrap()
            .0
            .to_scalar::<f64>()
            .unwrap()
    };
    let (loss, _) = net.loss(&episode, true).unwrap();
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    let mut checked = 0;
    let mut names: Vec<_> = data.keys().cloned().collect();
    names.sort();
    for name in names {
        if name.contains("running") {
            continue;
        }
        let var = &data[&name];
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        check_gradient_step(var, g, &f, 6, checked as u64, 1e-6, &name);
        checked += 1;
    }
    checked
}

#[test]
fn protonet_gradients_match_finite_differences() {
    for distance in Distance::ALL {
        assert_eq!(
            protonet_gradients_checked(distance, None),
            16,
            "conv weight and bias, bn weight and bias, in 4 blocks"
        );
    }
}

/// A deeper Conv-4 (`--depths`): the leading unpooled layers' gradients too.
#[test]
fn deeper_conv4_gradients_match_finite_differences() {
    assert_eq!(
        protonet_gradients_checked(Distance::L2, Some([2, 1, 1, 3])),
        16 + 3 * 4,
        "4 pooled layers and 3 leading ones, 4 parameters each"
    );
}

#[test]
fn protonet_loss_matches_f64_hand_computation() {
    let shape = EpisodeShape {
        k_way: 2,
        n_shot: 2,
        q_queries: 1,
    };
    let episode = EpisodeTensors {
        support: tensor(&[4, 1, 16, 16], 7),
        query: tensor(&[2, 1, 16, 16], 8),
        shape,
    };
    let varmap = VarMap::new();
    let net = small_protonet(&varmap, Distance::L2);
    let (loss, acc) = net.loss(&episode, false).unwrap();
    // Reference from the encoder's embeddings, by hand in f64.
    let all = Tensor::cat(&[&episode.support, &episode.query], 0).unwrap();
    let emb = net
        .encoder
        .embed(&all, false)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let proto: Vec<Vec<f64>> = (0..2)
        .map(|c| {
            (0..emb[0].len())
                .map(|j| (emb[2 * c][j] + emb[2 * c + 1][j]) / 2.0)
                .collect()
        })
        .collect();
    let mut total = 0.0;
    let mut correct = 0;
    for (q, label) in [(4, 0), (5, 1)] {
        let d: Vec<f64> = proto
            .iter()
            .map(|p| p.iter().zip(&emb[q]).map(|(a, b)| (a - b).powi(2)).sum())
            .collect();
        let z = (-d[0]).exp() + (-d[1]).exp();
        total += d[label] + z.ln();
        // The prediction is the first class at the smallest distance (argmax of logits).
        let predicted = if d[0] <= d[1] { 0 } else { 1 };
        if predicted == label {
            correct += 1;
        }
    }
    assert!((loss.to_scalar::<f64>().unwrap() - total / 2.0).abs() < 1e-9);
    assert_eq!(acc, correct as f64 / 2.0);
}

#[test]
fn pairwise_distance_matches_core() {
    let a = tensor(&[5, 7], 9);
    let b = tensor(&[3, 7], 10);
    let (av, bv) = (a.to_vec2::<f64>().unwrap(), b.to_vec2::<f64>().unwrap());
    for distance in Distance::ALL {
        let got = pairwise_distance(&a, &b, distance)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        for i in 0..5 {
            for j in 0..3 {
                let dot: f64 = av[i].iter().zip(&bv[j]).map(|(x, y)| x * y).sum();
                let na = av[i].iter().map(|x| x * x).sum::<f64>().sqrt();
                let nb = bv[j].iter().map(|x| x * x).sum::<f64>().sqrt();
                let want = match distance {
                    Distance::L2 => av[i].iter().zip(&bv[j]).map(|(x, y)| (x - y).powi(2)).sum(),
                    Distance::Dot => -dot,
                    Distance::Cosine => 1.0 - dot / (na * nb),
                };
                assert!((got[i][j] - want).abs() < 1e-12, "{distance:?}");
            }
        }
    }
}

#[test]
fn adam_steps_match_hand_computation() {
    let w = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0], &Device::Cpu).unwrap()).unwrap();
    let mut adam = Adam::new(vec![("w".into(), w.clone())], 0.1).unwrap();
    // Loss = 3 w0 + w1^2: gradients (3, 2 w1).
    let mut m = [0.0f64; 2];
    let mut v = [0.0f64; 2];
    let mut want = [1.0f64, -2.0];
    for t in 1..=3 {
        let x = w.as_tensor();
        let loss = ((x.narrow(0, 0, 1).unwrap() * 3.0)
            .unwrap()
            .sum_all()
            .unwrap()
            + x.narrow(0, 1, 1).unwrap().sqr().unwrap().sum_all().unwrap())
        .unwrap();
        adam.step(&loss.backward().unwrap()).unwrap();
        let g = [3.0, 2.0 * want[1]];
        for i in 0..2 {
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
            let mh = m[i] / (1.0 - 0.9f64.powi(t));
            let vh = v[i] / (1.0 - 0.999f64.powi(t));
            want[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
        }
        let got = w.as_tensor().to_vec1::<f64>().unwrap();
        assert!(
            (got[0] - want[0]).abs() < 1e-12 && (got[1] - want[1]).abs() < 1e-12,
            "{got:?} vs {want:?}"
        );
    }
}

/// The whole mobile encoder in training mode (stem, fused bottleneck layers,
/// skip connections, global depthwise convolution, embedding batch norm):
/// autograd's gradient of every variable against central differences, in f64.
#[test]
fn mobile_encoder_gradients_match_finite_differences() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let config = EncoderConfig::Mobile {
        in_channels: 1,
        width: 8,
        input_size: 16,
        embedding: 5,
    };
    let encoder = config.build(vb).unwrap();
    fewshot_host::nn::init::seeded_init(&varmap, 11).unwrap();
    let x = tensor(&[4, 1, 16, 16], 12);
    let r = tensor(&[4, 5], 13);
    let f = || {
        (encoder.embed(&x, true).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let loss = (encoder.embed(&x, true).unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let vars: Vec<(String, Var)> = {
        let data = varmap.data().lock().unwrap();
        let mut v: Vec<_> = data
            .iter()
            .filter(|(n, _)| !n.contains("running_"))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert!(vars.len() > 60, "{} variables", vars.len());
    for (k, (name, var)) in vars.iter().enumerate() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        check_gradient_step(var, g, &f, 2, 100 + k as u64, 1e-7, name);
    }
}
