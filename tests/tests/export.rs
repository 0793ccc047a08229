//! Train a tiny encoder, export it to ONNX, load it on the device side with
//! tract, and check it embeds real images as the candle checkpoint does.
use std::path::{Path, PathBuf};

use fewshot_core::Recipe;
use fewshot_e2e::{data_dir, tiny_checkpoint, tiny_checkpoint_embedding, Method};
use fewshot_firmware::encoder::{EncoderError, OnnxEncoder};
use fewshot_host::data::preprocess_file;
use fewshot_host::embed::Embedder;
use fewshot_host::export::export_f32;
use fewshot_host::export::int8::{export_int8, Int8Form, Int8Options};
use fewshot_host::nn::checkpoint::CandleEmbedder;
use prost::Message;

#[test]
fn exported_model_matches_the_checkpoint_on_real_images() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint(tmp.path(), 6, 8, 20);
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
    let weights = tiny_checkpoint(tmp.path(), 6, 8, 20);
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

/// Runs `tests/onnx_check.py`: `onnx.checker` must accept `model` and
/// onnxruntime embeds `inputs`; returns its outputs and the metadata keys.
fn onnxruntime(model: &Path, inputs: &[Vec<f32>], r: &Recipe) -> (Vec<Vec<f64>>, Vec<String>) {
    // The inputs go to a temporary file, never beside the model (committed
    // models live in the repo).
    let raw = tempfile::Builder::new().suffix(".f32").tempfile().unwrap();
    std::fs::write(
        raw.path(),
        inputs
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx_check.py");
    let python = fewshot_e2e::python();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(model)
        .arg(raw.path())
        .args([r.channels, r.height, r.width].map(|v| v.to_string()))
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (run ./test.sh, or set FEWSHOT_PYTHON)"));
    assert!(
        out.status.success(),
        "{} failed with {python} (it needs onnx, onnxruntime and numpy: run ./test.sh, \
         which installs them, or set FEWSHOT_PYTHON to a Python that has them): {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = json["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    let keys = json["metadata_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    (rows, keys)
}

/// Three preprocessed Sanskrit characters (never seen in training).
fn sanskrit(r: &Recipe, n: usize) -> Vec<Vec<f32>> {
    let folder = data_dir().join("omniglot/images_background_small2/Sanskrit/character07");
    let mut paths: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .iter()
        .take(n)
        .map(|p| preprocess_file(p, r).unwrap())
        .collect()
}

/// onnx.checker accepts the export and onnxruntime computes what tract does.
#[test]
fn onnxruntime_agrees_with_tract() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint(tmp.path(), 6, 8, 20);
    let onnx = tmp.path().join("tiny.onnx");
    export_f32(&weights, &onnx).unwrap();
    let device = OnnxEncoder::load(&onnx).unwrap();
    let r = device.recipe();
    let inputs = sanskrit(&r, 3);
    let (rows, keys) = onnxruntime(&onnx, &inputs, &r);
    assert_eq!(rows.len(), inputs.len());
    for (got, input) in rows.iter().zip(&inputs) {
        let want = device.embed(input).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - f64::from(*w)).abs() <= 1e-5,
                "onnxruntime {g} vs tract {w}"
            );
        }
    }
    assert!(keys.iter().any(|k| k == "fewshot.recipe"));
}

/// An encoder with a linear embedding (a distilled student's) exports as
/// Conv-4 then Gemm: candle, tract and onnxruntime agree in f32, and the int8
/// form (f32 embedding on the dequantized features) stays close.
#[test]
fn a_linear_embedding_exports_and_agrees_across_runtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint_embedding(tmp.path(), 6, 8, 20, Some(24));
    let onnx = tmp.path().join("tiny.onnx");
    export_f32(&weights, &onnx).unwrap();
    let candle = CandleEmbedder::load(&weights).unwrap();
    let device = OnnxEncoder::load(&onnx).unwrap();
    assert_eq!((candle.dim(), device.dim()), (24, 24));
    let r = device.recipe();
    let inputs = sanskrit(&r, 4);
    let (rows, _) = onnxruntime(&onnx, &inputs, &r);
    let (mut worst_candle, mut worst_rt) = (0.0f32, 0.0f64);
    for (got, input) in rows.iter().zip(&inputs) {
        let tract = device.embed(input).unwrap();
        let exact = candle.embed(input).unwrap();
        for ((g, t), c) in got.iter().zip(&tract).zip(&exact) {
            worst_candle = worst_candle.max((t - c).abs());
            worst_rt = worst_rt.max((g - f64::from(*t)).abs());
        }
    }
    assert!(worst_candle <= 1e-4, "candle vs tract {worst_candle}");
    assert!(worst_rt <= 1e-5, "onnxruntime vs tract {worst_rt}");

    let int8 = tmp.path().join("tiny-int8.onnx");
    let calibration = data_dir().join("omniglot/images_background_small1/Greek");
    let options = Int8Options {
        images: 200,
        form: Int8Form::ConvInteger,
        ..Int8Options::DEFAULT
    };
    export_int8(&weights, &int8, Some(&calibration), options).unwrap();
    let quantized = OnnxEncoder::load(&int8).unwrap();
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for input in &inputs {
        for (q, e) in quantized
            .embed(input)
            .unwrap()
            .iter()
            .zip(device.embed(input).unwrap())
        {
            err += f64::from(q - e).powi(2);
            norm += f64::from(e).powi(2);
        }
    }
    assert!(
        (err / norm).sqrt() < 0.05,
        "int8 is {:.3} off f32",
        (err / norm).sqrt()
    );
    // onnxruntime runs the int8 head (per-row DequantizeLinear) as tract does.
    let (rows, _) = onnxruntime(&int8, &inputs, &r);
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (got, input) in rows.iter().zip(&inputs) {
        for (g, t) in got.iter().zip(quantized.embed(input).unwrap()) {
            diff += (g - f64::from(t)).powi(2);
            norm += f64::from(t).powi(2);
        }
    }
    eprintln!(
        "int8 head: onnxruntime vs tract relative {:.2e}",
        (diff / norm).sqrt()
    );
    assert!(
        (diff / norm).sqrt() < 1e-3,
        "onnxruntime vs tract on the int8 head"
    );
}

