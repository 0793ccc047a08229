//! Prototype-initialised cosine fine-tuning on a support set (the candle
//! counterpart of [`fewshot_core::finetune`]).
//!
//! Per episode, with the encoder fixed: normalise the support and query
//! embeddings, take the class means of the unit support embeddings as the
//! weights `W` of a cosine classifier (logits `s · cos(w_c, f)`, Chen et al.,
//! 2019), then take gradient-descent steps on the support's cross-entropy plus
//! `λ` times the mean entropy of the query predictions (transductive, Dhillon
//! et al., 2020). With no steps this is the prototype classifier with cosine
//! distance on unit embeddings.

use candle_core::{Result, Tensor, Var, D};
use serde::Serialize;

use super::cosface::normalize_rows;

/// Settings of the fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FineTune {
    /// Gradient-descent steps.
    pub steps: usize,
    /// Learning rate.
    pub lr: f64,
    /// Weight `λ` of the query entropy (0: the support alone).
    pub entropy_weight: f64,
    /// Scale `s` of the logits.
    pub scale: f64,
}

/// Mean over rows of the entropy of `softmax(logits)`: `−Σ_c p_c log p_c`.
pub fn mean_entropy(logits: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (log_p.exp()? * &log_p)?.sum(D::Minus1)?.neg()?.mean_all()
}

/// Class means of the rows of `embeddings` `(n, d)` with class `labels`:
/// `(classes, d)`. Every class needs a row.
pub fn class_means(embeddings: &Tensor, labels: &[u32], classes: usize) -> Result<Tensor> {
    let rows = (0..classes as u32)
        .map(|c| {
            let ids: Vec<u32> = (0..labels.len() as u32)
                .filter(|&i| labels[i as usize] == c)
                .collect();
            if ids.is_empty() {
                candle_core::bail!("class {c} has no support example");
            }
            let ids = Tensor::from_vec(ids.clone(), ids.len(), embeddings.device())?;
            embeddings.index_select(&ids, 0)?.mean(0)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::stack(&rows, 0)
}

impl FineTune {
    /// Logits `s · cos(w_c, x)` of the rows of `x` `(n, d)`: `(n, classes)`.
    pub fn logits(&self, weights: &Tensor, x: &Tensor) -> Result<Tensor> {
        normalize_rows(x)?.matmul(&normalize_rows(weights)?.t()?)? * self.scale
    }

    /// The objective: cross-entropy of the support (`labels`) plus `λ` · the
    /// mean entropy of the queries' predictions.
    pub fn loss(
        &self,
        weights: &Tensor,
        support: &Tensor,
        labels: &[u32],
        query: &Tensor,
    ) -> Result<Tensor> {
        let labels = Tensor::from_slice(labels, labels.len(), support.device())?;
        let ce = candle_nn::loss::cross_entropy(&self.logits(weights, support)?, &labels)?;
        if self.entropy_weight == 0.0 || query.dim(0)? == 0 {
            return Ok(ce);
        }
        ce + (mean_entropy(&self.logits(weights, query)?)? * self.entropy_weight)?
    }

    /// One gradient-descent step on `weights`; returns the loss before it.
    pub fn step(
        &self,
        weights: &Var,
        support: &Tensor,
        labels: &[u32],
        query: &Tensor,
    ) -> Result<f64> {
        let loss = self.loss(weights.as_tensor(), support, labels, query)?;
        let grads = loss.backward()?;
        let grad = grads
            .get(weights.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient for the classifier".into()))?;
        weights.set(&(weights.as_tensor() - (grad * self.lr)?)?)?;
        Ok(f64::from(loss.to_scalar::<f32>()?))
    }

    /// Fine-tuned weights `(classes, d)` for support embeddings `(n, d)` with
    /// `labels` and unlabelled query embeddings `(m, d)`: normalise, start
    /// from the class means, take [`FineTune::steps`] steps.
    pub fn fit(
        &self,
        support: &Tensor,
        labels: &[u32],
        query: &Tensor,
        classes: usize,
    ) -> Result<Tensor> {
        let support = normalize_rows(&support.detach())?;
        let query = normalize_rows(&query.detach())?;
        let weights = Var::from_tensor(&class_means(&support, labels, classes)?)?;
        for _ in 0..self.steps {
            self.step(&weights, &support, labels, &query)?;
        }
        Ok(weights.as_detached_tensor())
    }

    /// Logits `(m, classes)` of the queries after fine-tuning on the support.
    pub fn query_logits(
        &self,
        support: &Tensor,
        labels: &[u32],
        query: &Tensor,
        classes: usize,
    ) -> Result<Tensor> {
        let weights = self.fit(support, labels, query, classes)?;
        self.logits(&weights, query)
    }
}
