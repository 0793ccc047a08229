//! The body of the `model_metadata` fuzz target, shared with the stable seed
//! and property tests (`firmware/tests/fuzz.rs`): `ModelMeta::from_metadata`
//! answers every metadata map, never panics, names a real key in its errors,
//! and what it accepts is usable (the recipe preprocesses a frame).
//!
//! The input is text, one entry a line, `key=value` (split at the first `=`).
//! A key `@N` stands for the real key number `N` (modulo their count) of
//! `fewshot_core::model_meta`, so the fuzzer reaches every check behind the
//! key names quickly.

use std::collections::HashMap;

use fewshot_firmware::core::model_meta;
use fewshot_firmware::core::{Crop, Frame, PixelFormat};
use fewshot_firmware::encoder::{ModelMeta, MAX_EMBEDDING_SIZE, MAX_INPUT_VALUES};

/// The keys the door reads, in the order `@N` names them.
pub const KEYS: [&str; 7] = [
    model_meta::RECIPE,
    model_meta::EMBEDDING_SIZE,
    model_meta::DISTANCE,
    model_meta::THRESHOLD,
    model_meta::FLIP_AVERAGE,
    model_meta::GALLERY_THRESHOLDS,
    model_meta::MATCHING,
];

/// The metadata map an input stands for.
pub fn metadata(data: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(data);
    let mut map = HashMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = match key.strip_prefix('@').map(str::parse::<usize>) {
            Some(Ok(n)) => KEYS[n % KEYS.len()].to_string(),
            _ => key.to_string(),
        };
        map.insert(key, value.to_string());
    }
    map
}

/// Checks `from_metadata` on one map.
pub fn check(map: &HashMap<String, String>) {
    match ModelMeta::from_metadata(map) {
        Ok(meta) => {
            let r = meta.recipe;
            r.validate().expect("an accepted recipe is valid");
            assert!(r.len() <= MAX_INPUT_VALUES, "recipe of {} values", r.len());
            assert!(
                (1..=MAX_EMBEDDING_SIZE).contains(&meta.dim),
                "dim {}",
                meta.dim
            );
            assert_eq!(
                Some(meta.distance.name()),
                map.get(model_meta::DISTANCE).map(String::as_str)
            );
            assert!(meta.threshold.is_none_or(f32::is_finite));
            if let Some(g) = meta.gallery_thresholds {
                for n in [0, 1, 10, 1000, usize::MAX] {
                    assert!(g.for_gallery(n).is_finite());
                }
            }
            assert!(!meta.fce || map.contains_key(model_meta::MATCHING));
            // The recipe preprocesses a frame (small recipes only: the
            // fuzzer's time is better spent elsewhere than on big outputs).
            if r.len() <= 1 << 14 {
                let pixels: Vec<u8> = (0..13 * 9 * 3).map(|i| (i * 37 % 256) as u8).collect();
                let frame = Frame::new(13, 9, PixelFormat::Rgb8, &pixels).unwrap();
                let mut out = vec![0.0; r.len()];
                let result = match r.crop {
                    Crop::Aligned(t) => {
                        let marks = t.points.map(|[x, y]| [x * 13.0, y * 9.0]);
                        r.apply_aligned(&frame, &marks, &mut out)
                    }
                    _ => {
                        r.apply(&frame, &mut out)
                            .expect("a plain recipe takes any frame");
                        Ok(())
                    }
                };
                if result.is_ok() {
                    assert!(out.iter().all(|v| !v.is_nan()), "recipe {r:?} gave NaN");
                }
            }
        }
        Err(e) => {
            assert!(KEYS.contains(&e.key), "error names {:?}", e.key);
            assert!(!e.message.is_empty());
            if !map.contains_key(e.key) {
                assert!(e.message.starts_with("missing"), "{e}");
            }
        }
    }
}

/// Checks the map the input stands for.
pub fn run(data: &[u8]) {
    check(&metadata(data));
}