/// Int8 exports in both forms: tract and onnxruntime agree within one
/// quantization step of the last block, and both stay close to the f32 model.
#[test]
fn int8_exports_agree_across_runtimes_and_with_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint(tmp.path(), 6, 8, 20);
    let f32_model = tmp.path().join("tiny.onnx");
    export_f32(&weights, &f32_model).unwrap();
    let reference = OnnxEncoder::load(&f32_model).unwrap();
    let r = reference.recipe();
    let calibration = data_dir().join("omniglot/images_background_small1/Greek");
    let inputs = sanskrit(&r, 6);
    for form in [Int8Form::Qlinear, Int8Form::ConvInteger] {
        let path = tmp.path().join(format!("tiny-{form:?}.onnx"));
        let options = Int8Options {
            images: 200,
            form,
            percentile: 100.0,
        };
        let done = export_int8(&weights, &path, Some(&calibration), options).unwrap();
        let ranges = done.ranges.expect("calibrated ranges");
        assert_eq!(ranges.images, 200);
        let device = OnnxEncoder::load(&path).unwrap();
        assert_eq!(device.metadata()["fewshot.weights"], "int8");
        assert!(device.metadata().contains_key("fewshot.quantization"));
        // One step of the last block's uint8 output.
        let step = f64::from(ranges.blocks[3]) / 255.0;
        let (rows, _) = onnxruntime(&path, &inputs, &r);
        let (mut worst_rt, mut err, mut norm) = (0.0f64, 0.0f64, 0.0f64);
        for (got, input) in rows.iter().zip(&inputs) {
            let tract = device.embed(input).unwrap();
            let exact = reference.embed(input).unwrap();
            for ((g, t), e) in got.iter().zip(&tract).zip(&exact) {
                worst_rt = worst_rt.max((g - f64::from(*t)).abs());
                err += (f64::from(*t) - f64::from(*e)).powi(2);
                norm += f64::from(*e).powi(2);
            }
        }
        eprintln!(
            "{form:?}: onnxruntime vs tract {:.3} steps; relative error vs f32 {:.4}",
            worst_rt / step,
            (err / norm).sqrt()
        );
        assert!(
            worst_rt <= step * 1.0001,
            "{form:?}: onnxruntime and tract differ by {worst_rt} > one step {step}"
        );
        assert!(
            (err / norm).sqrt() < 0.05,
            "{form:?}: int8 embeddings are {:.3} off the f32 ones (relative L2)",
            (err / norm).sqrt()
        );
    }
}

/// The initialisers of an ONNX file by name.
fn initializers(path: &Path) -> std::collections::HashMap<String, tract_onnx::pb::TensorProto> {
    let proto = tract_onnx::pb::ModelProto::decode(&std::fs::read(path).unwrap()[..]).unwrap();
    proto
        .graph
        .unwrap()
        .initializer
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect()
}

