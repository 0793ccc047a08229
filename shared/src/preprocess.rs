//! Image preprocessing on pixel buffers: one definition for training and device.
//!
//! A [`Frame`] (8-bit grey or RGB, row-major) becomes a CHW `f32` tensor by:
//! colour conversion (RGB to grey with the ITU-R BT.601 weights, or grey
//! replicated to RGB), an optional centred square crop, resizing (bilinear with
//! half-pixel centres, or exact area averaging) — or, for face models, the warp
//! of the frame that puts five detected landmarks onto a template
//! ([`Crop::Aligned`], [`Recipe::apply_aligned`]) — scaling to `[0, 1]`, optional
//! inversion (`1 - v`, so Omniglot's black strokes become 1), and per-channel
//! normalisation `(v - mean) / std`. Nothing is allocated.

use crate::align::{supersampling, FaceTemplate, Landmarks, Similarity};
use crate::error::PreprocessError;

/// Layout of a frame's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PixelFormat {
    /// One byte per pixel.
    Gray8,
    /// Three bytes per pixel, R G B.
    Rgb8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Gray8 => 1,
            PixelFormat::Rgb8 => 3,
        }
    }
}

/// A borrowed image: `width × height` pixels, rows top to bottom.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixel layout.
    pub format: PixelFormat,
    /// `width × height × bytes_per_pixel` bytes.
    pub pixels: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A frame, checked: the buffer must hold exactly `width × height` pixels.
    pub fn new(
        width: usize,
        height: usize,
        format: PixelFormat,
        pixels: &'a [u8],
    ) -> Result<Self, PreprocessError> {
        let expected = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(format.bytes_per_pixel()))
            .unwrap_or(usize::MAX);
        if width == 0 || height == 0 {
            return Err(PreprocessError::EmptyFrame);
        }
        if pixels.len() != expected {
            return Err(PreprocessError::FrameSize {
                expected,
                found: pixels.len(),
            });
        }
        Ok(Frame {
            width,
            height,
            format,
            pixels,
        })
    }
}

/// How the frame is cropped before resizing.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Crop {
    /// Use the whole frame (the aspect ratio follows the output size).
    None,
    /// The centred square whose side is this fraction (0, 1] of the frame's shorter side.
    CenterSquare(f32),
    /// A face, aligned: the frame is warped by the similarity that takes the
    /// face's five landmarks onto this template scaled to the output size
    /// (bilinear; with [`Resize::Area`], averaged over several samples per
    /// output pixel when the face is shrunk). Needs the landmarks:
    /// [`Recipe::apply_aligned`].
    Aligned(FaceTemplate),
}

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Resize {
    /// Bilinear interpolation with half-pixel centres (no antialiasing).
    Bilinear,
    /// Exact average over each output pixel's footprint (box filter with fractional edges).
    Area,
}

/// Everything that turns a frame into an encoder input.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Recipe {
    /// Output width.
    pub width: usize,
    /// Output height.
    pub height: usize,
    /// Output channels: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Crop before resizing.
    pub crop: Crop,
    /// Resampling filter.
    pub resize: Resize,
    /// Replace `v` by `1 - v` after scaling to `[0, 1]`.
    pub invert: bool,
    /// Per-channel mean subtracted (only the first `channels` are used).
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
}

