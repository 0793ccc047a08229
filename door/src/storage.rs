//! Where the gallery's bytes live: the [`Storage`] trait and an in-memory
//! store.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

/// The gallery's bytes, somewhere that survives a restart.
pub trait Storage {
    /// What can go wrong.
    type Error: core::fmt::Display;

    /// The stored bytes, or `None` when nothing was ever stored.
    fn load(&mut self) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Replaces the stored bytes, all or nothing.
    fn save(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Moves unreadable stored bytes aside for inspection (the next
    /// [`Storage::load`] finds nothing) and says where they went.
    fn set_aside(&mut self) -> Result<String, Self::Error>;
}

/// Storage in memory; clones share the bytes, so a test can "restart" a door
/// on the same storage.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    inner: Rc<RefCell<MemInner>>,
}

#[derive(Debug, Default)]
struct MemInner {
    bytes: Option<Vec<u8>>,
    aside: Vec<Vec<u8>>,
    saves: usize,
}

impl MemStorage {
    /// Nothing stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Storage already holding `bytes`.
    pub fn with_bytes(bytes: Vec<u8>) -> Self {
        let s = Self::default();
        s.inner.borrow_mut().bytes = Some(bytes);
        s
    }

    /// The stored bytes.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        self.inner.borrow().bytes.clone()
    }

    /// Bytes set aside so far.
    pub fn set_aside_bytes(&self) -> Vec<Vec<u8>> {
        self.inner.borrow().aside.clone()
    }

    /// Successful saves so far.
    pub fn saves(&self) -> usize {
        self.inner.borrow().saves
    }
}

impl Storage for MemStorage {
    type Error = core::convert::Infallible;

    fn load(&mut self) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.bytes())
    }

    fn save(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        let mut inner = self.inner.borrow_mut();
        inner.bytes = Some(bytes.to_vec());
        inner.saves += 1;
        Ok(())
    }

    fn set_aside(&mut self) -> Result<String, Self::Error> {
        let mut inner = self.inner.borrow_mut();
        if let Some(b) = inner.bytes.take() {
            inner.aside.push(b);
        }
        Ok(format!("memory slot {}", inner.aside.len()))
    }
}

