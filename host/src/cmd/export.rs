//! `fewshot export`: a checkpoint to ONNX for the device.

use std::path::PathBuf;

use clap::Args;
use fewshot_host::export::int8::{export_int8, Int8Form};

/// Arguments of `fewshot export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Checkpoint to export (`best.safetensors` with its `best.json` beside it).
    #[arg(long)]
    model: PathBuf,
    /// Where to write the ONNX model.
    #[arg(long)]
    out: PathBuf,
    /// Quantize to int8: int8 weights per output channel, uint8 activations.
    #[arg(long, requires = "calibration")]
    int8: bool,
    /// Folder of real images (any depth) whose activation ranges set the int8
    /// scales; relative paths are taken under the data folder.
    #[arg(long, requires = "int8")]
    calibration: Option<PathBuf>,
    /// How many calibration images to use (a seeded sample of the folder).
    #[arg(long, default_value_t = 1000, requires = "int8")]
    calibration_images: usize,
    /// Operators of the int8 graph.
    #[arg(long, value_enum, default_value_t = Int8Form::ConvInteger)]
    int8_form: Int8Form,
}

/// Runs `fewshot export`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    if !args.model.is_file() {
        anyhow::bail!("--model {}: no such checkpoint", args.model.display());
    }
    match args.calibration {
        Some(folder) if args.int8 => {
            let folder = fewshot_host::data::resolve(&folder)?;
            let done = export_int8(
                &args.model,
                &args.out,
                &folder,
                args.calibration_images,
                args.int8_form,
            )?;
            println!(
                "wrote {} ({} bytes, int8 {:?}, calibrated on {} images: input {:?}, block maxima {:?})",
                args.out.display(),
                done.bytes,
                args.int8_form,
                done.ranges.images,
                done.ranges.input,
                done.ranges.blocks
            );
        }
        _ => {
            fewshot_host::export::export_f32(&args.model, &args.out)?;
            let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
            println!(
                "wrote {} ({size} bytes, f32, batch norm folded)",
                args.out.display()
            );
        }
    }
    Ok(())
}
