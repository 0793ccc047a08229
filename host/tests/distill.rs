//! Distillation on a few hundred real faces: the teacher's targets are its
//! embeddings of each image and its mirror (and come back from the cache
//! unchanged), and a short run moves the student towards the teacher and
//! raises pair separation on held-out people over the untrained student.
mod common;

use std::path::{Path, PathBuf};

use fewshot_host::augment::{hflip, Shape};
use fewshot_host::data::{ClassSet, Layout, Tensors};
use fewshot_host::distill::views::{mixes, view_recipe};
use fewshot_host::distill::{mixed_targets, teacher_targets, BankTerm, Teacher, TeacherInput};
use fewshot_host::embed::Embedder;
use fewshot_host::nn::checkpoint::CandleEmbedder;
use fewshot_host::nn::encoder::EncoderConfig;
use fewshot_host::stats::auc;
use fewshot_host::train::{train_distill, DistillConfig, StopAt, TrainConfig};

/// Points the process-wide face index at the data folder's detector and a
/// fresh cache (once, before any test of this binary opens the index).
fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cache = tempfile::tempdir().unwrap().keep();
        std::env::set_var("FEWSHOT_DATA", common::data_dir());
        std::env::set_var("FEWSHOT_CACHE", cache);
    });
}

/// The committed aligned face model: an ONNX teacher every build can run.
fn teacher_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/face-aligned.onnx")
}

/// A folder of links to the first `people` LFW people with at least two
/// images, at most four images each.
fn faces(dir: &Path, people: usize) {
    setup();
    let lfw = common::data_dir().join("faces/lfw-devtrain");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&lfw)
        .unwrap_or_else(|e| panic!("reading {}: {e}", lfw.display()))
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut taken = 0;
    for person in names {
        let mut images: Vec<PathBuf> = std::fs::read_dir(&person)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if images.len() < 2 {
            continue;
        }
        images.sort();
        let to = dir.join(person.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for image in images.iter().take(4) {
            std::os::unix::fs::symlink(image, to.join(image.file_name().unwrap())).unwrap();
        }
        taken += 1;
        if taken == people {
            break;
        }
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn targets_are_the_teachers_embeddings_of_image_and_mirror_and_survive_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("faces");
    faces(&data, 3);
    let set = ClassSet::load(&data, Layout::Auto).unwrap();
    let paths: Vec<PathBuf> = set.classes.iter().flat_map(|c| c.images.clone()).collect();
    let teacher = Teacher::load(&teacher_path(), None).unwrap();
    let cache = tmp.path().join("cache");
    let targets = teacher_targets(&teacher, &paths, Some(&cache), false).unwrap();
    assert_eq!((targets.len(), targets.dim), (paths.len(), teacher.dim()));

    // Independently: the teacher's embedding of each crop and of the crop
    // flipped, scaled to unit length.
    let recipe = teacher.recipe();
    let crops = Tensors::load(&paths, &recipe, false).unwrap();
    let shape = Shape {
        channels: recipe.channels,
        height: recipe.height,
        width: recipe.width,
    };
    for (i, _) in paths.iter().enumerate() {
        let image = teacher.embed(crops.row(i)).unwrap();
        let mirror = teacher.embed(&hflip(crops.row(i), shape)).unwrap();
        for (want, got) in [
            (&image, targets.row(i, false)),
            (&mirror, targets.row(i, true)),
        ] {
            let norm: f32 = got.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "target {i} has norm {norm}");
            assert!(
                cosine(want, got) > 0.99999,
                "target {i} is not the teacher's embedding"
            );
        }
        assert!(
            cosine(targets.row(i, false), targets.row(i, true)) < 0.9999,
            "mirror target {i} equals the image's"
        );
    }

    // A second call reads the cache: same values, file unchanged.
    let file = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let before = std::fs::read(&file).unwrap();
    let again = teacher_targets(&teacher, &paths, Some(&cache), false).unwrap();
    assert_eq!(again.data, targets.data);
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // A record cut short by a crash is dropped and computed again.
    std::fs::write(&file, &before[..before.len() - 10]).unwrap();
    let repaired = teacher_targets(&teacher, &paths, Some(&cache), false).unwrap();
    assert_eq!(repaired.data, targets.data);
    assert_eq!(std::fs::read(&file).unwrap().len(), before.len());
}

