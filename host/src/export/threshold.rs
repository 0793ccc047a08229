//! The rejection threshold an exported model carries: chosen for a target
//! false-accept rate on identities the model never trained on, measured with
//! the exported file itself (so an int8 model gets its own threshold).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use prost::Message;
use serde::Serialize;
use tract_onnx::pb::{ModelProto, StringStringEntryProto};

use crate::data::{ClassSet, Layout, Tensors};
use crate::embed::{Embedder, Embeddings};
use crate::nn::checkpoint::write_atomic;
use crate::onnx_model::OnnxEmbedder;
use crate::stats::{tar_at_far, verification_roc};

/// How a threshold was chosen; stored as JSON beside it.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdCalibration {
    /// Distances at or below it are accepted.
    pub threshold: f32,
    /// Target false-accept rate.
    pub target_far: f64,
    /// False-accept rate at the threshold on the calibration pairs.
    pub far: f64,
    /// True-accept rate there.
    pub tar: f64,
    /// Genuine (same identity) pairs.
    pub genuine_pairs: usize,
    /// Impostor pairs.
    pub impostor_pairs: usize,
    /// The identity folders.
    pub data: PathBuf,
}

/// Every pair of images under `data` (identity folders): genuine distances
/// (same identity) and impostor distances (different identities).
pub fn all_pair_distances(
    model: &dyn Embedder,
    data: &Path,
    progress: bool,
) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let set = ClassSet::load(data, Layout::Auto)?;
    let mut paths = Vec::new();
    let mut owner = Vec::new();
    for (c, class) in set.classes.iter().enumerate() {
        paths.extend(class.images.iter().cloned());
        owner.extend(std::iter::repeat_n(c, class.images.len()));
    }
    let tensors = Tensors::load(&paths, &model.recipe(), progress)?;
    let emb = Embeddings::compute(model, &tensors, 256, progress)?;
    let distance = model.distance().unwrap_or(fewshot_core::Distance::L2);
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..emb.len() {
        for j in i + 1..emb.len() {
            let d = distance.between(emb.row(i), emb.row(j));
            if owner[i] == owner[j] {
                genuine.push(d);
            } else {
                impostor.push(d);
            }
        }
    }
    Ok((genuine, impostor))
}

/// Chooses the threshold of the exported model `onnx` with the highest
/// true-accept rate whose false-accept rate over all impostor pairs of `data`
/// is at most `target_far`.
pub fn calibrate(
    onnx: &Path,
    data: &Path,
    target_far: f64,
) -> anyhow::Result<ThresholdCalibration> {
    if !(0.0..1.0).contains(&target_far) {
        bail!("the target false-accept rate must be in [0, 1), got {target_far}");
    }
    let model = load_export(onnx)?;
    let (genuine, impostor) = all_pair_distances(model.as_ref(), data, false)?;
    if genuine.is_empty() || impostor.is_empty() {
        bail!(
            "{}: calibration needs identities with two images or more and at least two identities",
            data.display()
        );
    }
    let roc = verification_roc(&genuine, &impostor);
    let point = tar_at_far(&roc, target_far)
        .with_context(|| format!("{}: distances are not all finite", onnx.display()))?;
    Ok(ThresholdCalibration {
        threshold: point.threshold,
        target_far,
        far: point.far,
        tar: point.tar,
        genuine_pairs: genuine.len(),
        impostor_pairs: impostor.len(),
        data: data.to_path_buf(),
    })
}

/// Thresholds of the exported model `onnx` for door galleries of each size
/// in `sizes`: the door protocol ([`crate::eval::door`]) on the identity
/// folders `data` with `enroll_shots` shots, 20 seeded random galleries per
/// size, each threshold letting in at most `target_far` of the strangers.
/// When `checkpoint` is a Matching Network with full context embeddings
/// (and `onnx` is not a blob, which runs without them), the door's score
/// is theirs: the attended probe's distance to the nearest context embedding.
pub fn calibrate_gallery(
    onnx: &Path,
    data: &Path,
    target_far: f64,
    sizes: &[usize],
    enroll_shots: usize,
    checkpoint: &Path,
) -> anyhow::Result<Vec<crate::eval::door::GalleryThreshold>> {
    use crate::eval::door::{gallery_thresholds, DoorSet, GalleryMatcher, Prototypes};
    let model = load_export(onnx)?;
    let set = ClassSet::load(data, Layout::Auto)?;
    let door =
        DoorSet::new(&set, None, enroll_shots).with_context(|| data.display().to_string())?;
    let tensors = Tensors::load(&door.paths, &model.recipe(), false)?;
    let emb = Embeddings::compute(model.as_ref(), &tensors, 256, false)?;
    let distance = model.distance().unwrap_or(fewshot_core::Distance::L2);
    let blob = onnx.extension().is_some_and(|e| e == super::mcu::EXTENSION);
    let fce = match blob {
        true => None,
        false => crate::nn::checkpoint::load_matching_head(checkpoint)?.and_then(|h| h.fce),
    };
    let matcher: &dyn GalleryMatcher = match &fce {
        Some(fce) => fce,
        None => &Prototypes,
    };
    gallery_thresholds(&door, &emb, distance, matcher, sizes, target_far, 20, 0)
        .with_context(|| format!("gallery thresholds on {}", data.display()))
}

/// An exported file as an embedding function: a model blob (`.fsmcu`, run by
/// the core's int8 engine) or an ONNX model (run by tract).
pub fn load_export(path: &Path) -> anyhow::Result<Box<dyn Embedder>> {
    if path.extension().is_some_and(|e| e == super::mcu::EXTENSION) {
        Ok(Box::new(crate::mcu_model::McuEmbedder::load(path)?))
    } else {
        Ok(Box::new(OnnxEmbedder::load(path)?))
    }
}

/// Rewrites `onnx` (atomically) with `entries` set in its metadata.
pub fn set_metadata(onnx: &Path, entries: &[(&str, String)]) -> anyhow::Result<()> {
    let bytes = std::fs::read(onnx).with_context(|| format!("reading {}", onnx.display()))?;
    let mut proto = ModelProto::decode(&bytes[..])
        .with_context(|| format!("{}: not an ONNX model", onnx.display()))?;
    for (key, value) in entries {
        proto.metadata_props.retain(|p| p.key != *key);
        proto.metadata_props.push(StringStringEntryProto {
            key: key.to_string(),
            value: value.clone(),
        });
    }
    Ok(write_atomic(onnx, &proto.encode_to_vec())?)
}
