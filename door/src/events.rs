//! What the door reports, and where reports go: a recorder for tests, or
//! `defmt` (feature `defmt`). The host's readable and JSON lines are in
//! `fewshot-firmware`.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

/// One thing the door did or noticed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The door started: identities loaded, the open-set threshold in force.
    Booted {
        /// Identities in the gallery.
        identities: usize,
        /// The pair threshold: the largest accepted distance, unless
        /// `gallery_threshold` is given; enrollment agreement uses it.
        threshold: f32,
        /// With the model's thresholds per gallery size: the one the door
        /// opens by at this gallery's size, as (calibrated size, threshold).
        gallery_threshold: Option<(usize, f32)>,
        /// Distance name (`l2`, `cosine`, `dot`).
        distance: &'static str,
    },
    /// The stored gallery was unreadable: it was moved aside and the door
    /// starts locked with an empty gallery.
    GalleryCorrupt {
        /// Why it could not be read.
        message: String,
        /// Where the bad bytes were kept.
        kept_at: String,
    },
    /// A short press: the next frames enroll a new identity.
    EnrollStarted {
        /// Frames that will be taken.
        frames: usize,
    },
    /// A new identity was enrolled and stored.
    Enrolled {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
        /// Frames averaged into its prototype.
        shots: usize,
    },
    /// The enrollment frames disagreed too much with each other; nothing stored.
    EnrollRefused {
        /// Largest distance of a shot to the mean of the others.
        spread: f32,
        /// The largest allowed.
        limit: f32,
    },
    /// The enrollment frames did not arrive in time; nothing stored.
    EnrollTimedOut,
    /// An identity was deleted (long press) and the gallery stored.
    Deleted {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
    },
    /// A long press with nobody enrolled.
    NothingToDelete,
    /// The button has been held long enough to erase everything on release;
    /// the LED showed the confirmation pattern.
    EraseArmed,
    /// Every identity was erased (very long press) and the gallery stored.
    Erased {
        /// How many identities were removed.
        count: usize,
    },
    /// A known identity: the relay was pulsed.
    Opened {
        /// Its id.
        id: u32,
        /// Its name.
        name: String,
        /// Distance of the frame to its prototype.
        distance: f32,
        /// The face's box (left, top, width, height), when a detector found it.
        bbox: Option<[f32; 4]>,
    },
    /// Nobody known: the door stays shut. `None` when nobody is enrolled.
    Refused {
        /// Distance to the nearest prototype.
        distance: Option<f32>,
        /// The face's box (left, top, width, height), when a detector found it.
        bbox: Option<[f32; 4]>,
    },
    /// The detector found no face in the frame (reported at a low rate).
    NoFace,
    /// The face is too small to recognise: nothing was decided.
    FaceTooSmall {
        /// The face's box (left, top, width, height).
        bbox: [f32; 4],
        /// Its eye distance, in pixels.
        eye_px: f32,
        /// The smallest accepted.
        min_eye_px: f32,
    },
    /// Too many refusals in a row: frames are ignored for a while.
    CoolDown {
        /// Refusals in a row that triggered it.
        rejections: u32,
        /// How long frames are ignored, in milliseconds.
        for_ms: u64,
    },
    /// A frame was ignored during the cool-down.
    Ignored {
        /// Milliseconds of cool-down left.
        remaining_ms: u64,
    },
    /// The next enrollment will get this name (`adds_to`: someone already
    /// has it, and the frames will be added to that person).
    NameSet {
        /// The name.
        name: String,
        /// The id of the person who already has it.
        adds_to: Option<u32>,
    },
    /// Frames were added to someone already enrolled (their prototype is the
    /// running mean of all their frames) and the gallery stored.
    ShotsAdded {
        /// Their id.
        id: u32,
        /// Their name.
        name: String,
        /// Frames added now.
        shots: usize,
        /// Frames their prototype now averages.
        total: u32,
    },
    /// Frames meant for someone already enrolled do not look like them;
    /// nothing stored.
    AddRefused {
        /// Their id.
        id: u32,
        /// Their name.
        name: String,
        /// Distance of the new frames' mean to their prototype.
        distance: f32,
        /// The largest allowed.
        limit: f32,
    },
    /// Everyone enrolled, oldest first (the answer to `list`).
    Roster {
        /// Id, name and frames averaged, per person.
        people: Vec<(u32, String, u32)>,
        /// The most people the door holds.
        capacity: usize,
    },
    /// An admin command named someone who is not enrolled.
    NotEnrolled {
        /// The name given.
        name: String,
    },
    /// Something went wrong; the door carries on, shut.
    Error {
        /// What went wrong.
        message: String,
    },
}

