//! Export of the MobileFaceNet-style encoder ([`crate::nn::mobile`]): every
//! batch norm folded into the convolution (or the embedding) before it; ONNX
//! `Conv` (with `group` for the depthwise layers), `Relu`, `Add` for the
//! skip connections, the global depthwise convolution, then `Gemm`. The same
//! graph serves the f32 file and the `weight-only` int8 file: only how the
//! weights are stored differs ([`Weights`]).

use std::collections::HashMap;

use anyhow::bail;
use candle_core::Tensor;
use tract_onnx::pb::{NodeProto, TensorProto};

use super::{
    attr_int, attr_ints, conv_block, f32_tensor, fold_bn, node, values, Weights, INPUT, OUTPUT,
};
use crate::nn::checkpoint::ModelConfig;
use crate::nn::encoder::EncoderConfig;
use crate::nn::mobile::{bottlenecks, gdc, stem_dw, widen, LayerSpec, REDUCTION};

/// Appends the convolution `spec` named `name` (batch norm folded) on `x`;
/// returns its output's name (after ReLU when it has one).
fn conv(
    tensors: &HashMap<String, Tensor>,
    name: &str,
    spec: LayerSpec,
    x: &str,
    weights: Weights,
    nodes: &mut Vec<NodeProto>,
    init: &mut Vec<TensorProto>,
) -> anyhow::Result<String> {
    let per = if spec.depthwise { 1 } else { spec.cin };
    let dims = [spec.cout, per, spec.kernel, spec.kernel];
    let raw = values(tensors, &format!("{name}.weight"))?;
    if raw.len() != dims.iter().product::<usize>() {
        bail!("{name}.weight: {} values, expected {dims:?}", raw.len());
    }
    let (weight, bias) = fold_bn(tensors, name, raw, None, spec.cout)?;
    let (wn, bn) = (format!("{name}.w"), format!("{name}.b"));
    weights.emit(&wn, &dims, &weight, nodes, init);
    init.push(f32_tensor(&bn, &[spec.cout], &bias));
    let pad = spec.padding as i64;
    let attrs = vec![
        attr_ints("kernel_shape", &[spec.kernel as i64; 2]),
        attr_ints("pads", &[pad; 4]),
        attr_ints("strides", &[spec.stride as i64; 2]),
        attr_int("group", if spec.depthwise { spec.cout } else { 1 } as i64),
    ];
    nodes.push(node("Conv", &[x, &wn, &bn], name, attrs));
    if !spec.relu {
        return Ok(name.to_string());
    }
    let relu = format!("{name}.relu");
    nodes.push(node("Relu", &[name], &relu, vec![]));
    Ok(relu)
}

/// The nodes and initialisers of a mobile checkpoint's graph.
pub fn graph(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
    weights: Weights,
) -> anyhow::Result<(Vec<NodeProto>, Vec<TensorProto>)> {
    let EncoderConfig::Mobile {
        in_channels,
        width,
        input_size,
        embedding,
    } = config.encoder
    else {
        bail!("not a mobile encoder");
    };
    let mut nodes = Vec::new();
    let mut init = Vec::new();
    // The stem: a Conv-4 block, written as the Conv-4 export writes its first.
    let (weight, bias) = stem_layer(tensors, in_channels, width)?;
    weights.emit(
        "block0.weight",
        &[width, in_channels, 3, 3],
        &weight,
        &mut nodes,
        &mut init,
    );
    init.push(f32_tensor("block0.bias", &[width], &bias));
    let mut x = conv_block(0, INPUT, "block0.weight", "block0.bias", &mut nodes);
    let (t, n, i) = (tensors, &mut nodes, &mut init);
    x = conv(t, "stem_dw", stem_dw(width), &x, weights, n, i)?;
    for (name, b) in bottlenecks(width) {
        let input = x.clone();
        let h = conv(t, &format!("{name}.expand"), b.expand, &x, weights, n, i)?;
        let h = conv(t, &format!("{name}.dw"), b.dw, &h, weights, n, i)?;
        x = conv(t, &format!("{name}.project"), b.project, &h, weights, n, i)?;
        if b.residual {
            let sum = format!("{name}.add");
            n.push(node("Add", &[&x, &input], &sum, vec![]));
            x = sum;
        }
    }
    x = conv(t, "widen", widen(width), &x, weights, n, i)?;
    let side = input_size / REDUCTION;
    x = conv(t, "gdc", gdc(width, side), &x, weights, n, i)?;
    n.push(node(
        "Flatten",
        &[&x],
        "features",
        vec![attr_int("axis", 1)],
    ));
    let features = widen(width).cout;
    let raw = values(t, "embed.weight")?;
    if raw.len() != embedding * features {
        bail!(
            "embed.weight: {} values, expected {embedding} × {features}",
            raw.len()
        );
    }
    let (weight, bias) = fold_bn(t, "embed", raw, None, embedding)?;
    weights.emit("embed.w", &[embedding, features], &weight, n, i);
    i.push(f32_tensor("embed.b", &[embedding], &bias));
    n.push(node(
        "Gemm",
        &["features", "embed.w", "embed.b"],
        OUTPUT,
        vec![attr_int("transB", 1)],
    ));
    Ok((nodes, init))
}

/// The stem's convolution weights and bias with its batch norm folded.
fn stem_layer(
    tensors: &HashMap<String, Tensor>,
    cin: usize,
    width: usize,
) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let raw = values(tensors, "block0.conv.weight")?;
    let bias = values(tensors, "block0.conv.bias")?;
    if raw.len() != width * cin * 9 {
        bail!(
            "block0.conv.weight: {} values, expected {width}×{cin}×3×3",
            raw.len()
        );
    }
    fold_bn(tensors, "block0", raw, Some(bias), width)
}