/// Mean student-teacher cosine and same/different pair AUC over the
/// validation people's images.
fn measure(student: &CandleEmbedder, teacher: &Teacher, val: &[Vec<PathBuf>]) -> (f64, f64) {
    let paths: Vec<PathBuf> = val.iter().flatten().cloned().collect();
    let person: Vec<usize> = val
        .iter()
        .enumerate()
        .flat_map(|(p, images)| images.iter().map(move |_| p))
        .collect();
    let s = student
        .embed(
            &Tensors::load(&paths, &student.recipe(), false)
                .unwrap()
                .data,
        )
        .unwrap();
    let t = teacher
        .embed(
            &Tensors::load(&paths, &teacher.recipe(), false)
                .unwrap()
                .data,
        )
        .unwrap();
    let (sd, td) = (student.dim(), teacher.dim());
    let n = paths.len();
    let mean_cos = (0..n)
        .map(|i| f64::from(cosine(&s[i * sd..(i + 1) * sd], &t[i * td..(i + 1) * td])))
        .sum::<f64>()
        / n as f64;
    let (mut same, mut different) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            // Distances: 1 − cosine.
            let c = 1.0 - cosine(&s[i * sd..(i + 1) * sd], &s[j * sd..(j + 1) * sd]);
            if person[i] == person[j] {
                same.push(c);
            } else {
                different.push(c);
            }
        }
    }
    (mean_cos, auc(&same, &different).unwrap())
}

/// A short distillation run's settings: `k_way`-way validation episodes
/// (none are run), Conv-4 of `hidden` channels on 32×32 aligned grey faces
/// with a linear embedding of `dim`, `episodes` batches at rate `lr`.
fn short_run(
    data: &Path,
    k_way: usize,
    episodes: usize,
    hidden: usize,
    dim: usize,
    seed: u64,
    lr: f64,
) -> TrainConfig {
    TrainConfig {
        data: data.to_path_buf(),
        shape: fewshot_host::episode::EpisodeShape {
            k_way,
            n_shot: 1,
            q_queries: 1,
        },
        episodes,
        lr,
        lr_step: 1000,
        lr_gamma: 0.5,
        val_every: episodes,
        val_episodes: 0,
        val_fraction: 0.25,
        val_k_way: None,
        rotations: false,
        affine: None,
        encoder: EncoderConfig::Conv4 {
            in_channels: 1,
            hidden,
            widths: None,
            depths: None,
            input_size: 32,
            embedding: Some(dim),
        },
        recipe: common::aligned_grey(32).into(),
        distance: "cosine".into(),
        seed,
        init: None,
        extra_train: Vec::new(),
        within_alphabet: 0.0,
    }
}

/// Distillation from the test teacher in batches of `batch` over `views`
/// views, with no relation or bank term and no augmentation.
fn plain_distill(batch: usize, views: usize) -> DistillConfig {
    DistillConfig {
        teacher: teacher_path(),
        batch,
        relation: 0.0,
        augment: None,
        views,
        mixup: 0,
        bank: None,
        teacher_input: Default::default(),
    }
}

/// The error of a distillation run that must be refused, with its causes.
fn refusal(config: &TrainConfig, distill: &DistillConfig, out: &Path) -> String {
    let err = train_distill(config, distill, out, false, StopAt::default(), false).unwrap_err();
    format!("{err:#}")
}

