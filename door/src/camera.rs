//! Cameras: where frames come from.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

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
    type Error: core::fmt::Display;

    /// The next frame, or `None` when no new frame is ready.
    fn capture(&mut self) -> Result<Option<OwnedFrame>, Self::Error>;
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
    type Error = core::convert::Infallible;

    fn capture(&mut self) -> Result<Option<OwnedFrame>, Self::Error> {
        Ok(self.queue.borrow_mut().pop_front())
    }
}
