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

/// Groups of classes for `within_groups`: class `i` is in group `labels[i]`.
fn group_members(labels: &[usize], group: usize) -> HashSet<usize> {
    (0..labels.len()).filter(|&c| labels[c] == group).collect()
}

#[test]
fn within_alphabet_episodes_take_their_classes_from_one_group() {
    // Groups of 8, 3 and 12 classes; 5-way: the group of 3 gives all three
    // and two come from elsewhere.
    let sizes = [8, 3, 12];
    let labels: Vec<usize> = sizes
        .iter()
        .enumerate()
        .flat_map(|(g, &n)| std::iter::repeat_n(g, n))
        .collect();
    let cls = classes(&vec![6; labels.len()]);
    let shape = EpisodeShape {
        k_way: 5,
        n_shot: 1,
        q_queries: 1,
    };
    let sampler = EpisodeSampler::new(&cls, shape, None, 0)
        .unwrap()
        .within_groups(&labels, 1.0)
        .unwrap();
    let mut chosen = [0usize; 3];
    let episodes = 6000;
    for i in 0..episodes {
        let e = sampler.episode(7, i);
        assert_eq!(e.classes.iter().collect::<HashSet<_>>().len(), 5);
        // The group that gave the episode: the one with the most classes in it.
        let counts: Vec<usize> = (0..3)
            .map(|g| e.classes.iter().filter(|&&c| labels[c] == g).count())
            .collect();
        let g = (0..3).max_by_key(|&g| counts[g]).unwrap();
        if counts[g] == 5 {
            assert_ne!(g, 1, "the group of 3 cannot give 5 classes");
        } else {
            assert_eq!(
                (g, counts[g]),
                (1, 3),
                "a short episode is the small group whole: {:?}",
                e.classes
            );
            assert!(group_members(&labels, 1)
                .iter()
                .all(|c| e.classes.contains(c)));
        }
        chosen[g] += 1;
    }
    // Groups are chosen in proportion to their classes: 8, 3, 12 of 23.
    for g in 0..3 {
        let expected = episodes as f64 * sizes[g] as f64 / 23.0;
        let sd = (expected * (1.0 - sizes[g] as f64 / 23.0)).sqrt();
        assert!(
            (chosen[g] as f64 - expected).abs() < 5.0 * sd,
            "group {g}: chosen {} times, expected {expected:.0}",
            chosen[g]
        );
    }
}

#[test]
fn within_alphabet_share_mixes_the_two_kinds_and_zero_changes_nothing() {
    // 10 groups of 10 classes, 10-way: a plain episode is inside one group
    // with probability 10 · C(10,10) / C(100,10), about 6e-13.
    let labels: Vec<usize> = (0..100).map(|c| c / 10).collect();
    let cls = classes(&[4; 100]);
    let shape = EpisodeShape {
        k_way: 10,
        n_shot: 1,
        q_queries: 1,
    };
    let plain = EpisodeSampler::new(&cls, shape, None, 0).unwrap();
    let none = plain.clone().within_groups(&labels, 0.0).unwrap();
    let half = plain.clone().within_groups(&labels, 0.5).unwrap();
    let episodes = 4000;
    let mut inside = 0;
    for i in 0..episodes {
        assert_eq!(
            none.episode(3, i),
            plain.episode(3, i),
            "share 0: as before"
        );
        let e = half.episode(3, i);
        if e.classes.iter().all(|&c| labels[c] == labels[e.classes[0]]) {
            inside += 1;
        }
    }
    // Binomial(4000, 0.5): sd 31.6.
    assert!(
        (inside as f64 - 2000.0).abs() < 160.0,
        "{inside} of {episodes} episodes inside one group"
    );
}

#[test]
fn within_alphabet_rejects_a_bad_share_and_short_labels() {
    let cls = classes(&[6; 5]);
    let sampler = EpisodeSampler::new(&cls, SHAPE, None, 0).unwrap();
    for share in [-0.1, 1.5, f64::NAN] {
        let err = sampler.clone().within_groups(&[0; 5], share).unwrap_err();
        assert!(
            matches!(err, EpisodeError::BadGroups(_)),
            "share {share}: {err}"
        );
    }
    let err = sampler.within_groups(&[0, 0, 1], 1.0).unwrap_err();
    assert!(err.to_string().contains("3 group labels"), "{err}");
}
