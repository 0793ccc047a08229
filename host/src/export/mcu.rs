//! `fewshot export --mcu`: a Conv-4 checkpoint as a model blob for the core's
//! int8 engine (`fewshot_core::engine`), checked against tract running the
//! `qlinear` ONNX graph of the same quantization.

use std::path::Path;

use anyhow::{bail, Context};
use fewshot_core::engine::blob::{self, LayerSpec, OutputSpec, Spec};
use fewshot_core::engine::{Arena, Model};
use fewshot_core::Distance;
use prost::Message;
use tract_onnx::pb::{tensor_proto::DataType, type_proto, TypeProto, ValueInfoProto};
use tract_onnx::prelude::*;

use super::calibrate::{measure, sample_images, Ranges};
use super::int8::{self, Affine, Int8Form, CONV_INTEGER_WEIGHT_MAX};
use super::{fold, linear_head, load_checkpoint, FoldedConv, LinearHead};
use crate::data::preprocess_file;
use crate::nn::checkpoint::{write_atomic, ModelConfig};
use crate::nn::encoder::EncoderConfig;

/// File extension of model blobs.
pub const EXTENSION: &str = "fsmcu";

fn affine(a: Affine) -> blob::Affine {
    blob::Affine {
        scale: a.scale,
        zero_point: a.zero_point,
    }
}

/// The blob of the folded Conv-4 `layers` (and `head`) quantized with the
/// calibrated `ranges`: full-range int8 weights per output channel, u8
/// activations, each block a 3×3 convolution with ReLU and 2×2 max pooling.
pub fn spec(
    config: &ModelConfig,
    layers: &[FoldedConv],
    head: Option<&LinearHead>,
    ranges: &Ranges,
    threshold: Option<f32>,
) -> anyhow::Result<Spec> {
    if ranges.blocks.len() != layers.len() {
        bail!(
            "calibration covers {} blocks, the model has {}",
            ranges.blocks.len(),
            layers.len()
        );
    }
    let recipe = config.recipe.recipe()?;
    let distance = Distance::from_name(&config.distance)
        .with_context(|| format!("the checkpoint's distance {:?} is unknown", config.distance))?;
    let input = Affine::covering(ranges.input.0, ranges.input.1);
    let mut in_scale = input.scale;
    let mut specs = Vec::new();
    for (layer, &hi) in layers.iter().zip(&ranges.blocks) {
        let q = int8::quantize_conv(layer, in_scale, CONV_INTEGER_WEIGHT_MAX);
        let out = Affine::covering(0.0, hi);
        specs.push(LayerSpec {
            cout: layer.cout,
            k: 3,
            stride: 1,
            pad: 1,
            depthwise: false,
            relu: true,
            pool: true,
            out: affine(out),
            weight_scale: q.weight_scale,
            bias: q.bias,
            weight: q.weight,
        });
        in_scale = out.scale;
    }
    let output = match head {
        None => OutputSpec::Flatten,
        Some(h) => {
            let (weight, weight_scale) =
                int8::quantize_rows(&h.weight, h.features, CONV_INTEGER_WEIGHT_MAX);
            OutputSpec::Linear {
                dim: h.dim,
                weight_scale,
                bias: h.bias.clone(),
                weight,
            }
        }
    };
    Ok(Spec {
        recipe,
        distance,
        threshold,
        gallery_thresholds: None,
        input: affine(input),
        layers: specs,
        output,
    })
}

/// How the engine's run of a blob compares with tract's run of the `qlinear`
/// ONNX graph of the same quantization.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EngineCheck {
    /// Images compared.
    pub images: usize,
    /// Last-layer activations compared (all images).
    pub activations: usize,
    /// Of them, how many differ at all.
    pub differing: usize,
    /// Largest difference, in quantization steps.
    pub max_steps: u32,
    /// Largest absolute difference of an embedding value.
    pub max_embedding_diff: f32,
}

/// What [`export_mcu`] did.
#[derive(Debug, Clone)]
pub struct McuExport {
    /// Size of the blob in bytes.
    pub bytes: usize,
    /// The calibrated ranges.
    pub ranges: Ranges,
    /// Arena the engine needs: activation bytes and i32 accumulators.
    pub arena: (usize, usize),
    /// The engine against tract on calibration images.
    pub check: EngineCheck,
}

