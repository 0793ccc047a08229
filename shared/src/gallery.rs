//! A bounded gallery of enrolled identities: [`Gallery`] with a capacity
//! fixed at compile time and no allocator, or (feature `alloc`)
//! [`HeapGallery`] with a capacity chosen at run time.

use heapless::{String, Vec};

use crate::classify::{nearest, Nearest};
use crate::distance::Distance;
use crate::error::GalleryError;
use crate::openset::{Decision, OpenSet};
use crate::prototype::{add_shot, check_embedding};
use crate::slots::Slots;

/// Longest identity name, in bytes.
pub const NAME_CAP: usize = 32;

/// An identity's short name.
pub type Name = String<NAME_CAP>;

/// One enrolled identity: its prototype is the running mean of its shots.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Identity<const DIM: usize> {
    /// Id, unique within the gallery and never reused.
    pub id: u32,
    /// Short name.
    pub name: Name,
    /// How many shots the prototype averages.
    pub shots: u32,
    /// Mean embedding of the shots.
    pub prototype: [f32; DIM],
}

/// The result of matching a query against the gallery.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Match {
    /// Id of the nearest identity.
    pub id: u32,
    /// Index, distance and margin of the nearest prototype.
    pub nearest: Nearest,
}

/// Identities with `DIM`-dimensional prototypes kept in `S` (see
/// [`crate::slots`]), in enrollment order. Use it through [`Gallery`] or
/// [`HeapGallery`]. Two galleries are equal when they hold the same
/// identities in the same order and hand out the same next id, whatever
/// their storage and capacity.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GalleryIn<S, const DIM: usize> {
    pub(crate) identities: S,
    pub(crate) next_id: u32,
}

/// Up to `CAP` identities with `DIM`-dimensional prototypes, held inline:
/// needs no allocator.
pub type Gallery<const CAP: usize, const DIM: usize> = GalleryIn<Vec<Identity<DIM>, CAP>, DIM>;

/// Identities with `DIM`-dimensional prototypes on the heap, at most a
/// capacity chosen at run time.
#[cfg(feature = "alloc")]
pub type HeapGallery<const DIM: usize> = GalleryIn<crate::slots::Bounded<Identity<DIM>>, DIM>;

impl<S, T, const DIM: usize> PartialEq<GalleryIn<T, DIM>> for GalleryIn<S, DIM>
where
    S: Slots<Identity<DIM>>,
    T: Slots<Identity<DIM>>,
{
    fn eq(&self, other: &GalleryIn<T, DIM>) -> bool {
        self.next_id == other.next_id && self.identities.as_slice() == other.identities.as_slice()
    }
}

impl<const CAP: usize, const DIM: usize> Default for Gallery<CAP, DIM> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize, const DIM: usize> Gallery<CAP, DIM> {
    /// An empty gallery.
    pub const fn new() -> Self {
        GalleryIn {
            identities: Vec::new(),
            next_id: 0,
        }
    }
}

#[cfg(feature = "alloc")]
impl<const DIM: usize> HeapGallery<DIM> {
    /// An empty gallery holding at most `capacity` identities.
    pub const fn with_capacity(capacity: usize) -> Self {
        GalleryIn {
            identities: crate::slots::Bounded::new(capacity),
            next_id: 0,
        }
    }
}

impl<S: Slots<Identity<DIM>>, const DIM: usize> GalleryIn<S, DIM> {
    /// An empty gallery with the same capacity (ids start again at 0).
    pub(crate) fn cleared(mut self) -> Self {
        self.identities.clear();
        self.next_id = 0;
        self
    }

