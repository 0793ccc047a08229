//! The device loop: button, camera, encoder, gallery, relay, LED and storage.
//!
//! One body of code for the board, the simulator and the tests: the pins are
//! embedded-hal 1.0 traits (`InputPin` button, `OutputPin` relay and LED,
//! `DelayNs`), and time, camera, storage and logging are this crate's small
//! traits ([`Clock`], [`Camera`], [`Storage`], [`EventSink`]).
//!
//! Each [`Door::poll`]:
//! 1. samples the button (debounced, see [`crate::button`]); a release acts by
//!    the press's length: short enrolls from the next `enroll_shots` frames,
//!    long deletes the last enrolled identity, very long erases everyone (the
//!    LED blinks three times as soon as the press is long enough, so the
//!    person holding it knows that letting go now erases everyone);
//! 2. takes at most one frame from the camera: while enrolling it becomes a
//!    shot; during a cool-down it is ignored; otherwise it is preprocessed with
//!    the model's recipe, embedded, matched to the nearest prototype and
//!    decided by the open-set rule (distance at most `threshold`, or the
//!    model's threshold for the number of people enrolled when it carries
//!    `gallery_thresholds`, and margin
//!    to the runner-up at least `min_margin`). A match pulses the relay for
//!    `open_ms`; an unknown face keeps it shut, and after `max_rejections`
//!    refusals in a row frames are ignored for `cooldown_ms`.
//!
//! **Enrollment agreement rule.** With shots `x_1..x_K`, each shot's distance
//! (the model's distance) to the mean of the other shots must be at most
//! `enroll_spread` (default: the open-set threshold), i.e. each shot would be
//! let in by a prototype made of the others. For K = 2 that is
//! `d(x_1, x_2) <= threshold`. Otherwise nothing is enrolled
//! ([`Event::EnrollRefused`]). With K = 1 there is nothing to compare.
//!
//! **Names.** An installer's [`Admin`] command names the next enrollment
//! (`person-<id>` without one); a name someone already has adds the
//! enrollment's frames to that person (their prototype becomes the running
//! mean of all their frames) when the new frames' mean lies within the
//! enrollment spread limit of their prototype ([`Event::AddRefused`]
//! otherwise). A name is used by the next enrollment only, whatever its
//! outcome.
//!
//! **Rate.** A face shown over and over is refused at most `max_rejections`
//! times in a row before `cooldown_ms` of ignored frames: at most
//! `max_rejections` decisions per cool-down. The cool-down is reported once
//! ([`Event::CoolDown`]), and ignored frames at most every `ignored_every_ms`.
//!
//! Every change to the gallery is stored before it counts: when the save
//! fails the gallery in memory goes back to what is stored and an
//! [`Event::Error`] says so.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{InputPin, OutputPin};
use fewshot_core::prototype::mean_into;
use fewshot_core::store;
use fewshot_core::{Distance, Frame, GalleryThresholds, HeapGallery, Name, OpenSet, StoreError};

use crate::admin::Admin;
use crate::button::{ButtonEvent, Debouncer, PressKind, PressTimes};
use crate::camera::{Camera, OwnedFrame};
use crate::clock::Clock;
use crate::events::{Event, EventSink};
use crate::sight::Sight;
use crate::storage::Storage;

/// Most identities a door holds unless configured otherwise
/// ([`Config::capacity`]).
pub const DEFAULT_CAPACITY: usize = 1000;

/// The largest capacity a door can be configured with (the stored form
/// counts identities in 16 bits).
pub const MAX_CAPACITY: usize = u16::MAX as usize;

/// Embedding sizes a door can be built for (the embedding size is fixed at
/// compile time; the model's metadata picks one of these at run time).
pub const SUPPORTED_DIMS: [usize; 9] = [8, 16, 32, 64, 128, 192, 256, 512, 1024];

/// The door's gallery for `DIM`-dimensional embeddings: on the heap, its
/// capacity chosen at start ([`Config::capacity`]).
pub type DoorGallery<const DIM: usize> = HeapGallery<DIM>;

