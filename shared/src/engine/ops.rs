//! The engine's integer kernels: convolution with i32 accumulation, fixed-point
//! requantisation, 2×2 max pooling, and the f32 output stages.
//!
//! Activations are `u8`, channel last (`H × W × C`) between layers, each
//! tensor with one affine quantization `real = scale · (q − zero_point)`;
//! the last layer's are turned channel first (`C × H × W`, ONNX's order) for
//! the output stage. Weights are `i8` with zero point 0, stored `k × k × cin
//! × cout` (output channel last).

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
        *q = quantize_one(x, scale, zero_point);
    }
}

#[inline]
fn quantize_one(x: f32, scale: f32, zero_point: u8) -> u8 {
    let v = libm::rintf(x / scale) + f32::from(zero_point);
    // NaN saturates to 0 (`as` maps it there); ±∞ to the ends.
    v.clamp(0.0, 255.0) as u8
}

/// [`quantize`] of a `c × h × w` input into `h × w × c` (channel last).
pub fn quantize_channel_last(
    input: &[f32],
    (c, h, w): (usize, usize, usize),
    scale: f32,
    zero_point: u8,
    out: &mut [u8],
) {
    for ch in 0..c {
        for (p, &x) in input[ch * h * w..(ch + 1) * h * w].iter().enumerate() {
            out[p * c + ch] = quantize_one(x, scale, zero_point);
        }
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

/// i32 words a convolution of `cout` output channels needs: accumulators,
/// biases, and each channel's requantisation (multiplier, shift).
pub const fn conv_words(cout: usize) -> usize {
    4 * cout
}

/// Convolution of `input` (`h × w × cin` u8, channel last, zero point
/// `in_zero`) by int8 `weight` (`k × k × cin' × cout`, output channel last),
/// requantised into `out` (`oh × ow × cout`, or the pooled `oh/2 × ow/2 ×
/// cout`), with `words` (at least [`conv_words`]) as scratch. The caller has
/// checked every size (the blob's decoder does).
///
/// Output channels are the inner loop, so it vectorises on the host whatever
/// the image size; inputs at the zero point (ReLU's zeros) are skipped.
pub fn conv(
    s: &ConvShape,
    input: &[u8],
    in_zero: u8,
    weight: &[u8],
    q: &Requantize<'_>,
    words: &mut [i32],
    out: &mut [u8],
) {
    let (Some(oh), Some(ow)) = (s.out_h(), s.out_w()) else {
        return;
    };
    let cout = s.cout;
    let (acc, rest) = words[..conv_words(cout)].split_at_mut(cout);
    let (bias, rest) = rest.split_at_mut(cout);
    let (mults, shifts) = rest.split_at_mut(cout);
    for oc in 0..cout {
        bias[oc] = i32_at(q.bias, oc);
        // The decoder checked that every channel's requantisation exists.
        let r = channel_requant(q, oc).unwrap_or(Requant { m: 0, shift: 0 });
        mults[oc] = r.m as i32;
        shifts[oc] = r.shift as i32;
    }
    let zero = i32::from(in_zero);
    let lo = if q.relu { i64::from(q.out_zero) } else { 0 };
    let (ph, pw, cells) = if q.pool {
        (oh / 2, ow / 2, 2)
    } else {
        (oh, ow, 1)
    };
    let gin = s.group_in();
    for py in 0..ph {
        for px in 0..pw {
            let o = &mut out[(py * pw + px) * cout..][..cout];
            o.fill(0);
            for cell in 0..cells * cells {
                let (oy, ox) = (py * cells + cell / cells, px * cells + cell % cells);
                acc.copy_from_slice(bias);
                for ky in 0..s.k {
                    let iy = oy * s.stride + ky;
                    if iy < s.pad || iy - s.pad >= s.h {
                        continue;
                    }
                    for kx in 0..s.k {
                        let ix = ox * s.stride + kx;
                        if ix < s.pad || ix - s.pad >= s.w {
                            continue;
                        }
                        let x = &input[((iy - s.pad) * s.w + ix - s.pad) * s.cin..][..s.cin];
                        let tap = &weight[(ky * s.k + kx) * gin * cout..][..gin * cout];
                        if s.depthwise {
                            for ((a, &v), &w) in acc.iter_mut().zip(x).zip(tap) {
                                *a += (i32::from(v) - zero) * i32::from(w as i8);
                            }
                        } else {
                            // Two input channels at a time: one pass over
                            // the accumulators for two products each.
                            let pairs = x.chunks_exact(2).zip(tap.chunks_exact(2 * cout));
                            for (v, rows) in pairs {
                                let (v0, v1) = (i32::from(v[0]) - zero, i32::from(v[1]) - zero);
                                let (r0, r1) = rows.split_at(cout);
                                match (v0 == 0, v1 == 0) {
                                    (true, true) => {}
                                    (false, true) => saxpy(acc, v0, r0),
                                    (true, false) => saxpy(acc, v1, r1),
                                    (false, false) if DSP => super::dsp::pair(acc, v0, v1, r0, r1),
                                    (false, false) => {
                                        for ((a, &w0), &w1) in acc.iter_mut().zip(r0).zip(r1) {
                                            *a +=
                                                v0 * i32::from(w0 as i8) + v1 * i32::from(w1 as i8);
                                        }
                                    }
                                }
                            }
                            if s.cin % 2 == 1 {
                                let v = i32::from(x[s.cin - 1]) - zero;
                                if v != 0 {
                                    saxpy(acc, v, &tap[(s.cin - 1) * cout..]);
                                }
                            }
                        }
                    }
                }
                // Requantisation is monotone (M > 0): pooling the codes is
                // pooling the values.
                for ((o, &a), (&m, &shift)) in o
                    .iter_mut()
                    .zip(acc.iter())
                    .zip(mults.iter().zip(shifts.iter()))
                {
                    let r = Requant {
                        m: i64::from(m),
                        shift: shift as u32,
                    };
                    let code = (r.apply(a) + i64::from(q.out_zero)).clamp(lo, 255) as u8;
                    *o = (*o).max(code);
                }
            }
        }
    }
}

/// Whether the two-channel pass uses the DSP extension ([`super::dsp`]).
const DSP: bool = cfg!(all(target_arch = "arm", feature = "dsp"));

/// `acc += v · w` over int8 `w` (as bytes).
#[inline]
fn saxpy(acc: &mut [i32], v: i32, w: &[u8]) {
    for (a, &w) in acc.iter_mut().zip(w) {
        *a += v * i32::from(w as i8);
    }
}

/// `h × w × c` (channel last) into `c × h × w`.
pub fn to_channel_first(x: &[u8], (c, h, w): (usize, usize, usize), out: &mut [u8]) {
    for (p, px) in x.chunks_exact(c).take(h * w).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            out[ch * h * w + p] = v;
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
