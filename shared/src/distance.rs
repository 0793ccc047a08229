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
    lanes(a, b, |x, y| x * y)
}

/// Number of independent partial sums: lets the compiler keep them in one
/// SIMD register instead of summing strictly left to right.
const LANES: usize = 8;

/// `Σ f(a_i, b_i)` with `LANES` partial sums.
#[inline(always)]
fn lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += f(x[i], y[i]);
        }
    }
    let mut total: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        total += f(*x, *y);
    }
    total
}

/// Squared Euclidean distance.
#[inline]
pub fn l2(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "embedding lengths differ");
    lanes(a, b, |x, y| (x - y) * (x - y))
}

/// One minus the cosine similarity, `1 - a·b / max(|a| |b|, COSINE_EPS)`.
#[inline]
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "embedding lengths differ");
    cosine_with(a, lanes(a, a, |x, _| x * x), b)
}

/// [`cosine`] given `aa = Σ a_i²` (summed as [`cosine`] does), so a query
/// compared with many prototypes is summed once; `a·b` and `|b|²` are summed
/// in one pass. The result is bit for bit [`cosine`]'s.
#[inline]
pub(crate) fn cosine_with(a: &[f32], aa: f32, b: &[f32]) -> f32 {
    let mut ab_acc = [0.0f32; LANES];
    let mut bb_acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            ab_acc[i] += x[i] * y[i];
            bb_acc[i] += y[i] * y[i];
        }
    }
    let mut ab: f32 = ab_acc.iter().sum();
    let mut bb: f32 = bb_acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        ab += x * y;
        bb += y * y;
    }
    1.0 - ab / (libm::sqrtf(aa) * libm::sqrtf(bb)).max(COSINE_EPS)
}

/// `Σ a_i²`, summed as [`cosine`] sums it.
#[inline]
pub(crate) fn sum_squares(a: &[f32]) -> f32 {
    lanes(a, a, |x, _| x * x)
}
