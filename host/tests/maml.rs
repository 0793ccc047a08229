//! MAML's meta-gradient against central differences of the meta-loss in
//! f64 (1, 2 and 5 inner steps): second order matches; first order equals
//! the query gradient at the adapted weights and differs from the true
//! meta-gradient by the dropped term. The hand-written inner gradient
//! against candle's autograd of the same loss.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use fewshot_host::nn::encoder::EncoderConfig;
use fewshot_host::nn::init::seeded_init;
use fewshot_host::nn::maml::{
    adapt, class_major_labels, first_order_task, forward, parameter_names, parameters,
    support_gradients, MamlConfig, HEAD,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const K_WAY: usize = 2;
const SIDE: usize = 16;

/// A Conv-4 of 3 channels on 16×16 grey images with a 2-way head, in f64.
fn network(seed: u64) -> (VarMap, Vec<Var>) {
    network_of(seed, SIDE, K_WAY)
}

/// A Conv-4 of 3 channels on `side`×`side` grey images with a `k_way` head, in f64.
fn network_of(seed: u64, side: usize, k_way: usize) -> (VarMap, Vec<Var>) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let encoder = EncoderConfig::Conv4 {
        in_channels: 1,
        hidden: 3,
        widths: None,
        depths: None,
        input_size: side,
        embedding: None,
    };
    encoder.build(vb.clone()).unwrap();
    candle_nn::linear(encoder.features(), k_way, vb.pp("head")).unwrap();
    seeded_init(&varmap, seed).unwrap();
    let data = varmap.data().lock().unwrap();
    let vars = parameter_names().iter().map(|n| data[n].clone()).collect();
    drop(data);
    (varmap, vars)
}

fn images(rng: &mut ChaCha8Rng, n: usize) -> Tensor {
    images_of(rng, n, SIDE)
}

fn images_of(rng: &mut ChaCha8Rng, n: usize, side: usize) -> Tensor {
    let v: Vec<f64> = (0..n * side * side)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(v, (n, 1, side, side), &Device::Cpu).unwrap()
}

/// The meta-loss: the query cross-entropy after `steps` inner steps.
fn meta_loss(params: &[Tensor], task: &Task, steps: usize, second_order: bool) -> Tensor {
    let fast = adapt(
        params,
        &task.support,
        &task.ys,
        steps,
        0.4,
        second_order,
        None,
    )
    .unwrap();
    candle_nn::loss::cross_entropy(&forward(&fast, &task.query, None).unwrap(), &task.yq).unwrap()
}

struct Task {
    support: Tensor,
    query: Tensor,
    ys: Tensor,
    yq: Tensor,
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The inner loop's hand-written gradient of the support loss equals
/// candle's autograd of the same loss through [`forward`], on even sides
/// (16 → 8 → 4 → 2 → 1) and odd ones (28 → 14 → 7 → 3 → 1, pooling drops a
/// row and a column), for tracked and detached weights.
#[test]
fn the_inner_gradient_is_the_autograd_gradient() {
    for (side, k_way, shots, seed) in [(16, 2, 3, 3u64), (28, 3, 2, 4)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = images_of(&mut rng, k_way * shots, side);
        let labels = class_major_labels(k_way, shots, &Device::Cpu).unwrap();
        let (_varmap, vars) = network_of(seed, side, k_way);
        let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let reference =
            candle_nn::loss::cross_entropy(&forward(&params, &x, None).unwrap(), &labels)
                .unwrap()
                .backward()
                .unwrap();
        for detached in [false, true] {
            let at: Vec<Tensor> = if detached {
                params.iter().map(Tensor::detach).collect()
            } else {
                params.clone()
            };
            let mut stats = Vec::new();
            let grads = support_gradients(&at, &x, &labels, Some(&mut stats)).unwrap();
            assert_eq!(grads.len(), 18);
            assert_eq!(stats.len(), 4, "one mean and variance per block");
            for (k, (g, var)) in grads.iter().zip(&vars).enumerate() {
                assert_eq!(g.dims(), var.dims(), "{}", parameter_names()[k]);
                let want = flat(reference.get(var.as_tensor()).unwrap());
                let got = flat(g);
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert!(
                    scale > 0.0,
                    "{side}: {} has a gradient",
                    parameter_names()[k]
                );
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-9 * scale.max(1e-3),
                        "side {side}, {}[{i}]: hand-written {a} against autograd {b}",
                        parameter_names()[k]
                    );
                }
            }
        }
    }
}

