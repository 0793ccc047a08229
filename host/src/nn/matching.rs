//! Matching Networks (Vinyals et al., 2016): attention over the support set,
//! with optional full context embeddings (FCE, the paper's appendix A.2).
//!
//! The prediction for a query `x̂` is `P(y | x̂, S) = Σ_i a(x̂, x_i) y_i` with
//! `a(x̂, x_i) = softmax_i(c(f(x̂), g(x_i)))`; the logits this module returns
//! are `log P(class | x̂, S)`, so that cross-entropy over them is the paper's
//! loss. `c` is the negative of a core [`Distance`]: cosine similarity (up to
//! a constant, which softmax ignores), minus the squared l2 distance, or the
//! dot product.
//!
//! Without FCE, `f` and `g` are the encoder. With FCE:
//! - `g(x_i, S) = h→_i + h←_i + g'(x_i)`: a bidirectional LSTM (hidden size the
//!   embedding size) runs over the support embeddings `g'` in their episode
//!   order; with several layers each layer reads the sum `h→ + h←` of the one
//!   below, and the skip connection adds `g'` once, at the top.
//! - `f(x̂, S) = h_K`: an attention LSTM unrolled `K` steps from `h_0 = c_0 = 0`:
//!   `r_{k-1} = Σ_i softmax_i(h_{k-1} · g(x_i)) g(x_i)` (so `r_0` is the mean of
//!   `g`), `ĥ_k, c_k = LSTM(f'(x̂), [h_{k-1}, r_{k-1}], c_{k-1})`,
//!   `h_k = ĥ_k + f'(x̂)`. The read is **concatenated** with the state, as in the
//!   paper: the gates see `W f'(x̂) + U_h h_{k-1} + U_r r_{k-1} + b`, which is
//!   a standard LSTM cell whose input is `[f'(x̂), r_{k-1}]` and whose hidden
//!   state is `h_{k-1}`; that is how it is computed here.
//!
//! Variables (under the caller's prefix, PyTorch's LSTM names):
//! `support.{weight,bias}_{ih,hh}_l{layer}[_reverse]` and
//! `query.{weight,bias}_{ih,hh}_l0`.

use candle_core::{Result, Tensor, D};
use candle_nn::rnn::{Direction, LSTMConfig, LSTMState, LSTM, RNN};
use candle_nn::VarBuilder;
use fewshot_core::Distance;
use serde::{Deserialize, Serialize};

use super::encoder::Encoder;
use super::method::{pairwise_distance, FewShotMethod};
use crate::episode::EpisodeShape;

/// The full-context-embedding settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FceConfig {
    /// Layers of the support set's bidirectional LSTM.
    pub lstm_layers: usize,
    /// Steps `K` of the query's attention LSTM.
    pub unrolling_steps: usize,
}

/// A Matching Network's head (what sits on the encoder); stored in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MatchingConfig {
    /// Full context embeddings, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fce: Option<FceConfig>,
    /// A factor `s` on the attention's similarities before the softmax,
    /// `a = softmax(s · c)`; none: 1, the paper's. Cosine similarities lie
    /// in [−1, 1], so without it the softmax over them cannot be confident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
}

/// The LSTMs of the full context embeddings.
#[derive(Debug, Clone)]
pub struct Fce {
    /// Forward and backward LSTM of each layer over the support set.
    support: Vec<(LSTM, LSTM)>,
    /// The attention LSTM over each query (input `2 × dim`, hidden `dim`).
    query: LSTM,
    /// Unrolling steps `K`.
    steps: usize,
}

