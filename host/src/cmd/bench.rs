//! `fewshot bench`: timings anyone can rerun.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::{Args, Subcommand};
use fewshot_core::Distance;
use fewshot_host::episode::EpisodeShape;
use fewshot_host::nn::adam::Adam;
use fewshot_host::nn::init::seeded_init;
use fewshot_host::nn::method::{EpisodeTensors, FewShotMethod, ProtoNet};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// One Prototypical Networks training step of Conv-4: forward, loss, backward, Adam.
    TrainStep(TrainStepArgs),
    /// Latency of an exported encoder in tract, one image at a time (as on the device).
    Encoder(EncoderArgs),
}

/// Arguments of `fewshot bench encoder`.
#[derive(Debug, Args)]
pub struct EncoderArgs {
    /// Exported model (.onnx). Repeat to compare several: they are timed in
    /// turns (--rounds rounds of --runs runs each), so that the machine's
    /// drift from minute to minute falls on all of them alike.
    #[arg(long, required = true)]
    model: Vec<std::path::PathBuf>,
    /// Timed runs (the median is reported; with several models, per round).
    #[arg(long, default_value_t = 300)]
    runs: usize,
    /// With several models: rounds of --runs runs each (the median of the
    /// rounds' medians is reported, with their range).
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also time each operator of tract's optimised plan and print the table.
    #[arg(long)]
    profile: bool,
}

/// Arguments of `fewshot bench train-step`.
#[derive(Debug, Args)]
pub struct TrainStepArgs {
    /// Classes per episode.
    #[arg(long, default_value_t = 60)]
    k_way: usize,
    /// Support images per class.
    #[arg(long, default_value_t = 5)]
    n_shot: usize,
    /// Query images per class.
    #[arg(long, default_value_t = 5)]
    q_queries: usize,
    /// Input side in pixels.
    #[arg(long, default_value_t = 28)]
    size: usize,
    /// Input channels.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// The encoder's architecture.
    #[arg(long, value_enum, default_value_t = super::train::ArchArg::Conv4)]
    arch: super::train::ArchArg,
    /// Channels of each Conv-4 block (`--arch mobile`: the stem's).
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Conv-4 only: the channels of each of the four blocks (overrides --hidden).
    #[arg(long, value_parser = super::parse_widths, conflicts_with = "hidden")]
    widths: Option<[usize; 4]>,
    /// Conv-4 only: convolutions in each block, e.g. 1,2,2,2.
    #[arg(long, value_parser = super::parse_depths)]
    depths: Option<[usize; 4]>,
    /// Size of the linear embedding (`--arch mobile`: default 128; Conv-4: none unless given).
    #[arg(long)]
    embedding: Option<usize>,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 7)]
    steps: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl BenchCommand {
    /// The `--threads` flag of `train-step`.
    pub fn threads(&self) -> Option<usize> {
        match self {
            BenchCommand::TrainStep(a) => a.threads,
            BenchCommand::Encoder(_) => None,
        }
    }
}

/// Runs `fewshot bench`.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::TrainStep(args) => train_step(args),
        BenchCommand::Encoder(args) => encoder(args),
    }
}

fn encoder(args: EncoderArgs) -> anyhow::Result<()> {
    if args.model.len() > 1 {
        return compare_encoders(&args);
    }
    let path = &args.model[0];
    let model = fewshot_firmware::encoder::OnnxEncoder::load(path)?;
    let input = random_input(&model);
    for _ in 0..10 {
        model.embed(&input)?;
    }
    let times = time_runs(&model, &input, args.runs)?;
    let median = times[times.len() / 2];
    if args.profile && runtime(path) != "tract" {
        anyhow::bail!(
            "--profile {}: it times tract's operators, and a .fsmcu blob runs in the core's int8 engine",
            path.display()
        );
    }
    if args.profile {
        profile_tract(path, &input, model.recipe(), args.runs)?;
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if args.json {
        super::print_json(&json!({
            "bench": "encoder",
            "runtime": runtime(path),
            "model": path,
            "file_bytes": size,
            "runs": times.len(),
            "median_us": median,
            "min_us": times[0],
        }))?;
    } else {
        println!(
            "{}: {} bytes; {}, batch 1: median {median:.0} µs per image over {} runs (min {:.0})",
            path.display(),
            size,
            runtime(path),
            times.len(),
            times[0]
        );
    }
    Ok(())
}

/// A seeded random input of the model's size.
fn random_input(model: &fewshot_firmware::encoder::OnnxEncoder) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    (0..model.recipe().len())
        .map(|_| rng.random_range(0.0..1.0))
        .collect()
}

