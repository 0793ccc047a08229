//! Views of an aligned face: the plain alignment (view 0) and jittered ones,
//! each a similarity transform of the alignment template about the crop's
//! centre. The student's crop and the teacher's crop of one view are the
//! same transform of the same template (both normalised to the crop), so the
//! teacher's target stays exact for every view; each view's targets are
//! cached apart (the recipe is part of the teacher cache's name).
//!
//! A mixed view blends each aligned face with another training image's
//! ([`Mix`]): the student sees the blend of its two crops, the teacher's
//! target is its embedding of the blend of its own two crops (both are
//! aligned to the same template, and preprocessing is affine per pixel, so
//! the two blends show the same picture).

use fewshot_core::{Crop, FaceTemplate, Recipe};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest rotation of a jittered view, in degrees.
pub const MAX_ROTATION_DEG: f32 = 8.0;
/// Largest relative change of a jittered view's scale.
pub const MAX_SCALE: f32 = 0.1;
/// Largest shift of a jittered view, as a fraction of the crop's side.
pub const MAX_SHIFT: f32 = 0.03;

/// A similarity transform of a template about the crop's centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    /// Rotation of the template's points, in degrees (counter-clockwise in
    /// image coordinates, y down).
    pub rotation_deg: f32,
    /// Scale of the template's points about the centre (> 1: the face fills
    /// more of the crop).
    pub scale: f32,
    /// Shift of the template's points, as fractions of the crop's width and height.
    pub shift: [f32; 2],
}

impl Jitter {
    /// No change.
    pub const NONE: Jitter = Jitter {
        rotation_deg: 0.0,
        scale: 1.0,
        shift: [0.0, 0.0],
    };

    /// View `view`'s jitter: none for view 0, else drawn uniformly within
    /// the ranges above by a generator seeded with the view's number (the
    /// same views in every run).
    pub fn of_view(view: usize) -> Jitter {
        if view == 0 {
            return Jitter::NONE;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(0x5649_4557 ^ view as u64);
        let mut sym = |m: f32| rng.random_range(-m..=m);
        Jitter {
            rotation_deg: sym(MAX_ROTATION_DEG),
            scale: 1.0 + sym(MAX_SCALE),
            shift: [sym(MAX_SHIFT), sym(MAX_SHIFT)],
        }
    }

    /// `template` with its points moved by this transform.
    pub fn apply(&self, template: &FaceTemplate) -> FaceTemplate {
        let (sin, cos) = self.rotation_deg.to_radians().sin_cos();
        let mut out = *template;
        for p in &mut out.points {
            let (x, y) = (p[0] - 0.5, p[1] - 0.5);
            p[0] = 0.5 + self.scale * (cos * x - sin * y) + self.shift[0];
            p[1] = 0.5 + self.scale * (sin * x + cos * y) + self.shift[1];
        }
        out
    }
}

/// `recipe` for view `view`: its alignment template jittered. Views other
/// than 0 need an aligning recipe.
pub fn view_recipe(recipe: &Recipe, view: usize) -> Result<Recipe, String> {
    if view == 0 {
        return Ok(*recipe);
    }
    match recipe.crop {
        Crop::Aligned(template) => Ok(Recipe {
            crop: Crop::Aligned(Jitter::of_view(view).apply(&template)),
            ..*recipe
        }),
        _ => Err(
            "jittered views move the alignment template: they need an aligning recipe (--align)"
                .into(),
        ),
    }
}

/// The smallest share of the partner in a mixed view.
pub const MIN_SHARE: f32 = 0.1;
/// The largest share of the partner in a mixed view (above one half the
/// partner would be the main face, which another image's mix covers).
pub const MAX_SHARE: f32 = 0.5;

/// Image `i`'s blend in a mixed view: `(1 − share)·i + share·partner`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// The other image's index.
    pub partner: usize,
    /// Its weight in the blend, in `[MIN_SHARE, MAX_SHARE]`.
    pub share: f32,
}