fn f32_values(t: &tract_onnx::pb::TensorProto) -> Vec<f32> {
    t.raw_data
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The `weight-only` form (the default): no calibration; the file stores every
/// convolution's and the head's weights as int8 with one scale per output
/// channel (each weight within half a step of the f32 export's, the largest at
/// ±127), the rest in f32; tract and onnxruntime compute the same f32
/// arithmetic on the dequantized weights, close to the f32 model.
#[test]
fn weight_only_int8_stores_int8_weights_and_computes_in_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint_embedding(tmp.path(), 6, 8, 20, Some(16));
    let f32_model = tmp.path().join("tiny.onnx");
    export_f32(&weights, &f32_model).unwrap();
    let path = tmp.path().join("tiny-weight-only.onnx");
    let done = export_int8(&weights, &path, None, Int8Options::DEFAULT).unwrap();
    assert!(done.ranges.is_none(), "weight-only takes no calibration");
    let err = export_int8(
        &weights,
        &tmp.path().join("x.onnx"),
        None,
        Int8Options {
            form: Int8Form::ConvInteger,
            ..Int8Options::DEFAULT
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("needs calibration"), "{err}");

    let exact = initializers(&f32_model);
    let quant = initializers(&path);
    let blocks = (0..4).map(|b| format!("block{b}.weight"));
    for name in blocks.chain(["embed.weight".to_string()]) {
        let w = f32_values(&exact[&name]);
        let q = &quant[&format!("{name}.q")];
        assert_eq!(
            q.data_type,
            tract_onnx::pb::tensor_proto::DataType::Int8 as i32
        );
        let scales = f32_values(&quant[&format!("{name}.scale")]);
        let per = w.len() / scales.len();
        for (c, (row, qrow)) in w.chunks(per).zip(q.raw_data.chunks(per)).enumerate() {
            let s = f64::from(scales[c]);
            let max = row.iter().fold(0.0f64, |m, v| m.max(f64::from(*v).abs()));
            assert!(
                (s * 127.0 - max).abs() <= 1e-6 * max,
                "{name} channel {c}: scale {s}, max {max}"
            );
            let mut widest = 0;
            for (v, &b) in row.iter().zip(qrow) {
                let q = i32::from(b as i8);
                widest = widest.max(q.abs());
                assert!(
                    (f64::from(*v) - s * f64::from(q)).abs() <= s * 0.5 + 1e-9,
                    "{name} channel {c}: {v} stored as {q} × {s}"
                );
            }
            assert_eq!(widest, 127, "{name} channel {c} uses the full range");
        }
        assert!(!quant.contains_key(&name), "{name} is not stored in f32");
    }

    let reference = OnnxEncoder::load(&f32_model).unwrap();
    let device = OnnxEncoder::load(&path).unwrap();
    assert_eq!(device.metadata()["fewshot.weights"], "int8");
    assert!(device.metadata()["fewshot.quantization"].contains("weight-only"));
    let r = reference.recipe();
    let inputs = sanskrit(&r, 6);
    let (rows, _) = onnxruntime(&path, &inputs, &r);
    let (mut rt, mut err, mut norm) = (0.0f64, 0.0f64, 0.0f64);
    for (got, input) in rows.iter().zip(&inputs) {
        let tract = device.embed(input).unwrap();
        let exact = reference.embed(input).unwrap();
        for ((g, t), e) in got.iter().zip(&tract).zip(&exact) {
            rt += (g - f64::from(*t)).powi(2);
            err += (f64::from(*t) - f64::from(*e)).powi(2);
            norm += f64::from(*e).powi(2);
        }
    }
    let (rt, err) = ((rt / norm).sqrt(), (err / norm).sqrt());
    eprintln!("weight-only: onnxruntime vs tract relative {rt:.2e}; vs f32 {err:.4}");
    assert!(
        rt < 1e-5,
        "onnxruntime vs tract: {rt} (both compute in f32)"
    );
    assert!(err < 0.02, "weight-only is {err} off the f32 model");
}

/// `--threshold-far`: the stored threshold accepts at most the target share of
/// impostor pairs (counted here independently, in f64, with the device's
/// embeddings), and no larger cut-off would.
#[test]
fn calibrated_threshold_meets_its_false_accept_rate() {
    use fewshot_host::export::threshold::{calibrate, set_metadata};
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint(tmp.path(), 6, 8, 20);
    let onnx = tmp.path().join("tiny.onnx");
    export_f32(&weights, &onnx).unwrap();
    let data = data_dir().join("omniglot/images_background_small2/Tagalog");
    let target = 0.01;
    let cal = calibrate(&onnx, &data, target).unwrap();
    set_metadata(
        &onnx,
        &[
            ("fewshot.threshold", cal.threshold.to_string()),
            (
                "fewshot.threshold_calibration",
                serde_json::to_string(&cal).unwrap(),
            ),
        ],
    )
    .unwrap();
    let device = OnnxEncoder::load(&onnx).unwrap();
    assert_eq!(device.threshold(), Some(cal.threshold));

    let r = device.recipe();
    let mut rows = Vec::new();
    for (c, class) in fewshot_host::data::ClassSet::load(&data, fewshot_host::data::Layout::Auto)
        .unwrap()
        .classes
        .iter()
        .enumerate()
    {
        for p in &class.images {
            rows.push((c, device.embed(&preprocess_file(p, &r).unwrap()).unwrap()));
        }
    }
    let l2 = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum()
    };
    let mut impostor = Vec::new();
    for i in 0..rows.len() {
        for j in i + 1..rows.len() {
            if rows[i].0 != rows[j].0 {
                impostor.push(l2(&rows[i].1, &rows[j].1));
            }
        }
    }
    assert_eq!(impostor.len(), cal.impostor_pairs);
    impostor.sort_by(f64::total_cmp);
    let t = f64::from(cal.threshold);
    let accepted = impostor.iter().filter(|d| **d <= t * (1.0 + 1e-6)).count();
    let far = accepted as f64 / impostor.len() as f64;
    assert!(far <= target, "FAR {far} above the target {target}");
    assert!(
        (far - cal.far).abs() < 1e-3,
        "FAR {far} vs reported {}",
        cal.far
    );
    // One more impostor accepted would break the target.
    assert!((accepted + 1) as f64 / impostor.len() as f64 > target || accepted == impostor.len());
}