impl Fce {
    /// The LSTMs for embeddings of size `dim`, variables in `vb`.
    pub fn new(config: FceConfig, dim: usize, vb: VarBuilder) -> Result<Self> {
        if config.lstm_layers == 0 || config.unrolling_steps == 0 {
            candle_core::bail!(
                "full context embeddings need at least one LSTM layer and one unrolling step (got {} and {})",
                config.lstm_layers,
                config.unrolling_steps
            );
        }
        let cell = |layer_idx, direction| LSTMConfig {
            layer_idx,
            direction,
            ..Default::default()
        };
        let support = (0..config.lstm_layers)
            .map(|l| {
                Ok((
                    LSTM::new(dim, dim, cell(l, Direction::Forward), vb.pp("support"))?,
                    LSTM::new(dim, dim, cell(l, Direction::Backward), vb.pp("support"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let query = LSTM::new(2 * dim, dim, cell(0, Direction::Forward), vb.pp("query"))?;
        Ok(Fce {
            support,
            query,
            steps: config.unrolling_steps,
        })
    }

    /// The settings it was built with.
    pub fn config(&self) -> FceConfig {
        FceConfig {
            lstm_layers: self.support.len(),
            unrolling_steps: self.steps,
        }
    }

    /// `g(x_i, S)` for support embeddings `g'` `(n, dim)` in episode order.
    pub fn support_context(&self, g_prime: &Tensor) -> Result<Tensor> {
        let n = g_prime.dim(0)?;
        let reverse =
            Tensor::from_vec((0..n as u32).rev().collect::<Vec<_>>(), n, g_prime.device())?;
        let mut x = g_prime.clone();
        for (forward, backward) in &self.support {
            let run = |lstm: &LSTM, seq: &Tensor| -> Result<Tensor> {
                let states = lstm.seq(&seq.unsqueeze(0)?)?;
                lstm.states_to_tensor(&states)?.squeeze(0)
            };
            let ahead = run(forward, &x)?;
            let behind = run(backward, &x.index_select(&reverse, 0)?)?.index_select(&reverse, 0)?;
            x = (ahead + behind)?;
        }
        x + g_prime
    }

    /// `f(x̂, S)` for query embeddings `f'` `(m, dim)` against the support's
    /// context embeddings `g` `(n, dim)`.
    pub fn query_context(&self, f_prime: &Tensor, g: &Tensor) -> Result<Tensor> {
        let mut state = self.query.zero_state(f_prime.dim(0)?)?;
        let g_t = g.t()?;
        for _ in 0..self.steps {
            let attention = candle_nn::ops::softmax(&state.h.matmul(&g_t)?, D::Minus1)?;
            let read = attention.matmul(g)?;
            let next = self
                .query
                .step(&Tensor::cat(&[f_prime, &read], 1)?, &state)?;
            state = LSTMState::new((next.h + f_prime)?, next.c);
        }
        Ok(state.h)
    }
}

/// The door with full context embeddings: the gallery's prototypes embedded
/// in each other's context (`g`), each probe attended over them (`f`), as the
/// device's exported graphs do.
impl crate::eval::door::GalleryMatcher for Fce {
    fn gallery(
        &self,
        prototypes: &[f32],
        dim: usize,
    ) -> std::result::Result<Vec<f32>, crate::eval::door::DoorEvalError> {
        let run = || -> Result<Vec<f32>> {
            let p = Tensor::from_slice(
                prototypes,
                (prototypes.len() / dim, dim),
                &candle_core::Device::Cpu,
            )?;
            self.support_context(&p)?.flatten_all()?.to_vec1::<f32>()
        };
        run().map_err(|e| crate::eval::door::DoorEvalError::Matcher(e.to_string()))
    }

    fn probes(
        &self,
        embeddings: &[f32],
        gallery: &[f32],
        dim: usize,
    ) -> std::result::Result<Vec<f32>, crate::eval::door::DoorEvalError> {
        let run = || -> Result<Vec<f32>> {
            let cpu = candle_core::Device::Cpu;
            let f = Tensor::from_slice(embeddings, (embeddings.len() / dim, dim), &cpu)?;
            let g = Tensor::from_slice(gallery, (gallery.len() / dim, dim), &cpu)?;
            self.query_context(&f, &g)?.flatten_all()?.to_vec1::<f32>()
        };
        run().map_err(|e| crate::eval::door::DoorEvalError::Matcher(e.to_string()))
    }
}

/// What a Matching Network classifies with, on embeddings: the attention and,
/// with FCE, the LSTMs.
#[derive(Debug, Clone)]
pub struct MatchingHead {
    /// `c` is minus this distance.
    pub similarity: Distance,
    /// The factor on `c` before the softmax (1: the paper's attention).
    pub scale: f64,
    /// Full context embeddings, if any.
    pub fce: Option<Fce>,
}

impl MatchingHead {
    /// The head of `config` for embeddings of size `dim`, variables in `vb`.
    pub fn new(
        config: MatchingConfig,
        similarity: Distance,
        dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let scale = f64::from(config.scale.unwrap_or(1.0));
        if !(scale.is_finite() && scale > 0.0) {
            candle_core::bail!("the attention's scale must be a positive number, got {scale}");
        }
        Ok(MatchingHead {
            similarity,
            scale,
            fce: config.fce.map(|f| Fce::new(f, dim, vb)).transpose()?,
        })
    }

    /// `g`: the support set's embeddings in context (the encoder's without FCE).
    pub fn support_context(&self, support: &Tensor) -> Result<Tensor> {
        match &self.fce {
            Some(fce) => fce.support_context(support),
            None => Ok(support.clone()),
        }
    }

    /// `log P(class | x̂, S)` `(m, k_way)` for query embeddings `(m, dim)`
    /// against support context embeddings `g` `(k_way * n_shot, dim)`,
    /// class-major.
    pub fn score_context(&self, g: &Tensor, query: &Tensor, shape: EpisodeShape) -> Result<Tensor> {
        let f = match &self.fce {
            Some(fce) => fce.query_context(query, g)?,
            None => query.clone(),
        };
        let c = pairwise_distance(&f, g, self.similarity)?.neg()?;
        let c = if self.scale == 1.0 {
            c
        } else {
            (c * self.scale)?
        };
        let attention = candle_nn::ops::log_softmax(&c, D::Minus1)?;
        // log Σ_{i in class} a_i, over each class's shots.
        attention
            .reshape((f.dim(0)?, shape.k_way, shape.n_shot))?
            .log_sum_exp(D::Minus1)
    }

    /// `log P(class | x̂, S)` `(m, k_way)` for query embeddings `(m, dim)` and
    /// class-major support embeddings `(k_way * n_shot, dim)`.
    pub fn logits(&self, support: &Tensor, query: &Tensor, shape: EpisodeShape) -> Result<Tensor> {
        self.score_context(&self.support_context(support)?, query, shape)
    }
}

/// A Matching Network: an encoder (`f'` and `g'` shared) and its head.
pub struct MatchingNet {
    /// The encoder.
    pub encoder: Box<dyn Encoder>,
    /// Attention and FCE.
    pub head: MatchingHead,
}

/// A support set adapted to: its context embeddings and the episode's shape.
pub struct MatchingSupport {
    /// `g(x_i, S)`, `(k_way * n_shot, dim)`.
    pub context: Tensor,
    /// The episode's shape.
    pub shape: EpisodeShape,
}

impl FewShotMethod for MatchingNet {
    type Adapted = MatchingSupport;

    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    fn adapt(&self, support: &Tensor, shape: EpisodeShape, train: bool) -> Result<MatchingSupport> {
        Ok(MatchingSupport {
            context: self
                .head
                .support_context(&self.encoder.embed(support, train)?)?,
            shape,
        })
    }

    fn score(&self, adapted: &MatchingSupport, query: &Tensor, train: bool) -> Result<Tensor> {
        self.head.score_context(
            &adapted.context,
            &self.encoder.embed(query, train)?,
            adapted.shape,
        )
    }

    /// Embeds support and query in one batch (batch norm sees the whole
    /// episode, as for Prototypical Networks), then attends.
    fn logits(&self, episode: &super::method::EpisodeTensors, train: bool) -> Result<Tensor> {
        let n_support = episode.support.dim(0)?;
        let all = Tensor::cat(&[&episode.support, &episode.query], 0)?;
        let emb = self.encoder.embed(&all, train)?;
        self.head.logits(
            &emb.narrow(0, 0, n_support)?,
            &emb.narrow(0, n_support, episode.query.dim(0)?)?,
            episode.shape,
        )
    }
}
