//! CosFace (Wang et al., 2018): a classifier on the unit sphere with an
//! additive cosine margin, for pre-training an embedding over many identities.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use super::method::{accuracy, BatchLoss};

/// The class weights and the scale `s` and margin `m` of the logits
/// `s · (cos θ_j − m·[j = label])`.
#[derive(Debug, Clone)]
pub struct CosFace {
    weight: Tensor,
    /// Scale of the logits.
    pub scale: f64,
    /// Cosine margin subtracted from the true class.
    pub margin: f64,
}

/// Rows divided by their length (floored at 1e-12).
pub fn normalize_rows(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

impl CosFace {
    /// A head over `classes` identities for `dim`-d embeddings; variable `weight`.
    pub fn new(
        classes: usize,
        dim: usize,
        scale: f64,
        margin: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let bound = 1.0 / (dim as f64).sqrt();
        let weight = vb.get_with_hints(
            (classes, dim),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(CosFace {
            weight,
            scale,
            margin,
        })
    }

    /// Cosine of every embedding with every class: `(n, classes)`.
    pub fn cosines(&self, embeddings: &Tensor) -> Result<Tensor> {
        normalize_rows(embeddings)?.matmul(&normalize_rows(&self.weight)?.t()?)
    }

    /// Cross-entropy of the margin logits, and the accuracy of the plain cosines.
    pub fn loss(&self, embeddings: &Tensor, labels: &[u32]) -> Result<(Tensor, f64)> {
        let cos = self.cosines(embeddings)?;
        let (n, classes) = cos.dims2()?;
        let mut onehot = vec![0f32; n * classes];
        for (i, &l) in labels.iter().enumerate() {
            onehot[i * classes + l as usize] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (n, classes), cos.device())?;
        let logits = ((cos.clone() - (onehot * self.margin)?)? * self.scale)?;
        let labels = Tensor::from_slice(labels, n, cos.device())?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        Ok((loss, accuracy(&cos, &labels.to_dtype(DType::U32)?)?))
    }
}

impl BatchLoss for CosFace {
    /// [`CosFace::loss`]; labels are indices of the head's classes.
    fn batch_loss(
        &self,
        embeddings: &Tensor,
        labels: &[u32],
        _rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<(Tensor, f64)> {
        self.loss(embeddings, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    /// The loss against a naive f64 computation of the same formula.
    #[test]
    fn loss_matches_a_naive_computation() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let head = CosFace::new(3, 4, 10.0, 0.35, vb).unwrap();
        let e: Vec<f32> = vec![0.3, -1.2, 0.5, 2.0, 1.0, 0.1, -0.4, 0.2];
        let labels = [2u32, 0];
        let emb = Tensor::from_slice(&e, (2, 4), &Device::Cpu).unwrap();
        let (loss, _) = head.loss(&emb, &labels).unwrap();
        let w: Vec<f32> = head.weight.flatten_all().unwrap().to_vec1().unwrap();
        let unit = |v: &[f32]| {
            let n = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            v.iter().map(|x| f64::from(*x) / n).collect::<Vec<f64>>()
        };
        let mut total = 0.0;
        for (i, &label) in labels.iter().enumerate() {
            let a = unit(&e[i * 4..i * 4 + 4]);
            let logits: Vec<f64> = (0..3)
                .map(|j| {
                    let b = unit(&w[j * 4..j * 4 + 4]);
                    let cos: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                    10.0 * (cos - if j == label as usize { 0.35 } else { 0.0 })
                })
                .collect();
            let lse = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
            total += lse - logits[label as usize];
        }
        let want = total / 2.0;
        let got = f64::from(loss.to_scalar::<f32>().unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}
