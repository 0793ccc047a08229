//! Siamese pre-training objectives over a batch of `P` classes × `K` images,
//! all through the one shared encoder:
//!
//! - pair-wise similarity (Koch et al., 2015): a fully connected layer on
//!   `|e1 − e2|`, then a sigmoid, trained with binary cross-entropy on
//!   balanced same/different pairs;
//! - the triplet loss `max(0, d(a, p) − d(a, n) + α)` (Schroff et al., 2015)
//!   with random triplets or batch-hard mining (Hermans et al., 2017).

use candle_core::{Result, Tensor, D};
use candle_nn::{Module, VarBuilder};
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::cosface::normalize_rows;
use super::method::BatchLoss;

/// The distance a triplet loss compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmbeddingDistance {
    /// `|a − b|²`.
    SquaredL2,
    /// `|a − b|` (with `1e-12` under the root so the gradient stays finite at 0).
    L2,
    /// `1 − cos(a, b)`, i.e. half the squared distance of the unit embeddings.
    Cosine,
}

impl EmbeddingDistance {
    /// All distances, in a fixed order.
    pub const ALL: [EmbeddingDistance; 3] = [Self::SquaredL2, Self::L2, Self::Cosine];

    /// The name used on command lines (`squared-l2`, `l2`, `cosine`).
    pub fn name(self) -> &'static str {
        match self {
            Self::SquaredL2 => "squared-l2",
            Self::L2 => "l2",
            Self::Cosine => "cosine",
        }
    }

    /// The core distance that ranks neighbours as this one does (for
    /// prototypes and validation): squared L2 for both L2 forms.
    pub fn core(self) -> fewshot_core::Distance {
        match self {
            Self::SquaredL2 | Self::L2 => fewshot_core::Distance::L2,
            Self::Cosine => fewshot_core::Distance::Cosine,
        }
    }

    /// Distances between matching rows of `a` and `b` `(n, d)`: `(n,)`.
    pub fn rows(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self {
            Self::SquaredL2 => (a - b)?.sqr()?.sum(D::Minus1),
            Self::L2 => ((a - b)?.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt(),
            Self::Cosine => (normalize_rows(a)? * normalize_rows(b)?)?
                .sum(D::Minus1)?
                .affine(-1.0, 1.0),
        }
    }

    /// Every distance between the rows of `x` `(n, d)`, as `n × n` values
    /// (for mining; no gradient).
    pub fn matrix(self, x: &Tensor) -> Result<Vec<f32>> {
        let x = x.detach();
        let x = match self {
            Self::Cosine => normalize_rows(&x)?,
            _ => x,
        };
        let sq = x.sqr()?.sum_keepdim(1)?;
        let gram = x.matmul(&x.t()?)?;
        let d2 = sq
            .broadcast_add(&sq.t()?)?
            .sub(&(gram.clone() * 2.0)?)?
            .relu()?;
        let d = match self {
            Self::SquaredL2 => d2,
            Self::L2 => (d2 + 1e-12)?.sqrt()?,
            Self::Cosine => gram.affine(-1.0, 1.0)?,
        };
        d.flatten_all()?.to_vec1()
    }
}

/// How triplets are drawn from a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mining {
    /// Each anchor with a random positive and a random negative.
    Random,
    /// Each anchor with its farthest positive and its nearest negative.
    BatchHard,
}

/// Indices into a batch of an anchor, a positive (same class) and a negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triplet {
    /// The anchor.
    pub anchor: usize,
    /// An image of the anchor's class.
    pub positive: usize,
    /// An image of another class.
    pub negative: usize,
}

/// Other images of the anchor's class and images of other classes.
fn partners(labels: &[u32], anchor: usize) -> (Vec<usize>, Vec<usize>) {
    (0..labels.len())
        .filter(|&j| j != anchor)
        .partition(|&j| labels[j] == labels[anchor])
}

