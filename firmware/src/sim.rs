//! The simulator: a door on simulated pins, camera and time, driven by a
//! script.
//!
//! Script lines (also what the keyboard mode reads):
//!
//! | line | effect |
//! | --- | --- |
//! | `frame <image path>` | the camera delivers that image, and the door takes it in one poll |
//! | `press <ms>` | the button is held `ms` milliseconds, then released (and the door polled past the debounce time) |
//! | `wait <ms>` | time passes, the door polling every `poll_ms` |
//! | `name <text>`, `list`, `delete <text>` | an installer's command ([`crate::admin`]) |
//! | `# ...`, blank | nothing |
//!
//! Image paths are used as given when they exist, else looked up under the
//! data folder. A line that cannot be understood, or an image that cannot be
//! read, is reported as an [`Event::Error`] and the script goes on.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::admin::{parse_admin, split_line, Admin};
use crate::camera::{load_image, QueueCamera};
use crate::clock::{Clock, SimClock};
use crate::door::{Door, DoorError, Encoder};
use crate::events::{Event, EventSink};
use crate::pins::{SimButton, SimOutput};
use crate::storage::Storage;

pub use fewshot_door::sim::{SimDoor, SimHardware};

/// One script step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The camera delivers this image.
    Frame(PathBuf),
    /// The button is held this many milliseconds.
    Press(u64),
    /// This many milliseconds pass.
    Wait(u64),
    /// An installer's command.
    Admin(Admin),
}

/// Parses one script line; `Ok(None)` for blank lines and comments.
pub fn parse_line(line: &str) -> Result<Option<Command>, String> {
    let Some((word, rest)) = split_line(line) else {
        return Ok(None);
    };
    let ms = |what: &str| {
        rest.parse::<u64>()
            .map_err(|_| format!("`{what}` takes a whole number of milliseconds, got `{rest}`"))
    };
    if let Some(admin) = parse_admin(word, rest) {
        return admin.map(|a| Some(Command::Admin(a)));
    }
    match word {
        "frame" if !rest.is_empty() => Ok(Some(Command::Frame(PathBuf::from(rest)))),
        "frame" => Err("`frame` takes an image path".into()),
        "press" => Ok(Some(Command::Press(ms("press")?))),
        "wait" => Ok(Some(Command::Wait(ms("wait")?))),
        other => Err(format!(
            "unknown command `{other}` (expected frame, press, wait, name, list or delete)"
        )),
    }
}

/// A door on simulated hardware, and the handles to drive it.
pub struct Simulator<const DIM: usize, E, S, K> {
    door: SimDoor<DIM, E, S, K>,
    clock: SimClock,
    button: SimButton,
    relay: SimOutput,
    camera: QueueCamera,
    poll_ms: u64,
    data_dir: Option<PathBuf>,
}

impl<const DIM: usize, E, S, K> Simulator<DIM, E, S, K>
where
    E: Encoder,
    S: Storage,
    K: EventSink,
{
    /// Boots a door on fresh simulated hardware.
    pub fn boot(
        encoder: E,
        storage: S,
        sink: K,
        config: crate::door::Config,
    ) -> Result<Self, DoorError> {
        let hw = SimHardware::new();
        let door = Door::boot(encoder, hw.io(), hw.camera.clone(), storage, sink, config)?;
        Ok(Simulator {
            door,
            clock: hw.clock,
            button: hw.button,
            relay: hw.relay,
            camera: hw.camera,
            poll_ms: 10,
            data_dir: None,
        })
    }

    /// Polls every `poll_ms` milliseconds (default 10).
    pub fn with_poll_ms(mut self, poll_ms: u64) -> Self {
        self.poll_ms = poll_ms.max(1);
        self
    }

    /// Looks up image paths that do not exist as given under `dir`.
    pub fn with_data_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.data_dir = dir;
        self
    }

    /// The door.
    pub fn door(&self) -> &SimDoor<DIM, E, S, K> {
        &self.door
    }

    /// Stops and hands back the door.
    pub fn into_door(self) -> SimDoor<DIM, E, S, K> {
        self.door
    }

    /// Simulated milliseconds since boot.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// How many times the relay has opened.
    pub fn relay_pulses(&self) -> u32 {
        self.relay.rises()
    }

    fn tick(&mut self) -> Result<(), DoorError> {
        self.door.poll()?;
        self.clock.advance_ms(self.poll_ms);
        Ok(())
    }

    fn run_for(&mut self, ms: u64) -> Result<(), DoorError> {
        let end = self.clock.now_ms().saturating_add(ms);
        while self.clock.now_ms() < end {
            self.tick()?;
        }
        Ok(())
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        match &self.data_dir {
            Some(dir) if !path.exists() && path.is_relative() && dir.join(path).exists() => {
                dir.join(path)
            }
            _ => path.to_path_buf(),
        }
    }

    /// Runs one step.
    pub fn step(&mut self, command: &Command) -> Result<(), DoorError> {
        match command {
            Command::Frame(path) => match load_image(&self.resolve(path)) {
                Ok(frame) => {
                    self.camera.push(frame);
                    self.tick()
                }
                Err(e) => {
                    self.door.report(Event::Error {
                        message: format!("frame {e}"),
                    });
                    Ok(())
                }
            },
            Command::Press(ms) => {
                self.button.set(true);
                self.run_for(*ms)?;
                self.button.set(false);
                let settle = self.door.config().press.debounce_ms + self.poll_ms;
                self.run_for(settle)
            }
            Command::Wait(ms) => self.run_for(*ms),
            Command::Admin(admin) => {
                self.door.admin(admin.clone());
                Ok(())
            }
        }
    }

    /// Runs a script (or the keyboard) to its end. Lines that do not parse are
    /// reported as errors, with their line number, and skipped.
    pub fn run_script(&mut self, script: impl BufRead) -> Result<(), DoorError> {
        for (n, line) in script.lines().enumerate() {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    self.door.report(Event::Error {
                        message: format!("reading the script: {e}"),
                    });
                    break;
                }
            };
            match parse_line(&line) {
                Ok(Some(command)) => self.step(&command)?,
                Ok(None) => {}
                Err(message) => self.door.report(Event::Error {
                    message: format!("script line {}: {message}", n + 1),
                }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_lines_parse() {
        assert_eq!(parse_line("  # only a comment"), Ok(None));
        assert_eq!(parse_line(""), Ok(None));
        assert_eq!(
            parse_line("frame a b.png # A's face"),
            Ok(Some(Command::Frame("a b.png".into())))
        );
        assert_eq!(parse_line("press 300"), Ok(Some(Command::Press(300))));
        assert_eq!(parse_line("wait\t2000"), Ok(Some(Command::Wait(2000))));
        assert_eq!(
            parse_line("name  Ada L # the new one"),
            Ok(Some(Command::Admin(Admin::Name(
                "Ada L".try_into().unwrap()
            ))))
        );
        assert_eq!(parse_line("list"), Ok(Some(Command::Admin(Admin::List))));
        assert!(parse_line("delete").is_err());
        assert!(parse_line("press").unwrap_err().contains("milliseconds"));
        assert!(parse_line("wait -1").is_err());
        assert!(parse_line("frame").is_err());
        assert!(parse_line("open sesame")
            .unwrap_err()
            .contains("unknown command"));
    }
}
