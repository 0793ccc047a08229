//! Export of a Matching Network's full context embeddings to two ONNX graphs
//! beside the encoder, so the device runs them with the same runtime:
//!
//! - the **support** graph: input [`SUPPORT`] `(n, dim)` (the gallery's
//!   embeddings `g'`, `n` free), output [`CONTEXT`] `(n, dim)`: `g(x_i, S)`.
//!   Each layer is one ONNX `LSTM` node with `direction = "bidirectional"`
//!   (tract runs a lone `reverse` node forwards, so no such node is written),
//!   the two directions summed, the skip added at the top.
//! - the **query** graph: inputs [`QUERY`] `(m, dim)` (`f'`) and [`CONTEXT`]
//!   `(n, dim)`, output [`ATTENDED`] `(m, dim)`: `f(x̂, S)`, the attention LSTM
//!   unrolled in plain operators (its input depends on its own state).
//!
//! Both follow [`crate::nn::matching`] exactly; the tests check them against
//! candle and onnxruntime.

use std::collections::HashMap;

use anyhow::{bail, Context};
use candle_core::Tensor;
use tract_onnx::pb::{
    tensor_proto::DataType, GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto,
    ValueInfoProto,
};

use super::{attr_int, f32_tensor, node, values};
use crate::nn::checkpoint::ModelConfig;
use crate::nn::matching::FceConfig;

/// Input of the support graph: the support (gallery) embeddings.
pub const SUPPORT: &str = "support";
/// Output of the support graph, input of the query graph: `g(x_i, S)`.
pub const CONTEXT: &str = "context";
/// Input of the query graph: the query embeddings `f'`.
pub const QUERY: &str = "query";
/// Output of the query graph: `f(x̂, S)`.
pub const ATTENDED: &str = "attended";

/// One PyTorch-layout LSTM: gate blocks in the order input, forget, cell, output.
struct Lstm {
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    bias: Vec<f32>,
    input: usize,
}

impl Lstm {
    fn load(
        tensors: &HashMap<String, Tensor>,
        prefix: &str,
        suffix: &str,
        input: usize,
        hidden: usize,
    ) -> anyhow::Result<Lstm> {
        let get = |what: &str, len: usize| -> anyhow::Result<Vec<f32>> {
            let name = format!("{prefix}.{what}_l{suffix}");
            let v = values(tensors, &name)?;
            if v.len() != len {
                bail!("{name} has {} values, expected {len}", v.len());
            }
            Ok(v)
        };
        let b_ih = get("bias_ih", 4 * hidden)?;
        let b_hh = get("bias_hh", 4 * hidden)?;
        Ok(Lstm {
            w_ih: get("weight_ih", 4 * hidden * input)?,
            w_hh: get("weight_hh", 4 * hidden * hidden)?,
            bias: b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect(),
            input,
        })
    }

    /// Rows of gate block `k` (PyTorch order) of a `(4 × hidden, cols)` matrix.
    fn block(m: &[f32], hidden: usize, cols: usize, k: usize) -> &[f32] {
        &m[k * hidden * cols..(k + 1) * hidden * cols]
    }
}

/// ONNX's gate order (input, output, forget, cell) as PyTorch block indices.
const ONNX_GATES: [usize; 4] = [0, 3, 1, 2];

fn int64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A `(rows, cols)` value info with `rows` free (named `rows_name`).
fn matrix_info(name: &str, rows_name: &str, cols: usize) -> ValueInfoProto {
    let mut info = super::value_info(name, &[None, Some(cols)]);
    if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
        info.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        if let Some(first) = t.shape.as_mut().and_then(|s| s.dim.first_mut()) {
            first.value = Some(
                tract_onnx::pb::tensor_shape_proto::dimension::Value::DimParam(rows_name.into()),
            );
        }
    }
    info
}

fn model(
    name: &str,
    nodes: Vec<NodeProto>,
    initializer: Vec<TensorProto>,
    input: Vec<ValueInfoProto>,
    output: Vec<ValueInfoProto>,
    config: &ModelConfig,
) -> anyhow::Result<ModelProto> {
    Ok(super::onnx_model(
        GraphProto {
            node: nodes,
            name: name.into(),
            initializer,
            input,
            output,
            ..Default::default()
        },
        vec![StringStringEntryProto {
            key: super::meta::MATCHING.into(),
            value: serde_json::to_string(&config.matching)?,
        }],
    ))
}

