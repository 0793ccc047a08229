//! The stored form of a [`Gallery`], for a flash sector or a file.
//!
//! Layout (version 1, little-endian):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `FSGL` |
//! | 4 | 2 | format version (1) |
//! | 6 | 2 | embedding size `dim` |
//! | 8 | 2 | identity count |
//! | 10 | 1 | name field size ([`NAME_CAP`]) |
//! | 11 | 1 | reserved, 0 |
//! | 12 | 4 | next id to hand out |
//! | 16 | 4 | generation (bumped by the writer on every save) |
//! | 20 | count × (41 + 4·dim) | records: id u32, shots u32, name length u8, name (zero-padded to 32 bytes), prototype f32 × dim |
//! | end − 4 | 4 | CRC-32 (ISO-HDLC, as zlib) of every byte before it |
//!
//! Decoding checks the sizes, then the checksum, then every record, so a
//! truncated or corrupted image is always an error and never a half-read
//! gallery. For flash, keep two slots and write each save to the slot that
//! does not hold the newest gallery: [`newest`] then finds the last complete
//! save after a power cut.

use crate::error::StoreError;
use crate::gallery::{Gallery, GalleryIn, Identity, Name, NAME_CAP};
use crate::slots::Slots;

/// First four bytes of a stored gallery.
pub const MAGIC: [u8; 4] = *b"FSGL";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// Bytes before the first record.
pub const HEADER_LEN: usize = 20;
const CRC_LEN: usize = 4;
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Bytes of one record for embeddings of `dim` values.
pub const fn record_len(dim: usize) -> usize {
    4 + 4 + 1 + NAME_CAP + 4 * dim
}

/// Bytes of a stored gallery of `count` identities of `dim` values.
pub const fn encoded_len(count: usize, dim: usize) -> usize {
    HEADER_LEN + count * record_len(dim) + CRC_LEN
}

/// A decoded gallery and the generation it was saved with.
#[derive(Debug, Clone)]
pub struct StoredIn<S, const DIM: usize> {
    /// The gallery.
    pub gallery: GalleryIn<S, DIM>,
    /// The writer's save counter.
    pub generation: u32,
}

impl<S: Slots<Identity<DIM>>, const DIM: usize> PartialEq for StoredIn<S, DIM> {
    fn eq(&self, other: &Self) -> bool {
        self.gallery == other.gallery && self.generation == other.generation
    }
}

/// A decoded [`Gallery`] and its generation.
pub type Stored<const CAP: usize, const DIM: usize> =
    StoredIn<heapless::Vec<Identity<DIM>, CAP>, DIM>;

impl<S: Slots<Identity<DIM>>, const DIM: usize> GalleryIn<S, DIM> {
    /// Bytes [`encode`] needs for this gallery.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.len(), DIM)
    }
}

/// Writes `gallery` into `out` and returns the number of bytes written.
pub fn encode<S: Slots<Identity<DIM>>, const DIM: usize>(
    gallery: &GalleryIn<S, DIM>,
    generation: u32,
    out: &mut [u8],
) -> Result<usize, StoreError> {
    const { assert!(DIM <= u16::MAX as usize) };
    if gallery.len() > usize::from(u16::MAX) {
        return Err(StoreError::TooMany {
            count: gallery.len(),
            capacity: usize::from(u16::MAX),
        });
    }
    let needed = gallery.encoded_len();
    let out = match out.get_mut(..needed) {
        Some(out) => out,
        None => {
            return Err(StoreError::BufferTooSmall {
                needed,
                found: out.len(),
            })
        }
    };
    let mut w = Writer { out, at: 0 };
    w.put(&MAGIC);
    w.put(&VERSION.to_le_bytes());
    w.put(&(DIM as u16).to_le_bytes());
    w.put(&(gallery.len() as u16).to_le_bytes());
    w.put(&[NAME_CAP as u8, 0]);
    w.put(&gallery.next_id.to_le_bytes());
    w.put(&generation.to_le_bytes());
    for identity in gallery.iter() {
        w.put(&identity.id.to_le_bytes());
        w.put(&identity.shots.to_le_bytes());
        let name = identity.name.as_bytes();
        w.put(&[name.len() as u8]);
        let mut padded = [0u8; NAME_CAP];
        padded[..name.len()].copy_from_slice(name);
        w.put(&padded);
        for v in &identity.prototype {
            w.put(&v.to_le_bytes());
        }
    }
    let crc = CRC32.checksum(&w.out[..w.at]);
    w.put(&crc.to_le_bytes());
    Ok(w.at)
}

/// Reads a stored gallery. Never panics, whatever the bytes.
pub fn decode<const CAP: usize, const DIM: usize>(
    bytes: &[u8],
) -> Result<Stored<CAP, DIM>, StoreError> {
    decode_into(bytes, Gallery::<CAP, DIM>::new())
}

