//! Face alignment: the similarity transform that puts five detected landmarks
//! (eyes, nose tip, mouth corners) onto a fixed template, and the warp of a
//! frame through it.
//!
//! Coordinates are continuous pixel coordinates: a pixel `(x, y)` covers
//! `[x, x + 1) × [y, y + 1)` and its centre is `(x + 0.5, y + 0.5)`, as in the
//! rest of [`crate::preprocess`].

/// Five points, in the order eyes (image left, image right), nose tip, mouth
/// corners (image left, image right): YuNet's order.
pub type Landmarks = [[f32; 2]; 5];

/// Where the five landmarks go in an aligned crop, in units of the crop's
/// width and height (so one template serves every output size).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FaceTemplate {
    /// The five points, each `[x / width, y / height]`.
    pub points: Landmarks,
}

impl FaceTemplate {
    /// The five-point template of face-recognition crops at 112×112 (the
    /// points used by ArcFace and MobileFaceNet), divided by 112.
    pub const ARCFACE: FaceTemplate = FaceTemplate {
        points: [
            [38.2946 / 112.0, 51.6963 / 112.0],
            [73.5318 / 112.0, 51.5014 / 112.0],
            [56.0252 / 112.0, 71.7366 / 112.0],
            [41.5493 / 112.0, 92.3655 / 112.0],
            [70.7299 / 112.0, 92.2041 / 112.0],
        ],
    };

    /// The template's points in pixels of a `width × height` crop.
    pub fn scaled(&self, width: usize, height: usize) -> Landmarks {
        let mut out = self.points;
        for p in &mut out {
            p[0] *= width as f32;
            p[1] *= height as f32;
        }
        out
    }

    /// Whether every coordinate is finite and the points are not all equal.
    pub fn is_valid(&self) -> bool {
        let p = &self.points;
        p.iter().flatten().all(|v| v.is_finite()) && p.iter().any(|q| q != &p[0])
    }
}

/// A similarity transform (rotation, uniform scale, translation, no
/// reflection): `(x, y) ↦ (a·x − b·y + tx, b·x + a·y + ty)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Similarity {
    /// `scale · cos θ`.
    pub a: f32,
    /// `scale · sin θ`.
    pub b: f32,
    /// Translation along x.
    pub tx: f32,
    /// Translation along y.
    pub ty: f32,
}

impl Similarity {
    /// The identity.
    pub const IDENTITY: Similarity = Similarity {
        a: 1.0,
        b: 0.0,
        tx: 0.0,
        ty: 0.0,
    };

    /// The least-squares similarity taking each `from[i]` as near as possible
    /// to `to[i]`; `None` when the `from` points all coincide (or are not
    /// finite), so no scale can be found.
    ///
    /// The problem is linear in `(a, b, tx, ty)`; with both point sets
    /// centred on their means its solution is
    /// `a = Σ(p·q) / Σ|p|²`, `b = Σ(p × q) / Σ|p|²`.
    pub fn least_squares(from: &[[f32; 2]], to: &[[f32; 2]]) -> Option<Similarity> {
        if from.len() != to.len() || from.is_empty() {
            return None;
        }
        let n = from.len() as f64;
        let mean = |pts: &[[f32; 2]]| {
            let (sx, sy) = pts.iter().fold((0.0f64, 0.0f64), |(sx, sy), p| {
                (sx + f64::from(p[0]), sy + f64::from(p[1]))
            });
            (sx / n, sy / n)
        };
        let (fx, fy) = mean(from);
        let (gx, gy) = mean(to);
        let (mut dot, mut cross, mut norm) = (0.0f64, 0.0f64, 0.0f64);
        for (p, q) in from.iter().zip(to) {
            let (px, py) = (f64::from(p[0]) - fx, f64::from(p[1]) - fy);
            let (qx, qy) = (f64::from(q[0]) - gx, f64::from(q[1]) - gy);
            dot += px * qx + py * qy;
            cross += px * qy - py * qx;
            norm += px * px + py * py;
        }
        if !(norm.is_finite() && norm > 1e-12 && dot.is_finite() && cross.is_finite()) {
            return None;
        }
        let (a, b) = (dot / norm, cross / norm);
        let tx = gx - (a * fx - b * fy);
        let ty = gy - (b * fx + a * fy);
        Some(Similarity {
            a: a as f32,
            b: b as f32,
            tx: tx as f32,
            ty: ty as f32,
        })
    }

    /// The transform that aligns `landmarks` (in frame pixels) onto
    /// `template` scaled to a `width × height` crop.
    pub fn aligning(
        landmarks: &Landmarks,
        template: &FaceTemplate,
        width: usize,
        height: usize,
    ) -> Option<Similarity> {
        Self::least_squares(landmarks, &template.scaled(width, height))
    }

    /// Maps a point.
    #[inline]
    pub fn apply(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        [
            self.a * x - self.b * y + self.tx,
            self.b * x + self.a * y + self.ty,
        ]
    }

    /// The uniform scale factor.
    pub fn scale(&self) -> f32 {
        libm::sqrtf(self.a * self.a + self.b * self.b)
    }

    /// The inverse transform; `None` for a zero scale.
    pub fn inverse(&self) -> Option<Similarity> {
        let d = self.a * self.a + self.b * self.b;
        if !(d.is_finite() && d > 0.0) {
            return None;
        }
        let (a, b) = (self.a / d, -self.b / d);
        Some(Similarity {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        })
    }
}

/// How many samples per axis the warp averages per output pixel when it
/// shrinks the frame by `shrink` (source pixels per output pixel): one when
/// it does not shrink, else enough that samples are at most one source pixel
/// apart (a box filter against aliasing), at most [`MAX_SUPERSAMPLING`].
pub fn supersampling(shrink: f32) -> usize {
    if shrink.is_finite() && shrink > 1.0 {
        (libm::ceilf(shrink) as usize).min(MAX_SUPERSAMPLING)
    } else {
        1
    }
}

/// The most samples per axis [`supersampling`] asks for.
pub const MAX_SUPERSAMPLING: usize = 8;