impl Event {
    /// The event's name, as in the JSON `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Booted { .. } => "booted",
            Event::GalleryCorrupt { .. } => "gallery_corrupt",
            Event::EnrollStarted { .. } => "enroll_started",
            Event::Enrolled { .. } => "enrolled",
            Event::EnrollRefused { .. } => "enroll_refused",
            Event::EnrollTimedOut => "enroll_timed_out",
            Event::Deleted { .. } => "deleted",
            Event::NothingToDelete => "nothing_to_delete",
            Event::EraseArmed => "erase_armed",
            Event::Erased { .. } => "erased",
            Event::Opened { .. } => "opened",
            Event::Refused { .. } => "refused",
            Event::CoolDown { .. } => "cool_down",
            Event::Ignored { .. } => "ignored",
            Event::NoFace => "no_face",
            Event::FaceTooSmall { .. } => "face_too_small",
            Event::NameSet { .. } => "name_set",
            Event::ShotsAdded { .. } => "shots_added",
            Event::AddRefused { .. } => "add_refused",
            Event::Roster { .. } => "roster",
            Event::NotEnrolled { .. } => "not_enrolled",
            Event::Error { .. } => "error",
        }
    }

    /// The event as a readable line (without the time).
    pub fn describe(&self) -> String {
        match self {
            Event::Booted {
                identities,
                threshold,
                gallery_threshold: None,
                distance,
            } => format!(
                "booted: {identities} identities enrolled, {distance} distance, threshold {threshold}"
            ),
            Event::Booted {
                identities,
                threshold,
                gallery_threshold: Some((size, t)),
                distance,
            } => format!(
                "booted: {identities} identities enrolled, {distance} distance, opens at {t} \
                 (the model's threshold for up to {size} {}), pair threshold {threshold}",
                if *size == 1 { "person" } else { "people" }
            ),
            Event::GalleryCorrupt { message, kept_at } => format!(
                "stored gallery unreadable ({message}); kept at {kept_at}; starting locked with an empty gallery"
            ),
            Event::EnrollStarted { frames } => {
                format!("enrolling: look at the camera ({frames} frames)")
            }
            Event::Enrolled { id, name, shots } => {
                format!("enrolled {name} (id {id}) from {shots} frames")
            }
            Event::EnrollRefused { spread, limit } => format!(
                "enrollment refused: the frames disagree (spread {spread:.4} > {limit:.4}); nothing stored"
            ),
            Event::EnrollTimedOut => "enrollment timed out; nothing stored".into(),
            Event::Deleted { id, name } => format!("deleted {name} (id {id})"),
            Event::NothingToDelete => "nothing to delete".into(),
            Event::EraseArmed => "release now to erase everyone".into(),
            Event::Erased { count } => format!("erased all {count} identities"),
            Event::Opened {
                id,
                name,
                distance,
                bbox,
            } => format!(
                "opened for {name} (id {id}), distance {distance:.4}{}",
                box_text(bbox)
            ),
            Event::Refused {
                distance: Some(d),
                bbox,
            } => format!(
                "refused: unknown, nearest distance {d:.4}{}",
                box_text(bbox)
            ),
            Event::Refused {
                distance: None,
                bbox,
            } => format!("refused: nobody is enrolled{}", box_text(bbox)),
            Event::NoFace => "no face in view".into(),
            Event::FaceTooSmall {
                bbox,
                eye_px,
                min_eye_px,
            } => format!(
                "face too small: eyes {eye_px:.1} px apart, at least {min_eye_px:.1} needed{}",
                box_text(&Some(*bbox))
            ),
            Event::CoolDown {
                rejections,
                for_ms,
            } => format!("{rejections} refusals in a row: ignoring frames for {for_ms} ms"),
            Event::Ignored { remaining_ms } => {
                format!("frame ignored: cool-down, {remaining_ms} ms left")
            }
            Event::NameSet {
                name,
                adds_to: None,
            } => format!("the next enrollment will be named {name}"),
            Event::NameSet {
                name,
                adds_to: Some(id),
            } => format!("the next enrollment adds frames to {name} (id {id})"),
            Event::ShotsAdded {
                id,
                name,
                shots,
                total,
            } => format!("added {shots} frames to {name} (id {id}), {total} in all"),
            Event::AddRefused {
                id,
                name,
                distance,
                limit,
            } => format!(
                "frames not added to {name} (id {id}): they are {distance:.4} from their \
                 prototype (> {limit:.4}); nothing stored"
            ),
            Event::Roster { people, capacity } => {
                let list: Vec<String> = people
                    .iter()
                    .map(|(id, name, shots)| format!("{name} (id {id}, {shots} frames)"))
                    .collect();
                format!(
                    "{} of {capacity} enrolled: {}",
                    people.len(),
                    if list.is_empty() {
                        "nobody".into()
                    } else {
                        list.join(", ")
                    }
                )
            }
            Event::NotEnrolled { name } => format!("nobody named {name} is enrolled"),
            Event::Error { message } => format!("error: {message}"),
        }
    }
}

