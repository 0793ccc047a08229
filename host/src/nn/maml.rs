//! Model-agnostic meta-learning (Finn et al., 2017) of Conv-4 and an N-way
//! linear head, first and second order.
//!
//! The network is run **functionally**: [`forward`] takes its parameters as
//! a list of tensors, so the inner loop can replace them by fast weights
//! `θ' = θ − α ∇θ L_support(θ)` and the outer loop can differentiate the
//! query loss at `θ'` with respect to `θ`. Activations are kept channel
//! first, `(C, N, H, W)`, so that a convolution is one im2col and one
//! matrix product and batch norm works on the rows of its output.
//!
//! - **The inner gradient** `∇θ L_support` is a hand-written backward pass
//!   ([`support_gradients`]: the head, pooling and ReLU through constant
//!   masks, batch norm's input gradient, the convolution's transposed
//!   product and col2im), made of candle operators and the two custom ops of
//!   [`super::im2col`], each of which is the other's backward pass.
//!   Candle's `backward()` is only used once per task, for the meta-gradient,
//!   and it needs no `CANDLE_GRAD_DO_NOT_DETACH`: the outer pass frees what
//!   it has used, where differentiable backward passes kept every gradient's
//!   graph.
//! - **Second order** computes the inner gradients from the tracked fast
//!   weights, so the meta-gradient flows through them (Hessian-vector terms).
//! - **First order** computes them from detached copies, so the
//!   meta-gradient is the query gradient at `θ'`.
//! - **Batch norm** uses the statistics of the batch it sees (the task's
//!   support set in the inner loop, its query set after), at training and at
//!   test time, as the reference implementation (transductive). The running
//!   statistics are updated from the support set at the initial weights, so
//!   the encoder exported alone (for the door's prototypes) has them.
//!
//! Parameters, in order: for each of the four blocks `block{i}.conv.weight`,
//! `block{i}.conv.bias`, `block{i}.bn.weight`, `block{i}.bn.bias` (the Conv-4
//! encoder's names, so checkpoints export as any Conv-4), then `head.weight`
//! `(k_way, features)` and `head.bias`.

use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::im2col::{col2im, im2col};
use super::relu_pool::{gate, relu_pool, unpool};

/// Batch-norm epsilon (as the encoders').
const BN_EPS: f64 = 1e-5;
/// Momentum of the running statistics (as PyTorch's).
const MOMENTUM: f64 = 0.1;

/// MAML's settings; stored in runs and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MamlConfig {
    /// 1: first order (inner gradients detached); 2: second order.
    pub order: u8,
    /// Inner SGD steps on the support set during meta-training.
    pub inner_steps: usize,
    /// Inner SGD steps at validation and test time.
    pub inner_steps_test: usize,
    /// Inner learning rate α.
    pub inner_lr: f64,
    /// Tasks per meta-step (their query losses are averaged).
    pub meta_batch: usize,
    /// The head starts every task at zero and is not meta-learned (the
    /// "zero trick" of Kao et al., 2022): one inner step from it makes
    /// class `c`'s row `α/N · (p_c − p̄)`, its prototype less the mean
    /// prototype, for any labelling of the classes.
    #[serde(default)]
    pub zero_head: bool,
}

/// Index of `head.weight` in [`parameter_names`] (then `head.bias`).
pub const HEAD: usize = 16;

/// Names of the meta-parameters, in [`forward`]'s order.
pub fn parameter_names() -> Vec<String> {
    let mut names = Vec::new();
    for b in 0..4 {
        for p in ["conv.weight", "conv.bias", "bn.weight", "bn.bias"] {
            names.push(format!("block{b}.{p}"));
        }
    }
    names.push("head.weight".into());
    names.push("head.bias".into());
    names
}

/// Shapes of the meta-parameters ([`parameter_names`] order) of a Conv-4 of
/// `widths` channels on `in_channels` inputs with `features` flattened
/// features and a `k_way` head.
pub fn parameter_shapes(
    in_channels: usize,
    widths: [usize; 4],
    features: usize,
    k_way: usize,
) -> Vec<Vec<usize>> {
    let mut shapes = Vec::new();
    for (b, &cout) in widths.iter().enumerate() {
        let cin = if b == 0 { in_channels } else { widths[b - 1] };
        shapes.push(vec![cout, cin, 3, 3]);
        shapes.extend([vec![cout], vec![cout], vec![cout]]);
    }
    shapes.push(vec![k_way, features]);
    shapes.push(vec![k_way]);
    shapes
}

