//! End to end: train a tiny encoder for a few episodes, export it, run the
//! door on it (the simulator's door, with the device's tract loader), enroll
//! two characters as two "people" from two images each, recognise a third
//! image of each, and refuse a character never enrolled.
use std::path::{Path, PathBuf};

use fewshot_e2e::tiny_checkpoint;
use fewshot_firmware::camera::load_image;
use fewshot_firmware::door::Config;
use fewshot_firmware::encoder::OnnxEncoder;
use fewshot_firmware::events::{Event, Recorder};
use fewshot_firmware::sim::{Command, Simulator};
use fewshot_firmware::storage::FileStore;
use fewshot_host::export::export_f32;

/// A Conv-4 with 32 channels (32-d embeddings) trained for 150 episodes
/// (5-way 1-shot) on twelve Greek characters of `images_background_small1`.
fn tiny_model(dir: &Path) -> PathBuf {
    let onnx = dir.join("tiny.onnx");
    export_f32(&tiny_checkpoint(dir, 12, 32, 150), &onnx).unwrap();
    onnx
}

#[test]
fn a_tiny_trained_encoder_runs_the_door() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());

    // Two "people": Tagalog characters 1 and 2, enrolled from images 1 and 2.
    // The threshold comes from the enrollment shots themselves: the largest
    // distance between a person's two shots. A third image of the same
    // character is expected nearer its 2-shot prototype than the two shots
    // are to each other (for squared l2, E d(q, mean) = 3/4 E d(x1, x2) when
    // the spread is the same in every direction), and another character far
    // beyond. The door's enrollment rule (each shot within the threshold of
    // the other) then holds by construction.
    let people = [1u32, 2];
    let probe = OnnxEncoder::load(&model).unwrap();
    let embed = |p: &Path| {
        let f = load_image(p).unwrap();
        probe.embed_frame(&f.as_frame().unwrap()).unwrap()
    };
    let threshold = people
        .iter()
        .map(|&c| {
            probe.distance().between(
                &embed(&fewshot_e2e::tagalog(c, 1)),
                &embed(&fewshot_e2e::tagalog(c, 2)),
            )
        })
        .fold(0.0f32, f32::max);
    eprintln!("threshold from the enrollment shots: {threshold}");
    let encoder = OnnxEncoder::load(&model).unwrap();
    assert_eq!(encoder.dim(), 32);
    let events = Recorder::new();
    let gallery = tmp.path().join("door.fsgl");
    let mut sim = Simulator::<32, _, _, _>::boot(
        encoder,
        FileStore::open(&gallery),
        events.clone(),
        Config {
            // Every stranger below is judged, none ignored by a cool-down.
            max_rejections: u32::MAX,
            ..Config::new(probe.distance(), threshold)
        },
    )
    .unwrap();
    let mut ids = Vec::new();
    for &c in &people {
        sim.step(&Command::Press(200)).unwrap();
        sim.step(&Command::Frame(fewshot_e2e::tagalog(c, 1)))
            .unwrap();
        sim.step(&Command::Frame(fewshot_e2e::tagalog(c, 2)))
            .unwrap();
        let enrolled: Vec<u32> = events
            .take()
            .into_iter()
            .filter_map(|e| match e {
                Event::Enrolled { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        assert_eq!(enrolled.len(), 1, "character {c} enrolled once");
        ids.push(enrolled[0]);
    }

    // A third image of each opens the door for that person.
    for (&c, &id) in people.iter().zip(&ids) {
        sim.step(&Command::Frame(fewshot_e2e::tagalog(c, 3)))
            .unwrap();
        match &events.take()[..] {
            [Event::Opened {
                id: got, distance, ..
            }] => {
                assert_eq!(*got, id, "character {c} recognised as itself");
                eprintln!("character {c}: distance {distance}");
            }
            other => panic!("character {c}'s third image: {other:?}"),
        }
    }
    assert_eq!(sim.relay_pulses(), 2);

    // Characters never enrolled are refused: the next two for certain, and
    // most of the eight others in the first ten. (The tiny model, 150
    // episodes on twelve Greek characters, does not separate every Tagalog
    // pair: measured, characters 5 and 6 fall within the threshold of
    // character 2's prototype, 6 of 8 are refused.)
    let mut refused = Vec::new();
    for stranger in 3u32..=10 {
        sim.step(&Command::Frame(fewshot_e2e::tagalog(stranger, 1)))
            .unwrap();
        match &events.take()[..] {
            [Event::Refused {
                distance: Some(d), ..
            }] => {
                assert!(*d > threshold);
                refused.push(stranger);
            }
            [Event::Opened { distance, .. }] => assert!(*distance <= threshold),
            other => panic!("stranger {stranger}: {other:?}"),
        }
    }
    eprintln!("strangers refused: {refused:?}");
    assert!(refused.starts_with(&[3, 4]), "refused: {refused:?}");
    assert!(refused.len() >= 6, "refused only {refused:?}");
    assert_eq!(
        sim.relay_pulses() as usize,
        2 + 8 - refused.len(),
        "the relay opened exactly for the matches"
    );
    assert!(gallery.is_file(), "the enrollments were stored");
}
