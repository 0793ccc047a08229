//! Arbitrary bytes as the door's camera image, then the committed models'
//! preprocessing (see `bodies/door_image.rs`).
#![no_main]
use std::sync::OnceLock;

use fewshot_firmware::core::Recipe;
use libfuzzer_sys::fuzz_target;

#[path = "../bodies/door_image.rs"]
mod body;

static RECIPES: OnceLock<Vec<Recipe>> = OnceLock::new();

fuzz_target!(|data: &[u8]| body::check(data, RECIPES.get_or_init(body::recipes)));
