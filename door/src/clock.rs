//! Time: a millisecond clock, and simulated time.
//!
//! The door reads time through [`Clock`] and waits through embedded-hal's
//! `DelayNs`. [`SimClock`] is both: waiting on it advances it, so the
//! simulator and the tests run in simulated time without sleeping.

use alloc::rc::Rc;
use core::cell::Cell;

use embedded_hal::delay::DelayNs;

/// A monotonic millisecond clock.
pub trait Clock {
    /// Milliseconds since an arbitrary start.
    fn now_ms(&self) -> u64;
}

/// Simulated time, shared by clones: reading it and waiting on it (as a
/// `DelayNs`) never sleeps; waiting advances it.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    ns: Rc<Cell<u64>>,
}

impl SimClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: u64) {
        self.ns
            .set(self.ns.get().saturating_add(ms.saturating_mul(1_000_000)));
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.ns.get() / 1_000_000
    }
}

impl DelayNs for SimClock {
    fn delay_ns(&mut self, ns: u32) {
        self.ns.set(self.ns.get().saturating_add(u64::from(ns)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_advance_simulated_time_for_every_clone() {
        let clock = SimClock::new();
        let mut delay = clock.clone();
        delay.delay_ms(1500);
        delay.delay_us(999);
        assert_eq!(clock.now_ms(), 1500);
        delay.delay_us(1);
        assert_eq!(clock.now_ms(), 1501);
        clock.advance_ms(10);
        assert_eq!(delay.now_ms(), 1511);
    }
}
