//! Simulated pins: a button the simulator presses and outputs it can read.

use alloc::rc::Rc;
use core::cell::Cell;
use core::convert::Infallible;

use embedded_hal::digital::{ErrorType, InputPin, OutputPin};

/// A button held down or not by hand; clones share the level.
#[derive(Debug, Clone, Default)]
pub struct SimButton {
    pressed: Rc<Cell<bool>>,
}

impl SimButton {
    /// Released.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds the button down (`true`) or lets it go.
    pub fn set(&self, pressed: bool) {
        self.pressed.set(pressed);
    }
}

impl ErrorType for SimButton {
    type Error = Infallible;
}

impl InputPin for SimButton {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.pressed.get())
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(!self.pressed.get())
    }
}

/// An output pin whose level and number of rising edges can be read; clones
/// share them.
#[derive(Debug, Clone, Default)]
pub struct SimOutput {
    high: Rc<Cell<bool>>,
    rises: Rc<Cell<u32>>,
}

impl SimOutput {
    /// Low.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the pin is high.
    pub fn is_set_high(&self) -> bool {
        self.high.get()
    }

    /// Low-to-high transitions so far.
    pub fn rises(&self) -> u32 {
        self.rises.get()
    }
}

impl ErrorType for SimOutput {
    type Error = Infallible;
}

impl OutputPin for SimOutput {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.high.set(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        if !self.high.get() {
            self.rises.set(self.rises.get() + 1);
        }
        self.high.set(true);
        Ok(())
    }
}