/// ` (face at x,y w×h)` for a readable line, or nothing.
fn box_text(bbox: &Option<[f32; 4]>) -> String {
    bbox.map_or_else(String::new, |[x, y, w, h]| {
        format!(" (face at {x:.0},{y:.0}, {w:.0}x{h:.0})")
    })
}

/// Where the door's events go.
pub trait EventSink {
    /// Reports `event`, which happened at `at_ms` on the door's clock.
    fn emit(&mut self, at_ms: u64, event: &Event);
}

/// Keeps every event with its time; clones share the record (for tests).
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    events: Rc<RefCell<Vec<(u64, Event)>>>,
}

impl Recorder {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Removes and returns the events recorded so far.
    pub fn take(&self) -> Vec<Event> {
        self.events.borrow_mut().drain(..).map(|(_, e)| e).collect()
    }

    /// The events recorded so far, with their times.
    pub fn all(&self) -> Vec<(u64, Event)> {
        self.events.borrow().clone()
    }
}

impl EventSink for Recorder {
    fn emit(&mut self, at_ms: u64, event: &Event) {
        self.events.borrow_mut().push((at_ms, event.clone()));
    }
}

/// Sends both to two sinks.
impl<A: EventSink, B: EventSink> EventSink for (A, B) {
    fn emit(&mut self, at_ms: u64, event: &Event) {
        self.0.emit(at_ms, event);
        self.1.emit(at_ms, event);
    }
}

/// Logs events through `defmt` (the final binary provides the global logger).
#[cfg(feature = "defmt")]
#[derive(Debug, Clone, Copy, Default)]
pub struct DefmtSink;

#[cfg(feature = "defmt")]
impl EventSink for DefmtSink {
    fn emit(&mut self, at_ms: u64, event: &Event) {
        match event {
            Event::Opened { id, distance, .. } => {
                defmt::info!(
                    "t={=u64} opened id={=u32} distance={=f32}",
                    at_ms,
                    id,
                    distance
                )
            }
            Event::Refused { distance, .. } => {
                defmt::info!("t={=u64} refused distance={}", at_ms, distance)
            }
            Event::Enrolled { id, shots, .. } => {
                defmt::info!(
                    "t={=u64} enrolled id={=u32} shots={=usize}",
                    at_ms,
                    id,
                    shots
                )
            }
            Event::Deleted { id, .. } => defmt::info!("t={=u64} deleted id={=u32}", at_ms, id),
            Event::Error { message } => defmt::error!("t={=u64} error {=str}", at_ms, message),
            Event::GalleryCorrupt { message, .. } => {
                defmt::error!("t={=u64} gallery corrupt: {=str}", at_ms, message)
            }
            other => defmt::info!("t={=u64} {=str}", at_ms, other.name()),
        }
    }
}
