//! The gallery's two flash slots, emulated by two files on the host
//! (`slot0.fsgl`, `slot1.fsgl` in qemu's working folder) through semihosting.
//! A write replaces a whole slot; the door's `TwoSlots` picks the newest
//! complete one at boot, so a write cut short leaves the other slot's gallery.

use alloc::vec::Vec;

use cortex_m_semihosting::{hprintln, nr};
use fewshot_door::storage::SlotFlash;

const NAMES: [&[u8]; 2] = [b"slot0.fsgl\0", b"slot1.fsgl\0"];

fn open(slot: usize, mode: usize) -> Option<usize> {
    let name = NAMES[slot];
    // SAFETY: OPEN reads `len` bytes of the NUL-terminated name.
    let fd = unsafe { cortex_m_semihosting::syscall!(OPEN, name.as_ptr(), mode, name.len() - 1) }
        as isize;
    (fd >= 0).then_some(fd as usize)
}

fn close(fd: usize) {
    // SAFETY: closes a handle that `open` returned.
    unsafe {
        cortex_m_semihosting::syscall!(CLOSE, fd);
    }
}

/// The most bytes a slot holds (a gallery of the door's capacity is far
/// smaller); a longer file reads as empty.
pub const SLOT_BYTES: usize = 16 * 1024;

/// The two slots as the door loop's flash ([`fewshot_door::storage::TwoSlots`]
/// picks the newest and writes the other). Each write prints `saved slot=N
/// bytes=B`.
pub struct Semihosted;

impl SlotFlash for Semihosted {
    type Error = &'static str;

    fn read(&mut self, slot: usize) -> Result<Vec<u8>, &'static str> {
        let Some(fd) = open(slot, nr::open::R_BINARY) else {
            return Ok(Vec::new());
        };
        // SAFETY: FLEN takes a handle.
        let len = unsafe { cortex_m_semihosting::syscall!(FLEN, fd) } as isize;
        let mut buf = Vec::new();
        if len > 0 && len as usize <= SLOT_BYTES {
            buf.resize(len as usize, 0);
            // SAFETY: READ writes at most `len` bytes into `buf`; it returns
            // the bytes not read.
            let left =
                unsafe { cortex_m_semihosting::syscall!(READ, fd, buf.as_mut_ptr(), buf.len()) };
            buf.truncate(buf.len() - left.min(buf.len()));
        }
        close(fd);
        Ok(buf)
    }

    fn write(&mut self, slot: usize, bytes: &[u8]) -> Result<(), &'static str> {
        let fd = open(slot, nr::open::W_TRUNC_BINARY).ok_or("cannot open the slot's file")?;
        // SAFETY: WRITE reads `len` bytes from `bytes`; it returns the bytes
        // not written.
        let left =
            unsafe { cortex_m_semihosting::syscall!(WRITE, fd, bytes.as_ptr(), bytes.len()) };
        close(fd);
        if left != 0 {
            return Err("the slot's write was cut short");
        }
        hprintln!("saved slot={} bytes={}", slot, bytes.len());
        Ok(())
    }
}
