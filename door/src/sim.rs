//! Simulated hardware for a door: a clock, a button, relay and LED pins and
//! a camera, shared by clones so that a script can drive what the door reads.

use crate::camera::QueueCamera;
use crate::clock::SimClock;
use crate::door::{Door, Io};
use crate::pins::{SimButton, SimOutput};

/// A door on simulated hardware.
pub type SimDoor<const DIM: usize, E, S, K> =
    Door<DIM, E, SimButton, SimOutput, SimOutput, SimClock, SimClock, QueueCamera, S, K>;

/// The simulated hardware, before the door boots on it.
#[derive(Debug, Clone, Default)]
pub struct SimHardware {
    /// Time.
    pub clock: SimClock,
    /// The enrollment button.
    pub button: SimButton,
    /// The lock relay.
    pub relay: SimOutput,
    /// The status LED.
    pub led: SimOutput,
    /// The camera.
    pub camera: QueueCamera,
}

impl SimHardware {
    /// Fresh hardware at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pins and time for [`Door::boot`].
    pub fn io(&self) -> Io<SimButton, SimOutput, SimOutput, SimClock, SimClock> {
        Io {
            button: self.button.clone(),
            relay: self.relay.clone(),
            led: self.led.clone(),
            delay: self.clock.clone(),
            clock: self.clock.clone(),
        }
    }
}
