//! Export of trained encoders to ONNX, written with the protobuf types that
//! tract-onnx exposes. Batch norm is folded into the convolutions; the model's
//! `metadata_props` carry what the device needs to use it. Int8 models are
//! built in [`int8`] from activation ranges measured by [`calibrate`].

pub mod calibrate;
pub mod fce;
pub mod int8;
pub mod mcu;
pub mod mobile;
pub mod threshold;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::nn::checkpoint::{load_config, write_atomic, ModelConfig};
use crate::nn::encoder::EncoderConfig;

/// Name of the model's input.
pub const INPUT: &str = "image";
/// Name of the model's output.
pub const OUTPUT: &str = "embedding";
/// ONNX operator set the export uses.
pub const OPSET: i64 = 13;
/// Batch-norm epsilon of the encoders.
const BN_EPS: f32 = 1e-5;

/// Metadata keys every exported model carries.
pub use fewshot_core::model_meta as meta;

/// How an export stores a layer's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// As f32 initialisers.
    F32,
    /// As int8 with one scale per output row, through `DequantizeLinear`.
    Int8,
}

impl Weights {
    /// Adds the f32 tensor `name` (`dims`, rows along axis 0) to the graph.
    fn emit(
        self,
        name: &str,
        dims: &[usize],
        values: &[f32],
        nodes: &mut Vec<NodeProto>,
        init: &mut Vec<TensorProto>,
    ) {
        match self {
            Weights::F32 => init.push(f32_tensor(name, dims, values)),
            Weights::Int8 => int8::dequantized_weights(name, dims, values, nodes, init),
        }
    }