/// Reads a stored gallery into `empty` (its identities are dropped first;
/// its capacity bounds what is read). Never panics, whatever the bytes; a
/// gallery that does not fit is [`StoreError::TooMany`], reported only for
/// intact bytes.
pub fn decode_into<S: Slots<Identity<DIM>>, const DIM: usize>(
    bytes: &[u8],
    empty: GalleryIn<S, DIM>,
) -> Result<StoredIn<S, DIM>, StoreError> {
    let mut r = Reader { bytes, at: 0 };
    if bytes.len() < HEADER_LEN + CRC_LEN {
        return Err(StoreError::Length {
            expected: HEADER_LEN + CRC_LEN,
            found: bytes.len(),
        });
    }
    if r.take::<4>()? != MAGIC {
        return Err(StoreError::BadMagic);
    }
    let version = u16::from_le_bytes(r.take()?);
    if version != VERSION {
        return Err(StoreError::UnsupportedVersion(version));
    }
    let dim = usize::from(u16::from_le_bytes(r.take()?));
    if dim != DIM {
        return Err(StoreError::DimMismatch {
            expected: DIM,
            found: dim,
        });
    }
    let count = usize::from(u16::from_le_bytes(r.take()?));
    let expected = encoded_len(count, DIM);
    if bytes.len() != expected {
        return Err(StoreError::Length {
            expected,
            found: bytes.len(),
        });
    }
    let body = &bytes[..expected - CRC_LEN];
    let mut tail = [0u8; CRC_LEN];
    tail.copy_from_slice(&bytes[expected - CRC_LEN..]);
    let stored = u32::from_le_bytes(tail);
    let computed = CRC32.checksum(body);
    if stored != computed {
        return Err(StoreError::Checksum { stored, computed });
    }
    if count > empty.capacity() {
        return Err(StoreError::TooMany {
            count,
            capacity: empty.capacity(),
        });
    }
    let [name_cap, reserved] = r.take()?;
    if usize::from(name_cap) != NAME_CAP || reserved != 0 {
        return Err(StoreError::BadRecord {
            record: 0,
            what: "header name size or reserved byte",
        });
    }
    let next_id = u32::from_le_bytes(r.take()?);
    let generation = u32::from_le_bytes(r.take()?);
    let mut gallery = empty.cleared();
    gallery.next_id = next_id;
    for record in 0..count {
        let bad = |what| StoreError::BadRecord { record, what };
        let id = u32::from_le_bytes(r.take()?);
        let shots = u32::from_le_bytes(r.take()?);
        let [name_len] = r.take()?;
        let padded: [u8; NAME_CAP] = r.take()?;
        let name_len = usize::from(name_len);
        if name_len > NAME_CAP || padded[name_len..].iter().any(|&b| b != 0) {
            return Err(bad("name length or padding"));
        }
        let name =
            core::str::from_utf8(&padded[..name_len]).map_err(|_| bad("name is not UTF-8"))?;
        let name = Name::try_from(name).map_err(|_| bad("name too long"))?;
        let mut prototype = [0.0f32; DIM];
        for v in prototype.iter_mut() {
            *v = f32::from_le_bytes(r.take()?);
            if !v.is_finite() {
                return Err(bad("prototype value is not finite"));
            }
        }
        if shots == 0 {
            return Err(bad("zero shots"));
        }
        if id >= next_id {
            return Err(bad("id not below the next id"));
        }
        if gallery
            .identities
            .as_slice()
            .last()
            .is_some_and(|prev| prev.id >= id)
        {
            return Err(bad("ids not in increasing order"));
        }
        gallery
            .identities
            .push(Identity {
                id,
                name,
                shots,
                prototype,
            })
            .map_err(|_| bad("over capacity"))?;
    }
    Ok(StoredIn {
        gallery,
        generation,
    })
}

/// Which of two flash slots holds the newest valid gallery: `(0 or 1, gallery)`.
/// When neither is valid, returns slot 0's error.
pub fn newest<const CAP: usize, const DIM: usize>(
    slot0: &[u8],
    slot1: &[u8],
) -> Result<(usize, Stored<CAP, DIM>), StoreError> {
    match (decode::<CAP, DIM>(slot0), decode::<CAP, DIM>(slot1)) {
        (Ok(a), Ok(b)) if b.generation > a.generation => Ok((1, b)),
        (Ok(a), _) => Ok((0, a)),
        (Err(_), Ok(b)) => Ok((1, b)),
        (Err(e), Err(_)) => Err(e),
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let chunk = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or(StoreError::Length {
                expected: self.at + N,
                found: self.bytes.len(),
            })?;
        let mut out = [0u8; N];
        out.copy_from_slice(chunk);
        self.at += N;
        Ok(out)
    }
}
