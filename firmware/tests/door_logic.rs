//! The door's rules with a stand-in encoder (the frame's pixels are the
//! embedding), on simulated pins and time: enrollment agreement, presses,
//! cool-down, storage failures, corrupt galleries and bad frames.
use fewshot_firmware::camera::OwnedFrame;
use fewshot_firmware::core::{store, Distance, Frame, Gallery, PixelFormat};
use fewshot_firmware::door::{Config, Door, Encoder};
use fewshot_firmware::encoder::EncoderError;
use fewshot_firmware::events::{Event, Recorder};
use fewshot_firmware::sim::{SimDoor, SimHardware};
use fewshot_firmware::storage::{MemStorage, Storage};

/// Embeds a 4×1 grey frame as its four pixel values.
struct Pixels;

impl Encoder for Pixels {
    type Error = EncoderError;
    fn dim(&self) -> usize {
        4
    }
    fn embed_frame(&mut self, frame: &Frame<'_>) -> Result<Vec<f32>, EncoderError> {
        if frame.pixels.len() != 4 {
            return Err(EncoderError::Input {
                expected: 4,
                found: frame.pixels.len(),
            });
        }
        Ok(frame.pixels.iter().map(|&p| f32::from(p)).collect())
    }
}

fn face(v: [u8; 4]) -> OwnedFrame {
    OwnedFrame {
        width: 4,
        height: 1,
        format: PixelFormat::Gray8,
        pixels: v.to_vec(),
    }
}

/// Squared l2 with threshold 10: frames within ~3 grey levels match.
fn config() -> Config {
    Config::new(Distance::L2, 10.0)
}

struct Rig<S: Storage> {
    door: SimDoor<4, Pixels, S, Recorder>,
    hw: SimHardware,
    events: Recorder,
}

impl<S: Storage> Rig<S> {
    fn boot(storage: S, config: Config) -> Self {
        let hw = SimHardware::new();
        let events = Recorder::new();
        let door = Door::boot(
            Pixels,
            hw.io(),
            hw.camera.clone(),
            storage,
            events.clone(),
            config,
        )
        .unwrap();
        events.take();
        Rig { door, hw, events }
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.door.poll().unwrap();
            self.hw.clock.advance_ms(10);
        }
    }

    fn press(&mut self, ms: u64) -> Vec<Event> {
        self.hw.button.set(true);
        self.run_ms(ms);
        self.hw.button.set(false);
        self.run_ms(50);
        self.events.take()
    }

    fn show(&mut self, frame: OwnedFrame) -> Vec<Event> {
        self.hw.camera.push(frame);
        self.run_ms(10);
        self.events.take()
    }

    fn enroll(&mut self, a: [u8; 4], b: [u8; 4]) -> Vec<Event> {
        assert_eq!(self.press(100), vec![Event::EnrollStarted { frames: 2 }]);
        assert!(self.hw.led.is_set_high(), "the LED is on while enrolling");
        let mut events = self.show(face(a));
        events.extend(self.show(face(b)));
        assert!(!self.hw.led.is_set_high());
        events
    }
}

#[test]
fn enrollment_refuses_frames_that_disagree_and_stores_nothing() {
    let storage = MemStorage::new();
    let mut rig = Rig::boot(storage.clone(), config());
    // d = 4² = 16 > 10: refused.
    assert_eq!(
        rig.enroll([10, 10, 10, 10], [14, 10, 10, 10]),
        vec![Event::EnrollRefused {
            spread: 16.0,
            limit: 10.0
        }]
    );
    assert!(rig.door.gallery().is_empty());
    assert_eq!(storage.saves(), 0);
    // d = 3² = 9 <= 10: enrolled with the mean as prototype, and stored.
    assert!(matches!(
        &rig.enroll([10, 10, 10, 10], [13, 10, 10, 10])[..],
        [Event::Enrolled {
            id: 0,
            shots: 2,
            ..
        }]
    ));
    assert_eq!(
        rig.door.gallery().get(0).unwrap().prototype,
        [11.5, 10.0, 10.0, 10.0]
    );
    let stored = store::decode::<64, 4>(&storage.bytes().unwrap()).unwrap();
    assert_eq!(&stored.gallery, rig.door.gallery());
}

