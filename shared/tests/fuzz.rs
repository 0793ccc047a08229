//! The `gallery_decode` fuzz target (`shared/fuzz`) on stable: its body over
//! every seed (`shared/fuzz/seeds`) and over a few thousand mutated seeds from
//! proptest (a short fuzz run for CI).

use std::path::{Path, PathBuf};

use proptest::prelude::*;

#[path = "../fuzz/bodies/gallery_decode.rs"]
mod gallery_decode;

/// The seeds, sorted by name.
fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seeds", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn gallery_decode_seeds() {
    for (path, bytes) in seeds() {
        let result = std::panic::catch_unwind(|| gallery_decode::run(&bytes));
        assert!(result.is_ok(), "seed {} panicked", path.display());
    }
}

/// The seeds are real galleries (after the mode byte), so the mutations
/// below start from inputs that decode.
#[test]
fn gallery_decode_seeds_decode() {
    for (path, bytes) in seeds() {
        let decoded = fewshot_core::store::decode::<8, 4>(&bytes[1..]);
        assert!(decoded.is_ok(), "seed {}: {decoded:?}", path.display());
    }
}

/// A seed (mode byte chosen at random) with up to eight bytes replaced, then
/// cut or not.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = seeds().into_iter().map(|(_, b)| b).collect();
    (
        0..seeds.len(),
        any::<u8>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(move |(i, mode, edits, cut)| {
            let mut bytes = seeds[i].clone();
            bytes[0] = mode;
            for (at, b) in edits {
                let at = 1 + at.index(bytes.len() - 1);
                bytes[at] = b;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn gallery_decode_mutated(bytes in mutated()) {
        gallery_decode::run(&bytes);
    }

    #[test]
    fn gallery_decode_random(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        gallery_decode::run(&bytes);
    }
}
