//! Train a tiny encoder, export it to ONNX, load it on the device side with
//! tract, and check it embeds real images as the candle checkpoint does.
use std::path::{Path, PathBuf};

use fewshot_core::Recipe;
use fewshot_firmware::encoder::{EncoderError, OnnxEncoder};
use fewshot_host::data::preprocess_file;
use fewshot_host::embed::Embedder;
use fewshot_host::episode::EpisodeShape;
use fewshot_host::export::export_f32;
use fewshot_host::nn::checkpoint::CandleEmbedder;
use fewshot_host::nn::encoder::EncoderConfig;
use fewshot_host::train::{train_protonet, StopAt, TrainConfig};
use prost::Message;

fn data_dir() -> PathBuf {
    let d = std::env::var_os("FEWSHOT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    assert!(
        d.join("MANIFEST.sha256").is_file(),
        "test data not found at {} (set FEWSHOT_DATA)",
        d.display()
    );
    d
}

/// Trains a small Conv-4 for a few episodes on six Greek characters, so batch
/// norm has real running statistics to fold.
fn tiny_checkpoint(dir: &Path) -> PathBuf {
    let greek = data_dir().join("omniglot/images_background_small1/Greek");
    let data = dir.join("data/Greek");
    std::fs::create_dir_all(&data).unwrap();
    for i in 1..=6 {
        let c = format!("character{i:02}");
        std::os::unix::fs::symlink(greek.join(&c), data.join(&c)).unwrap();
    }
    let config = TrainConfig {
        data: dir.join("data"),
        shape: EpisodeShape {
            k_way: 5,
            n_shot: 1,
            q_queries: 3,
        },
        episodes: 20,
        lr: 3e-3,
        lr_step: 1000,
        lr_gamma: 0.5,
        val_every: 20,
        val_episodes: 0,
        val_fraction: 0.0,
        rotations: true,
        affine: None,
        encoder: EncoderConfig::Conv4 {
            in_channels: 1,
            hidden: 8,
            input_size: 28,
        },
        recipe: Recipe::OMNIGLOT_28.into(),
        distance: "l2".into(),
        seed: 3,
    };
    train_protonet(&config, &dir.join("run"), false, StopAt::default(), false).unwrap();
    dir.join("run/best.safetensors")
}

#[test]
fn exported_model_matches_the_checkpoint_on_real_images() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint(tmp.path());
    let onnx = tmp.path().join("tiny.onnx");
    export_f32(&weights, &onnx).unwrap();

    let candle = CandleEmbedder::load(&weights).unwrap();
    let device = OnnxEncoder::load(&onnx).unwrap();
    assert_eq!(
        device.recipe(),
        candle.recipe(),
        "the model carries its preprocessing"
    );
    assert_eq!(device.dim(), candle.dim());
    assert_eq!(device.distance(), fewshot_core::Distance::L2);
    assert_eq!(device.threshold(), None);
    let onnx_model = fewshot_host::onnx_model::OnnxEmbedder::load(&onnx).unwrap();
    assert_eq!(
        onnx_model.trained_classes(),
        candle.trained_classes(),
        "the export records the training classes"
    );
    assert_eq!(onnx_model.trained_classes().map(|c| c.len()), Some(6));

    let alphabet = data_dir().join("omniglot/images_background_small2/Tagalog");
    let mut worst = 0.0f32;
    for c in ["character01", "character05", "character09"] {
        for entry in std::fs::read_dir(alphabet.join(c)).unwrap().take(4) {
            let input = preprocess_file(&entry.unwrap().path(), &candle.recipe()).unwrap();
            let a = candle.embed(&input).unwrap();
            let b = device.embed(&input).unwrap();
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    eprintln!("candle vs tract: max abs difference {worst:e}");
    assert!(worst <= 1e-4, "candle vs tract max abs difference {worst}");
}

#[test]
fn bad_models_and_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.onnx");
    std::fs::write(&junk, b"this is not a model").unwrap();
    let err = OnnxEncoder::load(&junk).err().expect("junk must not load");
    assert!(matches!(err, EncoderError::Model { .. }), "{err}");
    assert!(err.to_string().contains("junk.onnx"), "{err}");

    let missing = OnnxEncoder::load(&tmp.path().join("nope.onnx"))
        .err()
        .expect("missing file");
    assert!(matches!(missing, EncoderError::Io { .. }), "{missing}");

    // A valid model without this project's metadata.
    let weights = tiny_checkpoint(tmp.path());
    let onnx = tmp.path().join("tiny.onnx");
    export_f32(&weights, &onnx).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(&std::fs::read(&onnx).unwrap()[..]).unwrap();
    proto.metadata_props.clear();
    let bare = tmp.path().join("bare.onnx");
    std::fs::write(&bare, proto.encode_to_vec()).unwrap();
    let err = OnnxEncoder::load(&bare).err().expect("no metadata");
    assert!(
        matches!(
            err,
            EncoderError::Metadata {
                key: "fewshot.recipe",
                ..
            }
        ),
        "{err}"
    );

    let device = OnnxEncoder::load(&onnx).unwrap();
    let err = device.embed(&[0.0; 10]).unwrap_err();
    assert!(
        matches!(
            err,
            EncoderError::Input {
                expected: 784,
                found: 10
            }
        ),
        "{err}"
    );
}

/// onnx.checker accepts the export and onnxruntime computes what tract does.
#[test]
fn onnxruntime_agrees_with_tract() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint(tmp.path());
    let onnx = tmp.path().join("tiny.onnx");
    export_f32(&weights, &onnx).unwrap();
    let device = OnnxEncoder::load(&onnx).unwrap();
    let r = device.recipe();
    let alphabet = data_dir().join("omniglot/images_background_small2/Sanskrit/character07");
    let mut inputs = Vec::new();
    let mut expected = Vec::new();
    for entry in std::fs::read_dir(alphabet).unwrap().take(3) {
        let input = preprocess_file(&entry.unwrap().path(), &r).unwrap();
        expected.push(device.embed(&input).unwrap());
        inputs.extend(input);
    }
    let raw = tmp.path().join("input.f32");
    std::fs::write(
        &raw,
        inputs
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx_check.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&onnx)
        .arg(&raw)
        .args([r.channels, r.height, r.width].map(|v| v.to_string()))
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "{} failed (it needs `pip install onnx onnxruntime numpy`): {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = json["output"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len());
    for (row, want) in rows.iter().zip(&expected) {
        let got: Vec<f64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - f64::from(*w)).abs() <= 1e-5,
                "onnxruntime {g} vs tract {w}"
            );
        }
    }
    assert!(json["metadata_keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k == "fewshot.recipe"));
}
