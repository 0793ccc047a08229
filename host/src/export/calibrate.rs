//! Activation ranges of a folded Conv-4 measured on real images: what the
//! int8 export needs to choose its quantization scales.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::FoldedConv;

/// Ranges seen on the calibration images.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranges {
    /// Smallest and largest preprocessed input value.
    pub input: (f32, f32),
    /// The range kept after each block's convolution and ReLU: the
    /// `percentile`-th percentile of its values (100: the largest).
    pub blocks: Vec<f32>,
    /// The percentile the block ranges are (100: "max" calibration).
    pub percentile: f64,
    /// How many images they were measured on.
    pub images: usize,
}

/// Values kept per block for a percentile (a regular subsample beyond this).
const PERCENTILE_SAMPLES: usize = 2_000_000;

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
/// each `c·h·w` values, and records the ranges the int8 model must cover:
/// each block's `percentile`-th percentile (100: its largest value; lower
/// values clip rare outliers to give the common ones finer steps).
pub fn measure(
    layers: &[FoldedConv],
    (c, h, w): (usize, usize, usize),
    inputs: &[Vec<f32>],
    percentile: f64,
) -> anyhow::Result<Ranges> {
    if inputs.is_empty() {
        bail!("calibration needs at least one image");
    }
    if !(percentile > 0.0 && percentile <= 100.0) {
        bail!("calibration percentile {percentile}: expected a number in (0, 100]");
    }
    let mut ranges = Ranges {
        input: (f32::INFINITY, f32::NEG_INFINITY),
        blocks: vec![0.0; layers.len()],
        percentile,
        images: inputs.len(),
    };
    let mut samples: Vec<Vec<f32>> = vec![Vec::new(); layers.len()];
    for batch in inputs.chunks(64) {
        let flat: Vec<f32> = batch.iter().flatten().copied().collect();
        for &v in &flat {
            ranges.input.0 = ranges.input.0.min(v);
            ranges.input.1 = ranges.input.1.max(v);
        }
        let mut x = Tensor::from_vec(flat, (batch.len(), c, h, w), &Device::Cpu)?;
        for ((layer, max), kept) in layers.iter().zip(&mut ranges.blocks).zip(&mut samples) {
            let y = conv_relu(&x, layer)?;
            *max = max.max(y.max_all()?.to_scalar::<f32>()?);
            if percentile < 100.0 {
                let per_image = y.elem_count() / batch.len();
                let stride = (inputs.len() * per_image)
                    .div_ceil(PERCENTILE_SAMPLES)
                    .max(1);
                kept.extend(
                    y.flatten_all()?
                        .to_vec1::<f32>()?
                        .into_iter()
                        .step_by(stride),
                );
            }
            x = y.max_pool2d(2)?;
        }
    }
    if percentile < 100.0 {
        for (range, mut kept) in ranges.blocks.iter_mut().zip(samples) {
            kept.sort_by(f32::total_cmp);
            let rank = ((percentile / 100.0) * (kept.len() - 1) as f64).round() as usize;
            // An all-zero block keeps its (zero) maximum; a scale needs a positive range.
            if kept[rank] > 0.0 {
                *range = kept[rank];
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One 1×1-channel block that passes its input through (centre tap 1).
    fn identity() -> FoldedConv {
        let mut weight = vec![0.0; 9];
        weight[4] = 1.0;
        FoldedConv {
            cout: 1,
            cin: 1,
            weight,
            bias: vec![0.0],
        }
    }

    #[test]
    fn percentiles_of_a_known_block() {
        // 100 images of 2×2 equal pixels i/100 and one outlier image of 10:
        // the block sees 404 values, 400 of them i/100 (i < 100), 4 of 10.
        let mut inputs: Vec<Vec<f32>> = (0..100).map(|i| vec![i as f32 / 100.0; 4]).collect();
        inputs.push(vec![10.0; 4]);
        let max = measure(&[identity()], (1, 2, 2), &inputs, 100.0).unwrap();
        assert_eq!(max.blocks, vec![10.0]);
        assert_eq!(max.input, (0.0, 10.0));
        // Rank round(0.5 · 403) = 202 of the sorted values: 4 copies each of
        // 0.00, 0.01, ..., so value 202 / 4 = 50 → 0.50.
        let median = measure(&[identity()], (1, 2, 2), &inputs, 50.0).unwrap();
        assert_eq!(median.blocks, vec![0.5]);
        // 99 %: rank round(0.99 · 403) = 399 → the last of the 0.99s, not the outlier.
        let p99 = measure(&[identity()], (1, 2, 2), &inputs, 99.0).unwrap();
        assert_eq!(p99.blocks, vec![0.99]);
        assert!(measure(&[identity()], (1, 2, 2), &inputs, 0.0).is_err());
        assert!(measure(&[identity()], (1, 2, 2), &inputs, 100.5).is_err());
    }
}
