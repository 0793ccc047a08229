//! How closely an exported student follows its teacher on faces it was
//! trained on and on faces it never saw: the mean cosine between the
//! student's embedding and the teacher's, over each folder's images.
//! A student that fits its training faces no better than the held-out ones
//! underfits (capacity); one that fits them much better overfits (data).
//!
//! `cargo run --release -p fewshot-host --features tflite --example student_fit -- STUDENT.onnx [--against OTHER.onnx] FOLDER [FOLDER ...]`
//! (at most 2 000 images of each folder, the first by path; teacher: the data
//! folder's `models/mobilefacenet.tflite`, or with `--against` another export,
//! e.g. the f32 file of an int8 one: how far quantization moves each face).

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
    let mut args = std::env::args().skip(1).peekable();
    let student = PathBuf::from(args.next().ok_or_else(|| {
        anyhow::anyhow!(
            "usage: student_fit STUDENT.onnx [--against OTHER.onnx] FOLDER [FOLDER ...]"
        )
    })?);
    let student = OnnxEmbedder::load(&student)?;
    let teacher: Box<dyn Embedder> = if args.peek().map(String::as_str) == Some("--against") {
        let other = args
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("--against needs an .onnx file"))?;
        Box::new(OnnxEmbedder::load(&PathBuf::from(other))?)
    } else {
        Box::new(Teacher::load(
            &resolve(&PathBuf::from("models/mobilefacenet.tflite"))?,
            None,
        )?)
    };
    for folder in args {
        let set = ClassSet::load(&resolve(&PathBuf::from(&folder))?, Layout::Auto)?;
        let mut paths: Vec<PathBuf> = set
            .classes
            .iter()
            .flat_map(|c| c.images.iter().cloned())
            .collect();
        paths.sort();
        paths.truncate(2000);
        let (s, t) = (embed(&student, &paths)?, embed(teacher.as_ref(), &paths)?);
        let c: Vec<f64> = (0..s.len())
            .map(|i| 1.0 - f64::from(fewshot_core::distance::cosine(s.row(i), t.row(i))))
            .collect();
        let mean = c.iter().sum::<f64>() / c.len() as f64;
        let sd = (c.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / c.len() as f64).sqrt();
        println!(
            "{folder}: {} images, cosine to the reference mean {mean:.4}, sd {sd:.4}, least {:.4}",
            c.len(),
            c.iter().fold(1.0f64, |m, &x| m.min(x))
        );
    }
    Ok(())
}