/// Turns a camera frame into an embedding: tract running an ONNX model on
/// the Linux door, the core's int8 engine on a microcontroller
/// ([`crate::engine::EngineEncoder`]).
pub trait Encoder {
    /// What can go wrong embedding.
    type Error: core::fmt::Display;
    /// Embedding size.
    fn dim(&self) -> usize;
    /// Preprocesses and embeds one frame.
    fn embed_frame(&mut self, frame: &Frame<'_>) -> Result<Vec<f32>, Self::Error>;
    /// A Matching Network's full context embeddings, if the model has them:
    /// the door then matches in their context.
    fn fce(&self) -> Option<&dyn FullContext> {
        None
    }
    /// What the frame shows: by default the whole frame, embedded; an
    /// encoder with a face detector finds, checks and aligns the face.
    fn look(&mut self, frame: &Frame<'_>) -> Result<Sight, String> {
        self.embed_frame(frame)
            .map(|embedding| Sight::Face {
                embedding,
                face: None,
            })
            .map_err(|e| e.to_string())
    }
}

/// Full context embeddings (Matching Networks): the gallery's prototypes
/// embedded in each other's context, and a frame attended over them.
pub trait FullContext {
    /// The context embeddings of `prototypes` (people × dim, row-major), in
    /// the same layout.
    fn context(&self, prototypes: &[f32]) -> Result<Vec<f32>, String>;
    /// A frame's embedding attended over the gallery's `context`.
    fn attend(&self, embedding: &[f32], context: &[f32]) -> Result<Vec<f32>, String>;
}

/// Everything tunable about the door. Times in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The model's distance.
    pub distance: Distance,
    /// Largest distance to a prototype that opens the door (and, unless
    /// `enroll_spread` says otherwise, between enrollment shots).
    pub threshold: f32,
    /// Thresholds for the gallery's size, if the model carries them: the
    /// door then opens by the one for the people enrolled at the time
    /// instead of `threshold`.
    pub gallery_thresholds: Option<GalleryThresholds>,
    /// Smallest margin to the runner-up prototype that opens the door (0: off).
    pub min_margin: f32,
    /// How long the relay is pulsed.
    pub open_ms: u32,
    /// Frames an enrollment takes (K).
    pub enroll_shots: usize,
    /// Largest distance of a shot to the mean of the others; `None`: `threshold`.
    pub enroll_spread: Option<f32>,
    /// An enrollment not complete after this long is abandoned.
    pub enroll_timeout_ms: u64,
    /// Button timing.
    pub press: PressTimes,
    /// The button reads low when pressed.
    pub button_active_low: bool,
    /// Refusals in a row that start a cool-down.
    pub max_rejections: u32,
    /// How long frames are ignored after `max_rejections` refusals.
    pub cooldown_ms: u64,
    /// The camera's resolution: frames of any other size are errors. `None`:
    /// any size (the recipe resizes).
    pub frame_size: Option<(usize, usize)>,
    /// Frames without a face are reported at most once in this long.
    pub no_face_every_ms: u64,
    /// Frames ignored during a cool-down are reported at most once in this long.
    pub ignored_every_ms: u64,
    /// The most people the door holds (1 to [`MAX_CAPACITY`]).
    pub capacity: usize,
}

impl Config {
    /// Defaults around a model's distance and threshold: relay 3 s, K = 2,
    /// enrollment within 10 s, debounce 30 ms, long press 1.5 s, erase 5 s,
    /// cool-down of 30 s after 5 refusals in a row, "no face" and "ignored" at
    /// most every 5 s, [`DEFAULT_CAPACITY`] people.
    pub fn new(distance: Distance, threshold: f32) -> Self {
        Config {
            distance,
            threshold,
            gallery_thresholds: None,
            min_margin: 0.0,
            open_ms: 3000,
            enroll_shots: 2,
            enroll_spread: None,
            enroll_timeout_ms: 10_000,
            press: PressTimes {
                debounce_ms: 30,
                long_ms: 1500,
                erase_ms: 5000,
            },
            button_active_low: false,
            max_rejections: 5,
            cooldown_ms: 30_000,
            frame_size: None,
            no_face_every_ms: 5_000,
            ignored_every_ms: 5_000,
            capacity: DEFAULT_CAPACITY,
        }
    }

