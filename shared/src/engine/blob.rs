//! The model blob: an int8 encoder in one checksummed byte string that the
//! engine runs in place (no copy, no allocator).
//!
//! Layout (version 3, little-endian; every count and size is checked when
//! decoding):
//!
//! | size | field |
//! | --- | --- |
//! | 8 | magic `FSMCU\0\0\x03` (version 1 stored the weights otherwise, version 2 had no gallery thresholds) |
//! | 4 | total length in bytes, checksum included |
//! | 2, 2, 1, 1, 1, 1 | recipe: width, height, channels (1 or 3), resize (0 bilinear, 1 area), invert (0, 1), crop (0 none, 1 centre square, 2 aligned) |
//! | 40 | crop data, 10 × f32: the centre square's fraction, or the five template points `x, y` (zeros where unused) |
//! | 24 | mean 3 × f32, std 3 × f32 |
//! | 1, 1 | distance (0 l2, 1 cosine, 2 dot), reserved 0 |
//! | 4 | rejection threshold f32 (NaN: none) |
//! | 1, 64 | gallery thresholds: count (0 to 8), then 8 × (gallery size u32, threshold f32), increasing sizes, unused ones zero |
//! | 2 | embedding size |
//! | 4, 4 | arena bytes (twice the largest activation), i32 words (4 × the most output channels), as the engine computes them |
//! | 4, 1 | input scale f32, input zero point u8 |
//! | 1 | convolution layers `L` (1 to [`MAX_LAYERS`]) |
//! | L × … | each: `cout` u16, kernel u8, stride u8, pad u8, flags u8 (1 depthwise, 2 ReLU, 4 2×2 max pooling), output scale f32 and zero point u8, then `cout` weight scales f32, `cout` biases i32 (units of input × weight scale), the int8 weights `k × k × cin' × cout` (output channel last, the engine's loop order; `cin'` = 1 if depthwise) |
//! | 1 | output stage: 0 the last activations dequantized and flattened; 1 a linear layer |
//! | … | linear: `dim` u16, `dim` weight scales f32, `dim` biases f32, the int8 weights `dim × features` |
//! | 4 | CRC-32 (ISO-HDLC, as zlib) of every byte before it |

use crate::engine::ops::ConvShape;
use crate::error::BlobError;
use crate::openset::MAX_GALLERY_THRESHOLDS;
use crate::preprocess::{Crop, Recipe, Resize};
use crate::{Distance, FaceTemplate, GalleryThresholds};

/// First eight bytes of a model blob.
pub const MAGIC: [u8; 8] = *b"FSMCU\0\0\x03";
/// Most convolution layers a blob may hold.
pub const MAX_LAYERS: usize = 32;
/// Bytes before the first layer.
pub const HEADER_LEN: usize = 8 + 4 + 8 + 40 + 24 + 2 + 4 + 1 + 8 * GALLERY_POINT + 2 + 8 + 5 + 1;
/// Bytes of one gallery threshold point: size u32, threshold f32.
const GALLERY_POINT: usize = 8;
/// Largest side, channel count or output size a blob may declare.
pub const MAX_SIDE: usize = 4096;
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// An affine u8 quantization: `real = scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Affine {
    /// Step between neighbouring codes.
    pub scale: f32,
    /// The code of real zero.
    pub zero_point: u8,
}

/// One convolution layer of a decoded blob, borrowing its numbers.
#[derive(Debug, Clone, Copy)]
pub struct ConvLayer<'a> {
    /// Geometry (input side included).
    pub shape: ConvShape,
    /// ReLU after requantisation.
    pub relu: bool,
    /// 2×2 max pooling after it.
    pub pool: bool,
    /// The output's quantization.
    pub out: Affine,
    /// `cout` weight scales, f32 little-endian.
    pub weight_scale: &'a [u8],
    /// `cout` biases, i32 little-endian.
    pub bias: &'a [u8],
    /// The int8 weights (as bytes), `k × k × cin' × cout`.
    pub weight: &'a [u8],
}