    /// Enrolls a new identity from one embedding and returns its id.
    pub fn enroll(&mut self, name: &str, embedding: &[f32]) -> Result<u32, GalleryError> {
        check_embedding(embedding, DIM)?;
        if self.len() >= self.capacity() {
            return Err(GalleryError::Full {
                capacity: self.capacity(),
            });
        }
        let name = Name::try_from(name).map_err(|_| GalleryError::NameTooLong {
            max: NAME_CAP,
            found: name.len(),
        })?;
        let id = self.next_id;
        let next_id = id.checked_add(1).ok_or(GalleryError::IdsExhausted)?;
        let mut prototype = [0.0; DIM];
        prototype.copy_from_slice(embedding);
        // Cannot fail: fullness was checked above.
        let _ = Slots::push(
            &mut self.identities,
            Identity {
                id,
                name,
                shots: 1,
                prototype,
            },
        );
        self.next_id = next_id;
        Ok(id)
    }

    /// Adds another shot to an enrolled identity (running mean).
    pub fn add_shot(&mut self, id: u32, embedding: &[f32]) -> Result<(), GalleryError> {
        check_embedding(embedding, DIM)?;
        let identity = self.get_mut(id).ok_or(GalleryError::UnknownId(id))?;
        identity.shots = add_shot(&mut identity.prototype, identity.shots, embedding)?;
        Ok(())
    }

    /// Removes an identity and returns it.
    pub fn remove(&mut self, id: u32) -> Result<Identity<DIM>, GalleryError> {
        let index = self.position(id).ok_or(GalleryError::UnknownId(id))?;
        Ok(Slots::remove(&mut self.identities, index))
    }

    /// Removes the most recently enrolled identity, if any.
    pub fn remove_last(&mut self) -> Option<Identity<DIM>> {
        Slots::pop(&mut self.identities)
    }

    /// Removes every identity. Ids are still never reused.
    pub fn clear(&mut self) {
        Slots::clear(&mut self.identities);
    }

    /// The identity with this id.
    pub fn get(&self, id: u32) -> Option<&Identity<DIM>> {
        self.slice().iter().find(|i| i.id == id)
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Identity<DIM>> {
        self.identities
            .as_mut_slice()
            .iter_mut()
            .find(|i| i.id == id)
    }

    fn position(&self, id: u32) -> Option<usize> {
        self.slice().iter().position(|i| i.id == id)
    }

    /// The identities, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Identity<DIM>> {
        self.slice().iter()
    }

    /// The identity with this name, if any.
    pub fn find_name(&self, name: &str) -> Option<&Identity<DIM>> {
        self.slice().iter().find(|i| i.name == name)
    }

    fn slice(&self) -> &[Identity<DIM>] {
        self.identities.as_slice()
    }

    /// Number of enrolled identities.
    pub fn len(&self) -> usize {
        self.slice().len()
    }

    /// Whether nobody is enrolled.
    pub fn is_empty(&self) -> bool {
        self.slice().is_empty()
    }

    /// The most identities the gallery holds.
    pub fn capacity(&self) -> usize {
        self.identities.capacity()
    }

    /// The id the next enrollment will get.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// The identity nearest to `query`, or `None` when the gallery is empty.
    pub fn nearest(
        &self,
        query: &[f32],
        distance: Distance,
    ) -> Result<Option<Match>, GalleryError> {
        check_embedding(query, DIM)?;
        if self.is_empty() {
            return Ok(None);
        }
        let nearest = nearest(
            query,
            self.slice().iter().map(|i| &i.prototype[..]),
            distance,
        )?;
        Ok(Some(Match {
            id: self.slice()[nearest.index].id,
            nearest,
        }))
    }

    /// Matches `query` and applies the open-set rule: `Some(id)` for a known
    /// identity, `None` for unknown, with the decision's details.
    pub fn identify(
        &self,
        query: &[f32],
        distance: Distance,
        rule: &OpenSet,
    ) -> Result<(Option<u32>, Decision), GalleryError> {
        let found = self.nearest(query, distance)?;
        let decision = rule.decide(found.map(|m| m.nearest));
        let id = match decision {
            Decision::Known(n) => Some(self.slice()[n.index].id),
            Decision::Unknown(_) => None,
        };
        Ok((id, decision))
    }
}
