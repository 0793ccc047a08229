//! Fine-tuning a cosine classifier over fixed embeddings, so a device can
//! refine the prototypes of its identities from several shots.
//!
//! The classifier is the one of Chen et al. (2019, "Baseline++"): logits
//! `z_c = s · cos(w_c, f)`. Its weights start as the class means of the unit
//! support embeddings (the prototypes) and follow plain gradient descent on
//! the support's cross-entropy plus `λ` times the mean entropy of the
//! predictions on unlabelled queries (the transductive term of Dhillon et al.,
//! 2020). Only the weights change: the embeddings are fixed, so one step is a
//! linear layer's gradient and needs no allocator: the caller lends every
//! buffer (see [`scratch_len`]).
//!
//! Embeddings are rows of `dim` values in one slice; `weights` holds one row
//! per class.

use crate::error::CoreError;
use crate::prototype::l2_normalize;

/// Floor of a weight row's length (as the host's `normalize_rows`).
const NORM_FLOOR: f32 = 1e-12;

/// Settings of the fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CosineClassifier {
    /// Scale `s` of the logits `s · cos(w_c, f)`.
    pub scale: f32,
    /// Learning rate of gradient descent.
    pub lr: f32,
    /// Weight `λ` of the mean entropy of the query predictions (0: support only).
    pub entropy_weight: f32,
}

/// Values of scratch space one step needs for `classes` classes of `dim`-d
/// embeddings: the gradient and the unit weights (`classes · dim` each), the
/// weight lengths and one row of probabilities (`classes` each).
pub const fn scratch_len(classes: usize, dim: usize) -> usize {
    2 * classes * dim + 2 * classes
}

/// Scales every `dim`-value row of `rows` to unit length (zero rows stay zero).
pub fn normalize_rows(rows: &mut [f32], dim: usize) {
    if dim == 0 {
        return;
    }
    rows.chunks_exact_mut(dim).for_each(l2_normalize);
}

/// Sets each weight row to the mean of its class's support rows: the
/// prototypes. `labels[i]` is the class of support row `i`; every class
/// needs at least one shot. Normalise the support first ([`normalize_rows`]).
pub fn init_weights(
    support: &[f32],
    labels: &[usize],
    dim: usize,
    weights: &mut [f32],
) -> Result<(), CoreError> {
    let classes = check_rows(weights, dim)?;
    check_support(support, labels, dim, classes)?;
    for (c, w) in weights.chunks_exact_mut(dim).enumerate() {
        w.fill(0.0);
        let mut n = 0usize;
        for (row, _) in support
            .chunks_exact(dim)
            .zip(labels)
            .filter(|(_, &l)| l == c)
        {
            w.iter_mut().zip(row).for_each(|(w, x)| *w += x);
            n += 1;
        }
        if n == 0 {
            return Err(CoreError::Empty);
        }
        let inv = 1.0 / n as f32;
        w.iter_mut().for_each(|w| *w *= inv);
    }
    Ok(())
}

impl CosineClassifier {
    /// Writes the logits `s · cos(w_c, x)` of one embedding into `logits`
    /// (one per class).
    pub fn logits(&self, weights: &[f32], x: &[f32], logits: &mut [f32]) -> Result<(), CoreError> {
        let dim = x.len();
        let classes = check_rows(weights, dim)?;
        check_len(logits.len(), classes)?;
        let xn = libm::sqrtf(x.iter().map(|v| v * v).sum::<f32>()).max(NORM_FLOOR);
        for (z, w) in logits.iter_mut().zip(weights.chunks_exact(dim)) {
            let wn = libm::sqrtf(w.iter().map(|v| v * v).sum::<f32>()).max(NORM_FLOOR);
            *z = self.scale * dot(w, x) / (wn * xn);
        }
        Ok(())
    }

