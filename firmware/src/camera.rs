//! Image files as camera frames; the [`Camera`] trait, [`OwnedFrame`] and
//! [`QueueCamera`] come from [`fewshot_door::camera`].

use std::path::{Path, PathBuf};

use fewshot_core::PixelFormat;

pub use fewshot_door::camera::*;

/// Errors of reading an image file as a frame.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ImageError {
    /// The image file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// The widest and tallest image the door decodes, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// The most memory the door lets an image decoder allocate, in bytes (64 MiB:
/// a 4096 × 4096 RGBA image).
pub const MAX_IMAGE_ALLOC: u64 = 64 << 20;

/// Decodes an image file (PNG, JPEG, PGM/PPM) into a grey frame when the
/// image is grey, else an RGB frame: [`decode_image`] on the file's bytes.
pub fn load_image(path: &Path) -> Result<OwnedFrame, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| ImageError {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    decode_image(&bytes, path)
}

/// Decodes the bytes of an image (PNG, JPEG, PGM/PPM, told apart by their
/// content) into a grey frame when the image is grey, else an RGB frame.
/// `path` names the image in errors. Images wider or taller than
/// [`MAX_IMAGE_SIDE`] are refused from their header, before any pixel is
/// decoded, and the decoder may allocate at most [`MAX_IMAGE_ALLOC`] bytes:
/// whatever the bytes say, decoding is an error, never a panic or gigabytes
/// of memory.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<OwnedFrame, ImageError> {
    // Some decoders end their messages with a line break.
    let err = |message: String| ImageError {
        path: path.to_path_buf(),
        message: message.trim_end().to_string(),
    };
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    let format = match reader.format() {
        Some(format) if format.reading_enabled() => format,
        other => {
            let found = other.map_or("not an image".to_string(), |f| format!("{f:?}"));
            return Err(err(format!(
                "{found}: the door reads PNG, JPEG, PGM or PPM"
            )));
        }
    };
    let (width, height) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| err(e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(err(format!("{width}×{height} pixels: an empty image")));
    }
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(err(format!(
            "{width}×{height} pixels: larger than the door decodes \
             (at most {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE})"
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    let mut reader = reader;
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => err(format!(
            "{width}×{height} pixels: {e} (the door decodes at most \
             {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} pixels in {} MiB)",
            MAX_IMAGE_ALLOC >> 20
        )),
        e => err(e.to_string()),
    })?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let (format, pixels) = if image.color().has_color() {
        (PixelFormat::Rgb8, image.into_rgb8().into_raw())
    } else {
        (PixelFormat::Gray8, image.into_luma8().into_raw())
    };
    Ok(OwnedFrame {
        width,
        height,
        format,
        pixels,
    })
}
