//! How closely an exported student follows its teacher on faces it was
//! trained on and on faces it never saw: the mean cosine between the
//! student's embedding and the teacher's, over each folder's images.
//! A student that fits its training faces no better than the held-out ones
//! underfits (capacity); one that fits them much better overfits (data).
//!
//! `cargo run --release -p fewshot-host --features tflite --example student_fit -- STUDENT.onnx FOLDER [FOLDER ...]`
//! (at most 2 000 images of each folder, the first by path; teacher: the data
//! folder's `models/mobilefacenet.tflite`).

use std::path::PathBuf;

use fewshot_host::data::{resolve, ClassSet, Layout, Tensors};
use fewshot_host::distill::Teacher;
use fewshot_host::embed::{Embedder, Embeddings};
use fewshot_host::onnx_model::OnnxEmbedder;

/// Each image of `paths` embedded by `model`, with its own preprocessing.
fn embed(model: &dyn Embedder, paths: &[PathBuf]) -> anyhow::Result<Embeddings> {
    let tensors = Tensors::load(paths, &model.recipe(), false)?;
    Ok(Embeddings::compute(model, &tensors, 256, false)?)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let student =
        PathBuf::from(args.next().ok_or_else(|| {
            anyhow::anyhow!("usage: student_fit STUDENT.onnx FOLDER [FOLDER ...]")
        })?);
    let student = OnnxEmbedder::load(&student)?;
    let teacher = Teacher::load(
        &resolve(&PathBuf::from("models/mobilefacenet.tflite"))?,
        None,
    )?;
    for folder in args {
        let set = ClassSet::load(&resolve(&PathBuf::from(&folder))?, Layout::Auto)?;
        let mut paths: Vec<PathBuf> = set
            .classes
            .iter()
            .flat_map(|c| c.images.iter().cloned())
            .collect();
        paths.sort();
        paths.truncate(2000);
        let (s, t) = (embed(&student, &paths)?, embed(&teacher, &paths)?);
        let c: Vec<f64> = (0..s.len())
            .map(|i| 1.0 - f64::from(fewshot_core::distance::cosine(s.row(i), t.row(i))))
            .collect();
        let mean = c.iter().sum::<f64>() / c.len() as f64;
        let sd = (c.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / c.len() as f64).sqrt();
        println!(
            "{folder}: {} images, student-teacher cosine mean {mean:.4}, sd {sd:.4}",
            c.len()
        );
    }
    Ok(())
}
