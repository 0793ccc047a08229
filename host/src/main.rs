//! `fewshot`: train and evaluate few-shot encoders for edge devices.
use clap::{Parser, Subcommand};

mod cmd;

// candle allocates a fresh buffer for every tensor; the system allocator returns
// large ones to the kernel each time (half of a training step went to page
// faults), mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`: after `eager_commit_delay` = 14,
/// before `use_numa_nodes` = 16, which the bindings name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const _: () = assert!(libmimalloc_sys::mi_option_use_numa_nodes == MI_OPTION_PURGE_DELAY + 1);

/// Keeps freed memory instead of returning it to the OS: every training step
/// frees and re-allocates the same large buffers, and getting them back cost
/// page faults (60-way step 576 → 549 ms, `fewshot bench train-step`).
fn keep_freed_memory() {
    // SAFETY: sets an integer option of the allocator; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Train and evaluate few-shot encoders for edge devices.
///
/// Data paths are taken as given when they exist, else under the data folder
/// (`FEWSHOT_DATA`, default `../shared/data`).
#[derive(Parser)]
#[command(name = "fewshot", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Mean accuracy and 95% CI over N-way K-shot episodes.
    Eval(cmd::eval::EvalArgs),
    /// Lake's one-shot protocol: error rate over a folder of runs.
    EvalRuns(cmd::eval_runs::EvalRunsArgs),
    /// Face verification on an LFW-style pair list: accuracy and ROC AUC.
    Verify(cmd::verify::VerifyArgs),
    /// The door scenario: enroll identities, then rank-1 and TAR at fixed FAR.
    DoorEval(cmd::door_eval::DoorEvalArgs),
    /// Benchmarks (see the README for the commands behind the published figures).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Export a checkpoint to ONNX (f32 or int8, batch norm folded, metadata for the device).
    Export(cmd::export::ExportArgs),
    /// A folder of links to the classes a model was validated (or trained) on.
    Split(cmd::split::SplitArgs),
    /// Sample a verification pair list in LFW's manner from identity folders.
    Pairs(cmd::pairs::PairsArgs),
    /// How often the face detector (YuNet) finds a face in a folder of identity folders.
    Detect(cmd::detect::DetectArgs),
    /// Train an encoder by a few-shot method.
    #[command(subcommand)]
    Train(cmd::train::TrainCommand),
}

/// Prints the error and its causes on one line each, without the backtrace
/// anyhow would add when `RUST_BACKTRACE` is set: users see what is wrong.
fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Train(t) => t.threads(),
        Command::Bench(b) => b.threads(),
        _ => None,
    };
    if let Some(n) = threads {
        // Candle's own worker pool (element-wise ops) sizes itself from the
        // first variable, not from rayon's pool, at its first use: without it
        // `--threads 1` still spun a second thread. Its matrix products ask
        // for the second at every call, and without it count the physical
        // cores from `/proc/cpuinfo` each time (5 400 reads in three MAML
        // meta-steps) and split each product for that many threads.
        // SAFETY: single-threaded here, before any thread is spawned.
        unsafe {
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
    }
    let result = match cli.command {
        Command::Eval(args) => cmd::eval::run(args),
        Command::EvalRuns(args) => cmd::eval_runs::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::DoorEval(args) => cmd::door_eval::run(args),
        Command::Train(command) => cmd::train::run(command),
        Command::Bench(command) => cmd::bench::run(command),
        Command::Export(args) => cmd::export::run(args),
        Command::Split(args) => cmd::split::run(args),
        Command::Pairs(args) => cmd::pairs::run(args),
        Command::Detect(args) => cmd::detect::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