    /// The metadata of a model whose weights are stored this way (the int8
    /// case is the `weight-only` form).
    fn metadata(self, config: &ModelConfig) -> anyhow::Result<Vec<StringStringEntryProto>> {
        match self {
            Weights::F32 => metadata(config, "f32", vec![]),
            Weights::Int8 => metadata(
                config,
                "int8",
                vec![(meta::QUANTIZATION, int8::weight_only_record().to_string())],
            ),
        }
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(v) => tensor_shape_proto::dimension::Value::DimValue(*v as i64),
                None => tensor_shape_proto::dimension::Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The f32 values of a checkpoint tensor.
fn values(tensors: &HashMap<String, Tensor>, name: &str) -> anyhow::Result<Vec<f32>> {
    tensors
        .get(name)
        .with_context(|| format!("checkpoint has no tensor {name}"))?
        .flatten_all()?
        .to_vec1::<f32>()
        .with_context(|| format!("tensor {name}"))
}

/// Folds batch norm `{prefix}.bn` into `weight` (`cout` rows) and `bias`
/// (zeros when the layer has none): `γ (w·x + b − μ) / √(σ² + ε) + β`.
pub(crate) fn fold_bn(
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    mut weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    cout: usize,
) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let p = |s: &str| format!("{prefix}.bn.{s}");
    let (gamma, beta) = (values(tensors, &p("weight"))?, values(tensors, &p("bias"))?);
    let (mean, var) = (
        values(tensors, &p("running_mean"))?,
        values(tensors, &p("running_var"))?,
    );
    let bias = bias.unwrap_or_else(|| vec![0.0; cout]);
    if cout == 0
        || weight.len() % cout != 0
        || [&bias, &gamma, &beta, &mean, &var]
            .iter()
            .any(|v| v.len() != cout)
    {
        bail!("{prefix}: tensor sizes do not match a layer of {cout} outputs");
    }
    let per = weight.len() / cout;
    let mut folded = vec![0.0f32; cout];
    for o in 0..cout {
        let s = gamma[o] / (var[o] + BN_EPS).sqrt();
        weight[o * per..(o + 1) * per]
            .iter_mut()
            .for_each(|v| *v *= s);
        folded[o] = (bias[o] - mean[o]) * s + beta[o];
    }
    Ok((weight, folded))
}

/// One convolution with batch norm folded in: `y = conv(x, weight) + bias`.
#[derive(Debug, Clone)]
pub struct FoldedConv {
    /// Output channels.
    pub cout: usize,
    /// Input channels.
    pub cin: usize,
    /// Weights, `(cout, cin, 3, 3)` row-major.
    pub weight: Vec<f32>,
    /// Bias, one per output channel.
    pub bias: Vec<f32>,
}

/// The four blocks of a Conv-4 checkpoint with batch norm folded into each
/// convolution (every block is then conv, ReLU, 2×2 max pooling).
pub fn fold(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<Vec<FoldedConv>> {
    let (Some(widths), (in_channels, _)) = (config.encoder.block_widths(), config.encoder.input())
    else {
        bail!("the checkpoint's encoder is not a Conv-4");
    };
    let mut layers = Vec::new();
    for (b, &cout) in widths.iter().enumerate() {
        let deeper = config.encoder.block_depths().is_some_and(|d| d[b] > 1);
        let cin = match (deeper, b) {
            (true, _) => cout,
            (false, 0) => in_channels,
            (false, _) => widths[b - 1],
        };
        let p = |s: &str| format!("block{b}.{s}");
        let w = values(tensors, &p("conv.weight"))?;
        let bias = values(tensors, &p("conv.bias"))?;
        if w.len() != cout * cin * 9 {
            bail!("block {b}: tensor sizes do not match a Conv-4 block of {cin} → {cout} channels");
        }
        let (weight, folded) = fold_bn(tensors, &format!("block{b}"), w, Some(bias), cout)?;
        layers.push(FoldedConv {
            cout,
            cin,
            weight,
            bias: folded,
        });
    }
    Ok(layers)
}

/// The leading unpooled convolutions of each block of a deeper Conv-4
/// (`--depths`), batch norm folded in; empty lists at depth 1.
pub fn fold_pre(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<Vec<Vec<FoldedConv>>> {
    let (Some(widths), Some(depths), (in_channels, _)) = (
        config.encoder.block_widths(),
        config.encoder.block_depths(),
        config.encoder.input(),
    ) else {
        bail!("the checkpoint's encoder is not a Conv-4");
    };
    let mut blocks = Vec::new();
    for (b, (&cout, &depth)) in widths.iter().zip(&depths).enumerate() {
        let mut layers = Vec::new();
        for j in 0..depth.saturating_sub(1) {
            let cin = match (j, b) {
                (0, 0) => in_channels,
                (0, _) => widths[b - 1],
                _ => cout,
            };
            let prefix = format!("block{b}.pre{j}");
            let w = values(tensors, &format!("{prefix}.conv.weight"))?;
            let bias = values(tensors, &format!("{prefix}.conv.bias"))?;
            if w.len() != cout * cin * 9 {
                bail!(
                    "{prefix}: tensor sizes do not match a convolution of {cin} → {cout} channels"
                );
            }
            let (weight, folded) = fold_bn(tensors, &prefix, w, Some(bias), cout)?;
            layers.push(FoldedConv {
                cout,
                cin,
                weight,
                bias: folded,
            });
        }
        blocks.push(layers);
    }
    Ok(blocks)
}

/// Fails for a Conv-4 with more than one convolution in a block: the
/// integer forms and the core's engine run one convolution per block.
pub fn single_conv_blocks(config: &ModelConfig, what: &str) -> anyhow::Result<()> {
    match config.encoder.block_depths() {
        Some(d) if d.iter().any(|&n| n > 1) => bail!(
            "{what} runs one convolution per Conv-4 block; this checkpoint has depths {d:?} \
             (export it as f32 or in the `weight-only` int8 form)"
        ),
        _ => Ok(()),
    }
}

/// The linear embedding on the flattened features, `y = W x + b`.
#[derive(Debug, Clone)]
pub struct LinearHead {
    /// Output size.
    pub dim: usize,
    /// Input size (the flattened features).
    pub features: usize,
    /// `(dim, features)` row-major.
    pub weight: Vec<f32>,
    /// One per output.
    pub bias: Vec<f32>,
}

/// The checkpoint's linear embedding, if its encoder has one.
pub fn linear_head(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<Option<LinearHead>> {
    let EncoderConfig::Conv4 { embedding, .. } = config.encoder else {
        bail!("the checkpoint's encoder is not a Conv-4");
    };
    let Some(dim) = embedding else {
        return Ok(None);
    };
    let features = config.encoder.features();
    let weight = values(tensors, "embed.weight")?;
    let bias = values(tensors, "embed.bias")?;
    if weight.len() != dim * features || bias.len() != dim {
        bail!("embed: tensor sizes do not match a {features} → {dim} linear embedding");
    }
    Ok(Some(LinearHead {
        dim,
        features,
        weight,
        bias,
    }))
}

/// Ends a graph at `x` (the last block's output): flattened, then through
/// the linear embedding when there is one (its weights stored as `weights`,
/// its bias in f32), into [`OUTPUT`].
fn finish(
    x: &str,
    head: Option<&LinearHead>,
    weights: Weights,
    nodes: &mut Vec<NodeProto>,
    init: &mut Vec<TensorProto>,
) {
    let Some(head) = head else {
        nodes.push(node("Flatten", &[x], OUTPUT, vec![attr_int("axis", 1)]));
        return;
    };
    nodes.push(node("Flatten", &[x], "features", vec![attr_int("axis", 1)]));
    let dims = [head.dim, head.features];
    weights.emit("embed.weight", &dims, &head.weight, nodes, init);
    init.push(f32_tensor("embed.bias", &[head.dim], &head.bias));
    nodes.push(node(
        "Gemm",
        &["features", "embed.weight", "embed.bias"],
        OUTPUT,
        vec![attr_int("transB", 1)],
    ));
}

/// Attributes of the encoders' 3×3, padding 1 convolutions.
fn conv_attrs() -> Vec<AttributeProto> {
    vec![
        attr_ints("kernel_shape", &[3, 3]),
        attr_ints("pads", &[1, 1, 1, 1]),
        attr_ints("strides", &[1, 1]),
    ]
}

/// Appends block `b` of an f32 graph: the 3×3 convolution of `x` by
/// `weight` plus `bias`, 2×2 max pooling, then ReLU (pooling first: they
/// commute, and ReLU gets a quarter of the work). Returns the output's name.
///
/// The first block is written as four stride-2 convolutions, one for each
/// position of the pooling window (pads shifted by that position), and their
/// elementwise `Max`: the same products and the same maximum, without the
/// full-resolution map. tract runs it in three quarters of the time of `Conv`
/// then `MaxPool` (which it gives a poor kernel for the 9-long product of one
/// input channel, and a slow pooling pass): `models/README.md`.
fn conv_block(b: usize, x: &str, weight: &str, bias: &str, nodes: &mut Vec<NodeProto>) -> String {
    let p = |s: &str| format!("block{b}.{s}");
    let pool = p("pool");
    if b == 0 {
        let mut corners = Vec::new();
        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let corner = p(&format!("conv{dy}{dx}"));
            let attrs = vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("pads", &[1 - dy, 1 - dx, dy, dx]),
                attr_ints("strides", &[2, 2]),
            ];
            nodes.push(node("Conv", &[x, weight, bias], &corner, attrs));
            corners.push(corner);
        }
        let inputs: Vec<&str> = corners.iter().map(String::as_str).collect();
        nodes.push(node("Max", &inputs, &pool, vec![]));
    } else {
        let conv = p("conv");
        nodes.push(node("Conv", &[x, weight, bias], &conv, conv_attrs()));
        nodes.push(node("MaxPool", &[&conv], &pool, pool_attrs()));
    }
    let relu = p("relu");
    nodes.push(node("Relu", &[&pool], &relu, vec![]));
    relu
}

/// Attributes of the 2×2 max pooling.
fn pool_attrs() -> Vec<AttributeProto> {
    vec![
        attr_ints("kernel_shape", &[2, 2]),
        attr_ints("strides", &[2, 2]),
    ]
}

/// The metadata entries of an export; `weights` is `f32` or `int8`.
fn metadata(
    config: &ModelConfig,
    weights: &str,
    extra: Vec<(&'static str, String)>,
) -> anyhow::Result<Vec<StringStringEntryProto>> {
    let (in_channels, input_size) = config.encoder.input();
    let mut props = vec![
        (meta::RECIPE, serde_json::to_string(&config.recipe)?),
        (meta::EMBEDDING_SIZE, config.encoder.dim().to_string()),
        (meta::DISTANCE, config.distance.clone()),
        (
            meta::INPUT_SHAPE,
            serde_json::to_string(&[in_channels, input_size, input_size])?,
        ),
        (meta::WEIGHTS, weights.into()),
        (meta::TRAINING, serde_json::to_string(&config.training)?),
    ];
    props.extend(extra);
    Ok(props
        .into_iter()
        .map(|(k, v)| StringStringEntryProto {
            key: k.into(),
            value: v,
        })
        .collect())
}

/// A model around `nodes` and `initializer`, input [`INPUT`] and output [`OUTPUT`].
fn wrap(
    config: &ModelConfig,
    nodes: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
    metadata_props: Vec<StringStringEntryProto>,
) -> ModelProto {
    let (in_channels, input_size) = config.encoder.input();
    let arch = match config.encoder {
        EncoderConfig::Conv4 { .. } => "conv4",
        EncoderConfig::Mobile { .. } => "mobile",
    };
    onnx_model(
        GraphProto {
            node: nodes,
            name: format!("{}-{arch}", config.method),
            initializer,
            input: vec![value_info(
                INPUT,
                &[None, Some(in_channels), Some(input_size), Some(input_size)],
            )],
            output: vec![value_info(OUTPUT, &[None, Some(config.encoder.dim())])],
            ..Default::default()
        },
        metadata_props,
    )
}

/// A model of `graph` in this project's ONNX version and operator set.
fn onnx_model(graph: GraphProto, metadata_props: Vec<StringStringEntryProto>) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "fewshot".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props,
        ..Default::default()
    }
}

/// Builds the f32 ONNX model of a checkpoint, batch norm folded in.
pub fn model_proto(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<ModelProto> {
    encoder_proto(config, tensors, Weights::F32)
}

/// Builds the model of a checkpoint of any encoder, batch norm folded in,
/// its weights stored as `weights` (f32, or int8 in the `weight-only` form).
pub fn encoder_proto(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
    weights: Weights,
) -> anyhow::Result<ModelProto> {
    let (nodes, init) = match config.encoder {
        EncoderConfig::Conv4 { .. } => {
            let head = linear_head(config, tensors)?;
            conv4_graph(
                &fold_pre(config, tensors)?,
                &fold(config, tensors)?,
                head.as_ref(),
                weights,
            )
        }
        EncoderConfig::Mobile { .. } => mobile::graph(config, tensors, weights)?,
    };
    Ok(wrap(config, nodes, init, weights.metadata(config)?))
}

/// The nodes and initialisers of the folded Conv-4 `layers` (each block's
/// leading unpooled convolutions in `pre`) and `head`.
fn conv4_graph(
    pre: &[Vec<FoldedConv>],
    layers: &[FoldedConv],
    head: Option<&LinearHead>,
    weights: Weights,
) -> (Vec<NodeProto>, Vec<TensorProto>) {
    let mut nodes = Vec::new();
    let mut init = Vec::new();
    let mut x = INPUT.to_string();
    for (b, layer) in layers.iter().enumerate() {
        for (j, p) in pre.get(b).into_iter().flatten().enumerate() {
            let name = |s: &str| format!("block{b}.pre{j}.{s}");
            let (wn, bn) = (name("weight"), name("bias"));
            weights.emit(
                &wn,
                &[p.cout, p.cin, 3, 3],
                &p.weight,
                &mut nodes,
                &mut init,
            );
            init.push(f32_tensor(&bn, &[p.cout], &p.bias));
            let conv = name("conv");
            nodes.push(node("Conv", &[x.as_str(), &wn, &bn], &conv, conv_attrs()));
            let relu = name("relu");
            nodes.push(node("Relu", &[conv.as_str()], &relu, vec![]));
            x = relu;
        }
        let (wn, bn) = (format!("block{b}.weight"), format!("block{b}.bias"));
        let dims = [layer.cout, layer.cin, 3, 3];
        weights.emit(&wn, &dims, &layer.weight, &mut nodes, &mut init);
        init.push(f32_tensor(&bn, &[layer.cout], &layer.bias));
        x = conv_block(b, &x, &wn, &bn, &mut nodes);
    }
    finish(&x, head, weights, &mut nodes, &mut init);
    (nodes, init)
}

/// Reads a checkpoint and its JSON config.
fn load_checkpoint(weights: &Path) -> anyhow::Result<(ModelConfig, HashMap<String, Tensor>)> {
    let config = load_config(weights)?;
    let tensors = candle_core::safetensors::load(weights, &Device::Cpu).with_context(|| {
        format!(
            "{}: not a readable safetensors checkpoint",
            weights.display()
        )
    })?;
    Ok((config, tensors))
}

/// Exports the checkpoint `weights` (with its JSON beside it) to `out` as f32 ONNX.
pub fn export_f32(weights: &Path, out: &Path) -> anyhow::Result<()> {
    let (config, tensors) = load_checkpoint(weights)?;
    let proto = model_proto(&config, &tensors)?;
    write_atomic(out, &proto.encode_to_vec())?;
    Ok(())
}
