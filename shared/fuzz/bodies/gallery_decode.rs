//! The body of the `gallery_decode` fuzz target, shared with the stable seed
//! and property tests (`shared/tests/fuzz.rs`): decoding arbitrary bytes as a
//! stored gallery never panics, and whatever decodes re-encodes to the same
//! bytes.
//!
//! The first input byte picks a mode: odd means "patch a valid CRC-32 onto the
//! rest first", so the fuzzer also explores the record checks behind the
//! checksum instead of stopping at it.

use fewshot_core::store::{decode, encode};

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Checks one input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= 4 {
        let body = bytes.len() - 4;
        let crc = CRC32.checksum(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(stored) = decode::<8, 4>(&bytes) {
        let mut out = vec![0u8; stored.gallery.encoded_len()];
        let n = encode(&stored.gallery, stored.generation, &mut out)
            .expect("buffer sized by encoded_len");
        assert_eq!(
            &out[..n],
            &bytes[..],
            "decode then encode changed the bytes"
        );
    }
}
