//! Helpers of the custom ops' tests: fixed test values and a gradient check
//! against central differences, in f64.

use candle_core::{Device, Tensor, Var};

/// `len` fixed values in `[−1, 1)`, different for each `seed`.
pub fn values(len: usize, seed: u64) -> Vec<f64> {
    (0..len)
        .map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f64 / 500.0 - 1.0)
        .collect()
}

/// Asserts that candle's gradient of the scalar `f` at `x0` (of `shape`)
/// matches central differences of `f` to `1e-6` relative.
pub fn check_gradient(f: &dyn Fn(&Tensor) -> Tensor, x0: &[f64], shape: &[usize]) {
    let var = Var::from_vec(x0.to_vec(), shape, &Device::Cpu).unwrap();
    let grads = f(var.as_tensor()).backward().unwrap();
    let g: Vec<f64> = grads
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let at = |x: Vec<f64>| -> f64 {
        f(&Tensor::from_vec(x, shape, &Device::Cpu).unwrap())
            .to_scalar()
            .unwrap()
    };
    let eps = 1e-6;
    for i in 0..x0.len() {
        let (mut up, mut down) = (x0.to_vec(), x0.to_vec());
        up[i] += eps;
        down[i] -= eps;
        let fd = (at(up) - at(down)) / (2.0 * eps);
        assert!(
            (g[i] - fd).abs() < 1e-6 * fd.abs().max(1.0),
            "{shape:?}, ∂f/∂x[{i}]: {} vs {fd}",
            g[i]
        );
    }
}
