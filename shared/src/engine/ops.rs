//! The engine's integer kernels: convolution with i32 accumulation, fixed-point
//! requantisation, 2×2 max pooling, and the f32 output stages.
//!
//! Activations are `u8` planes in channel-major order (`C × H × W`, as ONNX's
//! NCHW without the batch), each with one affine quantization
//! `real = scale · (q − zero_point)`. Weights are `i8` with zero point 0.

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConvShape {
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Square kernel side.
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding on every side (in real zeros, i.e. the input zero point).
    pub pad: usize,
    /// One input channel per output channel (`cin == cout`).
    pub depthwise: bool,
}

impl ConvShape {
    /// Output height, `None` if the kernel does not fit.
    pub const fn out_h(&self) -> Option<usize> {
        out_side(self.h, self.k, self.stride, self.pad)
    }

    /// Output width, `None` if the kernel does not fit.
    pub const fn out_w(&self) -> Option<usize> {
        out_side(self.w, self.k, self.stride, self.pad)
    }

    /// Input channels each output channel reads.
    pub const fn group_in(&self) -> usize {
        if self.depthwise {
            1
        } else {
            self.cin
        }
    }
}

const fn out_side(n: usize, k: usize, stride: usize, pad: usize) -> Option<usize> {
    let padded = n + 2 * pad;
    if stride == 0 || padded < k {
        None
    } else {
        Some((padded - k) / stride + 1)
    }
}

/// A positive real multiplier `M` as `m · 2^−shift` with `m < 2^31`, applied
/// to i32 accumulators with rounding half up (towards +∞).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requant {
    m: i64,
    shift: u32,
}

