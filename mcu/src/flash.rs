//! The gallery's two flash slots, emulated by two files on the host
//! (`slot0.fsgl`, `slot1.fsgl` in qemu's working folder) through semihosting.
//! A write replaces a whole slot; `store::newest` picks the newest complete
//! one at boot, so a write cut short leaves the other slot's gallery.

use cortex_m_semihosting::nr;

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

/// Reads slot `slot` into `buf`; returns the bytes read (0: empty, missing,
/// or larger than `buf`, which no stored gallery of this door is).
pub fn read(slot: usize, buf: &mut [u8]) -> usize {
    let Some(fd) = open(slot, nr::open::R_BINARY) else {
        return 0;
    };
    // SAFETY: FLEN takes a handle.
    let len = unsafe { cortex_m_semihosting::syscall!(FLEN, fd) } as isize;
    let n = if len <= 0 || len as usize > buf.len() {
        0
    } else {
        let len = len as usize;
        // SAFETY: READ writes at most `len` bytes into `buf`; it returns the
        // bytes not read.
        let left = unsafe { cortex_m_semihosting::syscall!(READ, fd, buf.as_mut_ptr(), len) };
        len - left.min(len)
    };
    close(fd);
    n
}

/// Replaces slot `slot` with `bytes`.
pub fn write(slot: usize, bytes: &[u8]) {
    let Some(fd) = open(slot, nr::open::W_TRUNC_BINARY) else {
        return;
    };
    // SAFETY: WRITE reads `len` bytes from `bytes`.
    unsafe {
        cortex_m_semihosting::syscall!(WRITE, fd, bytes.as_ptr(), bytes.len());
    }
    close(fd);
}