    fn validate(&self) -> Result<(), DoorError> {
        let bad = |m: &str| Err(DoorError::Config(m.into()));
        if !self.threshold.is_finite() {
            return bad("threshold must be a finite number");
        }
        if self.enroll_spread.is_some_and(|s| !s.is_finite()) {
            return bad("enrollment spread must be a finite number");
        }
        if self.enroll_shots == 0 {
            return bad("enrollment needs at least one frame");
        }
        if !(self.press.debounce_ms < self.press.long_ms
            && self.press.long_ms < self.press.erase_ms)
        {
            return bad("press times must grow: debounce < long < erase");
        }
        if self.max_rejections == 0 {
            return bad("max rejections must be at least 1");
        }
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return Err(DoorError::Config(format!(
                "capacity must be 1 to {MAX_CAPACITY} people, got {}",
                self.capacity
            )));
        }
        Ok(())
    }
}

/// The pins and time of a door.
#[derive(Debug)]
pub struct Io<B, R, L, D, C> {
    /// The enrollment button.
    pub button: B,
    /// The lock relay: high opens.
    pub relay: R,
    /// The status LED: high is on.
    pub led: L,
    /// Waiting (relay pulses, LED patterns).
    pub delay: D,
    /// Time.
    pub clock: C,
}

/// Errors that stop the door.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    /// A pin failed.
    #[error("GPIO {pin}: {message}")]
    Pin {
        /// Which pin.
        pin: &'static str,
        /// The driver's error.
        message: String,
    },
    /// The storage could not be read at boot, or a corrupt gallery could not be set aside.
    #[error("gallery storage: {0}")]
    Storage(String),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

fn pin_err<E: core::fmt::Debug>(pin: &'static str) -> impl FnOnce(E) -> DoorError {
    move |e| DoorError::Pin {
        pin,
        message: format!("{e:?}"),
    }
}

#[derive(Debug)]
enum Mode {
    Watching,
    Enrolling { shots: Vec<Vec<f32>>, since_ms: u64 },
}

/// The door (see the module documentation).
pub struct Door<const DIM: usize, E, B, R, L, D, C, Cam, S, K> {
    encoder: E,
    io: Io<B, R, L, D, C>,
    camera: Cam,
    storage: S,
    sink: K,
    config: Config,
    gallery: DoorGallery<DIM>,
    generation: u32,
    button: Debouncer,
    erase_armed: bool,
    mode: Mode,
    rejections: u32,
    cooldown_until: Option<u64>,
    last_no_face_ms: Option<u64>,
    last_ignored_ms: Option<u64>,
    /// The name the next enrollment gets.
    next_name: Option<Name>,
    /// With FCE: the gallery's context embeddings, in gallery order.
    context: Option<Vec<f32>>,
}

