//! The `fewshot` binary end to end on the real data: JSON fields, invariants
//! between the figures, and clear errors for bad input.
mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn fewshot(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fewshot"))
        .args(args)
        .env("FEWSHOT_DATA", common::data_dir())
        .output()
        .expect("run fewshot");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = fewshot(args);
    assert!(ok, "fewshot {args:?} failed: {stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

#[test]
fn eval_runs_reports_each_run_and_the_mean() {
    let v = json(&["eval-runs", "--model", "pixels", "--json"]);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 10);
    let mean = runs
        .iter()
        .map(|r| r["error_rate"].as_f64().unwrap())
        .sum::<f64>()
        / 10.0;
    assert!((v["error_rate"].as_f64().unwrap() - mean).abs() < 1e-12);
    for r in runs {
        assert_eq!(r["items"], 20);
        assert!(
            (r["error_rate"].as_f64().unwrap() - r["errors"].as_f64().unwrap() / 20.0).abs()
                < 1e-12
        );
        // The wrong items are named, once each, in order, within the run's 20.
        let wrong: Vec<u64> = r["wrong"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .collect();
        assert_eq!(wrong.len() as u64, r["errors"].as_u64().unwrap());
        assert!(wrong.windows(2).all(|w| w[0] < w[1]) && wrong.iter().all(|&w| w < 20));
    }
    // The interval is that of all items together: it holds the rate, inside [0, 1].
    let (errors, items) = (v["errors"].as_u64().unwrap(), v["items"].as_u64().unwrap());
    assert_eq!(items, 200);
    let total: u64 = runs.iter().map(|r| r["errors"].as_u64().unwrap()).sum();
    assert_eq!(errors, total);
    let ci = v["error_rate_ci95"].as_array().unwrap();
    let (low, high) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
    let rate = errors as f64 / items as f64;
    assert!(
        0.0 <= low && low < rate && rate < high && high <= 1.0,
        "{low} {rate} {high}"
    );
    // Pixels are far better than chance (95% error) on 20-way one-shot, and far from solved.
    assert!(mean < 0.9 && mean > 0.3, "{mean}");
}

#[test]
fn eval_reports_accuracy_with_ci() {
    let args = [
        "eval",
        "--data",
        "omniglot/images_background_small2",
        "--exclude",
        "omniglot/images_background_small1",
        "--k-way",
        "5",
        "--n-shot",
        "1",
        "--q-queries",
        "5",
        "--episodes",
        "200",
        "--json",
    ];
    let v = json(&args);
    assert_eq!(v["episodes"], 200);
    assert_eq!(v["classes"], 106);
    let (acc, ci) = (v["accuracy"].as_f64().unwrap(), v["ci95"].as_f64().unwrap());
    assert!(
        acc > 0.25 && acc < 1.0,
        "5-way accuracy {acc} should beat chance (0.2)"
    );
    assert!(ci > 0.0 && ci < 0.05, "{ci}");
    // Same seed, same episodes, same answer.
    assert_eq!(json(&args)["accuracy"], v["accuracy"]);
}

#[test]
fn verify_and_door_eval_on_faces() {
    let v = json(&["verify", "--json"]);
    assert_eq!(
        (v["matched"].as_u64(), v["mismatched"].as_u64()),
        (Some(1100), Some(1100))
    );
    let auc = v["auc"].as_f64().unwrap();
    assert!(auc > 0.5 && auc < 1.0, "{auc}");
    assert!(v["threshold"].as_f64().unwrap() > 0.0);
    let given = json(&["verify", "--threshold", "0", "--json"]);
    assert_eq!(
        given["accuracy"], 0.5,
        "threshold 0 rejects every pair: half are right"
    );

    let roc = tempfile::tempdir().unwrap();
    let png = roc.path().join("roc.png");
    let d = json(&[
        "door-eval",
        "--data",
        "faces/orl",
        "--enroll-shots",
        "2",
        "--strangers",
        "faces/yale",
        "--json",
        "--roc",
        png.to_str().unwrap(),
    ]);
    assert_eq!(
        (d["enrolled"].as_u64(), d["genuine_probes"].as_u64()),
        (Some(40), Some(320))
    );
    assert_eq!(d["stranger_probes"], 164);
    let rank1 = d["rank1"].as_f64().unwrap();
    let (t2, t3) = (
        d["tar_at_far_1e-2"].as_f64().unwrap(),
        d["tar_at_far_1e-3"].as_f64().unwrap(),
    );
    assert!(
        t3 <= t2 && t2 <= rank1,
        "TAR at a stricter FAR cannot be higher, nor above rank-1"
    );
    assert!(image::open(&png).is_ok(), "ROC PNG written");
}

#[test]
fn bad_input_gives_clear_errors() {
    let (ok, _, err) = fewshot(&["eval", "--data", "no/such/folder"]);
    assert!(
        !ok && err.contains("no/such/folder") && err.contains("looked at"),
        "{err}"
    );
    let (ok, _, err) = fewshot(&["eval", "--k-way", "500"]);
    assert!(
        !ok && err.contains("500-way") && err.contains("classes"),
        "{err}"
    );
    let (ok, _, err) = fewshot(&["eval", "--distance", "manhattan"]);
    assert!(!ok && err.contains("manhattan"), "{err}");
    // The test-time inner loop's flags are for MAML checkpoints.
    let protonet = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/omniglot-protonet-small1.safetensors"
    );
    let (ok, _, err) = fewshot(&["eval", "--model", protonet, "--inner-steps-test", "5"]);
    assert!(!ok && err.contains("MAML checkpoints"), "{err}");
    let (ok, _, err) = fewshot(&["eval-runs", "--inner-lr", "0"]);
    assert!(
        !ok && err.contains("got \"0\"") && err.contains("positive"),
        "{err}"
    );
    let (ok, _, err) = fewshot(&["eval-runs", "--model", "missing.safetensors"]);
    assert!(!ok && err.contains("missing.safetensors"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs.txt");
    std::fs::write(&pairs, "1\nAaron_Peirsol 1 2\nbroken line\n").unwrap();
    let (ok, _, err) = fewshot(&["verify", "--pairs", pairs.to_str().unwrap()]);
    assert!(!ok && err.contains("pairs.txt:3"), "{err}");
    // Int8 export: the default form takes no calibration, the others need it.
    let ckpt = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/omniglot-protonet-small1.safetensors"
    );
    let out = tmp.path().join("int8.onnx");
    let out = out.to_str().unwrap();
    let export = |extra: &[&str]| {
        let mut args = vec!["export", "--model", ckpt, "--out", out, "--int8"];
        args.extend_from_slice(extra);
        fewshot(&args)
    };
    let (ok, _, err) = export(&["--int8-form", "conv-integer"]);
    assert!(!ok && err.contains("--calibration DIR"), "{err}");
    let (ok, _, err) = export(&["--calibration", "omniglot/images_background_small1"]);
    assert!(!ok && err.contains("takes no calibration images"), "{err}");
    assert!(!Path::new(out).exists(), "nothing written on a bad flag");
    let (ok, stdout, err) = export(&[]);
    assert!(ok && stdout.contains("weight-only"), "{stdout}{err}");
    let model = fewshot_firmware::encoder::OnnxEncoder::load(Path::new(out)).unwrap();
    assert!(model.metadata()[fewshot_core::model_meta::QUANTIZATION].contains("weight-only"));
    // --widths: four positive counts, Conv-4 only.
    let (ok, _, err) = fewshot(&["train", "protonet", "--widths", "64,64,128", "--out", out]);
    assert!(
        !ok && err.contains("expected four positive channel counts"),
        "{err}"
    );
    let (ok, _, err) = fewshot(&["train", "protonet", "--widths", "64,0,8,8", "--out", out]);
    assert!(!ok && err.contains("64,0,8,8"), "{err}");
    let (ok, _, err) = fewshot(&[
        "train",
        "distill",
        "--arch",
        "mobile",
        "--widths",
        "8,8,16,24",
        "--out",
        out,
    ]);
    assert!(!ok && err.contains("--arch conv4"), "{err}");
    // --val-k-way: two classes at least.
    let (ok, _, err) = fewshot(&["train", "protonet", "--val-k-way", "1", "--out", out]);
    assert!(!ok && err.contains("--val-k-way"), "{err}");
    // --depths: four positive counts, Conv-4 only; MAML's functional Conv-4 has none.
    let (ok, _, err) = fewshot(&["train", "protonet", "--depths", "1,0,2,2", "--out", out]);
    assert!(
        !ok && err.contains("expected four positive convolution counts"),
        "{err}"
    );
    let (ok, _, err) = fewshot(&[
        "train", "distill", "--arch", "mobile", "--depths", "1,2,2,2", "--out", out,
    ]);
    assert!(!ok && err.contains("--arch conv4"), "{err}");
    // --within-alphabet: a share, for the episodic methods, on Omniglot's layout.
    let (ok, _, err) = fewshot(&[
        "train",
        "protonet",
        "--within-alphabet",
        "1.5",
        "--out",
        out,
    ]);
    assert!(!ok && err.contains("share from 0 to 1"), "{err}");
    let (ok, _, err) = fewshot(&[
        "train",
        "siamese",
        "--loss",
        "triplet",
        "--within-alphabet",
        "0.5",
        "--out",
        out,
    ]);
    assert!(!ok && err.contains("--within-alphabet"), "{err}");
    let flat = tmp.path().join("flat-run");
    let (ok, _, err) = fewshot(&[
        "train",
        "matching",
        "--data",
        "faces/orl",
        "--within-alphabet",
        "0.5",
        "--out",
        flat.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("alphabet folders") && err.contains("orl"),
        "{err}"
    );
    let (ok, _, err) = fewshot(&["eval", "--data", "faces/orl", "--within-alphabet", "1"]);
    assert!(!ok && err.contains("alphabet folders"), "{err}");
    let (ok, _, err) = fewshot(&["eval", "--within-alphabet", "2"]);
    assert!(!ok && err.contains("share from 0 to 1"), "{err}");
    // --teacher-input: own or student.
    let (ok, _, err) = fewshot(&["train", "distill", "--teacher-input", "mine", "--out", out]);
    assert!(
        !ok && err.contains("\"mine\"") && err.contains("own or student"),
        "{err}"
    );
    for (ok, _, err) in [
        fewshot(&["eval", "--data", "no/such"]),
        fewshot(&["verify", "--pairs", "x"]),
    ] {
        assert!(!ok && !err.contains("panicked"), "{err}");
    }
}

/// `--finetune 0` in one-shot episodes is the prototype classifier with
/// cosine distance (one shot: the unit mean is the unit shot), in `eval` and
/// in `eval-runs`; a few steps give a valid accuracy; the flags need `--finetune`.
#[test]
fn finetune_zero_steps_is_cosine_prototypes() {
    let base = [
        "eval",
        "--data",
        "omniglot/images_background_small2",
        "--k-way",
        "5",
        "--n-shot",
        "1",
        "--q-queries",
        "3",
        "--episodes",
        "50",
        "--json",
    ];
    let with = |extra: &[&str]| json(&[&base[..], extra].concat());
    let cosine = with(&["--distance", "cosine"]);
    let tuned = with(&["--finetune", "0", "--entropy-weight", "0"]);
    assert_eq!(tuned["accuracy"], cosine["accuracy"]);
    assert_eq!(tuned["finetune"]["steps"], 0);
    let stepped = with(&["--finetune", "10", "--finetune-lr", "0.05"]);
    let acc = stepped["accuracy"].as_f64().unwrap();
    assert!(acc > 0.2 && acc <= 1.0, "{acc}");

    let runs = json(&["eval-runs", "--distance", "cosine", "--json"]);
    let tuned = json(&["eval-runs", "--finetune", "0", "--json"]);
    assert_eq!(tuned["error_rate"], runs["error_rate"]);
    // The logits' path names the same wrong items as the nearest-neighbour path.
    assert_eq!(tuned["runs"].as_array().unwrap().len(), 10);
    for (t, r) in tuned["runs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(runs["runs"].as_array().unwrap())
    {
        assert_eq!(t["wrong"], r["wrong"], "{}", r["run"]);
    }

    // The door with one enrollment shot: the same scores, so the same figures.
    let roc = tempfile::tempdir().unwrap();
    let png = roc.path().join("roc.png");
    let door = |extra: &[&str]| {
        let base = [
            "door-eval",
            "--enroll-shots",
            "1",
            "--strangers",
            "faces/yale",
            "--json",
        ];
        json(&[&base[..], &["--roc", png.to_str().unwrap()], extra].concat())
    };
    let cosine = door(&["--distance", "cosine"]);
    let tuned = door(&["--finetune", "0", "--entropy-weight", "0"]);
    assert_eq!(tuned["rank1"], cosine["rank1"]);
    assert_eq!(tuned["tar_at_far_1e-2"], cosine["tar_at_far_1e-2"]);
    let (a, b) = (
        tuned["threshold_at_far_1e-2"].as_f64().unwrap(),
        cosine["threshold_at_far_1e-2"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    let stepped = door(&["--finetune", "20", "--finetune-lr", "0.05"]);
    assert_eq!(stepped["distance"], "cosine");
    let rank1 = stepped["rank1"].as_f64().unwrap();
    assert!(rank1 > 0.1 && rank1 <= 1.0, "{rank1}");
    let (ok, _, err) = fewshot(&["door-eval", "--finetune", "3", "--distance", "l2"]);
    assert!(!ok && err.contains("cosine"), "{err}");

    let (ok, _, err) = fewshot(&["eval", "--entropy-weight", "0.5"]);
    assert!(!ok && err.contains("--finetune"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (ok, _, err) = fewshot(&[
        "train",
        "siamese",
        "--loss",
        "triplet",
        "--p-classes",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("at least 2 classes"), "{err}");
}

/// The face pipeline on 100 LFW people, in small: CosFace training lifts
/// pair verification on the held-out people above the same encoder untrained
/// (learning rate 0, so only batch norm's statistics move); the export
/// carries the threshold calibrated on those people, and the door takes it.
#[test]
fn face_training_beats_the_untrained_encoder_and_the_door_takes_its_threshold() {
    let lfw = common::data_dir().join("faces/lfw-devtrain");
    let tmp = tempfile::tempdir().unwrap();
    let subset = tmp.path().join("people");
    std::fs::create_dir(&subset).unwrap();
    let mut people: Vec<_> = std::fs::read_dir(&lfw)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            std::fs::read_dir(p)
                .map(|d| d.count() >= 3)
                .unwrap_or(false)
        })
        .collect();
    people.sort();
    for p in people.iter().take(100) {
        std::os::unix::fs::symlink(p, subset.join(p.file_name().unwrap())).unwrap();
    }
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let train = |out: &str, lr: &str, batches: &str| {
        let (ok, _, err) = fewshot(&[
            "train",
            "cosface",
            "--data",
            &path("people"),
            "--out",
            &path(out),
            "--size",
            "32",
            "--hidden",
            "32",
            "--batch",
            "32",
            "--episodes",
            batches,
            "--val-every",
            batches,
            "--val-episodes",
            "20",
            "--val-fraction",
            "0.4",
            "--k-way",
            "5",
            "--lr",
            lr,
            "--threads",
            "2",
        ]);
        assert!(ok, "training {out} failed: {err}");
    };
    train("trained", "0.003", "150");
    train("untrained", "0", "20");
    let (ok, _, err) = fewshot(&[
        "split",
        "--model",
        &path("trained/best.safetensors"),
        "--data",
        &path("people"),
        "--out",
        &path("val"),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = fewshot(&[
        "pairs",
        "--data",
        &path("val"),
        "--out",
        &path("pairs.txt"),
        "--folds",
        "2",
        "--per-fold",
        "40",
    ]);
    assert!(ok, "{err}");
    let auc = |model: &str| {
        let v = json(&[
            "verify",
            "--model",
            &path(model),
            "--images",
            &path("val"),
            "--pairs",
            &path("pairs.txt"),
            "--json",
        ]);
        v["auc"].as_f64().unwrap()
    };
    let (trained, untrained) = (
        auc("trained/best.safetensors"),
        auc("untrained/best.safetensors"),
    );
    eprintln!("validation pair AUC: trained {trained:.3}, untrained {untrained:.3}");
    assert!(
        trained > untrained + 0.03,
        "training should lift the AUC: {trained} vs untrained {untrained}"
    );

    let onnx = path("face.onnx");
    let (ok, _, err) = fewshot(&[
        "export",
        "--model",
        &path("trained/best.safetensors"),
        "--out",
        &onnx,
        "--threshold-far",
        "0.01",
        "--threshold-data",
        &path("val"),
    ]);
    assert!(ok, "{err}");
    let model = fewshot_firmware::encoder::OnnxEncoder::load(std::path::Path::new(&onnx)).unwrap();
    let stored: f32 = model.metadata()[fewshot_core::model_meta::THRESHOLD]
        .parse()
        .unwrap();
    let calibration: Value =
        serde_json::from_str(&model.metadata()[fewshot_core::model_meta::THRESHOLD_CALIBRATION])
            .unwrap();
    assert_eq!(calibration["threshold"].as_f64().unwrap() as f32, stored);
    assert!(calibration["far"].as_f64().unwrap() <= 0.01);
    let door = model.door_config(None).unwrap();
    assert_eq!(
        door.threshold, stored,
        "the door uses the model's threshold"
    );
    assert_eq!(door.distance, fewshot_core::Distance::Cosine);
    assert_eq!(
        model.door_config(Some(0.25)).unwrap().threshold,
        0.25,
        "unless told otherwise"
    );
}

#[test]
fn detect_finds_a_face_in_every_orl_image() {
    let v = json(&["detect", "--data", "faces/orl", "--json"]);
    assert_eq!(v["images"], 400);
    assert_eq!(v["found"], 400);
    assert_eq!(v["no_face_files"].as_array().unwrap().len(), 0);
    // ORL's eyes are about 34 px apart (92×112 photos).
    let median = v["eye_px"]["median"].as_f64().unwrap();
    assert!((25.0..45.0).contains(&median), "{v}");
    let (ok, _, stderr) = fewshot(&["detect", "--data", "no/such/folder"]);
    assert!(!ok && stderr.contains("no/such/folder"), "{stderr}");
}

/// `train matching --fce` writes a checkpoint that `eval` and `eval-runs`
/// classify with its own attention (and refuse a --distance for); flags
/// that need --fce say so.
#[test]
fn matching_checkpoints_evaluate_with_their_attention() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let out = out.to_str().unwrap();
    let train = [
        "train",
        "matching",
        "--fce",
        "--unrolling-steps",
        "2",
        "--similarity",
        "l2",
        "--hidden",
        "8",
        "--k-way",
        "5",
        "--episodes",
        "4",
        "--val-every",
        "4",
        "--val-episodes",
        "10",
        "--out",
        out,
    ];
    let (ok, _, err) = fewshot(&train);
    assert!(ok, "{err}");
    let best = format!("{out}/best.safetensors");
    let config: Value =
        serde_json::from_slice(&std::fs::read(format!("{out}/best.json")).unwrap()).unwrap();
    assert_eq!(config["method"], "matching");
    assert_eq!(config["matching"]["fce"]["unrolling_steps"], 2);
    let v = json(&[
        "eval",
        "--model",
        &best,
        "--k-way",
        "5",
        "--episodes",
        "20",
        "--json",
    ]);
    let classifier = v["classifier"].as_str().unwrap();
    assert!(
        classifier.contains("Matching") && classifier.contains("full context"),
        "{classifier}"
    );
    let acc = v["accuracy"].as_f64().unwrap();
    assert!(acc > 0.0 && acc <= 1.0, "{acc}");
    let runs = json(&["eval-runs", "--model", &best, "--json"]);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 10);
    assert!(runs["classifier"].as_str().unwrap().contains("Matching"));
    let (ok, _, err) = fewshot(&["eval", "--model", &best, "--distance", "cosine"]);
    assert!(!ok && err.contains("Matching Network"), "{err}");
    let (ok, _, err) = fewshot(&["train", "matching", "--unrolling-steps", "3", "--out", out]);
    assert!(!ok && err.contains("--fce"), "{err}");
    // A pair threshold alone would open an FCE door by raw distances.
    let onnx = tmp.path().join("m.onnx");
    let (ok, _, err) = fewshot(&[
        "export",
        "--model",
        &best,
        "--out",
        onnx.to_str().unwrap(),
        "--threshold-far",
        "0.01",
        "--threshold-data",
        "omniglot/images_background_small2/Tagalog",
    ]);
    assert!(!ok && err.contains("--gallery-far"), "{err}");
    assert!(!onnx.exists(), "nothing written");
}
