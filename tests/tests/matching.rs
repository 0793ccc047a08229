//! A Matching Network's full context embeddings exported to ONNX: tract (the
//! device's runtime) and onnxruntime run the two graphs and agree with candle.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fewshot_core::Recipe;
use fewshot_host::export::fce;
use fewshot_host::nn::checkpoint::{self, load_matching_head, ModelConfig};
use fewshot_host::nn::encoder::EncoderConfig;
use fewshot_host::nn::init::seeded_init;
use fewshot_host::nn::matching::{FceConfig, MatchingConfig, MatchingHead};
use tract_onnx::prelude::*;

const D: usize = 8;

/// A seeded (untrained) Conv-4 Matching Network with FCE, saved as a checkpoint.
fn checkpoint(dir: &Path, fce: FceConfig) -> std::path::PathBuf {
    let encoder = EncoderConfig::Conv4 {
        in_channels: 1,
        hidden: D,
        widths: None,
        depths: None,
        input_size: 28,
        embedding: None,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    encoder.build(vb.clone()).unwrap();
    let matching = MatchingConfig {
        fce: Some(fce),
        scale: None,
    };
    MatchingHead::new(matching, fewshot_core::Distance::L2, D, vb.pp("head")).unwrap();
    seeded_init(&varmap, 4).unwrap();
    let path = dir.join("m.safetensors");
    checkpoint::save(
        &path,
        &varmap,
        &ModelConfig {
            format: checkpoint::FORMAT,
            method: "matching".into(),
            encoder,
            recipe: Recipe::OMNIGLOT_28.into(),
            distance: "l2".into(),
            matching: Some(matching),
            maml: None,
            training: serde_json::Value::Null,
        },
    )
    .unwrap();
    path
}

fn rows(n: usize, seed: u32) -> Vec<f32> {
    // A fixed spread of values in about ±2, different per row and column.
    (0..n * D)
        .map(|i| (i as f32 * 0.37 + seed as f32).sin() * 2.0)
        .collect()
}

fn tract_run(model: &Path, inputs: &[(&[f32], usize)]) -> Vec<f32> {
    let mut m = tract_onnx::onnx().model_for_path(model).unwrap();
    for (i, (_, n)) in inputs.iter().enumerate() {
        m.set_input_fact(i, f32::fact([*n, D]).into()).unwrap();
    }
    let plan = m.into_optimized().unwrap().into_runnable().unwrap();
    let tensors: TVec<TValue> = inputs
        .iter()
        .map(|(v, n)| {
            tract_ndarray::Array2::from_shape_vec((*n, D), v.to_vec())
                .unwrap()
                .into_tensor()
                .into()
        })
        .collect();
    let out = plan.run(tensors).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn onnxruntime(model: &Path, inputs: &[(&str, &[f32], usize)]) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![model.display().to_string()];
    for (name, v, n) in inputs {
        let p = dir.path().join(format!("{name}.f32"));
        std::fs::write(
            &p,
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
        args.push(format!("{name}={}:{n}:{D}", p.display()));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx_run.py");
    let python = fewshot_e2e::python();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (run ./test.sh, or set FEWSHOT_PYTHON)"));
    assert!(
        out.status.success(),
        "{} failed with {python} (run ./test.sh, or set FEWSHOT_PYTHON to a Python with onnx, onnxruntime and numpy): {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["output"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn exported_fce_graphs_agree_with_candle_in_tract_and_onnxruntime() {
    for fce_config in [
        FceConfig {
            lstm_layers: 1,
            unrolling_steps: 1,
        },
        FceConfig {
            lstm_layers: 2,
            unrolling_steps: 4,
        },
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = checkpoint(tmp.path(), fce_config);
        let out = tmp.path().join("m.onnx");
        fewshot_host::export::export_f32(&ckpt, &out).unwrap();
        let written = fce::export_beside(&ckpt, &out).unwrap();
        let (support_onnx, query_onnx) = fce::paths(&out);
        assert_eq!(written, vec![support_onnx.clone(), query_onnx.clone()]);

        let head = load_matching_head(&ckpt).unwrap().unwrap();
        let fce = head.fce.as_ref().unwrap();
        let (n, m) = (7, 5);
        let (support, query) = (rows(n, 1), rows(m, 2));
        let t = |v: &[f32], r: usize| Tensor::from_slice(v, (r, D), &Device::Cpu).unwrap();
        let context = fce.support_context(&t(&support, n)).unwrap();
        let attended = fce.query_context(&t(&query, m), &context).unwrap();
        let context: Vec<f32> = context.flatten_all().unwrap().to_vec1().unwrap();
        let attended: Vec<f32> = attended.flatten_all().unwrap().to_vec1().unwrap();

        // The support graph in both runtimes.
        let tract_context = tract_run(&support_onnx, &[(&support, n)]);
        let ort_context = onnxruntime(&support_onnx, &[(fce::SUPPORT, &support, n)]);
        assert!(
            max_diff(&tract_context, &context) < 1e-5,
            "{fce_config:?}: tract {tract_context:?} candle {context:?}"
        );
        assert!(max_diff(&ort_context, &context) < 1e-5, "{fce_config:?}");
        // A reversed support set changes the context (the backward
        // direction really runs backwards: tract, unlike onnxruntime, runs a
        // lone `reverse` node forwards).
        let reversed: Vec<f32> = support.chunks(D).rev().flatten().copied().collect();
        let tract_rev = tract_run(&support_onnx, &[(&reversed, n)]);
        let candle_rev: Vec<f32> = fce
            .support_context(&t(&reversed, n))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(max_diff(&tract_rev, &candle_rev) < 1e-5, "{fce_config:?}");

        // The query graph, fed the candle context.
        let tract_attended = tract_run(&query_onnx, &[(&query, m), (&context, n)]);
        let ort_attended = onnxruntime(
            &query_onnx,
            &[(fce::QUERY, &query, m), (fce::CONTEXT, &context, n)],
        );
        assert!(
            max_diff(&tract_attended, &attended) < 1e-5,
            "{fce_config:?}: tract {tract_attended:?} candle {attended:?}"
        );
        assert!(max_diff(&ort_attended, &attended) < 1e-5, "{fce_config:?}");

        // The encoder export names the head.
        let proto = <tract_onnx::pb::ModelProto as prost::Message>::decode(
            &std::fs::read(&out).unwrap()[..],
        )
        .unwrap();
        let matching = proto
            .metadata_props
            .iter()
            .find(|p| p.key == fewshot_core::model_meta::MATCHING)
            .expect("the encoder names its Matching head");
        let read: MatchingConfig = serde_json::from_str(&matching.value).unwrap();
        assert_eq!(read.fce, Some(fce_config));
    }
}

/// Embedding size (Conv-4 channels) of the door test's model.
const DOOR_DIM: usize = 16;

/// A tiny Matching Network with FCE trained for 300 episodes on 12 Omniglot
/// characters, exported (f32 encoder, FCE graphs beside it) into `dir`:
/// (checkpoint, model).
fn tiny_fce_door_model(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let matching = MatchingConfig {
        fce: Some(FceConfig {
            lstm_layers: 1,
            unrolling_steps: 2,
        }),
        scale: None,
    };
    let ckpt = fewshot_e2e::tiny_checkpoint_by(
        dir,
        12,
        DOOR_DIM,
        300,
        fewshot_e2e::Method::Matching(matching),
    );
    let model = dir.join("tiny.onnx");
    fewshot_host::export::export_f32(&ckpt, &model).unwrap();
    fce::export_beside(&ckpt, &model).unwrap();
    (ckpt, model)
}

/// The door with a trained (tiny) Matching Network with FCE: it loads the
/// graphs beside the model, enrolls two people, opens for each with the
/// distance of the frame attended over the gallery to the nearest context
/// embedding (recomputed from the device's own FCE graphs here, independently
/// of the door's bookkeeping), refuses strangers beyond the threshold, and
/// recomputes the context when someone is deleted.
#[test]
fn the_door_runs_a_matching_network_with_fce() {
    use fewshot_firmware::camera::load_image;
    use fewshot_firmware::door::Config;
    use fewshot_firmware::encoder::OnnxEncoder;
    use fewshot_firmware::events::{Event, Recorder};
    use fewshot_firmware::sim::{Command, Simulator};
    use fewshot_firmware::storage::FileStore;

    let tmp = tempfile::tempdir().unwrap();
    let (_, model) = tiny_fce_door_model(tmp.path());

    let probe = OnnxEncoder::load(&model).unwrap();
    let graphs = probe.fce().expect("the encoder finds its FCE graphs");
    let distance = probe.distance();
    let embed = |p: &std::path::Path| {
        let f = load_image(p).unwrap();
        probe.embed_frame(&f.as_frame().unwrap()).unwrap()
    };
    let people = [1u32, 2];
    let prototypes: Vec<f32> = people
        .iter()
        .flat_map(|&c| {
            let (a, b) = (
                embed(&fewshot_e2e::tagalog(c, 1)),
                embed(&fewshot_e2e::tagalog(c, 2)),
            );
            a.iter()
                .zip(&b)
                .map(|(x, y)| (x + y) / 2.0)
                .collect::<Vec<_>>()
        })
        .collect();
    let context = graphs.context(&prototypes).unwrap();
    // The door's score of a frame: the attended embedding's distance to
    // each person's context embedding.
    let scores = |p: &std::path::Path| -> Vec<f32> {
        let f = graphs.attend(&embed(p), &context).unwrap();
        context
            .chunks(DOOR_DIM)
            .map(|g| distance.between(&f, g))
            .collect()
    };
    let genuine: Vec<Vec<f32>> = people
        .iter()
        .map(|&c| scores(&fewshot_e2e::tagalog(c, 3)))
        .collect();
    for (k, s) in genuine.iter().enumerate() {
        assert!(
            s[k] < s[1 - k],
            "person {k}'s third image is nearest to them: {s:?}"
        );
    }
    let threshold = genuine
        .iter()
        .enumerate()
        .map(|(k, s)| s[k])
        .fold(0.0f32, f32::max)
        * 1.01;
    let strangers: Vec<f32> = (3u32..=10)
        .map(|c| {
            scores(&fewshot_e2e::tagalog(c, 1))
                .into_iter()
                .fold(f32::INFINITY, f32::min)
        })
        .collect();
    eprintln!("threshold {threshold}, strangers' nearest {strangers:?}");

    let events = Recorder::new();
    let mut sim = Simulator::<DOOR_DIM, _, _, _>::boot(
        OnnxEncoder::load(&model).unwrap(),
        FileStore::open(tmp.path().join("door.fsgl")),
        events.clone(),
        Config {
            max_rejections: u32::MAX,
            // The raw shots' spread is not in the attended space: off here.
            enroll_spread: Some(f32::MAX),
            ..Config::new(distance, threshold)
        },
    )
    .unwrap();
    let mut ids = Vec::new();
    for &c in &people {
        sim.step(&Command::Press(200)).unwrap();
        sim.step(&Command::Frame(fewshot_e2e::tagalog(c, 1)))
            .unwrap();
        sim.step(&Command::Frame(fewshot_e2e::tagalog(c, 2)))
            .unwrap();
        let enrolled: Vec<u32> = events
            .take()
            .into_iter()
            .filter_map(|e| match e {
                Event::Enrolled { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(enrolled.len(), 1, "character {c} enrolled once");
        ids.push(enrolled[0]);
    }
    for (k, (&c, &id)) in people.iter().zip(&ids).enumerate() {
        sim.step(&Command::Frame(fewshot_e2e::tagalog(c, 3)))
            .unwrap();
        match &events.take()[..] {
            [Event::Opened {
                id: got, distance, ..
            }] => {
                assert_eq!(*got, id, "character {c} recognised as itself");
                assert!((distance - genuine[k][k]).abs() < 1e-4 * (1.0 + distance.abs()));
            }
            other => panic!("character {c}'s third image: {other:?}"),
        }
    }
    let mut refused = 0;
    for (i, c) in (3u32..=10).enumerate() {
        sim.step(&Command::Frame(fewshot_e2e::tagalog(c, 1)))
            .unwrap();
        match &events.take()[..] {
            [Event::Refused {
                distance: Some(d), ..
            }] => {
                assert!(*d > threshold);
                assert!((d - strangers[i]).abs() < 1e-4 * (1.0 + d.abs()));
                refused += 1;
            }
            [Event::Opened { distance, .. }] => assert!(*distance <= threshold),
            other => panic!("stranger {c}: {other:?}"),
        }
    }
    assert!(refused >= 4, "refused only {refused} of 8 strangers");

    // Deleting the last person recomputes the context over the one left:
    // their third image is scored against a gallery of one.
    sim.step(&Command::Press(2000)).unwrap();
    assert!(events
        .take()
        .iter()
        .any(|e| matches!(e, Event::Deleted { id, .. } if *id == ids[1])));
    let alone = graphs.context(&prototypes[..DOOR_DIM]).unwrap();
    let f = graphs
        .attend(&embed(&fewshot_e2e::tagalog(1, 3)), &alone)
        .unwrap();
    let want = distance.between(&f, &alone);
    sim.step(&Command::Frame(fewshot_e2e::tagalog(1, 3)))
        .unwrap();
    let got = match &events.take()[..] {
        [Event::Opened { distance, .. }] => Some(*distance),
        [Event::Refused { distance, .. }] => *distance,
        other => panic!("after the deletion: {other:?}"),
    };
    let got = got.expect("a distance");
    assert!(
        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
        "the door scores against the recomputed context: {got} vs {want}"
    );
}

/// `fewshot export --gallery-far` on a Matching Network with FCE calibrates
/// the door's own score (candle's FCE over the gallery's prototypes), and the
/// device's exported graphs in tract, scoring the same door independently,
/// let in the same share of strangers and of genuine probes at the stored
/// threshold.
#[test]
fn gallery_thresholds_of_an_fce_model_hold_on_the_devices_graphs() {
    use fewshot_firmware::camera::load_image;
    use fewshot_firmware::encoder::OnnxEncoder;
    use fewshot_host::export::threshold::calibrate_gallery;

    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, model) = tiny_fce_door_model(tmp.path());
    // Identity folders (links into the data folder): Tagalog characters
    // 1-6 with all 20 drawings are enrolled from their first two; 7-12 with
    // two drawings each are strangers.
    let people = tmp.path().join("people");
    let files = |c: u32, n: usize| (1..=n).map(move |i| fewshot_e2e::tagalog(c, i));
    for c in 1u32..=12 {
        let dir = people.join(format!("c{c:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in files(c, if c <= 6 { 20 } else { 2 }) {
            std::os::unix::fs::symlink(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    let t = calibrate_gallery(&model, &people, 0.25, &[6], 2, &ckpt).unwrap();
    assert_eq!((t.len(), t[0].gallery, t[0].trials), (1, 6, 1));
    let threshold = t[0].threshold;

    // The door on the device's runtime: tract runs the encoder and the two
    // FCE graphs.
    let device = OnnxEncoder::load(&model).unwrap();
    let graphs = device.fce().expect("the FCE graphs beside the model");
    let distance = device.distance();
    let embed = |p: &Path| {
        let f = load_image(p).unwrap();
        device.embed_frame(&f.as_frame().unwrap()).unwrap()
    };
    let mut prototypes = Vec::new();
    for c in 1u32..=6 {
        let shots: Vec<Vec<f32>> = files(c, 2).map(|p| embed(&p)).collect();
        let mut mean = vec![0f32; DOOR_DIM];
        fewshot_core::prototype::mean_into(shots.iter().map(|s| &s[..]), &mut mean).unwrap();
        prototypes.extend(mean);
    }
    let context = graphs.context(&prototypes).unwrap();
    let nearest = |p: &Path| {
        let f = graphs.attend(&embed(p), &context).unwrap();
        fewshot_core::nearest(&f, context.chunks(DOOR_DIM), distance).unwrap()
    };
    let (mut genuine, mut accepted) = (0, 0);
    for c in 1u32..=6 {
        for p in files(c, 20).skip(2) {
            let n = nearest(&p);
            genuine += 1;
            accepted += usize::from(n.index == c as usize - 1 && n.distance <= threshold);
        }
    }
    let (mut strangers, mut let_in) = (0, 0);
    for c in 7u32..=12 {
        for p in files(c, 2) {
            strangers += 1;
            let_in += usize::from(nearest(&p).distance <= threshold);
        }
    }
    assert_eq!((genuine, strangers), (108, 12));
    eprintln!(
        "threshold {threshold}: calibration FAR {} TAR {}; on tract {let_in}/{strangers}, {accepted}/{genuine}",
        t[0].far, t[0].tar
    );
    // candle and tract differ in the last bits: at most one probe on either
    // side of the threshold.
    assert!((let_in as f64 - t[0].far * strangers as f64).abs() <= 1.0);
    assert!((accepted as f64 - t[0].tar * genuine as f64).abs() <= 1.0);
    assert!(let_in as f64 / strangers as f64 <= 0.25 + 1.0 / strangers as f64);
}