impl Requant {
    /// The fixed-point form of `real` (`None` unless `0 < real < 2^31` and finite).
    pub fn new(real: f64) -> Option<Requant> {
        if !(real.is_finite() && real > 0.0 && real < 2_147_483_648.0) {
            return None;
        }
        // real ∈ [2^e, 2^(e+1)): scale it into [2^30, 2^31).
        let e = ((real.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        let shift = (30 - e).clamp(0, 62) as u32;
        let m = libm::round(real * pow2(shift)) as i64;
        Some(Requant { m, shift })
    }

    /// `round(acc · M)`.
    #[inline]
    pub fn apply(self, acc: i32) -> i64 {
        let p = acc as i64 * self.m;
        if self.shift == 0 {
            p
        } else {
            (p + (1i64 << (self.shift - 1))) >> self.shift
        }
    }
}

fn pow2(n: u32) -> f64 {
    f64::from_bits(((1023 + n as u64) & 0x7ff) << 52)
}

/// Quantizes f32 values to `u8` as ONNX `QuantizeLinear`: `x / scale` rounded
/// half to even, plus the zero point, saturated.
pub fn quantize(input: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    for (q, &x) in out.iter_mut().zip(input) {
        let v = libm::rintf(x / scale) + f32::from(zero_point);
        // NaN saturates to 0 (`as` maps it there); ±∞ to the ends.
        *q = v.clamp(0.0, 255.0) as u8;
    }
}

/// Per-channel quantization of a convolution's output.
pub struct Requantize<'a> {
    /// Bias of each output channel, in units of input scale × weight scale.
    pub bias: &'a [u8],
    /// Weight scale of each output channel (f32, little-endian bytes).
    pub weight_scale: &'a [u8],
    /// The input's scale.
    pub in_scale: f32,
    /// The output's scale.
    pub out_scale: f32,
    /// The output's zero point.
    pub out_zero: u8,
    /// Clamp at the zero point from below (ReLU).
    pub relu: bool,
    /// 2×2 max pooling, stride 2 (odd edges dropped), after requantisation.
    pub pool: bool,
}

/// Little-endian f32 number `i` of `bytes`.
#[inline]
pub(crate) fn f32_at(bytes: &[u8], i: usize) -> f32 {
    let b = &bytes[4 * i..4 * i + 4];
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Little-endian i32 number `i` of `bytes`.
#[inline]
pub(crate) fn i32_at(bytes: &[u8], i: usize) -> i32 {
    let b = &bytes[4 * i..4 * i + 4];
    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The requantisation of output channel `c` (`None` if its scales are unusable).
pub fn channel_requant(q: &Requantize<'_>, c: usize) -> Option<Requant> {
    let real =
        f64::from(q.in_scale) * f64::from(f32_at(q.weight_scale, c)) / f64::from(q.out_scale);
    Requant::new(real)
}

/// Convolution of `input` (`cin × h × w` u8, zero point `in_zero`) by int8
/// `weight` (`cout × group_in × k × k`), requantised into `out` (`cout × oh ×
/// ow`, or the pooled `cout × oh/2 × ow/2`), with `acc` (at least `oh · ow`)
/// as the accumulator plane. The caller has checked every size.
pub fn conv(
    s: &ConvShape,
    input: &[u8],
    in_zero: u8,
    weight: &[u8],
    q: &Requantize<'_>,
    acc: &mut [i32],
    out: &mut [u8],
) {
    let (Some(oh), Some(ow)) = (s.out_h(), s.out_w()) else {
        return;
    };
    let plane = s.h * s.w;
    let taps = s.k * s.k;
    let zero = i32::from(in_zero);
    let acc = &mut acc[..oh * ow];
    let (ph, pw) = if q.pool { (oh / 2, ow / 2) } else { (oh, ow) };
    for oc in 0..s.cout {
        acc.fill(i32_at(q.bias, oc));
        for g in 0..s.group_in() {
            let ic = if s.depthwise { oc } else { g };
            let x = &input[ic * plane..(ic + 1) * plane];
            let wk = &weight[(oc * s.group_in() + g) * taps..][..taps];
            for ky in 0..s.k {
                for kx in 0..s.k {
                    let wv = i32::from(wk[ky * s.k + kx] as i8);
                    if wv == 0 {
                        continue;
                    }
                    accumulate_tap(s, x, zero, wv, ky, kx, oh, ow, acc);
                }
            }
        }
        let Some(r) = channel_requant(q, oc) else {
            continue;
        };
        let lo = if q.relu { i64::from(q.out_zero) } else { 0 };
        let code = |a: i32| (r.apply(a) + i64::from(q.out_zero)).clamp(lo, 255) as u8;
        let o = &mut out[oc * ph * pw..(oc + 1) * ph * pw];
        if q.pool {
            for py in 0..ph {
                for px in 0..pw {
                    let at = |y: usize, x: usize| acc[y * ow + x];
                    let (y, x) = (2 * py, 2 * px);
                    // Requantisation is monotone (M > 0): pool the accumulators.
                    let m = at(y, x)
                        .max(at(y, x + 1))
                        .max(at(y + 1, x))
                        .max(at(y + 1, x + 1));
                    o[py * pw + px] = code(m);
                }
            }
        } else {
            for (o, &a) in o.iter_mut().zip(acc.iter()) {
                *o = code(a);
            }
        }
    }
}

/// Adds `w · (x − zero)` of kernel tap `(ky, kx)` to every output position.
#[allow(clippy::too_many_arguments)]
#[inline]
fn accumulate_tap(
    s: &ConvShape,
    x: &[u8],
    zero: i32,
    w: i32,
    ky: usize,
    kx: usize,
    oh: usize,
    ow: usize,
    acc: &mut [i32],
) {
    // Output columns whose input column ox·stride + kx − pad lies inside.
    let first = s.pad.saturating_sub(kx).div_ceil(s.stride);
    let last = (s.w + s.pad - kx).div_ceil(s.stride).min(ow);
    if first >= last {
        return;
    }
    for oy in 0..oh {
        let iy = oy * s.stride + ky;
        if iy < s.pad || iy - s.pad >= s.h {
            continue;
        }
        let row = &x[(iy - s.pad) * s.w..][..s.w];
        let a = &mut acc[oy * ow + first..oy * ow + last];
        let x0 = first * s.stride + kx - s.pad;
        if s.stride == 1 {
            for (a, &v) in a.iter_mut().zip(&row[x0..]) {
                *a += w * (i32::from(v) - zero);
            }
        } else {
            for (a, &v) in a.iter_mut().zip(row[x0..].iter().step_by(s.stride)) {
                *a += w * (i32::from(v) - zero);
            }
        }
    }
}

/// `out[o] = scale[o] · Σ_i (x_i − zero) · w[o, i] + bias[o]`: a linear layer on
/// u8 features with int8 rows, f32 out (`weight_scale[o]` times `in_scale`).
pub fn linear(
    x: &[u8],
    in_zero: u8,
    in_scale: f32,
    weight: &[u8],
    weight_scale: &[u8],
    bias: &[u8],
    out: &mut [f32],
) {
    let zero = i32::from(in_zero);
    for (o, y) in out.iter_mut().enumerate() {
        let row = &weight[o * x.len()..(o + 1) * x.len()];
        let acc: i32 = row
            .iter()
            .zip(x)
            .map(|(&w, &v)| i32::from(w as i8) * (i32::from(v) - zero))
            .sum();
        *y = acc as f32 * (in_scale * f32_at(weight_scale, o)) + f32_at(bias, o);
    }
}

/// `out[i] = scale · (x_i − zero)`: ONNX `DequantizeLinear`.
pub fn dequantize(x: &[u8], zero: u8, scale: f32, out: &mut [f32]) {
    for (y, &v) in out.iter_mut().zip(x) {
        *y = (i32::from(v) - i32::from(zero)) as f32 * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requant_rounds_like_the_real_product() {
        for &real in &[0.5, 0.0123, 1.0, 3.75, 1e-6, 0.999_999] {
            let r = Requant::new(real).unwrap();
            for acc in [-100_000, -3, -1, 0, 1, 2, 7, 99_999, 1 << 24] {
                let exact = acc as f64 * real;
                let got = r.apply(acc) as f64;
                assert!(
                    (got - exact).abs() <= 0.5 + 1e-6 * exact.abs(),
                    "{real} {acc}: {got} vs {exact}"
                );
            }
        }
        assert_eq!(Requant::new(0.5).unwrap().apply(3), 2); // 1.5 → 2 (half up)
        assert_eq!(Requant::new(0.5).unwrap().apply(-3), -1); // −1.5 → −1 (half up)
        assert!(Requant::new(0.0).is_none());
        assert!(Requant::new(f64::NAN).is_none());
        assert!(Requant::new(3e9).is_none());
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let mut q = [0u8; 6];
        quantize(&[0.5, 1.5, 2.5, -10.0, 1e9, f32::NAN], 1.0, 0, &mut q);
        assert_eq!(q, [0, 2, 2, 0, 255, 0]);
        quantize(&[-1.0, 0.0], 0.5, 128, &mut q[..2]);
        assert_eq!(&q[..2], &[126, 128]);
    }
}
