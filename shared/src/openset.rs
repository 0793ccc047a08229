//! The open-set decision: a known identity, or "unknown" (the door's extra class).

use crate::classify::Nearest;

/// Rule that accepts a nearest prototype as a match or rejects it as unknown.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OpenSet {
    /// Accept only when the nearest distance is at most this.
    pub max_distance: f32,
    /// And when the runner-up is at least this much farther (0 disables the check).
    pub min_margin: f32,
}

/// Outcome of [`OpenSet::decide`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Decision {
    /// The query is the identity of the nearest prototype.
    Known(Nearest),
    /// The query is nobody enrolled; carries the nearest prototype if there was one.
    Unknown(Option<Nearest>),
}

impl OpenSet {
    /// A rule with a distance threshold only.
    pub const fn threshold(max_distance: f32) -> Self {
        OpenSet {
            max_distance,
            min_margin: 0.0,
        }
    }

    /// Whether a nearest prototype is close enough, and far enough ahead of
    /// the runner-up, to be accepted.
    pub fn accepts(&self, nearest: &Nearest) -> bool {
        nearest.distance <= self.max_distance && nearest.margin >= self.min_margin
    }

    /// Decides on a nearest prototype (`None`: nothing is enrolled).
    pub fn decide(&self, nearest: Option<Nearest>) -> Decision {
        match nearest {
            Some(n) if self.accepts(&n) => Decision::Known(n),
            other => Decision::Unknown(other),
        }
    }
}

/// Most gallery sizes a model's thresholds are calibrated for.
pub const MAX_GALLERY_THRESHOLDS: usize = 8;

/// Thresholds calibrated for galleries of several sizes: a stranger is
/// compared with every enrolled person, so the larger the gallery, the more
/// chances of a false accept, and the stricter the threshold for the same
/// false-accept rate per stranger.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GalleryThresholds {
    sizes: [u32; MAX_GALLERY_THRESHOLDS],
    thresholds: [f32; MAX_GALLERY_THRESHOLDS],
    len: usize,
}

/// Why a list of gallery thresholds was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GalleryThresholdsError {
    /// No points, or more than [`MAX_GALLERY_THRESHOLDS`].
    #[error("expected 1 to {MAX_GALLERY_THRESHOLDS} gallery sizes, got {0}")]
    Count(usize),
    /// Sizes must be at least 1 and strictly increasing.
    #[error("gallery sizes must be at least 1 and strictly increasing")]
    Sizes,
    /// A threshold is NaN or infinite.
    #[error("gallery thresholds must be finite numbers")]
    NonFinite,
}

impl GalleryThresholds {
    /// From `(gallery size, threshold)` points in increasing size.
    pub fn new(points: &[(usize, f32)]) -> Result<Self, GalleryThresholdsError> {
        if points.is_empty() || points.len() > MAX_GALLERY_THRESHOLDS {
            return Err(GalleryThresholdsError::Count(points.len()));
        }
        let mut out = GalleryThresholds {
            sizes: [0; MAX_GALLERY_THRESHOLDS],
            thresholds: [0.0; MAX_GALLERY_THRESHOLDS],
            len: points.len(),
        };
        let mut last = 0usize;
        for (i, &(size, threshold)) in points.iter().enumerate() {
            if size <= last || size > u32::MAX as usize {
                return Err(GalleryThresholdsError::Sizes);
            }
            if !threshold.is_finite() {
                return Err(GalleryThresholdsError::NonFinite);
            }
            last = size;
            out.sizes[i] = size as u32;
            out.thresholds[i] = threshold;
        }
        Ok(out)
    }

    /// The threshold for a gallery of `enrolled` people: that of the
    /// smallest calibrated size that is at least `enrolled` (never laxer
    /// than the calibration asks); beyond the largest size, the largest's
    /// (whose false-accept rate is then exceeded).
    pub fn for_gallery(&self, enrolled: usize) -> f32 {
        self.point_for(enrolled).1
    }

    /// The `(calibrated size, threshold)` point [`Self::for_gallery`] uses.
    pub fn point_for(&self, enrolled: usize) -> (usize, f32) {
        let i = (0..self.len)
            .find(|&i| self.sizes[i] as usize >= enrolled)
            .unwrap_or(self.len - 1);
        (self.sizes[i] as usize, self.thresholds[i])
    }

    /// The `(gallery size, threshold)` points.
    pub fn points(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        (0..self.len).map(|i| (self.sizes[i] as usize, self.thresholds[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_calibrated_gallery_at_least_as_large_decides() {
        let t = GalleryThresholds::new(&[(10, 0.5), (50, 0.4), (272, 0.3)]).unwrap();
        assert_eq!(t.for_gallery(0), 0.5);
        assert_eq!(t.for_gallery(10), 0.5);
        assert_eq!(t.for_gallery(11), 0.4);
        assert_eq!(t.for_gallery(50), 0.4);
        assert_eq!(t.for_gallery(200), 0.3);
        assert_eq!(t.for_gallery(5000), 0.3);
        assert_eq!(t.point_for(11), (50, 0.4));
        assert_eq!(t.point_for(5000), (272, 0.3));
        assert_eq!(t.points().count(), 3);
        use GalleryThresholdsError as E;
        assert_eq!(GalleryThresholds::new(&[]), Err(E::Count(0)));
        assert_eq!(GalleryThresholds::new(&[(5, 0.1); 9]), Err(E::Count(9)));
        assert_eq!(GalleryThresholds::new(&[(0, 0.1)]), Err(E::Sizes));
        assert_eq!(GalleryThresholds::new(&[(5, 0.1), (5, 0.2)]), Err(E::Sizes));
        assert_eq!(GalleryThresholds::new(&[(5, f32::NAN)]), Err(E::NonFinite));
    }
}
