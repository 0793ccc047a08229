//! Model-agnostic meta-learning (Finn et al., 2017) of Conv-4 and an N-way
//! linear head, first and second order.
//!
//! The network is run **functionally**: [`forward`] takes its parameters as
//! a list of tensors, so the inner loop can replace them by fast weights
//! `θ' = θ − α ∇θ L_support(θ)` and the outer loop can differentiate the
//! query loss at `θ'` with respect to `θ`. It uses only candle operators
//! whose backward passes are themselves differentiable: the 3×3 convolution
//! as a gather (im2col) and a matrix product, batch statistics, ReLU, and 2×2
//! max pooling as a reshape and two `max` reductions over an even crop. The
//! project's fused kernels, which have no second derivative, are not used here.
//!
//! - **Second order** keeps the inner gradients in the graph (candle detaches
//!   gradients unless `CANDLE_GRAD_DO_NOT_DETACH` is set: [`second_order_ready`]
//!   checks, and the trainer refuses to run second order without it, rather
//!   than silently running first order).
//! - **First order** detaches each inner gradient explicitly, so the
//!   meta-gradient is the query gradient at `θ'`.
//! - `backward()` keeps gradients of leaves only: each inner step adds a zero
//!   leaf to every fast weight and reads the gradient there.
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
}

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
/// `hidden` channels on `in_channels` inputs with `features` flattened
/// features and a `k_way` head.
pub fn parameter_shapes(
    in_channels: usize,
    hidden: usize,
    features: usize,
    k_way: usize,
) -> Vec<Vec<usize>> {
    let mut shapes = Vec::new();
    for b in 0..4 {
        let cin = if b == 0 { in_channels } else { hidden };
        shapes.push(vec![hidden, cin, 3, 3]);
        shapes.extend([vec![hidden], vec![hidden], vec![hidden]]);
    }
    shapes.push(vec![k_way, features]);
    shapes.push(vec![k_way]);
    shapes
}

/// Whether gradients come back differentiable in this thread (second order
/// possible). Candle reads `CANDLE_GRAD_DO_NOT_DETACH` once per thread.
pub fn second_order_ready() -> Result<bool> {
    let x = Var::new(&[2.0f64], &candle_core::Device::Cpu)?;
    let y = x.as_tensor().powf(3.0)?.sum_all()?;
    let g = y.backward()?;
    Ok(g.get(x.as_tensor()).is_some_and(|g| g.track_op()))
}

/// Per-channel batch statistics of `(N, C, H, W)`: mean and biased variance,
/// each `(1, C, 1, 1)`.
fn batch_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let var = x
        .broadcast_sub(&mean)?
        .sqr()?
        .mean_keepdim(0)?
        .mean_keepdim(2)?
        .mean_keepdim(3)?;
    Ok((mean, var))
}

/// Gather indices of a 3×3, padding-1 im2col of `(C, N, H, W)` activations
/// flattened after padding to `(C, N, H + 2, W + 2)`: row `(c, dy, dx)`,
/// column `(n, y, x)`. Cached per shape (the same few shapes every step).
fn im2col_indices(c: usize, n: usize, h: usize, w: usize) -> Result<Tensor> {
    use std::collections::HashMap;
    thread_local! {
        static CACHE: std::cell::RefCell<HashMap<[usize; 4], Tensor>> =
            std::cell::RefCell::new(HashMap::new());
    }
    if let Some(t) = CACHE.with(|m| m.borrow().get(&[c, n, h, w]).cloned()) {
        return Ok(t);
    }
    let (hp, wp) = (h + 2, w + 2);
    let mut ids = Vec::with_capacity(c * 9 * n * h * w);
    for ci in 0..c {
        for dy in 0..3 {
            for dx in 0..3 {
                for ni in 0..n {
                    for y in 0..h {
                        for x in 0..w {
                            ids.push((((ci * n + ni) * hp + y + dy) * wp + x + dx) as u32);
                        }
                    }
                }
            }
        }
    }
    let t = Tensor::from_vec(ids, c * 9 * n * h * w, &candle_core::Device::Cpu)?;
    CACHE.with(|m| m.borrow_mut().insert([c, n, h, w], t.clone()));
    Ok(t)
}

