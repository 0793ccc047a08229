//! How much of the teacher's accuracy at a door survives the student's
//! input: the teacher run on aligned crops made at a smaller size (and
//! grey), upsampled back to its own 112 × 112 RGB. If the teacher itself
//! falls at the student's input, the input (not the student) caps the door.
//!
//! `noise:C` instead of a size gives the teacher's own embedding turned by a
//! random direction to cosine exactly C with itself: what a student that
//! errs at random, at that mean cosine, would score at the same door.
//!
//! `cargo run --release -p fewshot-host --features tflite --example teacher_input -- DATA [SIZE[:CHANNELS] | noise:C ...]`
//! (default: 112:3 64:3 64:1 80:1 96:1; K = 2 and 1 shots enrolled; the mean cosine of
//! each input's embeddings to the teacher's on its own input is printed too; the
//! data folder's `models/mobilefacenet.tflite` as teacher).

use std::path::PathBuf;

use fewshot_core::Distance;
use fewshot_core::Recipe;
use fewshot_host::data::{resolve, ClassSet, Layout, Tensors};
use fewshot_host::distill::{Teacher, MOBILEFACENET};
use fewshot_host::embed::Embeddings;
use fewshot_host::eval::door::DoorSet;
use fewshot_host::stats::tar_at_far;
use rand::{RngExt, SeedableRng};

/// Each row of `emb` replaced by a unit vector at cosine `c` to it, turned
/// towards a random (Gaussian, seeded) direction orthogonal to it.
fn turned(emb: &Embeddings, c: f32, seed: u64) -> Embeddings {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(emb.data.len());
    for i in 0..emb.len() {
        let t = emb.row(i);
        let norm = t.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        let t: Vec<f32> = t.iter().map(|v| v / norm).collect();
        // Box-Muller normals, then the part orthogonal to t, unit length.
        let mut n: Vec<f32> = (0..t.len())
            .map(|_| {
                let (u, v): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
                (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
            })
            .collect();
        let along: f32 = n.iter().zip(&t).map(|(a, b)| a * b).sum();
        n.iter_mut().zip(&t).for_each(|(a, b)| *a -= along * b);
        let nn = n.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        let s = (1.0 - c * c).max(0.0).sqrt();
        data.extend(t.iter().zip(&n).map(|(a, b)| c * a + s * b / nn));
    }
    Embeddings { dim: emb.dim, data }
}

/// Mean over rows of the cosine between `a`'s row and `b`'s.
fn mean_cosine(a: &Embeddings, b: &Embeddings) -> f64 {
    let unit = |r: &[f32]| {
        let n = r
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        r.iter().map(|v| *v as f64 / n).collect::<Vec<f64>>()
    };
    let total: f64 = (0..a.len())
        .map(|i| {
            let (x, y) = (unit(a.row(i)), unit(b.row(i)));
            x.iter().zip(&y).map(|(p, q)| p * q).sum::<f64>()
        })
        .sum();
    total / a.len().max(1) as f64
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let data = resolve(&PathBuf::from(
        args.next().unwrap_or_else(|| "faces/orl".into()),
    ))?;
    let mut inputs: Vec<(usize, usize)> = Vec::new();
    let mut noise: Vec<f32> = Vec::new();
    for a in args {
        let (s, c) = a.split_once(':').unwrap_or((&a, "1"));
        if s == "noise" {
            noise.push(c.parse()?);
        } else {
            inputs.push((s.parse()?, c.parse()?));
        }
    }
    if inputs.is_empty() && noise.is_empty() {
        inputs = vec![(112, 3), (64, 3), (64, 1), (80, 1), (96, 1)];
    }
    let teacher_path = resolve(&PathBuf::from("models/mobilefacenet.tflite"))?;
    let teacher = Teacher::load(&teacher_path, None)?;
    let set = ClassSet::load(&data, Layout::Flat)?;
    for k in [2, 1] {
        let door = DoorSet::new(&set, None, k)?;
        let report = |what: String, emb: &Embeddings| -> anyhow::Result<()> {
            let protos = door.prototypes(emb)?;
            let scores = door.scores(emb, &protos, Distance::Cosine)?;
            let roc = scores.roc();
            let at = |far| tar_at_far(&roc, far).map_or(f64::NAN, |p| 100.0 * p.tar);
            println!(
                "K = {k}, {what}: {} people, rank-1 {:.1} %, TAR at FAR 1 % {:.1} %, 0.1 % {:.1} %",
                door.enrolled.len(),
                100.0 * scores.rank1(),
                at(1e-2),
                at(1e-3)
            );
            Ok(())
        };
        let own = Embeddings::compute(
            &teacher,
            &Tensors::load(&door.paths, &MOBILEFACENET, false)?,
            256,
            false,
        )?;
        if !noise.is_empty() {
            for &c in &noise {
                report(format!("teacher turned to cosine {c}"), &turned(&own, c, 7))?;
            }
        }
        for &(side, channels) in &inputs {
            let low = Recipe {
                width: side,
                height: side,
                channels,
                ..MOBILEFACENET
            };
            let model = Teacher::load(&teacher_path, None)?.at_input(&low)?;
            let tensors = Tensors::load(&door.paths, &low, false)?;
            let emb = Embeddings::compute(&model, &tensors, 256, false)?;
            report(format!("input {side}×{side}×{channels}"), &emb)?;
            println!(
                "  mean cosine to the teacher on its own input: {:.4}",
                mean_cosine(&emb, &own)
            );
        }
    }
    Ok(())
}