/// What one block's forward pass keeps for its hand-written backward pass.
struct BlockTape {
    /// The block's input shape `(C, N, H, W)`.
    input: (usize, usize, usize, usize),
    /// im2col of the input, `(C·9, N·H·W)`.
    cols: Tensor,
    /// Normalised convolution output `(C', N·H·W)`.
    xhat: Tensor,
    /// `1 / sqrt(var + ε)`, `(C', 1)`.
    inv: Tensor,
    /// Where a gradient passes back through pooling and ReLU (constant 0/1:
    /// the window's maximum, if ReLU passed it), `(C', N, 2·(H/2), 2·(W/2))`.
    gate: Tensor,
}

/// One block (3×3 convolution, batch norm by the batch's statistics, ReLU,
/// 2×2 max pooling with stride 2, an odd side dropping its last row or
/// column) on `(C, N, H, W)` activations; `p` its four parameters. Returns
/// the pooled `(C', N, H/2, W/2)` output, the batch mean and variance
/// `(C', 1)`, and with `tape` what its backward pass needs.
fn block(
    p: &[Tensor],
    a: &Tensor,
    tape: bool,
) -> Result<(Tensor, (Tensor, Tensor), Option<BlockTape>)> {
    let (c, n, h, w) = a.dims4()?;
    let cout = p[0].dim(0)?;
    let cols = im2col(a)?;
    let z = p[0]
        .reshape((cout, c * 9))?
        .matmul(&cols)?
        .broadcast_add(&p[1].reshape((cout, 1))?)?;
    let mean = z.mean_keepdim(1)?;
    let centred = z.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    let inv = (var.clone() + BN_EPS)?.sqrt()?.recip()?;
    let xhat = centred.broadcast_mul(&inv)?;
    let y = xhat
        .broadcast_mul(&p[2].reshape((cout, 1))?)?
        .broadcast_add(&p[3].reshape((cout, 1))?)?;
    let y = y.reshape((cout, n, h, w))?;
    let pooled = relu_pool(&y)?;
    let tape = if tape {
        let gate = gate(&y.detach(), &pooled.detach())?;
        Some(BlockTape {
            input: (c, n, h, w),
            cols,
            xhat,
            inv,
            gate,
        })
    } else {
        None
    };
    Ok((pooled, (mean, var), tape))
}

/// The hand-written backward pass of [`block`]: from the gradient of its
/// pooled output, the gradients of its four parameters and (with `input`)
/// of its input. Made of differentiable operators, so second order
/// differentiates through it.
fn block_backward(
    p: &[Tensor],
    tape: &BlockTape,
    dpooled: &Tensor,
    input: bool,
) -> Result<([Tensor; 4], Option<Tensor>)> {
    let (c, n, h, w) = tape.input;
    let cout = dpooled.dim(0)?;
    let m = (n * h * w) as f64;
    let dr = unpool(&tape.gate, dpooled, (h, w))?;
    let dy = dr.reshape((cout, n * h * w))?;
    let dgamma = dy.mul(&tape.xhat)?.sum_keepdim(1)?;
    let dbeta = dy.sum_keepdim(1)?;
    // Batch norm's input gradient: γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂)).
    let gamma = p[2].reshape((cout, 1))?;
    let dz = dy
        .broadcast_sub(&(&dbeta / m)?)?
        .sub(&tape.xhat.broadcast_mul(&(&dgamma / m)?)?)?
        .broadcast_mul(&gamma.mul(&tape.inv)?)?;
    let weight = p[0].reshape((cout, c * 9))?;
    let dweight = dz.matmul(&tape.cols.t()?)?.reshape(p[0].shape())?;
    let dbias = dz.sum(1)?;
    let dinput = if input {
        Some(col2im(&weight.t()?.matmul(&dz)?, tape.input)?)
    } else {
        None
    };
    Ok((
        [dweight, dbias, dgamma.reshape(cout)?, dbeta.reshape(cout)?],
        dinput,
    ))
}

/// One forward pass of the network.
struct Pass {
    /// `(n, k_way)`.
    logits: Tensor,
    /// Each block's batch mean and variance (detached) and its element count.
    stats: Vec<(Tensor, Tensor, f64)>,
    /// Each block's tape (empty unless asked for).
    tapes: Vec<BlockTape>,
    /// The flattened features `(n, features)` the head reads.
    features: Tensor,
}

