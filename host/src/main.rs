//! `fewshot`: train and evaluate few-shot encoders for edge devices.
use clap::{Parser, Subcommand};

mod cmd;

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
enum Command {
    /// Mean accuracy and 95% CI over N-way K-shot episodes.
    Eval(cmd::eval::EvalArgs),
    /// Lake's one-shot protocol: error rate over a folder of runs.
    EvalRuns(cmd::eval_runs::EvalRunsArgs),
    /// Face verification on an LFW-style pair list: accuracy and ROC AUC.
    Verify(cmd::verify::VerifyArgs),
    /// The door scenario: enroll identities, then rank-1 and TAR at fixed FAR.
    DoorEval(cmd::door_eval::DoorEvalArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Eval(args) => cmd::eval::run(args),
        Command::EvalRuns(args) => cmd::eval_runs::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::DoorEval(args) => cmd::door_eval::run(args),
    }
}