    /// The loss at `weights` (support cross-entropy plus `λ` · mean query
    /// entropy); its gradient with respect to `weights` is left in
    /// `scratch[..weights.len()]`. `support` and `queries` must be unit rows
    /// ([`normalize_rows`]); `queries` may be empty.
    pub fn loss_and_gradient(
        &self,
        weights: &[f32],
        support: &[f32],
        labels: &[usize],
        queries: &[f32],
        dim: usize,
        scratch: &mut [f32],
    ) -> Result<f32, CoreError> {
        let classes = check_rows(weights, dim)?;
        check_support(support, labels, dim, classes)?;
        if queries.len() % dim != 0 {
            return Err(CoreError::DimMismatch {
                expected: dim,
                found: queries.len() % dim,
            });
        }
        if scratch.len() < scratch_len(classes, dim) {
            return Err(CoreError::DimMismatch {
                expected: scratch_len(classes, dim),
                found: scratch.len(),
            });
        }
        let kd = classes * dim;
        let (grad, rest) = scratch.split_at_mut(kd);
        let (unit, rest) = rest.split_at_mut(kd);
        let (norms, rest) = rest.split_at_mut(classes);
        let probs = &mut rest[..classes];
        for ((w, u), n) in weights
            .chunks_exact(dim)
            .zip(unit.chunks_exact_mut(dim))
            .zip(norms.iter_mut())
        {
            *n = libm::sqrtf(w.iter().map(|v| v * v).sum::<f32>()).max(NORM_FLOOR);
            u.iter_mut().zip(w).for_each(|(u, w)| *u = w / *n);
        }
        grad.fill(0.0);
        let s = self.scale;
        let mut loss = 0.0f32;

        // Cross-entropy of the support: dL/dz_c = (p_c − [c = y]) / n.
        let n_support = labels.len() as f32;
        for (f, &y) in support.chunks_exact(dim).zip(labels) {
            let lse = softmax(unit, f, s, probs);
            loss += (lse - s * dot(&unit[y * dim..(y + 1) * dim], f)) / n_support;
            for (c, g) in grad.chunks_exact_mut(dim).enumerate() {
                let dz = (probs[c] - if c == y { 1.0 } else { 0.0 }) / n_support;
                g.iter_mut().zip(f).for_each(|(g, x)| *g += s * dz * x);
            }
        }

        // Entropy of the queries: dH/dz_c = −p_c (log p_c + H).
        let n_query = queries.len() / dim;
        if n_query > 0 && self.entropy_weight != 0.0 {
            let weight = self.entropy_weight / n_query as f32;
            for f in queries.chunks_exact(dim) {
                let lse = softmax(unit, f, s, probs);
                // log p_c = z_c − lse, recomputed from the logits so that a
                // probability that underflows to 0 contributes 0, not NaN.
                let log_p = |c: usize| s * dot(&unit[c * dim..(c + 1) * dim], f) - lse;
                let h: f32 = -(0..classes).map(|c| probs[c] * log_p(c)).sum::<f32>();
                loss += weight * h;
                for (c, g) in grad.chunks_exact_mut(dim).enumerate() {
                    let dz = -weight * probs[c] * (log_p(c) + h);
                    g.iter_mut().zip(f).for_each(|(g, x)| *g += s * dz * x);
                }
            }
        }

        // Through the normalisation: dL/dw = (I − u uᵀ) dL/du / |w|.
        for ((g, u), n) in grad
            .chunks_exact_mut(dim)
            .zip(unit.chunks_exact(dim))
            .zip(norms.iter())
        {
            let along = dot(g, u);
            g.iter_mut()
                .zip(u)
                .for_each(|(g, u)| *g = (*g - along * u) / n);
        }
        if !loss.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            return Err(CoreError::NonFinite);
        }
        Ok(loss)
    }

    /// One gradient-descent step on `weights`; returns the loss before it.
    /// Arguments as [`CosineClassifier::loss_and_gradient`].
    pub fn step(
        &self,
        weights: &mut [f32],
        support: &[f32],
        labels: &[usize],
        queries: &[f32],
        dim: usize,
        scratch: &mut [f32],
    ) -> Result<f32, CoreError> {
        let loss = self.loss_and_gradient(weights, support, labels, queries, dim, scratch)?;
        weights
            .iter_mut()
            .zip(scratch.iter())
            .for_each(|(w, g)| *w -= self.lr * g);
        Ok(loss)
    }

    /// Initialises the weights from the support ([`init_weights`]) and takes
    /// `steps` steps; returns the loss before the last step (none for zero
    /// steps). Normalises `support` and `queries` in place.
    #[allow(clippy::too_many_arguments)]
    pub fn fit(
        &self,
        steps: usize,
        weights: &mut [f32],
        support: &mut [f32],
        labels: &[usize],
        queries: &mut [f32],
        dim: usize,
        scratch: &mut [f32],
    ) -> Result<Option<f32>, CoreError> {
        normalize_rows(support, dim);
        normalize_rows(queries, dim);
        init_weights(support, labels, dim, weights)?;
        let mut loss = None;
        for _ in 0..steps {
            loss = Some(self.step(weights, support, labels, queries, dim, scratch)?);
        }
        Ok(loss)
    }
}