/// The forward pass of images `x` `(n, c, h, w)`, with the blocks' tapes if
/// `tape`.
fn run(params: &[Tensor], x: &Tensor, tape: bool) -> Result<Pass> {
    if params.len() != 18 {
        candle_core::bail!("MAML's Conv-4 has 18 parameters, got {}", params.len());
    }
    let (n, _, h, w) = x.dims4()?;
    let mut a = x.transpose(0, 1)?.contiguous()?;
    let mut stats = Vec::with_capacity(4);
    let mut tapes = Vec::with_capacity(4);
    let (mut side_h, mut side_w) = (h, w);
    for b in 0..4 {
        let (pooled, (mean, var), t) = block(&params[4 * b..4 * b + 4], &a, tape)?;
        stats.push((mean.detach(), var.detach(), (n * side_h * side_w) as f64));
        tapes.extend(t);
        (side_h, side_w) = (side_h / 2, side_w / 2);
        a = pooled;
    }
    // Features in the encoder's (N, C, H, W) flattening order.
    let features = a.transpose(0, 1)?.contiguous()?.flatten_from(1)?;
    let logits = features
        .matmul(&params[16].t()?)?
        .broadcast_add(&params[17])?;
    Ok(Pass {
        logits,
        stats,
        tapes,
        features,
    })
}

/// Logits `(n, k_way)` of images `x` `(n, c, h, w)` under `params`
/// ([`parameter_names`] order), batch norm by `x`'s own statistics. With
/// `stats`, each block's batch mean and variance (detached) are pushed to it.
pub fn forward(
    params: &[Tensor],
    x: &Tensor,
    stats: Option<&mut Vec<(Tensor, Tensor, f64)>>,
) -> Result<Tensor> {
    let pass = run(params, x, false)?;
    if let Some(stats) = stats {
        stats.extend(pass.stats);
    }
    Ok(pass.logits)
}

/// The gradients of the mean cross-entropy of `x` `(n, c, h, w)` with
/// `labels` `(n,)` u32 with respect to `params` ([`parameter_names`]
/// order), by a hand-written backward pass (batch norm, pooling and the
/// im2col convolution), itself differentiable when `params` are tracked:
/// second order differentiates through it. With `stats`, the forward pass's
/// batch statistics are pushed.
pub fn support_gradients(
    params: &[Tensor],
    x: &Tensor,
    labels: &Tensor,
    stats: Option<&mut Vec<(Tensor, Tensor, f64)>>,
) -> Result<Vec<Tensor>> {
    Ok(loss_gradients(params, x, labels, stats)?.0)
}

/// [`support_gradients`], and the logits they are the gradients at.
fn loss_gradients(
    params: &[Tensor],
    x: &Tensor,
    labels: &Tensor,
    stats: Option<&mut Vec<(Tensor, Tensor, f64)>>,
) -> Result<(Vec<Tensor>, Tensor)> {
    let Pass {
        logits,
        stats: batch,
        tapes,
        features,
    } = run(params, x, true)?;
    if let Some(stats) = stats {
        stats.extend(batch);
    }
    let (n, k_way) = logits.dims2()?;
    let targets: Vec<u32> = labels.to_vec1()?;
    let mut onehot = vec![0f32; n * k_way];
    for (i, &y) in targets.iter().enumerate() {
        let y = y as usize;
        if y >= k_way {
            candle_core::bail!("label {y} of a {k_way}-way head");
        }
        onehot[i * k_way + y] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (n, k_way), x.device())?.to_dtype(logits.dtype())?;
    let dlogits = ((candle_nn::ops::softmax(&logits, 1)? - onehot)? / n as f64)?;
    let dhead_w = dlogits.t()?.matmul(&features)?;
    let dhead_b = dlogits.sum(0)?;
    let last = &tapes[3];
    let cout = params[12].dim(0)?;
    let (h4, w4) = (last.input.2 / 2, last.input.3 / 2);
    let mut dpooled = dlogits
        .matmul(&params[16])?
        .reshape((n, cout, h4, w4))?
        .transpose(0, 1)?
        .contiguous()?;
    let mut grads: Vec<Tensor> = Vec::with_capacity(18);
    for b in (0..4).rev() {
        let (g, dinput) = block_backward(&params[4 * b..4 * b + 4], &tapes[b], &dpooled, b > 0)?;
        for t in g.into_iter().rev() {
            grads.push(t);
        }
        if let Some(d) = dinput {
            dpooled = d;
        }
    }
    grads.reverse();
    grads.push(dhead_w);
    grads.push(dhead_b);
    Ok((grads, logits))
}

