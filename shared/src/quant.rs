//! Int8 embedding storage with a symmetric per-vector scale, and integer
//! distance kernels over it.
//!
//! A vector `x` is stored as `q = round_half_even(x / s)` clamped to
//! `[-127, 127]` with `s = max|x| / 127`, so `|x - s q| <= s / 2` per value.
//! The kernels accumulate `Σ qa qb` and `Σ q²` in `i32` and apply the scales
//! once, so the distance they return equals the f32 distance between the
//! dequantised vectors up to rounding of that final step.

use crate::classify::{nearest_by, Nearest};
use crate::distance::{Distance, COSINE_EPS};
use crate::error::CoreError;

/// Longest vector the `i32` accumulators cannot overflow on
/// (`127² · MAX_DIM < 2³¹`).
pub const MAX_DIM: usize = 133_000;

/// A borrowed int8 embedding: values, scale and the cached `Σ q²`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Q8<'a> {
    /// Quantised values.
    pub values: &'a [i8],
    /// Scale: value `i` stands for `scale * values[i]`.
    pub scale: f32,
    /// `Σ values[i]²`, cached for the l2 and cosine kernels.
    pub sq_norm: i32,
}

/// An owned int8 embedding of `DIM` values.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QuantizedEmbedding<const DIM: usize> {
    values: [i8; DIM],
    scale: f32,
    sq_norm: i32,
}

impl<const DIM: usize> QuantizedEmbedding<DIM> {
    /// Quantises an f32 embedding of `DIM` finite values.
    pub fn quantize(x: &[f32]) -> Result<Self, CoreError> {
        const { assert!(DIM <= MAX_DIM, "embedding too long for i32 accumulators") };
        crate::prototype::check_embedding(x, DIM)?;
        let mut values = [0i8; DIM];
        let scale = quantize_into(x, &mut values);
        Ok(QuantizedEmbedding {
            sq_norm: sq_norm(&values),
            values,
            scale,
        })
    }

    /// A borrowed view for the kernels.
    pub fn view(&self) -> Q8<'_> {
        Q8 {
            values: &self.values,
            scale: self.scale,
            sq_norm: self.sq_norm,
        }
    }

    /// The quantised values.
    pub fn values(&self) -> &[i8; DIM] {
        &self.values
    }

    /// The scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The f32 vector this stands for.
    pub fn dequantize(&self) -> [f32; DIM] {
        let mut out = [0.0; DIM];
        for (o, q) in out.iter_mut().zip(&self.values) {
            *o = self.scale * f32::from(*q);
        }
        out
    }
}

/// Quantises `x` into `out` and returns the scale. A zero vector gets scale 0.
///
/// # Panics
/// If the lengths differ.
pub fn quantize_into(x: &[f32], out: &mut [i8]) -> f32 {
    assert_eq!(x.len(), out.len(), "quantised buffer has the wrong length");
    let max = x.iter().fold(0.0f32, |m, v| m.max(libm::fabsf(*v)));
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    let inv = 127.0 / max;
    for (q, v) in out.iter_mut().zip(x) {
        // rintf rounds half to even, as ONNX QuantizeLinear does.
        *q = libm::rintf(v * inv).clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// `Σ q²` of an int8 vector.
pub fn sq_norm(q: &[i8]) -> i32 {
    assert!(
        q.len() <= MAX_DIM,
        "embedding too long for i32 accumulators"
    );
    q.iter().map(|&v| i32::from(v) * i32::from(v)).sum()
}

/// Integer dot product `Σ a b`.
///
/// # Panics
/// If the lengths differ or exceed [`MAX_DIM`].
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "embedding lengths differ");
    assert!(
        a.len() <= MAX_DIM,
        "embedding too long for i32 accumulators"
    );
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

impl Distance {
    /// The distance between two int8 embeddings, from one integer dot product.
    #[inline]
    pub fn between_q8(self, a: Q8<'_>, b: Q8<'_>) -> f32 {
        let ab = dot_i8(a.values, b.values) as f32;
        match self {
            Distance::L2 => {
                let (sa, sb) = (a.scale, b.scale);
                (sa * sa * a.sq_norm as f32 + sb * sb * b.sq_norm as f32 - 2.0 * sa * sb * ab)
                    .max(0.0)
            }
            Distance::Cosine => {
                let norms = libm::sqrtf(a.sq_norm as f32)
                    * a.scale
                    * libm::sqrtf(b.sq_norm as f32)
                    * b.scale;
                1.0 - a.scale * b.scale * ab / norms.max(COSINE_EPS)
            }
            Distance::Dot => -(a.scale * b.scale * ab),
        }
    }
}

/// Nearest int8 prototype to an int8 query (see [`crate::nearest`]).
pub fn nearest_q8<'a, I>(
    query: Q8<'_>,
    prototypes: I,
    distance: Distance,
) -> Result<Nearest, CoreError>
where
    I: IntoIterator<Item = Q8<'a>>,
{
    nearest_by(prototypes.into_iter().map(|p| {
        if p.values.len() != query.values.len() {
            return Err(CoreError::DimMismatch {
                expected: query.values.len(),
                found: p.values.len(),
            });
        }
        Ok(distance.between_q8(query, p))
    }))
}