#[test]
fn a_short_run_moves_the_student_towards_the_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("faces");
    faces(&data, 60);
    let teacher = Teacher::load(&teacher_path(), None).unwrap();
    let config = |lr: f64| short_run(&data, 5, 80, 16, teacher.dim(), 2, lr);
    let distill = plain_distill(32, 1);
    // lr 0: the untrained (seeded) student.
    let run = |name: &str, lr: f64| {
        let out = tmp.path().join(name);
        train_distill(&config(lr), &distill, &out, false, StopAt::default(), false).unwrap();
        CandleEmbedder::load(&out.join("best.safetensors")).unwrap()
    };
    let untrained = run("untrained", 0.0);
    let trained = run("trained", 3e-3);

    // The validation people: the classes the run held out.
    let record = untrained.config().training.clone();
    let val_names: Vec<String> = record["split"]["val_classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(val_names.len() >= 10, "{val_names:?}");
    let set = ClassSet::load(&data, Layout::Auto).unwrap();
    let val: Vec<Vec<PathBuf>> = set
        .classes
        .iter()
        .filter(|c| val_names.contains(&c.name))
        .map(|c| c.images.clone())
        .collect();
    let (cos0, auc0) = measure(&untrained, &teacher, &val);
    let (cos1, auc1) = measure(&trained, &teacher, &val);
    eprintln!(
        "student-teacher cosine {cos0:.3} → {cos1:.3}; validation pair AUC {auc0:.3} → {auc1:.3}"
    );
    assert!(
        cos1 > cos0 + 0.2,
        "student-teacher cosine {cos0:.3} → {cos1:.3}"
    );
    assert!(
        auc1 > auc0 + 0.03,
        "validation pair AUC {auc0:.3} → {auc1:.3}"
    );

    // A student whose embedding size is not the teacher's is refused.
    let mut wrong = config(3e-3);
    wrong.encoder = EncoderConfig::Conv4 {
        in_channels: 1,
        hidden: 16,
        widths: None,
        depths: None,
        input_size: 32,
        embedding: Some(7),
    };
    let err = refusal(&wrong, &distill, &tmp.path().join("wrong"));
    assert!(err.contains("dimensions"), "{err}");
}

