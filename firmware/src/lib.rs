//! The door application: a camera frame in, the lock relay pulsed or not.
//!
//! [`door::Door`] is the device loop (from the `no_std` crate
//! `fewshot-door`, which the Cortex-M4F door in `mcu/` runs too), generic over embedded-hal 1.0 pins and
//! this crate's small traits for time ([`clock`]), frames ([`camera`]),
//! gallery bytes ([`storage`]) and logs ([`events`]). [`encoder`] runs the
//! exported model with tract, [`detect`] the YuNet face detector. [`sim`] drives a door on simulated hardware from
//! a script (the `doorkeeper` binary); [`board`] (feature `linux`) runs it on a
//! Linux board's GPIO character device.
#![warn(missing_docs)]

pub mod admin;
#[cfg(feature = "linux")]
pub mod board;
pub use fewshot_door::button;
pub mod camera;
pub mod clock;
pub mod detect;
pub mod door;
pub mod encoder;
pub mod events;
pub mod face;
pub mod matching;
pub use fewshot_door::pins;
pub mod sim;
pub mod soak;
pub mod storage;

pub use fewshot_core as core;

/// The data folder: `given`, else `FEWSHOT_DATA`, else `../shared/data`.
pub fn data_dir(given: Option<&std::path::Path>) -> std::path::PathBuf {
    given
        .map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os("FEWSHOT_DATA").map(std::path::PathBuf::from))
        .unwrap_or_else(|| std::path::PathBuf::from("../shared/data"))
}