#[test]
fn a_spread_limit_can_be_set_apart_from_the_threshold() {
    let mut c = config();
    c.enroll_spread = Some(20.0);
    let mut rig = Rig::boot(MemStorage::new(), c);
    assert!(matches!(
        &rig.enroll([10, 10, 10, 10], [14, 10, 10, 10])[..],
        [Event::Enrolled { .. }]
    ));
}

#[test]
fn presses_by_length_and_glitches() {
    let storage = MemStorage::new();
    let mut rig = Rig::boot(storage.clone(), config());
    // A 20 ms glitch (under the 30 ms debounce) does nothing.
    assert!(rig.press(20).is_empty());
    assert!(!rig.door.is_enrolling());
    rig.enroll([10, 10, 10, 10], [10, 10, 10, 11]);
    rig.enroll([90, 90, 90, 90], [90, 90, 90, 91]);
    assert_eq!(rig.door.gallery().len(), 2);
    // Long press: the last one (id 1) goes.
    assert_eq!(
        rig.press(1600),
        vec![Event::Deleted {
            id: 1,
            name: "person-1".into()
        }]
    );
    // A very long press: the LED blinks three times once 5 s are reached,
    // then everything is erased on release, and stored.
    let blinks_before = rig.hw.led.rises();
    let events = rig.press(5200);
    assert_eq!(events, vec![Event::EraseArmed, Event::Erased { count: 1 }]);
    assert_eq!(rig.hw.led.rises() - blinks_before, 3);
    assert!(rig.door.gallery().is_empty());
    let stored = store::decode::<64, 4>(&storage.bytes().unwrap()).unwrap();
    assert!(stored.gallery.is_empty());
    // Nothing left: a long press says so.
    assert_eq!(rig.press(2000), vec![Event::NothingToDelete]);
    // Ids are never reused.
    rig.enroll([50, 50, 50, 50], [50, 50, 50, 50]);
    assert_eq!(rig.door.gallery().iter().next().unwrap().id, 2);
}

#[test]
fn an_enrollment_without_frames_times_out() {
    let mut rig = Rig::boot(MemStorage::new(), config());
    assert_eq!(rig.press(100), vec![Event::EnrollStarted { frames: 2 }]);
    rig.show(face([1, 1, 1, 1]));
    rig.run_ms(10_100);
    assert_eq!(rig.events.take(), vec![Event::EnrollTimedOut]);
    assert!(!rig.door.is_enrolling());
    assert!(!rig.hw.led.is_set_high());
    assert!(rig.door.gallery().is_empty());
}

