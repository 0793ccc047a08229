//! `fewshot`: train and evaluate few-shot encoders.
use clap::Parser;

/// Train and evaluate few-shot encoders for edge devices.
#[derive(Parser)]
#[command(name = "fewshot", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