/// Mixed view `m`'s blends of `n` images (`n ≥ 2`): each image's partner is
/// another image drawn uniformly, its share uniformly in
/// `[MIN_SHARE, MAX_SHARE]`, by a generator seeded with `m` (the same blends
/// in every run).
pub fn mixes(n: usize, m: usize) -> Result<Vec<Mix>, String> {
    if n < 2 {
        return Err(format!(
            "mixed views blend two training images: {n} is too few"
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x4d49_5855 ^ m as u64);
    Ok((0..n)
        .map(|i| {
            // Uniform over the other n − 1 images.
            let p = rng.random_range(0..n - 1);
            Mix {
                partner: if p >= i { p + 1 } else { p },
                share: rng.random_range(MIN_SHARE..=MAX_SHARE),
            }
        })
        .collect())
}

/// `(1 − share)·a + share·b`, value by value.
pub fn blend(a: &[f32], b: &[f32], share: f32) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(x, y)| (1.0 - share) * x + share * y)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_pair_each_image_with_another_at_a_share_in_range() {
        let n = 50;
        let a = mixes(n, 1).expect("50 images");
        assert_eq!(a, mixes(n, 1).expect("again"), "drawn the same each time");
        assert_ne!(a, mixes(n, 2).expect("view 2"));
        for (i, m) in a.iter().enumerate() {
            assert!(m.partner < n && m.partner != i, "image {i}: {m:?}");
            assert!((MIN_SHARE..=MAX_SHARE).contains(&m.share));
        }
        // Partners spread over the images (not one fixed offset).
        let distinct: std::collections::HashSet<usize> = a.iter().map(|m| m.partner).collect();
        assert!(distinct.len() > n / 3, "{} partners", distinct.len());
        assert_eq!(mixes(2, 0).expect("two")[0].partner, 1);
        assert!(mixes(1, 0).is_err());
        // Hand-computed blend.
        assert_eq!(blend(&[1.0, -2.0], &[3.0, 2.0], 0.25), vec![1.5, -1.0]);
    }

    fn dist(a: [f32; 2], b: [f32; 2]) -> f64 {
        (f64::from(a[0] - b[0]).powi(2) + f64::from(a[1] - b[1]).powi(2)).sqrt()
    }

    #[test]
    fn view_zero_is_the_plain_alignment() {
        let t = FaceTemplate::ARCFACE;
        assert_eq!(Jitter::of_view(0), Jitter::NONE);
        assert_eq!(Jitter::NONE.apply(&t), t);
    }

    #[test]
    fn a_jitter_is_the_similarity_it_names() {
        // A hand-computed case: 90° turns (x, y) − c into (−y, x), doubled, shifted.
        let j = Jitter {
            rotation_deg: 90.0,
            scale: 2.0,
            shift: [0.01, -0.02],
        };
        let mut t = FaceTemplate::ARCFACE;
        t.points[0] = [0.6, 0.5];
        t.points[1] = [0.5, 0.3];
        let out = j.apply(&t);
        let want = [[0.51, 0.68], [0.91, 0.48]];
        for (got, want) in out.points.iter().zip(want) {
            assert!(dist(*got, want) < 1e-6, "{got:?} against {want:?}");
        }
    }

    #[test]
    fn views_are_fixed_distinct_and_within_their_ranges() {
        let t = FaceTemplate::ARCFACE;
        let eyes = dist(t.points[0], t.points[1]);
        for v in 1..20 {
            let j = Jitter::of_view(v);
            assert_eq!(
                j,
                Jitter::of_view(v),
                "view {v} is drawn the same each time"
            );
            assert_ne!(j, Jitter::of_view(v + 1));
            assert!(j.rotation_deg.abs() <= MAX_ROTATION_DEG);
            assert!((j.scale - 1.0).abs() <= MAX_SCALE);
            assert!(j.shift.iter().all(|s| s.abs() <= MAX_SHIFT));
            let out = j.apply(&t);
            // A similarity: every distance scales by `scale`.
            let ratio = dist(out.points[0], out.points[1]) / eyes;
            assert!((ratio - f64::from(j.scale)).abs() < 1e-5);
        }
    }

    #[test]
    fn only_aligning_recipes_have_views() {
        let mut r = crate::distill::MOBILEFACENET;
        let v = view_recipe(&r, 3).expect("aligned");
        assert_eq!(
            v.crop,
            Crop::Aligned(Jitter::of_view(3).apply(&FaceTemplate::ARCFACE))
        );
        assert_eq!(view_recipe(&r, 0).expect("view 0"), r);
        r.crop = Crop::CenterSquare(0.5);
        assert!(view_recipe(&r, 1).is_err());
        assert_eq!(view_recipe(&r, 0).expect("view 0 of any recipe"), r);
    }
}