#[test]
fn matches_open_for_the_configured_time_and_strangers_start_a_cool_down() {
    let mut rig = Rig::boot(MemStorage::new(), config());
    rig.enroll([10, 10, 10, 10], [10, 10, 10, 10]);
    let t0 = rig.hw.clock.clone();
    let before = fewshot_firmware::clock::Clock::now_ms(&t0);
    assert_eq!(
        rig.show(face([12, 10, 10, 10])),
        vec![Event::Opened {
            id: 0,
            name: "person-0".into(),
            distance: 4.0,
            bbox: None
        }]
    );
    assert_eq!(rig.hw.relay.rises(), 1);
    assert!(!rig.hw.relay.is_set_high(), "the relay closes again");
    assert!(fewshot_firmware::clock::Clock::now_ms(&t0) - before >= 3000);
    // Four strangers, an open (which resets the count), then five strangers.
    for _ in 0..4 {
        assert_eq!(
            rig.show(face([40, 10, 10, 10])),
            vec![Event::Refused {
                distance: Some(900.0),
                bbox: None
            }]
        );
    }
    assert!(matches!(
        &rig.show(face([10, 10, 10, 10]))[..],
        [Event::Opened { .. }]
    ));
    for _ in 0..4 {
        rig.show(face([40, 10, 10, 10]));
    }
    assert_eq!(
        rig.show(face([40, 10, 10, 10])),
        vec![
            Event::Refused {
                distance: Some(900.0),
                bbox: None
            },
            Event::CoolDown {
                rejections: 5,
                for_ms: 30_000
            }
        ]
    );
    // During the cool-down even the enrolled face is ignored...
    assert!(matches!(
        &rig.show(face([10, 10, 10, 10]))[..],
        [Event::Ignored { .. }]
    ));
    assert_eq!(rig.hw.relay.rises(), 2);
    // ...and after it the door works again.
    rig.run_ms(30_000);
    assert!(matches!(
        &rig.show(face([10, 10, 10, 10]))[..],
        [Event::Opened { .. }]
    ));
}

#[test]
fn nobody_enrolled_is_a_refusal_without_a_distance() {
    let mut rig = Rig::boot(MemStorage::new(), config());
    assert_eq!(
        rig.show(face([1, 2, 3, 4])),
        vec![Event::Refused {
            distance: None,
            bbox: None
        }]
    );
    assert_eq!(rig.hw.relay.rises(), 0);
}

