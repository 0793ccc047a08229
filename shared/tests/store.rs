//! The stored form: round trips, and every corruption and truncation detected.
use fewshot_core::store::{decode, encode, encoded_len, newest, HEADER_LEN};
use fewshot_core::{Gallery, StoreError};
use proptest::prelude::*;

const CAP: usize = 6;
const DIM: usize = 3;

fn gallery_strategy() -> impl Strategy<Value = Gallery<CAP, DIM>> {
    let person = (
        "[a-zA-Z é]{0,12}",
        prop::collection::vec(prop::collection::vec(-5.0f32..5.0, DIM), 1..4),
    );
    (
        prop::collection::vec(person, 0..CAP),
        prop::collection::vec(any::<bool>(), CAP),
    )
        .prop_map(|(people, drop)| {
            let mut g = Gallery::new();
            for (name, shots) in &people {
                let id = g.enroll(name, &shots[0]).unwrap();
                for s in &shots[1..] {
                    g.add_shot(id, s).unwrap();
                }
            }
            for (i, d) in drop.iter().enumerate() {
                if *d && i % 3 == 0 {
                    let _ = g.remove(i as u32);
                }
            }
            g
        })
}

fn encoded(g: &Gallery<CAP, DIM>, generation: u32) -> Vec<u8> {
    let mut buf = vec![0u8; g.encoded_len()];
    let n = encode(g, generation, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    buf
}

proptest! {
    #[test]
    fn round_trip(g in gallery_strategy(), generation in any::<u32>()) {
        let bytes = encoded(&g, generation);
        prop_assert_eq!(bytes.len(), encoded_len(g.len(), DIM));
        let back = decode::<CAP, DIM>(&bytes).unwrap();
        prop_assert_eq!(back.generation, generation);
        prop_assert_eq!(&back.gallery, &g);
        prop_assert_eq!(back.gallery.next_id(), g.next_id());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode::<CAP, DIM>(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_valid_header_never_panic(g in gallery_strategy(), noise in prop::collection::vec(any::<u8>(), 1..200), at in 0usize..400) {
        let mut bytes = encoded(&g, 1);
        let at = at % bytes.len();
        for (i, b) in noise.iter().enumerate() {
            if let Some(x) = bytes.get_mut(at + i) { *x = *b; }
        }
        let _ = decode::<CAP, DIM>(&bytes);
    }
}

fn sample() -> Gallery<CAP, DIM> {
    let mut g = Gallery::new();
    g.enroll("ada", &[1.0, -2.0, 0.5]).unwrap();
    let b = g.enroll("grace", &[0.25, 4.0, -1.0]).unwrap();
    g.add_shot(b, &[0.0, 1.0, 2.0]).unwrap();
    g.enroll("x", &[0.0, 0.0, 0.0]).unwrap();
    g.remove(0).unwrap();
    g
}

#[test]
fn every_single_byte_corruption_is_detected() {
    let bytes = encoded(&sample(), 7);
    let mut checked = 0;
    for i in 0..bytes.len() {
        for v in 0..=255u8 {
            if v == bytes[i] {
                continue;
            }
            let mut bad = bytes.clone();
            bad[i] = v;
            assert!(
                decode::<CAP, DIM>(&bad).is_err(),
                "byte {i} set to {v} was not detected"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, bytes.len() * 255);
}

#[test]
fn every_truncation_and_extension_is_detected() {
    let bytes = encoded(&sample(), 7);
    for n in 0..bytes.len() {
        let err = decode::<CAP, DIM>(&bytes[..n]).unwrap_err();
        assert!(
            matches!(err, StoreError::Length { .. }),
            "truncation to {n}: {err:?}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        decode::<CAP, DIM>(&longer),
        Err(StoreError::Length { .. })
    ));
}

#[test]
fn header_errors_name_the_problem() {
    let bytes = encoded(&sample(), 7);
    assert_eq!(
        decode::<CAP, 4>(&bytes),
        Err(StoreError::DimMismatch {
            expected: 4,
            found: 3
        })
    );
    assert_eq!(
        decode::<1, DIM>(&bytes),
        Err(StoreError::TooMany {
            count: 2,
            capacity: 1
        })
    );
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert_eq!(decode::<CAP, DIM>(&bad), Err(StoreError::BadMagic));
    let mut bad = bytes.clone();
    bad[4] = 9;
    assert_eq!(
        decode::<CAP, DIM>(&bad),
        Err(StoreError::UnsupportedVersion(9))
    );
    let mut small = vec![0u8; bytes.len() - 1];
    assert_eq!(
        encode(&sample(), 0, &mut small),
        Err(StoreError::BufferTooSmall {
            needed: bytes.len(),
            found: bytes.len() - 1
        })
    );
    assert_eq!(HEADER_LEN, 20);
}

#[test]
fn newest_slot_survives_a_torn_write() {
    let old = encoded(&sample(), 4);
    let mut g = sample();
    g.enroll("new", &[9.0, 9.0, 9.0]).unwrap();
    let new = encoded(&g, 5);
    assert_eq!(newest::<CAP, DIM>(&old, &new).unwrap().0, 1);
    assert_eq!(newest::<CAP, DIM>(&new, &old).unwrap().0, 0);
    // A write of the new gallery cut off at any point leaves the old one.
    for cut in 0..new.len() {
        let mut torn = old.clone();
        torn.resize(new.len().max(old.len()), 0xFF);
        torn[..cut].copy_from_slice(&new[..cut]);
        let (slot, stored) = newest::<CAP, DIM>(&old, &torn).unwrap();
        assert_eq!((slot, stored.generation), (0, 4), "cut at {cut}");
    }
    assert!(newest::<CAP, DIM>(&[], &[1, 2, 3]).is_err());
}

/// The fuzzing seeds were written by an independent Python encoder (zlib's
/// CRC-32, struct packing), so decoding them checks the format against a
/// second implementation.
#[test]
fn decodes_galleries_written_by_python() {
    let seed = include_bytes!("../fuzz/seeds/gallery_decode/seed2");
    let stored = decode::<8, 4>(&seed[1..]).unwrap();
    assert_eq!(stored.generation, 9);
    assert_eq!(stored.gallery.next_id(), 5);
    let ids: Vec<_> = stored
        .gallery
        .iter()
        .map(|i| (i.id, i.shots, i.name.as_str().to_owned()))
        .collect();
    assert_eq!(
        ids,
        vec![(1, 2, "grace".to_owned()), (4, 1, "x".to_owned())]
    );
    assert_eq!(
        stored.gallery.get(1).unwrap().prototype,
        [0.5, -1.0, 0.0, 2.0]
    );
    let mut out = vec![0u8; stored.gallery.encoded_len()];
    encode(&stored.gallery, 9, &mut out).unwrap();
    assert_eq!(
        &out[..],
        &seed[1..],
        "re-encoding matches the Python bytes exactly"
    );
}