impl Recipe {
    /// Omniglot as in the few-shot literature: 28×28 grey, area resize, strokes = 1.
    pub const OMNIGLOT_28: Recipe = Recipe {
        width: 28,
        height: 28,
        channels: 1,
        crop: Crop::None,
        resize: Resize::Area,
        invert: true,
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Values in the output tensor (`channels × height × width`).
    pub const fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the output is empty (never, for a valid recipe).
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the recipe's own values.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        if self.width == 0 || self.height == 0 {
            return Err(PreprocessError::BadRecipe("output size must be positive"));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(PreprocessError::BadRecipe("channels must be 1 or 3"));
        }
        match self.crop {
            Crop::CenterSquare(f) if !(f > 0.0 && f <= 1.0) => {
                return Err(PreprocessError::BadRecipe(
                    "crop fraction must be in (0, 1]",
                ));
            }
            Crop::Aligned(t) if !t.is_valid() => {
                return Err(PreprocessError::BadRecipe(
                    "face template must be finite with distinct points",
                ));
            }
            _ => {}
        }
        if self.std[..self.channels]
            .iter()
            .any(|s| !(s.is_finite() && *s != 0.0))
            || self.mean[..self.channels].iter().any(|m| !m.is_finite())
        {
            return Err(PreprocessError::BadRecipe(
                "mean must be finite and std finite and non-zero",
            ));
        }
        Ok(())
    }

    /// Whether the recipe aligns faces, so needs each frame's landmarks.
    pub fn needs_landmarks(&self) -> bool {
        matches!(self.crop, Crop::Aligned(_))
    }

    /// Checks the recipe, the frame and the output buffer; the frame, re-checked.
    fn check<'a>(&self, frame: &Frame<'a>, out: &[f32]) -> Result<Frame<'a>, PreprocessError> {
        self.validate()?;
        let frame = Frame::new(frame.width, frame.height, frame.format, frame.pixels)?;
        if out.len() != self.len() {
            return Err(PreprocessError::OutputSize {
                expected: self.len(),
                found: out.len(),
            });
        }
        Ok(frame)
    }

    /// Preprocesses `frame` into `out` (`channels × height × width`, CHW).
    /// An aligning recipe needs the face's landmarks: [`Recipe::apply_aligned`].
    pub fn apply(&self, frame: &Frame<'_>, out: &mut [f32]) -> Result<(), PreprocessError> {
        let frame = &self.check(frame, out)?;
        if self.needs_landmarks() {
            return Err(PreprocessError::NeedsLandmarks);
        }
        let (x0, y0, cw, ch) = self.crop_box(frame);
        let sx = cw as f32 / self.width as f32;
        let sy = ch as f32 / self.height as f32;
        self.fill(frame, out, |src, ox, oy| match self.resize {
            Resize::Bilinear => bilinear(src, x0, cw, sx, ox, y0, ch, sy, oy),
            Resize::Area => area(
                src,
                (x0 as f32 + ox as f32 * sx, sx, x0 + cw),
                (y0 as f32 + oy as f32 * sy, sy, y0 + ch),
            ),
        });
        Ok(())
    }

    /// Writes every output value: `value(source, x, y)` in `[0, 1]` for each
    /// channel's source, then inversion and normalisation.
    fn fill(
        &self,
        frame: &Frame<'_>,
        out: &mut [f32],
        value: impl Fn(&Source<'_, '_>, usize, usize) -> f32,
    ) {
        let plane = self.width * self.height;
        for c in 0..self.channels {
            let src = Source {
                frame,
                channel: c,
                gray: self.channels == 1,
            };
            for oy in 0..self.height {
                for ox in 0..self.width {
                    out[c * plane + oy * self.width + ox] = self.finish(c, value(&src, ox, oy));
                }
            }
        }
    }

    /// Preprocesses the face whose five `landmarks` (frame pixels) are given:
    /// with an aligning recipe, the frame warped onto the template; with any
    /// other recipe the landmarks are not needed and this is [`Recipe::apply`].
    pub fn apply_aligned(
        &self,
        frame: &Frame<'_>,
        landmarks: &Landmarks,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        self.apply_aligned_in(frame, landmarks, out, &mut [])
    }

    /// [`Recipe::apply_aligned`] with scratch memory: each channel's values
    /// under the face are converted once into `plane`, so the warp's samples
    /// (up to 64 per output pixel, four taps each) read floats instead of
    /// converting pixels again. The output is the same, bit for bit. A
    /// `plane` shorter than [`Recipe::aligned_plane_len`] is not used.
    pub fn apply_aligned_in(
        &self,
        frame: &Frame<'_>,
        landmarks: &Landmarks,
        out: &mut [f32],
        plane: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let Crop::Aligned(template) = self.crop else {
            return self.apply(frame, out);
        };
        let frame = &self.check(frame, out)?;
        let warp = Warp::new(self, &template, landmarks)?;
        let region = warp.region(frame);
        let mut plane = plane.get_mut(..region.width * region.height);
        let size = self.width * self.height;
        let gray = self.channels == 1;
        for (channel, out) in out.chunks_exact_mut(size).enumerate() {
            let src = Source {
                frame,
                channel,
                gray,
            };
            match plane {
                Some(ref mut values) => {
                    region.read(&src, values);
                    let grid = Grid {
                        region,
                        values: &values[..],
                    };
                    warp.run(out, |x, y| {
                        grid.sample(x, y).unwrap_or_else(|| sample(&src, x, y))
                    });
                }
                None => warp.run(out, |x, y| sample(&src, x, y)),
            }
            for v in out.iter_mut() {
                *v = self.finish(channel, *v);
            }
        }
        Ok(())
    }

    /// How many values [`Recipe::apply_aligned_in`] needs in its `plane` for
    /// this face in this frame (0 for a recipe that does not align).
    pub fn aligned_plane_len(
        &self,
        frame: &Frame<'_>,
        landmarks: &Landmarks,
    ) -> Result<usize, PreprocessError> {
        let Crop::Aligned(template) = self.crop else {
            return Ok(0);
        };
        let region = Warp::new(self, &template, landmarks)?.region(frame);
        Ok(region.width * region.height)
    }

    /// A value in `[0, 1]` of channel `c`, inverted and normalised as the
    /// recipe says.
    #[inline]
    fn finish(&self, c: usize, v: f32) -> f32 {
        let v = if self.invert { 1.0 - v } else { v };
        (v - self.mean[c]) / self.std[c]
    }

    /// The crop rectangle `(x, y, width, height)` in frame pixels (the whole
    /// frame for an aligned crop, whose region follows the landmarks).
    pub fn crop_box(&self, frame: &Frame<'_>) -> (usize, usize, usize, usize) {
        match self.crop {
            Crop::None | Crop::Aligned(_) => (0, 0, frame.width, frame.height),
            Crop::CenterSquare(f) => {
                let short = frame.width.min(frame.height);
                let side = (libm::roundf(f * short as f32) as usize).clamp(1, short);
                (
                    (frame.width - side) / 2,
                    (frame.height - side) / 2,
                    side,
                    side,
                )
            }
        }
    }
}