fn fce_of(config: &ModelConfig) -> anyhow::Result<FceConfig> {
    config
        .matching
        .and_then(|m| m.fce)
        .context("the checkpoint is not a Matching Network with full context embeddings")
}

/// The support graph of a Matching checkpoint with FCE.
pub fn support_proto(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<ModelProto> {
    let fce = fce_of(config)?;
    let d = config.encoder.dim();
    let mut nodes = Vec::new();
    let mut init = vec![
        int64_tensor("seq_shape", &[-1, 1, d as i64]),
        int64_tensor("flat_shape", &[-1, d as i64]),
        int64_tensor("direction_axis", &[1]),
    ];
    nodes.push(node("Reshape", &[SUPPORT, "seq_shape"], "x0", vec![]));
    let mut x = "x0".to_string();
    for l in 0..fce.lstm_layers {
        let sides = [
            Lstm::load(tensors, "head.support", &l.to_string(), d, d)?,
            Lstm::load(tensors, "head.support", &format!("{l}_reverse"), d, d)?,
        ];
        let (mut w, mut r, mut b) = (Vec::new(), Vec::new(), Vec::new());
        for side in &sides {
            for &k in &ONNX_GATES {
                w.extend_from_slice(Lstm::block(&side.w_ih, d, side.input, k));
                r.extend_from_slice(Lstm::block(&side.w_hh, d, d, k));
            }
        }
        for side in &sides {
            // ONNX's B is [Wb, Rb]; the summed bias goes in Wb, Rb is zero.
            for &k in &ONNX_GATES {
                b.extend_from_slice(&side.bias[k * d..(k + 1) * d]);
            }
            b.extend(std::iter::repeat_n(0.0, 4 * d));
        }
        let (wn, rn, bn) = (format!("l{l}.W"), format!("l{l}.R"), format!("l{l}.B"));
        init.push(f32_tensor(&wn, &[2, 4 * d, d], &w));
        init.push(f32_tensor(&rn, &[2, 4 * d, d], &r));
        init.push(f32_tensor(&bn, &[2, 8 * d], &b));
        let y = format!("l{l}.y");
        let mut lstm = node(
            "LSTM",
            &[&x, &wn, &rn, &bn],
            &y,
            vec![attr_int("hidden_size", d as i64)],
        );
        lstm.attribute.push(tract_onnx::pb::AttributeProto {
            name: "direction".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::String as i32,
            s: b"bidirectional".to_vec(),
            ..Default::default()
        });
        nodes.push(lstm);
        // Y (n, 2, 1, d): the two directions summed, (n, 1, d).
        let sum = format!("l{l}.sum");
        nodes.push(node(
            "ReduceSum",
            &[&y, "direction_axis"],
            &sum,
            vec![attr_int("keepdims", 0)],
        ));
        x = sum;
    }
    nodes.push(node("Reshape", &[&x, "flat_shape"], "top", vec![]));
    nodes.push(node("Add", &["top", SUPPORT], CONTEXT, vec![]));
    model(
        "matching-fce-support",
        nodes,
        init,
        vec![matrix_info(SUPPORT, "n", d)],
        vec![matrix_info(CONTEXT, "n", d)],
        config,
    )
}

/// The query graph of a Matching checkpoint with FCE.
pub fn query_proto(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> anyhow::Result<ModelProto> {
    let fce = fce_of(config)?;
    let d = config.encoder.dim();
    let lstm = Lstm::load(tensors, "head.query", "0", 2 * d, d)?;
    let mut init = vec![f32_tensor("zero", &[], &[0.0])];
    let mut nodes = vec![
        node("Mul", &[QUERY, "zero"], "h0", vec![]),
        node("Mul", &[QUERY, "zero"], "c0", vec![]),
        node(
            "Transpose",
            &[CONTEXT],
            "context_t",
            vec![super::attr_ints("perm", &[1, 0])],
        ),
    ];
    // Each gate acts on [f', r, h] (m, 3d) through one (3d, d) matrix.
    let gates = ["i", "f", "g", "o"];
    for (k, gate) in gates.iter().enumerate() {
        let mut w = vec![0.0f32; 3 * d * d];
        let ih = Lstm::block(&lstm.w_ih, d, 2 * d, k);
        let hh = Lstm::block(&lstm.w_hh, d, d, k);
        for j in 0..d {
            for c in 0..2 * d {
                w[c * d + j] = ih[j * 2 * d + c];
            }
            for c in 0..d {
                w[(2 * d + c) * d + j] = hh[j * d + c];
            }
        }
        init.push(f32_tensor(&format!("W{gate}"), &[3 * d, d], &w));
        init.push(f32_tensor(
            &format!("b{gate}"),
            &[d],
            &lstm.bias[k * d..(k + 1) * d],
        ));
    }
    let (mut h, mut c) = ("h0".to_string(), "c0".to_string());
    for step in 0..fce.unrolling_steps {
        let n = |what: &str| format!("s{step}.{what}");
        nodes.push(node("MatMul", &[&h, "context_t"], &n("scores"), vec![]));
        nodes.push(node(
            "Softmax",
            &[&n("scores")],
            &n("attention"),
            vec![attr_int("axis", -1)],
        ));
        nodes.push(node(
            "MatMul",
            &[&n("attention"), CONTEXT],
            &n("read"),
            vec![],
        ));
        nodes.push(node(
            "Concat",
            &[QUERY, &n("read"), &h],
            &n("x"),
            vec![attr_int("axis", 1)],
        ));
        for gate in gates {
            let pre = n(&format!("{gate}.pre"));
            nodes.push(node(
                "MatMul",
                &[&n("x"), &format!("W{gate}")],
                &pre,
                vec![],
            ));
            nodes.push(node(
                "Add",
                &[&pre, &format!("b{gate}")],
                &n(&format!("{gate}.sum")),
                vec![],
            ));
            let act = if gate == "g" { "Tanh" } else { "Sigmoid" };
            nodes.push(node(act, &[&n(&format!("{gate}.sum"))], &n(gate), vec![]));
        }
        nodes.push(node("Mul", &[&n("f"), &c], &n("fc"), vec![]));
        nodes.push(node("Mul", &[&n("i"), &n("g")], &n("ig"), vec![]));
        nodes.push(node("Add", &[&n("fc"), &n("ig")], &n("c"), vec![]));
        nodes.push(node("Tanh", &[&n("c")], &n("tanh_c"), vec![]));
        nodes.push(node("Mul", &[&n("o"), &n("tanh_c")], &n("h_hat"), vec![]));
        let last = step + 1 == fce.unrolling_steps;
        let out = if last { ATTENDED.to_string() } else { n("h") };
        nodes.push(node("Add", &[&n("h_hat"), QUERY], &out, vec![]));
        (h, c) = (out, n("c"));
    }
    model(
        "matching-fce-query",
        nodes,
        init,
        vec![matrix_info(QUERY, "m", d), matrix_info(CONTEXT, "n", d)],
        vec![matrix_info(ATTENDED, "m", d)],
        config,
    )
}

/// Paths of the two graphs beside an encoder export `out`
/// (`x.onnx` → `x.fce-support.onnx`, `x.fce-query.onnx`).
pub fn paths(out: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let stem = out.with_extension("");
    let with = |suffix: &str| {
        let mut s = stem.clone().into_os_string();
        s.push(suffix);
        std::path::PathBuf::from(s)
    };
    (
        with(super::meta::FCE_SUPPORT_SUFFIX),
        with(super::meta::FCE_QUERY_SUFFIX),
    )
}

/// Writes the two FCE graphs of checkpoint `weights` beside the encoder
/// export `out`, and names the head in `out`'s metadata; nothing for a
/// checkpoint that is not a Matching Network. Returns the files written.
pub fn export_beside(
    weights: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let (config, tensors) = super::load_checkpoint(weights)?;
    let Some(matching) = config.matching else {
        return Ok(Vec::new());
    };
    super::threshold::set_metadata(
        out,
        &[(super::meta::MATCHING, serde_json::to_string(&matching)?)],
    )?;
    if matching.fce.is_none() {
        return Ok(Vec::new());
    }
    let (support, query) = paths(out);
    use prost::Message;
    crate::nn::checkpoint::write_atomic(
        &support,
        &support_proto(&config, &tensors)?.encode_to_vec(),
    )?;
    crate::nn::checkpoint::write_atomic(&query, &query_proto(&config, &tensors)?.encode_to_vec())?;
    Ok(vec![support, query])
}
