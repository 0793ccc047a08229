//! Which score should the door threshold? The door protocol of `fewshot
//! door-eval` (the same enrollment, probes and strangers), scored four ways
//! from each probe's distances to every prototype (d₁ ≤ d₂ ≤ … sorted):
//! the nearest distance (the door's today), the nearest minus the
//! runner-up (d₁ − d₂), the nearest minus the mean of the next ten (a
//! cohort of look-alikes), and the nearest standardised by the probe's own
//! distances to the whole gallery. Rank-1 is the same for all (the nearest
//! decides who); only how well strangers are told from people changes.
//!
//! With a fourth argument V > 1, each enrollment shot is also embedded in
//! the V − 1 jittered views of `fewshot train distill --views`
//! ([`fewshot_host::distill::views`]) and the prototype is the mean over
//! shots and views (enrollment happens once, so its cost does not matter);
//! probes stay plain.
//!
//! `cargo run --release -p fewshot-host --features tflite --example door_scores -- MODEL FOLDER K [V]`
//! (MODEL: an exported `.onnx`, or a `.tflite` teacher.)

use std::path::PathBuf;

use fewshot_core::prototype::mean_into;
use fewshot_core::Distance;
use fewshot_host::data::{resolve, ClassSet, Layout, Tensors};
use fewshot_host::distill::Teacher;
use fewshot_host::embed::{Embedder, Embeddings};
use fewshot_host::eval::door::{DoorScores, DoorSet};
use fewshot_host::onnx_model::OnnxEmbedder;
use fewshot_host::stats::tar_at_far;

/// Cohort size of the third score.
const COHORT: usize = 10;

/// The four scores of a probe (lower: more likely a known person) and the
/// index of its nearest prototype.
fn scores(probe: &[f32], prototypes: &[f32], dim: usize, distance: Distance) -> ([f32; 4], usize) {
    let mut d: Vec<(f32, usize)> = prototypes
        .chunks(dim)
        .enumerate()
        .map(|(i, p)| (distance.between(probe, p), i))
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0));
    let d1 = d[0].0;
    let d2 = d.get(1).map_or(d1, |x| x.0);
    let cohort = &d[1..(1 + COHORT).min(d.len())];
    let cohort_mean = cohort.iter().map(|x| x.0).sum::<f32>() / cohort.len().max(1) as f32;
    let n = d.len() as f32;
    let mean = d.iter().map(|x| x.0).sum::<f32>() / n;
    let sd = (d.iter().map(|x| (x.0 - mean).powi(2)).sum::<f32>() / n)
        .sqrt()
        .max(1e-12);
    ([d1, d1 - d2, d1 - cohort_mean, (d1 - mean) / sd], d[0].1)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, folder, k, views) = match args.as_slice() {
        [m, f, k] => (m, f, k, 1),
        [m, f, k, v] => (m, f, k, v.parse()?),
        _ => anyhow::bail!("usage: door_scores MODEL FOLDER K [V]"),
    };
    let model_path = PathBuf::from(model);
    let model: Box<dyn Embedder> = if model.ends_with(".tflite") {
        Box::new(Teacher::load(&resolve(&model_path)?, None)?)
    } else {
        Box::new(OnnxEmbedder::load(&model_path)?)
    };
    let k: usize = k.parse()?;
    let set = ClassSet::load(&resolve(&PathBuf::from(folder))?, Layout::Auto)?;
    let door = DoorSet::new(&set, None, k)?;
    let tensors = Tensors::load(&door.paths, &model.recipe(), false)?;
    let emb = Embeddings::compute(model.as_ref(), &tensors, 256, false)?;
    let distance = model.distance().unwrap_or(Distance::Cosine);
    let dim = emb.dim;
    let mut prototypes = door.prototypes(&emb)?;
    if views > 1 {
        // The shots in the jittered views (view 0, the plain one, is `emb`);
        // each prototype the mean over its shots in every view.
        let shots: Vec<usize> = door.enrolled.iter().flat_map(|(_, s)| s.clone()).collect();
        let paths: Vec<PathBuf> = shots.iter().map(|&r| door.paths[r].clone()).collect();
        let jittered = (1..views)
            .map(|v| {
                let recipe = fewshot_host::distill::views::view_recipe(&model.recipe(), v)
                    .map_err(anyhow::Error::msg)?;
                let tensors = Tensors::load(&paths, &recipe, false)?;
                Ok(Embeddings::compute(model.as_ref(), &tensors, 256, false)?)
            })
            .collect::<anyhow::Result<Vec<Embeddings>>>()?;
        let mut at = 0;
        for ((_, s), proto) in door.enrolled.iter().zip(prototypes.chunks_mut(dim)) {
            let plain = s.iter().map(|&r| emb.row(r));
            let others = jittered
                .iter()
                .flat_map(|e| (at..at + s.len()).map(move |i| e.row(i)));
            mean_into(plain.chain(others), proto)?;
            at += s.len();
        }
    }
    let mut by_score: [DoorScores; 4] = Default::default();
    for &(row, id) in &door.genuine {
        let (s, nearest) = scores(emb.row(row), &prototypes, dim, distance);
        for (scores, v) in by_score.iter_mut().zip(s) {
            scores.genuine.push((v, nearest == id));
        }
    }
    for &row in &door.strangers {
        let (s, _) = scores(emb.row(row), &prototypes, dim, distance);
        for (scores, v) in by_score.iter_mut().zip(s) {
            scores.strangers.push(v);
        }
    }
    println!(
        "{model_path:?} on {folder}, K = {k}, {views} enrollment view(s): {} enrolled, {} genuine, {} stranger probes; rank-1 {:.2} %",
        door.enrolled.len(),
        door.genuine.len(),
        door.strangers.len(),
        100.0 * by_score[0].rank1()
    );
    let names = [
        "nearest distance d1",
        "d1 - d2 (runner-up)",
        "d1 - mean of the next 10",
        "d1 standardised over the gallery",
    ];
    for (name, s) in names.iter().zip(&by_score) {
        let roc = s.roc();
        let at = |far| tar_at_far(&roc, far).map_or(f64::NAN, |p| 100.0 * p.tar);
        println!(
            "{name:>34}: TAR {:.2} % at FAR 1 %, {:.2} % at FAR 0.1 %",
            at(0.01),
            at(0.001)
        );
    }
    Ok(())
}
