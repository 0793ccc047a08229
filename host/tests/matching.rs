//! Matching Networks: the head (attention, full context embeddings) against a
//! naive f64 implementation that follows the paper's equations line by line,
//! its backward against central differences, and a short training run.
mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use fewshot_core::{Distance, Recipe};
use fewshot_host::data::{ClassSet, Layout, Tensors};
use fewshot_host::embed::Embeddings;
use fewshot_host::episode::{EpisodeSampler, EpisodeShape};
use fewshot_host::eval::{evaluate_episodes_with, EpisodeClassifier};
use fewshot_host::nn::checkpoint::{load_matching_head, CandleEmbedder};
use fewshot_host::nn::init::seeded_init;
use fewshot_host::nn::matching::{FceConfig, MatchingConfig, MatchingHead};
use fewshot_host::train::{read_metrics, train_matching, RunFiles, StopAt};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Every variable of `varmap` as flat f64 values, by name.
fn weights(varmap: &VarMap) -> HashMap<String, Vec<f64>> {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// `(Σ_j w[r][j] x[j])_r` for a row-major `rows × x.len()` matrix `w`.
fn matvec(w: &[f64], x: &[f64]) -> Vec<f64> {
    w.chunks(x.len()).map(|row| dot(row, x)).collect()
}

/// One LSTM step in PyTorch's gate order (input, forget, cell, output):
/// `gates = pre + U h + b_ih + b_hh`, where `pre` is the input's contribution.
fn lstm_cell(
    pre: &[f64],
    u: &[f64],
    b_ih: &[f64],
    b_hh: &[f64],
    h: &[f64],
    c: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let d = h.len();
    let gates: Vec<f64> = add(&add(pre, &matvec(u, h)), &add(b_ih, b_hh));
    let mut h2 = vec![0.0; d];
    let mut c2 = vec![0.0; d];
    for j in 0..d {
        let i = sigmoid(gates[j]);
        let f = sigmoid(gates[d + j]);
        let g = gates[2 * d + j].tanh();
        let o = sigmoid(gates[3 * d + j]);
        c2[j] = f * c[j] + i * g;
        h2[j] = o * c2[j].tanh();
    }
    (h2, c2)
}

fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// The paper's Matching Network on embeddings, in f64, line by line.
fn reference(
    w: &HashMap<String, Vec<f64>>,
    fce: Option<FceConfig>,
    similarity: Distance,
    scale: f64,
    support: &[Vec<f64>],
    query: &[Vec<f64>],
    shape: EpisodeShape,
) -> Vec<Vec<f64>> {
    let d = support[0].len();
    let n = support.len();
    let zero = vec![0.0; d];
    // g(x_i, S) = h→_i + h←_i + g'(x_i), layer by layer.
    let g: Vec<Vec<f64>> = match fce {
        None => support.to_vec(),
        Some(f) => {
            let mut x = support.to_vec();
            for l in 0..f.lstm_layers {
                let mut out = vec![vec![0.0; d]; n];
                for suffix in ["", "_reverse"] {
                    let p = |what: &str| &w[&format!("head.support.{what}_l{l}{suffix}")];
                    let (mut h, mut c) = (zero.clone(), zero.clone());
                    let order: Vec<usize> = if suffix.is_empty() {
                        (0..n).collect()
                    } else {
                        (0..n).rev().collect()
                    };
                    for t in order {
                        let pre = matvec(p("weight_ih"), &x[t]);
                        (h, c) =
                            lstm_cell(&pre, p("weight_hh"), p("bias_ih"), p("bias_hh"), &h, &c);
                        out[t] = add(&out[t], &h);
                    }
                }
                x = out;
            }
            x.iter().zip(support).map(|(a, b)| add(a, b)).collect()
        }
    };
    query
        .iter()
        .map(|f_prime| {
            // f(x̂, S) = h_K of the attention LSTM.
            let f = match fce {
                None => f_prime.clone(),
                Some(cfg) => {
                    let q = |what: &str| &w[&format!("head.query.{what}_l0")];
                    // weight_ih acts on [f'(x̂), r]: split it into W (on f')
                    // and U_r (on r), as the paper's LSTM(f', [h, r], c) reads.
                    let w_ih = q("weight_ih");
                    let w_x: Vec<f64> = w_ih
                        .chunks(2 * d)
                        .flat_map(|row| row[..d].to_vec())
                        .collect();
                    let u_r: Vec<f64> = w_ih
                        .chunks(2 * d)
                        .flat_map(|row| row[d..].to_vec())
                        .collect();
                    let (mut h, mut c) = (zero.clone(), zero.clone());
                    for _ in 0..cfg.unrolling_steps {
                        let a = softmax(&g.iter().map(|gi| dot(&h, gi)).collect::<Vec<_>>());
                        let mut r = zero.clone();
                        for (ai, gi) in a.iter().zip(&g) {
                            for j in 0..d {
                                r[j] += ai * gi[j];
                            }
                        }
                        let pre = add(&matvec(&w_x, f_prime), &matvec(&u_r, &r));
                        let (h_hat, c2) =
                            lstm_cell(&pre, q("weight_hh"), q("bias_ih"), q("bias_hh"), &h, &c);
                        h = add(&h_hat, f_prime);
                        c = c2;
                    }
                    h
                }
            };
            let sims: Vec<f64> = g
                .iter()
                .map(|gi| match similarity {
                    Distance::Cosine => dot(&f, gi) / (dot(&f, &f).sqrt() * dot(gi, gi).sqrt()),
                    Distance::L2 => -f.iter().zip(gi).map(|(a, b)| (a - b).powi(2)).sum::<f64>(),
                    Distance::Dot => dot(&f, gi),
                } * scale)
                .collect();
            let a = softmax(&sims);
            (0..shape.k_way)
                .map(|c| {
                    a[c * shape.n_shot..(c + 1) * shape.n_shot]
                        .iter()
                        .sum::<f64>()
                        .ln()
                })
                .collect()
        })
        .collect()
}

fn rows(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| (0..d).map(|_| rng.random_range(-1.5..1.5)).collect())
        .collect()
}

