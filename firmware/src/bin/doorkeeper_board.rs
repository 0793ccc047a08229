//! `doorkeeper-board`: the door on a Linux board (build with `--features linux`).
//!
//! The button, relay and LED are GPIO lines of one character device; frames
//! are image files whose paths the camera process writes to standard input,
//! one per line. Events go to standard output, as readable lines or JSON.
//! An installer names people, lists and deletes them by writing lines
//! (`name <text>`, `list`, `delete <text>`) to the admin pipe (`--admin`,
//! made with `mkfifo`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use embedded_hal::delay::DelayNs;
use fewshot_firmware::admin::{parse_admin_line, spawn_admin_reader};
use fewshot_firmware::board::{open_pins, PathCamera, Pins};
use fewshot_firmware::door::{Config, Door, SUPPORTED_DIMS};
use fewshot_firmware::events::{Event, LineSink};
use fewshot_firmware::face::{DoorEncoder, FaceArgs};
use fewshot_firmware::storage::FileStore;

/// The door on a Linux board's GPIO character device.
#[derive(Debug, Parser)]
#[command(name = "doorkeeper-board", version)]
struct Args {
    /// Exported encoder (.onnx from `fewshot export`).
    #[arg(long)]
    model: PathBuf,
    /// Gallery file (replaced atomically on every change).
    #[arg(long)]
    gallery: PathBuf,
    /// GPIO character device.
    #[arg(long, default_value = "/dev/gpiochip0")]
    chip: PathBuf,
    /// Line offset of the enrollment button (input).
    #[arg(long)]
    button: u32,
    /// The button reads low when pressed (pull-up wiring).
    #[arg(long)]
    button_active_low: bool,
    /// Line offset of the lock relay (output, high opens).
    #[arg(long)]
    relay: u32,
    /// Line offset of the status LED (output, high is on).
    #[arg(long)]
    led: u32,
    /// Largest distance that opens the door (default: the model's `fewshot.threshold`).
    #[arg(long)]
    threshold: Option<f32>,
    /// How long the relay opens, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    open_ms: u32,
    /// Milliseconds between polls of the button and camera.
    #[arg(long, default_value_t = 10)]
    poll_ms: u32,
    /// Named pipe (or file) of installer's commands: `name <text>` names the
    /// next enrollment, `list`, `delete <text>`.
    #[arg(long)]
    admin: Option<PathBuf>,
    /// The most people the door holds.
    #[arg(long, default_value_t = fewshot_firmware::door::DEFAULT_CAPACITY)]
    capacity: usize,
    /// One JSON object per event line.
    #[arg(long)]
    json: bool,
    /// Data folder of the default face detector (default: $FEWSHOT_DATA, else ../shared/data).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    face: FaceArgs,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doorkeeper-board: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let data = fewshot_firmware::data_dir(args.data.as_deref());
    let encoder = DoorEncoder::load(&args.model, &args.face, &data)?;
    let mut config = encoder.model().door_config(args.threshold)?;
    config.open_ms = args.open_ms;
    config.button_active_low = args.button_active_low;
    config.capacity = args.capacity;
    match encoder.model().dim() {
        8 => go::<8>(args, encoder, config),
        16 => go::<16>(args, encoder, config),
        32 => go::<32>(args, encoder, config),
        64 => go::<64>(args, encoder, config),
        128 => go::<128>(args, encoder, config),
        192 => go::<192>(args, encoder, config),
        256 => go::<256>(args, encoder, config),
        512 => go::<512>(args, encoder, config),
        1024 => go::<1024>(args, encoder, config),
        d => bail!("the model makes {d}-d embeddings; the door supports {SUPPORTED_DIMS:?}"),
    }
}

fn go<const DIM: usize>(args: Args, encoder: DoorEncoder, config: Config) -> anyhow::Result<()> {
    let pins = Pins {
        chip: args.chip.clone(),
        button: args.button,
        relay: args.relay,
        led: args.led,
    };
    let io = open_pins(&pins)?;
    let camera = PathCamera::spawn(std::io::BufReader::new(std::io::stdin()));
    let sink = LineSink::new(std::io::stdout(), args.json);
    let mut door = Door::<DIM, _, _, _, _, _, _, _, _, _>::boot(
        encoder,
        io,
        camera,
        FileStore::open(&args.gallery),
        sink,
        config,
    )
    .context("starting the door")?;
    let admin = args.admin.clone().map(spawn_admin_reader);
    let mut delay = fewshot_firmware::clock::SleepDelay;
    loop {
        for line in admin.iter().flat_map(|rx| rx.try_iter()) {
            match line.and_then(|l| parse_admin_line(&l)) {
                Ok(Some(command)) => door.admin(command),
                Ok(None) => {}
                Err(message) => door.report(Event::Error { message }),
            }
        }
        door.poll().context("door loop")?;
        delay.delay_ms(args.poll_ms);
    }
}
