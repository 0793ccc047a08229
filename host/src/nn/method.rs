//! Few-shot methods: embed or adapt to the support set, then score the queries.

use candle_core::{DType, Result, Tensor, D};
use fewshot_core::Distance;

use super::encoder::Encoder;
use crate::episode::EpisodeShape;

/// One episode as tensors. Support and query images are class-major: the
/// images of episode class `c` are rows `c * n_shot..(c + 1) * n_shot` of
/// `support` and `c * q_queries..(c + 1) * q_queries` of `query`.
#[derive(Debug, Clone)]
pub struct EpisodeTensors {
    /// `(k_way * n_shot, c, h, w)` support images.
    pub support: Tensor,
    /// `(k_way * q_queries, c, h, w)` query images.
    pub query: Tensor,
    /// The episode's shape.
    pub shape: EpisodeShape,
}

impl EpisodeTensors {
    /// Class of each query, `(k_way * q_queries,)` u32.
    pub fn query_labels(&self) -> Result<Tensor> {
        let s = self.shape;
        let labels: Vec<u32> = (0..s.k_way * s.q_queries)
            .map(|i| (i / s.q_queries) as u32)
            .collect();
        Tensor::from_vec(labels, s.k_way * s.q_queries, self.query.device())
    }
}

/// A few-shot method. `adapt` turns the support set into whatever the method
/// classifies with (prototypes, fast weights, a fine-tuned head); `score`
/// gives `(queries, k_way)` logits.
pub trait FewShotMethod {
    /// What adapting to a support set produces.
    type Adapted;

    /// The encoder the method embeds with (what is exported and validated).
    fn encoder(&self) -> &dyn Encoder;

    /// Adapts to the support set of an episode.
    fn adapt(&self, support: &Tensor, shape: EpisodeShape, train: bool) -> Result<Self::Adapted>;

    /// Scores queries against the adapted state: `(queries, k_way)` logits.
    fn score(&self, adapted: &Self::Adapted, query: &Tensor, train: bool) -> Result<Tensor>;

    /// Logits of an episode's queries (adapt, then score).
    fn logits(&self, episode: &EpisodeTensors, train: bool) -> Result<Tensor> {
        let adapted = self.adapt(&episode.support, episode.shape, train)?;
        self.score(&adapted, &episode.query, train)
    }

    /// Cross-entropy over the queries, and the queries' accuracy.
    fn loss(&self, episode: &EpisodeTensors, train: bool) -> Result<(Tensor, f64)> {
        let logits = self.logits(episode, train)?;
        let labels = episode.query_labels()?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let accuracy = accuracy(&logits, &labels)?;
        Ok((loss, accuracy))
    }
}

/// A training objective over a labelled batch of embeddings rather than an
/// episode (CosFace, the Siamese pair and triplet losses).
pub trait BatchLoss {
    /// The loss over `embeddings` `(n, d)` of classes `labels`, and a training
    /// accuracy (what it measures is the objective's own). `rng` draws
    /// whatever the objective samples from the batch (pairs, triplets).
    fn batch_loss(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<(Tensor, f64)>;
}

/// Fraction of rows whose largest logit is at the label.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    let predicted = logits.argmax(D::Minus1)?;
    let correct = predicted
        .eq(labels)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(f64::from(correct) / labels.dim(0)? as f64)
}

/// Pairwise distances between the rows of `a` `(m, d)` and `b` `(k, d)`:
/// `(m, k)`, with the core's semantics (l2 squared, cosine `1 - cos`, dot `-a·b`).
/// Cosine divides each row by `max(|row|, 1e-8)`.
pub fn pairwise_distance(a: &Tensor, b: &Tensor, distance: Distance) -> Result<Tensor> {
    match distance {
        Distance::L2 => {
            let aa = a.sqr()?.sum_keepdim(1)?;
            let bb = b.sqr()?.sum_keepdim(1)?.t()?;
            let ab = a.matmul(&b.t()?)?;
            aa.broadcast_add(&bb)?.sub(&(ab * 2.0)?)
        }
        Distance::Dot => a.matmul(&b.t()?)?.neg(),
        Distance::Cosine => {
            let unit = |x: &Tensor| -> Result<Tensor> {
                let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-8)?;
                x.broadcast_div(&norm)
            };
            let cos = unit(a)?.matmul(&unit(b)?.t()?)?;
            cos.affine(-1.0, 1.0)
        }
    }
}

/// Prototypical Networks (Snell et al., 2017): prototypes are class means of
/// the support embeddings; logits are negative distances to them.
pub struct ProtoNet {
    /// The encoder.
    pub encoder: Box<dyn Encoder>,
    /// Distance between query embeddings and prototypes.
    pub distance: Distance,
}

impl ProtoNet {
    /// Class means of class-major support embeddings `(k_way * n_shot, d)`.
    pub fn prototypes(embeddings: &Tensor, shape: EpisodeShape) -> Result<Tensor> {
        let d = embeddings.dim(1)?;
        embeddings.reshape((shape.k_way, shape.n_shot, d))?.mean(1)
    }
}

impl FewShotMethod for ProtoNet {
    type Adapted = Tensor;

    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    fn adapt(&self, support: &Tensor, shape: EpisodeShape, train: bool) -> Result<Tensor> {
        Self::prototypes(&self.encoder.embed(support, train)?, shape)
    }

    fn score(&self, prototypes: &Tensor, query: &Tensor, train: bool) -> Result<Tensor> {
        pairwise_distance(
            &self.encoder.embed(query, train)?,
            prototypes,
            self.distance,
        )?
        .neg()
    }

    /// Embeds support and query in one batch (so batch norm sees the whole
    /// episode, as in the reference implementation), then scores.
    fn logits(&self, episode: &EpisodeTensors, train: bool) -> Result<Tensor> {
        let n_support = episode.support.dim(0)?;
        let all = Tensor::cat(&[&episode.support, &episode.query], 0)?;
        let emb = self.encoder.embed(&all, train)?;
        let prototypes = Self::prototypes(&emb.narrow(0, 0, n_support)?, episode.shape)?;
        let query = emb.narrow(0, n_support, episode.query.dim(0)?)?;
        pairwise_distance(&query, &prototypes, self.distance)?.neg()
    }
}
