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