/// One triplet per anchor that has a positive and a negative in the batch,
/// with both drawn at random.
pub fn random_triplets(labels: &[u32], rng: &mut ChaCha8Rng) -> Vec<Triplet> {
    (0..labels.len())
        .filter_map(|anchor| {
            let (pos, neg) = partners(labels, anchor);
            Some(Triplet {
                anchor,
                positive: *pos.choose(rng)?,
                negative: *neg.choose(rng)?,
            })
        })
        .collect()
}

/// Batch-hard mining: one triplet per anchor with a positive and a negative
/// in the batch, with the positive farthest from it and the negative nearest
/// (`distances` is the `n × n` matrix of the batch; ties go to the lower index).
pub fn batch_hard_triplets(labels: &[u32], distances: &[f32]) -> Vec<Triplet> {
    let n = labels.len();
    let d = |i: usize, j: usize| distances[i * n + j];
    (0..n)
        .filter_map(|anchor| {
            let (pos, neg) = partners(labels, anchor);
            let positive =
                pos.into_iter()
                    .reduce(|a, b| if d(anchor, b) > d(anchor, a) { b } else { a })?;
            let negative =
                neg.into_iter()
                    .reduce(|a, b| if d(anchor, b) < d(anchor, a) { b } else { a })?;
            Some(Triplet {
                anchor,
                positive,
                negative,
            })
        })
        .collect()
}

/// Balanced pairs: for each image with a same-class partner and an
/// other-class one in the batch, one random same pair and one random
/// different pair, as `(i, j, same)`.
pub fn balanced_pairs(labels: &[u32], rng: &mut ChaCha8Rng) -> Vec<(usize, usize, bool)> {
    let mut pairs = Vec::new();
    for i in 0..labels.len() {
        let (pos, neg) = partners(labels, i);
        if let (Some(&p), Some(&n)) = (pos.choose(rng), neg.choose(rng)) {
            pairs.push((i, p, true));
            pairs.push((i, n, false));
        }
    }
    pairs
}

fn select(x: &Tensor, ids: impl Iterator<Item = usize>) -> Result<Tensor> {
    let ids: Vec<u32> = ids.map(|i| i as u32).collect();
    x.index_select(&Tensor::from_vec(ids.clone(), ids.len(), x.device())?, 0)
}

/// The triplet loss: mean over rows of `max(0, d(a, p) − d(a, n) + margin)`,
/// and the fraction of triplets with `d(a, p) < d(a, n)`.
pub fn triplet_loss(
    anchor: &Tensor,
    positive: &Tensor,
    negative: &Tensor,
    margin: f64,
    distance: EmbeddingDistance,
) -> Result<(Tensor, f64)> {
    let dp = distance.rows(anchor, positive)?;
    let dn = distance.rows(anchor, negative)?;
    let gap = (&dp - &dn)?;
    let loss = (&gap + margin)?.relu()?.mean_all()?;
    let gaps: Vec<f32> = gap.to_vec1()?;
    let right = gaps.iter().filter(|&&g| g < 0.0).count();
    Ok((loss, right as f64 / gaps.len().max(1) as f64))
}

/// Binary cross-entropy of `sigmoid(logits)` against `targets` (0 or 1),
/// averaged: `max(z, 0) − z·y + log(1 + e^{−|z|})`, stable for any `z`.
pub fn binary_cross_entropy_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (logits.relu()? - (logits * targets)?)?
        .add(&softplus)?
        .mean_all()
}

/// The pair loss: binary cross-entropy of the pair logits against `same`,
/// and the fraction of pairs whose sigmoid is on the right side of 1/2.
pub fn pair_loss(logits: &Tensor, same: &[bool]) -> Result<(Tensor, f64)> {
    let targets: Vec<f32> = same.iter().map(|&s| f32::from(u8::from(s))).collect();
    let targets = Tensor::from_vec(targets, same.len(), logits.device())?;
    let loss = binary_cross_entropy_with_logits(logits, &targets)?;
    let z: Vec<f32> = logits.to_vec1()?;
    let right = z.iter().zip(same).filter(|(&z, &s)| (z > 0.0) == s).count();
    Ok((loss, right as f64 / same.len().max(1) as f64))
}

