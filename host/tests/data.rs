//! Data set readers on the real data (counts from the data README) and on broken inputs.
mod common;

use std::fs;

use common::data_dir;
use fewshot_core::Recipe;
use fewshot_host::data::{preprocess_file, ClassSet, DataError, Layout, PairList, RunSet, Tensors};

#[test]
fn omniglot_splits_have_the_documented_counts() {
    let d = data_dir().join("omniglot");
    let s1 = ClassSet::load(&d.join("images_background_small1"), Layout::Auto).unwrap();
    assert_eq!((s1.classes.len(), s1.image_count()), (136, 2720));
    assert!(s1.classes.iter().all(|c| c.images.len() == 20));
    assert_eq!(s1.classes[0].name, "Balinese/character01");
    let mut s2 = ClassSet::load(&d.join("images_background_small2"), Layout::Omniglot).unwrap();
    assert_eq!((s2.classes.len(), s2.image_count()), (156, 3120));
    // Greek (24) and Latin (26) are in both splits.
    assert_eq!(s2.exclude(&s1), 50);
    assert_eq!(s2.classes.len(), 106);
    // Alphabets: the three left, with 47, 42 and 17 characters, in order.
    assert!(s2.has_alphabets());
    let ids = s2.alphabet_ids();
    let count = |g| ids.iter().filter(|&&i| i == g).count();
    assert_eq!((count(0), count(1), count(2), count(3)), (47, 42, 17, 0));
    assert!(s2.classes[..47]
        .iter()
        .all(|c| c.name.starts_with("Japanese_(katakana)/")));
    let orl = ClassSet::load(&data_dir().join("faces/orl"), Layout::Flat).unwrap();
    assert!(!orl.has_alphabets());
    assert!(orl.alphabet_ids().iter().all(|&g| g == 0));
}

#[test]
fn face_folders_have_the_documented_counts() {
    let f = data_dir().join("faces");
    let orl = ClassSet::load(&f.join("orl"), Layout::Flat).unwrap();
    assert_eq!((orl.classes.len(), orl.image_count()), (40, 400));
    let yale = ClassSet::load(&f.join("yale"), Layout::Auto).unwrap();
    assert_eq!((yale.classes.len(), yale.image_count()), (15, 164));
    let lfw = ClassSet::load(&f.join("lfw-devtrain"), Layout::Flat).unwrap();
    assert_eq!((lfw.classes.len(), lfw.image_count()), (4038, 9525));
    assert_eq!(
        lfw.classes.iter().filter(|c| c.images.len() >= 2).count(),
        1184
    );
    assert_eq!(
        lfw.classes.iter().filter(|c| c.images.len() >= 5).count(),
        298
    );
}

#[test]
fn lake_runs_parse_into_twenty_way_one_shot_tasks() {
    let runs = RunSet::load(&data_dir().join("omniglot/runs")).unwrap();
    assert_eq!(runs.runs.len(), 10);
    for run in &runs.runs {
        assert_eq!(run.training.len(), 20, "{}", run.name);
        assert_eq!(run.test.len(), 20, "{}", run.name);
        // Each class is the answer for exactly one test item.
        let mut labels: Vec<usize> = run.test.iter().map(|(_, l)| *l).collect();
        labels.sort_unstable();
        assert_eq!(labels, (0..20).collect::<Vec<_>>());
    }
    // Cross-check one label against the file's text.
    let text = fs::read_to_string(data_dir().join("omniglot/runs/run01/class_labels.txt")).unwrap();
    let first: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    let run = &runs.runs[0];
    let (test, label) = &run.test[0];
    assert!(test.ends_with(first[0]));
    assert!(run.training[*label].ends_with(first[1]));
}

#[test]
fn lfw_pair_list_parses_and_every_image_exists() {
    let d = data_dir().join("faces");
    let list = PairList::load(&d.join("lfw-pairsDevTrain.txt")).unwrap();
    assert_eq!(list.pairs.len(), 2200);
    assert_eq!(list.pairs.iter().filter(|p| p.same).count(), 1100);
    assert!(list.pairs[..1100]
        .iter()
        .all(|p| p.same && p.a.name == p.b.name));
    assert!(list.pairs[1100..]
        .iter()
        .all(|p| !p.same && p.a.name != p.b.name));
    for p in &list.pairs {
        for img in [&p.a, &p.b] {
            let path = img.path(&d.join("lfw-devtrain"));
            assert!(path.is_file(), "{}", path.display());
        }
    }
}