/// Flash with two slots for the gallery, each written whole (a
/// microcontroller's two sectors, or two files).
pub trait SlotFlash {
    /// What can go wrong.
    type Error: core::fmt::Display;
    /// Slot `slot`'s (0 or 1) bytes; empty when it was never written.
    fn read(&mut self, slot: usize) -> Result<Vec<u8>, Self::Error>;
    /// Replaces slot `slot`'s bytes.
    fn write(&mut self, slot: usize, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// [`Storage`] over two flash slots: a save goes to the slot that does not
/// hold the newest gallery, so a save cut short (power lost, a failed write)
/// leaves the previous gallery whole in the other; a load picks the slot
/// whose gallery decodes (checksum and all) and has the higher generation,
/// as [`fewshot_core::store::newest`] does for fixed-capacity galleries.
#[derive(Debug)]
pub struct TwoSlots<F, const DIM: usize> {
    flash: F,
    capacity: usize,
    newest: Option<usize>,
}

impl<F: SlotFlash, const DIM: usize> TwoSlots<F, DIM> {
    /// The slots of `flash`, for galleries of at most `capacity` people of
    /// `DIM`-value prototypes.
    pub fn new(flash: F, capacity: usize) -> Self {
        TwoSlots {
            flash,
            capacity,
            newest: None,
        }
    }

    /// The slot the last load or save found or wrote the newest gallery in.
    pub fn newest_slot(&self) -> Option<usize> {
        self.newest
    }

    /// The flash.
    pub fn flash(&self) -> &F {
        &self.flash
    }

    fn generation(&self, bytes: &[u8]) -> Option<u32> {
        let empty = fewshot_core::HeapGallery::<DIM>::with_capacity(self.capacity);
        fewshot_core::store::decode_into(bytes, empty)
            .ok()
            .map(|s| s.generation)
    }
}

impl<F: SlotFlash, const DIM: usize> Storage for TwoSlots<F, DIM> {
    type Error = F::Error;

    fn load(&mut self) -> Result<Option<Vec<u8>>, F::Error> {
        let slots = [self.flash.read(0)?, self.flash.read(1)?];
        let generations = [self.generation(&slots[0]), self.generation(&slots[1])];
        self.newest = match generations {
            [Some(a), Some(b)] => Some(usize::from(b > a)),
            [Some(_), None] => Some(0),
            [None, Some(_)] => Some(1),
            [None, None] => None,
        };
        let [slot0, slot1] = slots;
        Ok(match self.newest {
            Some(0) => Some(slot0),
            Some(_) => Some(slot1),
            // Neither decodes: hand over what there is, for the door to
            // report as corrupt; nothing at all is an empty gallery.
            None if !slot0.is_empty() => Some(slot0),
            None if !slot1.is_empty() => Some(slot1),
            None => None,
        })
    }

    fn save(&mut self, bytes: &[u8]) -> Result<(), F::Error> {
        let slot = self.newest.map_or(0, |s| 1 - s);
        self.flash.write(slot, bytes)?;
        self.newest = Some(slot);
        Ok(())
    }

    fn set_aside(&mut self) -> Result<String, F::Error> {
        // Neither slot decodes: both stay as they are until saves overwrite
        // them (slot 0 first).
        self.newest = None;
        Ok("both flash slots, left in place until the next saves".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use fewshot_core::{store, HeapGallery};

    /// Two slots in memory; a write fails (and leaves its slot half
    /// written) when `fail_next` is set.
    #[derive(Default)]
    struct Mem {
        slots: [Vec<u8>; 2],
        fail_next: bool,
    }

    impl SlotFlash for Mem {
        type Error = &'static str;
        fn read(&mut self, slot: usize) -> Result<Vec<u8>, &'static str> {
            Ok(self.slots[slot].clone())
        }
        fn write(&mut self, slot: usize, bytes: &[u8]) -> Result<(), &'static str> {
            if core::mem::take(&mut self.fail_next) {
                self.slots[slot] = bytes[..bytes.len() / 2].to_vec();
                return Err("power cut");
            }
            self.slots[slot] = bytes.to_vec();
            Ok(())
        }
    }

    fn stored(people: usize, generation: u32) -> Vec<u8> {
        let mut g = HeapGallery::<4>::with_capacity(8);
        for p in 0..people {
            g.enroll("p", &[p as f32; 4]).unwrap();
        }
        let mut bytes = vec![0; g.encoded_len()];
        store::encode(&g, generation, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn saves_alternate_and_a_cut_save_leaves_the_previous_gallery() {
        let mut s = TwoSlots::<Mem, 4>::new(Mem::default(), 8);
        assert_eq!(s.load().unwrap(), None);
        s.save(&stored(1, 1)).unwrap();
        s.save(&stored(2, 2)).unwrap();
        assert_eq!(s.flash().slots, [stored(1, 1), stored(2, 2)]);
        // A fresh boot finds generation 2 in slot 1, and saves next to slot 0.
        let mut s = TwoSlots::<Mem, 4>::new(s.flash, 8);
        assert_eq!(s.load().unwrap(), Some(stored(2, 2)));
        s.flash.fail_next = true;
        assert!(s.save(&stored(3, 3)).is_err());
        assert_eq!(
            s.flash().slots[1],
            stored(2, 2),
            "the newest slot untouched"
        );
        let mut s = TwoSlots::<Mem, 4>::new(s.flash, 8);
        assert_eq!(s.load().unwrap(), Some(stored(2, 2)));
        assert_eq!(s.newest_slot(), Some(1));
        s.save(&stored(3, 3)).unwrap();
        let mut s = TwoSlots::<Mem, 4>::new(s.flash, 8);
        assert_eq!(s.load().unwrap(), Some(stored(3, 3)));
        assert_eq!(s.newest_slot(), Some(0));
    }

    proptest::proptest! {
        /// Any sequence of saves, some cut short at any byte, and reboots:
        /// a load always finds the last save that completed.
        #[test]
        fn a_load_finds_the_last_completed_save(
            steps in proptest::collection::vec((0usize..4, 0u8..4, 0usize..2000), 1..40)
        ) {
            let mut s = TwoSlots::<Cut, 4>::new(Cut::default(), 8);
            let mut last: Option<Vec<u8>> = None;
            let mut generation = 0;
            for (people, what, at) in steps {
                match what {
                    // A reboot: a fresh storage over the same flash.
                    0 => {
                        s = TwoSlots::new(s.flash, 8);
                        let loaded = s.load().unwrap();
                        proptest::prop_assert!(finds(&loaded, &last), "{:?} for {:?}", loaded, last);
                    }
                    // A save cut after `at` bytes (when that is short of the whole).
                    1 => {
                        let bytes = stored(people, generation + 1);
                        s.flash.cut_at = Some(at % bytes.len());
                        proptest::prop_assert!(s.save(&bytes).is_err());
                    }
                    _ => {
                        generation += 1;
                        let bytes = stored(people, generation);
                        s.save(&bytes).unwrap();
                        last = Some(bytes);
                    }
                }
            }
            let mut s = TwoSlots::<Cut, 4>::new(s.flash, 8);
            let loaded = s.load().unwrap();
            proptest::prop_assert!(finds(&loaded, &last), "{:?} for {:?}", loaded, last);
        }
    }

    /// Whether a load found the last completed save: exactly its bytes, or,
    /// when no save ever completed, nothing or bytes that do not decode (a
    /// first save cut short, which the door reports as corrupt).
    fn finds(loaded: &Option<Vec<u8>>, last: &Option<Vec<u8>>) -> bool {
        match (loaded, last) {
            (_, Some(_)) => loaded == last,
            (None, None) => true,
            (Some(bytes), None) => {
                store::decode_into(bytes, HeapGallery::<4>::with_capacity(8)).is_err()
            }
        }
    }

    /// Two slots in memory whose next write stops after `cut_at` bytes.
    #[derive(Default)]
    struct Cut {
        slots: [Vec<u8>; 2],
        cut_at: Option<usize>,
    }

    impl SlotFlash for Cut {
        type Error = &'static str;
        fn read(&mut self, slot: usize) -> Result<Vec<u8>, &'static str> {
            Ok(self.slots[slot].clone())
        }
        fn write(&mut self, slot: usize, bytes: &[u8]) -> Result<(), &'static str> {
            match self.cut_at.take() {
                Some(n) => {
                    // A cut mid-write: the slot keeps the new bytes up to the
                    // cut and the old ones after it.
                    let mut mixed = self.slots[slot].clone();
                    mixed.resize(mixed.len().max(n), 0);
                    mixed[..n].copy_from_slice(&bytes[..n]);
                    self.slots[slot] = mixed;
                    Err("power cut")
                }
                None => {
                    self.slots[slot] = bytes.to_vec();
                    Ok(())
                }
            }
        }
    }

    #[test]
    fn slots_that_do_not_decode_are_handed_over_as_corrupt() {
        let mut flash = Mem::default();
        flash.slots[1] = b"junk".to_vec();
        let mut s = TwoSlots::<Mem, 4>::new(flash, 8);
        assert_eq!(s.load().unwrap(), Some(b"junk".to_vec()));
        s.set_aside().unwrap();
        s.save(&stored(1, 1)).unwrap();
        assert_eq!(s.flash().slots[0], stored(1, 1));
        let mut s = TwoSlots::<Mem, 4>::new(s.flash, 8);
        assert_eq!(s.load().unwrap(), Some(stored(1, 1)));
    }
}
