//! The firmware's fuzz targets (`firmware/fuzz`) on stable: each target's
//! body over every seed of its corpus (`firmware/fuzz/seeds/<target>`), over a
//! few thousand random inputs from proptest (mutated seeds and made-up
//! inputs: a short fuzz run for CI), and the errors the door gives the bad
//! inputs of the README's table.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

#[path = "../fuzz/bodies/door_image.rs"]
mod door_image;
#[path = "../fuzz/bodies/model_metadata.rs"]
mod model_metadata;
#[path = "../fuzz/bodies/script_line.rs"]
mod script_line;

/// The seed files of a target, sorted by name.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
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

/// Runs `body` over every seed of `target`; a failure names the seed.
fn over_seeds(target: &str, body: impl Fn(&[u8])) {
    for (path, bytes) in seeds(target) {
        if let Err(cause) = catch_unwind(AssertUnwindSafe(|| body(&bytes))) {
            let why = cause
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| cause.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("seed {}: {why}", path.display());
        }
    }
}

#[test]
fn script_line_seeds() {
    over_seeds("script_line", script_line::run);
}

#[test]
fn model_metadata_seeds() {
    over_seeds("model_metadata", model_metadata::run);
}

#[test]
fn door_image_seeds() {
    let recipes = door_image::recipes();
    over_seeds("door_image", |bytes| door_image::check(bytes, &recipes));
}

/// The committed models' metadata seeds are accepted; the bad ones are not.
#[test]
fn model_metadata_seeds_of_the_committed_models_load() {
    use fewshot_firmware::encoder::ModelMeta;
    for (path, bytes) in seeds("model_metadata") {
        let name = path.file_name().unwrap().to_str().unwrap();
        let result = ModelMeta::from_metadata(&model_metadata::metadata(&bytes));
        let committed = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(format!("{name}.onnx"))
            .is_file();
        if committed || name == "short-keys" || name == "matching-fce-null" {
            result.unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            assert!(result.is_err(), "{name} was accepted");
        }
    }
}

