//! Seeded initialisation (candle's CPU random generator cannot be seeded).

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Re-initialises every variable from `seed`, as PyTorch does by default:
/// convolution and linear weights and biases uniform in ±1/√fan_in, batch-norm
/// scale 1 and shift 0, running statistics 0 and 1, LSTM weights and biases
/// (PyTorch's names, `weight_ih_l0`...) uniform in ±1/√hidden. Variables are visited in
/// name order, so the same seed always gives the same model.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let values: Vec<f64> = if name.ends_with("running_var") || name.ends_with("bn.weight") {
            vec![1.0; n]
        } else if name.ends_with("running_mean") || name.ends_with("bn.bias") {
            vec![0.0; n]
        } else if is_lstm(name) {
            // (4 × hidden, in), (4 × hidden, hidden) or (4 × hidden,).
            let bound = 1.0 / ((shape.dims()[0] / 4).max(1) as f64).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        } else {
            // Weights (out, in, kh, kw) or (out, in): fan_in is all but the first axis.
            // Biases take the fan_in of their layer's weight.
            let fan_in = if name.ends_with(".bias") {
                let weight = name.trim_end_matches("bias").to_string() + "weight";
                data.get(&weight)
                    .map_or(1, |w| w.elem_count() / w.dims()[0])
            } else {
                n / shape.dims()[0].max(1)
            };
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        var.set(&Tensor::from_vec(values, shape, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Whether `name` is an LSTM weight or bias in PyTorch's naming.
fn is_lstm(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    ["weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l"]
        .iter()
        .any(|p| last.starts_with(p))
}
