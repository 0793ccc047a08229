//! Knowledge distillation: a student encoder learns to reproduce a teacher's
//! unit embeddings (no identity labels needed).
//!
//! The loss of a batch of student embeddings `s_i` and teacher targets `t_i`
//! (unit vectors) is `mean_i (1 − cos(s_i, t_i))`, plus, with weight
//! `relation`, the mean squared difference of the two batches' cosine
//! similarity matrices over pairs `i ≠ j` (the similarity structure the door
//! thresholds).
//!
//! With a [`BankTerm`], a third term weighs the directions that tell people
//! apart: over the teacher's embeddings of all training images (the bank,
//! each image's own row left out), the student's softmax of cosine
//! similarities at a temperature is matched to the teacher's by their
//! Kullback-Leibler divergence, so that the student ranks an image's nearest
//! neighbours (the same person's other photos, then look-alikes) as the
//! teacher does.

pub mod targets;
pub mod teacher;
pub mod views;

use candle_core::{Result, Tensor, D};

use crate::nn::cosface::normalize_rows;

pub use targets::{mixed_targets, teacher_targets, Targets};
pub use teacher::{Teacher, TeacherError, TeacherInput, MOBILEFACENET};

/// The bank term's settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BankTerm {
    /// Weight of the term.
    pub weight: f64,
    /// Temperature of both softmaxes over the bank's cosine similarities.
    pub temperature: f64,
}

/// Mean over the batch of `KL(p_t ‖ p_s)`, where `p_t` (`p_s`) is the
/// softmax over the rows of `bank` `(m, dim)` of the teacher target's (the
/// student embedding's) cosine similarity to each row divided by
/// `temperature`, leaving out row `own[i]` for batch item `i` (its own image).
/// `bank` and `targets` hold unit rows.
pub fn bank_loss(
    student: &Tensor,
    targets: &Tensor,
    bank: &Tensor,
    own: &[usize],
    temperature: f64,
) -> Result<Tensor> {
    let (n, dim) = student.dims2()?;
    let (m, bank_dim) = bank.dims2()?;
    if bank_dim != dim || targets.dims2()? != (n, dim) || own.len() != n {
        candle_core::bail!(
            "bank term: student {:?}, targets {:?}, bank {:?} and {} own rows do not fit",
            student.dims(),
            targets.dims(),
            bank.dims(),
            own.len()
        );
    }
    if let Some(&bad) = own.iter().find(|&&r| r >= m) {
        candle_core::bail!("bank term: own row {bad} outside a bank of {m}");
    }
    // Large enough to vanish under softmax, small enough to stay finite.
    let mut mask = vec![0f32; n * m];
    for (i, &r) in own.iter().enumerate() {
        mask[i * m + r] = -1e9;
    }
    let mask = Tensor::from_vec(mask, (n, m), student.device())?;
    let bank_t = bank.t()?;
    let logits = |x: &Tensor| -> Result<Tensor> { (x.matmul(&bank_t)? / temperature)? + &mask };
    let log_ps = candle_nn::ops::log_softmax(&logits(&normalize_rows(student)?)?, D::Minus1)?;
    let log_pt = candle_nn::ops::log_softmax(&logits(targets)?, D::Minus1)?.detach();
    let pt = log_pt.exp()?;
    (pt * (log_pt - log_ps)?)?.sum_all()? / n as f64
}

