//! Prototype-initialised cosine fine-tuning: with no steps it is the prototype
//! classifier, the entropy term matches a hand computation, and the `no_std`
//! step of the core equals the candle step on the same numbers.
use candle_core::{Device, Tensor, Var};
use fewshot_core::finetune::{init_weights, normalize_rows as core_normalize, scratch_len};
use fewshot_core::{CosineClassifier, Distance};
use fewshot_host::embed::Embeddings;
use fewshot_host::episode::{EpisodeSampler, EpisodeShape};
use fewshot_host::eval::{evaluate_episodes, evaluate_episodes_with, EpisodeClassifier};
use fewshot_host::nn::cosface::normalize_rows;
use fewshot_host::nn::finetune::{class_means, mean_entropy, FineTune};
use fewshot_host::nn::method::{pairwise_distance, ProtoNet};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn tensor(rows: usize, dim: usize, seed: u64) -> Tensor {
    Tensor::from_vec(random(rows * dim, seed), (rows, dim), &Device::Cpu).unwrap()
}

fn argmax(logits: &Tensor) -> Vec<u32> {
    logits.argmax(1).unwrap().to_vec1().unwrap()
}

/// λ = 0 and zero steps: the same predictions (and, up to `s·(·) + s`, the
/// same logits) as Prototypical Networks with cosine distance on the unit
/// embeddings; in one-shot episodes also on the raw ones.
#[test]
fn zero_steps_is_the_prototype_classifier() {
    let finetune = FineTune {
        steps: 0,
        lr: 0.1,
        entropy_weight: 0.0,
        scale: 10.0,
    };
    for (n_shot, seed) in [(1, 1), (3, 2), (5, 3)] {
        let shape = EpisodeShape {
            k_way: 5,
            n_shot,
            q_queries: 6,
        };
        let support = tensor(5 * n_shot, 16, seed);
        let query = tensor(30, 16, seed + 100);
        let labels: Vec<u32> = (0..5 * n_shot).map(|i| (i / n_shot) as u32).collect();
        let logits = finetune.query_logits(&support, &labels, &query, 5).unwrap();

        let prototypes = ProtoNet::prototypes(&normalize_rows(&support).unwrap(), shape).unwrap();
        let proto_logits = pairwise_distance(&query, &prototypes, Distance::Cosine)
            .unwrap()
            .neg()
            .unwrap();
        assert_eq!(argmax(&logits), argmax(&proto_logits), "{n_shot}-shot");
        let diff = ((&logits / 10.0).unwrap() - 1.0)
            .unwrap()
            .sub(&proto_logits)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{n_shot}-shot: logits differ by {diff}");
        if n_shot == 1 {
            let raw = ProtoNet::prototypes(&support, shape).unwrap();
            let raw_logits = pairwise_distance(&query, &raw, Distance::Cosine)
                .unwrap()
                .neg()
                .unwrap();
            assert_eq!(argmax(&logits), argmax(&raw_logits));
        }
    }

    // Over sampled episodes of cached embeddings: the same accuracy, episode by
    // episode, as nearest prototype with cosine distance on unit embeddings.
    let dim = 8;
    let mut data = random(40 * 6 * dim, 7);
    for row in data.chunks_mut(dim) {
        fewshot_core::prototype::l2_normalize(row);
    }
    let emb = Embeddings { dim, data };
    let classes: Vec<Vec<usize>> = (0..40).map(|c| (c * 6..c * 6 + 6).collect()).collect();
    let sampler = EpisodeSampler::new(
        &classes,
        EpisodeShape {
            k_way: 5,
            n_shot: 3,
            q_queries: 3,
        },
        None,
        0,
    )
    .unwrap();
    let tuned = evaluate_episodes_with(
        &emb,
        &sampler,
        50,
        4,
        &EpisodeClassifier::FineTuned(finetune),
        false,
    )
    .unwrap();
    let proto = evaluate_episodes(&emb, &sampler, 50, 4, Distance::Cosine, false).unwrap();
    assert_eq!(tuned.accuracies, proto.accuracies);
}

