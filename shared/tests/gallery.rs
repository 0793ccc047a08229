//! Gallery operations, hand-checked.
use fewshot_core::{CoreError, Distance, Gallery, GalleryError, OpenSet, NAME_CAP};

#[test]
fn enroll_add_shot_remove_clear() {
    let mut g = Gallery::<3, 2>::new();
    assert!(g.is_empty());
    let a = g.enroll("alice", &[1.0, 0.0]).unwrap();
    let b = g.enroll("bob", &[0.0, 1.0]).unwrap();
    assert_eq!((a, b, g.len()), (0, 1, 2));
    g.add_shot(a, &[3.0, 2.0]).unwrap();
    let alice = g.get(a).unwrap();
    assert_eq!((alice.shots, alice.prototype), (2, [2.0, 1.0]));
    g.add_shot(a, &[2.0, 3.0]).unwrap();
    let p = g.get(a).unwrap().prototype;
    assert!(
        (p[0] - 2.0).abs() < 1e-6 && (p[1] - 5.0 / 3.0).abs() < 1e-6,
        "{p:?}"
    );

    let found = g.nearest(&[0.1, 0.9], Distance::L2).unwrap().unwrap();
    assert_eq!(found.id, b);
    let (id, _) = g
        .identify(&[0.1, 0.9], Distance::L2, &OpenSet::threshold(0.1))
        .unwrap();
    assert_eq!(id, Some(b));
    let (id, _) = g
        .identify(&[5.0, -5.0], Distance::L2, &OpenSet::threshold(0.1))
        .unwrap();
    assert_eq!(id, None);

    assert_eq!(g.remove(a).unwrap().name.as_str(), "alice");
    assert_eq!(g.remove(a), Err(GalleryError::UnknownId(a)));
    let c = g.enroll("carol", &[1.0, 1.0]).unwrap();
    assert_eq!(c, 2, "ids are never reused");
    assert_eq!(g.remove_last().unwrap().id, c);
    g.clear();
    assert!(g.is_empty());
    assert_eq!(g.nearest(&[0.0, 0.0], Distance::L2), Ok(None));
    assert_eq!(g.enroll("dave", &[0.0, 0.0]), Ok(3));
}

#[test]
fn full_long_name_and_bad_embedding_are_errors() {
    let mut g = Gallery::<2, 2>::new();
    g.enroll("a", &[0.0, 0.0]).unwrap();
    g.enroll("b", &[0.0, 0.0]).unwrap();
    assert_eq!(
        g.enroll("c", &[0.0, 0.0]),
        Err(GalleryError::Full { capacity: 2 })
    );
    let mut g = Gallery::<2, 2>::new();
    let long = "x".repeat(NAME_CAP + 1);
    assert_eq!(
        g.enroll(&long, &[0.0, 0.0]),
        Err(GalleryError::NameTooLong {
            max: NAME_CAP,
            found: NAME_CAP + 1
        })
    );
    assert_eq!(
        g.enroll("a", &[0.0]),
        Err(GalleryError::Embedding(CoreError::DimMismatch {
            expected: 2,
            found: 1
        }))
    );
    assert_eq!(
        g.enroll("a", &[f32::NAN, 0.0]),
        Err(GalleryError::Embedding(CoreError::NonFinite))
    );
    assert_eq!(g.add_shot(7, &[0.0, 0.0]), Err(GalleryError::UnknownId(7)));
    assert!(g.is_empty(), "failed enrollments leave nothing behind");
}