#[test]
fn bad_frames_are_errors_that_keep_the_door_shut() {
    let mut c = config();
    c.frame_size = Some((4, 1));
    let mut rig = Rig::boot(MemStorage::new(), c);
    rig.enroll([10, 10, 10, 10], [10, 10, 10, 10]);
    // A buffer that does not match the frame's size.
    let mut short = face([10, 10, 10, 10]);
    short.pixels.pop();
    match &rig.show(short)[..] {
        [Event::Error { message }] => assert!(message.contains("3 bytes, expected 4"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A frame of another size than the camera's.
    let big = OwnedFrame {
        width: 2,
        height: 2,
        format: PixelFormat::Gray8,
        pixels: vec![10; 4],
    };
    match &rig.show(big)[..] {
        [Event::Error { message }] => assert!(message.contains("set up for 4x1"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.hw.relay.rises(), 0);
    // Errors are not refusals: they do not count towards the cool-down.
    assert!(matches!(
        &rig.show(face([10, 10, 10, 10]))[..],
        [Event::Opened { .. }]
    ));
}

/// Storage whose saves fail.
struct BrokenStorage;

impl Storage for BrokenStorage {
    type Error = &'static str;
    fn load(&mut self) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(None)
    }
    fn save(&mut self, _: &[u8]) -> Result<(), Self::Error> {
        Err("disk full")
    }
    fn set_aside(&mut self) -> Result<String, Self::Error> {
        Err("read-only")
    }
}

#[test]
fn a_failed_save_undoes_the_change() {
    let mut rig = Rig::boot(BrokenStorage, config());
    match &rig.enroll([10, 10, 10, 10], [10, 10, 10, 10])[..] {
        [Event::Error { message }] => assert!(message.contains("disk full"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(rig.door.gallery().is_empty(), "not stored, so not enrolled");
    assert_eq!(
        rig.show(face([10, 10, 10, 10])),
        vec![Event::Refused {
            distance: None,
            bbox: None
        }]
    );
}

#[test]
fn a_corrupt_gallery_is_set_aside_and_the_door_starts_empty_and_locked() {
    let mut g = Gallery::<64, 4>::new();
    g.enroll("ann", &[10.0; 4]).unwrap();
    let mut good = vec![0; g.encoded_len()];
    store::encode(&g, 7, &mut good).unwrap();
    let mut flipped = good.clone();
    flipped[30] ^= 0x40;
    // A gallery of 8-d embeddings (another model) is as unusable here.
    let mut other = vec![0; Gallery::<64, 8>::new().encoded_len()];
    store::encode(&Gallery::<64, 8>::new(), 1, &mut other).unwrap();
    for (bytes, why) in [
        (flipped, "checksum"),
        (b"not a gallery".to_vec(), "bytes"),
        (other, "8-d"),
    ] {
        let storage = MemStorage::with_bytes(bytes.clone());
        let hw = SimHardware::new();
        let events = Recorder::new();
        let door: SimDoor<4, _, _, _> = Door::boot(
            Pixels,
            hw.io(),
            hw.camera.clone(),
            storage.clone(),
            events.clone(),
            config(),
        )
        .unwrap();
        let events = events.take();
        match &events[..] {
            [Event::GalleryCorrupt { message, kept_at }, Event::Booted { identities: 0, .. }] => {
                assert!(message.contains(why), "{message}");
                assert_eq!(kept_at, "memory slot 1");
            }
            other => panic!("{other:?}"),
        }
        assert!(door.gallery().is_empty());
        assert!(!hw.relay.is_set_high());
        assert_eq!(
            storage.set_aside_bytes(),
            vec![bytes],
            "kept for inspection"
        );
        assert_eq!(storage.bytes(), None);
    }
    // And the good one loads.
    let hw = SimHardware::new();
    let door: SimDoor<4, _, _, _> = Door::boot(
        Pixels,
        hw.io(),
        hw.camera.clone(),
        MemStorage::with_bytes(good),
        Recorder::new(),
        config(),
    )
    .unwrap();
    assert_eq!(door.gallery(), &g);
}

#[test]
fn a_full_gallery_refuses_one_more_and_keeps_the_others() {
    let storage = MemStorage::new();
    let mut c = config();
    c.capacity = 40;
    let mut rig = Rig::boot(storage.clone(), c);
    for i in 0..40 {
        let v = [i * 3, 0, 0, 0];
        assert!(matches!(&rig.enroll(v, v)[..], [Event::Enrolled { .. }]));
    }
    let saves = storage.saves();
    match &rig.enroll([250, 9, 9, 9], [250, 9, 9, 9])[..] {
        [Event::Error { message }] => assert!(message.contains("full"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.door.gallery().len(), 40);
    assert_eq!(storage.saves(), saves, "nothing stored");
}

#[test]
fn the_threshold_follows_the_gallery_size_when_the_model_carries_them() {
    let mut c = config();
    // One person enrolled: distances up to 30 open; two or more: up to 5.
    c.gallery_thresholds =
        Some(fewshot_firmware::core::GalleryThresholds::new(&[(1, 30.0), (2, 5.0)]).unwrap());
    let mut rig = Rig::boot(MemStorage::new(), c);
    assert!(matches!(
        &rig.enroll([10, 10, 10, 10], [10, 10, 10, 10])[..],
        [Event::Enrolled { .. }]
    ));
    // d = 4² = 16: within the one-person threshold.
    assert!(matches!(
        &rig.show(face([14, 10, 10, 10]))[..],
        [Event::Opened { distance, .. }] if *distance == 16.0
    ));
    rig.run_ms(5000);
    rig.events.take();
    assert!(matches!(
        &rig.enroll([100, 100, 100, 100], [100, 100, 100, 100])[..],
        [Event::Enrolled { .. }]
    ));
    // The same face, now against two people: 16 > 5.
    assert!(matches!(
        &rig.show(face([14, 10, 10, 10]))[..],
        [Event::Refused { distance: Some(d), .. }] if *d == 16.0
    ));
    // Enrollment agreement keeps the fixed threshold (10): d = 9 passes.
    assert!(matches!(
        &rig.enroll([50, 50, 50, 50], [53, 50, 50, 50])[..],
        [Event::Enrolled { .. }]
    ));
}

#[test]
fn a_stranger_held_up_for_ten_minutes_gets_five_tries_per_cool_down() {
    let mut rig = Rig::boot(MemStorage::new(), config());
    rig.enroll([10, 10, 10, 10], [10, 10, 10, 10]);
    // A stranger's photo every 100 ms for 10 simulated minutes.
    let mut refused_at = Vec::new();
    let (mut cool_downs, mut ignored) = (0, 0);
    for _ in 0..6000 {
        rig.hw.camera.push(face([40, 10, 10, 10]));
        rig.run_ms(100);
        let now = fewshot_firmware::clock::Clock::now_ms(&rig.hw.clock);
        for event in rig.events.take() {
            match event {
                Event::Refused { .. } => refused_at.push(now),
                Event::CoolDown {
                    rejections: 5,
                    for_ms: 30_000,
                } => cool_downs += 1,
                Event::Ignored { .. } => ignored += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    // Any 30 s holds at most 5 decisions; each cool-down ends after 30 s
    // and its five tries take 0.5 s: 600 / 30.5 cycles.
    for (i, &t) in refused_at.iter().enumerate() {
        let in_window = refused_at[i..]
            .iter()
            .take_while(|&&u| u < t + 30_000)
            .count();
        assert!(
            in_window <= 5,
            "{in_window} decisions within 30 s of {t} ms"
        );
    }
    assert_eq!(refused_at.len(), 5 * 20, "{refused_at:?}");
    assert_eq!(cool_downs, 20);
    // Ignored frames are reported at most every 5 s: 6 in each 30 s
    // cool-down (5 in the last, cut short by the end of the 10 minutes).
    assert_eq!(ignored, 6 * 19 + 5);
    assert_eq!(rig.hw.relay.rises(), 0);
    // After a cool-down the count starts from zero: four more refusals do
    // not start another, and the enrolled face opens.
    rig.run_ms(30_000);
    for _ in 0..4 {
        assert!(matches!(
            &rig.show(face([40, 10, 10, 10]))[..],
            [Event::Refused { .. }]
        ));
    }
    assert!(matches!(
        &rig.show(face([10, 10, 10, 10]))[..],
        [Event::Opened { .. }]
    ));
}

fn name(text: &str) -> fewshot_firmware::admin::Admin {
    fewshot_firmware::admin::Admin::Name(text.try_into().unwrap())
}

#[test]
fn names_add_frames_to_the_same_person_and_delete_them() {
    use fewshot_firmware::admin::Admin;
    let storage = MemStorage::new();
    let mut rig = Rig::boot(storage.clone(), config());
    rig.door.admin(name("Ada"));
    assert_eq!(
        rig.events.take(),
        vec![Event::NameSet {
            name: "Ada".into(),
            adds_to: None
        }]
    );
    assert_eq!(
        rig.enroll([10, 10, 10, 10], [12, 10, 10, 10]),
        vec![Event::Enrolled {
            id: 0,
            name: "Ada".into(),
            shots: 2
        }]
    );
    // The name was for that enrollment only.
    assert!(matches!(
        &rig.enroll([50, 10, 10, 10], [50, 10, 10, 10])[..],
        [Event::Enrolled { id: 1, name, .. }] if name == "person-1"
    ));
    // Two more frames of Ada: her prototype is the mean of all four.
    rig.door.admin(name("Ada"));
    assert_eq!(
        rig.events.take(),
        vec![Event::NameSet {
            name: "Ada".into(),
            adds_to: Some(0)
        }]
    );
    assert_eq!(
        rig.enroll([13, 10, 10, 10], [13, 10, 10, 10]),
        vec![Event::ShotsAdded {
            id: 0,
            name: "Ada".into(),
            shots: 2,
            total: 4
        }]
    );
    let ada = rig.door.gallery().get(0).unwrap();
    assert_eq!((ada.shots, ada.prototype), (4, [12.0, 10.0, 10.0, 10.0]));
    let stored = store::decode::<64, 4>(&storage.bytes().unwrap()).unwrap();
    assert_eq!(stored.gallery.get(0).unwrap().shots, 4, "stored");
    // Frames that do not look like Ada (mean 40, her prototype 12: 28² > 10)
    // are not added, though they agree with each other.
    rig.door.admin(name("Ada"));
    rig.events.take();
    assert_eq!(
        rig.enroll([40, 10, 10, 10], [40, 10, 10, 10]),
        vec![Event::AddRefused {
            id: 0,
            name: "Ada".into(),
            distance: 784.0,
            limit: 10.0
        }]
    );
    assert_eq!(rig.door.gallery().get(0).unwrap().shots, 4);
    // A name set before an enrollment that times out is dropped.
    rig.door.admin(name("Bo"));
    rig.events.take();
    assert_eq!(rig.press(100), vec![Event::EnrollStarted { frames: 2 }]);
    rig.run_ms(10_100);
    assert_eq!(rig.events.take(), vec![Event::EnrollTimedOut]);
    assert!(matches!(
        &rig.enroll([90, 10, 10, 10], [90, 10, 10, 10])[..],
        [Event::Enrolled { id: 2, name, .. }] if name == "person-2"
    ));
    // The roster, then deletions by name.
    rig.door.admin(Admin::List);
    assert_eq!(
        rig.events.take(),
        vec![Event::Roster {
            people: vec![
                (0, "Ada".into(), 4),
                (1, "person-1".into(), 2),
                (2, "person-2".into(), 2)
            ],
            capacity: fewshot_firmware::door::DEFAULT_CAPACITY
        }]
    );
    rig.door.admin(Admin::Delete("Ada".try_into().unwrap()));
    assert_eq!(
        rig.events.take(),
        vec![Event::Deleted {
            id: 0,
            name: "Ada".into()
        }]
    );
    rig.door.admin(Admin::Delete("Ada".try_into().unwrap()));
    assert_eq!(
        rig.events.take(),
        vec![Event::NotEnrolled { name: "Ada".into() }]
    );
    let stored = store::decode::<64, 4>(&storage.bytes().unwrap()).unwrap();
    assert_eq!(
        stored.gallery.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

/// The board's `--admin` pipe: a named pipe is read again after each writer
/// closes it (so `echo "name Ada" > PIPE` works every time), its lines parse
/// as admin commands; a regular file is read once; a missing path is an
/// error that names it.
#[cfg(unix)]
#[test]
fn the_admin_pipe_reads_every_writer_in_turn() {
    use fewshot_firmware::admin::{parse_admin_line, spawn_admin_reader, Admin};
    use std::io::Write;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("admin");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    let rx = spawn_admin_reader(pipe.clone());
    // Two writers, one after the other, as two `echo … > PIPE` would be.
    for text in ["name Ada Lovelace\n", "list\ndelete Ada Lovelace\n"] {
        let mut w = std::fs::OpenOptions::new().write(true).open(&pipe).unwrap();
        w.write_all(text.as_bytes()).unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        got.push(parse_admin_line(&line).unwrap().unwrap());
    }
    match &got[..] {
        [Admin::Name(a), Admin::List, Admin::Delete(b)] => {
            assert_eq!(a.as_str(), "Ada Lovelace");
            assert_eq!(b.as_str(), "Ada Lovelace");
        }
        other => panic!("{other:?}"),
    }
    // A regular file: its lines, then the reader stops.
    let file = dir.path().join("once.txt");
    std::fs::write(&file, "list\n").unwrap();
    let rx = spawn_admin_reader(file);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(),
        "list"
    );
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).is_err(),
        "read once"
    );
    // A missing path: an error naming it.
    let rx = spawn_admin_reader(dir.path().join("missing"));
    let err = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap_err();
    assert!(err.contains("missing"), "{err}");
}