/// The triplet objective over a batch of `P` classes × `K` images.
#[derive(Debug, Clone, Copy)]
pub struct TripletLoss {
    /// Margin `α`.
    pub margin: f64,
    /// The distance compared.
    pub distance: EmbeddingDistance,
    /// How triplets are chosen.
    pub mining: Mining,
}

impl BatchLoss for TripletLoss {
    fn batch_loss(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        rng: &mut ChaCha8Rng,
    ) -> Result<(Tensor, f64)> {
        let triplets = match self.mining {
            Mining::Random => random_triplets(labels, rng),
            Mining::BatchHard => batch_hard_triplets(labels, &self.distance.matrix(embeddings)?),
        };
        if triplets.is_empty() {
            candle_core::bail!("the batch has no triplet: it needs 2 classes with 2 images");
        }
        triplet_loss(
            &select(embeddings, triplets.iter().map(|t| t.anchor))?,
            &select(embeddings, triplets.iter().map(|t| t.positive))?,
            &select(embeddings, triplets.iter().map(|t| t.negative))?,
            self.margin,
            self.distance,
        )
    }
}

/// The pair-wise head: `logit = w · |e1 − e2| + b`, `p(same) = sigmoid(logit)`.
#[derive(Debug, Clone)]
pub struct PairwiseHead {
    linear: candle_nn::Linear,
}

impl PairwiseHead {
    /// A head for `dim`-d embeddings; variables `weight` `(1, dim)` and `bias` `(1,)`.
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(PairwiseHead {
            linear: candle_nn::linear(dim, 1, vb)?,
        })
    }

    /// The head from given weights (`(1, dim)` and `(1,)`).
    pub fn from_weights(weight: Tensor, bias: Tensor) -> Self {
        PairwiseHead {
            linear: candle_nn::Linear::new(weight, Some(bias)),
        }
    }

    /// Logits that rows of `e1` and `e2` `(n, d)` show the same class: `(n,)`.
    pub fn logits(&self, e1: &Tensor, e2: &Tensor) -> Result<Tensor> {
        self.linear.forward(&(e1 - e2)?.abs()?)?.squeeze(1)
    }
}

impl BatchLoss for PairwiseHead {
    fn batch_loss(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        rng: &mut ChaCha8Rng,
    ) -> Result<(Tensor, f64)> {
        let pairs = balanced_pairs(labels, rng);
        if pairs.is_empty() {
            candle_core::bail!("the batch has no pair: it needs 2 classes with 2 images");
        }
        let logits = self.logits(
            &select(embeddings, pairs.iter().map(|p| p.0))?,
            &select(embeddings, pairs.iter().map(|p| p.1))?,
        )?;
        let same: Vec<bool> = pairs.iter().map(|p| p.2).collect();
        pair_loss(&logits, &same)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_triplets_and_pairs_respect_the_labels() {
        let labels = [0, 0, 1, 1, 1, 2];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let triplets = random_triplets(&labels, &mut rng);
        // Image 5 is alone in its class: no positive.
        assert_eq!(
            triplets.iter().map(|t| t.anchor).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        for t in &triplets {
            assert_ne!(t.anchor, t.positive);
            assert_eq!(labels[t.anchor], labels[t.positive]);
            assert_ne!(labels[t.anchor], labels[t.negative]);
        }
        let pairs = balanced_pairs(&labels, &mut rng);
        assert_eq!(pairs.len(), 10);
        assert_eq!(pairs.iter().filter(|p| p.2).count(), 5, "balanced");
        for &(i, j, same) in &pairs {
            assert_ne!(i, j);
            assert_eq!(labels[i] == labels[j], same);
        }
    }
}
