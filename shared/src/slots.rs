//! Where a [`crate::gallery::GalleryIn`] keeps its identities: a
//! fixed-capacity `heapless::Vec` (no allocator; the microcontroller's
//! gallery) or, with the `alloc` feature, [`Bounded`], a heap vector whose
//! capacity is chosen at run time (the Linux door's gallery).

/// A vector with a capacity: what a gallery needs of its storage.
pub trait Slots<T> {
    /// The items, in order.
    fn as_slice(&self) -> &[T];
    /// The items, in order, mutably.
    fn as_mut_slice(&mut self) -> &mut [T];
    /// The most items it holds.
    fn capacity(&self) -> usize;
    /// Appends `item`, or gives it back when full.
    fn push(&mut self, item: T) -> Result<(), T>;
    /// Removes and returns the item at `index` (which must be in range),
    /// keeping the order of the rest.
    fn remove(&mut self, index: usize) -> T;
    /// Removes and returns the last item.
    fn pop(&mut self) -> Option<T>;
    /// Removes every item.
    fn clear(&mut self);
}

impl<T, const N: usize> Slots<T> for heapless::Vec<T, N> {
    fn as_slice(&self) -> &[T] {
        self
    }
    fn as_mut_slice(&mut self) -> &mut [T] {
        self
    }
    fn capacity(&self) -> usize {
        N
    }
    fn push(&mut self, item: T) -> Result<(), T> {
        heapless::Vec::push(self, item)
    }
    fn remove(&mut self, index: usize) -> T {
        heapless::Vec::remove(self, index)
    }
    fn pop(&mut self) -> Option<T> {
        heapless::Vec::pop(self)
    }
    fn clear(&mut self) {
        heapless::Vec::clear(self)
    }
}

/// A heap vector that holds at most `capacity` items (chosen at run time).
/// Memory grows with the items held, not with the capacity.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq)]
pub struct Bounded<T> {
    items: alloc::vec::Vec<T>,
    capacity: usize,
}

#[cfg(feature = "alloc")]
impl<T> Bounded<T> {
    /// Empty, holding at most `capacity` items.
    pub const fn new(capacity: usize) -> Self {
        Bounded {
            items: alloc::vec::Vec::new(),
            capacity,
        }
    }
}

#[cfg(feature = "alloc")]
impl<T> Slots<T> for Bounded<T> {
    fn as_slice(&self) -> &[T] {
        &self.items
    }
    fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.items
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn push(&mut self, item: T) -> Result<(), T> {
        if self.items.len() >= self.capacity {
            return Err(item);
        }
        self.items.push(item);
        Ok(())
    }
    fn remove(&mut self, index: usize) -> T {
        self.items.remove(index)
    }
    fn pop(&mut self) -> Option<T> {
        self.items.pop()
    }
    fn clear(&mut self) {
        self.items.clear()
    }
}