impl ConvLayer<'_> {
    /// Output `(channels, height, width)` after pooling.
    pub fn out_dims(&self) -> (usize, usize, usize) {
        let (oh, ow) = (
            self.shape.out_h().unwrap_or(0),
            self.shape.out_w().unwrap_or(0),
        );
        if self.pool {
            (self.shape.cout, oh / 2, ow / 2)
        } else {
            (self.shape.cout, oh, ow)
        }
    }
}

/// The output stage of a decoded blob.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// The last activations, dequantized, flattened (`C·H·W` values).
    Flatten,
    /// A linear layer on the flattened activations.
    Linear {
        /// Output size.
        dim: usize,
        /// `dim` weight scales, f32 little-endian.
        weight_scale: &'a [u8],
        /// `dim` biases, f32 little-endian.
        bias: &'a [u8],
        /// `dim × features` int8 weights (as bytes).
        weight: &'a [u8],
    },
}

/// What a blob says about itself besides its layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    /// How frames become the engine's input.
    pub recipe: Recipe,
    /// The embedding distance the model was trained with.
    pub distance: Distance,
    /// Recommended rejection threshold, if one was calibrated.
    pub threshold: Option<f32>,
    /// Thresholds for galleries of several sizes, if calibrated.
    pub gallery_thresholds: Option<GalleryThresholds>,
    /// Embedding size.
    pub embedding: usize,
    /// Bytes of activations the engine needs ([`crate::engine::Arena`]).
    pub arena_bytes: usize,
    /// i32 accumulators the engine needs.
    pub accumulator_words: usize,
    /// The input's quantization.
    pub input: Affine,
}

/// Reads fields in order, refusing to run past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], BlobError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(BlobError::Truncated { field })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, BlobError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, BlobError> {
        let b = self.take(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, BlobError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self, field: &'static str) -> Result<f32, BlobError> {
        Ok(f32::from_bits(self.u32(field)?))
    }
    /// A finite f32 `> 0`.
    fn scale(&mut self, field: &'static str) -> Result<f32, BlobError> {
        let v = self.f32(field)?;
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(BlobError::Invalid {
                field,
                expected: "a finite scale > 0",
            })
        }
    }
    /// `n` f32 scales, each checked, as their bytes.
    fn scales(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], BlobError> {
        let b = self.take(
            n.checked_mul(4).ok_or(BlobError::Truncated { field })?,
            field,
        )?;
        let mut r = Reader { bytes: b, at: 0 };
        for _ in 0..n {
            r.scale(field)?;
        }
        Ok(b)
    }
    /// `n` finite f32 values, as their bytes.
    fn finite(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], BlobError> {
        let b = self.take(
            n.checked_mul(4).ok_or(BlobError::Truncated { field })?,
            field,
        )?;
        if b.chunks_exact(4)
            .any(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
        {
            return Err(BlobError::Invalid {
                field,
                expected: "finite numbers",
            });
        }
        Ok(b)
    }
}

fn invalid(field: &'static str, expected: &'static str) -> BlobError {
    BlobError::Invalid { field, expected }
}

/// A size field in `1..=MAX_SIDE`.
fn side(v: usize, field: &'static str) -> Result<usize, BlobError> {
    if (1..=MAX_SIDE).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(field, "a size from 1 to 4096"))
    }
}

/// Largest activation (values) a blob may need: 256 MiB.
const MAX_VOLUME: usize = 1 << 28;

/// `c · h · w`, refused above [`MAX_VOLUME`] (so no size overflows, even in
/// 32-bit arithmetic).
fn volume(c: usize, h: usize, w: usize) -> Result<usize, BlobError> {
    c.checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .filter(|&v| v <= MAX_VOLUME)
        .ok_or(invalid(
            "layer channels",
            "activations of at most 2^28 values",
        ))
}

/// Whether `bias + Σ w · (x − zero)` stays within i32 for every input: each
/// `|x − zero|` is at most 255.
fn fits_i32<'a>(weights: impl Iterator<Item = &'a u8>, bias: i64) -> bool {
    let sum: i64 = weights.map(|&w| i64::from((w as i8).unsigned_abs())).sum();
    sum * 255 + bias.abs() <= i64::from(i32::MAX)
}

