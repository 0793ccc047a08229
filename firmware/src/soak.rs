//! The door's soak: a long run of frames of every kind (genuine, strangers,
//! no face, corrupt) through [`Door::poll`], with enrollments (named and
//! not, new people and more frames of enrolled ones), deletions (by name and
//! by long press), listings and restarts mixed in. It measures resident
//! memory at intervals and checks the gallery, after every change and at the
//! end, against a model of what should have happened, kept here from the
//! script alone (and embeddings computed by a second encoder), and the
//! stored gallery against the door's.
//!
//! The model's rules are the door's documented ones, written again: an
//! enrollment of two frames is stored when their distance is at most the
//! enrollment limit; frames for a name already enrolled are added when
//! their mean lies within the limit of that person's prototype; a full
//! gallery refuses; a long press deletes the newest person.

use std::collections::BTreeMap;
use std::path::Path;

use crate::admin::Admin;
use crate::camera::OwnedFrame;
use crate::door::{Config, Door, DoorError, DoorGallery, Encoder};
use crate::events::{Event, Recorder};
use crate::face::Sight;
use crate::pins::{SimButton, SimOutput};
use crate::sim::SimHardware;
use crate::storage::FileStore;
use fewshot_core::{store, Name, PixelFormat};

/// The frames a soak shows: each person's photos, and strangers.
#[derive(Debug, Clone)]
pub struct Material {
    /// Photos of each person who may enroll (at least 3 each).
    pub people: Vec<Vec<OwnedFrame>>,
    /// Photos of people who never enroll.
    pub strangers: Vec<OwnedFrame>,
}

/// How long and how often.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Frames shown in all (enrollment frames included).
    pub frames: usize,
    /// Resident memory is read every this many frames.
    pub report_every: usize,
    /// The door restarts from its stored gallery every this many frames.
    pub restart_every: usize,
    /// Seed of the script's choices.
    pub seed: u64,
    /// The gallery grows to about this many people, then holds there
    /// (enrollments and deletions balance).
    pub people: usize,
}

/// What a soak saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// (frames shown, resident memory in KiB) at each report.
    pub rss_kib: Vec<(usize, u64)>,
    /// How many of each event (by [`Event::name`]).
    pub events: BTreeMap<&'static str, usize>,
    /// Restarts done.
    pub restarts: usize,
    /// Gallery checks against the model, all passed.
    pub checks: usize,
    /// People enrolled at the end.
    pub people_at_end: usize,
}

/// The soak failed: the door stopped, or its gallery or events left the model.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// The door returned an error.
    #[error("the door stopped at frame {frame}: {source}")]
    Door {
        /// Frames shown before.
        frame: usize,
        /// Why.
        source: DoorError,
    },
    /// The gallery or an event differs from the model.
    #[error("at frame {frame}: {message}")]
    Diverged {
        /// Frames shown before.
        frame: usize,
        /// What differs.
        message: String,
    },
    /// The material or plan is unusable.
    #[error("soak set-up: {0}")]
    Setup(String),
}

/// One enrolled person as the model sees them.
#[derive(Debug, Clone)]
struct Person {
    id: u32,
    name: String,
    /// Index into `Material::people`.
    who: usize,
    /// Sum of their frames' embeddings, in f64.
    sum: Vec<f64>,
    shots: u32,
}

/// Resident memory of this process in KiB (`VmRSS`), where Linux tells it.
pub fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

type SoakDoor<const DIM: usize, E> = Door<
    DIM,
    E,
    SimButton,
    SimOutput,
    SimOutput,
    crate::clock::SimClock,
    crate::clock::SimClock,
    crate::camera::QueueCamera,
    FileStore,
    Recorder,
>;

