//! The Siamese objectives against hand-computed values, and batch-hard mining
//! on a constructed batch.
use candle_core::{Device, Tensor};
use fewshot_host::nn::method::BatchLoss;
use fewshot_host::nn::siamese::{
    batch_hard_triplets, binary_cross_entropy_with_logits, pair_loss, triplet_loss,
    EmbeddingDistance, Mining, PairwiseHead, Triplet, TripletLoss,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn t(rows: &[[f32; 2]]) -> Tensor {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(data, (rows.len(), 2), &Device::Cpu).unwrap()
}

fn scalar(x: &Tensor) -> f64 {
    f64::from(x.to_scalar::<f32>().unwrap())
}

/// max(0, d(a, p) − d(a, n) + α), averaged, for each distance.
#[test]
fn triplet_loss_by_hand() {
    let a = t(&[[0.0, 0.0], [1.0, 1.0]]);
    let p = t(&[[1.0, 0.0], [1.0, 2.0]]);
    let n = t(&[[0.0, 2.0], [1.0, 1.5]]);
    // Squared: d(a,p) = [1, 1], d(a,n) = [4, 0.25]: hinges [0, 1.25].
    let (loss, right) = triplet_loss(&a, &p, &n, 0.5, EmbeddingDistance::SquaredL2).unwrap();
    assert!((scalar(&loss) - 0.625).abs() < 1e-6, "{}", scalar(&loss));
    assert_eq!(right, 0.5);
    // Plain: d(a,p) = [1, 1], d(a,n) = [2, 0.5]: hinges [0, 1].
    let (loss, _) = triplet_loss(&a, &p, &n, 0.5, EmbeddingDistance::L2).unwrap();
    assert!((scalar(&loss) - 0.5).abs() < 1e-5, "{}", scalar(&loss));
    // Cosine: d(a,p) = 1 − 1/√2, d(a,n) = 1: hinge 1 − 1/√2 − 1 + 0.8.
    let (loss, right) = triplet_loss(
        &t(&[[2.0, 0.0]]),
        &t(&[[1.0, 1.0]]),
        &t(&[[0.0, 3.0]]),
        0.8,
        EmbeddingDistance::Cosine,
    )
    .unwrap();
    let want = 0.8 - std::f64::consts::FRAC_1_SQRT_2;
    assert!((scalar(&loss) - want).abs() < 1e-6, "{}", scalar(&loss));
    assert_eq!(right, 1.0);
}

/// Binary cross-entropy of sigmoid(w·|e1 − e2| + b) against same/different.
#[test]
fn pair_loss_by_hand() {
    let head = PairwiseHead::from_weights(
        Tensor::new(&[[1.0f32, -2.0]], &Device::Cpu).unwrap(),
        Tensor::new(&[0.5f32], &Device::Cpu).unwrap(),
    );
    // |[1,2] − [3,1]| = [2,1]: 2 − 2 + 0.5; |[0,0] − [0,1]| = [0,1]: −2 + 0.5;
    // |[1,1] − [4,1]| = [3,0]: 3 + 0.5.
    let e1 = t(&[[1.0, 2.0], [0.0, 0.0], [1.0, 1.0]]);
    let e2 = t(&[[3.0, 1.0], [0.0, 1.0], [4.0, 1.0]]);
    let logits = head.logits(&e1, &e2).unwrap();
    let z: Vec<f32> = logits.to_vec1().unwrap();
    assert_eq!(z, [0.5, -1.5, 3.5]);
    let same = [true, false, false];
    let (loss, right) = pair_loss(&logits, &same).unwrap();
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let want = -(sigmoid(0.5).ln() + (1.0 - sigmoid(-1.5)).ln() + (1.0 - sigmoid(3.5)).ln()) / 3.0;
    assert!(
        (scalar(&loss) - want).abs() < 1e-6,
        "{} vs {want}",
        scalar(&loss)
    );
    assert!((right - 2.0 / 3.0).abs() < 1e-12);
    // Stable far from 0: −log(1 − sigmoid(100)) = 100 (+ e^−100).
    let big = Tensor::new(&[100.0f32, -100.0], &Device::Cpu).unwrap();
    let y = Tensor::new(&[0.0f32, 1.0], &Device::Cpu).unwrap();
    let loss = scalar(&binary_cross_entropy_with_logits(&big, &y).unwrap());
    assert!((loss - 100.0).abs() < 1e-4, "{loss}");
}

/// Batch-hard mining on 1-d points: the farthest positive and the nearest
/// negative of each anchor; an image alone in its class anchors nothing.
#[test]
fn batch_hard_mining_picks_the_hardest() {
    let labels = [0, 0, 0, 1, 1, 2];
    let x = [0.0f32, 1.0, 5.0, 2.0, 9.0, 4.0];
    let rows: Vec<[f32; 2]> = x.iter().map(|&v| [v, 0.0]).collect();
    let emb = t(&rows);
    let d = EmbeddingDistance::SquaredL2.matrix(&emb).unwrap();
    for i in 0..6 {
        for j in 0..6 {
            assert!((d[i * 6 + j] - (x[i] - x[j]).powi(2)).abs() < 1e-4);
        }
    }
    let want = [(0, 2, 3), (1, 2, 3), (2, 0, 5), (3, 4, 1), (4, 3, 2)].map(|(a, p, n)| Triplet {
        anchor: a,
        positive: p,
        negative: n,
    });
    assert_eq!(batch_hard_triplets(&labels, &d), want);
    // The same order under plain L2 and (for these points shifted off 0) cosine
    // would differ; L2 ranks as squared L2.
    let d = EmbeddingDistance::L2.matrix(&emb).unwrap();
    assert_eq!(batch_hard_triplets(&labels, &d), want);

    // The objective: hinges 25−4+1, 16−1+1, 25−1+1, 49−1+1, 49−16+1.
    let objective = TripletLoss {
        margin: 1.0,
        distance: EmbeddingDistance::SquaredL2,
        mining: Mining::BatchHard,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (loss, right) = objective.batch_loss(&emb, &labels, &mut rng).unwrap();
    assert!(
        (scalar(&loss) - 146.0 / 5.0).abs() < 1e-4,
        "{}",
        scalar(&loss)
    );
    assert_eq!(
        right, 0.0,
        "every hardest positive is beyond the nearest negative"
    );
}
