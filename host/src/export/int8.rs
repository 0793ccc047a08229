//! Int8 export: per-output-channel symmetric int8 weights, uint8 activations
//! with scales from calibrated ranges, rounding half to even.
//!
//! Three graph forms, chosen with [`Int8Form`]:
//! - `weight-only` (the default): int8 weights, `DequantizeLinear` to f32
//!   constants that the runtime folds when it loads the model, then the f32
//!   graph. A third of the f32 file, and exactly as fast as f32 wherever the
//!   runtime runs f32 well (tract's AVX2 int8 kernel is 30× slower than its
//!   f32 one on some x86 CPUs: see `models/README.md`).
//! - `qlinear`: `QuantizeLinear`, then per block `QLinearConv` (uint8 in and
//!   out, ReLU folded into the output's zero point 0 and saturation) and
//!   `MaxPool` on uint8; `DequantizeLinear` at the end. Integer from the first
//!   convolution to the last.
//! - `conv-integer`: per block `QuantizeLinear`, `ConvInteger` (int32 out),
//!   then the scale, bias, ReLU and pooling in f32.

use std::path::Path;

use anyhow::bail;
use prost::Message;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, NodeProto, TensorProto};

use super::calibrate::{measure, sample_images, Ranges};
use super::{
    attr_int, conv_attrs, fold, load_checkpoint, metadata, node, pool_attrs, wrap, FoldedConv,
    LinearHead, Weights, INPUT,
};
use crate::data::preprocess_file;
use crate::nn::checkpoint::write_atomic;
use crate::nn::encoder::EncoderConfig;

/// Which operators carry the int8 arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Int8Form {
    /// Int8 weights dequantized to f32 constants at load; f32 arithmetic.
    WeightOnly,
    /// `QLinearConv` with uint8 activations between blocks.
    Qlinear,
    /// `ConvInteger` with the rest of each block in f32.
    ConvInteger,
}

/// A block's convolution quantized: int8 weights with one scale per output
/// channel, and the int32 bias in units of input scale × weight scale.
#[derive(Debug, Clone)]
pub struct QuantConv {
    /// Int8 weights, `(cout, cin, 3, 3)`.
    pub weight: Vec<i8>,
    /// Weight scale of each output channel.
    pub weight_scale: Vec<f32>,
    /// Bias in units of `input_scale · weight_scale[c]`.
    pub bias: Vec<i32>,
}

/// An affine uint8 quantization `real = scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// Step between neighbouring codes.
    pub scale: f32,
    /// The code of real zero.
    pub zero_point: u8,
}

impl Affine {
    /// The uint8 quantization covering `[lo, hi]` (widened to contain 0).
    pub fn covering(lo: f32, hi: f32) -> Affine {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zero_point = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        Affine { scale, zero_point }
    }
}

/// Largest weight magnitude of the `qlinear` form: 7-bit weights. onnxruntime's
/// uint8 × int8 kernels on x86 CPUs without AVX-512 VNNI (AVX2 only) add
/// products in pairs in 16 bits with saturation; with |w| ≤ 63 a pair is at
/// most 2 · 255 · 63 = 32 130 < 32 767, so they cannot saturate (with 127 they
/// did, and onnxruntime disagreed with tract by 22 steps on such a CPU).
pub const QLINEAR_WEIGHT_MAX: f32 = 63.0;
/// Largest weight magnitude of the `conv-integer` form (full int8).
pub const CONV_INTEGER_WEIGHT_MAX: f32 = 127.0;

/// Symmetric int8 rows: each `per`-long row of `values` scaled so that its
/// largest magnitude is `weight_max` (an all-zero row gets scale 1), rounded
/// half to even. Returns the codes and each row's scale.
pub(crate) fn quantize_rows(values: &[f32], per: usize, weight_max: f32) -> (Vec<i8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / per.max(1));
    for row in values.chunks(per) {
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / weight_max } else { 1.0 };
        codes.extend(
            row.iter()
                .map(|v| (v / scale).round_ties_even().clamp(-weight_max, weight_max) as i8),
        );
        scales.push(scale);
    }
    (codes, scales)
}