#[test]
fn meta_gradients_match_central_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let task = Task {
        support: images(&mut rng, K_WAY * 2),
        query: images(&mut rng, K_WAY * 3),
        ys: class_major_labels(K_WAY, 2, &Device::Cpu).unwrap(),
        yq: class_major_labels(K_WAY, 3, &Device::Cpu).unwrap(),
    };
    let (_varmap, vars) = network(2);
    let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    for steps in [1usize, 2, 5] {
        let second = meta_loss(&params, &task, steps, true).backward().unwrap();
        let first = meta_loss(&params, &task, steps, false).backward().unwrap();
        // The first-order meta-gradient, independently: the query gradient
        // at the adapted weights, taken as leaves.
        let adapted: Vec<Var> = adapt(&params, &task.support, &task.ys, steps, 0.4, false, None)
            .unwrap()
            .iter()
            .map(|t| Var::from_tensor(&t.detach()).unwrap())
            .collect();
        let at: Vec<Tensor> = adapted.iter().map(|v| v.as_tensor().clone()).collect();
        let at_adapted =
            candle_nn::loss::cross_entropy(&forward(&at, &task.query, None).unwrap(), &task.yq)
                .unwrap()
                .backward()
                .unwrap();
        // And by the trainer's first-order path (the hand-written backward
        // pass, no autograd graph).
        let config = MamlConfig {
            order: 1,
            inner_steps: steps,
            inner_steps_test: steps,
            inner_lr: 0.4,
            meta_batch: 1,
            zero_head: false,
        };
        let (by_hand, _, _) = first_order_task(
            &params,
            &task.support,
            &task.ys,
            &task.query,
            &task.yq,
            &config,
            steps,
            None,
        )
        .unwrap();
        let (mut worst, mut dropped, mut norm) = (0.0f64, 0.0f64, 0.0f64);
        for (k, var) in vars.iter().enumerate() {
            let so = flat(second.get(var.as_tensor()).unwrap());
            let fo = flat(first.get(var.as_tensor()).unwrap());
            let fo_ref = flat(at_adapted.get(adapted[k].as_tensor()).unwrap());
            for ((a, b), c) in fo.iter().zip(&fo_ref).zip(flat(&by_hand[k])) {
                assert!(
                    (a - b).abs() < 1e-10 * (1.0 + b.abs()),
                    "first order at {k}: {a} vs {b}"
                );
                assert!(
                    (c - b).abs() < 1e-10 * (1.0 + b.abs()),
                    "first order by hand at {k}: {c} vs {b}"
                );
            }
            let base = flat(var.as_tensor());
            // Every head and bias entry; every 5th convolution weight.
            let stride = match (base.len() > 20, steps) {
                (false, _) => 1,
                (true, 5) => 17,
                (true, _) => 9,
            };
            for i in (0..base.len()).step_by(stride) {
                let eps = 1e-6;
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    meta_loss(&params, &task, steps, true)
                        .to_scalar::<f64>()
                        .unwrap()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                at(0.0);
                let err = (so[i] - numeric).abs() / (1e-3 + numeric.abs());
                worst = worst.max(err);
                assert!(
                    err < 1e-4,
                    "{} steps, {}[{i}]: second order {} against central difference {numeric}",
                    steps,
                    parameter_names()[k],
                    so[i]
                );
                dropped += (fo[i] - numeric).abs();
                norm += numeric.abs();
            }
        }
        eprintln!(
            "{steps} steps: worst relative error {worst:.2e}, first order off by {:.1} % of |g|",
            100.0 * dropped / norm
        );
        assert!(
            dropped > 0.01 * norm,
            "{steps} steps: first order should differ from the true meta-gradient (off by {dropped} of {norm})"
        );
    }
}

#[test]
fn inner_steps_raise_support_accuracy() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let support = images(&mut rng, K_WAY * 3);
    let ys = class_major_labels(K_WAY, 3, &Device::Cpu).unwrap();
    let (varmap, _) = network(1);
    let params = parameters(&varmap).unwrap();
    let loss = |p: &[Tensor]| {
        candle_nn::loss::cross_entropy(&forward(p, &support, None).unwrap(), &ys)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let before = loss(&params);
    let fast = adapt(&params, &support, &ys, 10, 0.4, false, None).unwrap();
    let after = loss(&fast);
    assert!(after < 0.5 * before, "support loss {before} → {after}");
    let logits = forward(&fast, &support, None).unwrap();
    let acc = fewshot_host::nn::method::accuracy(&logits, &ys).unwrap();
    assert_eq!(acc, 1.0, "ten steps fit six support images");
}