/// `runs` timed embeddings of `input`, µs, sorted.
fn time_runs(
    model: &fewshot_firmware::encoder::OnnxEncoder,
    input: &[f32],
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        std::hint::black_box(model.embed(std::hint::black_box(input))?);
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// Several models timed in turns: each round runs every model `runs` times.
fn compare_encoders(args: &EncoderArgs) -> anyhow::Result<()> {
    if args.profile {
        anyhow::bail!("--profile takes one --model");
    }
    let models = args
        .model
        .iter()
        .map(|p| fewshot_firmware::encoder::OnnxEncoder::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs: Vec<Vec<f32>> = models.iter().map(random_input).collect();
    for (model, input) in models.iter().zip(&inputs) {
        for _ in 0..10 {
            model.embed(input)?;
        }
    }
    let mut medians = vec![Vec::new(); models.len()];
    for _ in 0..args.rounds.max(1) {
        for ((model, input), m) in models.iter().zip(&inputs).zip(&mut medians) {
            let times = time_runs(model, input, args.runs)?;
            m.push(times[times.len() / 2]);
        }
    }
    let mut rows = Vec::new();
    for (path, m) in args.model.iter().zip(&mut medians) {
        m.sort_by(f64::total_cmp);
        let (median, lo, hi) = (m[m.len() / 2], m[0], m[m.len() - 1]);
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if args.json {
            rows.push(json!({
                "bench": "encoder",
                "runtime": runtime(path),
                "model": path,
                "file_bytes": size,
                "rounds": m.len(),
                "runs_per_round": args.runs.max(1),
                "median_us": median,
                "round_median_min_us": lo,
                "round_median_max_us": hi,
            }));
        } else {
            println!(
                "{}: {size} bytes; {}, batch 1: median {median:.0} µs per image (the median of {} rounds' medians of {} runs, range {lo:.0}-{hi:.0})",
                path.display(),
                runtime(path),
                m.len(),
                args.runs.max(1)
            );
        }
    }
    if args.json {
        super::print_json(&serde_json::Value::Array(rows))?;
    }
    Ok(())
}

/// Times each node of tract's optimised plan over `runs` runs and prints the
/// nodes by total time.
fn profile_tract(
    path: &std::path::Path,
    input: &[f32],
    recipe: fewshot_core::Recipe,
    runs: usize,
) -> anyhow::Result<()> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::plan::{eval, SimplePlan, SimpleState};
    let shape = [1, recipe.channels, recipe.height, recipe.width];
    let model = tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?;
    let plan = SimplePlan::new(model)?;
    let mut state = SimpleState::new(&plan)?;
    let tensor: Tensor = tract_ndarray::Array4::from_shape_vec(shape, input.to_vec())?.into();
    let mut spent = vec![0.0f64; plan.model().nodes().len()];
    for _ in 0..runs.max(1) {
        state.run_plan_with_eval(tvec!(tensor.clone().into()), |ctx, st, node, inputs| {
            let start = Instant::now();
            let out = eval(ctx, st, node, inputs);
            spent[node.id] += start.elapsed().as_secs_f64() * 1e6;
            out
        })?;
    }
    let total: f64 = spent.iter().sum();
    let mut order: Vec<usize> = (0..spent.len()).collect();
    order.sort_by(|&a, &b| spent[b].total_cmp(&spent[a]));
    println!("tract plan, mean µs per run by node:");
    for id in order.into_iter().filter(|&i| spent[i] > 0.0) {
        let node = &plan.model().nodes()[id];
        let info = node.op().info().unwrap_or_default().join("; ");
        println!(
            "{:>9.1} µs {:>5.1}%  {} ({}) {}",
            spent[id] / runs.max(1) as f64,
            100.0 * spent[id] / total,
            node.name,
            node.op().name(),
            info
        );
    }
    Ok(())
}

fn train_step(args: TrainStepArgs) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    let shape = EpisodeShape {
        k_way: args.k_way,
        n_shot: args.n_shot,
        q_queries: args.q_queries,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let encoder = args.arch.encoder(
        args.channels,
        args.hidden,
        args.widths,
        args.depths,
        args.size,
        args.embedding,
    )?;
    let net = ProtoNet {
        encoder: encoder.build(vb)?,
        distance: Distance::L2,
    };
    seeded_init(&varmap, 0)?;
    let mut adam = Adam::new(fewshot_host::train::trainable(&varmap)?, 1e-3)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut images = |n: usize| -> candle_core::Result<Tensor> {
        let data: Vec<f32> = (0..n * args.channels * args.size * args.size)
            .map(|_| rng.random_range(0.0..1.0))
            .collect();
        Tensor::from_vec(data, (n, args.channels, args.size, args.size), &Device::Cpu)
    };
    let episode = EpisodeTensors {
        support: images(shape.k_way * shape.n_shot)?,
        query: images(shape.k_way * shape.q_queries)?,
        shape,
    };
    let mut times = Vec::new();
    for i in 0..args.warmup + args.steps.max(1) {
        let start = Instant::now();
        let (loss, _) = net.loss(&episode, true)?;
        adam.step(&loss.backward()?)?;
        if i >= args.warmup {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let peak_rss_mb = peak_rss_mb();
    let threads = rayon::current_num_threads();
    if args.json {
        super::print_json(&json!({
            "bench": "train-step",
            "framework": "candle",
            "k_way": shape.k_way, "n_shot": shape.n_shot, "q_queries": shape.q_queries,
            "size": args.size, "channels": args.channels, "hidden": args.hidden,
            "widths": args.widths,
            "depths": args.depths,
            "threads": threads,
            "steps": times.len(),
            "median_ms": median,
            "min_ms": times[0],
            "max_ms": times[times.len() - 1],
            "peak_rss_mb": peak_rss_mb,
        }))?;
    } else {
        println!(
            "train step, {}-way {}-shot {}-query, {}x{}x{}, {} channels, {threads} threads: median {median:.1} ms over {} steps (min {:.1}, max {:.1}); peak RSS {}",
            shape.k_way,
            shape.n_shot,
            shape.q_queries,
            args.channels,
            args.size,
            args.size,
            args.hidden,
            times.len(),
            times[0],
            times[times.len() - 1],
            peak_rss_mb.map_or("unknown".into(), |m| format!("{m:.0} MB"))
        );
    }
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// What runs the model file: the core's int8 engine for a blob, else tract.
fn runtime(path: &std::path::Path) -> &'static str {
    if path
        .extension()
        .is_some_and(|e| e == fewshot_firmware::encoder::BLOB_EXTENSION)
    {
        "int8 engine"
    } else {
        "tract"
    }
}
