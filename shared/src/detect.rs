//! Face detection around a YuNet model, without an allocator: the frame
//! letterboxed into the model's input, the model's per-stride outputs decoded
//! into faces (box, score, five landmarks), and non-maximum suppression. The
//! model itself runs elsewhere (tract on a host or a Linux board).
//!
//! YuNet's outputs, per stride `s` of 8, 16 and 32 over an input of
//! `W × H` (multiples of 32), are one row per cell `(r, c)` of the
//! `W/s × H/s` grid, row-major: `cls` and `obj` scores, `bbox` offsets
//! `(dx, dy, log w, log h)` and `kps`, five `(dx, dy)` landmark offsets, all in
//! units of `s` from the cell's corner `(c·s, r·s)`. A cell's score is
//! `√(cls · obj)` with both clamped to `[0, 1]`.

use crate::align::Landmarks;
use crate::error::{DetectError, PreprocessError};
use crate::preprocess::Frame;

/// A detected face, in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Face {
    /// Box: left, top, width, height.
    pub bbox: [f32; 4],
    /// Detection score in `[0, 1]`.
    pub score: f32,
    /// Eyes, nose tip, mouth corners ([`Landmarks`]' order).
    pub landmarks: Landmarks,
}

impl Face {
    /// The box's area.
    pub fn area(&self) -> f32 {
        self.bbox[2].max(0.0) * self.bbox[3].max(0.0)
    }

    /// Distance between the two eyes, in pixels.
    pub fn eye_distance(&self) -> f32 {
        let [a, b] = [self.landmarks[0], self.landmarks[1]];
        libm::hypotf(a[0] - b[0], a[1] - b[1])
    }

    /// Intersection over union of the two boxes.
    pub fn iou(&self, other: &Face) -> f32 {
        let [ax, ay, aw, ah] = self.bbox;
        let [bx, by, bw, bh] = other.bbox;
        let iw = ((ax + aw).min(bx + bw) - ax.max(bx)).max(0.0);
        let ih = ((ay + ah).min(by + bh) - ay.max(by)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    /// The face mapped from the model's input back to the frame.
    fn to_frame(mut self, lb: &Letterbox) -> Face {
        for v in &mut self.bbox {
            *v /= lb.scale;
        }
        self.bbox[0] += lb.x0;
        self.bbox[1] += lb.y0;
        for p in &mut self.landmarks {
            p[0] = p[0] / lb.scale + lb.x0;
            p[1] = p[1] / lb.scale + lb.y0;
        }
        self
    }

    /// The centre of its box.
    pub fn centre(&self) -> [f32; 2] {
        [
            self.bbox[0] + self.bbox[2] / 2.0,
            self.bbox[1] + self.bbox[3] / 2.0,
        ]
    }
}

/// How a frame, or a rectangle of it, was fitted into the model's input:
/// resized by `scale` (keeping its aspect ratio) into the top-left corner,
/// the rest black (as is any part of the rectangle outside the frame).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Letterbox {
    /// Left edge of the rectangle in the frame.
    pub x0: f32,
    /// Top edge of the rectangle in the frame.
    pub y0: f32,
    /// Model input width.
    pub width: usize,
    /// Model input height.
    pub height: usize,
    /// Input pixels per frame pixel.
    pub scale: f32,
    /// The resized frame's width in the input.
    pub inner_width: usize,
    /// The resized frame's height in the input.
    pub inner_height: usize,
}

impl Letterbox {
    /// The fit of a whole `frame_width × frame_height` frame into `width × height`.
    pub fn fit(frame_width: usize, frame_height: usize, width: usize, height: usize) -> Letterbox {
        Self::fit_region(
            [0.0, 0.0, frame_width as f32, frame_height as f32],
            width,
            height,
        )
    }

    /// The fit of the rectangle `[x, y, w, h]` (frame pixels; it may reach
    /// outside the frame) into `width × height`.
    pub fn fit_region(region: [f32; 4], width: usize, height: usize) -> Letterbox {
        let [x0, y0, w, h] = region;
        let scale = (width as f32 / w).min(height as f32 / h);
        let inner = |n: f32, max: usize| (libm::roundf(n * scale) as usize).clamp(1, max);
        Letterbox {
            x0,
            y0,
            width,
            height,
            scale,
            inner_width: inner(w, width),
            inner_height: inner(h, height),
        }
    }

