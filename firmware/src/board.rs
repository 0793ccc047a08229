//! The door on a Linux board (feature `linux`): button, relay and LED on the
//! GPIO character device (`/dev/gpiochipN`, through linux-embedded-hal's
//! `CdevPin`), real time, and frames from image files whose paths arrive one
//! per line on a reader (standard input: the camera process writes the path
//! of each frame it saves).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, TryRecvError};

use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::CdevPin;

use crate::camera::{load_image, Camera, ImageError, OwnedFrame};
use crate::clock::{SleepDelay, SystemClock};
use crate::door::Io;

/// Errors of setting up the board.
#[derive(Debug, thiserror::Error)]
#[error("{chip}, line {line} ({role}): {message}")]
pub struct BoardError {
    /// The GPIO chip device.
    pub chip: String,
    /// The line offset.
    pub line: u32,
    /// What the pin is for.
    pub role: &'static str,
    /// The driver's error.
    pub message: String,
}

/// Which GPIO lines the door uses.
#[derive(Debug, Clone)]
pub struct Pins {
    /// The GPIO chip device, e.g. `/dev/gpiochip0`.
    pub chip: PathBuf,
    /// The enrollment button's line (input).
    pub button: u32,
    /// The lock relay's line (output, high opens).
    pub relay: u32,
    /// The status LED's line (output, high is on).
    pub led: u32,
}

fn request(
    chip: &mut Chip,
    path: &Path,
    line: u32,
    role: &'static str,
    output: bool,
) -> Result<CdevPin, BoardError> {
    let err = |e: linux_embedded_hal::gpio_cdev::Error| BoardError {
        chip: path.display().to_string(),
        line,
        role,
        message: e.to_string(),
    };
    let flags = if output {
        LineRequestFlags::OUTPUT
    } else {
        LineRequestFlags::INPUT
    };
    let handle = chip
        .get_line(line)
        .and_then(|l| l.request(flags, 0, "doorkeeper"))
        .map_err(err)?;
    CdevPin::new(handle).map_err(err)
}

/// Requests the three lines (outputs start low: relay shut, LED off).
pub fn open_pins(
    pins: &Pins,
) -> Result<Io<CdevPin, CdevPin, CdevPin, SleepDelay, SystemClock>, BoardError> {
    let mut chip = Chip::new(&pins.chip).map_err(|e| BoardError {
        chip: pins.chip.display().to_string(),
        line: pins.button,
        role: "chip",
        message: e.to_string(),
    })?;
    Ok(Io {
        button: request(&mut chip, &pins.chip, pins.button, "button", false)?,
        relay: request(&mut chip, &pins.chip, pins.relay, "relay", true)?,
        led: request(&mut chip, &pins.chip, pins.led, "led", true)?,
        delay: SleepDelay,
        clock: SystemClock::default(),
    })
}

/// Frames from image files named one per line on a reader, read by a
/// background thread so the door loop never blocks on it.
#[derive(Debug)]
pub struct PathCamera {
    paths: Receiver<PathBuf>,
}

impl PathCamera {
    /// Reads paths from `reader` (e.g. standard input) until it ends.
    pub fn spawn<R: BufRead + Send + 'static>(reader: R) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let line = line.trim();
                if !line.is_empty() && tx.send(PathBuf::from(line)).is_err() {
                    break;
                }
            }
        });
        PathCamera { paths: rx }
    }
}

impl Camera for PathCamera {
    type Error = ImageError;

    fn capture(&mut self) -> Result<Option<OwnedFrame>, ImageError> {
        match self.paths.try_recv() {
            Ok(path) => load_image(&path).map(Some),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Ok(None),
        }
    }
}
