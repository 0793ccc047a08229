//! Time on the host: the wall clock and a sleeping `DelayNs`; the [`Clock`]
//! trait and [`SimClock`] come from [`fewshot_door::clock`].

use std::time::{Duration, Instant};

use embedded_hal::delay::DelayNs;

pub use fewshot_door::clock::*;

/// Wall-clock time since this value was created.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A `DelayNs` that sleeps the thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct SleepDelay;

impl DelayNs for SleepDelay {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(Duration::from_nanos(u64::from(ns)));
    }
}
