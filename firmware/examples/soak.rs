//! The door's soak (`fewshot_firmware::soak`) with the face model, its
//! detector and real photos: ORL's 40 people enroll, Yale's 15 are the
//! strangers; blank frames and corrupt camera buffers mixed in. Prints
//! resident memory at each report and the events counted.
//!
//! `cargo run --release -p fewshot-firmware --example soak -- --frames 100000`
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use fewshot_firmware::camera::load_image;
use fewshot_firmware::face::{DoorEncoder, FaceArgs, DEFAULT_MIN_EYE_PX};
use fewshot_firmware::soak::{soak, Material, Plan};

#[derive(Debug, Parser)]
struct Args {
    /// Frames shown in all.
    #[arg(long, default_value_t = 100_000)]
    frames: usize,
    /// Read resident memory every this many frames.
    #[arg(long, default_value_t = 10_000)]
    report_every: usize,
    /// Restart the door from its stored gallery every this many frames.
    #[arg(long, default_value_t = 25_000)]
    restart_every: usize,
    /// The gallery grows to about this many people.
    #[arg(long, default_value_t = 272)]
    people: usize,
    /// The door's capacity.
    #[arg(long, default_value_t = fewshot_firmware::door::DEFAULT_CAPACITY)]
    capacity: usize,
    /// Seed of the script.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The door's model (default: models/face-distilled-int8.onnx).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Data folder (default: $FEWSHOT_DATA, else ../shared/data).
    #[arg(long)]
    data: Option<PathBuf>,
}

fn photos(dir: PathBuf) -> anyhow::Result<Vec<fewshot_firmware::camera::OwnedFrame>> {
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| load_image(f).map_err(anyhow::Error::from))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = fewshot_firmware::data_dir(args.data.as_deref());
    let model = args.model.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/face-distilled-int8.onnx")
    });
    let people = (1..=40)
        .map(|s| photos(data.join(format!("faces/orl/s{s}"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let strangers = (1..=15)
        .map(|s| photos(data.join(format!("faces/yale/subject{s:02}"))))
        .collect::<anyhow::Result<Vec<_>>>()?
        .concat();
    let face = FaceArgs {
        detector: None,
        detector_input: None,
        min_eye_px: DEFAULT_MIN_EYE_PX,
    };
    let load = || DoorEncoder::load(&model, &face, &data);
    let first = load()?;
    let mut config = first.model().door_config(None)?;
    config.capacity = args.capacity;
    if first.model().dim() != 192 {
        bail!("the soak example is built for 192-d face models");
    }
    let dir = std::env::temp_dir().join(format!("fewshot-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let plan = Plan {
        frames: args.frames,
        report_every: args.report_every,
        restart_every: args.restart_every,
        seed: args.seed,
        people: args.people,
    };
    let started = std::time::Instant::now();
    let mut spare = Some(first);
    let report = soak::<192, _, _>(
        || {
            spare
                .take()
                .unwrap_or_else(|| load().expect("the model loaded once already"))
        },
        &Material { people, strangers },
        config,
        &dir.join("gallery.bin"),
        &plan,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    println!("frames   resident memory (KiB)");
    for (frame, kib) in &report.rss_kib {
        println!("{frame:>7}  {kib}");
    }
    println!("events: {:?}", report.events);
    println!(
        "{} restarts, {} gallery checks against the model passed, {} people at the end, {:.0} s",
        report.restarts,
        report.checks,
        report.people_at_end,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
