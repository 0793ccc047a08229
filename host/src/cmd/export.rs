//! `fewshot export`: a checkpoint to ONNX for the device.

use std::path::PathBuf;

use clap::Args;

/// Arguments of `fewshot export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Checkpoint to export (`best.safetensors` with its `best.json` beside it).
    #[arg(long)]
    model: PathBuf,
    /// Where to write the ONNX model.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `fewshot export`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    if !args.model.is_file() {
        anyhow::bail!("--model {}: no such checkpoint", args.model.display());
    }
    fewshot_host::export::export_f32(&args.model, &args.out)?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({size} bytes, f32, batch norm folded)",
        args.out.display()
    );
    Ok(())
}