#[test]
fn bad_teachers_are_refused_by_name() {
    let data = common::data_dir();
    // An ONNX model without this project's metadata (the face detector).
    let yunet = data.join("models/yunet_s_dynamic.onnx");
    let err = Teacher::load(&yunet, None).err().unwrap().to_string();
    assert!(
        err.contains("yunet_s_dynamic.onnx") && err.contains("fewshot.recipe"),
        "{err}"
    );
    // Neither ONNX nor TensorFlow Lite.
    let err = Teacher::load(&data.join("README.md"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("README.md") && err.contains(".onnx or .tflite"),
        "{err}"
    );
    // A missing file.
    let err = Teacher::load(Path::new("no-such-teacher.onnx"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no-such-teacher.onnx"), "{err}");
    // A TensorFlow Lite file: read with the `tflite` feature, else the
    // error says how to build it.
    let tflite = data.join("models/mobilefacenet.tflite");
    match Teacher::load(&tflite, None) {
        Ok(t) => assert_eq!(t.dim(), 192),
        Err(e) => assert!(e.to_string().contains("--features tflite"), "{e}"),
    }
}

#[test]
fn jittered_views_train_against_the_teachers_target_of_each_view() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("faces");
    faces(&data, 12);
    let plain = Teacher::load(&teacher_path(), None).unwrap();
    let config = short_run(&data, 3, 4, 8, plain.dim(), 1, 1e-3);
    let mut distill = plain_distill(8, 0);
    let err = refusal(&config, &distill, &tmp.path().join("none"));
    assert!(err.contains("--views"), "{err}");

    distill.views = 3;
    let out = tmp.path().join("views");
    train_distill(&config, &distill, &out, false, StopAt::default(), false).unwrap();
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["distill"]["views"], 3);

    // Each view's targets were cached under its own recipe, and they are the
    // teacher's embeddings of that view's crops (computed again here without
    // the cache); the jittered views differ from the plain one, yet show the
    // same faces.
    let cache = PathBuf::from(std::env::var_os("FEWSHOT_CACHE").unwrap());
    let set = ClassSet::load(&data, Layout::Auto).unwrap();
    let paths: Vec<PathBuf> = set.classes.iter().flat_map(|c| c.images.clone()).collect();
    let base = teacher_targets(&plain, &paths, None, false).unwrap();
    for v in 1..3 {
        let recipe = view_recipe(&plain.recipe(), v).unwrap();
        let teacher = Teacher::load(&teacher_path(), Some(recipe)).unwrap();
        let file = cache.join(format!("teacher-{:016x}.bin", teacher.id()));
        assert!(file.is_file(), "view {v}: no cache file {}", file.display());
        let cached = teacher_targets(&teacher, &paths, Some(&cache), false).unwrap();
        let fresh = teacher_targets(&teacher, &paths, None, false).unwrap();
        assert_eq!(cached.data, fresh.data, "view {v}");
        let mean_cos = (0..paths.len())
            .map(|i| {
                let (a, b) = (base.row(i, false), fresh.row(i, false));
                f64::from(a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
            })
            .sum::<f64>()
            / paths.len() as f64;
        assert!(
            mean_cos > 0.5 && mean_cos < 0.999,
            "view {v}: mean cosine to the plain view {mean_cos:.4}"
        );
    }
}

#[test]
fn mixed_views_target_the_teachers_embedding_of_each_blend_and_train() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("faces");
    faces(&data, 6);
    let set = ClassSet::load(&data, Layout::Auto).unwrap();
    let paths: Vec<PathBuf> = set.classes.iter().flat_map(|c| c.images.clone()).collect();
    let teacher = Teacher::load(&teacher_path(), None).unwrap();
    let blends = mixes(paths.len(), 0).unwrap();
    let cache = tmp.path().join("cache");
    let targets = mixed_targets(&teacher, &paths, &blends, Some(&cache), false).unwrap();
    assert_eq!(targets.len(), paths.len());

    // Independently: each blend made here in f64 from the two crops, and the
    // teacher's embedding of it and of its mirror.
    let recipe = teacher.recipe();
    let crops = Tensors::load(&paths, &recipe, false).unwrap();
    let shape = Shape {
        channels: recipe.channels,
        height: recipe.height,
        width: recipe.width,
    };
    let plain = teacher_targets(&teacher, &paths, None, false).unwrap();
    for (i, m) in blends.iter().enumerate() {
        let s = f64::from(m.share);
        let blend: Vec<f32> = crops
            .row(i)
            .iter()
            .zip(crops.row(m.partner))
            .map(|(&a, &b)| ((1.0 - s) * f64::from(a) + s * f64::from(b)) as f32)
            .collect();
        let image = teacher.embed(&blend).unwrap();
        let mirror = teacher.embed(&hflip(&blend, shape)).unwrap();
        assert!(cosine(&image, targets.row(i, false)) > 0.99999, "blend {i}");
        assert!(
            cosine(&mirror, targets.row(i, true)) > 0.99999,
            "blend {i}, mirror"
        );
        // A blend is neither of its faces.
        assert!(cosine(plain.row(i, false), targets.row(i, false)) < 0.9999);
    }
    // Cached: the same values come back without computing.
    let again = mixed_targets(&teacher, &paths, &blends, Some(&cache), false).unwrap();
    assert_eq!(again.data, targets.data);

    // A run with two mixed views records them, and a recipe that does not
    // align faces is refused by name.
    let config = short_run(&data, 3, 4, 8, teacher.dim(), 1, 1e-3);
    let mut distill = plain_distill(8, 1);
    distill.mixup = 2;
    let out = tmp.path().join("mixed");
    train_distill(&config, &distill, &out, false, StopAt::default(), false).unwrap();
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["distill"]["mixup"], 2);
    let lines = fewshot_host::train::read_metrics(&out.join("metrics.jsonl"));
    assert!(lines.iter().any(|l| l.loss.is_some_and(f64::is_finite)));
    let mut unaligned = config.clone();
    let mut centred = common::aligned_grey(32);
    centred.crop = fewshot_core::Crop::CenterSquare(0.8);
    unaligned.recipe = centred.into();
    let err = refusal(&unaligned, &distill, &tmp.path().join("unaligned"));
    assert!(err.contains("--mixup") && err.contains("--align"), "{err}");
}

