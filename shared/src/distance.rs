//! Distances between embeddings, with the semantics of the classic few-shot code:
//! smaller is always more alike.

/// Epsilon guarding the cosine distance against zero vectors (as in PyTorch's
/// `cosine_similarity`: the norm product is clamped to at least this).
pub const COSINE_EPS: f32 = 1e-8;

/// A distance between two embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Distance {
    /// Squared Euclidean distance.
    L2,
    /// One minus cosine similarity.
    Cosine,
    /// Negative dot product.
    Dot,
}

impl Distance {
    /// All distances, in a fixed order.
    pub const ALL: [Distance; 3] = [Distance::L2, Distance::Cosine, Distance::Dot];

    /// The distance between `a` and `b`.
    ///
    /// # Panics
    /// If the slices differ in length (a programming error: embedding sizes are
    /// checked where embeddings enter the program).
    #[inline]
    pub fn between(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Distance::L2 => l2(a, b),
            Distance::Cosine => cosine(a, b),
            Distance::Dot => -dot(a, b),
        }
    }

    /// The lower-case name used on command lines and in model metadata.
    pub fn name(self) -> &'static str {
        match self {
            Distance::L2 => "l2",
            Distance::Cosine => "cosine",
            Distance::Dot => "dot",
        }
    }

    /// Parses [`Distance::name`]'s output.
    pub fn from_name(name: &str) -> Option<Distance> {
        Distance::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Dot product.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "embedding lengths differ");
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Squared Euclidean distance.
#[inline]
pub fn l2(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "embedding lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = x - y;
            d * d
        })
        .sum()
}

/// One minus the cosine similarity, `1 - a·b / max(|a| |b|, COSINE_EPS)`.
#[inline]
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "embedding lengths differ");
    let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    1.0 - ab / (libm::sqrtf(aa) * libm::sqrtf(bb)).max(COSINE_EPS)
}
