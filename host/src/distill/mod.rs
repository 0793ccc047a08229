//! Knowledge distillation: a student encoder learns to reproduce a teacher's
//! unit embeddings (no identity labels needed).
//!
//! The loss of a batch of student embeddings `s_i` and teacher targets `t_i`
//! (unit vectors) is `mean_i (1 − cos(s_i, t_i))`, plus, with weight
//! `relation`, the mean squared difference of the two batches' cosine
//! similarity matrices over pairs `i ≠ j` (the similarity structure the door
//! thresholds).

pub mod targets;
pub mod teacher;
pub mod views;

use candle_core::{Result, Tensor, D};

pub use targets::{teacher_targets, Targets};
pub use teacher::{Teacher, TeacherError, MOBILEFACENET};

/// Rows of `x` scaled to unit length.
fn unit_rows(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
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
    let s = unit_rows(student)?;
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
        let grads = loss.backward().unwrap();
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let h = 1e-6;
        for (k, &gk) in g.iter().enumerate() {
            let (i, j) = (k / 3, k % 3);
            let (mut up, mut down) = (s.clone(), s.clone());
            up[i][j] += h;
            down[i][j] -= h;
            let fd = (naive(&up, &t, 0.7) - naive(&down, &t, 0.7)) / (2.0 * h);
            assert!(
                (f64::from(gk) - fd).abs() < 1e-4,
                "d/ds[{i}][{j}]: {gk} vs {fd}"
            );
        }
    }
}
