//! The heap gallery (capacity chosen at run time) behaves exactly as the
//! fixed-capacity one: the same operations give the same answers, the same
//! identities and the same stored bytes.
use fewshot_core::store::{decode, decode_into, encode};
use fewshot_core::{Distance, Gallery, GalleryError, HeapGallery, StoreError};
use proptest::prelude::*;

const CAP: usize = 5;
const DIM: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Enroll(String, Vec<f32>),
    AddShot(u32, Vec<f32>),
    Remove(u32),
    RemoveLast,
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    let v = || prop::collection::vec(-4.0f32..4.0, DIM);
    prop_oneof![
        4 => ("[a-z]{1,8}", v()).prop_map(|(n, e)| Op::Enroll(n, e)),
        2 => (0u32..8, v()).prop_map(|(id, e)| Op::AddShot(id, e)),
        1 => (0u32..8).prop_map(Op::Remove),
        1 => Just(Op::RemoveLast),
        1 => Just(Op::Clear),
    ]
}

fn bytes<S: fewshot_core::slots::Slots<fewshot_core::Identity<DIM>>>(
    g: &fewshot_core::GalleryIn<S, DIM>,
) -> Vec<u8> {
    let mut out = vec![0u8; g.encoded_len()];
    let n = encode(g, 9, &mut out).unwrap();
    assert_eq!(n, out.len());
    out
}

proptest! {
    #[test]
    fn heap_and_fixed_galleries_agree(ops in prop::collection::vec(op(), 0..40), query in prop::collection::vec(-4.0f32..4.0, DIM)) {
        let mut fixed = Gallery::<CAP, DIM>::new();
        let mut heap = HeapGallery::<DIM>::with_capacity(CAP);
        for op in &ops {
            match op {
                Op::Enroll(name, e) => prop_assert_eq!(fixed.enroll(name, e), heap.enroll(name, e)),
                Op::AddShot(id, e) => prop_assert_eq!(fixed.add_shot(*id, e), heap.add_shot(*id, e)),
                Op::Remove(id) => prop_assert_eq!(fixed.remove(*id), heap.remove(*id)),
                Op::RemoveLast => prop_assert_eq!(fixed.remove_last(), heap.remove_last()),
                Op::Clear => { fixed.clear(); heap.clear(); }
            }
            prop_assert_eq!(fixed.len(), heap.len());
        }
        prop_assert!(fixed.iter().eq(heap.iter()));
        prop_assert_eq!(fixed.next_id(), heap.next_id());
        prop_assert_eq!(fixed.nearest(&query, Distance::L2), heap.nearest(&query, Distance::L2));
        let stored = bytes(&heap);
        prop_assert_eq!(&bytes(&fixed), &stored);
        // Each decodes what the other wrote.
        let back = decode_into(&stored, HeapGallery::<DIM>::with_capacity(CAP)).unwrap();
        prop_assert_eq!(&back.gallery, &heap);
        prop_assert_eq!(back.generation, 9);
        prop_assert_eq!(&decode::<CAP, DIM>(&stored).unwrap().gallery, &fixed);
    }
}

#[test]
fn the_capacity_is_the_one_given_at_run_time() {
    let mut g = HeapGallery::<DIM>::with_capacity(2);
    assert_eq!(g.capacity(), 2);
    g.enroll("a", &[0.0; DIM]).unwrap();
    g.enroll("b", &[1.0; DIM]).unwrap();
    assert_eq!(
        g.enroll("c", &[2.0; DIM]),
        Err(GalleryError::Full { capacity: 2 })
    );
    let stored = bytes(&g);
    // A smaller gallery refuses the intact bytes by count; a larger one
    // takes them, and whatever it held before is dropped.
    assert_eq!(
        decode_into(&stored, HeapGallery::<DIM>::with_capacity(1)),
        Err(StoreError::TooMany {
            count: 2,
            capacity: 1
        })
    );
    let mut before = HeapGallery::<DIM>::with_capacity(3);
    before.enroll("x", &[5.0; DIM]).unwrap();
    let back = decode_into(&stored, before).unwrap().gallery;
    assert_eq!(back.capacity(), 3);
    assert!(back.iter().eq(g.iter()));
    // The count check comes after the checksum: corrupt bytes are corrupt.
    let mut bad = stored.clone();
    bad[30] ^= 1;
    assert!(matches!(
        decode_into(&bad, HeapGallery::<DIM>::with_capacity(1)),
        Err(StoreError::Checksum { .. })
    ));
}