#[test]
fn the_bank_term_is_added_to_the_loss_and_bad_settings_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("faces");
    faces(&data, 12);
    let plain = Teacher::load(&teacher_path(), None).unwrap();
    // Rate 0: both runs see the same batches with the same weights.
    let config = short_run(&data, 3, 4, 8, plain.dim(), 1, 0.0);
    let mut distill = plain_distill(8, 1);
    let last_loss = |distill: &DistillConfig, name: &str| {
        let out = tmp.path().join(name);
        train_distill(&config, distill, &out, false, StopAt::default(), false).unwrap();
        let lines = fewshot_host::train::read_metrics(&out.join("metrics.jsonl"));
        let line = lines
            .iter()
            .rev()
            .find(|l| l.loss.is_some())
            .unwrap()
            .clone();
        (line.loss.unwrap(), line.accuracy.unwrap(), out)
    };
    let (plain_loss, plain_cos, _) = last_loss(&distill, "plain");
    distill.bank = Some(BankTerm {
        weight: 0.5,
        temperature: 0.1,
    });
    let (bank_loss, bank_cos, out) = last_loss(&distill, "bank");
    // The same student-teacher cosine, and a positive divergence on top.
    assert_eq!(plain_cos, bank_cos);
    assert!(bank_loss > plain_loss + 1e-3, "{plain_loss} → {bank_loss}");
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["distill"]["bank"]["temperature"], 0.1);

    for (weight, temperature, word) in [
        (0.0, 0.1, "weight"),
        (f64::NAN, 0.1, "weight"),
        (1.0, 0.0, "temperature"),
        (1.0, f64::INFINITY, "temperature"),
    ] {
        distill.bank = Some(BankTerm {
            weight,
            temperature,
        });
        let err = refusal(&config, &distill, &tmp.path().join("refused"));
        assert!(err.contains("bank term") && err.contains(word), "{err}");
    }
}

/// Bilinear resampling of a `side`-square plane to `out` in f64, written
/// from the definition (pixel centres aligned, edges clamped).
fn bilinear_f64(plane: &[f32], side: usize, out: usize) -> Vec<f32> {
    let at = |x: usize, y: usize| f64::from(plane[y * side + x]);
    let mut v = Vec::new();
    for oy in 0..out {
        for ox in 0..out {
            let map = |o: usize| {
                ((o as f64 + 0.5) * side as f64 / out as f64 - 0.5).clamp(0.0, (side - 1) as f64)
            };
            let (sx, sy) = (map(ox), map(oy));
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(side - 1), (y0 + 1).min(side - 1));
            let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
            let value = at(x0, y0) * (1.0 - fx) * (1.0 - fy)
                + at(x1, y0) * fx * (1.0 - fy)
                + at(x0, y1) * (1.0 - fx) * fy
                + at(x1, y1) * fx * fy;
            v.push(value as f32);
        }
    }
    v
}

