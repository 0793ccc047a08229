//! How far a teacher's embedding moves when its input is shifted, next to how
//! far apart two photos of one person and of two people are: whether shifts
//! of the student's input keep the teacher's target valid.
//!
//! `cargo run --release -p fewshot-host --features tflite --example teacher_drift [-- TEACHER [PEOPLE]]`
//! (default teacher: the data folder's `models/mobilefacenet.tflite`; 100 people of
//! `faces/lfw-devtrain` with two photos or more, their first two photos).

use std::path::PathBuf;

use fewshot_host::augment::{affine, AffineParams, Shape};
use fewshot_host::data::{preprocess_file, resolve, ClassSet, Layout};
use fewshot_host::distill::Teacher;
use fewshot_host::embed::Embedder;

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let teacher = match args.next() {
        Some(p) => PathBuf::from(p),
        None => resolve(&PathBuf::from("models/mobilefacenet.tflite"))?,
    };
    let people: usize = args.next().map_or(Ok(100), |s| s.parse())?;
    let teacher = Teacher::load(&teacher, None)?;
    let recipe = teacher.recipe();
    let shape = Shape {
        channels: recipe.channels,
        height: recipe.height,
        width: recipe.width,
    };
    let set = ClassSet::load(
        &resolve(&PathBuf::from("faces/lfw-devtrain"))?,
        Layout::Auto,
    )?;
    let pairs: Vec<_> = set
        .classes
        .iter()
        .filter(|c| c.images.len() >= 2)
        .take(people)
        .collect();
    let mut firsts = Vec::new();
    let (mut genuine, mut n) = (0.0, 0);
    // Shifts in pixels of a 64-pixel student crop, applied at the teacher's size.
    let shifts = [1.0f32, 2.0, 4.0];
    let mut drift = vec![(0.0f64, 0.0f64); shifts.len()];
    for class in &pairs {
        let a = preprocess_file(&class.images[0], &recipe)?;
        let b = preprocess_file(&class.images[1], &recipe)?;
        let ea = teacher.embed(&a)?;
        genuine += cosine(&ea, &teacher.embed(&b)?);
        n += 1;
        for (i, &s) in shifts.iter().enumerate() {
            let px = s * recipe.width as f32 / 64.0;
            for (dx, dy, slot) in [(px, 0.0, 0), (0.0, px, 1)] {
                let shifted = affine(
                    &a,
                    shape,
                    AffineParams {
                        scale: 1.0,
                        shift: (dx, dy),
                        ..Default::default()
                    },
                    0.0,
                );
                let c = cosine(&ea, &teacher.embed(&shifted)?);
                if slot == 0 {
                    drift[i].0 += c;
                } else {
                    drift[i].1 += c;
                }
            }
        }
        firsts.push(ea);
    }
    let mut impostor = 0.0;
    for i in 0..firsts.len() {
        impostor += cosine(&firsts[i], &firsts[(i + 1) % firsts.len()]);
    }
    let n = n as f64;
    println!("teacher {}, {} people", teacher.name(), pairs.len());
    println!("mean cosine, two photos of one person: {:.3}", genuine / n);
    println!("mean cosine, photos of two people:    {:.3}", impostor / n);
    for (i, s) in shifts.iter().enumerate() {
        println!(
            "mean cosine to the unshifted crop, shift {s} px of 64 across / down: {:.3} / {:.3}",
            drift[i].0 / n,
            drift[i].1 / n
        );
    }
    Ok(())
}
