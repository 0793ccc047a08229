//! `fewshot export`: a checkpoint to ONNX for the device.

use std::path::PathBuf;

use clap::Args;
use fewshot_host::export::int8::{export_int8, Int8Form, Int8Options};
use fewshot_host::export::{meta, threshold};

/// Arguments of `fewshot export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Checkpoint to export (`best.safetensors` with its `best.json` beside it).
    #[arg(long)]
    model: PathBuf,
    /// Where to write the ONNX model (with --mcu: the model blob, `.fsmcu`).
    #[arg(long)]
    out: PathBuf,
    /// Write a model blob for the core's int8 engine (microcontrollers) instead
    /// of ONNX: full-range int8 weights per output channel, u8 activations
    /// calibrated on --calibration, checked against tract running the same
    /// quantization; a `.json` beside it records the export.
    #[arg(long, conflicts_with_all = ["int8", "flip_average"])]
    mcu: bool,
    /// With --mcu: images compared between the engine and tract.
    #[arg(long, default_value_t = 200, requires = "mcu")]
    mcu_check_images: usize,
    /// Quantize to int8: int8 weights per output channel (and, in the
    /// `qlinear` and `conv-integer` forms, uint8 activations).
    #[arg(long)]
    int8: bool,
    /// Folder of real images (any depth) whose activation ranges set the int8
    /// activation scales (`qlinear`, `conv-integer`); relative paths are taken
    /// under the data folder.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// How many calibration images to use (a seeded sample of the folder).
    #[arg(long, default_value_t = Int8Options::DEFAULT.images)]
    calibration_images: usize,
    /// Int8 activation ranges at this percentile of the calibration images'
    /// values (100: their maximum; 99.99 clips rare outliers for finer steps).
    #[arg(long, default_value_t = Int8Options::DEFAULT.percentile)]
    calibration_percentile: f64,
    /// Store a rejection threshold chosen for this false-accept rate (0.001 = 0.1 %)
    /// on all impostor pairs of --threshold-data, measured with the exported file.
    #[arg(long, requires = "threshold_data")]
    threshold_far: Option<f64>,
    /// Identity folders the model never trained on (e.g. from `fewshot split`).
    #[arg(long, requires = "threshold_far")]
    threshold_data: Option<PathBuf>,
    /// Also store thresholds for door galleries of --gallery-sizes people, each
    /// letting in at most this share of strangers (0.01 = 1 %) against the whole
    /// gallery, measured with the door protocol on --threshold-data; the door uses
    /// the one for its gallery's size.
    #[arg(long, requires = "threshold_data")]
    gallery_far: Option<f64>,
    /// Gallery sizes for --gallery-far (comma-separated, increasing, at most 8;
    /// each at most the people of --threshold-data with 3 images or more).
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    gallery_sizes: Vec<usize>,
    /// Enrollment shots per person for --gallery-far (the door's K).
    #[arg(long, default_value_t = 2)]
    gallery_shots: usize,
    /// Embed each face as the mean of the model's embeddings of it and of its mirror
    /// image (two runs per face on the device; stored as fewshot.flip_average, so the
    /// thresholds below are measured with it).
    #[arg(long)]
    flip_average: bool,
    /// Operators of the int8 graph: `weight-only` runs at f32 speed on every CPU;
    /// `conv-integer` and `qlinear` were slower than f32 in tract on every CPU measured
    /// (1.2-4.2× with AVX-512 VNNI on an Intel Xeon and an AMD Zen 4, 23-62× on AVX2 without
    /// it on the Xeon and a Zen 3: models/README.md).
    #[arg(long, value_enum, default_value_t = Int8Options::DEFAULT.form, requires = "int8")]
    int8_form: Int8Form,
}

/// The form's name on the command line.
fn form_name(form: Int8Form) -> String {
    clap::ValueEnum::to_possible_value(&form)
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| format!("{form:?}"))
}