    /// Fills `out` (`3 × height × width`, CHW, B G R planes, values 0-255 as
    /// YuNet takes them) with the rectangle resized into the top-left corner:
    /// bilinear (half-pixel centres), averaged over [`letterbox_samples`]
    /// samples per axis and input pixel when shrinking; grey frames give
    /// three equal planes.
    pub fn fill(&self, frame: &Frame<'_>, out: &mut [f32]) -> Result<(), PreprocessError> {
        let frame = Frame::new(frame.width, frame.height, frame.format, frame.pixels)?;
        let plane = self.width * self.height;
        if out.len() != 3 * plane {
            return Err(PreprocessError::OutputSize {
                expected: 3 * plane,
                found: out.len(),
            });
        }
        out.fill(0.0);
        match frame.format.bytes_per_pixel() {
            3 => self.fill_with::<3>(&frame, out),
            _ => self.fill_with::<1>(&frame, out),
        }
        Ok(())
    }

    /// [`Letterbox::fill`] for `BPP` bytes per pixel, `out` zeroed. Taps are
    /// computed once per row and once per column (in chunks of columns);
    /// a sample outside the frame is a tap of weight 0. Separably where it
    /// can: for each input row and chunk, the frame rows' taps are summed
    /// first over the frame columns the chunk reaches (contiguous bytes, one
    /// weight a row: it vectorises), then each input pixel sums its column
    /// taps of that; a chunk reaching over [`SPAN`] columns sums each input
    /// pixel's row and column taps' pixels directly.
    fn fill_with<const BPP: usize>(&self, frame: &Frame<'_>, out: &mut [f32]) {
        const CHUNK: usize = 32;
        let plane = self.width * self.height;
        let step = 1.0 / self.scale;
        let n = letterbox_samples(step);
        let share = 1.0 / n as f32;
        // Source channel of output plane B, G, R: RGB's 2, 1, 0; grey's 0.
        let channels: [usize; 3] = if BPP == 3 { [2, 1, 0] } else { [0, 0, 0] };
        let pixels = frame.pixels;
        let row_bytes = frame.width * BPP;
        // A tap pair: two indices and their weights, 1/n folded in.
        let taps = |origin: f32, o: usize, k: usize, len: usize| {
            tap(origin, o, k, n, step, len).map(|(a, b, f)| (a, b, (1.0 - f) * share, f * share))
        };
        let (iw, ih) = (self.inner_width, self.inner_height);
        let mut cols = [(0usize, 0usize, 0.0f32, 0.0f32); CHUNK * MAX_LETTERBOX_SAMPLES];
        let mut col_taps = [0usize; CHUNK];
        // The chunk's frame columns summed over the row taps, BPP values a column.
        let mut sums = [0.0f32; SPAN * 3];
        for first in (0..iw).step_by(CHUNK) {
            let width = CHUNK.min(iw - first);
            let (mut lo, mut hi) = (usize::MAX, 0);
            for (c, count) in col_taps.iter_mut().enumerate().take(width) {
                // Samples outside the frame are left out (they add black).
                *count = 0;
                for i in 0..n {
                    if let Some(t) = taps(self.x0, first + c, i, frame.width) {
                        cols[c * n + *count] = t;
                        *count += 1;
                        lo = lo.min(t.0);
                        hi = hi.max(t.1);
                    }
                }
            }
            if lo > hi {
                continue;
            }
            let separable = hi + 1 - lo <= SPAN;
            let sums = &mut sums[..if separable { (hi + 1 - lo) * BPP } else { 0 }];
            let bytes = lo * BPP..(hi + 1) * BPP;
            for oy in 0..ih {
                let mut rows = [(0usize, 0usize, 0.0f32, 0.0f32); MAX_LETTERBOX_SAMPLES];
                let mut n_rows = 0;
                for j in 0..n {
                    if let Some((a, b, wa, wb)) = taps(self.y0, oy, j, frame.height) {
                        rows[n_rows] = (a * row_bytes, b * row_bytes, wa, wb);
                        n_rows += 1;
                    }
                }
                let rows = &rows[..n_rows];
                if rows.is_empty() {
                    continue;
                }
                if separable {
                    sums.fill(0.0);
                    for &(ra, rb, wya, wyb) in rows {
                        let top = &pixels[ra..][bytes.clone()];
                        let bottom = &pixels[rb..][bytes.clone()];
                        for ((s, &t), &b) in sums.iter_mut().zip(top).zip(bottom) {
                            *s += wya * f32::from(t) + wyb * f32::from(b);
                        }
                    }
                }
                let at = oy * self.width + first;
                for c in 0..width {
                    let col = &cols[c * n..c * n + col_taps[c]];
                    let mut acc = [0.0f32; 3];
                    for &(xa, xb, wxa, wxb) in col {
                        if separable {
                            let (pa, pb) = ((xa - lo) * BPP, (xb - lo) * BPP);
                            for (a, &ch) in acc.iter_mut().zip(&channels) {
                                *a += wxa * sums[pa + ch] + wxb * sums[pb + ch];
                            }
                            continue;
                        }
                        for &(ra, rb, wya, wyb) in rows {
                            let quad = [ra + xa * BPP, ra + xb * BPP, rb + xa * BPP, rb + xb * BPP];
                            let w = [wya * wxa, wya * wxb, wyb * wxa, wyb * wxb];
                            for (&q, w) in quad.iter().zip(w) {
                                let p = &pixels[q..q + BPP];
                                for (a, &ch) in acc.iter_mut().zip(&channels) {
                                    *a += w * f32::from(p[ch]);
                                }
                            }
                        }
                    }
                    for (k, a) in acc.iter().enumerate() {
                        out[k * plane + at + c] = *a;
                    }
                }
            }
        }
    }
}

/// The most frame columns one chunk of [`Letterbox::fill`] sums at once
/// (a chunk of 32 input columns at up to 16 frame pixels each: 6 KB of
/// stack); a chunk reaching further is summed pixel by pixel.
const SPAN: usize = 512;

/// At most this many samples per axis per input pixel in [`Letterbox::fill`].
pub const MAX_LETTERBOX_SAMPLES: usize = 8;

/// How many bilinear samples per axis [`Letterbox::fill`] averages per input
/// pixel when it shrinks by `shrink` (frame pixels per input pixel): one when
/// it shrinks by at most two, else enough that samples are at most two frame
/// pixels apart (each bilinear sample spans two), at most
/// [`MAX_LETTERBOX_SAMPLES`]. Sparser than the face warp's
/// ([`supersampling`](crate::align::supersampling)), about a quarter of its
/// samples: with it the 320×320 detector missed none of 120 ORL photos
/// pasted into frames, as before, and their landmarks moved no more.
pub fn letterbox_samples(shrink: f32) -> usize {
    if shrink.is_finite() && shrink > 2.0 {
        (libm::ceilf(shrink / 2.0) as usize).min(MAX_LETTERBOX_SAMPLES)
    } else {
        1
    }
}

/// Sub-sample `k` of `n` of input pixel `o` along one axis starting at
/// `origin` in frame pixels: the two frame indices and the second's weight,
/// or `None` outside the frame (the input stays black there). Bilinear with
/// half-pixel centres; edge pixels repeat within the frame.
#[inline]
fn tap(
    origin: f32,
    o: usize,
    k: usize,
    n: usize,
    step: f32,
    len: usize,
) -> Option<(usize, usize, f32)> {
    let x = origin + (o as f32 + (k as f32 + 0.5) / n as f32) * step;
    if !(x >= 0.0 && x <= len as f32) {
        return None;
    }
    let u = (x - 0.5).clamp(0.0, (len - 1) as f32);
    // u ≥ 0: truncation is the floor.
    let a = u as usize;
    Some((a, (a + 1).min(len - 1), u - a as f32))
}

/// One stride's outputs, borrowed from the model's output tensors.
#[derive(Debug, Clone, Copy)]
pub struct StrideOutputs<'a> {
    /// The stride in input pixels (8, 16 or 32).
    pub stride: usize,
    /// Class score per cell.
    pub cls: &'a [f32],
    /// Objectness per cell.
    pub obj: &'a [f32],
    /// Four box values per cell.
    pub bbox: &'a [f32],
    /// Ten landmark values per cell.
    pub kps: &'a [f32],
}