/// A decoded blob: header, layers and output stage, borrowing `bytes`.
pub(crate) struct Decoded<'a> {
    pub header: Header,
    pub layers: heapless::Vec<ConvLayer<'a>, MAX_LAYERS>,
    pub output: Output<'a>,
}

/// Checks every field of `bytes` and returns what they describe.
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded<'_>, BlobError> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(BlobError::Length {
            expected: HEADER_LEN + 4,
            found: bytes.len(),
        });
    }
    if bytes[..8] != MAGIC {
        return Err(BlobError::BadMagic);
    }
    let mut r = Reader { bytes, at: 8 };
    let total = r.u32("total length")? as usize;
    if total != bytes.len() {
        return Err(BlobError::Length {
            expected: total,
            found: bytes.len(),
        });
    }
    let body = &bytes[..total - 4];
    let stored = u32::from_le_bytes([
        bytes[total - 4],
        bytes[total - 3],
        bytes[total - 2],
        bytes[total - 1],
    ]);
    let computed = CRC32.checksum(body);
    if stored != computed {
        return Err(BlobError::Checksum { stored, computed });
    }
    let mut r = Reader {
        bytes: body,
        at: 12,
    };
    let width = side(r.u16("recipe width")? as usize, "recipe width")?;
    let height = side(r.u16("recipe height")? as usize, "recipe height")?;
    let channels = r.u8("recipe channels")? as usize;
    if channels != 1 && channels != 3 {
        return Err(invalid("recipe channels", "1 or 3"));
    }
    let resize = match r.u8("recipe resize")? {
        0 => Resize::Bilinear,
        1 => Resize::Area,
        _ => return Err(invalid("recipe resize", "0 (bilinear) or 1 (area)")),
    };
    let invert = match r.u8("recipe invert")? {
        0 => false,
        1 => true,
        _ => return Err(invalid("recipe invert", "0 or 1")),
    };
    let crop_kind = r.u8("recipe crop")?;
    let mut crop_data = [0f32; 10];
    for v in &mut crop_data {
        *v = r.f32("recipe crop data")?;
        if !v.is_finite() {
            return Err(invalid("recipe crop data", "finite numbers"));
        }
    }
    let crop = match crop_kind {
        0 => Crop::None,
        1 if crop_data[0] > 0.0 && crop_data[0] <= 1.0 => Crop::CenterSquare(crop_data[0]),
        1 => return Err(invalid("recipe crop data", "a fraction in (0, 1]")),
        2 => {
            let mut points = [[0f32; 2]; 5];
            for (i, p) in points.iter_mut().enumerate() {
                *p = [crop_data[2 * i], crop_data[2 * i + 1]];
            }
            Crop::Aligned(FaceTemplate { points })
        }
        _ => {
            return Err(invalid(
                "recipe crop",
                "0 (none), 1 (centre) or 2 (aligned)",
            ))
        }
    };
    let mut mean = [0f32; 3];
    for v in &mut mean {
        *v = r.f32("recipe mean")?;
        if !v.is_finite() {
            return Err(invalid("recipe mean", "finite numbers"));
        }
    }
    let mut std = [0f32; 3];
    for v in &mut std {
        *v = r.scale("recipe std")?;
    }
    let distance = match r.u8("distance")? {
        0 => Distance::L2,
        1 => Distance::Cosine,
        2 => Distance::Dot,
        _ => return Err(invalid("distance", "0 (l2), 1 (cosine) or 2 (dot)")),
    };
    if r.u8("reserved")? != 0 {
        return Err(invalid("reserved", "0"));
    }
    let threshold = match r.f32("threshold")? {
        t if t.is_nan() => None,
        t if t.is_finite() => Some(t),
        _ => return Err(invalid("threshold", "a finite number or NaN (none)")),
    };
    let points = r.u8("gallery thresholds")? as usize;
    if points > MAX_GALLERY_THRESHOLDS {
        return Err(invalid("gallery thresholds", "0 to 8 points"));
    }
    let mut pairs = [(0usize, 0f32); MAX_GALLERY_THRESHOLDS];
    for (i, pair) in pairs.iter_mut().enumerate() {
        let (size, t) = (r.u32("gallery thresholds")?, r.f32("gallery thresholds")?);
        if i >= points && (size != 0 || t.to_bits() != 0) {
            return Err(invalid("gallery thresholds", "unused points zero"));
        }
        *pair = (size as usize, t);
    }
    let gallery_thresholds = match points {
        0 => None,
        n => Some(GalleryThresholds::new(&pairs[..n]).map_err(|_| {
            invalid(
                "gallery thresholds",
                "increasing gallery sizes from 1 with finite thresholds",
            )
        })?),
    };
    let embedding = side(r.u16("embedding size")? as usize, "embedding size")?;
    let arena_bytes = r.u32("arena bytes")? as usize;
    let accumulator_words = r.u32("accumulator words")? as usize;
    let input = Affine {
        scale: r.scale("input scale")?,
        zero_point: r.u8("input zero point")?,
    };
    let count = r.u8("layer count")? as usize;
    if count == 0 || count > MAX_LAYERS {
        return Err(invalid("layer count", "1 to 32 layers"));
    }
    let recipe = Recipe {
        width,
        height,
        channels,
        crop,
        resize,
        invert,
        mean,
        std,
    };
    let mut layers = heapless::Vec::new();
    let (mut c, mut h, mut w) = (channels, height, width);
    let (mut max_act, mut max_acc) = (volume(c, h, w)?, 0usize);
    for _ in 0..count {
        let cout = side(r.u16("layer channels")? as usize, "layer channels")?;
        let k = r.u8("layer kernel")? as usize;
        let stride = r.u8("layer stride")? as usize;
        let pad = r.u8("layer padding")? as usize;
        let flags = r.u8("layer flags")?;
        if !(1..=11).contains(&k) {
            return Err(invalid("layer kernel", "a side from 1 to 11"));
        }
        if !(1..=4).contains(&stride) {
            return Err(invalid("layer stride", "1 to 4"));
        }
        if pad >= k {
            return Err(invalid("layer padding", "less than the kernel side"));
        }
        if flags & !7 != 0 {
            return Err(invalid("layer flags", "bits 1, 2 and 4 only"));
        }
        let depthwise = flags & 1 != 0;
        if depthwise && cout != c {
            return Err(invalid(
                "layer channels",
                "a depthwise layer's output channels equal to its input channels",
            ));
        }
        let shape = ConvShape {
            cin: c,
            h,
            w,
            cout,
            k,
            stride,
            pad,
            depthwise,
        };
        let (Some(oh), Some(ow)) = (shape.out_h(), shape.out_w()) else {
            return Err(invalid("layer kernel", "a kernel that fits its input"));
        };
        let pool = flags & 4 != 0;
        if pool && (oh < 2 || ow < 2) {
            return Err(invalid(
                "layer flags",
                "pooling on an output of 2×2 or more",
            ));
        }
        let out = Affine {
            scale: r.scale("layer output scale")?,
            zero_point: r.u8("layer output zero point")?,
        };
        let weight_scale = r.scales(cout, "layer weight scales")?;
        let bias = r.take(4 * cout, "layer biases")?;
        let n_weights = cout * shape.group_in() * k * k;
        let weight = r.take(n_weights, "layer weights")?;
        for ch in 0..cout {
            let bias = i64::from(crate::engine::ops::i32_at(bias, ch));
            let column = weight.iter().skip(ch).step_by(cout);
            if !fits_i32(column, bias) {
                return Err(invalid(
                    "layer weights",
                    "sums that cannot overflow the i32 accumulator",
                ));
            }
        }
        let layer = ConvLayer {
            shape,
            relu: flags & 2 != 0,
            pool,
            out,
            weight_scale,
            bias,
            weight,
        };
        // Each channel's requantisation must be representable.
        let in_scale = layers
            .last()
            .map(|l: &ConvLayer<'_>| l.out.scale)
            .unwrap_or(input.scale);
        for ch in 0..cout {
            let real = f64::from(in_scale)
                * f64::from(crate::engine::ops::f32_at(weight_scale, ch))
                / f64::from(out.scale);
            if crate::engine::ops::Requant::new(real).is_none() {
                return Err(invalid(
                    "layer scales",
                    "input × weight / output scale below 2^31",
                ));
            }
        }
        (c, h, w) = layer.out_dims();
        let size = volume(c, h, w)?;
        if size == 0 {
            return Err(invalid("layer flags", "a non-empty output"));
        }
        max_act = max_act.max(size);
        max_acc = max_acc.max(crate::engine::ops::conv_words(cout));
        // MAX_LAYERS bounds the loop, so the push cannot fail.
        layers
            .push(layer)
            .map_err(|_| invalid("layer count", "1 to 32 layers"))?;
    }
    let features = volume(c, h, w)?;
    let output = match r.u8("output stage")? {
        0 => {
            if features != embedding {
                return Err(invalid(
                    "embedding size",
                    "the last layer's flattened size (no linear layer)",
                ));
            }
            Output::Flatten
        }
        1 => {
            let dim = side(r.u16("linear size")? as usize, "linear size")?;
            if dim != embedding {
                return Err(invalid("linear size", "the embedding size"));
            }
            let weight_scale = r.scales(dim, "linear weight scales")?;
            let bias = r.finite(dim, "linear biases")?;
            let weight = r.take(
                dim.checked_mul(features).ok_or(BlobError::Truncated {
                    field: "linear weights",
                })?,
                "linear weights",
            )?;
            if weight.chunks(features).any(|row| !fits_i32(row.iter(), 0)) {
                return Err(invalid(
                    "linear weights",
                    "sums that cannot overflow the i32 accumulator",
                ));
            }
            Output::Linear {
                dim,
                weight_scale,
                bias,
                weight,
            }
        }
        _ => return Err(invalid("output stage", "0 (flatten) or 1 (linear)")),
    };
    if r.at != body.len() {
        return Err(invalid("total length", "no bytes after the output stage"));
    }
    if Some(arena_bytes) != max_act.checked_mul(2) || accumulator_words != max_acc {
        return Err(invalid(
            "arena bytes",
            "the sizes the engine computes from the layers",
        ));
    }
    Ok(Decoded {
        header: Header {
            recipe,
            distance,
            threshold,
            gallery_thresholds,
            embedding,
            arena_bytes,
            accumulator_words,
            input,
        },
        layers,
        output,
    })
}