#[test]
fn decoding_real_images_gives_the_expected_tensors() {
    let d = data_dir();
    let png = d.join("omniglot/images_background_small1/Greek/character01");
    let first = fs::read_dir(&png).unwrap().next().unwrap().unwrap().path();
    let t = Tensors::load(std::slice::from_ref(&first), &Recipe::OMNIGLOT_28, false).unwrap();
    assert_eq!(t.data.len(), 784);
    // Strokes are a minority of pixels: inverted, the mean is small but not zero.
    let mean = t.data.iter().sum::<f32>() / 784.0;
    assert!(mean > 0.01 && mean < 0.5, "mean {mean}");
    assert!(t.data.iter().all(|v| (0.0..=1.0).contains(v)));
    // PGM and JPEG decode too.
    let pgm = preprocess_file(
        &d.join("faces/orl/s1/1.pgm"),
        &Recipe {
            invert: false,
            ..Recipe::OMNIGLOT_28
        },
    )
    .unwrap();
    assert_eq!(pgm.len(), 784);
    let lfw = d.join("faces/lfw-devtrain/George_W_Bush");
    let jpg = fs::read_dir(&lfw).unwrap().next().unwrap().unwrap().path();
    assert_eq!(
        preprocess_file(
            &jpg,
            &Recipe {
                channels: 3,
                ..Recipe::OMNIGLOT_28
            }
        )
        .unwrap()
        .len(),
        3 * 784
    );
}

#[test]
fn broken_inputs_are_errors_that_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A corrupt image.
    fs::create_dir_all(root.join("set/a")).unwrap();
    fs::write(root.join("set/a/1.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let err = Tensors::load(&[root.join("set/a/1.png")], &Recipe::OMNIGLOT_28, false).unwrap_err();
    assert!(matches!(err, DataError::Image(_)));
    assert!(err.to_string().contains("set/a/1.png"), "{err}");
    // An empty class folder.
    fs::create_dir_all(root.join("set/b")).unwrap();
    let err = ClassSet::load(&root.join("set"), Layout::Flat).unwrap_err();
    assert!(
        err.to_string().contains("set/b") && err.to_string().contains("no images"),
        "{err}"
    );
    // A stray file in a class folder.
    fs::write(root.join("set/b/notes.txt"), "x").unwrap();
    let err = ClassSet::load(&root.join("set"), Layout::Flat).unwrap_err();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    // A missing folder.
    assert!(ClassSet::load(&root.join("nope"), Layout::Flat)
        .unwrap_err()
        .to_string()
        .contains("nope"));
}

#[test]
fn malformed_pair_lists_name_the_line() {
    let p = std::path::Path::new("pairs.txt");
    let err = PairList::parse("2\nA 1 2\nB 1 x\n", p).unwrap_err();
    assert!(err.to_string().starts_with("pairs.txt:3:"), "{err}");
    let err = PairList::parse("1\nA 1 2 3\n", p).unwrap_err();
    assert!(
        err.to_string().starts_with("pairs.txt:2:") && err.to_string().contains("matched"),
        "{err}"
    );
    let err = PairList::parse("1\nA 1 2\n", p).unwrap_err();
    assert!(err.to_string().contains("ends early"), "{err}");
    let err = PairList::parse("1\nA 1 2\nA 1 B 2\nC 1 2\n", p).unwrap_err();
    assert!(err.to_string().starts_with("pairs.txt:4:"), "{err}");
    assert!(PairList::parse("", p).is_err());
    assert!(PairList::parse("x\n", p)
        .unwrap_err()
        .to_string()
        .starts_with("pairs.txt:1:"));
    // Folds: `2 1` is two folds of one matched and one mismatched pair.
    let ok = PairList::parse("2 1\nA 1 2\nA 1 B 1\nC 3 4\nC 1 D 2\n", p).unwrap();
    assert_eq!(
        ok.pairs.iter().map(|p| p.same).collect::<Vec<_>>(),
        [true, false, true, false]
    );
    assert_eq!(
        ok.pairs[3].b.path(std::path::Path::new("img")),
        std::path::Path::new("img/D/D_0002.jpg")
    );
}

#[test]
fn malformed_runs_name_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run01");
    fs::create_dir_all(run.join("test")).unwrap();
    fs::write(run.join("class_labels.txt"), "run01/test/item01.png\n").unwrap();
    let err = RunSet::load(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("class_labels.txt:1:"), "{err}");
    fs::write(
        run.join("class_labels.txt"),
        "run01/test/item01.png run01/training/class01.png\n",
    )
    .unwrap();
    let err = RunSet::load(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    assert!(RunSet::load(empty.path())
        .unwrap_err()
        .to_string()
        .contains("no run folders"));
}
