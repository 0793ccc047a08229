//! Episode and run evaluation on constructed embeddings, hand-checked.
use fewshot_core::Distance;
use fewshot_host::embed::Embeddings;
use fewshot_host::episode::{Episode, EpisodeShape};
use fewshot_host::eval::{episode_accuracy, run_errors};

#[test]
fn episode_accuracy_by_hand() {
    // 1-d embeddings. Class 0 support {0, 2} -> prototype 1; class 1 support {10, 12} -> 11.
    // Queries: class 0: 5 (-> 0, right), 7 (-> 1, wrong); class 1: 6.5 (-> 1, right), 20 (-> 1, right).
    let emb = Embeddings {
        dim: 1,
        data: vec![0.0, 2.0, 10.0, 12.0, 5.0, 7.0, 6.5, 20.0],
    };
    let shape = EpisodeShape {
        k_way: 2,
        n_shot: 2,
        q_queries: 2,
    };
    let e = Episode {
        classes: vec![0, 1],
        support: vec![0, 1, 2, 3],
        query: vec![4, 5, 6, 7],
    };
    assert_eq!(
        episode_accuracy(&emb, &e, shape, Distance::L2).unwrap(),
        0.75
    );
}

#[test]
fn run_errors_by_hand() {
    // Training images at 0, 10, 20; tests at 1 (class 0, right), 14 (labelled 2, nearest 1: wrong), 19 (class 2, right).
    let emb = Embeddings {
        dim: 1,
        data: vec![0.0, 10.0, 20.0, 1.0, 14.0, 19.0],
    };
    let r = run_errors("run01", &emb, 3, &[0, 2, 2], Distance::L2).unwrap();
    assert_eq!((r.errors, r.items), (1, 3));
    assert_eq!(r.wrong, vec![1]);
    assert!((r.error_rate - 1.0 / 3.0).abs() < 1e-12);
}