/// The distillation loss of `student` `(n, dim)` against unit `targets`
/// `(n, dim)`, and the batch's mean student-teacher cosine.
pub fn distill_loss(student: &Tensor, targets: &Tensor, relation: f64) -> Result<(Tensor, f64)> {
    let (n, dim) = student.dims2()?;
    if targets.dims2()? != (n, dim) {
        candle_core::bail!(
            "student embeddings {:?} and teacher targets {:?} differ in shape",
            student.dims(),
            targets.dims()
        );
    }
    let s = normalize_rows(student)?;
    let cos = (&s * targets)?.sum(D::Minus1)?;
    let mean_cos = f64::from(cos.mean_all()?.to_scalar::<f32>()?);
    let mut loss = (1.0 - cos)?.mean_all()?;
    if relation > 0.0 && n > 1 {
        let gs = s.matmul(&s.t()?)?;
        let gt = targets.matmul(&targets.t()?)?;
        // The diagonals are 1 on both sides (up to rounding): only pairs count.
        let pairs = (n * (n - 1)) as f64;
        let rel = ((gs - gt)?.sqr()?.sum_all()? / pairs)?;
        loss = (loss + (rel * relation)?)?;
    }
    Ok((loss, mean_cos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn naive(s: &[Vec<f64>], t: &[Vec<f64>], relation: f64) -> f64 {
        let unit = |v: &Vec<f64>| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let su: Vec<_> = s.iter().map(unit).collect();
        let n = s.len();
        let mut loss = su.iter().zip(t).map(|(a, b)| 1.0 - dot(a, b)).sum::<f64>() / n as f64;
        let mut rel = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    rel += (dot(&su[i], &su[j]) - dot(&t[i], &t[j])).powi(2);
                }
            }
        }
        loss += relation * rel / (n * (n - 1)) as f64;
        loss
    }

    /// Each entry `(i, j)` of `s` (held by `var`, of which `loss` is a
    /// function): candle's gradient and the central difference of `naive`.
    fn against_finite_differences(
        var: &Var,
        loss: &Tensor,
        s: &[Vec<f64>],
        naive: impl Fn(&[Vec<f64>]) -> f64,
    ) -> Vec<(usize, usize, f64, f64)> {
        let grads = loss.backward().unwrap();
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (h, cols) = (1e-6, s[0].len());
        g.iter()
            .enumerate()
            .map(|(k, &gk)| {
                let (i, j) = (k / cols, k % cols);
                let (mut up, mut down) = (s.to_vec(), s.to_vec());
                up[i][j] += h;
                down[i][j] -= h;
                let fd = (naive(&up) - naive(&down)) / (2.0 * h);
                (i, j, f64::from(gk), fd)
            })
            .collect()
    }

    fn batch() -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let s = vec![
            vec![1.0, 2.0, -0.5],
            vec![-0.3, 0.7, 0.2],
            vec![0.9, -1.1, 0.4],
            vec![0.1, 0.1, 2.0],
        ];
        let t: Vec<Vec<f64>> = [
            [0.6, 0.8, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, -0.6, 0.8],
            [1.0, 0.0, 0.0],
        ]
        .iter()
        .map(|r| r.to_vec())
        .collect();
        (s, t)
    }

    fn tensor(rows: &[Vec<f64>]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
    }

    #[test]
    fn loss_matches_a_naive_f64_reference() {
        let (s, t) = batch();
        for relation in [0.0, 0.5, 2.0] {
            let (loss, _) = distill_loss(&tensor(&s), &tensor(&t), relation).unwrap();
            let got = f64::from(loss.to_scalar::<f32>().unwrap());
            let want = naive(&s, &t, relation);
            assert!(
                (got - want).abs() < 1e-5,
                "relation {relation}: {got} vs {want}"
            );
        }
        // A student that reproduces its targets (at any scale) has no loss.
        let scaled: Vec<Vec<f64>> = t
            .iter()
            .map(|r| r.iter().map(|v| 3.0 * v).collect())
            .collect();
        let (loss, cos) = distill_loss(&tensor(&scaled), &tensor(&t), 1.0).unwrap();
        assert!(loss.to_scalar::<f32>().unwrap().abs() < 1e-6);
        assert!((cos - 1.0).abs() < 1e-6);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (s, t) = batch();
        let var = Var::from_tensor(&tensor(&s)).unwrap();
        let (loss, _) = distill_loss(var.as_tensor(), &tensor(&t), 0.7).unwrap();
        for (i, j, g, fd) in against_finite_differences(&var, &loss, &s, |x| naive(x, &t, 0.7)) {
            assert!((g - fd).abs() < 1e-4, "d/ds[{i}][{j}]: {g} vs {fd}");
        }
    }

    /// The bank term line by line: softmaxes over the bank without the own
    /// row, in f64.
    fn naive_bank(
        s: &[Vec<f64>],
        t: &[Vec<f64>],
        bank: &[Vec<f64>],
        own: &[usize],
        temp: f64,
    ) -> f64 {
        let unit = |v: &Vec<f64>| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let softmax = |q: &[f64], skip: usize| -> Vec<f64> {
            let e: Vec<f64> = bank
                .iter()
                .enumerate()
                .map(|(r, b)| {
                    if r == skip {
                        0.0
                    } else {
                        (dot(q, b) / temp).exp()
                    }
                })
                .collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|v| v / z).collect()
        };
        let mut kl = 0.0;
        for i in 0..s.len() {
            let ps = softmax(&unit(&s[i]), own[i]);
            let pt = softmax(&t[i], own[i]);
            for r in 0..bank.len() {
                if r != own[i] {
                    kl += pt[r] * (pt[r] / ps[r]).ln();
                }
            }
        }
        kl / s.len() as f64
    }

    fn bank_rows() -> Vec<Vec<f64>> {
        let raw = [
            [0.6, 0.8, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, -0.6, 0.8],
            [1.0, 0.0, 0.0],
            [0.48, 0.6, 0.64],
            [-0.8, 0.0, 0.6],
        ];
        raw.iter().map(|r| r.to_vec()).collect()
    }

    #[test]
    fn bank_term_matches_a_naive_f64_reference_and_its_gradient_finite_differences() {
        let (s, t) = batch();
        let bank = bank_rows();
        let own = [0, 1, 2, 3];
        for temp in [0.1, 0.5] {
            let var = Var::from_tensor(&tensor(&s)).unwrap();
            let loss = bank_loss(var.as_tensor(), &tensor(&t), &tensor(&bank), &own, temp).unwrap();
            let got = f64::from(loss.to_scalar::<f32>().unwrap());
            let want = naive_bank(&s, &t, &bank, &own, temp);
            assert!(
                (got - want).abs() < 1e-4 * want.max(1.0),
                "T {temp}: {got} vs {want}"
            );
            let naive = |x: &[Vec<f64>]| naive_bank(x, &t, &bank, &own, temp);
            for (i, j, g, fd) in against_finite_differences(&var, &loss, &s, naive) {
                assert!(
                    (g - fd).abs() < 1e-3 * fd.abs().max(1.0),
                    "T {temp}, d/ds[{i}][{j}]: {g} vs {fd}"
                );
            }
        }
        // A student that ranks the bank as its teacher does has no loss; the
        // own row is left out (a different own row changes the loss).
        let loss_t = bank_loss(&tensor(&t), &tensor(&t), &tensor(&bank), &own, 0.2).unwrap();
        assert!(loss_t.to_scalar::<f32>().unwrap().abs() < 1e-6);
        let other =
            bank_loss(&tensor(&s), &tensor(&t), &tensor(&bank), &[5, 4, 4, 5], 0.2).unwrap();
        let same = bank_loss(&tensor(&s), &tensor(&t), &tensor(&bank), &own, 0.2).unwrap();
        let (a, b) = (
            other.to_scalar::<f32>().unwrap(),
            same.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() > 1e-4, "{a} vs {b}");
        assert!(bank_loss(&tensor(&s), &tensor(&t), &tensor(&bank), &[0, 1, 2, 6], 0.2).is_err());
    }
}