/// Runs `fewshot export`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    if args.threshold_far.is_some()
        && args.gallery_far.is_none()
        && !args.mcu
        && fewshot_host::nn::checkpoint::load_config(&args.model)
            .is_ok_and(|c| c.matching.is_some_and(|m| m.fce.is_some()))
    {
        anyhow::bail!(
            "--threshold-far calibrates distances between the encoder's embeddings (the door's \
             enrollment agreement), but a door with full context embeddings opens by the attended \
             embedding's distance to the gallery's context: add --gallery-far, which calibrates that"
        );
    }
    if !args.model.is_file() {
        anyhow::bail!("--model {}: no such checkpoint", args.model.display());
    }
    if args.calibration.is_some() && !args.int8 && !args.mcu {
        anyhow::bail!("--calibration sets int8 activation scales: give it with --int8 or --mcu");
    }
    if args.mcu {
        return export_mcu(&args);
    }
    if args.int8 {
        let form = args.int8_form;
        let folder = match &args.calibration {
            Some(folder) => Some(fewshot_host::data::resolve(folder)?),
            None if form.needs_calibration() => anyhow::bail!(
                "--int8-form {}: give --calibration DIR, images whose activation ranges set the int8 scales",
                form_name(form)
            ),
            None => None,
        };
        if folder.is_some() && !form.needs_calibration() {
            anyhow::bail!(
                "--calibration: the {} form quantizes weights only and takes no calibration images \
                 (drop it, or choose --int8-form conv-integer or qlinear)",
                form_name(form)
            );
        }
        let options = Int8Options {
            images: args.calibration_images,
            form,
            percentile: args.calibration_percentile,
        };
        let done = export_int8(&args.model, &args.out, folder.as_deref(), options)?;
        match &done.ranges {
            Some(ranges) => println!(
                "wrote {} ({} bytes, int8 {}, calibrated on {} images: input {:?}, block ranges {:?} at percentile {})",
                args.out.display(),
                done.bytes,
                form_name(form),
                ranges.images,
                ranges.input,
                ranges.blocks,
                ranges.percentile
            ),
            None => println!(
                "wrote {} ({} bytes, int8 weights, f32 arithmetic: {})",
                args.out.display(),
                done.bytes,
                form_name(form)
            ),
        }
    } else {
        fewshot_host::export::export_f32(&args.model, &args.out)?;
        let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
        println!(
            "wrote {} ({size} bytes, f32, batch norm folded)",
            args.out.display()
        );
    }
    for path in fewshot_host::export::fce::export_beside(&args.model, &args.out)? {
        println!(
            "wrote {} (the Matching Network's full context embeddings, f32)",
            path.display()
        );
    }
    if args.flip_average {
        threshold::set_metadata(&args.out, &[(meta::FLIP_AVERAGE, "true".into())])?;
        println!("embeddings average the face and its mirror image (two runs per face)");
    }
    if let Some((points, _)) = gallery_thresholds(&args)? {
        threshold::set_metadata(
            &args.out,
            &[(meta::GALLERY_THRESHOLDS, serde_json::to_string(&points)?)],
        )?;
    }
    if let Some(cal) = pair_threshold(&args)? {
        threshold::set_metadata(
            &args.out,
            &[
                (meta::THRESHOLD, cal.threshold.to_string()),
                (meta::THRESHOLD_CALIBRATION, serde_json::to_string(&cal)?),
            ],
        )?;
    }
    Ok(())
}