/// Quantizes one folded convolution whose input has scale `input_scale`,
/// with weights in `[-weight_max, weight_max]`.
pub fn quantize_conv(layer: &FoldedConv, input_scale: f32, weight_max: f32) -> QuantConv {
    let (weight, weight_scale) = quantize_rows(&layer.weight, layer.cin * 9, weight_max);
    let bias = layer
        .bias
        .iter()
        .zip(&weight_scale)
        .map(|(&b, &scale)| {
            let b = f64::from(b) / (f64::from(input_scale) * f64::from(scale));
            b.round_ties_even().clamp(i32::MIN as f64, i32::MAX as f64) as i32
        })
        .collect();
    QuantConv {
        weight,
        weight_scale,
        bias,
    }
}

/// Stores `values` (`dims`, rows along axis 0) as full-range int8 with one
/// scale per row, and adds the `DequantizeLinear` that makes them the f32
/// tensor `name` again (which runtimes fold into a constant at load).
pub(super) fn dequantized_weights(
    name: &str,
    dims: &[usize],
    values: &[f32],
    nodes: &mut Vec<NodeProto>,
    init: &mut Vec<TensorProto>,
) {
    let rows = dims[0];
    let (codes, scales) = quantize_rows(values, values.len() / rows, CONV_INTEGER_WEIGHT_MAX);
    let (q, s, z) = (
        format!("{name}.q"),
        format!("{name}.scale"),
        format!("{name}.zero_point"),
    );
    init.push(tensor(
        &q,
        dims,
        DataType::Int8,
        codes.iter().map(|&v| v as u8).collect(),
    ));
    init.push(f32s(&s, &[rows], &scales));
    init.push(tensor(&z, &[rows], DataType::Int8, vec![0; rows]));
    nodes.push(node(
        "DequantizeLinear",
        &[&q, &s, &z],
        name,
        vec![attr_int("axis", 0)],
    ));
}

pub(super) fn tensor(
    name: &str,
    dims: &[usize],
    data_type: DataType,
    raw_data: Vec<u8>,
) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