/// The inner loop: `steps` SGD steps of rate `lr` on the cross-entropy of
/// `support` `(n, c, h, w)` with `labels` `(n,)` u32, from `params`. With
/// `second_order` the steps stay differentiable; else each gradient is
/// computed from detached weights. With `stats`, the first step's batch
/// statistics are pushed.
pub fn adapt(
    params: &[Tensor],
    support: &Tensor,
    labels: &Tensor,
    steps: usize,
    lr: f64,
    second_order: bool,
    mut stats: Option<&mut Vec<(Tensor, Tensor, f64)>>,
) -> Result<Vec<Tensor>> {
    let mut fast: Vec<Tensor> = params.to_vec();
    for step in 0..steps {
        let first = if step == 0 { stats.take() } else { None };
        let at: Vec<Tensor> = if second_order {
            fast.clone()
        } else {
            fast.iter().map(Tensor::detach).collect()
        };
        let grads = support_gradients(&at, support, labels, first)?;
        fast = fast
            .iter()
            .zip(&grads)
            .map(|(p, g)| p - (g * lr)?)
            .collect::<Result<Vec<_>>>()?;
    }
    Ok(fast)
}

/// Labels `0, 0, …, 1, 1, …` of a class-major set of `k_way × per_class`.
pub fn class_major_labels(
    k_way: usize,
    per_class: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let labels: Vec<u32> = (0..k_way * per_class)
        .map(|i| (i / per_class) as u32)
        .collect();
    Tensor::from_vec(labels, k_way * per_class, device)
}

/// One task's query loss after adaptation, and its query accuracy.
#[allow(clippy::too_many_arguments)]
pub fn task_loss(
    params: &[Tensor],
    support: &Tensor,
    support_labels: &Tensor,
    query: &Tensor,
    query_labels: &Tensor,
    config: &MamlConfig,
    steps: usize,
    stats: Option<&mut Vec<(Tensor, Tensor, f64)>>,
) -> Result<(Tensor, f64)> {
    let fast = adapt(
        params,
        support,
        support_labels,
        steps,
        config.inner_lr,
        config.order == 2,
        stats,
    )?;
    let logits = forward(&fast, query, None)?;
    let loss = candle_nn::loss::cross_entropy(&logits, query_labels)?;
    let accuracy = super::method::accuracy(&logits, query_labels)?;
    Ok((loss, accuracy))
}

/// One task's first-order meta-gradient with respect to `params` — the
/// query gradient at the adapted weights, whose Jacobian with respect to
/// `params` first order takes as the identity — by the hand-written backward
/// pass, with no autograd graph; and the task's query loss and accuracy.
/// Equal to `backward()` of [`task_loss`] at order 1, at less cost.
#[allow(clippy::too_many_arguments)]
pub fn first_order_task(
    params: &[Tensor],
    support: &Tensor,
    support_labels: &Tensor,
    query: &Tensor,
    query_labels: &Tensor,
    config: &MamlConfig,
    steps: usize,
    stats: Option<&mut Vec<(Tensor, Tensor, f64)>>,
) -> Result<(Vec<Tensor>, f64, f64)> {
    let detached: Vec<Tensor> = params.iter().map(Tensor::detach).collect();
    let fast = adapt(
        &detached,
        support,
        support_labels,
        steps,
        config.inner_lr,
        false,
        stats,
    )?;
    let (grads, logits) = loss_gradients(&fast, query, query_labels, None)?;
    let loss = candle_nn::loss::cross_entropy(&logits, query_labels)?;
    let accuracy = super::method::accuracy(&logits, query_labels)?;
    Ok((
        grads,
        loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
        accuracy,
    ))
}

