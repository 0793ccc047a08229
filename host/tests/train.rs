//! A tiny Prototypical Networks run on a handful of real Omniglot classes:
//! the loss falls, accuracy beats chance clearly, and a resumed run ends
//! where an uninterrupted one does.
mod common;

use std::path::Path;

use fewshot_host::data::{ClassSet, Layout, Tensors};
use fewshot_host::embed::{Embedder, Embeddings};
use fewshot_host::episode::{EpisodeSampler, EpisodeShape};
use fewshot_host::eval::evaluate_episodes;
use fewshot_host::nn::checkpoint::CandleEmbedder;
use fewshot_host::nn::encoder::EncoderConfig;
use fewshot_host::train::{read_metrics, train_protonet, RunFiles, StopAt, TrainConfig};

fn config(data: &Path, episodes: usize) -> TrainConfig {
    common::tiny_config(data, episodes)
}

#[test]
fn loss_falls_and_accuracy_beats_chance() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::greek_subset(&data, 12);
    let out = tmp.path().join("run");
    let cfg = config(&data, 200);
    let state = train_protonet(&cfg, &out, false, StopAt::default(), false).unwrap();
    assert_eq!(state.episode, 200);
    let files = RunFiles { dir: out.clone() };
    let metrics = read_metrics(&files.metrics());
    let losses: Vec<f64> = metrics.iter().filter_map(|m| m.loss).collect();
    assert_eq!(losses.len(), 10);
    let first = losses[..2].iter().sum::<f64>() / 2.0;
    let last = losses[8..].iter().sum::<f64>() / 2.0;
    assert!(last < 0.7 * first, "loss should fall: {losses:?}");
    assert!(files.curve().is_file() && files.best().is_file());

    // The best checkpoint, loaded as an evaluator, classifies the 3 held-out
    // characters (×4 rotations: 12 classes) far above chance (20% for 5-way).
    let model = CandleEmbedder::load(&files.best()).unwrap();
    let set = ClassSet::load(&data, Layout::Auto).unwrap();
    let val: Vec<String> = model.config().training["split"]["val_classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(val.len(), 3);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .unwrap();
    assert_eq!(
        model.config().training["commit"],
        String::from_utf8_lossy(&head.stdout).trim(),
        "the checkpoint names the commit it was trained from"
    );
    assert_eq!(
        model.trained_classes().map(|c| c.len()),
        Some(12),
        "the checkpoint names every class it saw"
    );
    let mut paths = Vec::new();
    let mut classes = Vec::new();
    for c in set.classes.iter().filter(|c| !val.contains(&c.name)) {
        classes.push((paths.len()..paths.len() + c.images.len()).collect::<Vec<_>>());
        paths.extend(c.images.iter().cloned());
    }
    let tensors = Tensors::load(&paths, &model.recipe(), false).unwrap();
    let emb = Embeddings::compute(&model, &tensors, 64, false).unwrap();
    let sampler = EpisodeSampler::new(
        &classes,
        EpisodeShape {
            k_way: 5,
            n_shot: 1,
            q_queries: 5,
        },
        None,
        0,
    )
    .unwrap();
    let report =
        evaluate_episodes(&emb, &sampler, 200, 9, fewshot_core::Distance::L2, false).unwrap();
    assert!(report.summary.mean > 0.5, "accuracy {:?}", report.summary);
    assert!(
        state.best_val.unwrap() > 0.4,
        "validation accuracy {:?}",
        state.best_val
    );
}