/// Settings of decoding and suppression.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DetectConfig {
    /// Cells scoring below this are not faces.
    pub score_threshold: f32,
    /// A face overlapping a better one by more than this IoU is dropped.
    pub nms_iou: f32,
    /// When set, a kept face's landmarks are the score-weighted mean of the
    /// landmarks of every candidate overlapping it by at least this IoU (its
    /// neighbouring cells and strides, which it suppressed), not its own
    /// cell's alone: each cell's estimate moves with where the face falls on
    /// the cell grid, their mean much less.
    pub vote_iou: Option<f32>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            score_threshold: 0.6,
            nms_iou: 0.3,
            vote_iou: None,
        }
    }
}

/// Decodes YuNet's outputs for a `letterbox` input into `faces` (frame
/// pixels), then suppresses overlaps, best first. With more candidates than
/// `faces` holds, the best-scoring ones are kept.
pub fn decode<const N: usize>(
    letterbox: &Letterbox,
    outputs: &[StrideOutputs<'_>],
    config: &DetectConfig,
    faces: &mut heapless::Vec<Face, N>,
) -> Result<(), DetectError> {
    faces.clear();
    for out in outputs {
        let s = out.stride;
        if s == 0 || letterbox.width % s != 0 || letterbox.height % s != 0 {
            return Err(DetectError::Stride {
                stride: s,
                width: letterbox.width,
                height: letterbox.height,
            });
        }
        let cols = letterbox.width / s;
        let cells = cols * (letterbox.height / s);
        for (len, per, what) in [
            (out.cls.len(), 1, "cls"),
            (out.obj.len(), 1, "obj"),
            (out.bbox.len(), 4, "bbox"),
            (out.kps.len(), 10, "kps"),
        ] {
            if len != cells * per {
                return Err(DetectError::OutputSize {
                    output: what,
                    stride: s,
                    expected: cells * per,
                    found: len,
                });
            }
        }
        let sf = s as f32;
        for i in 0..cells {
            let score = libm::sqrtf(out.cls[i].clamp(0.0, 1.0) * out.obj[i].clamp(0.0, 1.0));
            // NaN scores are dropped too.
            if score.is_nan() || score < config.score_threshold {
                continue;
            }
            let (r, c) = ((i / cols) as f32, (i % cols) as f32);
            let b = &out.bbox[4 * i..4 * i + 4];
            let (cx, cy) = ((c + b[0]) * sf, (r + b[1]) * sf);
            let (w, h) = (libm::expf(b[2]) * sf, libm::expf(b[3]) * sf);
            let k = &out.kps[10 * i..10 * i + 10];
            let mut landmarks = [[0.0; 2]; 5];
            for (n, p) in landmarks.iter_mut().enumerate() {
                *p = [(k[2 * n] + c) * sf, (k[2 * n + 1] + r) * sf];
            }
            let face = Face {
                bbox: [cx - w / 2.0, cy - h / 2.0, w, h],
                score,
                landmarks,
            }
            .to_frame(letterbox);
            if !face
                .bbox
                .iter()
                .chain(face.landmarks.iter().flatten())
                .all(|v| v.is_finite())
            {
                continue;
            }
            push_best(faces, face);
        }
    }
    match config.vote_iou {
        Some(vote) => {
            let candidates = faces.clone();
            nms(faces, config.nms_iou);
            for face in faces.iter_mut() {
                face.landmarks = voted_landmarks(face, &candidates, vote);
            }
        }
        None => nms(faces, config.nms_iou),
    }
    Ok(())
}

/// The score-weighted mean of the landmarks of the `candidates` that overlap
/// `face` by at least `iou` (`face`'s own when none does).
fn voted_landmarks(face: &Face, candidates: &[Face], iou: f32) -> Landmarks {
    let mut sum = [[0.0f32; 2]; 5];
    let mut total = 0.0f32;
    for c in candidates.iter().filter(|c| face.iou(c) >= iou) {
        for (s, p) in sum.iter_mut().zip(&c.landmarks) {
            s[0] += c.score * p[0];
            s[1] += c.score * p[1];
        }
        total += c.score;
    }
    // Kept faces pass the score threshold; a zero or NaN total leaves the
    // face as it is.
    if total.is_nan() || total <= 0.0 {
        return face.landmarks;
    }
    sum.map(|[x, y]| [x / total, y / total])
}

/// Adds `face`, or replaces the worst face when full and `face` is better.
fn push_best<const N: usize>(faces: &mut heapless::Vec<Face, N>, face: Face) {
    if let Err(face) = faces.push(face) {
        if let Some((worst, w)) = faces
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.score.total_cmp(&b.1.score))
        {
            if w.score < face.score {
                faces[worst] = face;
            }
        }
    }
}

/// Greedy non-maximum suppression: sorts best first and drops every face
/// whose IoU with a better kept face exceeds `iou`.
pub fn nms<const N: usize>(faces: &mut heapless::Vec<Face, N>, iou: f32) {
    faces.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept = 0;
    for i in 0..faces.len() {
        let candidate = faces[i];
        if faces[..kept].iter().all(|k| k.iou(&candidate) <= iou) {
            faces[kept] = candidate;
            kept += 1;
        }
    }
    faces.truncate(kept);
}

/// The face with the largest box, if any.
pub fn largest(faces: &[Face]) -> Option<&Face> {
    faces.iter().max_by(|a, b| a.area().total_cmp(&b.area()))
}
