//! How much a Matching Network's full context embeddings move the embeddings:
//! over 20-way 1-shot episodes of held-out classes, `|g − g'| / |g'|` for the
//! support set (the bidirectional LSTM's share) and `|f − f'| / |f'|` for the
//! queries (the attention LSTM's), next to how far apart the embeddings of
//! two classes are, `|g'_i − g'_j| / |g'|`; and the accuracy of the same
//! encoder's embeddings with the LSTMs and without them (plain attention with
//! the head's similarity), on the same episodes.
//!
//! `cargo run --release -p fewshot-host --example fce_share -- CHECKPOINT [DATA]`
//! (default data: `omniglot/images_background_small2`, the checkpoint's
//! training classes left out; 200 episodes).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use fewshot_host::data::{resolve, ClassSet, Layout, Tensors};
use fewshot_host::embed::{Embedder, Embeddings};
use fewshot_host::episode::{EpisodeSampler, EpisodeShape};
use fewshot_host::nn::checkpoint::{load_matching_head, CandleEmbedder};

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt()
}

fn diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y) * (x - y)))
        .sum::<f64>()
        .sqrt()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let checkpoint = PathBuf::from(args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: fce_share CHECKPOINT [DATA] (a Matching checkpoint with FCE)")
    })?);
    let data = resolve(&PathBuf::from(
        args.next()
            .unwrap_or_else(|| "omniglot/images_background_small2".into()),
    ))?;
    let head = load_matching_head(&checkpoint)?
        .ok_or_else(|| anyhow::anyhow!("{} is not a Matching Network", checkpoint.display()))?;
    let fce = head
        .fce
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{} has no FCE", checkpoint.display()))?;
    let model = CandleEmbedder::load(&checkpoint)?;
    let mut set = ClassSet::load(&data, Layout::Auto)?;
    if let Some(names) = model.trained_classes() {
        set.exclude_names(names.iter().map(String::as_str));
    }
    let mut ids = Vec::new();
    let mut paths = Vec::new();
    for class in &set.classes {
        ids.push((paths.len()..paths.len() + class.images.len()).collect::<Vec<_>>());
        paths.extend(class.images.iter().cloned());
    }
    let shape = EpisodeShape {
        k_way: 20,
        n_shot: 1,
        q_queries: 5,
    };
    let sampler = EpisodeSampler::new(&ids, shape, None, 0)?;
    let tensors = Tensors::load(&paths, &model.recipe(), false)?;
    let emb = Embeddings::compute(&model, &tensors, 256, false)?;
    let d = emb.dim;
    let rows = |ids: &[usize]| -> anyhow::Result<Tensor> {
        let v: Vec<f32> = ids.iter().flat_map(|&i| emb.row(i).to_vec()).collect();
        Ok(Tensor::from_vec(v, (ids.len(), d), &Device::Cpu)?)
    };
    let plain = fewshot_host::nn::matching::MatchingHead {
        similarity: head.similarity,
        scale: head.scale,
        fce: None,
    };
    let labels: Vec<u32> = (0..shape.k_way * shape.q_queries)
        .map(|i| (i / shape.q_queries) as u32)
        .collect();
    let labels = Tensor::from_vec(labels, shape.k_way * shape.q_queries, &Device::Cpu)?;
    let (mut with, mut without) = (0.0, 0.0);
    let (mut g_share, mut f_share, mut between, mut n) = (0.0, 0.0, 0.0, 0usize);
    for e in 0..200u64 {
        let episode = sampler.episode(0, e);
        let g_prime = rows(&episode.support)?;
        let f_prime = rows(&episode.query)?;
        with +=
            fewshot_host::nn::method::accuracy(&head.logits(&g_prime, &f_prime, shape)?, &labels)?;
        without +=
            fewshot_host::nn::method::accuracy(&plain.logits(&g_prime, &f_prime, shape)?, &labels)?;
        let g = fce.support_context(&g_prime)?;
        let f = fce.query_context(&f_prime, &g)?;
        let gp: Vec<Vec<f32>> = g_prime.to_vec2()?;
        let g: Vec<Vec<f32>> = g.to_vec2()?;
        let fp: Vec<Vec<f32>> = f_prime.to_vec2()?;
        let f: Vec<Vec<f32>> = f.to_vec2()?;
        let mean_norm = gp.iter().map(|v| norm(v)).sum::<f64>() / gp.len() as f64;
        g_share += gp
            .iter()
            .zip(&g)
            .map(|(a, b)| diff(a, b) / norm(a))
            .sum::<f64>()
            / gp.len() as f64;
        f_share += fp
            .iter()
            .zip(&f)
            .map(|(a, b)| diff(a, b) / norm(a))
            .sum::<f64>()
            / fp.len() as f64;
        let mut pairs = 0.0;
        for i in 0..gp.len() {
            for j in i + 1..gp.len() {
                pairs += diff(&gp[i], &gp[j]) / mean_norm;
            }
        }
        between += pairs / (gp.len() * (gp.len() - 1) / 2) as f64;
        n += 1;
    }
    let n = n as f64;
    println!(
        "{} over {n} 20-way 1-shot episodes of {}: |g − g'|/|g'| {:.3}, |f − f'|/|f'| {:.3}, between classes |g'_i − g'_j|/|g'| {:.3}; accuracy with the LSTMs {:.2} %, without them {:.2} %",
        checkpoint.display(),
        data.display(),
        g_share / n,
        f_share / n,
        between / n,
        100.0 * with / n,
        100.0 * without / n
    );
    Ok(())
}
