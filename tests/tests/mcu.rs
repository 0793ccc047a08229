//! The model blobs of `fewshot export --mcu`, run by the core's int8 engine,
//! against tract running the same quantization as an ONNX `qlinear` graph.
use std::path::{Path, PathBuf};

use fewshot_core::engine::blob::Output;
use fewshot_core::engine::Model;
use fewshot_core::preprocess::Crop;
use fewshot_e2e::{data_dir, tiny_checkpoint_embedding};
use fewshot_host::data::preprocess_file;
use fewshot_host::embed::Embedder;
use fewshot_host::export::mcu::{
    compare_with_tract, export_mcu, qlinear_features, qlinear_proto, EngineCheck,
};
use fewshot_host::mcu_model::McuEmbedder;

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// The engine's promise: each activation within one quantization step of
/// tract's (they round exact ties differently), ties being rare (≤ 1 %), and
/// the embedding off by no more than those steps carry through the output.
fn assert_close(model: &Model<'_>, c: &EngineCheck) {
    assert!(c.images > 0 && c.activations > 0, "{c:?}");
    assert!(c.max_steps <= 1, "{c:?}");
    assert!(c.differing * 100 <= c.activations, "{c:?}");
    let last = model.layers().last().unwrap().out.scale;
    let bound = match model.output() {
        Output::Flatten => last * 1.0001,
        Output::Linear { weight_scale, .. } => {
            // One step of one feature moves an output by at most in-scale ×
            // its row's scale × 127; a few steps per image at most.
            let row = (0..model.dim())
                .map(|o| f32_at(weight_scale, o))
                .fold(0f32, f32::max);
            let per_image = c.differing.div_ceil(c.images).max(1) as f32;
            per_image * last * row * 127.0 + 1e-4
        }
    };
    assert!(c.max_embedding_diff <= bound, "{c:?}, bound {bound}");
}

/// The engine against tract running the blob's own ONNX graph on `inputs`.
fn own_graph_in_tract(bytes: &[u8], model: &Model<'_>, inputs: &[Vec<f32>]) -> EngineCheck {
    compare_with_tract(
        bytes,
        &qlinear_proto(bytes).unwrap(),
        &qlinear_features(model),
        inputs,
    )
    .unwrap()
}

fn images(folder: &Path, n: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "png" || e == "jpg") {
                out.push(p);
            }
        }
        if out.len() >= n {
            break;
        }
    }
    out.truncate(n);
    out
}

/// The committed Omniglot checkpoint exported as a blob: the export's own
/// check (the exporter's `qlinear` graph in tract) and the blob's own graph
/// in tract both agree with the engine; the blob fits the Omniglot door's
/// 256 KB of RAM with room to spare.
#[test]
fn the_engine_matches_tract_on_the_committed_omniglot_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("omniglot.fsmcu");
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/omniglot-protonet-small1.safetensors");
    let calibration = data_dir().join("omniglot/images_background_small1/Greek");
    let done = export_mcu(&weights, &out, &calibration, 200, 100.0, None, 60).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), done.bytes);
    let model = Model::from_bytes(&bytes).unwrap();
    assert_close(&model, &done.check);
    // The blob's own graph, independent of the exporter's.
    let r = model.header().recipe;
    let inputs: Vec<Vec<f32>> = images(
        &data_dir().join("omniglot/images_background_small2/Sanskrit"),
        40,
    )
    .iter()
    .map(|p| preprocess_file(p, &r).unwrap())
    .collect();
    let check = own_graph_in_tract(&bytes, &model, &inputs);
    assert_close(&model, &check);
    let ram = done.arena.0 + 4 * done.arena.1;
    assert!(ram < 64 * 1024, "arena {ram} bytes");
    // The embedder reads it as `--model` does.
    let e = McuEmbedder::load(&out).unwrap();
    assert_eq!((e.dim(), e.recipe()), (64, r));
    let emb = e.embed(&inputs[..2].concat()).unwrap();
    assert_eq!(emb.len(), 128);
}

/// A Conv-4 with a linear embedding (as the distilled face students have).
#[test]
fn a_blob_with_a_linear_embedding_matches_tract() {
    let dir = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint_embedding(dir.path(), 5, 8, 20, Some(12));
    let out = dir.path().join("tiny.fsmcu");
    let calibration = data_dir().join("omniglot/images_background_small1/Greek");
    let done = export_mcu(&weights, &out, &calibration, 100, 100.0, Some(0.5), 50).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let model = Model::from_bytes(&bytes).unwrap();
    assert!(matches!(model.output(), Output::Linear { dim: 12, .. }));
    assert_eq!(model.header().threshold, Some(0.5));
    assert_close(&model, &done.check);
}

/// Every committed blob, run as its own ONNX graph in tract, on real images
/// of its kind; each within the RAM and flash of its MCU class.
#[test]
fn every_committed_blob_matches_tract() {
    let cache = tempfile::tempdir().unwrap();
    // Before the first aligned image of this process: faces go to a fresh
    // cache, and the detector is found in the data folder.
    std::env::set_var("FEWSHOT_CACHE", cache.path());
    std::env::set_var("FEWSHOT_DATA", data_dir());
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut blobs: Vec<PathBuf> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fsmcu"))
        .collect();
    blobs.sort();
    assert!(!blobs.is_empty(), "no .fsmcu blob in {}", models.display());
    for path in blobs {
        let bytes = std::fs::read(&path).unwrap();
        let model = Model::from_bytes(&bytes).unwrap();
        let r = model.header().recipe;
        let (folder, budget) = if matches!(r.crop, Crop::Aligned(_)) {
            (data_dir().join("faces/lfw-devtrain"), 512 * 1024)
        } else {
            (
                data_dir().join("omniglot/images_background_small2/Sanskrit"),
                256 * 1024,
            )
        };
        let inputs: Vec<Vec<f32>> = images(&folder, 12)
            .iter()
            .map(|p| preprocess_file(p, &r).unwrap())
            .collect();
        let check = own_graph_in_tract(&bytes, &model, &inputs);
        assert_close(&model, &check);
        let h = model.header();
        let ram = h.arena_bytes + 4 * h.accumulator_words;
        assert!(ram <= budget, "{}: arena {ram} bytes", path.display());
        assert!(
            bytes.len() <= 1 << 20,
            "{}: {} bytes",
            path.display(),
            bytes.len()
        );
    }
}

/// A damaged blob is refused by name when loaded.
#[test]
fn damaged_blobs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint_embedding(dir.path(), 3, 4, 5, None);
    let out = dir.path().join("t.fsmcu");
    let calibration = data_dir().join("omniglot/images_background_small1/Greek");
    export_mcu(&weights, &out, &calibration, 20, 100.0, None, 5).unwrap();
    let good = std::fs::read(&out).unwrap();
    let bad = dir.path().join("bad.fsmcu");
    let mut flipped = good.clone();
    flipped[500] ^= 1;
    std::fs::write(&bad, &flipped).unwrap();
    let err = McuEmbedder::load(&bad).err().unwrap().to_string();
    assert!(
        err.contains("bad.fsmcu") && err.contains("checksum"),
        "{err}"
    );
    std::fs::write(&bad, &good[..good.len() - 9]).unwrap();
    let err = McuEmbedder::load(&bad).err().unwrap().to_string();
    assert!(err.contains("expected"), "{err}");
    std::fs::write(&bad, vec![b'x'; 300]).unwrap();
    let err = McuEmbedder::load(&bad).err().unwrap().to_string();
    assert!(err.contains("magic"), "{err}");
}