/// The mean entropy of the softmax rows and the fine-tuning loss, by hand.
#[test]
fn entropy_term_by_hand() {
    let rows = [[1.0f64, 2.0, 0.5], [0.0, 0.0, 3.0]];
    let logits = Tensor::new(&[[1.0f32, 2.0, 0.5], [0.0, 0.0, 3.0]], &Device::Cpu).unwrap();
    let entropy = |z: &[f64]| {
        let sum: f64 = z.iter().map(|v| v.exp()).sum();
        -z.iter()
            .map(|v| v.exp() / sum)
            .map(|p| p * p.ln())
            .sum::<f64>()
    };
    let want = (entropy(&rows[0]) + entropy(&rows[1])) / 2.0;
    let got = f64::from(mean_entropy(&logits).unwrap().to_scalar::<f32>().unwrap());
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    // Uniform logits: log(classes).
    let flat = Tensor::zeros((1, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let got = f64::from(mean_entropy(&flat).unwrap().to_scalar::<f32>().unwrap());
    assert!((got - 4f64.ln()).abs() < 1e-6);

    // The whole objective on 2-d unit vectors: W = e1, e2; support (1,0) of
    // class 0; query (0.6, 0.8); s = 2, λ = 0.5.
    let f = FineTune {
        steps: 0,
        lr: 0.0,
        entropy_weight: 0.5,
        scale: 2.0,
    };
    let w = Tensor::new(&[[1.0f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
    let s = Tensor::new(&[[1.0f32, 0.0]], &Device::Cpu).unwrap();
    let q = Tensor::new(&[[0.6f32, 0.8]], &Device::Cpu).unwrap();
    let loss = f64::from(
        f.loss(&w, &s, &[0], &q)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
    );
    let ce = (2f64.exp() + 1.0).ln() - 2.0;
    let want = ce + 0.5 * entropy(&[1.2, 1.6]);
    assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
}

/// The core's hand-written step against candle's autograd step, several steps
/// in a row, with and without the entropy term.
#[test]
fn core_step_equals_candle_step() {
    let (classes, n_shot, queries, dim) = (4, 2, 6, 8);
    let labels: Vec<u32> = (0..classes * n_shot).map(|i| (i / n_shot) as u32).collect();
    let core_labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    for (entropy_weight, seed) in [(0.0, 11), (0.3, 12)] {
        let mut support = random(classes * n_shot * dim, seed);
        let mut query = random(queries * dim, seed + 1);
        core_normalize(&mut support, dim);
        core_normalize(&mut query, dim);
        let st = Tensor::from_slice(&support, (classes * n_shot, dim), &Device::Cpu).unwrap();
        let qt = Tensor::from_slice(&query, (queries, dim), &Device::Cpu).unwrap();

        let mut weights = vec![0.0f32; classes * dim];
        init_weights(&support, &core_labels, dim, &mut weights).unwrap();
        let init = class_means(&st, &labels, classes).unwrap();
        let init_v: Vec<f32> = init.flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in weights.iter().zip(&init_v) {
            assert!((a - b).abs() < 1e-6, "initial weights {a} vs {b}");
        }

        let f = FineTune {
            steps: 0,
            lr: 0.5,
            entropy_weight,
            scale: 5.0,
        };
        let core = CosineClassifier {
            scale: 5.0,
            lr: 0.5,
            entropy_weight: entropy_weight as f32,
        };
        let var = Var::from_tensor(&init).unwrap();
        let mut scratch = vec![0.0f32; scratch_len(classes, dim)];
        for step in 0..5 {
            let candle_loss = f.step(&var, &st, &labels, &qt).unwrap();
            let core_loss = core
                .step(
                    &mut weights,
                    &support,
                    &core_labels,
                    &query,
                    dim,
                    &mut scratch,
                )
                .unwrap();
            assert!(
                (candle_loss - f64::from(core_loss)).abs() < 1e-5,
                "λ {entropy_weight} step {step}: loss {candle_loss} vs {core_loss}"
            );
            let w: Vec<f32> = var.flatten_all().unwrap().to_vec1().unwrap();
            for (a, b) in weights.iter().zip(&w) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "λ {entropy_weight} step {step}: weights {a} vs {b}"
                );
            }
        }
        // And the weights did move.
        let moved = weights
            .iter()
            .zip(&init_v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(moved > 1e-3, "{moved}");
    }
}