/// The first two photos of two LFW people, preprocessed with `r`.
fn lfw_faces(r: &Recipe) -> Vec<Vec<f32>> {
    let lfw = data_dir().join("faces/lfw-devtrain");
    let inputs: Vec<Vec<f32>> = ["Aaron_Peirsol", "Abdoulaye_Wade"]
        .iter()
        .flat_map(|name| {
            let mut files: Vec<_> = std::fs::read_dir(lfw.join(name))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            files.truncate(2);
            files
        })
        .map(|p| preprocess_file(&p, r).unwrap())
        .collect();
    assert_eq!(inputs.len(), 4);
    inputs
}

/// The committed face files (`face.onnx`, `face-int8.onnx`, the distilled
/// student): int8 embeddings point where the f32 ones do on real faces (the
/// mirror-averaged embeddings the door uses), and each file carries its pair
/// threshold and gallery thresholds up to the door of 272.
#[test]
fn the_committed_face_files_int8_follows_f32_and_both_carry_the_door_thresholds() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("FEWSHOT_CACHE", cache.path());
    std::env::set_var("FEWSHOT_DATA", data_dir());
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let f32_model = OnnxEncoder::load(&models.join("face.onnx")).unwrap();
    let int8_model = OnnxEncoder::load(&models.join("face-int8.onnx")).unwrap();
    let r = f32_model.recipe();
    assert_eq!(int8_model.recipe(), r);
    assert!(f32_model.flip_average() && int8_model.flip_average());
    for (e, i) in lfw_faces(&r)
        .iter()
        .map(|x| (f32_model.embed(x).unwrap(), int8_model.embed(x).unwrap()))
    {
        let (mut dot, mut ne, mut ni) = (0.0f64, 0.0f64, 0.0f64);
        for (a, b) in e.iter().zip(&i) {
            let (a, b) = (f64::from(*a), f64::from(*b));
            dot += a * b;
            ne += a * a;
            ni += b * b;
        }
        let cosine_distance = 1.0 - dot / (ne.sqrt() * ni.sqrt());
        eprintln!("face int8 vs f32: cosine distance {cosine_distance:.5}");
        // A property of the committed files, not of the export code: over the
        // 2 732 faces of the held-out folders (`runs/hold/door-272`,
        // `runs/face-val`) the int8 file moves an embedding by a cosine
        // distance of mean 0.002, at most 0.009 (`--example student_fit --
        // models/face-int8.onnx --against models/face.onnx ...`).
        assert!(
            cosine_distance < 0.01,
            "int8 embedding {cosine_distance} (cosine distance) from f32"
        );
    }
    let (a, b) = (
        f32_model.door_config(None).unwrap(),
        int8_model.door_config(None).unwrap(),
    );
    for (model, door) in [(&f32_model, &a), (&int8_model, &b)] {
        let stored: f32 = model.metadata()["fewshot.threshold"].parse().unwrap();
        assert_eq!(model.threshold(), Some(stored));
        assert_eq!(door.threshold, stored);
        let sizes: Vec<usize> = door
            .gallery_thresholds
            .as_ref()
            .expect("gallery thresholds")
            .points()
            .map(|p| p.0)
            .collect();
        assert_eq!(sizes, vec![10, 50, 65, 272]);
    }
}

/// The committed aligned face models: onnxruntime agrees with tract on aligned
/// LFW faces (to 1e-4 of the largest value; for a flip-averaged file, the mean
/// of onnxruntime's embeddings of the face and its mirror image), each recipe
/// aligns, and each file carries the threshold the door takes.
#[test]
fn the_committed_aligned_face_models_agree_across_runtimes() {
    let cache = tempfile::tempdir().unwrap();
    // Before the first aligned image of this process: faces go to a fresh cache.
    std::env::set_var("FEWSHOT_CACHE", cache.path());
    std::env::set_var("FEWSHOT_DATA", data_dir());
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    for name in [
        "face.onnx",
        "face-int8.onnx",
        "face-aligned.onnx",
        "face-distilled.onnx",
        "face-distilled-int8.onnx",
        "face-distilled-wide.onnx",
        "face-distilled-wide-int8.onnx",
    ] {
        let path = models.join(name);
        let model = OnnxEncoder::load(&path).unwrap();
        let r = model.recipe();
        assert!(r.needs_landmarks(), "{name}: {r:?}");
        let inputs = lfw_faces(&r);
        let exact: Vec<Vec<f32>> = inputs.iter().map(|x| model.embed(x).unwrap()).collect();
        let largest = exact.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
        let (mut rows, _) = onnxruntime(&path, &inputs, &r);
        if model.flip_average() {
            // The file's graph embeds one image; the device averages it with
            // the mirror image's embedding.
            let mirrors: Vec<Vec<f32>> = inputs
                .iter()
                .map(|x| {
                    x.chunks(r.width)
                        .flat_map(|row| row.iter().rev().copied())
                        .collect()
                })
                .collect();
            let (mirrored, _) = onnxruntime(&path, &mirrors, &r);
            for (row, m) in rows.iter_mut().zip(&mirrored) {
                for (v, w) in row.iter_mut().zip(m) {
                    *v = (*v + w) / 2.0;
                }
            }
        }
        let (mut worst, mut diff, mut norm) = (0.0f64, 0.0f64, 0.0f64);
        for (got, want) in rows.iter().zip(&exact) {
            for (g, w) in got.iter().zip(want) {
                worst = worst.max((g - f64::from(*w)).abs());
                diff += (g - f64::from(*w)).powi(2);
                norm += f64::from(*w).powi(2);
            }
        }
        eprintln!(
            "{name}: onnxruntime vs tract max {worst:.2e}, relative {:.2e}",
            (diff / norm).sqrt()
        );
        // All compute in f32 (the int8 files are the `weight-only` form).
        assert!(
            worst <= 1e-4 * f64::from(largest),
            "{name}: onnxruntime vs tract {worst} (relative {:.2e})",
            (diff / norm).sqrt()
        );
        let stored: f32 = model.metadata()["fewshot.threshold"].parse().unwrap();
        let door = model.door_config(None).unwrap();
        assert_eq!(door.threshold, stored);
        assert_eq!(model.distance(), fewshot_core::Distance::Cosine);
        if name != "face-aligned.onnx" {
            let gallery = door.gallery_thresholds.expect("gallery thresholds");
            let sizes = if name.starts_with("face-distilled") {
                vec![10, 50, 65]
            } else {
                vec![10, 50, 65, 272]
            };
            assert_eq!(gallery.points().map(|p| p.0).collect::<Vec<_>>(), sizes);
            assert_eq!(model.dim(), 192);
        }
    }
}