pub(super) fn f32s(name: &str, dims: &[usize], v: &[f32]) -> TensorProto {
    tensor(
        name,
        dims,
        DataType::Float,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// The scale and zero point initialisers of an affine quantization.
fn affine_init(init: &mut Vec<TensorProto>, prefix: &str, a: Affine) -> (String, String) {
    let (s, z) = (format!("{prefix}.scale"), format!("{prefix}.zero_point"));
    init.push(f32s(&s, &[], &[a.scale]));
    init.push(tensor(&z, &[], DataType::Uint8, vec![a.zero_point]));
    (s, z)
}

/// Builds the int8 model of the folded `layers` in a form that quantizes
/// activations (`qlinear`, `conv-integer`), with the calibrated `ranges`;
/// the `weight-only` form is [`super::encoder_proto`] with int8 weights.
pub fn model_proto(
    config: &crate::nn::checkpoint::ModelConfig,
    layers: &[FoldedConv],
    head: Option<&LinearHead>,
    ranges: &Ranges,
    form: Int8Form,
) -> anyhow::Result<ModelProto> {
    let weight_max = match form {
        Int8Form::Qlinear => QLINEAR_WEIGHT_MAX,
        Int8Form::ConvInteger | Int8Form::WeightOnly => CONV_INTEGER_WEIGHT_MAX,
    };
    model_proto_with(config, layers, head, ranges, form, weight_max)
}

/// [`model_proto`] with the convolutions' weights in `[-weight_max,
/// weight_max]` (the MCU blob's check uses the `qlinear` form at full range).
pub fn model_proto_with(
    config: &crate::nn::checkpoint::ModelConfig,
    layers: &[FoldedConv],
    head: Option<&LinearHead>,
    ranges: &Ranges,
    form: Int8Form,
    weight_max: f32,
) -> anyhow::Result<ModelProto> {
    if !form.needs_calibration() {
        bail!("the {form:?} form takes no activation ranges: encoder_proto builds it");
    }
    if ranges.blocks.len() != layers.len() {
        bail!(
            "calibration covers {} blocks, the model has {}",
            ranges.blocks.len(),
            layers.len()
        );
    }
    let mut nodes: Vec<NodeProto> = Vec::new();
    let mut init = Vec::new();
    let mut input = Affine::covering(ranges.input.0, ranges.input.1);
    let (s, z) = affine_init(&mut init, "input", input);
    let mut x = "input.q".to_string();
    nodes.push(node("QuantizeLinear", &[INPUT, &s, &z], &x, vec![]));
    let (mut x_s, mut x_z) = (s, z);
    for (b, layer) in layers.iter().enumerate() {
        let p = |s: &str| format!("block{b}.{s}");
        let q = quantize_conv(layer, input.scale, weight_max);
        let (cout, cin) = (layer.cout, layer.cin);
        let wn = p("weight");
        init.push(tensor(
            &wn,
            &[cout, cin, 3, 3],
            DataType::Int8,
            q.weight.iter().map(|&v| v as u8).collect(),
        ));
        let output = Affine::covering(0.0, ranges.blocks[b]);
        let pool = p("pool");
        match form {
            Int8Form::Qlinear => {
                let ws = p("weight.scale");
                init.push(f32s(&ws, &[cout], &q.weight_scale));
                let wz = p("weight.zero_point");
                init.push(tensor(&wz, &[cout], DataType::Int8, vec![0; cout]));
                let bn = p("bias");
                init.push(tensor(
                    &bn,
                    &[cout],
                    DataType::Int32,
                    q.bias.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ));
                let (ys, yz) = affine_init(&mut init, &p("out"), output);
                let conv = p("conv");
                nodes.push(node(
                    "QLinearConv",
                    &[&x, &x_s, &x_z, &wn, &ws, &wz, &ys, &yz, &bn],
                    &conv,
                    conv_attrs(),
                ));
                nodes.push(node("MaxPool", &[&conv], &pool, pool_attrs()));
                (x_s, x_z) = (ys, yz);
                x = pool;
                input = output;
            }
            Int8Form::WeightOnly => unreachable!("refused above"),
            Int8Form::ConvInteger => {
                let conv = p("conv");
                nodes.push(node("ConvInteger", &[&x, &wn, &x_z], &conv, conv_attrs()));
                let cast = p("conv.f32");
                nodes.push(node(
                    "Cast",
                    &[&conv],
                    &cast,
                    vec![attr_int("to", DataType::Float as i64)],
                ));
                let scale: Vec<f32> = q.weight_scale.iter().map(|w| w * input.scale).collect();
                let sn = p("scale");
                init.push(f32s(&sn, &[1, cout, 1, 1], &scale));
                let scaled = p("scaled");
                nodes.push(node("Mul", &[&cast, &sn], &scaled, vec![]));
                let bn = p("bias");
                init.push(f32s(&bn, &[1, cout, 1, 1], &layer.bias));
                let biased = p("biased");
                nodes.push(node("Add", &[&scaled, &bn], &biased, vec![]));
                nodes.push(node("MaxPool", &[&biased], &pool, pool_attrs()));
                let relu = p("relu");
                nodes.push(node("Relu", &[&pool], &relu, vec![]));
                if b + 1 < layers.len() {
                    let (ys, yz) = affine_init(&mut init, &p("out"), output);
                    let quant = p("relu.q");
                    nodes.push(node("QuantizeLinear", &[&relu, &ys, &yz], &quant, vec![]));
                    (x_s, x_z) = (ys, yz);
                    x = quant;
                    input = output;
                } else {
                    x = relu;
                }
            }
        }
    }
    let last = match form {
        Int8Form::Qlinear => {
            let deq = "embedding.f32".to_string();
            nodes.push(node("DequantizeLinear", &[&x, &x_s, &x_z], &deq, vec![]));
            deq
        }
        Int8Form::ConvInteger | Int8Form::WeightOnly => x,
    };
    // A linear embedding: int8 weights (one scale per output) dequantized
    // to f32, on the dequantized features.
    super::finish(&last, head, Weights::Int8, &mut nodes, &mut init);
    let quant = serde_json::json!({
        "form": form,
        "weights": match form {
            Int8Form::Qlinear if weight_max < CONV_INTEGER_WEIGHT_MAX => "int8 in [-63, 63] (7-bit, reduced range), symmetric per output channel, round half to even",
            _ => INT8_WEIGHTS,
        },
        "activations": if ranges.percentile < 100.0 {
            format!("uint8, affine, percentile {} calibration", ranges.percentile)
        } else {
            "uint8, affine, max calibration".to_string()
        },
        "calibration_percentile": ranges.percentile,
        "calibration_images": ranges.images,
        "input_range": [ranges.input.0, ranges.input.1],
        "block_max": ranges.blocks,
    });
    int8_model(config, nodes, init, &quant)
}

/// The int8 model around `nodes` and `init`, `quant` its quantization record.
fn int8_model(
    config: &crate::nn::checkpoint::ModelConfig,
    nodes: Vec<NodeProto>,
    init: Vec<TensorProto>,
    quant: &serde_json::Value,
) -> anyhow::Result<ModelProto> {
    let props = metadata(
        config,
        "int8",
        vec![(super::meta::QUANTIZATION, quant.to_string())],
    )?;
    Ok(wrap(config, nodes, init, props))
}

/// How the weights of the full-range forms are quantized.
const INT8_WEIGHTS: &str = "int8, symmetric per output channel, round half to even";

/// The quantization record of the `weight-only` form.
pub(super) fn weight_only_record() -> serde_json::Value {
    serde_json::json!({
        "form": Int8Form::WeightOnly,
        "weights": INT8_WEIGHTS,
        "activations": "f32 (the weights are dequantized once, when the model loads)",
    })
}

/// What [`export_int8`] did.
#[derive(Debug, Clone)]
pub struct Int8Export {
    /// The calibrated ranges (none for the `weight-only` form).
    pub ranges: Option<Ranges>,
    /// Size of the written file in bytes.
    pub bytes: usize,
}

/// How an int8 export is calibrated and written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Options {
    /// At most this many calibration images (a seeded sample of the folder).
    pub images: usize,
    /// Operators of the graph.
    pub form: Int8Form,
    /// Activation ranges at this percentile of the calibration values (100: max).
    pub percentile: f64,
}

impl Int8Options {
    /// 1 000 images, `weight-only`, max calibration (`fewshot export`'s defaults).
    pub const DEFAULT: Int8Options = Int8Options {
        images: 1000,
        form: Int8Form::WeightOnly,
        percentile: 100.0,
    };
}

impl Int8Form {
    /// Whether the form quantizes activations, so needs calibration images.
    pub fn needs_calibration(self) -> bool {
        self != Int8Form::WeightOnly
    }
}

/// Exports the checkpoint `weights` to `out` as an int8 model; the forms that
/// quantize activations are calibrated on images from `calibration`.
pub fn export_int8(
    weights: &Path,
    out: &Path,
    calibration: Option<&Path>,
    options: Int8Options,
) -> anyhow::Result<Int8Export> {
    let (config, tensors) = load_checkpoint(weights)?;
    let (proto, ranges) = match calibration {
        _ if !options.form.needs_calibration() => {
            (super::encoder_proto(&config, &tensors, Weights::Int8)?, None)
        }
        _ if !matches!(config.encoder, EncoderConfig::Conv4 { .. }) => bail!(
            "the {:?} int8 form is written for Conv-4 only; export this encoder with --int8-form weight-only",
            options.form
        ),
        Some(folder) => {
            super::single_conv_blocks(&config, &format!("the {:?} int8 form", options.form))?;
            let layers = fold(&config, &tensors)?;
            let head = super::linear_head(&config, &tensors)?;
            let ranges = calibrate_ranges(&config, &layers, folder, options)?;
            let proto = model_proto(&config, &layers, head.as_ref(), &ranges, options.form)?;
            (proto, Some(ranges))
        }
        None => bail!("the {:?} int8 form needs calibration images", options.form),
    };
    let bytes = proto.encode_to_vec();
    write_atomic(out, &bytes)?;
    Ok(Int8Export {
        ranges,
        bytes: bytes.len(),
    })
}

/// Activation ranges of the folded `layers` over a sample of `calibration`.
fn calibrate_ranges(
    config: &crate::nn::checkpoint::ModelConfig,
    layers: &[FoldedConv],
    calibration: &Path,
    options: Int8Options,
) -> anyhow::Result<Ranges> {
    let recipe = config.recipe.recipe()?;
    let (in_channels, input_size) = config.encoder.input();
    let paths = sample_images(calibration, options.images, 0)?;
    let inputs = paths
        .iter()
        .map(|p| preprocess_file(p, &recipe))
        .collect::<Result<Vec<_>, _>>()?;
    measure(
        layers,
        (in_channels, input_size, input_size),
        &inputs,
        options.percentile,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_covers_the_range_and_keeps_zero_exact() {
        let a = Affine::covering(0.0, 5.1);
        assert_eq!(a.zero_point, 0);
        assert!((a.scale - 0.02).abs() < 1e-7);
        // [-1, 3]: scale 4/255, zero at 255/4 = 63.75 → 64.
        let b = Affine::covering(-1.0, 3.0);
        assert_eq!(b.zero_point, 64);
        assert!((b.scale - 4.0 / 255.0).abs() < 1e-7);
        // A range without 0 is widened to contain it.
        assert_eq!(Affine::covering(2.0, 4.0), Affine::covering(0.0, 4.0));
        assert_eq!(Affine::covering(0.0, 0.0).scale, 1.0);
    }

    #[test]
    fn weights_quantize_per_channel_rounding_half_to_even() {
        // Channel 0: max |w| = 127/128 → scale 1/128 exactly, so the values
        // below are exact halfway cases: 0.5 → 0, 1.5 → 2, 2.5 → 2, −63.5 → −64.
        // Channel 1 is all zero (scale 1).
        let u = 1.0f32 / 128.0;
        let mut weight = vec![
            127.0 * u,
            -127.0 * u,
            0.5 * u,
            1.5 * u,
            2.5 * u,
            -63.5 * u,
            0.0,
            10.0 * u,
            20.0 * u,
        ];
        weight.extend([0.0; 9]);
        let layer = FoldedConv {
            cout: 2,
            cin: 1,
            weight,
            bias: vec![0.3, -0.2],
        };
        let q = quantize_conv(&layer, 0.5, CONV_INTEGER_WEIGHT_MAX);
        assert_eq!(&q.weight[..9], &[127, -127, 0, 2, 2, -64, 0, 10, 20]);
        assert_eq!(&q.weight[9..], &[0; 9]);
        assert_eq!(q.weight_scale, vec![u, 1.0]);
        // Bias in units of 0.5 · scale: 0.3 · 256 = 76.8 → 77; −0.2 / 0.5 = −0.4 → 0.
        assert_eq!(q.bias, vec![77, 0]);
        // Reduced range (qlinear): max |w| maps to 63, scale (127/128)/63;
        // 10/128 · 63·128/127 = 4.96 → 5, 63.5/127 · 63 = 31.5 → 32 (even).
        let r = quantize_conv(&layer, 0.5, QLINEAR_WEIGHT_MAX);
        assert_eq!(&r.weight[..9], &[63, -63, 0, 1, 1, -32, 0, 5, 10]);
        assert!((r.weight_scale[0] - 127.0 * u / 63.0).abs() < 1e-9);
    }
}
