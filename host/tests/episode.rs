//! Episode sampling and class splits.
use std::collections::HashSet;

use fewshot_host::episode::{ClassSplit, EpisodeError, EpisodeSampler, EpisodeShape};

fn classes(sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut next = 0;
    sizes
        .iter()
        .map(|&n| {
            let ids = (next..next + n).collect();
            next += n;
            ids
        })
        .collect()
}

const SHAPE: EpisodeShape = EpisodeShape {
    k_way: 3,
    n_shot: 2,
    q_queries: 4,
};

#[test]
fn episodes_are_well_formed_and_reproducible() {
    let cls = classes(&[10, 6, 20, 8, 7]);
    let sampler = EpisodeSampler::new(&cls, SHAPE, None, 1).unwrap();
    for i in 0..200 {
        let e = sampler.episode(42, i);
        assert_eq!(
            e,
            sampler.episode(42, i),
            "same seed and index, same episode"
        );
        assert_eq!(
            (e.classes.len(), e.support.len(), e.query.len()),
            (3, 6, 12)
        );
        assert_eq!(
            e.classes.iter().collect::<HashSet<_>>().len(),
            3,
            "classes are distinct"
        );
        let all: Vec<usize> = e.support.iter().chain(&e.query).copied().collect();
        assert_eq!(
            all.iter().collect::<HashSet<_>>().len(),
            all.len(),
            "no image used twice"
        );
        for (c, &class) in e.classes.iter().enumerate() {
            for &img in e.support[c * 2..c * 2 + 2]
                .iter()
                .chain(&e.query[c * 4..c * 4 + 4])
            {
                assert!(
                    cls[class].contains(&img),
                    "image {img} belongs to class {class}"
                );
            }
        }
    }
    assert_ne!(sampler.episode(42, 0), sampler.episode(43, 0));
}

#[test]
fn classes_are_drawn_uniformly() {
    let cls = classes(&[6; 6]);
    let sampler = EpisodeSampler::new(&cls, SHAPE, None, 0).unwrap();
    let mut counts = [0usize; 6];
    let n = 6000;
    for i in 0..n {
        for c in sampler.episode(7, i).classes {
            counts[c] += 1;
        }
    }
    // Each class is in an episode with probability 1/2: expect 3000 ± 4 sd (sd ≈ 39).
    for c in counts {
        assert!((c as f64 - 3000.0).abs() < 160.0, "{counts:?}");
    }
}

#[test]
fn small_classes_are_dropped_and_too_few_is_an_error() {
    let cls = classes(&[10, 5, 6, 3, 6]);
    let sampler = EpisodeSampler::new(&cls, SHAPE, None, 0).unwrap();
    assert_eq!((sampler.dropped, sampler.eligible()), (2, 3));
    let err = EpisodeSampler::new(&classes(&[10, 5, 6, 3]), SHAPE, None, 0).unwrap_err();
    assert_eq!(
        err,
        EpisodeError::TooFewClasses {
            k_way: 3,
            per_class: 6,
            n_shot: 2,
            q_queries: 4,
            eligible: 2,
            total: 4
        }
    );
    assert!(err.to_string().contains("only 2 of 4 classes"));
    let empty = EpisodeShape {
        q_queries: 0,
        ..SHAPE
    };
    assert_eq!(
        EpisodeSampler::new(&cls, empty, None, 0).unwrap_err(),
        EpisodeError::EmptyShape
    );
}

#[test]
fn cap_limits_the_images_a_class_contributes() {
    let cls = classes(&[100, 8, 8]);
    let sampler = EpisodeSampler::new(&cls, SHAPE, Some(10), 3).unwrap();
    let mut seen = HashSet::new();
    for i in 0..500 {
        let e = sampler.episode(0, i);
        let pos = e.classes.iter().position(|&c| c == 0).unwrap();
        seen.extend(
            e.support[pos * 2..pos * 2 + 2]
                .iter()
                .chain(&e.query[pos * 4..pos * 4 + 4])
                .copied(),
        );
    }
    assert_eq!(
        seen.len(),
        10,
        "the big class contributes exactly its 10 capped images"
    );
}

#[test]
fn class_split_is_a_seeded_partition() {
    let s = ClassSplit::new(100, 0.2, 0.1, 5);
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (70, 20, 10));
    let mut all: Vec<usize> = s
        .train
        .iter()
        .chain(&s.val)
        .chain(&s.test)
        .copied()
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert_eq!(s, ClassSplit::new(100, 0.2, 0.1, 5));
    assert_ne!(s, ClassSplit::new(100, 0.2, 0.1, 6));
}
