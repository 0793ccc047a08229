//! Cameras: where frames come from, and image files as frames.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use fewshot_core::{Frame, PixelFormat, PreprocessError};

/// A frame the camera owns: `width × height` pixels in `format`, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixel layout.
    pub format: PixelFormat,
    /// The pixels; a camera may hand over a buffer that does not match the
    /// size, which [`OwnedFrame::as_frame`] reports.
    pub pixels: Vec<u8>,
}

impl OwnedFrame {
    /// The frame as the core's borrowed [`Frame`], checked.
    pub fn as_frame(&self) -> Result<Frame<'_>, PreprocessError> {
        Frame::new(self.width, self.height, self.format, &self.pixels)
    }
}

/// A source of camera frames.
pub trait Camera {
    /// What can go wrong capturing.
    type Error: std::fmt::Display;

    /// The next frame, or `None` when no new frame is ready.
    fn capture(&mut self) -> Result<Option<OwnedFrame>, Self::Error>;
}

/// Errors of reading an image file as a frame.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ImageError {
    /// The image file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// Decodes an image file (PNG, JPEG, PGM/PPM) into a grey frame when the
/// image is grey, else an RGB frame.
pub fn load_image(path: &Path) -> Result<OwnedFrame, ImageError> {
    let err = |message: String| ImageError {
        path: path.to_path_buf(),
        message,
    };
    let image = image::ImageReader::open(path)
        .map_err(|e| err(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?
        .decode()
        .map_err(|e| err(e.to_string()))?;
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

/// A camera fed by hand: frames pushed into a shared queue come out one per
/// capture. Clones share the queue (the simulator keeps one, the door another).
#[derive(Debug, Clone, Default)]
pub struct QueueCamera {
    queue: Rc<RefCell<VecDeque<OwnedFrame>>>,
}

impl QueueCamera {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a frame for the next capture.
    pub fn push(&self, frame: OwnedFrame) {
        self.queue.borrow_mut().push_back(frame);
    }

    /// Frames not yet captured.
    pub fn pending(&self) -> usize {
        self.queue.borrow().len()
    }
}

impl Camera for QueueCamera {
    type Error = std::convert::Infallible;

    fn capture(&mut self) -> Result<Option<OwnedFrame>, Self::Error> {
        Ok(self.queue.borrow_mut().pop_front())
    }
}