/// `--gallery-far`: for a gallery of every enrollable person, the stored
/// threshold lets in at most the target share of stranger probes (counted
/// here independently, in f64, with the device's embeddings); the device reads
/// the thresholds back and the door takes them unless given a threshold.
#[test]
fn gallery_thresholds_meet_their_false_accept_rate_and_reach_the_door() {
    use fewshot_host::export::threshold::{calibrate_gallery, set_metadata};
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint(tmp.path(), 6, 8, 20);
    let onnx = tmp.path().join("tiny.onnx");
    export_f32(&weights, &onnx).unwrap();
    // Ten characters enrolled (20 images each), six strangers (2 images each).
    let tagalog = data_dir().join("omniglot/images_background_small2/Tagalog");
    let people = tmp.path().join("people");
    let mut chars: Vec<_> = std::fs::read_dir(&tagalog)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    chars.sort();
    for (i, c) in chars.iter().take(16).enumerate() {
        let to = people.join(c.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        let mut images: Vec<_> = std::fs::read_dir(c)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        images.sort();
        for p in images.iter().take(if i < 10 { 20 } else { 2 }) {
            std::os::unix::fs::symlink(p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    let target = 0.05;
    let points = calibrate_gallery(&onnx, &people, target, &[4, 10], 2, &weights).unwrap();
    assert_eq!(
        points.iter().map(|p| p.gallery).collect::<Vec<_>>(),
        vec![4, 10]
    );
    assert_eq!((points[0].trials, points[1].trials), (20, 1));
    let full = &points[1];

    // Independently: prototypes of the first two images, nearest distances.
    let device = OnnxEncoder::load(&onnx).unwrap();
    let r = device.recipe();
    let embed = |p: &Path| -> Vec<f64> {
        let e = device.embed(&preprocess_file(p, &r).unwrap()).unwrap();
        e.iter().map(|&v| f64::from(v)).collect()
    };
    let set =
        fewshot_host::data::ClassSet::load(&people, fewshot_host::data::Layout::Flat).unwrap();
    let mut protos = Vec::new();
    let (mut genuine, mut strangers) = (Vec::new(), Vec::new());
    for class in &set.classes {
        if class.images.len() >= 3 {
            let (a, b) = (embed(&class.images[0]), embed(&class.images[1]));
            protos.push(
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| (x + y) / 2.0)
                    .collect::<Vec<f64>>(),
            );
        }
    }
    let nearest = |e: &[f64]| -> (usize, f64) {
        protos
            .iter()
            .map(|p| p.iter().zip(e).map(|(x, y)| (x - y).powi(2)).sum::<f64>())
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
    };
    let mut id = 0;
    for class in &set.classes {
        if class.images.len() >= 3 {
            for p in &class.images[2..] {
                let (i, d) = nearest(&embed(p));
                genuine.push((i == id, d));
            }
            id += 1;
        } else {
            strangers.extend(class.images.iter().map(|p| nearest(&embed(p)).1));
        }
    }
    assert_eq!(full.stranger_probes, strangers.len());
    let t = f64::from(full.threshold) * (1.0 + 1e-6);
    let far = strangers.iter().filter(|d| **d <= t).count() as f64 / strangers.len() as f64;
    let tar = genuine.iter().filter(|(ok, d)| *ok && *d <= t).count() as f64 / genuine.len() as f64;
    assert!(far <= target, "FAR {far} above the target {target}");
    assert!(
        (far - full.far).abs() < 1e-9 && (tar - full.tar).abs() < 1e-3,
        "{far} {tar} vs {full:?}"
    );

    // Stored, read back by the device, taken by the door unless overridden.
    set_metadata(
        &onnx,
        &[(
            "fewshot.gallery_thresholds",
            serde_json::to_string(&points).unwrap(),
        )],
    )
    .unwrap();
    let device = OnnxEncoder::load(&onnx).unwrap();
    let stored = device.gallery_thresholds().unwrap();
    assert_eq!(
        stored.points().collect::<Vec<_>>(),
        vec![(4, points[0].threshold), (10, points[1].threshold)]
    );
    let given = device.door_config(Some(1.0)).unwrap();
    assert_eq!((given.threshold, given.gallery_thresholds), (1.0, None));
    // With a pair threshold stored too, the door takes both (the pair one
    // for enrollment agreement).
    set_metadata(&onnx, &[("fewshot.threshold", "0.5".into())]).unwrap();
    let config = OnnxEncoder::load(&onnx).unwrap().door_config(None).unwrap();
    assert_eq!(config.gallery_thresholds, Some(stored));
    assert_eq!(config.threshold, 0.5);

    // Malformed thresholds are refused by name.
    set_metadata(
        &onnx,
        &[(
            "fewshot.gallery_thresholds",
            r#"[{"gallery": 5, "threshold": 0.1}, {"gallery": 3, "threshold": 0.2}]"#.into(),
        )],
    )
    .unwrap();
    let err = OnnxEncoder::load(&onnx).err().unwrap().to_string();
    assert!(
        err.contains("fewshot.gallery_thresholds") && err.contains("increasing"),
        "{err}"
    );
}

/// `--flip-average`: the device's embedding is the mean of the plain model's
/// embeddings of the input and of its mirror image; a bad flag is named.
#[test]
fn flip_averaged_embeddings_are_the_mean_of_image_and_mirror() {
    use fewshot_host::export::threshold::set_metadata;
    let tmp = tempfile::tempdir().unwrap();
    let weights = tiny_checkpoint(tmp.path(), 6, 8, 20);
    let plain_path = tmp.path().join("plain.onnx");
    let flip_path = tmp.path().join("flip.onnx");
    export_f32(&weights, &plain_path).unwrap();
    export_f32(&weights, &flip_path).unwrap();
    set_metadata(&flip_path, &[("fewshot.flip_average", "true".into())]).unwrap();
    let plain = OnnxEncoder::load(&plain_path).unwrap();
    let flip = OnnxEncoder::load(&flip_path).unwrap();
    assert!(flip.flip_average() && !plain.flip_average());
    let r = plain.recipe();
    for input in sanskrit(&r, 3) {
        let mirror: Vec<f32> = input
            .chunks(r.width)
            .flat_map(|row| row.iter().rev().copied())
            .collect();
        let (a, b) = (plain.embed(&input).unwrap(), plain.embed(&mirror).unwrap());
        let got = flip.embed(&input).unwrap();
        for ((g, x), y) in got.iter().zip(&a).zip(&b) {
            assert!(
                (g - (x + y) / 2.0).abs() <= 1e-5 * (1.0 + g.abs()),
                "{g} vs {x} {y}"
            );
        }
        assert_ne!(a, b, "the mirror image embeds differently");
    }
    set_metadata(&flip_path, &[("fewshot.flip_average", "yes".into())]).unwrap();
    let err = OnnxEncoder::load(&flip_path).err().unwrap().to_string();
    assert!(err.contains("fewshot.flip_average"), "{err}");
}

/// Exports `weights` to f32 ONNX at `onnx` and checks that tract and
/// onnxruntime give candle's `dim`-d embeddings of a few Sanskrit
/// characters; returns the loaded model and those inputs.
fn f32_export_agrees(weights: &Path, onnx: &Path, dim: usize) -> (OnnxEncoder, Vec<Vec<f32>>) {
    export_f32(weights, onnx).unwrap();
    agrees_with_checkpoint(weights, onnx, dim)
}

/// The f32 ONNX file `onnx` gives the checkpoint `weights`' `dim`-d
/// embeddings in tract and onnxruntime; returns it loaded and the inputs.
fn agrees_with_checkpoint(weights: &Path, onnx: &Path, dim: usize) -> (OnnxEncoder, Vec<Vec<f32>>) {
    let candle = CandleEmbedder::load(weights).unwrap();
    let device = OnnxEncoder::load(onnx).unwrap();
    assert_eq!((candle.dim(), device.dim()), (dim, dim));
    let r = device.recipe();
    let inputs = sanskrit(&r, 4);
    let (rows, _) = onnxruntime(onnx, &inputs, &r);
    let (mut worst_candle, mut worst_rt, mut scale) = (0.0f32, 0.0f64, 0.0f32);
    for (got, input) in rows.iter().zip(&inputs) {
        let tract = device.embed(input).unwrap();
        let exact = candle.embed(input).unwrap();
        for ((g, t), c) in got.iter().zip(&tract).zip(&exact) {
            worst_candle = worst_candle.max((t - c).abs());
            worst_rt = worst_rt.max((g - f64::from(*t)).abs());
            scale = scale.max(c.abs());
        }
    }
    assert!(scale > 0.1, "embeddings are not all near zero ({scale})");
    assert!(
        worst_candle <= 1e-4 * scale.max(1.0),
        "candle vs tract {worst_candle}"
    );
    assert!(
        worst_rt <= 1e-5 * f64::from(scale.max(1.0)),
        "onnxruntime vs tract {worst_rt}"
    );
    (device, inputs)
}

/// Relative L2 distance of `quantized`'s embeddings of `inputs` from `exact`'s.
fn relative_off(quantized: &OnnxEncoder, exact: &OnnxEncoder, inputs: &[Vec<f32>]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for input in inputs {
        let q = quantized.embed(input).unwrap();
        for (a, b) in q.iter().zip(exact.embed(input).unwrap()) {
            err += f64::from(a - b).powi(2);
            norm += f64::from(b).powi(2);
        }
    }
    (err / norm).sqrt()
}

/// The MobileFaceNet-style encoder (depthwise and pointwise convolutions, skip
/// connections, the global depthwise convolution, the embedding's batch norm)
/// exports with every batch norm folded: tract and onnxruntime give candle's
/// embeddings; the weight-only int8 file stays close; the forms that quantize
/// activations refuse it by name.
#[test]
fn the_mobile_encoder_exports_and_agrees_across_runtimes() {
    use fewshot_e2e::tiny_checkpoint_with;
    use fewshot_host::nn::encoder::EncoderConfig;
    let tmp = tempfile::tempdir().unwrap();
    let encoder = EncoderConfig::Mobile {
        in_channels: 1,
        width: 8,
        input_size: 32,
        embedding: 12,
    };
    let recipe = Recipe {
        width: 32,
        height: 32,
        ..Recipe::OMNIGLOT_28
    };
    let weights = tiny_checkpoint_with(tmp.path(), 6, encoder, recipe, 20);
    let (device, inputs) = f32_export_agrees(&weights, &tmp.path().join("mobile.onnx"), 12);
    let r = device.recipe();
    assert_eq!((r.width, r.channels), (32, 1));

    let int8 = tmp.path().join("mobile-int8.onnx");
    export_int8(&weights, &int8, None, Int8Options::DEFAULT).unwrap();
    let quantized = OnnxEncoder::load(&int8).unwrap();
    assert_eq!(quantized.metadata()["fewshot.weights"], "int8");
    let rel = relative_off(&quantized, &device, &inputs);
    eprintln!("mobile weight-only int8 vs f32: relative {rel:.4}");
    assert!(rel < 0.05, "weight-only int8 is {rel} off f32");
    let quant = initializers(&int8);
    for name in [
        "stem_dw.w",
        "stage0.0.expand.w",
        "stage2.3.dw.w",
        "gdc.w",
        "embed.w",
    ] {
        assert_eq!(
            quant[&format!("{name}.q")].data_type,
            tract_onnx::pb::tensor_proto::DataType::Int8 as i32,
            "{name}"
        );
        assert!(!quant.contains_key(name), "{name} is not stored in f32");
    }
    let refused = export_int8(
        &weights,
        &tmp.path().join("x.onnx"),
        Some(&data_dir().join("omniglot/images_background_small1/Greek")),
        Int8Options {
            form: Int8Form::ConvInteger,
            ..Int8Options::DEFAULT
        },
    )
    .unwrap_err();
    assert!(refused.to_string().contains("Conv-4 only"), "{refused}");
}

/// A tiny trained Conv-4 of widths 4, 6, 8, 12, `depths` convolutions a
/// block and a 10-d linear embedding, whose f32 export gives candle's
/// embeddings in tract and onnxruntime and whose weight-only int8 export
/// stays within 5 % of it. Returns the checkpoint and its stored tensors.
fn several_widths_exported(
    dir: &Path,
    depths: Option<[usize; 4]>,
) -> (
    PathBuf,
    std::collections::HashMap<String, candle_core::Tensor>,
) {
    use fewshot_e2e::tiny_checkpoint_with;
    use fewshot_host::nn::encoder::EncoderConfig;
    let encoder = EncoderConfig::Conv4 {
        in_channels: 1,
        hidden: 4,
        widths: Some([4, 6, 8, 12]),
        depths,
        input_size: 28,
        embedding: Some(10),
    };
    let weights = tiny_checkpoint_with(dir, 6, encoder, Recipe::OMNIGLOT_28, 20);
    let stored = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    let (device, inputs) = f32_export_agrees(&weights, &dir.join("wide.onnx"), 10);
    let int8 = dir.join("wide-int8.onnx");
    export_int8(&weights, &int8, None, Int8Options::DEFAULT).unwrap();
    let rel = relative_off(&OnnxEncoder::load(&int8).unwrap(), &device, &inputs);
    assert!(rel < 0.05, "weight-only int8 is {rel} off f32");
    (weights, stored)
}

/// A Conv-4 whose blocks have different widths (`--widths`), with a linear
/// embedding: the f32 export gives candle's embeddings in tract and
/// onnxruntime, the weight-only int8 file stays close, and the core's int8
/// engine runs its blob within a quantization step of tract.
#[test]
fn a_conv4_of_several_widths_exports_to_every_form() {
    use fewshot_host::export::mcu::export_mcu;
    let tmp = tempfile::tempdir().unwrap();
    let (weights, stored) = several_widths_exported(tmp.path(), None);
    assert_eq!(stored["block2.conv.weight"].dims(), &[8, 6, 3, 3]);
    assert_eq!(stored["embed.weight"].dims(), &[10, 12]);

    let blob = tmp.path().join("wide.fsmcu");
    let calibration = data_dir().join("omniglot/images_background_small1/Greek");
    let done = export_mcu(&weights, &blob, &calibration, 100, 100.0, None, 40).unwrap();
    let c = done.check;
    assert!(c.images > 0 && c.activations > 0, "{c:?}");
    assert!(c.max_steps <= 1, "engine vs tract: {c:?}");
    assert!(c.differing * 100 <= c.activations, "engine vs tract: {c:?}");
}

/// A deeper Conv-4 (`--depths`: unpooled convolutions before each block's
/// pooled one) trains, keeps each layer's weights under `block{b}.pre{j}`,
/// exports f32 and weight-only int8 that give candle's embeddings in tract
/// and onnxruntime, and the forms that run one convolution per block refuse
/// it by name.
#[test]
fn a_deeper_conv4_exports_f32_and_weight_only_and_the_block_forms_refuse_it() {
    use fewshot_host::export::int8::Int8Form;
    use fewshot_host::export::mcu::export_mcu;
    let tmp = tempfile::tempdir().unwrap();
    let (weights, stored) = several_widths_exported(tmp.path(), Some([2, 1, 3, 2]));
    for (name, dims) in [
        ("block0.pre0.conv.weight", [4, 1, 3, 3]),
        ("block0.conv.weight", [4, 4, 3, 3]),
        ("block1.conv.weight", [6, 4, 3, 3]),
        ("block2.pre0.conv.weight", [8, 6, 3, 3]),
        ("block2.pre1.conv.weight", [8, 8, 3, 3]),
        ("block2.conv.weight", [8, 8, 3, 3]),
        ("block3.pre0.conv.weight", [12, 8, 3, 3]),
        ("block3.conv.weight", [12, 12, 3, 3]),
    ] {
        assert_eq!(stored[name].dims(), &dims, "{name}");
    }
    assert!(!stored.contains_key("block1.pre0.conv.weight"));
    // Training moved the leading layers' batch norm statistics off their start.
    let mean = stored["block2.pre1.bn.running_mean"]
        .to_vec1::<f32>()
        .unwrap();
    assert!(mean.iter().any(|v| v.abs() > 1e-6), "{mean:?}");

    let calibration = data_dir().join("omniglot/images_background_small1/Greek");
    let options = Int8Options {
        form: Int8Form::ConvInteger,
        ..Int8Options::DEFAULT
    };
    let int8 = tmp.path().join("deep-int8.onnx");
    let refused = export_int8(&weights, &int8, Some(&calibration), options)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(refused.contains("depths [2, 1, 3, 2]"), "{refused}");
    let blob = tmp.path().join("deep.fsmcu");
    let refused = export_mcu(&weights, &blob, &calibration, 100, 100.0, None, 40)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        refused.contains("one convolution per Conv-4 block"),
        "{refused}"
    );
    assert!(!blob.exists());
}

/// A MAML checkpoint exports its encoder alone (batch norm folded from the
/// running statistics that meta-training keeps): tract and onnxruntime give
/// candle's embeddings, as for any Conv-4; the door uses it through
/// prototypes.
#[test]
fn a_maml_checkpoint_exports_its_encoder_and_agrees_across_runtimes() {
    use fewshot_host::nn::maml::MamlConfig;
    let tmp = tempfile::tempdir().unwrap();
    let maml = MamlConfig {
        order: 1,
        inner_steps: 1,
        inner_steps_test: 1,
        inner_lr: 0.4,
        meta_batch: 2,
        zero_head: false,
    };
    let weights = fewshot_e2e::tiny_checkpoint_by(tmp.path(), 6, 8, 10, Method::Maml(maml));
    let stored = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    assert_eq!(
        stored["head.weight"].dims(),
        &[5, 8],
        "the checkpoint holds the 5-way head"
    );
    let (device, _) = f32_export_agrees(&weights, &tmp.path().join("maml.onnx"), 8);
    assert_eq!(device.distance(), fewshot_core::Distance::L2);
}

/// The committed 128-channel Omniglot files: the f32 export gives its
/// checkpoint's embeddings in tract and onnxruntime, the `weight-only` int8
/// file stays close, and both carry the pair and gallery thresholds the door
/// takes.
#[test]
fn the_committed_128_channel_omniglot_files_agree_and_carry_thresholds() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let weights = models.join("omniglot-protonet-128.safetensors");
    let f32_path = models.join("omniglot-protonet-128.onnx");
    let (device, inputs) = agrees_with_checkpoint(&weights, &f32_path, 128);
    let int8 = OnnxEncoder::load(&models.join("omniglot-protonet-128-int8.onnx")).unwrap();
    let rel = relative_off(&int8, &device, &inputs);
    assert!(rel < 0.02, "weight-only int8 is {rel} off f32");
    for model in [&device, &int8] {
        let pair = model.threshold().expect("a pair threshold");
        let config = model.door_config(None).unwrap();
        assert_eq!(config.threshold, pair);
        let gallery = model.gallery_thresholds().expect("gallery thresholds");
        // Larger doors need stricter (smaller l2) thresholds, all below the pair's.
        let by_size: Vec<f32> = [1, 2, 5, 10, 50].map(|n| gallery.for_gallery(n)).to_vec();
        assert!(by_size.windows(2).all(|w| w[1] < w[0]), "{by_size:?}");
        assert!(by_size[0] < pair, "{by_size:?} against the pair's {pair}");
    }
}
