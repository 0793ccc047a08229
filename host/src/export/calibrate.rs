//! Activation ranges of a folded Conv-4 measured on real images: what the
//! int8 export needs to choose its quantization scales.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::FoldedConv;

/// Ranges seen on the calibration images ("max" calibration: the extremes).
#[derive(Debug, Clone, PartialEq)]
pub struct Ranges {
    /// Smallest and largest preprocessed input value.
    pub input: (f32, f32),
    /// Largest value after each block's convolution and ReLU.
    pub blocks: Vec<f32>,
    /// How many images they were measured on.
    pub images: usize,
}

/// Image files under `folder` (any depth), a seeded sample of at most `n`.
pub fn sample_images(folder: &Path, n: usize, seed: u64) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("--calibration {}: not a readable folder", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("png" | "jpg" | "jpeg" | "pgm" | "ppm" | "pnm")
            ) {
                found.push(path);
            }
        }
    }
    if found.is_empty() {
        bail!(
            "--calibration {}: no images (png, jpg, pgm) found in it",
            folder.display()
        );
    }
    found.sort();
    found.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    found.truncate(n);
    Ok(found)
}

/// One block's convolution (padding 1) and ReLU, before pooling.
fn conv_relu(x: &Tensor, layer: &FoldedConv) -> candle_core::Result<Tensor> {
    let weight = Tensor::from_slice(&layer.weight, (layer.cout, layer.cin, 3, 3), &Device::Cpu)?;
    let bias = Tensor::from_slice(&layer.bias, (1, layer.cout, 1, 1), &Device::Cpu)?;
    x.conv2d(&weight, 1, 1, 1, 1)?.broadcast_add(&bias)?.relu()
}

/// Runs the folded layers (conv, ReLU, 2×2 max pooling each) over `inputs`,
/// each `c·h·w` values, and records the ranges the int8 model must cover.
pub fn measure(
    layers: &[FoldedConv],
    (c, h, w): (usize, usize, usize),
    inputs: &[Vec<f32>],
) -> anyhow::Result<Ranges> {
    if inputs.is_empty() {
        bail!("calibration needs at least one image");
    }
    let mut ranges = Ranges {
        input: (f32::INFINITY, f32::NEG_INFINITY),
        blocks: vec![0.0; layers.len()],
        images: inputs.len(),
    };
    for batch in inputs.chunks(64) {
        let flat: Vec<f32> = batch.iter().flatten().copied().collect();
        for &v in &flat {
            ranges.input.0 = ranges.input.0.min(v);
            ranges.input.1 = ranges.input.1.max(v);
        }
        let mut x = Tensor::from_vec(flat, (batch.len(), c, h, w), &Device::Cpu)?;
        for (layer, max) in layers.iter().zip(&mut ranges.blocks) {
            let y = conv_relu(&x, layer)?;
            *max = max.max(y.max_all()?.to_scalar::<f32>()?);
            x = y.max_pool2d(2)?;
        }
    }
    Ok(ranges)
}

/// The f32 embeddings of the folded layers (the reference the int8 model
/// approximates).
pub fn forward(
    layers: &[FoldedConv],
    (c, h, w): (usize, usize, usize),
    input: &[f32],
) -> anyhow::Result<Vec<f32>> {
    let mut x = Tensor::from_slice(input, (1, c, h, w), &Device::Cpu)?;
    for layer in layers {
        x = conv_relu(&x, layer)?.max_pool2d(2)?;
    }
    Ok(x.flatten_all()?.to_vec1()?)
}