/// Offset of the threshold field, and of the gallery thresholds after it.
const THRESHOLD_AT: usize = 86;
const GALLERY_AT: usize = THRESHOLD_AT + 4;

/// The gallery-threshold field for `points`.
fn gallery_field(points: Option<&GalleryThresholds>) -> [u8; 1 + 8 * GALLERY_POINT] {
    let mut field = [0u8; 1 + 8 * GALLERY_POINT];
    if let Some(points) = points {
        for (i, (size, t)) in points.points().enumerate() {
            field[0] = i as u8 + 1;
            let at = 1 + i * GALLERY_POINT;
            field[at..at + 4].copy_from_slice(&(size as u32).to_le_bytes());
            field[at + 4..at + 8].copy_from_slice(&t.to_le_bytes());
        }
    }
    field
}

/// Sets the rejection threshold (`None`: none) and the gallery thresholds
/// (`None`: none) of the blob `bytes` in place and reseals its checksum. The
/// blob is checked first.
pub fn set_thresholds(
    bytes: &mut [u8],
    threshold: Option<f32>,
    gallery: Option<&GalleryThresholds>,
) -> Result<(), BlobError> {
    if threshold.is_some_and(|t| !t.is_finite()) {
        return Err(invalid("threshold", "a finite number or NaN (none)"));
    }
    decode(bytes)?;
    let n = bytes.len();
    bytes[THRESHOLD_AT..THRESHOLD_AT + 4]
        .copy_from_slice(&threshold.unwrap_or(f32::NAN).to_le_bytes());
    let field = gallery_field(gallery);
    bytes[GALLERY_AT..GALLERY_AT + field.len()].copy_from_slice(&field);
    let crc = CRC32.checksum(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

#[cfg(feature = "alloc")]
pub use encode::{encode, LayerSpec, OutputSpec, Spec};

#[cfg(feature = "alloc")]
mod encode {
    use alloc::vec::Vec;

    use super::*;

    /// One convolution layer to encode.
    #[derive(Debug, Clone)]
    pub struct LayerSpec {
        /// Output channels.
        pub cout: usize,
        /// Kernel side.
        pub k: usize,
        /// Stride.
        pub stride: usize,
        /// Padding on every side.
        pub pad: usize,
        /// One input channel per output channel.
        pub depthwise: bool,
        /// ReLU after requantisation.
        pub relu: bool,
        /// 2×2 max pooling after it.
        pub pool: bool,
        /// The output's quantization.
        pub out: Affine,
        /// Weight scale of each output channel.
        pub weight_scale: Vec<f32>,
        /// Bias of each output channel in units of input scale × weight scale.
        pub bias: Vec<i32>,
        /// Int8 weights `cout × cin' × k × k` (ONNX's order; the blob stores
        /// them output channel last).
        pub weight: Vec<i8>,
    }

    /// The output stage to encode.
    #[derive(Debug, Clone)]
    pub enum OutputSpec {
        /// The last activations, dequantized and flattened.
        Flatten,
        /// A linear layer: `dim` rows of int8 weights, a scale and an f32 bias each.
        Linear {
            /// Output size.
            dim: usize,
            /// Scale of each row.
            weight_scale: Vec<f32>,
            /// Bias of each output.
            bias: Vec<f32>,
            /// `dim × features` int8 weights.
            weight: Vec<i8>,
        },
    }

    /// Everything a blob holds, to encode.
    #[derive(Debug, Clone)]
    pub struct Spec {
        /// How frames become the input.
        pub recipe: Recipe,
        /// Embedding distance.
        pub distance: Distance,
        /// Rejection threshold, if calibrated.
        pub threshold: Option<f32>,
        /// Thresholds for galleries of several sizes, if calibrated.
        pub gallery_thresholds: Option<GalleryThresholds>,
        /// Input quantization.
        pub input: Affine,
        /// Convolution layers.
        pub layers: Vec<LayerSpec>,
        /// Output stage.
        pub output: OutputSpec,
    }

    /// Encodes `spec` and checks the result by decoding it (so a spec the
    /// engine cannot run is an error here, not on the device).
    pub fn encode(spec: &Spec) -> Result<Vec<u8>, BlobError> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[0; 4]); // total length, below
        let r = &spec.recipe;
        let u16_of = |v: usize, field: &'static str| {
            u16::try_from(v).map_err(|_| invalid(field, "a size from 1 to 4096"))
        };
        out.extend_from_slice(&u16_of(r.width, "recipe width")?.to_le_bytes());
        out.extend_from_slice(&u16_of(r.height, "recipe height")?.to_le_bytes());
        out.push(r.channels as u8);
        out.push(match r.resize {
            Resize::Bilinear => 0,
            Resize::Area => 1,
        });
        out.push(u8::from(r.invert));
        let mut crop = [0f32; 10];
        out.push(match r.crop {
            Crop::None => 0,
            Crop::CenterSquare(f) => {
                crop[0] = f;
                1
            }
            Crop::Aligned(t) => {
                for (i, p) in t.points.iter().enumerate() {
                    crop[2 * i] = p[0];
                    crop[2 * i + 1] = p[1];
                }
                2
            }
        });
        for v in crop.iter().chain(&r.mean).chain(&r.std) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(match spec.distance {
            Distance::L2 => 0,
            Distance::Cosine => 1,
            Distance::Dot => 2,
        });
        out.push(0);
        out.extend_from_slice(&spec.threshold.unwrap_or(f32::NAN).to_le_bytes());
        out.extend_from_slice(&gallery_field(spec.gallery_thresholds.as_ref()));
        let embedding_at = out.len();
        out.extend_from_slice(&[0; 2 + 4 + 4]); // embedding, arena, accumulators: below
        out.extend_from_slice(&spec.input.scale.to_le_bytes());
        out.push(spec.input.zero_point);
        out.push(
            u8::try_from(spec.layers.len())
                .map_err(|_| invalid("layer count", "1 to 32 layers"))?,
        );
        let (mut c, mut h, mut w) = (r.channels, r.height, r.width);
        let (mut max_act, mut max_acc) = (c * h * w, 0usize);
        for l in &spec.layers {
            let shape = ConvShape {
                cin: c,
                h,
                w,
                cout: l.cout,
                k: l.k,
                stride: l.stride,
                pad: l.pad,
                depthwise: l.depthwise,
            };
            let (Some(oh), Some(ow)) = (shape.out_h(), shape.out_w()) else {
                return Err(invalid("layer kernel", "a kernel that fits its input"));
            };
            let n_weights = l.cout * shape.group_in() * l.k * l.k;
            if l.weight.len() != n_weights
                || l.weight_scale.len() != l.cout
                || l.bias.len() != l.cout
            {
                return Err(invalid(
                    "layer weights",
                    "cout scales, biases and cout × cin' × k × k weights",
                ));
            }
            out.extend_from_slice(&u16_of(l.cout, "layer channels")?.to_le_bytes());
            for v in [l.k, l.stride, l.pad] {
                out.push(u8::try_from(v).map_err(|_| invalid("layer kernel", "sizes below 256"))?);
            }
            out.push(u8::from(l.depthwise) | u8::from(l.relu) << 1 | u8::from(l.pool) << 2);
            out.extend_from_slice(&l.out.scale.to_le_bytes());
            out.push(l.out.zero_point);
            for s in &l.weight_scale {
                out.extend_from_slice(&s.to_le_bytes());
            }
            for b in &l.bias {
                out.extend_from_slice(&b.to_le_bytes());
            }
            // Given `cout × cin' × k × k` (ONNX's order), stored output channel last.
            let gin = shape.group_in();
            for t in 0..l.k * l.k {
                for ic in 0..gin {
                    for oc in 0..l.cout {
                        out.push(l.weight[(oc * gin + ic) * l.k * l.k + t] as u8);
                    }
                }
            }
            (c, h, w) = if l.pool {
                (l.cout, oh / 2, ow / 2)
            } else {
                (l.cout, oh, ow)
            };
            max_act = max_act.max(c * h * w);
            max_acc = max_acc.max(crate::engine::ops::conv_words(l.cout));
        }
        let embedding = match &spec.output {
            OutputSpec::Flatten => {
                out.push(0);
                c * h * w
            }
            OutputSpec::Linear {
                dim,
                weight_scale,
                bias,
                weight,
            } => {
                if weight_scale.len() != *dim
                    || bias.len() != *dim
                    || weight.len() != dim * c * h * w
                {
                    return Err(invalid(
                        "linear weights",
                        "dim scales, biases and dim × features weights",
                    ));
                }
                out.push(1);
                out.extend_from_slice(&u16_of(*dim, "linear size")?.to_le_bytes());
                for v in weight_scale.iter().chain(bias) {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend(weight.iter().map(|&v| v as u8));
                *dim
            }
        };
        out[embedding_at..embedding_at + 2]
            .copy_from_slice(&u16_of(embedding, "embedding size")?.to_le_bytes());
        let arena =
            u32::try_from(2 * max_act).map_err(|_| invalid("arena bytes", "below 4 GiB"))?;
        out[embedding_at + 2..embedding_at + 6].copy_from_slice(&arena.to_le_bytes());
        out[embedding_at + 6..embedding_at + 10].copy_from_slice(&(max_acc as u32).to_le_bytes());
        let total =
            u32::try_from(out.len() + 4).map_err(|_| invalid("total length", "below 4 GiB"))?;
        out[8..12].copy_from_slice(&total.to_le_bytes());
        let crc = CRC32.checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        decode(&out)?;
        Ok(out)
    }
}