/// A seed with up to eight bytes replaced, then cut or not.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = seeds(target).into_iter().map(|(_, b)| b).collect();
    (
        0..seeds.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(move |(i, edits, cut)| {
            let mut bytes = seeds[i].clone();
            if !bytes.is_empty() {
                for (at, b) in edits {
                    let at = at.index(bytes.len());
                    bytes[at] = b;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
}

/// A metadata value worth trying: the real ones' shapes, edge numbers and junk.
fn metadata_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{"width":28,"height":28,"channels":1,"crop":null,"resize":"area","invert":true,"mean":[0.0,0.0,0.0],"std":[1.0,1.0,1.0]}"#.to_string()),
        (0usize..5000, 0usize..5000, 0usize..5, proptest::option::of(-1.0f32..2.0), any::<f32>(), any::<f32>())
            .prop_map(|(w, h, c, crop, m, s)| format!(
                r#"{{"width":{w},"height":{h},"channels":{c},"crop":{},"resize":"bilinear","invert":false,"mean":[{m:?},0,0],"std":[{s:?},1,1]}}"#,
                crop.map_or("null".to_string(), |f| format!("{f:?}"))
            )),
        (proptest::collection::vec((0u64..100, any::<f64>()), 0..10)).prop_map(|points| {
            let items: Vec<String> = points
                .iter()
                .map(|(g, t)| format!(r#"{{"gallery":{g},"threshold":{t:?}}}"#))
                .collect();
            format!("[{}]", items.join(","))
        }),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f32>().prop_map(|x| format!("{x:?}")),
        prop_oneof![Just("l2"), Just("cosine"), Just("dot"), Just("true"), Just("false"), Just("{}"), Just(r#"{"fce":{}}"#), Just("NaN"), Just("inf"), Just("")].prop_map(str::to_string),
        "\\PC{0,40}",
    ]
}

/// A metadata map as the fuzz target's text: real keys (`@N`) or junk.
fn metadata_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (
            prop_oneof![3 => (0usize..7).prop_map(|n| format!("@{n}")), 1 => "[a-z.]{0,12}"],
            metadata_value(),
        ),
        0..9,
    )
    .prop_map(|entries| {
        entries
            .iter()
            .map(|(k, v)| format!("{k}={}\n", v.replace('\n', " ")))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn script_line_random(
        line in prop_oneof![
            "\\PC{0,30}",
            "(frame|press|wait|open)[ \t]{0,2}[-+#0-9a-z./ ]{0,24}",
            any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
    ) {
        script_line::run(line.as_bytes());
    }

    #[test]
    fn script_line_mutated(bytes in mutated("script_line")) {
        script_line::run(&bytes);
    }

    #[test]
    fn model_metadata_random(text in metadata_text()) {
        model_metadata::run(text.as_bytes());
    }

    #[test]
    fn model_metadata_mutated(bytes in mutated("model_metadata")) {
        model_metadata::run(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn door_image_mutated(bytes in mutated("door_image")) {
        door_image::run(&bytes);
    }

    #[test]
    fn door_image_random(
        magic in prop_oneof![
            Just(&b"\x89PNG\r\n\x1a\n"[..]),
            Just(&b"\xff\xd8\xff"[..]),
            Just(&b"P5\n"[..]),
            Just(&b"P6 "[..]),
            Just(&b""[..]),
        ],
        rest in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        door_image::run(&[magic, &rest[..]].concat());
    }
}

/// The bad inputs of the README's table ("Fuzzing the decoders"), and what
/// the door answers each: `cargo test -p fewshot-firmware --test fuzz
/// bad_inputs -- --nocapture` prints the table's rows.
#[test]
fn bad_inputs_get_errors_that_name_them() {
    use fewshot_firmware::camera::{decode_image, load_image};
    use fewshot_firmware::encoder::ModelMeta;
    use fewshot_firmware::sim::parse_line;

    let mut rows = Vec::new();
    // Images: the seed's bytes under the seed's name.
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/door_image");
    for (file, what, expect) in [
        ("truncated.png", "PNG cut in half", "truncated.png: "),
        (
            "corrupt-crc.png",
            "PNG with one byte of its pixel data flipped",
            "corrupt-crc.png: ",
        ),
        (
            "huge-60000x60000.png",
            "PNG header saying 60000×60000",
            "60000×60000 pixels: larger than the door decodes",
        ),
        (
            "huge-65000x65000.jpg",
            "JPEG frame header saying 65000×65000",
            "65000×65000 pixels",
        ),
        (
            "huge-60000x60000.pgm",
            "PGM header saying 60000×60000",
            "60000×60000 pixels",
        ),
        (
            "rgba16-4096x4096.png",
            "16-bit RGBA PNG header 4096×4096 (128 MiB decoded)",
            "64 MiB",
        ),
        ("wide-5000x1.png", "PNG 5000×1", "at most 4096×4096"),
        ("zero-width.png", "PNG 0×5", "zero-width.png: "),
        (
            "crash-empty-image",
            "PBM 0×390 (a libFuzzer find: decoded, then no frame)",
            "0×390 pixels: an empty image",
        ),
        ("truncated.jpg", "JPEG cut in half", "truncated.jpg: "),
        ("negative.pgm", "PGM with width -2", "negative.pgm: "),
        (
            "rgb.bmp",
            "BMP (not a format the door reads)",
            "the door reads PNG, JPEG, PGM or PPM",
        ),
        (
            "text",
            "a text file",
            "the door reads PNG, JPEG, PGM or PPM",
        ),
        ("empty", "an empty file", "empty: "),
    ] {
        let bytes = std::fs::read(images.join(file)).unwrap();
        let got = decode_image(&bytes, Path::new(file))
            .err()
            .map(|e| e.to_string());
        let got = got.unwrap_or_else(|| panic!("{file} decoded"));
        assert!(
            got.starts_with(&format!("{file}: ")) && got.contains(expect),
            "{file}: {got}"
        );
        rows.push((format!("image: {what}"), got));
    }
    let missing = Path::new("no/such/frame.png");
    let got = load_image(missing).expect_err("a missing file").to_string();
    assert!(got.starts_with("no/such/frame.png: "), "{got}");
    rows.push(("image: a path that does not exist".to_string(), got));

    // Model metadata: the committed Omniglot model's, with one entry changed.
    let seeds_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/model_metadata");
    let base =
        model_metadata::metadata(&std::fs::read(seeds_dir.join("omniglot-protonet")).unwrap());
    let huge = r#"{"width":4294967296,"height":4294967296,"channels":3,"crop":null,"resize":"area","invert":true,"mean":[0.0,0.0,0.0],"std":[1.0,1.0,1.0]}"#;
    let zero_std = r#"{"width":28,"height":28,"channels":1,"crop":null,"resize":"area","invert":true,"mean":[0.0,0.0,0.0],"std":[0.0,1.0,1.0]}"#;
    for (key, value, expect) in [
        (
            "fewshot.embedding_size",
            Some("abc"),
            "expected a whole number",
        ),
        ("fewshot.embedding_size", Some("0"), "expected 1 to 65536"),
        (
            "fewshot.embedding_size",
            Some("99999999999999999999"),
            "expected a whole number",
        ),
        (
            "fewshot.distance",
            Some("manhattan"),
            "expected l2, cosine or dot",
        ),
        ("fewshot.distance", None, "missing"),
        ("fewshot.threshold", Some("NaN"), "expected a finite number"),
        ("fewshot.threshold", Some("inf"), "expected a finite number"),
        (
            "fewshot.flip_average",
            Some("yes"),
            "expected true or false",
        ),
        (
            "fewshot.gallery_thresholds",
            Some(r#"[{"gallery":5,"threshold":0.1},{"gallery":3,"threshold":0.2}]"#),
            "increasing",
        ),
        (
            "fewshot.gallery_thresholds",
            Some(r#"{"gallery":5}"#),
            "expected a JSON list",
        ),
        ("fewshot.matching", Some("[1,2]"), "expected a JSON object"),
        ("fewshot.recipe", Some(huge), "larger than the door accepts"),
        ("fewshot.recipe", Some(zero_std), "std"),
        ("fewshot.recipe", Some(&huge[..40]), "EOF"),
    ] {
        let mut map = base.clone();
        match value {
            Some(v) => map.insert(key.to_string(), v.to_string()),
            None => map.remove(key),
        };
        let e = ModelMeta::from_metadata(&map)
            .err()
            .unwrap_or_else(|| panic!("{key}={value:?} accepted"));
        assert_eq!(e.key, key, "{e}");
        assert!(e.to_string().contains(expect), "{key}: {e}");
        let what = match value {
            Some(v) if v.len() > 60 => format!("metadata `{key}` = `{}…`", &v[..40]),
            Some(v) => format!("metadata `{key}` = `{v}`"),
            None => format!("metadata without `{key}`"),
        };
        rows.push((what, e.to_string()));
    }

    // Script lines (the parser is the simulator's; only that they are
    // errors is asserted here, the words are its own).
    for line in [
        "press -5",
        "wait 18446744073709551616",
        "press 1e3",
        "frame",
        "frame   # no path",
        "open sesame",
    ] {
        let got = parse_line(line)
            .err()
            .unwrap_or_else(|| panic!("{line:?} parsed"));
        rows.push((format!("script line `{line}`"), got));
    }

    // Stored galleries: the seed with one record (its first byte is the fuzz
    // target's mode byte, not part of the gallery).
    let gallery = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fuzz/seeds/gallery_decode/seed1"),
    )
    .unwrap()[1..]
        .to_vec();
    fewshot_firmware::core::store::decode::<8, 4>(&gallery).expect("the seed decodes");
    let mut flipped = gallery.clone();
    flipped[20] ^= 1;
    let mut magic = gallery.clone();
    magic[0] = b'X';
    for (what, bytes) in [
        ("gallery cut to 10 bytes", &gallery[..10]),
        (
            "gallery missing its last byte",
            &gallery[..gallery.len() - 1],
        ),
        ("gallery with one bit flipped", &flipped[..]),
        ("gallery with a wrong magic", &magic[..]),
    ] {
        let e = fewshot_firmware::core::store::decode::<8, 4>(bytes)
            .err()
            .unwrap_or_else(|| panic!("{what}: decoded"));
        rows.push((what.to_string(), e.to_string()));
    }

    for (what, got) in rows {
        println!("| {what} | {} |", got.replace('|', "\\|"));
    }
}
