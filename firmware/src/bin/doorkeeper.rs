//! `doorkeeper`: the door on simulated hardware, driven by a script or the keyboard.
//!
//! Exit status: 0 when the script ran to its end (errors inside it are
//! reported as events), 1 when the door could not start or stopped: the
//! model is missing or unusable, the model has no threshold and none was
//! given, the gallery file cannot be read, or the options are inconsistent.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use fewshot_firmware::door::{Config, SUPPORTED_DIMS};
use fewshot_firmware::events::{Event, EventSink, LineSink};
use fewshot_firmware::face::{DoorEncoder, FaceArgs};
use fewshot_firmware::sim::Simulator;
use fewshot_firmware::storage::FileStore;

/// The door simulator: a camera, an enrollment button, a lock relay and a
/// status LED, all simulated, in simulated time.
///
/// Script lines: `frame <image path>` (the camera delivers that image),
/// `press <ms>` (the button is held that long: under 1.5 s enrolls from the
/// next frames, 1.5-5 s deletes the last enrolled identity, 5 s or more
/// erases everyone), `wait <ms>`, and the installer's `name <text>` (the next
/// enrollment's name; a name already enrolled adds frames to that person),
/// `list`, `delete <text>`; `#` starts a comment. Without --script the
/// same lines are read from standard input.
#[derive(Debug, Parser)]
#[command(name = "doorkeeper", version)]
struct Args {
    /// Exported encoder (.onnx from `fewshot export`); its metadata sets the
    /// preprocessing, embedding size, distance and (if calibrated) threshold.
    #[arg(long)]
    model: PathBuf,
    /// Gallery file: created on the first enrollment, replaced atomically on
    /// every change. An unreadable one is renamed <file>.corrupt-<n> and the
    /// door starts with an empty gallery.
    #[arg(long)]
    gallery: PathBuf,
    /// Script file; standard input when absent.
    #[arg(long)]
    script: Option<PathBuf>,
    /// One JSON object per event line instead of readable lines.
    #[arg(long)]
    json: bool,
    /// Largest distance that opens the door (default: the model's `fewshot.threshold`).
    #[arg(long)]
    threshold: Option<f32>,
    /// Smallest margin between the nearest and the runner-up identity that opens the door.
    #[arg(long, default_value_t = 0.0)]
    margin: f32,
    /// Frames an enrollment takes.
    #[arg(long, default_value_t = 2)]
    enroll_shots: usize,
    /// Largest distance of an enrollment frame to the mean of the others (default: the threshold).
    #[arg(long)]
    enroll_spread: Option<f32>,
    /// How long the relay opens, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    open_ms: u32,
    /// Refusals in a row that start a cool-down.
    #[arg(long, default_value_t = 5)]
    max_rejections: u32,
    /// The most people the door holds.
    #[arg(long, default_value_t = fewshot_firmware::door::DEFAULT_CAPACITY)]
    capacity: usize,
    /// Length of the cool-down, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    cooldown_ms: u64,
    /// The camera's resolution, WIDTHxHEIGHT: frames of another size are errors
    /// (default: any size, resized by the model's recipe).
    #[arg(long, value_parser = parse_size)]
    camera: Option<(usize, usize)>,
    /// Data folder for image paths that do not exist as given, and for the
    /// default face detector (default: $FEWSHOT_DATA, else ../shared/data).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    face: FaceArgs,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, got `{s}`"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("`{v}` is not a positive whole number"))
    };
    Ok((n(w)?, n(h)?))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}");
            if json {
                LineSink::new(std::io::stdout(), true).emit(
                    0,
                    &Event::Error {
                        message: message.clone(),
                    },
                );
            }
            eprintln!("doorkeeper: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let data = fewshot_firmware::data_dir(args.data.as_deref());
    let encoder = DoorEncoder::load(&args.model, &args.face, &data)?;
    let mut config = encoder.model().door_config(args.threshold)?;
    config.min_margin = args.margin;
    config.enroll_shots = args.enroll_shots;
    config.enroll_spread = args.enroll_spread;
    config.open_ms = args.open_ms;
    config.max_rejections = args.max_rejections;
    config.cooldown_ms = args.cooldown_ms;
    config.frame_size = args.camera;
    config.capacity = args.capacity;
    let script: Box<dyn BufRead> = match &args.script {
        Some(path) => Box::new(BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let run = Run {
        config,
        gallery: args.gallery.clone(),
        json: args.json,
        data,
        script,
    };
    match encoder.model().dim() {
        8 => run.go::<8>(encoder),
        16 => run.go::<16>(encoder),
        32 => run.go::<32>(encoder),
        64 => run.go::<64>(encoder),
        128 => run.go::<128>(encoder),
        192 => run.go::<192>(encoder),
        256 => run.go::<256>(encoder),
        512 => run.go::<512>(encoder),
        1024 => run.go::<1024>(encoder),
        d => bail!("the model makes {d}-d embeddings; the door supports {SUPPORTED_DIMS:?}"),
    }
}

struct Run {
    config: Config,
    gallery: PathBuf,
    json: bool,
    data: PathBuf,
    script: Box<dyn BufRead>,
}

impl Run {
    fn go<const DIM: usize>(self, encoder: DoorEncoder) -> anyhow::Result<()> {
        let sink = LineSink::new(std::io::stdout(), self.json);
        let storage = FileStore::open(&self.gallery);
        let mut sim = Simulator::<DIM, _, _, _>::boot(encoder, storage, sink, self.config)
            .context("starting the door")?
            .with_data_dir(Some(self.data));
        sim.run_script(self.script).context("running the door")?;
        Ok(())
    }
}
