//! Class prototypes: the mean of a class's support embeddings.

use crate::error::CoreError;

/// Writes the mean of `shots` into `prototype` and returns how many shots it averaged.
pub fn mean_into<'a, I>(shots: I, prototype: &mut [f32]) -> Result<usize, CoreError>
where
    I: IntoIterator<Item = &'a [f32]>,
{
    prototype.fill(0.0);
    let mut n = 0usize;
    for shot in shots {
        check_embedding(shot, prototype.len())?;
        for (p, x) in prototype.iter_mut().zip(shot) {
            *p += x;
        }
        n += 1;
    }
    if n == 0 {
        return Err(CoreError::Empty);
    }
    let inv = 1.0 / n as f32;
    prototype.iter_mut().for_each(|p| *p *= inv);
    Ok(n)
}

/// Adds one more shot to a prototype that is the mean of `count` shots
/// (running mean: `p += (x - p) / (count + 1)`), and returns the new count.
pub fn add_shot(prototype: &mut [f32], count: u32, shot: &[f32]) -> Result<u32, CoreError> {
    check_embedding(shot, prototype.len())?;
    let new_count = count.saturating_add(1);
    let w = 1.0 / new_count as f32;
    for (p, x) in prototype.iter_mut().zip(shot) {
        *p += (x - *p) * w;
    }
    Ok(new_count)
}

/// Scales `v` to unit Euclidean norm (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = libm::sqrtf(v.iter().map(|x| x * x).sum::<f32>());
    if norm > crate::distance::COSINE_EPS {
        let inv = 1.0 / norm;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Checks that an embedding has `dim` finite values.
pub fn check_embedding(embedding: &[f32], dim: usize) -> Result<(), CoreError> {
    if embedding.len() != dim {
        return Err(CoreError::DimMismatch {
            expected: dim,
            found: embedding.len(),
        });
    }
    if embedding.iter().any(|x| !x.is_finite()) {
        return Err(CoreError::NonFinite);
    }
    Ok(())
}