/// The serialisable form of a [`Recipe`], as stored in checkpoints and in
/// exported models' metadata: the crop is the centred square's fraction, or
/// `None` for the whole frame.
#[cfg(feature = "serde")]
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecipeSpec {
    /// Output width.
    pub width: usize,
    /// Output height.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Centred square crop as a fraction of the shorter side; `None` for the whole frame.
    pub crop: Option<f32>,
    /// For face models: the five-point template (in units of the output size)
    /// the face's landmarks are aligned onto; absent for a plain crop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub align: Option<Landmarks>,
    /// Resampling filter (`area` or `bilinear`).
    pub resize: Resize,
    /// Whether intensities are inverted.
    pub invert: bool,
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

#[cfg(feature = "serde")]
impl From<Recipe> for RecipeSpec {
    fn from(r: Recipe) -> Self {
        RecipeSpec {
            width: r.width,
            height: r.height,
            channels: r.channels,
            crop: match r.crop {
                Crop::None | Crop::Aligned(_) => None,
                Crop::CenterSquare(f) => Some(f),
            },
            align: match r.crop {
                Crop::Aligned(t) => Some(t.points),
                _ => None,
            },
            resize: r.resize,
            invert: r.invert,
            mean: r.mean,
            std: r.std,
        }
    }
}

#[cfg(feature = "serde")]
impl RecipeSpec {
    /// The recipe, validated.
    pub fn recipe(&self) -> Result<Recipe, PreprocessError> {
        let recipe = Recipe {
            width: self.width,
            height: self.height,
            channels: self.channels,
            crop: match (self.crop, self.align) {
                (None, None) => Crop::None,
                (Some(f), None) => Crop::CenterSquare(f),
                (None, Some(points)) => Crop::Aligned(FaceTemplate { points }),
                (Some(_), Some(_)) => {
                    return Err(PreprocessError::BadRecipe(
                        "a recipe has a centre crop or a face template, not both",
                    ))
                }
            },
            resize: self.resize,
            invert: self.invert,
            mean: self.mean,
            std: self.std,
        };
        recipe.validate()?;
        Ok(recipe)
    }
}

/// The warp of an aligned crop: where each output pixel's `n × n`
/// sub-samples fall in the frame.
struct Warp {
    /// Crop pixels to frame pixels.
    to_frame: Similarity,
    /// Output size.
    width: usize,
    height: usize,
    /// Sub-samples per axis.
    n: usize,
}

impl Warp {
    fn new(
        recipe: &Recipe,
        template: &FaceTemplate,
        landmarks: &Landmarks,
    ) -> Result<Warp, PreprocessError> {
        let to_crop = Similarity::aligning(landmarks, template, recipe.width, recipe.height)
            .ok_or(PreprocessError::BadLandmarks)?;
        let to_frame = to_crop.inverse().ok_or(PreprocessError::BadLandmarks)?;
        let n = match recipe.resize {
            Resize::Area => supersampling(to_frame.scale()),
            Resize::Bilinear => 1,
        };
        Ok(Warp {
            to_frame,
            width: recipe.width,
            height: recipe.height,
            n,
        })
    }

    /// Writes each output pixel's mean of `sample(x, y)` over its
    /// sub-samples (values in `[0, 1]`), row by row.
    #[inline]
    fn run(&self, out: &mut [f32], sample: impl Fn(f32, f32) -> f32) {
        let n = self.n;
        let step = 1.0 / n as f32;
        let weight = 1.0 / (n * n) as f32;
        // The frame points of an output pixel's n × n sub-samples: the
        // first, then steps along the output's x and y axes.
        let (a, b) = (self.to_frame.a * step, self.to_frame.b * step);
        for (oy, row) in out.chunks_exact_mut(self.width).enumerate() {
            for (ox, o) in row.iter_mut().enumerate() {
                let [x0, y0] = self
                    .to_frame
                    .apply([ox as f32 + 0.5 * step, oy as f32 + 0.5 * step]);
                let mut v = 0.0;
                for j in 0..n {
                    let jf = j as f32;
                    let (row_x, row_y) = (x0 - b * jf, y0 + a * jf);
                    for i in 0..n {
                        let f = i as f32;
                        v += sample(row_x + a * f, row_y + b * f);
                    }
                }
                *o = v * weight;
            }
        }
    }

    /// The frame pixels that the samples' taps can reach (the crop's
    /// corners in the frame, a pixel of margin for the taps and one for
    /// rounding), clipped to the frame; empty when the face is outside it.
    fn region(&self, frame: &Frame<'_>) -> Region {
        let (w, h) = (self.width as f32, self.height as f32);
        let corners = [[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]].map(|p| self.to_frame.apply(p));
        let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
        for p in corners {
            for k in 0..2 {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
        let span = |lo: f32, hi: f32, len: usize| -> (usize, usize) {
            if !(lo.is_finite() && hi.is_finite()) {
                return (0, 0);
            }
            let start = libm::floorf(lo - 2.0).clamp(0.0, len as f32) as usize;
            let end = (libm::floorf(hi + 2.0).clamp(0.0, len as f32) as usize).max(start);
            (start, end - start)
        };
        let (x0, width) = span(lo[0], hi[0], frame.width);
        let (y0, height) = span(lo[1], hi[1], frame.height);
        Region {
            x0,
            y0,
            width,
            height,
        }
    }
}

/// A rectangle of frame pixels.
#[derive(Clone, Copy)]
struct Region {
    x0: usize,
    y0: usize,
    width: usize,
    height: usize,
}

impl Region {
    /// Writes [`Source::value`] of every pixel of the region into `values`
    /// (row-major, `width × height`).
    fn read(&self, src: &Source<'_, '_>, values: &mut [f32]) {
        let bpp = src.frame.format.bytes_per_pixel();
        for (y, row) in values.chunks_exact_mut(self.width.max(1)).enumerate() {
            let start = bpp * ((self.y0 + y) * src.frame.width + self.x0);
            let bytes = &src.frame.pixels[start..start + bpp * self.width];
            for (v, px) in row.iter_mut().zip(bytes.chunks_exact(bpp)) {
                *v = src.value(px);
            }
        }
    }
}

/// A region's values (0-255), read once.
struct Grid<'v> {
    region: Region,
    values: &'v [f32],
}

impl Grid<'_> {
    /// [`sample`] at `(x, y)` when all four taps are inside the region (the
    /// same arithmetic, so the same value), else `None`.
    #[inline]
    fn sample(&self, x: f32, y: f32) -> Option<f32> {
        let (x0, y0, wx, wy) = tap_point(x, y);
        let r = &self.region;
        let (gx, gy) = (x0 - r.x0 as i64, y0 - r.y0 as i64);
        if gx < 0 || gy < 0 || gx + 1 >= r.width as i64 || gy + 1 >= r.height as i64 {
            return None;
        }
        let row = gy as usize * r.width + gx as usize;
        let next = row + r.width;
        // In bounds: gx + 1 < width and gy + 1 < height, and `values` holds
        // width × height values.
        let v = self.values;
        Some(bilerp([v[row], v[row + 1]], [v[next], v[next + 1]], wx, wy))
    }
}

/// Reads one channel of a frame as values in `[0, 1]`.
struct Source<'a, 'b> {
    frame: &'b Frame<'a>,
    channel: usize,
    gray: bool,
}

impl Source<'_, '_> {
    /// The value in `[0, 1]` of pixel `(x, y)`.
    #[inline]
    fn at(&self, x: usize, y: usize) -> f32 {
        let bpp = self.frame.format.bytes_per_pixel();
        let i = bpp * (y * self.frame.width + x);
        self.value(&self.frame.pixels[i..i + bpp]) * (1.0 / 255.0)
    }

    /// The value (0-255) of one pixel's bytes: grey, the grey of an RGB
    /// pixel, or one of its channels.
    #[inline]
    fn value(&self, px: &[u8]) -> f32 {
        match (self.frame.format, px) {
            (PixelFormat::Rgb8, [r, g, b, ..]) if self.gray => luma(*r, *g, *b),
            (PixelFormat::Rgb8, _) => f32::from(px[self.channel]),
            (PixelFormat::Gray8, _) => f32::from(px[0]),
        }
    }

    /// [`Source::value`] of two adjacent pixels from their bytes, matched
    /// whole (one bounds check: this is the warp's inner loop).
    #[inline]
    fn pair(&self, bytes: &[u8]) -> [f32; 2] {
        match (self.frame.format, bytes) {
            (PixelFormat::Rgb8, [r0, g0, b0, r1, g1, b1]) if self.gray => {
                [luma(*r0, *g0, *b0), luma(*r1, *g1, *b1)]
            }
            (PixelFormat::Rgb8, [..]) => [
                f32::from(bytes[self.channel]),
                f32::from(bytes[3 + self.channel]),
            ],
            (_, [a, b, ..]) => [f32::from(*a), f32::from(*b)],
            // Callers pass two whole pixels.
            _ => [0.0; 2],
        }
    }
}

/// Grey of an RGB pixel, ITU-R BT.601 weights (0-255).
#[inline]
fn luma(r: u8, g: u8, b: u8) -> f32 {
    0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)
}