/// Exports the Conv-4 checkpoint `weights` as a blob at `out`, calibrated on
/// up to `images` images of `calibration` (ranges at `percentile`), and
/// checks the engine against tract on up to `check_images` of them.
pub fn export_mcu(
    weights: &Path,
    out: &Path,
    calibration: &Path,
    images: usize,
    percentile: f64,
    threshold: Option<f32>,
    check_images: usize,
) -> anyhow::Result<McuExport> {
    let (config, tensors) = load_checkpoint(weights)?;
    if !matches!(config.encoder, EncoderConfig::Conv4 { .. }) {
        bail!("--mcu: the engine's blob is written for Conv-4 encoders only (this checkpoint is not one)");
    }
    super::single_conv_blocks(&config, "--mcu: the engine's blob")?;
    let layers = fold(&config, &tensors)?;
    let head = linear_head(&config, &tensors)?;
    let recipe = config.recipe.recipe()?;
    let (in_channels, input_size) = config.encoder.input();
    let paths = sample_images(calibration, images, 0)?;
    let inputs = paths
        .iter()
        .map(|p| preprocess_file(p, &recipe))
        .collect::<Result<Vec<_>, _>>()?;
    let ranges = measure(
        &layers,
        (in_channels, input_size, input_size),
        &inputs,
        percentile,
    )?;
    let spec = spec(&config, &layers, head.as_ref(), &ranges, threshold)?;
    let bytes = blob::encode(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let proto = int8::model_proto_with(
        &config,
        &layers,
        head.as_ref(),
        &ranges,
        Int8Form::Qlinear,
        CONV_INTEGER_WEIGHT_MAX,
    )?;
    let last = format!("block{}.pool", layers.len() - 1);
    let check = compare_with_tract(
        &bytes,
        &proto,
        &last,
        &inputs[..inputs.len().min(check_images)],
    )?;
    write_atomic(out, &bytes)?;
    let model = Model::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(McuExport {
        bytes: bytes.len(),
        ranges,
        arena: (model.header().arena_bytes, model.header().accumulator_words),
        check,
    })
}

/// Runs `blob` in the engine and the `qlinear` graph `proto` in tract on
/// `inputs`, comparing the last layer's u8 activations (`features`, the node
/// that feeds the graph's `DequantizeLinear`) and the embeddings.
pub fn compare_with_tract(
    blob: &[u8],
    proto: &tract_onnx::pb::ModelProto,
    features: &str,
    inputs: &[Vec<f32>],
) -> anyhow::Result<EngineCheck> {
    let model = Model::from_bytes(blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Expose the last layer's u8 output too.
    let mut proto = proto.clone();
    let graph = proto.graph.as_mut().context("ONNX model without a graph")?;
    graph.output.push(ValueInfoProto {
        name: features.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Uint8 as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    });
    let r = model.header().recipe;
    let plan = tract_onnx::onnx()
        .model_for_read(&mut proto.encode_to_vec().as_slice())?
        .with_input_fact(0, f32::fact([1, r.channels, r.height, r.width]).into())?
        .into_optimized()?
        .into_runnable()?;
    let h = model.header();
    let (mut bytes, mut words) = (vec![0u8; h.arena_bytes], vec![0i32; h.accumulator_words]);
    let mut arena = Arena::new(&mut bytes, &mut words);
    let mut check = EngineCheck {
        images: inputs.len(),
        activations: 0,
        differing: 0,
        max_steps: 0,
        max_embedding_diff: 0.0,
    };
    let mut embedding = vec![0f32; model.dim()];
    for input in inputs {
        let x = tract_ndarray::Array4::from_shape_vec(
            (1, r.channels, r.height, r.width),
            input.clone(),
        )?;
        let outs = plan.run(tvec!(x.into_tensor().into()))?;
        let tract_embedding = outs[0].to_plain_array_view::<f32>()?;
        let tract_codes = outs[1].to_plain_array_view::<u8>()?;
        let (codes, _) = model
            .features(input, &mut arena)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if codes.len() != tract_codes.len() {
            bail!(
                "engine gives {} activations, tract {}",
                codes.len(),
                tract_codes.len()
            );
        }
        for (&a, &b) in codes.iter().zip(tract_codes.iter()) {
            let d = (i32::from(a) - i32::from(b)).unsigned_abs();
            check.activations += 1;
            check.differing += usize::from(d > 0);
            check.max_steps = check.max_steps.max(d);
        }
        model
            .embed(input, &mut arena, &mut embedding)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (&a, &b) in embedding.iter().zip(tract_embedding.iter()) {
            check.max_embedding_diff = check.max_embedding_diff.max((a - b).abs());
        }
    }
    Ok(check)
}

/// Name of the last layer's u8 output in [`qlinear_proto`]'s graph.
pub fn qlinear_features(model: &Model<'_>) -> String {
    format!("layer{}.out", model.layers().len().saturating_sub(1))
}

/// The ONNX graph of a blob, operator for operator: `QuantizeLinear`, per
/// layer `QLinearConv` (and `MaxPool`), `DequantizeLinear`, then `Flatten`
/// and a `Gemm` with dequantized int8 rows when the blob has a linear layer.
/// A second runtime (tract, onnxruntime) runs it to check the engine.
pub fn qlinear_proto(bytes: &[u8]) -> anyhow::Result<tract_onnx::pb::ModelProto> {
    use super::int8::{f32s, tensor};
    use super::{attr_int, attr_ints, node, pool_attrs, value_info, INPUT, OUTPUT};
    use fewshot_core::engine::blob::Output;
    let model = Model::from_bytes(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let h = model.header();
    let (mut nodes, mut init) = (Vec::new(), Vec::new());
    let affine_init = |init: &mut Vec<_>, p: &str, a: blob::Affine| {
        let (s, z) = (format!("{p}.scale"), format!("{p}.zero_point"));
        init.push(f32s(&s, &[], &[a.scale]));
        init.push(tensor(&z, &[], DataType::Uint8, vec![a.zero_point]));
        (s, z)
    };
    let (mut x_s, mut x_z) = affine_init(&mut init, "input", h.input);
    let mut x = "input.q".to_string();
    nodes.push(node("QuantizeLinear", &[INPUT, &x_s, &x_z], &x, vec![]));
    for (i, l) in model.layers().iter().enumerate() {
        let p = |s: &str| format!("layer{i}.{s}");
        if l.relu && l.out.zero_point != 0 {
            bail!(
                "layer {i}: ReLU with output zero point {} has no QLinearConv form",
                l.out.zero_point
            );
        }
        let s = l.shape;
        let gin = s.group_in();
        let (w, ws, wz, b) = (
            p("weight"),
            p("weight.scale"),
            p("weight.zero_point"),
            p("bias"),
        );
        // The blob keeps them output channel last; ONNX wants them first.
        let taps = s.k * s.k;
        let mut oihw = vec![0u8; l.weight.len()];
        for t in 0..taps {
            for ic in 0..gin {
                for oc in 0..s.cout {
                    oihw[(oc * gin + ic) * taps + t] = l.weight[(t * gin + ic) * s.cout + oc];
                }
            }
        }
        init.push(tensor(&w, &[s.cout, gin, s.k, s.k], DataType::Int8, oihw));
        init.push(tensor(
            &ws,
            &[s.cout],
            DataType::Float,
            l.weight_scale.to_vec(),
        ));
        init.push(tensor(&wz, &[s.cout], DataType::Int8, vec![0; s.cout]));
        init.push(tensor(&b, &[s.cout], DataType::Int32, l.bias.to_vec()));
        let (ys, yz) = affine_init(&mut init, &p("y"), l.out);
        let (pad, k, stride) = (s.pad as i64, s.k as i64, s.stride as i64);
        let conv = if l.pool { p("conv") } else { p("out") };
        nodes.push(node(
            "QLinearConv",
            &[&x, &x_s, &x_z, &w, &ws, &wz, &ys, &yz, &b],
            &conv,
            vec![
                attr_ints("kernel_shape", &[k, k]),
                attr_ints("pads", &[pad, pad, pad, pad]),
                attr_ints("strides", &[stride, stride]),
                attr_int("group", if s.depthwise { s.cin as i64 } else { 1 }),
            ],
        ));
        x = conv;
        if l.pool {
            nodes.push(node("MaxPool", &[&x], &p("out"), pool_attrs()));
            x = p("out");
        }
        (x_s, x_z) = (ys, yz);
    }
    nodes.push(node(
        "DequantizeLinear",
        &[&x, &x_s, &x_z],
        "features.f32",
        vec![],
    ));
    match model.output() {
        Output::Flatten => nodes.push(node(
            "Flatten",
            &["features.f32"],
            OUTPUT,
            vec![attr_int("axis", 1)],
        )),
        Output::Linear {
            dim,
            weight_scale,
            bias,
            weight,
        } => {
            nodes.push(node(
                "Flatten",
                &["features.f32"],
                "features",
                vec![attr_int("axis", 1)],
            ));
            let features = weight.len() / dim;
            init.push(tensor(
                "embed.weight.q",
                &[*dim, features],
                DataType::Int8,
                weight.to_vec(),
            ));
            init.push(tensor(
                "embed.weight.scale",
                &[*dim],
                DataType::Float,
                weight_scale.to_vec(),
            ));
            init.push(tensor(
                "embed.weight.zero_point",
                &[*dim],
                DataType::Int8,
                vec![0; *dim],
            ));
            nodes.push(node(
                "DequantizeLinear",
                &[
                    "embed.weight.q",
                    "embed.weight.scale",
                    "embed.weight.zero_point",
                ],
                "embed.weight",
                vec![attr_int("axis", 0)],
            ));
            init.push(tensor(
                "embed.bias",
                &[*dim],
                DataType::Float,
                bias.to_vec(),
            ));
            nodes.push(node(
                "Gemm",
                &["features", "embed.weight", "embed.bias"],
                OUTPUT,
                vec![attr_int("transB", 1)],
            ));
        }
    }
    let r = h.recipe;
    Ok(super::onnx_model(
        tract_onnx::pb::GraphProto {
            node: nodes,
            name: "fsmcu-qlinear".into(),
            initializer: init,
            input: vec![value_info(
                INPUT,
                &[None, Some(r.channels), Some(r.height), Some(r.width)],
            )],
            output: vec![value_info(OUTPUT, &[None, Some(model.dim())])],
            ..Default::default()
        },
        vec![],
    ))
}