impl<const DIM: usize, E, B, R, L, D, C, Cam, S, K> Door<DIM, E, B, R, L, D, C, Cam, S, K>
where
    E: Encoder,
    B: InputPin,
    R: OutputPin,
    L: OutputPin,
    D: DelayNs,
    C: Clock,
    Cam: Camera,
    S: Storage,
    K: EventSink,
{
    /// Starts the door: relay and LED off, the gallery loaded from `storage`.
    /// A stored gallery that does not decode (corrupt, or made for another
    /// embedding size) is set aside and the door starts with an empty
    /// gallery, reporting [`Event::GalleryCorrupt`].
    pub fn boot(
        encoder: E,
        mut io: Io<B, R, L, D, C>,
        camera: Cam,
        mut storage: S,
        mut sink: K,
        config: Config,
    ) -> Result<Self, DoorError> {
        config.validate()?;
        if encoder.dim() != DIM {
            return Err(DoorError::Config(format!(
                "the encoder makes {}-d embeddings, this door is built for {DIM}",
                encoder.dim()
            )));
        }
        io.relay.set_low().map_err(pin_err("relay"))?;
        io.led.set_low().map_err(pin_err("led"))?;
        let mut gallery = DoorGallery::<DIM>::with_capacity(config.capacity);
        let mut generation = 0;
        let loaded = storage
            .load()
            .map_err(|e| DoorError::Storage(e.to_string()))?;
        if let Some(bytes) = loaded {
            match store::decode_into(&bytes, gallery.clone()) {
                Ok(stored) => {
                    gallery = stored.gallery;
                    generation = stored.generation;
                }
                // Intact, but more people than this door is set up for:
                // the installer's choice to make, not corruption.
                Err(StoreError::TooMany { count, capacity }) => {
                    return Err(DoorError::Config(format!(
                        "the stored gallery holds {count} people, more than the door's \
                         capacity of {capacity}: start it with a larger capacity"
                    )));
                }
                Err(e) => {
                    let kept_at = storage
                        .set_aside()
                        .map_err(|e| DoorError::Storage(e.to_string()))?;
                    sink.emit(
                        io.clock.now_ms(),
                        &Event::GalleryCorrupt {
                            message: e.to_string(),
                            kept_at,
                        },
                    );
                }
            }
        }
        sink.emit(
            io.clock.now_ms(),
            &Event::Booted {
                identities: gallery.len(),
                threshold: config.threshold,
                gallery_threshold: config
                    .gallery_thresholds
                    .as_ref()
                    .map(|t| t.point_for(gallery.len())),
                distance: config.distance.name(),
            },
        );
        let mut door = Door {
            encoder,
            io,
            camera,
            storage,
            sink,
            button: Debouncer::new(config.press.debounce_ms),
            config,
            gallery,
            generation,
            erase_armed: false,
            mode: Mode::Watching,
            rejections: 0,
            cooldown_until: None,
            last_no_face_ms: None,
            last_ignored_ms: None,
            next_name: None,
            context: None,
        };
        door.refresh_context();
        Ok(door)
    }

    /// One turn of the loop: the button, then at most one camera frame.
    pub fn poll(&mut self) -> Result<(), DoorError> {
        let now = self.io.clock.now_ms();
        let level = self.io.button.is_high().map_err(pin_err("button"))?;
        let pressed = level != self.config.button_active_low;
        match self.button.sample(now, pressed) {
            Some(ButtonEvent::Pressed) => self.erase_armed = false,
            Some(ButtonEvent::Released { held_ms }) => self.on_press(held_ms)?,
            None => {}
        }
        if let Some(held) = self.button.held_ms(now) {
            if held >= self.config.press.erase_ms && !self.erase_armed {
                self.erase_armed = true;
                self.blink(3, 150)?;
                self.emit(Event::EraseArmed);
            }
        }
        if let Mode::Enrolling { since_ms, .. } = self.mode {
            if now.saturating_sub(since_ms) > self.config.enroll_timeout_ms {
                self.mode = Mode::Watching;
                self.next_name = None;
                self.io.led.set_low().map_err(pin_err("led"))?;
                self.emit(Event::EnrollTimedOut);
            }
        }
        match self.camera.capture() {
            Ok(Some(frame)) => self.on_frame(&frame)?,
            Ok(None) => {}
            Err(e) => self.emit(Event::Error {
                message: format!("camera: {e}"),
            }),
        }
        Ok(())
    }

    /// The enrolled identities.
    pub fn gallery(&self) -> &DoorGallery<DIM> {
        &self.gallery
    }

    /// The encoder.
    pub fn encoder(&self) -> &E {
        &self.encoder
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reports an event that happened outside the loop (a bad image file in
    /// the simulator, say) through the door's sink.
    pub fn report(&mut self, event: Event) {
        self.emit(event);
    }

    /// Carries out an installer's command (see [`crate::admin`]); what
    /// happened is reported as events.
    pub fn admin(&mut self, command: Admin) {
        match command {
            Admin::Name(name) => {
                let adds_to = self.gallery.find_name(&name).map(|i| i.id);
                self.emit(Event::NameSet {
                    name: name.to_string(),
                    adds_to,
                });
                self.next_name = Some(name);
            }
            Admin::List => {
                let people = self
                    .gallery
                    .iter()
                    .map(|i| (i.id, i.name.to_string(), i.shots))
                    .collect();
                let capacity = self.gallery.capacity();
                self.emit(Event::Roster { people, capacity });
            }
            Admin::Delete(name) => match self.gallery.find_name(&name).map(|i| i.id) {
                None => self.emit(Event::NotEnrolled {
                    name: name.to_string(),
                }),
                Some(id) => {
                    if self.change(|g| drop(g.remove(id))) {
                        self.emit(Event::Deleted {
                            id,
                            name: name.to_string(),
                        });
                    }
                }
            },
        }
    }

    /// Whether the door is waiting for enrollment frames.
    pub fn is_enrolling(&self) -> bool {
        matches!(self.mode, Mode::Enrolling { .. })
    }

    fn emit(&mut self, event: Event) {
        self.sink.emit(self.io.clock.now_ms(), &event);
    }

    fn blink(&mut self, times: u32, ms: u32) -> Result<(), DoorError> {
        for _ in 0..times {
            self.io.led.set_high().map_err(pin_err("led"))?;
            self.io.delay.delay_ms(ms);
            self.io.led.set_low().map_err(pin_err("led"))?;
            self.io.delay.delay_ms(ms);
        }
        Ok(())
    }

    fn on_press(&mut self, held_ms: u64) -> Result<(), DoorError> {
        match self.config.press.kind(held_ms) {
            PressKind::Short => {
                self.mode = Mode::Enrolling {
                    shots: Vec::new(),
                    since_ms: self.io.clock.now_ms(),
                };
                self.io.led.set_high().map_err(pin_err("led"))?;
                self.emit(Event::EnrollStarted {
                    frames: self.config.enroll_shots,
                });
            }
            PressKind::Long => {
                self.leave_enrollment()?;
                match self
                    .gallery
                    .iter()
                    .last()
                    .map(|i| (i.id, i.name.to_string()))
                {
                    None => self.emit(Event::NothingToDelete),
                    Some((id, name)) => {
                        if self.change(|g| drop(g.remove_last())) {
                            self.emit(Event::Deleted { id, name });
                        }
                    }
                }
            }
            PressKind::VeryLong => {
                self.leave_enrollment()?;
                let count = self.gallery.len();
                if self.change(|g| g.clear()) {
                    self.emit(Event::Erased { count });
                }
            }
        }
        Ok(())
    }

    fn leave_enrollment(&mut self) -> Result<(), DoorError> {
        if self.is_enrolling() {
            self.mode = Mode::Watching;
            self.io.led.set_low().map_err(pin_err("led"))?;
        }
        Ok(())
    }

    /// Applies `f` to the gallery and stores the result (see [`Door::commit`]).
    fn change(&mut self, f: impl FnOnce(&mut DoorGallery<DIM>)) -> bool {
        let mut next = self.gallery.clone();
        f(&mut next);
        self.commit(next)
    }

    /// Makes `next` the gallery once it is stored; on failure keeps the
    /// gallery as it was, reports the error and returns false.
    fn commit(&mut self, next: DoorGallery<DIM>) -> bool {
        let before = core::mem::replace(&mut self.gallery, next);
        match self.persist() {
            Ok(()) => {
                self.refresh_context();
                true
            }
            Err(message) => {
                self.gallery = before;
                self.emit(Event::Error {
                    message: format!("gallery not stored, change undone: {message}"),
                });
                false
            }
        }
    }

    /// Recomputes the gallery's context embeddings (FCE models only); a
    /// failure is reported and leaves no context, so frames are refused.
    fn refresh_context(&mut self) {
        self.context = None;
        let Some(fce) = self.encoder.fce() else {
            return;
        };
        if self.gallery.is_empty() {
            return;
        }
        let prototypes: Vec<f32> = self
            .gallery
            .iter()
            .flat_map(|i| i.prototype.iter().copied())
            .collect();
        match fce.context(&prototypes) {
            Ok(context) if context.len() == prototypes.len() => self.context = Some(context),
            Ok(context) => self.emit(Event::Error {
                message: format!(
                    "full context embeddings: {} values for {} people",
                    context.len(),
                    self.gallery.len()
                ),
            }),
            Err(e) => self.emit(Event::Error {
                message: format!("full context embeddings: {e}"),
            }),
        }
    }

    /// The nearest identity to a frame's embedding and the open-set
    /// decision: against the prototypes, or with FCE, the frame attended over
    /// the gallery against its context embeddings.
    fn identify(
        &self,
        embedding: &[f32],
        rule: &OpenSet,
    ) -> Result<(Option<u32>, fewshot_core::Decision), String> {
        let Some(fce) = self.encoder.fce() else {
            return self
                .gallery
                .identify(embedding, self.config.distance, rule)
                .map_err(|e| e.to_string());
        };
        if self.gallery.is_empty() {
            return Ok((None, rule.decide(None)));
        }
        let context = self
            .context
            .as_ref()
            .ok_or("the gallery's context embeddings are missing")?;
        let attended = fce.attend(embedding, context)?;
        let nearest = fewshot_core::nearest(&attended, context.chunks(DIM), self.config.distance)
            .map_err(|e| e.to_string())?;
        let decision = rule.decide(Some(nearest));
        let id = match decision {
            fewshot_core::Decision::Known(n) => self.gallery.iter().nth(n.index).map(|i| i.id),
            fewshot_core::Decision::Unknown(_) => None,
        };
        Ok((id, decision))
    }

    fn persist(&mut self) -> Result<(), String> {
        let generation = self.generation.wrapping_add(1);
        let mut bytes = vec![0u8; self.gallery.encoded_len()];
        store::encode(&self.gallery, generation, &mut bytes).map_err(|e| e.to_string())?;
        self.storage.save(&bytes).map_err(|e| e.to_string())?;
        self.generation = generation;
        Ok(())
    }

    /// The frame's face, embedded, with its box when a detector found it;
    /// `None` (reported) when there is no usable face or something failed.
    fn embed(&mut self, frame: &OwnedFrame) -> Option<(Vec<f32>, Option<[f32; 4]>)> {
        let result = frame
            .as_frame()
            .map_err(|e| format!("camera frame: {e}"))
            .and_then(|f| match self.config.frame_size {
                Some((w, h)) if (f.width, f.height) != (w, h) => Err(format!(
                    "camera frame is {}x{}, the camera is set up for {w}x{h}",
                    f.width, f.height
                )),
                _ => Ok(f),
            })
            .and_then(|f| self.encoder.look(&f));
        match result {
            Ok(Sight::Face { embedding, face }) => {
                if embedding.len() == DIM && embedding.iter().all(|v| v.is_finite()) {
                    self.last_no_face_ms = None;
                    return Some((embedding, face.map(|f| f.bbox)));
                }
                self.emit(Event::Error {
                    message: "the encoder's output is not a finite embedding of the right size"
                        .into(),
                });
            }
            Ok(Sight::NoFace) => {
                let now = self.io.clock.now_ms();
                let due = self
                    .last_no_face_ms
                    .is_none_or(|t| now.saturating_sub(t) >= self.config.no_face_every_ms);
                if due {
                    self.last_no_face_ms = Some(now);
                    self.emit(Event::NoFace);
                }
            }
            Ok(Sight::TooSmall {
                face,
                eye_px,
                min_eye_px,
            }) => self.emit(Event::FaceTooSmall {
                bbox: face.bbox,
                eye_px,
                min_eye_px,
            }),
            Err(message) => self.emit(Event::Error { message }),
        }
        None
    }

    fn on_frame(&mut self, frame: &OwnedFrame) -> Result<(), DoorError> {
        let now = self.io.clock.now_ms();
        if !self.is_enrolling() {
            if let Some(until) = self.cooldown_until {
                if now < until {
                    let due = self
                        .last_ignored_ms
                        .is_none_or(|t| now.saturating_sub(t) >= self.config.ignored_every_ms);
                    if due {
                        self.last_ignored_ms = Some(now);
                        self.emit(Event::Ignored {
                            remaining_ms: until - now,
                        });
                    }
                    return Ok(());
                }
                self.cooldown_until = None;
                self.last_ignored_ms = None;
            }
        }
        let Some((embedding, bbox)) = self.embed(frame) else {
            return Ok(());
        };
        if let Mode::Enrolling { shots, .. } = &mut self.mode {
            shots.push(embedding);
            if shots.len() >= self.config.enroll_shots {
                let shots = core::mem::take(shots);
                self.mode = Mode::Watching;
                self.io.led.set_low().map_err(pin_err("led"))?;
                self.finish_enrollment(&shots);
            }
            return Ok(());
        }
        let rule = OpenSet {
            max_distance: self.open_threshold(),
            min_margin: self.config.min_margin,
        };
        match self.identify(&embedding, &rule) {
            Err(e) => self.emit(Event::Error {
                message: format!("matching: {e}"),
            }),
            Ok((Some(id), decision)) => {
                let distance = match decision {
                    fewshot_core::Decision::Known(n) => n.distance,
                    fewshot_core::Decision::Unknown(_) => f32::NAN,
                };
                let name = self
                    .gallery
                    .get(id)
                    .map(|i| i.name.to_string())
                    .unwrap_or_default();
                self.rejections = 0;
                self.emit(Event::Opened {
                    id,
                    name,
                    distance,
                    bbox,
                });
                self.io.relay.set_high().map_err(pin_err("relay"))?;
                self.io.delay.delay_ms(self.config.open_ms);
                self.io.relay.set_low().map_err(pin_err("relay"))?;
            }
            Ok((None, decision)) => {
                let distance = match decision {
                    fewshot_core::Decision::Unknown(n) => n.map(|n| n.distance),
                    fewshot_core::Decision::Known(n) => Some(n.distance),
                };
                self.emit(Event::Refused { distance, bbox });
                self.rejections += 1;
                if self.rejections >= self.config.max_rejections {
                    self.emit(Event::CoolDown {
                        rejections: self.rejections,
                        for_ms: self.config.cooldown_ms,
                    });
                    self.rejections = 0;
                    self.cooldown_until = Some(now.saturating_add(self.config.cooldown_ms));
                }
            }
        }
        Ok(())
    }

    /// The largest distance that opens the door now: the threshold for the
    /// gallery's size when the model carries them, else the fixed one.
    fn open_threshold(&self) -> f32 {
        match &self.config.gallery_thresholds {
            Some(t) => t.for_gallery(self.gallery.len()),
            None => self.config.threshold,
        }
    }

    fn finish_enrollment(&mut self, shots: &[Vec<f32>]) {
        let name = self.next_name.take();
        let spread = self.spread(shots);
        let limit = self.config.enroll_spread.unwrap_or(self.config.threshold);
        // `spread` is never NaN (see `spread`).
        if spread > limit {
            self.emit(Event::EnrollRefused { spread, limit });
            return;
        }
        if let Some(person) = name.as_ref().and_then(|n| self.gallery.find_name(n)) {
            let (id, prototype) = (person.id, person.prototype);
            self.add_shots(id, &prototype, shots, limit);
            return;
        }
        let name = match name {
            Some(name) => name.to_string(),
            None => format!("person-{}", self.gallery.next_id()),
        };
        let mut next = self.gallery.clone();
        let enrolled = next.enroll(&name, &shots[0]).and_then(|id| {
            shots[1..]
                .iter()
                .try_for_each(|s| next.add_shot(id, s))
                .map(|()| id)
        });
        match enrolled {
            Err(e) => self.emit(Event::Error {
                message: format!("enrollment: {e}"),
            }),
            Ok(id) => {
                if self.commit(next) {
                    self.emit(Event::Enrolled {
                        id,
                        name,
                        shots: shots.len(),
                    });
                }
            }
        }
    }

    /// Adds agreeing `shots` to the enrolled person `id` whose prototype is
    /// `prototype`, when their mean lies within `limit` of it.
    fn add_shots(&mut self, id: u32, prototype: &[f32; DIM], shots: &[Vec<f32>], limit: f32) {
        let name = self
            .gallery
            .get(id)
            .map(|i| i.name.to_string())
            .unwrap_or_default();
        let mut mean = [0.0f32; DIM];
        let distance = match mean_into(shots.iter().map(|s| &s[..]), &mut mean) {
            Ok(_) => self.config.distance.between(&mean, prototype),
            Err(_) => f32::INFINITY,
        };
        if distance.is_nan() || distance > limit {
            self.emit(Event::AddRefused {
                id,
                name,
                distance,
                limit,
            });
            return;
        }
        let mut next = self.gallery.clone();
        let added = shots.iter().try_for_each(|s| next.add_shot(id, s));
        let total = next.get(id).map_or(0, |i| i.shots);
        match added {
            Err(e) => self.emit(Event::Error {
                message: format!("adding frames to {name}: {e}"),
            }),
            Ok(()) => {
                if self.commit(next) {
                    self.emit(Event::ShotsAdded {
                        id,
                        name,
                        shots: shots.len(),
                        total,
                    });
                }
            }
        }
    }

    /// Largest distance of a shot to the mean of the other shots (0 for one shot).
    fn spread(&self, shots: &[Vec<f32>]) -> f32 {
        if shots.len() < 2 {
            return 0.0;
        }
        let mut worst = 0.0f32;
        let mut mean = [0.0f32; DIM];
        for (i, shot) in shots.iter().enumerate() {
            let others = shots
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, s)| &s[..]);
            if mean_into(others, &mut mean).is_err() {
                return f32::INFINITY;
            }
            let d = self.config.distance.between(shot, &mean);
            worst = if d.is_nan() {
                f32::INFINITY
            } else {
                worst.max(d)
            };
        }
        worst
    }
}