/// A 3×3 convolution with padding 1 and a bias, as a gather (im2col) and one
/// matrix product: both have backward passes made of each other (gather ↔
/// index-add, product ↔ product), so it differentiates to any order, and it
/// avoids candle's slow CPU `conv_transpose2d` in the backward pass.
fn conv3x3(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let cout = weight.dim(0)?;
    let padded = x
        .transpose(0, 1)?
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .flatten_all()?;
    let cols = padded
        .index_select(&im2col_indices(c, n, h, w)?, 0)?
        .reshape((c * 9, n * h * w))?;
    weight
        .reshape((cout, c * 9))?
        .matmul(&cols)?
        .broadcast_add(&bias.reshape((cout, 1))?)?
        .reshape((cout, n, h, w))?
        .transpose(0, 1)?
        .contiguous()
}

/// 2×2 max pooling with stride 2 (an odd side drops its last row or column,
/// as floor pooling does).
fn max_pool2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    x.narrow(2, 0, 2 * h2)?
        .narrow(3, 0, 2 * w2)?
        .contiguous()?
        .reshape((n, c, h2, 2, w2, 2))?
        .max(5)?
        .max(3)
}

/// Logits `(n, k_way)` of images `x` `(n, c, h, w)` under `params`
/// ([`parameter_names`] order), batch norm by `x`'s own statistics. With
/// `stats`, each block's batch mean and variance (detached) are pushed to it.
pub fn forward(
    params: &[Tensor],
    x: &Tensor,
    mut stats: Option<&mut Vec<(Tensor, Tensor, f64)>>,
) -> Result<Tensor> {
    if params.len() != 18 {
        candle_core::bail!("MAML's Conv-4 has 18 parameters, got {}", params.len());
    }
    let mut x = x.clone();
    for b in 0..4 {
        let p = &params[4 * b..4 * b + 4];
        let c = p[0].dim(0)?;
        let shape = (1, c, 1, 1);
        x = conv3x3(&x, &p[0], &p[1])?;
        let (mean, var) = batch_stats(&x)?;
        if let Some(stats) = stats.as_deref_mut() {
            let (n, _, h, w) = x.dims4()?;
            stats.push((mean.detach(), var.detach(), (n * h * w) as f64));
        }
        x = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + BN_EPS)?.sqrt()?)?
            .broadcast_mul(&p[2].reshape(shape)?)?
            .broadcast_add(&p[3].reshape(shape)?)?
            .relu()?;
        x = max_pool2(&x)?;
    }
    x.flatten_from(1)?
        .matmul(&params[16].t()?)?
        .broadcast_add(&params[17])
}

/// The inner loop: `steps` SGD steps of rate `lr` on the cross-entropy of
/// `support` `(n, c, h, w)` with `labels` `(n,)` u32, from `params`. With
/// `second_order` the steps stay differentiable; else each gradient is
/// detached. With `stats`, the first step's batch statistics are pushed.
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
        // Zero leaves whose gradients are those of the fast weights.
        let probes = fast
            .iter()
            .map(|p| Var::zeros(p.shape(), p.dtype(), p.device()))
            .collect::<Result<Vec<_>>>()?;
        let used = fast
            .iter()
            .zip(&probes)
            .map(|(p, z)| p + z.as_tensor())
            .collect::<Result<Vec<_>>>()?;
        let first = if step == 0 { stats.take() } else { None };
        let loss = candle_nn::loss::cross_entropy(&forward(&used, support, first)?, labels)?;
        let grads = loss.backward()?;
        fast = fast
            .iter()
            .zip(&probes)
            .map(|(p, z)| {
                let g = match grads.get(z.as_tensor()) {
                    Some(g) => g.clone(),
                    None => z.as_tensor().zeros_like()?,
                };
                let g = if second_order { g } else { g.detach() };
                p - (g * lr)?
            })
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