/// Writes `softmax(s · unit · f)` into `probs`; returns the log-sum-exp of the logits.
fn softmax(unit: &[f32], f: &[f32], s: f32, probs: &mut [f32]) -> f32 {
    let dim = f.len();
    let mut max = f32::NEG_INFINITY;
    for (p, u) in probs.iter_mut().zip(unit.chunks_exact(dim)) {
        *p = s * dot(u, f);
        max = max.max(*p);
    }
    let mut sum = 0.0;
    for p in probs.iter_mut() {
        *p = libm::expf(*p - max);
        sum += *p;
    }
    probs.iter_mut().for_each(|p| *p /= sum);
    max + libm::logf(sum)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Number of rows of a non-empty weight matrix of `dim`-value rows.
fn check_rows(weights: &[f32], dim: usize) -> Result<usize, CoreError> {
    if dim == 0 || weights.is_empty() {
        return Err(CoreError::Empty);
    }
    if weights.len() % dim != 0 {
        return Err(CoreError::DimMismatch {
            expected: dim,
            found: weights.len() % dim,
        });
    }
    Ok(weights.len() / dim)
}

fn check_len(found: usize, expected: usize) -> Result<(), CoreError> {
    if found != expected {
        return Err(CoreError::DimMismatch { expected, found });
    }
    Ok(())
}

fn check_support(
    support: &[f32],
    labels: &[usize],
    dim: usize,
    classes: usize,
) -> Result<(), CoreError> {
    if labels.is_empty() {
        return Err(CoreError::Empty);
    }
    check_len(support.len(), labels.len() * dim)?;
    if let Some(&label) = labels.iter().find(|&&l| l >= classes) {
        return Err(CoreError::LabelOutOfRange { label, classes });
    }
    if support.iter().any(|x| !x.is_finite()) {
        return Err(CoreError::NonFinite);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> ([f32; 12], [usize; 4], [f32; 6], [f32; 6]) {
        let mut support = [
            1.0, 0.2, -0.3, 0.8, 0.1, 0.4, -0.2, 1.0, 0.3, 0.1, 0.9, -0.5,
        ];
        let mut queries = [0.7, 0.5, 0.1, -0.1, 0.8, 0.6];
        normalize_rows(&mut support, 3);
        normalize_rows(&mut queries, 3);
        let labels = [0, 0, 1, 1];
        let mut weights = [0.0; 6];
        init_weights(&support, &labels, 3, &mut weights).unwrap();
        // Move off the prototypes so the support gradient is not tiny.
        weights[0] += 0.3;
        weights[4] -= 0.2;
        (support, labels, queries, weights)
    }

    /// The hand-written gradient against central differences of the loss.
    #[test]
    fn gradient_matches_finite_differences() {
        let (support, labels, queries, weights) = data();
        for entropy_weight in [0.0, 0.7] {
            let cc = CosineClassifier {
                scale: 4.0,
                lr: 0.1,
                entropy_weight,
            };
            let mut scratch = [0.0; scratch_len(2, 3)];
            cc.loss_and_gradient(&weights, &support, &labels, &queries, 3, &mut scratch)
                .unwrap();
            let grad: [f32; 6] = scratch[..6].try_into().unwrap();
            for i in 0..6 {
                let h = 1e-2;
                let mut loss_at = |delta: f32| {
                    let mut w = weights;
                    w[i] += delta;
                    cc.loss_and_gradient(&w, &support, &labels, &queries, 3, &mut scratch)
                        .unwrap()
                };
                let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * h);
                assert!(
                    (numeric - grad[i]).abs() < 2e-3 + 2e-2 * grad[i].abs(),
                    "λ {entropy_weight} entry {i}: analytic {} numeric {numeric}",
                    grad[i]
                );
            }
        }
    }

    #[test]
    fn steps_lower_the_loss_and_bad_input_is_refused() {
        let (mut support, labels, mut queries, mut weights) = data();
        let cc = CosineClassifier {
            scale: 4.0,
            lr: 0.5,
            entropy_weight: 0.1,
        };
        let mut scratch = [0.0; scratch_len(2, 3)];
        let first = cc
            .fit(
                1,
                &mut weights,
                &mut support,
                &labels,
                &mut queries,
                3,
                &mut scratch,
            )
            .unwrap()
            .unwrap();
        let last = cc
            .fit(
                30,
                &mut weights,
                &mut support,
                &labels,
                &mut queries,
                3,
                &mut scratch,
            )
            .unwrap()
            .unwrap();
        assert!(last < first, "{last} vs {first}");
        assert_eq!(
            cc.step(
                &mut weights,
                &support,
                &[0, 0, 2, 1],
                &queries,
                3,
                &mut scratch
            ),
            Err(CoreError::LabelOutOfRange {
                label: 2,
                classes: 2
            })
        );
        assert!(matches!(
            cc.step(
                &mut weights,
                &support,
                &labels,
                &queries,
                3,
                &mut scratch[..5]
            ),
            Err(CoreError::DimMismatch { .. })
        ));
        assert_eq!(
            init_weights(&support, &[0, 0, 0, 0], 3, &mut weights),
            Err(CoreError::Empty),
            "a class without shots"
        );
    }
}