/// Bilinear sample of `src` at the continuous point `(x, y)` (pixel centres
/// at half-integers); taps outside the frame read 0 (black).
#[inline]
fn sample(src: &Source<'_, '_>, x: f32, y: f32) -> f32 {
    let (x0, y0, wx, wy) = tap_point(x, y);
    let (w, h) = (src.frame.width as i64, src.frame.height as i64);
    if x0 >= 0 && y0 >= 0 && x0 + 1 < w && y0 + 1 < h {
        // All four taps inside: two rows of two pixels, no per-tap checks.
        let bpp = src.frame.format.bytes_per_pixel();
        let row = bpp * (y0 as usize * src.frame.width + x0 as usize);
        let next = row + bpp * src.frame.width;
        let pair = |i: usize| src.pair(&src.frame.pixels[i..i + 2 * bpp]);
        return bilerp(pair(row), pair(next), wx, wy);
    }
    let at = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            src.at(x as usize, y as usize)
        } else {
            0.0
        }
    };
    let top = at(x0, y0) * (1.0 - wx) + at(x0 + 1, y0) * wx;
    let bottom = at(x0, y0 + 1) * (1.0 - wx) + at(x0 + 1, y0 + 1) * wx;
    top * (1.0 - wy) + bottom * wy
}

/// The top-left tap `(x0, y0)` of a bilinear sample at the continuous point
/// `(x, y)` (pixel centres at half-integers) and the weights `(wx, wy)` of
/// the taps to its right and below.
#[inline]
fn tap_point(x: f32, y: f32) -> (i64, i64, f32, f32) {
    let (u, v) = (x - 0.5, y - 0.5);
    let (x0, y0) = (floor(u), floor(v));
    (x0, y0, u - x0 as f32, v - y0 as f32)
}