/// `fewshot export --mcu`: the blob, its record beside it, and its threshold.
fn export_mcu(args: &ExportArgs) -> anyhow::Result<()> {
    use fewshot_host::export::mcu;
    let Some(calibration) = &args.calibration else {
        anyhow::bail!(
            "--mcu: give --calibration DIR, images whose activation ranges set the int8 scales"
        );
    };
    if args.out.extension().is_none_or(|e| e != mcu::EXTENSION) {
        anyhow::bail!(
            "--out {}: a model blob's name ends in .{} (that is how --model recognises it)",
            args.out.display(),
            mcu::EXTENSION
        );
    }
    let folder = fewshot_host::data::resolve(calibration)?;
    let done = mcu::export_mcu(
        &args.model,
        &args.out,
        &folder,
        args.calibration_images,
        args.calibration_percentile,
        None,
        args.mcu_check_images,
    )?;
    let c = done.check;
    println!(
        "wrote {} ({} bytes; arena {} bytes + {} i32 accumulators; calibrated on {} images)",
        args.out.display(),
        done.bytes,
        done.arena.0,
        done.arena.1,
        done.ranges.images
    );
    println!(
        "engine against tract (qlinear ONNX of the same quantization) on {} images: {} of {} activations differ, by at most {} step(s); embeddings differ by at most {:.3e}",
        c.images, c.differing, c.activations, c.max_steps, c.max_embedding_diff
    );
    let config = fewshot_host::nn::checkpoint::load_config(&args.model)?;
    let mut record = serde_json::json!({
        "checkpoint": args.model,
        "training": config.training,
        "calibration": {
            "data": folder,
            "images": done.ranges.images,
            "percentile": done.ranges.percentile,
            "input_range": [done.ranges.input.0, done.ranges.input.1],
            "block_max": done.ranges.blocks,
        },
        "engine_check": c,
        "bytes": done.bytes,
        "arena_bytes": done.arena.0,
        "accumulator_words": done.arena.1,
    });
    let mut gallery = None;
    if let Some((points, thresholds)) = gallery_thresholds(args)? {
        record["gallery_thresholds"] = serde_json::to_value(&points)?;
        gallery = Some(thresholds);
    }
    let cal = pair_threshold(args)?;
    if let Some(cal) = &cal {
        record["threshold_calibration"] = serde_json::to_value(cal)?;
    }
    let pair = cal.map(|c| c.threshold);
    if pair.is_some() || gallery.is_some() {
        let mut bytes = std::fs::read(&args.out)?;
        fewshot_core::engine::blob::set_thresholds(&mut bytes, pair, gallery.as_ref())
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))?;
        fewshot_host::nn::checkpoint::write_atomic(&args.out, &bytes)?;
    }
    let side = args.out.with_extension("json");
    fewshot_host::nn::checkpoint::write_atomic(
        &side,
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    println!("wrote {} (the export's record)", side.display());
    Ok(())
}

/// With --gallery-far: the thresholds for galleries of --gallery-sizes people,
/// measured with the exported file (tract, or the engine for a blob),
/// printed, and checked.
fn gallery_thresholds(
    args: &ExportArgs,
) -> anyhow::Result<
    Option<(
        Vec<fewshot_host::eval::door::GalleryThreshold>,
        fewshot_core::GalleryThresholds,
    )>,
> {
    let (Some(far), Some(data)) = (args.gallery_far, &args.threshold_data) else {
        return Ok(None);
    };
    let data = fewshot_host::data::resolve(data)?;
    let points = threshold::calibrate_gallery(
        &args.out,
        &data,
        far,
        &args.gallery_sizes,
        args.gallery_shots,
        &args.model,
    )?;
    let pairs: Vec<(usize, f32)> = points.iter().map(|p| (p.gallery, p.threshold)).collect();
    let thresholds = fewshot_core::GalleryThresholds::new(&pairs)
        .map_err(|e| anyhow::anyhow!("--gallery-sizes: {e}"))?;
    for p in &points {
        println!(
            "gallery of {}: threshold {} for FAR ≤ {far} per stranger: FAR {:.3} %, TAR {:.2} % ({} random galleries, {} stranger probes)",
            p.gallery,
            p.threshold,
            100.0 * p.far,
            100.0 * p.tar,
            p.trials,
            p.stranger_probes
        );
    }
    Ok(Some((points, thresholds)))
}

/// With --threshold-far: the pair threshold measured with the exported file
/// (tract, or the engine for a blob), printed.
fn pair_threshold(args: &ExportArgs) -> anyhow::Result<Option<threshold::ThresholdCalibration>> {
    let (Some(far), Some(data)) = (args.threshold_far, &args.threshold_data) else {
        return Ok(None);
    };
    let data = fewshot_host::data::resolve(data)?;
    let cal = threshold::calibrate(&args.out, &data, far)?;
    println!(
        "threshold {} for FAR ≤ {far}: FAR {:.4} %, TAR {:.2} % over {} genuine and {} impostor pairs of {}",
        cal.threshold,
        100.0 * cal.far,
        100.0 * cal.tar,
        cal.genuine_pairs,
        cal.impostor_pairs,
        data.display()
    );
    Ok(Some(cal))
}