/// A short first-order meta-training run raises validation accuracy (by the
/// test-time inner loop on held-out characters); its checkpoint loads as a
/// MAML network and as a Conv-4 encoder whose batch norm has running
/// statistics; a second-order run takes steps too.
#[test]
fn a_short_meta_training_run_improves_validation() {
    use fewshot_core::Recipe;
    use fewshot_host::episode::EpisodeShape;
    use fewshot_host::train::{read_metrics, train_maml, RunFiles, StopAt, TrainConfig};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::greek_subset(&data, 12);
    // 16×16 inputs keep the run short (candle's own convolutions, which
    // MAML differentiates, are slow on the CPU).
    let recipe = Recipe {
        width: 16,
        height: 16,
        ..Recipe::OMNIGLOT_28
    };
    let config = |episodes, val_every| TrainConfig {
        shape: EpisodeShape {
            k_way: 5,
            n_shot: 1,
            q_queries: 3,
        },
        lr: 5e-3,
        val_every,
        val_episodes: 60,
        encoder: EncoderConfig::Conv4 {
            in_channels: 1,
            hidden: 16,
            widths: None,
            depths: None,
            input_size: 16,
            embedding: None,
        },
        recipe: recipe.into(),
        ..common::tiny_config(&data, episodes)
    };
    let maml = MamlConfig {
        order: 1,
        inner_steps: 5,
        inner_steps_test: 5,
        inner_lr: 0.4,
        meta_batch: 2,
        zero_head: false,
    };
    // The same initialisation and validation episodes after one meta-step
    // and after forty.
    let run = |episodes: usize, name: &str| {
        let out = tmp.path().join(name);
        let state = train_maml(
            &config(episodes, episodes),
            &maml,
            &out,
            false,
            StopAt::default(),
            false,
        )
        .unwrap();
        (state.best_val.unwrap(), RunFiles { dir: out })
    };
    let (start, _) = run(1, "one");
    let (trained, files) = run(40, "forty");
    eprintln!("validation after 1 meta-step {start}, after 40 {trained}");
    assert!(
        trained > start + 0.05,
        "validation should improve: {start} → {trained}"
    );
    assert!(read_metrics(&files.metrics())
        .iter()
        .any(|m| m.loss.is_some()));
    let model = fewshot_host::nn::checkpoint::load_maml(&files.best())
        .unwrap()
        .expect("a MAML checkpoint");
    assert_eq!((model.k_way, model.config), (5, maml));
    let weights = candle_core::safetensors::load(files.best(), &Device::Cpu).unwrap();
    let running: Vec<f32> = weights["block3.bn.running_var"].to_vec1().unwrap();
    assert!(
        running.iter().any(|v| (v - 1.0).abs() > 1e-3),
        "batch norm's running statistics were updated: {running:?}"
    );

    // Second order, with the zero head: it stays zero through meta-steps.
    let second = MamlConfig {
        order: 2,
        inner_steps: 1,
        zero_head: true,
        ..maml
    };
    let out2 = tmp.path().join("second");
    let state = train_maml(
        &config(2, 2),
        &second,
        &out2,
        false,
        StopAt::default(),
        false,
    )
    .unwrap();
    assert_eq!(state.episode, 2);
    let files = RunFiles { dir: out2 };
    let weights = candle_core::safetensors::load(files.last(), &Device::Cpu).unwrap();
    for name in ["head.weight", "head.bias"] {
        let v: Vec<f32> = weights[name].flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&x| x == 0.0), "{name} left zero: {v:?}");
    }
    let model = fewshot_host::nn::checkpoint::load_maml(&files.last())
        .unwrap()
        .expect("a MAML checkpoint");
    assert!(model.config.zero_head, "the run records its zero head");
    // A zero head serves any number of ways; a learned one only its own.
    let wide = model.for_ways(7).unwrap().expect("a 7-way zero head");
    assert_eq!(
        wide.params[HEAD].dims(),
        &[7, model.params[HEAD].dim(1).unwrap()]
    );
    assert_eq!(wide.params[HEAD + 1].dims(), &[7]);
    let learned = fewshot_host::nn::checkpoint::load_maml(
        &RunFiles {
            dir: tmp.path().join("forty"),
        }
        .best(),
    )
    .unwrap()
    .expect("a MAML checkpoint");
    assert!(learned.for_ways(7).unwrap().is_none());
    assert_eq!(learned.for_ways(5).unwrap().map(|m| m.k_way), Some(5));
    // `fewshot eval` 7-way on the zero head: with `--inner-steps-test 0`
    // every logit is zero and every query goes to the first class, so the
    // accuracy is exactly 1/7; the override is named in the classifier.
    let tagalog = common::data_dir().join("omniglot/images_background_small2/Tagalog");
    let eval = |steps: &str| -> serde_json::Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fewshot"))
            .args([
                "eval",
                "--json",
                "--k-way",
                "7",
                "--q-queries",
                "3",
                "--episodes",
                "10",
            ])
            .args(["--inner-steps-test", steps, "--model"])
            .arg(files.last())
            .arg("--data")
            .arg(&tagalog)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let none = eval("0");
    let chance = none["accuracy"].as_f64().unwrap();
    assert!((chance - 1.0 / 7.0).abs() < 1e-12, "{none}");
    assert!(
        none["classifier"]
            .as_str()
            .unwrap()
            .contains("0 inner steps"),
        "{none}"
    );
    let one = eval("1");
    assert!(
        one["classifier"]
            .as_str()
            .unwrap()
            .contains("1 inner step at"),
        "{one}"
    );
    assert!(
        (one["accuracy"].as_f64().unwrap() - 1.0 / 7.0).abs() > 1e-3,
        "{one}"
    );
}