/// One task's meta-gradient with respect to `params` (`None` for a
/// parameter the loss does not reach) at `config.inner_steps` inner steps,
/// its query loss and accuracy: first order by [`first_order_task`], second
/// by `backward()` of [`task_loss`], whose graph is dropped once read.
#[allow(clippy::too_many_arguments)]
pub fn task_gradients(
    params: &[Tensor],
    support: &Tensor,
    support_labels: &Tensor,
    query: &Tensor,
    query_labels: &Tensor,
    config: &MamlConfig,
    stats: Option<&mut Vec<(Tensor, Tensor, f64)>>,
) -> Result<(Vec<Option<Tensor>>, f64, f64)> {
    let (ys, yq, steps) = (support_labels, query_labels, config.inner_steps);
    if config.order == 1 {
        let (grads, loss, acc) =
            first_order_task(params, support, ys, query, yq, config, steps, stats)?;
        return Ok((grads.into_iter().map(Some).collect(), loss, acc));
    }
    let (loss, acc) = task_loss(params, support, ys, query, yq, config, steps, stats)?;
    let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    let store = loss.backward()?;
    let grads = params.iter().map(|p| store.get(p).map(Tensor::detach));
    Ok((grads.collect(), value, acc))
}

/// Query logits of one episode at test time: `steps` first-order inner steps
/// on the support set, then the query set's logits (no meta-gradient, so the
/// adaptation is detached throughout).
pub fn episode_logits(
    params: &[Tensor],
    support: &Tensor,
    support_labels: &Tensor,
    query: &Tensor,
    steps: usize,
    lr: f64,
) -> Result<Tensor> {
    let detached: Vec<Tensor> = params.iter().map(Tensor::detach).collect();
    let fast = adapt(&detached, support, support_labels, steps, lr, false, None)?;
    Ok(forward(&fast, query, None)?.detach())
}

/// The meta-parameters of `varmap` in [`forward`]'s order.
pub fn parameters(varmap: &VarMap) -> Result<Vec<Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    parameter_names()
        .iter()
        .map(|n| {
            data.get(n)
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| candle_core::Error::Msg(format!("no MAML parameter {n}")))
        })
        .collect()
}

/// Folds batch statistics from [`forward`]'s `stats` into each block's
/// running mean and variance (`running`, block order), PyTorch's rule
/// (unbiased variance, momentum 0.1).
pub fn update_running(running: &[(Var, Var)], stats: &[(Tensor, Tensor, f64)]) -> Result<()> {
    for ((rm, rv), (mean, var, m)) in running.iter().zip(stats) {
        let c = rm.dim(0)?;
        let unbiased = if *m > 1.0 { m / (m - 1.0) } else { 1.0 };
        let mean = mean.reshape(c)?.to_dtype(rm.dtype())?;
        let var = var.reshape(c)?.to_dtype(rv.dtype())?;
        rm.set(&((rm.as_detached_tensor() * (1.0 - MOMENTUM))? + (mean * MOMENTUM)?)?)?;
        rv.set(&((rv.as_detached_tensor() * (1.0 - MOMENTUM))? + (var * (MOMENTUM * unbiased))?)?)?;
    }
    Ok(())
}

/// A meta-trained network loaded for evaluation.
#[derive(Debug, Clone)]
pub struct MamlModel {
    /// The meta-parameters in [`forward`]'s order.
    pub params: Vec<Tensor>,
    /// The run's settings (inner rate and test-time steps).
    pub config: MamlConfig,
    /// The head's classes: episodes must be this many ways.
    pub k_way: usize,
}

impl MamlModel {
    /// The network for `k_way`-way episodes: itself at its head's ways; a
    /// zero head of `k_way` rows for a zero-head network (its head holds no
    /// learned weights); `None` otherwise.
    pub fn for_ways(&self, k_way: usize) -> Result<Option<MamlModel>> {
        if k_way == self.k_way {
            return Ok(Some(self.clone()));
        }
        if !self.config.zero_head || k_way == 0 {
            return Ok(None);
        }
        let mut params = self.params.clone();
        let (dtype, device) = (params[HEAD].dtype(), params[HEAD].device().clone());
        params[HEAD] = Tensor::zeros((k_way, params[HEAD].dim(1)?), dtype, &device)?;
        params[HEAD + 1] = Tensor::zeros(k_way, dtype, &device)?;
        Ok(Some(MamlModel {
            params,
            config: self.config,
            k_way,
        }))
    }
    /// Logits `(queries, k_way)` of one class-major episode of images after
    /// `inner_steps_test` inner steps on its support set.
    pub fn episode_logits(
        &self,
        support: &Tensor,
        n_shot: usize,
        query: &Tensor,
    ) -> Result<Tensor> {
        let labels = class_major_labels(self.k_way, n_shot, support.device())?;
        episode_logits(
            &self.params,
            support,
            &labels,
            query,
            self.config.inner_steps_test,
            self.config.inner_lr,
        )
    }
}