fn tensor(rows: &[Vec<f64>]) -> Tensor {
    let d = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), d), &Device::Cpu).unwrap()
}

/// A head of `fce` in f64 with seeded weights (and biases drawn too, so no
/// term hides behind a zero).
fn head(
    fce: Option<FceConfig>,
    similarity: Distance,
    d: usize,
    seed: u64,
) -> (VarMap, MatchingHead) {
    scaled_head(fce, similarity, None, d, seed)
}

/// [`head`] with a factor on the attention's similarities.
fn scaled_head(
    fce: Option<FceConfig>,
    similarity: Distance,
    scale: Option<f32>,
    d: usize,
    seed: u64,
) -> (VarMap, MatchingHead) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let config = MatchingConfig { fce, scale };
    let head = MatchingHead::new(config, similarity, d, vb.pp("head")).unwrap();
    seeded_init(&varmap, seed).unwrap();
    (varmap, head)
}

const SHAPE: EpisodeShape = EpisodeShape {
    k_way: 3,
    n_shot: 2,
    q_queries: 2,
};

#[test]
fn the_head_follows_the_papers_equations() {
    let d = 5;
    let cases = [
        None,
        Some(FceConfig {
            lstm_layers: 1,
            unrolling_steps: 1,
        }),
        Some(FceConfig {
            lstm_layers: 1,
            unrolling_steps: 4,
        }),
        Some(FceConfig {
            lstm_layers: 2,
            unrolling_steps: 3,
        }),
    ];
    for (i, fce) in cases.into_iter().enumerate() {
        for (similarity, scale) in [
            (Distance::Cosine, None),
            (Distance::L2, None),
            (Distance::Dot, None),
            (Distance::Cosine, Some(10.0f32)),
            (Distance::L2, Some(0.5)),
        ] {
            let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
            let support = rows(&mut rng, SHAPE.k_way * SHAPE.n_shot, d);
            let query = rows(&mut rng, SHAPE.k_way * SHAPE.q_queries, d);
            let (varmap, head) = scaled_head(fce, similarity, scale, d, 7 + i as u64);
            let got: Vec<Vec<f64>> = head
                .logits(&tensor(&support), &tensor(&query), SHAPE)
                .unwrap()
                .to_vec2()
                .unwrap();
            let s = f64::from(scale.unwrap_or(1.0));
            let want = reference(
                &weights(&varmap),
                fce,
                similarity,
                s,
                &support,
                &query,
                SHAPE,
            );
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!(
                    (g - w).abs() < 1e-12,
                    "{fce:?} {similarity:?}: {got:?} against {want:?}"
                );
            }
            // The logits are log-probabilities over the classes.
            for row in &got {
                let total: f64 = row.iter().map(|l| l.exp()).sum();
                assert!((total - 1.0).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn full_context_embeddings_change_the_answer() {
    // A head with FCE must not reduce to plain attention (a regression guard
    // for an FCE that is built but bypassed).
    let d = 4;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let support = tensor(&rows(&mut rng, 6, d));
    let query = tensor(&rows(&mut rng, 6, d));
    let (_, plain) = head(None, Distance::Cosine, d, 1);
    let (_, fce) = head(
        Some(FceConfig {
            lstm_layers: 1,
            unrolling_steps: 2,
        }),
        Distance::Cosine,
        d,
        1,
    );
    let a = plain.logits(&support, &query, SHAPE).unwrap();
    let b = fce.logits(&support, &query, SHAPE).unwrap();
    let diff: f64 = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        diff > 1e-3,
        "FCE logits equal the plain ones (max diff {diff})"
    );
}

#[test]
fn the_backward_matches_central_differences() {
    let d = 4;
    let fce = Some(FceConfig {
        lstm_layers: 2,
        unrolling_steps: 3,
    });
    for similarity in [Distance::Cosine, Distance::L2] {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let support = Var::from_tensor(&tensor(&rows(&mut rng, 6, d))).unwrap();
        let query = Var::from_tensor(&tensor(&rows(&mut rng, 6, d))).unwrap();
        let (varmap, head) = head(fce, similarity, d, 5);
        let mix = tensor(&rows(&mut rng, 6, SHAPE.k_way));
        let loss = |s: &Tensor, q: &Tensor| -> Tensor {
            (head.logits(s, q, SHAPE).unwrap() * &mix)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let value = |s: &Tensor, q: &Tensor| -> f64 { loss(s, q).to_scalar().unwrap() };
        let grads = loss(support.as_tensor(), query.as_tensor())
            .backward()
            .unwrap();
        let mut vars: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        vars.push(("support".into(), support.clone()));
        vars.push(("query".into(), query.clone()));
        let eps = 1e-6;
        let mut checked = 0;
        for (name, var) in &vars {
            let analytic: Vec<f64> = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"))
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let base: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
            for (k, &a) in analytic.iter().enumerate() {
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[k] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    value(support.as_tensor(), query.as_tensor())
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                at(0.0);
                assert!(
                    (a - numeric).abs() < 1e-6 * (1.0 + numeric.abs()),
                    "{similarity:?} {name}[{k}]: backward {a}, central difference {numeric}"
                );
                checked += 1;
            }
        }
        assert!(checked > 500, "checked {checked} entries");
    }
}

#[test]
fn a_short_fce_run_learns_and_its_checkpoint_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::greek_subset(&data, 12);
    let out = tmp.path().join("run");
    let config = common::tiny_config(&data, 200);
    let matching = MatchingConfig {
        fce: Some(FceConfig {
            lstm_layers: 1,
            unrolling_steps: 2,
        }),
        scale: None,
    };
    let state = train_matching(&config, &matching, &out, false, StopAt::default(), false).unwrap();
    assert_eq!(state.episode, 200);
    let files = RunFiles { dir: out };
    let metrics = read_metrics(&files.metrics());
    let losses: Vec<f64> = metrics.iter().filter_map(|m| m.loss).collect();
    let first = losses[..2].iter().sum::<f64>() / 2.0;
    let last = losses[losses.len() - 2..].iter().sum::<f64>() / 2.0;
    assert!(last < 0.7 * first, "loss should fall: {losses:?}");
    let val: Vec<f64> = metrics.iter().filter_map(|m| m.val_accuracy).collect();
    assert!(
        state.best_val.unwrap() > 0.4 && state.best_val.unwrap() > val[0] + 0.05,
        "validation should improve: {val:?}"
    );

    // The checkpoint carries its head: loaded back, it classifies the
    // characters far above chance (20 %).
    let head = load_matching_head(&files.best())
        .unwrap()
        .expect("a Matching Network checkpoint has a head");
    assert_eq!(head.fce.as_ref().map(|f| f.config()), matching.fce);
    let model = CandleEmbedder::load(&files.best()).unwrap();
    let set = ClassSet::load(&data, Layout::Auto).unwrap();
    let mut paths = Vec::new();
    let mut classes = Vec::new();
    for c in &set.classes {
        classes.push((paths.len()..paths.len() + c.images.len()).collect::<Vec<_>>());
        paths.extend(c.images.iter().cloned());
    }
    let tensors = Tensors::load(&paths, &Recipe::OMNIGLOT_28, false).unwrap();
    let emb = Embeddings::compute(&model, &tensors, 64, false).unwrap();
    let sampler = EpisodeSampler::new(&classes, config.shape, None, 0).unwrap();
    let report = evaluate_episodes_with(
        &emb,
        &sampler,
        100,
        3,
        &EpisodeClassifier::Matching(std::sync::Arc::new(head)),
        false,
    )
    .unwrap();
    assert!(report.summary.mean > 0.5, "accuracy {:?}", report.summary);
}