/// From the zero head one inner step makes class `c`'s row `α/N · (p_c −
/// p̄)` (its prototype of support features less the mean prototype) and
/// leaves the bias and the encoder as they were: computed in f64 from the
/// features themselves.
#[test]
fn one_step_from_the_zero_head_gives_centred_prototypes() {
    let (k_way, n_shot, lr) = (3, 2, 0.4);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let support = images(&mut rng, k_way * n_shot);
    let ys = class_major_labels(k_way, n_shot, &Device::Cpu).unwrap();
    let (varmap, _) = network_of(2, SIDE, k_way);
    let mut params = parameters(&varmap).unwrap();
    // The features themselves: the same encoder under an identity head.
    let dim = params[HEAD].dim(1).unwrap();
    let mut probe = params.clone();
    probe[HEAD] = Tensor::eye(dim, DType::F64, &Device::Cpu).unwrap();
    probe[HEAD + 1] = Tensor::zeros(dim, DType::F64, &Device::Cpu).unwrap();
    let features: Vec<Vec<f64>> = forward(&probe, &support, None).unwrap().to_vec2().unwrap();
    params[HEAD] = params[HEAD].zeros_like().unwrap();
    params[HEAD + 1] = params[HEAD + 1].zeros_like().unwrap();
    let fast = adapt(&params, &support, &ys, 1, lr, true, None).unwrap();
    let row = |c: usize| -> Vec<f64> {
        (0..dim)
            .map(|j| {
                (0..n_shot)
                    .map(|s| features[c * n_shot + s][j])
                    .sum::<f64>()
                    / n_shot as f64
            })
            .collect()
    };
    let mean: Vec<f64> = (0..dim)
        .map(|j| (0..k_way).map(|c| row(c)[j]).sum::<f64>() / k_way as f64)
        .collect();
    let head: Vec<Vec<f64>> = fast[HEAD].to_vec2().unwrap();
    for (c, got) in head.iter().enumerate() {
        let p = row(c);
        for j in 0..dim {
            let want = lr / k_way as f64 * (p[j] - mean[j]);
            assert!(
                (got[j] - want).abs() < 1e-12 * (1.0 + want.abs()),
                "row {c}[{j}]: {} against {want}",
                got[j]
            );
        }
    }
    let bias: Vec<f64> = fast[HEAD + 1].to_vec1().unwrap();
    assert!(bias.iter().all(|b| b.abs() < 1e-15), "bias {bias:?}");
    // No gradient reaches the encoder through a zero head: the first step
    // adapts the head alone.
    for k in 0..HEAD {
        let moved = (&fast[k] - &params[k]).unwrap().abs().unwrap();
        let moved = moved.flatten_all().unwrap().max(0).unwrap();
        assert_eq!(
            moved.to_scalar::<f64>().unwrap(),
            0.0,
            "{}",
            parameter_names()[k]
        );
    }
}