/// Bilinear interpolation of two rows of two tap values (0-255), scaled to
/// `[0, 1]`: the one formula of the warp's samples inside the frame.
#[inline]
fn bilerp(top: [f32; 2], bottom: [f32; 2], wx: f32, wy: f32) -> f32 {
    let pair = |[a, b]: [f32; 2]| a * (1.0 - wx) + b * wx;
    (pair(top) * (1.0 - wy) + pair(bottom) * wy) * (1.0 / 255.0)
}

/// `⌊v⌋`, saturating far outside the `i64` range (where any tap is outside
/// the frame anyway); NaN gives 0.
#[inline]
fn floor(v: f32) -> i64 {
    let t = v as i64;
    if (t as f32) > v {
        t - 1
    } else {
        t
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn bilinear(
    src: &Source<'_, '_>,
    x0: usize,
    cw: usize,
    sx: f32,
    ox: usize,
    y0: usize,
    ch: usize,
    sy: f32,
    oy: usize,
) -> f32 {
    let (xa, xb, fx) = taps(ox, sx, cw);
    let (ya, yb, fy) = taps(oy, sy, ch);
    let top = src.at(x0 + xa, y0 + ya) * (1.0 - fx) + src.at(x0 + xb, y0 + ya) * fx;
    let bottom = src.at(x0 + xa, y0 + yb) * (1.0 - fx) + src.at(x0 + xb, y0 + yb) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The two source indices and the weight of the second for output index `o`.
#[inline]
fn taps(o: usize, scale: f32, len: usize) -> (usize, usize, f32) {
    let s = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (len - 1) as f32);
    let a = libm::floorf(s) as usize;
    let b = (a + 1).min(len - 1);
    (a, b, s - a as f32)
}

/// Average of the source over `[x, x + w) × [y, y + h)`, each axis given as
/// `(start, length, end of the crop)`.
#[inline]
fn area(
    src: &Source<'_, '_>,
    (x, w, x_end): (f32, f32, usize),
    (y, h, y_end): (f32, f32, usize),
) -> f32 {
    let mut total = 0.0;
    let (ys, ye) = (libm::floorf(y) as usize, libm::ceilf(y + h) as usize);
    let (xs, xe) = (libm::floorf(x) as usize, libm::ceilf(x + w) as usize);
    let ye = ye.min(y_end);
    let xe = xe.min(x_end);
    for sy in ys..ye {
        let wy = (y + h).min(sy as f32 + 1.0) - y.max(sy as f32);
        if wy <= 0.0 {
            continue;
        }
        let mut row = 0.0;
        for sx in xs..xe {
            let wx = (x + w).min(sx as f32 + 1.0) - x.max(sx as f32);
            if wx > 0.0 {
                row += wx * src.at(sx, sy);
            }
        }
        total += wy * row;
    }
    total / (w * h)
}