struct Soak<'a, const DIM: usize, E, F> {
    make: F,
    reference: E,
    material: &'a Material,
    config: Config,
    gallery_path: &'a Path,
    hw: SimHardware,
    events: Recorder,
    door: Option<SoakDoor<DIM, E>>,
    model: Vec<Person>,
    next_id: u32,
    frame: usize,
    rng: u64,
    report: Report,
    /// The last enrollment's person and photo indices, for messages.
    last_enrollment: Option<(usize, usize, usize)>,
}

/// Runs the soak: `make` builds an encoder (for the door at each start, and
/// once for the model's own embeddings); the gallery lives at `gallery`,
/// which must not exist yet.
pub fn soak<const DIM: usize, E, F>(
    mut make: F,
    material: &Material,
    config: Config,
    gallery: &Path,
    plan: &Plan,
) -> Result<Report, SoakError>
where
    E: Encoder,
    F: FnMut() -> E,
{
    if material.people.len() < 2 || material.people.iter().any(|p| p.len() < 3) {
        return Err(SoakError::Setup(
            "at least two people with three photos each".into(),
        ));
    }
    if material.strangers.is_empty() || plan.report_every == 0 || plan.restart_every == 0 {
        return Err(SoakError::Setup(
            "strangers, and report and restart intervals of at least one frame".into(),
        ));
    }
    if gallery.exists() {
        return Err(SoakError::Setup(format!(
            "{} exists: the soak starts from no gallery",
            gallery.display()
        )));
    }
    let reference = make();
    let mut s = Soak::<DIM, E, F> {
        make,
        reference,
        material,
        config,
        gallery_path: gallery,
        hw: SimHardware::new(),
        events: Recorder::new(),
        door: None,
        model: Vec::new(),
        next_id: 0,
        frame: 0,
        rng: plan.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        report: Report::default(),
        last_enrollment: None,
    };
    s.start()?;
    let mut next_report = 0;
    let mut next_restart = plan.restart_every;
    while s.frame < plan.frames {
        if s.frame >= next_report {
            if let Some(kib) = resident_kib() {
                s.report.rss_kib.push((s.frame, kib));
            }
            next_report += plan.report_every;
        }
        if s.frame >= next_restart {
            s.door = None;
            s.start()?;
            s.report.restarts += 1;
            next_restart += plan.restart_every;
        }
        // Per 100 steps: enrollments and deletions (more enrollments while
        // the gallery is below its size), a listing, the rest plain frames.
        let (enrolls, deletes) = if s.model.len() < plan.people {
            (6, 1)
        } else {
            (3, 3)
        };
        match s.below(100) {
            n if n < enrolls => s.enroll()?,
            n if n < enrolls + deletes => s.delete()?,
            n if n == enrolls + deletes => s.list()?,
            _ => s.show_one()?,
        }
    }
    s.check_gallery()?;
    if let Some(kib) = resident_kib() {
        s.report.rss_kib.push((s.frame, kib));
    }
    s.report.people_at_end = s.model.len();
    Ok(s.report)
}

