//! Nearest-prototype classification.

use crate::distance::Distance;
use crate::error::CoreError;

/// The prototype nearest to a query.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Nearest {
    /// Index of the nearest prototype.
    pub index: usize,
    /// Its distance to the query.
    pub distance: f32,
    /// Runner-up distance minus the nearest distance (infinite with one prototype).
    pub margin: f32,
}

/// Finds the prototype nearest to `query`. Ties go to the lower index.
///
/// Errors: [`CoreError::Empty`] with no prototypes, [`CoreError::DimMismatch`]
/// when a prototype's size differs from the query's, [`CoreError::NonFinite`]
/// when a distance is NaN or infinite.
pub fn nearest<'a, I>(
    query: &[f32],
    prototypes: I,
    distance: Distance,
) -> Result<Nearest, CoreError>
where
    I: IntoIterator<Item = &'a [f32]>,
{
    // The query's squared norm, summed once for every prototype.
    let qq = (distance == Distance::Cosine).then(|| crate::distance::sum_squares(query));
    nearest_by(prototypes.into_iter().map(|p| {
        if p.len() != query.len() {
            return Err(CoreError::DimMismatch {
                expected: query.len(),
                found: p.len(),
            });
        }
        Ok(match qq {
            Some(qq) => crate::distance::cosine_with(query, qq, p),
            None => distance.between(query, p),
        })
    }))
}

/// Nearest of a sequence of distances (shared by the f32 and int8 paths).
pub(crate) fn nearest_by<I>(distances: I) -> Result<Nearest, CoreError>
where
    I: IntoIterator<Item = Result<f32, CoreError>>,
{
    let mut best = f32::INFINITY;
    let mut second = f32::INFINITY;
    let mut index = None;
    for (i, d) in distances.into_iter().enumerate() {
        let d = d?;
        if !d.is_finite() {
            return Err(CoreError::NonFinite);
        }
        if index.is_none() || d < best {
            second = best;
            best = d;
            index = Some(i);
        } else if d < second {
            second = d;
        }
    }
    let index = index.ok_or(CoreError::Empty)?;
    Ok(Nearest {
        index,
        distance: best,
        margin: second - best,
    })
}

/// Softmax over negative distances (the class probabilities of Prototypical
/// Networks), written into `probs`. Numerically stable for any finite input.
///
/// # Panics
/// If `probs` and `distances` differ in length.
pub fn softmax_neg_distances(distances: &[f32], probs: &mut [f32]) {
    assert_eq!(
        distances.len(),
        probs.len(),
        "softmax output has the wrong length"
    );
    let min = distances.iter().copied().fold(f32::INFINITY, f32::min);
    let mut total = 0.0f32;
    for (p, d) in probs.iter_mut().zip(distances) {
        *p = libm::expf(min - d);
        total += *p;
    }
    probs.iter_mut().for_each(|p| *p /= total);
}
