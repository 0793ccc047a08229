//! The enrollment button: debouncing and press lengths.
//!
//! The pin is sampled at every poll. A new level counts once it has held for
//! the debounce time; a press's length runs from the first sample of the
//! pressed level to the first sample of the released level, so bounces and
//! the debounce delay do not change it.

/// What a press asks for, by how long the button was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressKind {
    /// Shorter than the long-press time: enroll.
    Short,
    /// From the long-press time to the erase time: delete the last identity.
    Long,
    /// The erase time or longer: erase everyone.
    VeryLong,
}

/// Press lengths, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressTimes {
    /// A level must hold this long to count.
    pub debounce_ms: u64,
    /// Presses at least this long are long.
    pub long_ms: u64,
    /// Presses at least this long are very long.
    pub erase_ms: u64,
}

impl PressTimes {
    /// The kind of a press held `held_ms`.
    pub fn kind(&self, held_ms: u64) -> PressKind {
        if held_ms >= self.erase_ms {
            PressKind::VeryLong
        } else if held_ms >= self.long_ms {
            PressKind::Long
        } else {
            PressKind::Short
        }
    }
}

/// A debounced change of the button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// The button went down.
    Pressed,
    /// The button came up after being held this long.
    Released {
        /// Milliseconds held.
        held_ms: u64,
    },
}

/// Debounces samples of the button's level (`true` = pressed).
#[derive(Debug, Clone)]
pub struct Debouncer {
    debounce_ms: u64,
    stable: bool,
    raw: bool,
    raw_since: u64,
    pressed_since: u64,
}

impl Debouncer {
    /// Starts released.
    pub fn new(debounce_ms: u64) -> Self {
        Debouncer {
            debounce_ms,
            stable: false,
            raw: false,
            raw_since: 0,
            pressed_since: 0,
        }
    }

    /// Feeds one sample taken at `now_ms`.
    pub fn sample(&mut self, now_ms: u64, pressed: bool) -> Option<ButtonEvent> {
        if pressed != self.raw {
            self.raw = pressed;
            self.raw_since = now_ms;
        }
        if self.raw == self.stable || now_ms.saturating_sub(self.raw_since) < self.debounce_ms {
            return None;
        }
        self.stable = self.raw;
        if self.stable {
            self.pressed_since = self.raw_since;
            Some(ButtonEvent::Pressed)
        } else {
            Some(ButtonEvent::Released {
                held_ms: self.raw_since.saturating_sub(self.pressed_since),
            })
        }
    }

    /// How long the button has been held (debounced), if it is down.
    pub fn held_ms(&self, now_ms: u64) -> Option<u64> {
        self.stable
            .then(|| now_ms.saturating_sub(self.pressed_since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn run(d: &mut Debouncer, samples: &[(u64, bool)]) -> Vec<(u64, ButtonEvent)> {
        samples
            .iter()
            .filter_map(|&(t, p)| d.sample(t, p).map(|e| (t, e)))
            .collect()
    }

    #[test]
    fn bounces_are_ignored_and_the_press_length_is_exact() {
        let mut d = Debouncer::new(30);
        let mut samples = vec![(0, true), (5, false), (10, true), (15, false), (20, true)];
        samples.extend((30..=1200).step_by(10).map(|t| (t, t < 1020)));
        let events = run(&mut d, &samples);
        assert_eq!(
            events,
            vec![
                (50, ButtonEvent::Pressed),
                (1050, ButtonEvent::Released { held_ms: 1000 })
            ]
        );
    }

    #[test]
    fn a_glitch_shorter_than_the_debounce_time_is_no_press() {
        let mut d = Debouncer::new(30);
        let samples: Vec<_> = (0..200)
            .step_by(10)
            .map(|t| (t, t == 50 || t == 60))
            .collect();
        assert!(run(&mut d, &samples).is_empty());
        assert_eq!(d.held_ms(200), None);
    }

    #[test]
    fn press_kinds_follow_the_times() {
        let t = PressTimes {
            debounce_ms: 30,
            long_ms: 1500,
            erase_ms: 5000,
        };
        assert_eq!(t.kind(100), PressKind::Short);
        assert_eq!(t.kind(1499), PressKind::Short);
        assert_eq!(t.kind(1500), PressKind::Long);
        assert_eq!(t.kind(4999), PressKind::Long);
        assert_eq!(t.kind(5000), PressKind::VeryLong);
    }
}