impl<const DIM: usize, E: Encoder, F: FnMut() -> E> Soak<'_, DIM, E, F> {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        ((self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n as u64) as usize
    }

    fn diverged(&self, message: String) -> SoakError {
        SoakError::Diverged {
            frame: self.frame,
            message,
        }
    }

    fn door(&mut self) -> &mut SoakDoor<DIM, E> {
        self.door.as_mut().expect("the door is running")
    }

    /// (Re)starts the door on the stored gallery and checks what it loaded.
    fn start(&mut self) -> Result<(), SoakError> {
        let door = Door::boot(
            (self.make)(),
            self.hw.io(),
            self.hw.camera.clone(),
            FileStore::open(self.gallery_path),
            self.events.clone(),
            self.config.clone(),
        )
        .map_err(|source| SoakError::Door {
            frame: self.frame,
            source,
        })?;
        self.door = Some(door);
        self.take_events();
        self.check_gallery()
    }

    /// One poll, then 100 ms pass.
    fn poll(&mut self) -> Result<(), SoakError> {
        let frame = self.frame;
        self.door()
            .poll()
            .map_err(|source| SoakError::Door { frame, source })?;
        self.hw.clock.advance_ms(100);
        Ok(())
    }

    fn take_events(&mut self) -> Vec<Event> {
        let events = self.events.take();
        for e in &events {
            *self.report.events.entry(e.name()).or_default() += 1;
        }
        events
    }

    fn press(&mut self, ms: u64) -> Result<Vec<Event>, SoakError> {
        self.hw.button.set(true);
        for _ in 0..ms.div_ceil(100) {
            self.poll()?;
        }
        self.hw.button.set(false);
        // The release is seen, then confirmed past the debounce time.
        self.poll()?;
        self.poll()?;
        Ok(self.take_events())
    }

    fn show(&mut self, frame: OwnedFrame) -> Result<Vec<Event>, SoakError> {
        self.hw.camera.push(frame);
        self.poll()?;
        self.frame += 1;
        Ok(self.take_events())
    }

    /// A frame that is not an enrollment's: genuine, stranger, no face or corrupt.
    fn show_one(&mut self) -> Result<(), SoakError> {
        let kind = self.below(10);
        let material = self.material;
        let frame = match kind {
            0..=4 => {
                let photos = &material.people[self.below(material.people.len())];
                photos[self.below(photos.len())].clone()
            }
            5..=7 => material.strangers[self.below(material.strangers.len())].clone(),
            8 => {
                // A blank wall.
                let shade = self.below(256) as u8;
                OwnedFrame {
                    width: 160,
                    height: 120,
                    format: PixelFormat::Gray8,
                    pixels: vec![shade; 160 * 120],
                }
            }
            _ => {
                // A camera buffer shorter than its size says.
                let n = self.below(1000);
                OwnedFrame {
                    width: 64,
                    height: 64,
                    format: PixelFormat::Rgb8,
                    pixels: vec![7; n],
                }
            }
        };
        let events = self.show(frame)?;
        if kind == 9
            && !matches!(
                &events[..],
                [Event::Error { .. }] | [Event::Ignored { .. }] | []
            )
        {
            return Err(self.diverged(format!("a corrupt frame gave {events:?}")));
        }
        if events.iter().any(|e| {
            matches!(
                e,
                Event::Enrolled { .. } | Event::Deleted { .. } | Event::ShotsAdded { .. }
            )
        }) {
            return Err(self.diverged(format!("a plain frame changed the gallery: {events:?}")));
        }
        Ok(())
    }

    /// The embedding the door will compute for `frame` (none: no usable face).
    fn embed(&mut self, frame: &OwnedFrame) -> Option<Vec<f32>> {
        let f = frame.as_frame().ok()?;
        match self.reference.look(&f) {
            Ok(Sight::Face { embedding, .. }) => Some(embedding),
            _ => None,
        }
    }

    /// A short press, perhaps a name first, then two photos of someone.
    fn enroll(&mut self) -> Result<(), SoakError> {
        let who = self.below(self.material.people.len());
        let enrolled = self.model.iter().position(|p| p.who == who);
        let name = match (enrolled, self.below(3)) {
            // More frames of someone enrolled, by their name.
            (Some(i), 0 | 1) => Some(self.model[i].name.clone()),
            // Unnamed: a new person-<id> even if they are enrolled already.
            (_, 2) => None,
            _ => Some(format!("Person {who} {}", self.below(1000))),
        };
        if let Some(name) = &name {
            let parsed = Name::try_from(name.as_str())
                .map_err(|_| SoakError::Setup(format!("name {name} too long")))?;
            self.door().admin(Admin::Name(parsed));
            self.take_events();
        }
        let started = self.press(200)?;
        if !matches!(&started[..], [Event::EnrollStarted { .. }]) {
            return Err(self.diverged(format!("a short press gave {started:?}")));
        }
        let material = self.material;
        let photos = &material.people[who];
        let (a, b) = (self.below(photos.len()), self.below(photos.len()));
        self.last_enrollment = Some((who, a, b));
        let (fa, fb) = (photos[a].clone(), photos[b].clone());
        let (Some(ea), Some(eb)) = (self.embed(&fa), self.embed(&fb)) else {
            return Err(SoakError::Setup(format!(
                "person {who}'s photos {a} and {b}: no usable face"
            )));
        };
        let first = self.show(fa)?;
        if !first.is_empty() {
            return Err(self.diverged(format!("the first enrollment frame gave {first:?}")));
        }
        let got = self.show(fb)?;
        let expected = self.expect_enrollment(who, name, &ea, &eb);
        if !same_events(&got, &expected) {
            return Err(self.diverged(format!(
                "enrollment of person {who}: expected {expected:?}, got {got:?}"
            )));
        }
        self.check_gallery()
    }

    /// What the door should report for an enrollment, updating the model.
    fn expect_enrollment(
        &mut self,
        who: usize,
        name: Option<String>,
        ea: &[f32],
        eb: &[f32],
    ) -> Vec<Event> {
        let limit = self.config.enroll_spread.unwrap_or(self.config.threshold);
        let distance = self.config.distance;
        let spread = distance.between(ea, eb);
        if spread > limit {
            return vec![Event::EnrollRefused { spread, limit }];
        }
        let new_sum = |s: &[f64]| -> Vec<f64> {
            s.iter()
                .zip(ea.iter().zip(eb))
                .map(|(s, (a, b))| s + f64::from(*a) + f64::from(*b))
                .collect()
        };
        if let Some(i) = name
            .as_ref()
            .and_then(|n| self.model.iter().position(|p| &p.name == n))
        {
            let p = &self.model[i];
            let mean: Vec<f32> = ea.iter().zip(eb).map(|(a, b)| (a + b) / 2.0).collect();
            let proto: Vec<f32> = p
                .sum
                .iter()
                .map(|s| (s / f64::from(p.shots)) as f32)
                .collect();
            let d = distance.between(&mean, &proto);
            if d > limit {
                return vec![Event::AddRefused {
                    id: p.id,
                    name: p.name.clone(),
                    distance: d,
                    limit,
                }];
            }
            let p = &mut self.model[i];
            p.sum = new_sum(&p.sum);
            p.shots += 2;
            return vec![Event::ShotsAdded {
                id: p.id,
                name: p.name.clone(),
                shots: 2,
                total: p.shots,
            }];
        }
        if self.model.len() >= self.config.capacity {
            return vec![Event::Error {
                message: format!(
                    "enrollment: gallery is full ({} identities)",
                    self.config.capacity
                ),
            }];
        }
        let id = self.next_id;
        self.next_id += 1;
        let name = name.unwrap_or_else(|| format!("person-{id}"));
        self.model.push(Person {
            id,
            name: name.clone(),
            who,
            sum: new_sum(&vec![0.0; ea.len()]),
            shots: 2,
        });
        vec![Event::Enrolled { id, name, shots: 2 }]
    }

    /// By name (an admin command) or by a long press (the newest person).
    fn delete(&mut self) -> Result<(), SoakError> {
        if self.below(2) == 0 {
            let events = self.press(2000)?;
            let expected = match self.model.pop() {
                Some(p) => vec![Event::Deleted {
                    id: p.id,
                    name: p.name,
                }],
                None => vec![Event::NothingToDelete],
            };
            if events != expected {
                return Err(self.diverged(format!(
                    "a long press: expected {expected:?}, got {events:?}"
                )));
            }
        } else {
            let pick = (!self.model.is_empty()).then(|| self.below(self.model.len()));
            let name = pick.map_or_else(|| "Nobody".to_string(), |i| self.model[i].name.clone());
            let parsed = Name::try_from(name.as_str())
                .map_err(|_| SoakError::Setup(format!("name {name} too long")))?;
            self.door().admin(Admin::Delete(parsed));
            let events = self.take_events();
            let expected = match pick {
                Some(i) => {
                    let p = self.model.remove(i);
                    vec![Event::Deleted {
                        id: p.id,
                        name: p.name,
                    }]
                }
                None => vec![Event::NotEnrolled { name }],
            };
            if events != expected {
                return Err(self.diverged(format!(
                    "delete by name: expected {expected:?}, got {events:?}"
                )));
            }
        }
        self.check_gallery()
    }

    fn list(&mut self) -> Result<(), SoakError> {
        self.door().admin(Admin::List);
        let events = self.take_events();
        let expected = vec![Event::Roster {
            people: self
                .model
                .iter()
                .map(|p| (p.id, p.name.clone(), p.shots))
                .collect(),
            capacity: self.config.capacity,
        }];
        if events != expected {
            return Err(self.diverged(format!("list: expected {expected:?}, got {events:?}")));
        }
        Ok(())
    }

    /// The door's gallery against the model (ids, names, shots,
    /// prototypes), and the stored gallery against the door's.
    fn check_gallery(&mut self) -> Result<(), SoakError> {
        self.report.checks += 1;
        let door = self.door.as_ref().expect("the door is running");
        let gallery = door.gallery();
        let stored = match std::fs::read(self.gallery_path) {
            Ok(bytes) => {
                let empty = DoorGallery::<DIM>::with_capacity(self.config.capacity);
                match store::decode_into(&bytes, empty) {
                    Ok(stored) => Some(stored.gallery),
                    Err(e) => return Err(self.diverged(format!("the stored gallery: {e}"))),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.diverged(format!("reading the stored gallery: {e}"))),
        };
        let stored_matches = match &stored {
            Some(stored) => stored == gallery,
            None => gallery.is_empty() && gallery.next_id() == 0,
        };
        if !stored_matches {
            return Err(self.diverged(format!(
                "the stored gallery ({} people) is not the door's ({} people)",
                stored.map_or(0, |g| g.len()),
                gallery.len()
            )));
        }
        if gallery.len() != self.model.len() {
            return Err(self.diverged(format!(
                "{} people in the gallery, {} in the model",
                gallery.len(),
                self.model.len()
            )));
        }
        for (got, want) in gallery.iter().zip(&self.model) {
            if (got.id, got.name.as_str(), got.shots) != (want.id, want.name.as_str(), want.shots) {
                return Err(self.diverged(format!(
                    "gallery has ({}, {}, {} shots), the model ({}, {}, {} shots)",
                    got.id, got.name, got.shots, want.id, want.name, want.shots
                )));
            }
            let worst = got
                .prototype
                .iter()
                .zip(&want.sum)
                .map(|(g, s)| (f64::from(*g) - s / f64::from(want.shots)).abs())
                .fold(0.0f64, f64::max);
            if worst > 1e-5 {
                let mean: Vec<f64> = want.sum.iter().map(|s| s / f64::from(want.shots)).collect();
                return Err(self.diverged(format!(
                    "{} (id {}, {} shots)'s prototype is {worst:e} from the mean of their \
                     frames: starts {:?}, the mean {:?}; the last enrollment (person, \
                     photos) {:?}",
                    want.name,
                    want.id,
                    want.shots,
                    &got.prototype[..4],
                    &mean[..4],
                    self.last_enrollment
                )));
            }
        }
        Ok(())
    }
}

/// Equal events, but for an [`Event::AddRefused`]'s distance, which the door
/// takes to its running-mean prototype and the model to its f64 mean.
fn same_events(got: &[Event], want: &[Event]) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|pair| match pair {
            (
                Event::AddRefused {
                    id,
                    name,
                    distance,
                    limit,
                },
                Event::AddRefused {
                    id: id2,
                    name: name2,
                    distance: distance2,
                    limit: limit2,
                },
            ) => {
                (id, name, limit) == (id2, name2, limit2)
                    && (distance - distance2).abs() <= 1e-4 * distance.abs().max(1.0)
            }
            (a, b) => a == b,
        })
}
