//! The body of the `door_image` fuzz target, shared with the stable seed and
//! property tests (`firmware/tests/fuzz.rs`): `camera::decode_image` answers
//! any bytes, never panics nor allocates past its limits, names the image in
//! its errors, and a decoded frame goes through the preprocessing of every
//! committed model.

use std::path::Path;

use fewshot_firmware::camera::{decode_image, MAX_IMAGE_SIDE};
use fewshot_firmware::core::preprocess::RecipeSpec;
use fewshot_firmware::core::{Crop, Recipe};

/// The recipes of the committed models (`models/*.onnx`, their
/// `fewshot.recipe`): Omniglot, the face models' centre crop, the aligned
/// face models.
pub const RECIPES: [&str; 3] = [
    r#"{"width":28,"height":28,"channels":1,"crop":null,"resize":"area","invert":true,"mean":[0.0,0.0,0.0],"std":[1.0,1.0,1.0]}"#,
    r#"{"width":64,"height":64,"channels":1,"crop":0.5,"resize":"area","invert":false,"mean":[0.0,0.0,0.0],"std":[1.0,1.0,1.0]}"#,
    r#"{"width":64,"height":64,"channels":1,"crop":null,"align":[[0.34191608,0.4615741],[0.6565339,0.45983392],[0.500225,0.6405054],[0.3709759,0.82469195],[0.63151693,0.8232509]],"resize":"area","invert":false,"mean":[0.0,0.0,0.0],"std":[1.0,1.0,1.0]}"#,
];

/// The recipes, parsed.
pub fn recipes() -> Vec<Recipe> {
    RECIPES
        .iter()
        .map(|text| {
            let spec: RecipeSpec = serde_json::from_str(text).expect("a committed recipe");
            spec.recipe().expect("a valid committed recipe")
        })
        .collect()
}

/// Decodes the input; preprocesses what decodes with each of `recipes`.
pub fn check(data: &[u8], recipes: &[Recipe]) {
    let name = Path::new("fuzz-input.img");
    match decode_image(data, name) {
        Ok(owned) => {
            assert!(owned.width as u64 <= MAX_IMAGE_SIDE as u64);
            assert!(owned.height as u64 <= MAX_IMAGE_SIDE as u64);
            let frame = owned.as_frame().expect("a decoded image is a valid frame");
            for r in recipes {
                let mut out = vec![0.0; r.len()];
                match r.crop {
                    Crop::Aligned(t) => {
                        // A face where the template puts it, as if the
                        // detector had found one filling the frame.
                        let (w, h) = (frame.width as f32, frame.height as f32);
                        let marks = t.points.map(|[x, y]| [x * w, y * h]);
                        let mut plane = vec![0.0; r.aligned_plane_len(&frame, &marks).unwrap()];
                        r.apply_aligned_in(&frame, &marks, &mut out, &mut plane)
                            .expect("the template's own landmarks align");
                    }
                    _ => r
                        .apply(&frame, &mut out)
                        .expect("a decoded frame preprocesses"),
                }
                assert!(out.iter().all(|v| v.is_finite()), "{r:?}: non-finite input");
            }
        }
        Err(e) => {
            assert_eq!(e.path, name);
            assert!(e.to_string().starts_with("fuzz-input.img: "), "{e}");
            assert!(!e.message.is_empty());
        }
    }
}

/// Checks the input with the committed models' recipes (the tests' entry; the fuzz
/// target keeps its recipes across inputs and calls [`check`]).
#[allow(dead_code)]
pub fn run(data: &[u8]) {
    check(data, &recipes());
}
