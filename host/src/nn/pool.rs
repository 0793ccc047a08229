//! 2×2 max pooling with a gradient that has been checked.
//!
//! candle 0.11.1's `max_pool2d` backward divides the gradient at the maximum by
//! the window area (found by finite differences). This pooling reshapes to
//! `(b, c, h/2, 2, w/2, 2)` and takes the maximum over the two window axes,
//! whose gradient is the reduction's (exact where the maximum is unique).

use candle_core::{Result, Tensor};

/// Max pooling over 2×2 windows with stride 2; odd trailing rows/columns are
/// dropped, as PyTorch's `MaxPool2d(2)` does.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.narrow(2, 0, 2 * h2)?.narrow(3, 0, 2 * w2)?
    } else {
        x.clone()
    };
    x.contiguous()?
        .reshape((b, c, h2, 2, w2, 2))?
        .max(5)?
        .max(3)
}
