//! One place that runs a custom op's kernel body for each float type it
//! accepts, so the ops themselves hold only their arithmetic.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, WithDType};

/// A CPU kernel over contiguous inputs of one float type.
pub(crate) trait Kernel {
    /// Computes the output values from the inputs' values.
    fn run<T: WithDType>(&self, inputs: &[&[T]]) -> Vec<T>;
}

/// The contiguous values a layout describes.
pub(crate) fn values<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused op needs contiguous inputs".into()))?;
    Ok(&s.as_slice::<T>()?[start..end])
}

/// Runs `kernel` on f32 or f64 inputs; `what` names the op in errors.
pub(crate) fn run_cpu<K: Kernel>(
    kernel: &K,
    what: &str,
    inputs: &[(&CpuStorage, &Layout)],
) -> Result<CpuStorage> {
    fn typed<T: WithDType, K: Kernel>(
        kernel: &K,
        inputs: &[(&CpuStorage, &Layout)],
    ) -> Result<Vec<T>> {
        let slices = inputs
            .iter()
            .map(|(s, l)| values::<T>(s, l))
            .collect::<Result<Vec<_>>>()?;
        Ok(kernel.run(&slices))
    }
    match inputs.first().map(|(s, _)| s.dtype()) {
        Some(DType::F32) => Ok(CpuStorage::F32(typed::<f32, K>(kernel, inputs)?)),
        Some(DType::F64) => Ok(CpuStorage::F64(typed::<f64, K>(kernel, inputs)?)),
        dt => candle_core::bail!("{what}: unsupported dtype {dt:?} (f32 and f64 only)"),
    }
}