#[test]
fn resuming_ends_where_an_uninterrupted_run_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::greek_subset(&data, 8);
    let straight = tmp.path().join("straight");
    train_protonet(
        &config(&data, 40),
        &straight,
        false,
        StopAt::default(),
        false,
    )
    .unwrap();
    let resumed = tmp.path().join("resumed");
    // Stop after 13 episodes (between checkpoints), then resume in a new call.
    let stop = StopAt {
        episode: Some(13),
        seconds: None,
    };
    let state = train_protonet(&config(&data, 40), &resumed, false, stop, false).unwrap();
    assert_eq!(state.episode, 13);
    // As if the process had gone on to log episode 20 and was then killed.
    let mut log = std::fs::read_to_string(resumed.join("metrics.jsonl")).unwrap();
    log.push_str("{\"episode\":20,\"loss\":9.0,\"accuracy\":0.0,\"val_accuracy\":null,\"val_ci95\":null,\"lr\":0.003,\"ms_per_episode\":1.0}\n");
    std::fs::write(resumed.join("metrics.jsonl"), log).unwrap();
    let state =
        train_protonet(&config(&data, 40), &resumed, true, StopAt::default(), false).unwrap();
    assert_eq!(state.episode, 40);
    // The metrics of episodes 14..20, written before the stop, are not repeated.
    let metrics = read_metrics(&resumed.join("metrics.jsonl"));
    assert!(
        metrics.iter().all(|m| m.loss != Some(9.0)),
        "the line logged after the checkpoint is dropped"
    );
    let episodes: Vec<usize> = metrics.iter().map(|m| m.episode).collect();
    assert!(
        episodes.windows(2).all(|w| w[0] <= w[1]),
        "metrics stay in episode order: {episodes:?}"
    );
    let a = candle_core::safetensors::load(
        straight.join("last.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let b =
        candle_core::safetensors::load(resumed.join("last.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let diff = (t - &b[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{name} differs by {diff}");
    }
    // Resuming with other settings is refused, and so is starting over a run.
    let mut other = config(&data, 40);
    other.lr = 1.0;
    let err = train_protonet(&other, &resumed, true, StopAt::default(), false).unwrap_err();
    assert!(err.to_string().contains("differ"), "{err}");
    let err = train_protonet(
        &config(&data, 40),
        &resumed,
        false,
        StopAt::default(),
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
}

/// CosFace pre-training on 12 Greek characters: the batch loss falls, the
/// checkpoint says what trained it, and a resume with other settings is refused.
#[test]
fn cosface_loss_falls_and_resume_checks_its_settings() {
    use fewshot_host::augment::FaceAugment;
    use fewshot_host::train::{train_cosface, CosFaceConfig};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::greek_subset(&data, 12);
    let out = tmp.path().join("run");
    let mut cfg = config(&data, 120);
    cfg.rotations = false;
    let cosface = CosFaceConfig {
        batch: 32,
        scale: 10.0,
        margin: 0.2,
        augment: Some(FaceAugment {
            max_shift: 1,
            flip: false,
            brightness: 0.0,
            contrast: 0.0,
        }),
    };
    let state = train_cosface(&cfg, &cosface, &out, false, StopAt::default(), false).unwrap();
    assert_eq!(state.episode, 120);
    let metrics = read_metrics(&RunFiles { dir: out.clone() }.metrics());
    let losses: Vec<f64> = metrics.iter().filter_map(|m| m.loss).collect();
    assert_eq!(losses.len(), 6);
    assert!(
        losses[5] < 0.5 * losses[0],
        "CosFace loss should fall: {losses:?}"
    );
    let model = CandleEmbedder::load(&out.join("best.safetensors")).unwrap();
    assert_eq!(model.config().method, "cosface");

    let other = CosFaceConfig {
        margin: 0.3,
        ..cosface
    };
    let err = train_cosface(&cfg, &other, &out, true, StopAt::default(), false).unwrap_err();
    assert!(err.to_string().contains("settings differ"), "{err}");
}

/// Siamese pre-training on 12 Greek characters (×4 rotations): for the
/// pair-wise head and for the triplet loss with each mining, the batch loss
/// falls; the checkpoint names its objective; a resume with another margin is
/// refused.
#[test]
fn siamese_losses_fall() {
    use fewshot_host::nn::siamese::{EmbeddingDistance, Mining};
    use fewshot_host::train::{train_siamese, SiameseConfig, SiameseLoss};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::greek_subset(&data, 12);
    let cfg = config(&data, 120);
    let triplet = |mining| SiameseLoss::Triplet {
        mining,
        margin: 1.0,
        distance: EmbeddingDistance::SquaredL2,
    };
    for (name, loss, method) in [
        ("pairwise", SiameseLoss::Pairwise, "siamese-pairwise"),
        ("random", triplet(Mining::Random), "siamese-triplet"),
        ("batch-hard", triplet(Mining::BatchHard), "siamese-triplet"),
    ] {
        let siamese = SiameseConfig {
            loss,
            classes: 8,
            per_class: 4,
            augment: None,
        };
        let out = tmp.path().join(name);
        let state = train_siamese(&cfg, &siamese, &out, false, StopAt::default(), false).unwrap();
        assert_eq!(state.episode, 120);
        let metrics = read_metrics(&RunFiles { dir: out.clone() }.metrics());
        let losses: Vec<f64> = metrics.iter().filter_map(|m| m.loss).collect();
        assert_eq!(losses.len(), 6);
        let first = losses[..2].iter().sum::<f64>() / 2.0;
        let last = losses[4..].iter().sum::<f64>() / 2.0;
        eprintln!("{name}: losses {losses:?}, best val {:?}", state.best_val);
        assert!(last < 0.8 * first, "{name} loss should fall: {losses:?}");
        let model = CandleEmbedder::load(&out.join("best.safetensors")).unwrap();
        assert_eq!(model.config().method, method);
    }

    let other = SiameseConfig {
        loss: SiameseLoss::Triplet {
            mining: Mining::BatchHard,
            margin: 0.5,
            distance: EmbeddingDistance::SquaredL2,
        },
        classes: 8,
        per_class: 4,
        augment: None,
    };
    let err = train_siamese(
        &cfg,
        &other,
        &tmp.path().join("batch-hard"),
        true,
        StopAt::default(),
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("settings differ"), "{err}");
}

/// `init` starts a run from another run's encoder: with a zero learning rate
/// the new run's encoder weights are the old run's exactly (the pair-wise head,
/// which the old run lacks, is initialised afresh); without it they are not;
/// an encoder of another width is refused by name.
#[test]
fn init_starts_from_the_checkpoint_encoder() {
    use fewshot_host::train::{train_siamese, SiameseConfig, SiameseLoss};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::greek_subset(&data, 12);
    let first = tmp.path().join("protonet");
    train_protonet(&config(&data, 20), &first, false, StopAt::default(), false).unwrap();
    let init = first.join("best.safetensors");
    let siamese = SiameseConfig {
        loss: SiameseLoss::Pairwise,
        classes: 4,
        per_class: 2,
        augment: None,
    };
    let frozen = |init: Option<&Path>, name: &str| {
        let cfg = TrainConfig {
            lr: 0.0,
            val_every: 1,
            init: init.map(Path::to_path_buf),
            ..config(&data, 1)
        };
        let out = tmp.path().join(name);
        train_siamese(&cfg, &siamese, &out, false, StopAt::default(), false)
            .map(|_| RunFiles { dir: out }.last())
    };
    let load = |p: &Path| candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
    let before = load(&init);
    let same = |p: &Path| {
        let after = load(p);
        let mut compared = 0;
        for (name, w) in &before {
            if name.contains("running_") {
                continue;
            }
            let v = &after[name];
            let diff = (w - v).unwrap().abs().unwrap().max_all().unwrap();
            if diff.to_scalar::<f32>().unwrap() != 0.0 {
                return false;
            }
            compared += 1;
        }
        assert!(compared >= 8, "{compared} tensors compared");
        assert!(after.keys().any(|n| n.starts_with("head.")));
        true
    };
    assert!(same(&frozen(Some(&init), "from-init").unwrap()));
    assert!(!same(&frozen(None, "fresh").unwrap()));

    let wider = TrainConfig {
        init: Some(init.clone()),
        encoder: EncoderConfig::Conv4 {
            in_channels: 1,
            hidden: 8,
            widths: None,
            depths: None,
            input_size: 28,
            embedding: None,
        },
        ..config(&data, 1)
    };
    let err = train_siamese(
        &wider,
        &siamese,
        &tmp.path().join("wider"),
        false,
        StopAt::default(),
        false,
    )
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("--init") && err.contains("encoder"), "{err}");

    // Resuming restores the run's own checkpoint: the init file is no longer read.
    std::fs::remove_file(&init).unwrap();
    let cfg = TrainConfig {
        lr: 0.0,
        val_every: 1,
        init: Some(init.clone()),
        ..config(&data, 1)
    };
    let resumed = tmp.path().join("from-init");
    train_siamese(&cfg, &siamese, &resumed, true, StopAt::default(), false).unwrap();
}

/// `--val-k-way`: validation episodes of their own way, capped by the
/// validation classes; recorded in `run.json`, so a resume with another
/// value is refused.
#[test]
fn validation_takes_its_own_way() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::greek_subset(&data, 12);
    let mut cfg = config(&data, 20);
    let k = cfg.shape.k_way;
    assert_eq!(cfg.val_shape(100).k_way, k);
    assert_eq!(cfg.val_shape(2).k_way, 2);
    cfg.val_k_way = Some(k + 3);
    assert_eq!(cfg.val_shape(100).k_way, k + 3);
    assert_eq!(cfg.val_shape(k + 1).k_way, k + 1);
    assert_eq!(
        (cfg.val_shape(100).n_shot, cfg.val_shape(100).q_queries),
        (cfg.shape.n_shot, cfg.shape.q_queries)
    );
    cfg.val_k_way = Some(2);
    let out = tmp.path().join("run");
    let stop = StopAt {
        episode: Some(10),
        ..StopAt::default()
    };
    train_protonet(&cfg, &out, false, stop, false).unwrap();
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["val_k_way"], 2);
    let mut other = cfg.clone();
    other.val_k_way = Some(3);
    assert!(train_protonet(&other, &out, true, StopAt::default(), false).is_err());
    train_protonet(&cfg, &out, true, StopAt::default(), false).unwrap();
}