#[test]
fn a_teacher_at_the_students_input_embeds_the_students_crops_resampled() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("faces");
    faces(&data, 12);
    let plain = Teacher::load(&teacher_path(), None).unwrap();
    let native = plain.recipe();
    let student = common::aligned_grey(32);
    let at = Teacher::load(&teacher_path(), None)
        .unwrap()
        .at_input(&student)
        .unwrap();
    let r = at.recipe();
    assert_eq!((r.width, r.height, r.channels), (32, 32, 1));
    assert_eq!((r.crop, r.resize), (student.crop, student.resize));
    assert_eq!((r.mean, r.std), (native.mean, native.std));
    assert_ne!(at.id(), plain.id());
    let other = Teacher::load(&teacher_path(), None)
        .unwrap()
        .at_input(&common::aligned_grey(48))
        .unwrap();
    assert_ne!(at.id(), other.id());

    // Independently: the student's crops (in the teacher's normalisation)
    // resampled to the teacher's size in f64, embedded by the plain teacher.
    let set = ClassSet::load(&data, Layout::Auto).unwrap();
    let paths: Vec<PathBuf> = set.classes.iter().flat_map(|c| c.images.clone()).collect();
    let crops = Tensors::load(&paths[..6], &r, false).unwrap();
    let got = at.embed(&crops.data).unwrap();
    let big: Vec<f32> = (0..6)
        .flat_map(|i| bilinear_f64(crops.row(i), 32, native.width))
        .collect();
    let want = plain.embed(&big).unwrap();
    let own = plain
        .embed(&Tensors::load(&paths[..6], &native, false).unwrap().data)
        .unwrap();
    let d = plain.dim();
    for i in 0..6 {
        let (g, w, o) = (
            &got[i * d..(i + 1) * d],
            &want[i * d..(i + 1) * d],
            &own[i * d..(i + 1) * d],
        );
        assert!(cosine(g, w) > 0.99999, "image {i}: {}", cosine(g, w));
        // The same face, seen smaller: close to, not equal to, the teacher's own.
        assert!(
            cosine(g, o) > 0.5 && cosine(g, o) < 0.9999,
            "image {i}: {}",
            cosine(g, o)
        );
    }

    // A colour input for a grey teacher is refused by name.
    let colour = fewshot_core::Recipe {
        channels: 3,
        ..student
    };
    let err = Teacher::load(&teacher_path(), None)
        .unwrap()
        .at_input(&colour)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("face-aligned.onnx") && err.contains("channels"),
        "{err}"
    );

    // A run trained on these targets records so and caches them under the
    // teacher-at-input's key.
    let config = short_run(&data, 3, 4, 8, plain.dim(), 1, 1e-3);
    let mut distill = plain_distill(8, 2);
    distill.teacher_input = TeacherInput::Student;
    let out = tmp.path().join("student-input");
    train_distill(&config, &distill, &out, false, StopAt::default(), false).unwrap();
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["distill"]["teacher_input"], "student");
    let cache = PathBuf::from(std::env::var_os("FEWSHOT_CACHE").unwrap());
    for v in 0..2 {
        let recipe = view_recipe(&student, v).unwrap();
        let teacher = Teacher::load(&teacher_path(), None)
            .unwrap()
            .at_input(&recipe)
            .unwrap();
        let file = cache.join(format!("teacher-{:016x}.bin", teacher.id()));
        assert!(file.is_file(), "view {v}: no cache file {}", file.display());
    }
}

/// A teacher cache written by hand: `FSTEACH1`, the size, then records.
fn cache_file(records: &[(String, Vec<f32>)], dim: usize) -> Vec<u8> {
    let mut bytes = b"FSTEACH1".to_vec();
    bytes.extend((dim as u32).to_le_bytes());
    for (key, values) in records {
        bytes.extend((key.len() as u32).to_le_bytes());
        bytes.extend(key.as_bytes());
        values.iter().for_each(|v| bytes.extend(v.to_le_bytes()));
    }
    bytes
}

#[test]
fn a_cache_under_the_old_keys_is_still_read_and_survives_a_touched_file() {
    setup();
    let teacher = Teacher::load(&teacher_path(), None).unwrap();
    let dim = teacher.dim();
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("face.jpg");
    let source = common::data_dir().join("faces/lfw-devtrain");
    let person = std::fs::read_dir(&source)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let first = std::fs::read_dir(&person)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&first, &image).unwrap();
    // The old key: absolute path, size and modification time in nanoseconds.
    let meta = std::fs::metadata(&image).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let abs = std::fs::canonicalize(&image).unwrap();
    let old_key = format!("{}|{}|{mtime}", abs.display(), meta.len());
    // Planted values no teacher would give: read back, they show the cache was used.
    let planted: Vec<f32> = (0..2 * dim).map(|i| i as f32).collect();
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let file = cache.join(format!("teacher-{:016x}.bin", teacher.id()));
    std::fs::write(&file, cache_file(&[(old_key, planted.clone())], dim)).unwrap();

    let paths = vec![image.clone()];
    let got = teacher_targets(&teacher, &paths, Some(&cache), false).unwrap();
    assert_eq!(got.data, planted, "the record under the old key");
    // Stored again under the content key: a new modification time (which the
    // old key held) no longer matters.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let got = teacher_targets(&teacher, &paths, Some(&cache), false).unwrap();
    assert_eq!(got.data, planted, "the record under the content key");
    // Without the cache, the teacher's own (unit) embedding.
    let fresh = teacher_targets(&teacher, &paths, None, false).unwrap();
    assert_ne!(fresh.data, planted);
}
