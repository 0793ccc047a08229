//! Face alignment: the similarity transform against hand-computed cases, the
//! normal equations in f64 and round trips; the warp against a naive f64
//! reference and by where it puts marked landmarks.
use fewshot_core::align::{FaceTemplate, Landmarks, Similarity};
use fewshot_core::preprocess::{Crop, Frame, PixelFormat, Recipe, Resize};
use fewshot_core::PreprocessError;
use proptest::prelude::*;

fn face_recipe(size: usize, channels: usize, resize: Resize) -> Recipe {
    Recipe {
        width: size,
        height: size,
        channels,
        crop: Crop::Aligned(FaceTemplate::ARCFACE),
        resize,
        invert: false,
        mean: [0.0; 3],
        std: [1.0; 3],
    }
}

fn close(a: f32, b: f64, tol: f64) -> bool {
    (f64::from(a) - b).abs() <= tol
}

#[test]
fn a_quarter_turn_by_hand() {
    // (0,0) -> (1,1) and (2,0) -> (1,3): rotation by 90°, scale 1, shift (1,1).
    let s =
        Similarity::least_squares(&[[0.0, 0.0], [2.0, 0.0]], &[[1.0, 1.0], [1.0, 3.0]]).unwrap();
    for (got, want) in [(s.a, 0.0), (s.b, 1.0), (s.tx, 1.0), (s.ty, 1.0)] {
        assert!(close(got, want, 1e-6), "{s:?}");
    }
    assert_eq!(s.apply([1.0, 2.0]), [-1.0, 2.0]);
}

#[test]
fn scale_and_shift_by_hand() {
    // A square of side 1 onto a square of side 3 at (10, 20): a = 3, b = 0.
    let from = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
    let to = [[10.0, 20.0], [13.0, 20.0], [13.0, 23.0], [10.0, 23.0]];
    let s = Similarity::least_squares(&from, &to).unwrap();
    for (got, want) in [(s.a, 3.0), (s.b, 0.0), (s.tx, 10.0), (s.ty, 20.0)] {
        assert!(close(got, want, 1e-5), "{s:?}");
    }
}

#[test]
fn degenerate_points_have_no_transform() {
    let same = [[4.0, 4.0]; 5];
    assert!(Similarity::least_squares(&same, &FaceTemplate::ARCFACE.points).is_none());
    let nan = [[f32::NAN, 0.0], [1.0, 1.0]];
    assert!(Similarity::least_squares(&nan, &[[0.0, 0.0], [1.0, 1.0]]).is_none());
    assert!(Similarity::least_squares(&[], &[]).is_none());
}

/// The least-squares similarity by the 4×4 normal equations in f64, solved
/// by Gaussian elimination: rows `[x, -y, 1, 0] → u` and `[y, x, 0, 1] → v`.
#[allow(clippy::needless_range_loop)] // matrix indices read best as indices
fn normal_equations(from: &[[f32; 2]], to: &[[f32; 2]]) -> [f64; 4] {
    let mut m = [[0.0f64; 5]; 4];
    for (p, q) in from.iter().zip(to) {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        for (row, rhs) in [([x, -y, 1.0, 0.0], q[0]), ([y, x, 0.0, 1.0], q[1])] {
            for i in 0..4 {
                for j in 0..4 {
                    m[i][j] += row[i] * row[j];
                }
                m[i][4] += row[i] * f64::from(rhs);
            }
        }
    }
    for c in 0..4 {
        let pivot = (c..4)
            .max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))
            .unwrap();
        m.swap(c, pivot);
        for r in 0..4 {
            if r != c {
                let f = m[r][c] / m[c][c];
                for k in c..5 {
                    m[r][k] -= f * m[c][k];
                }
            }
        }
    }
    [0, 1, 2, 3].map(|i| m[i][4] / m[i][i])
}

fn point() -> impl Strategy<Value = [f32; 2]> {
    [-200.0f32..200.0, -200.0f32..200.0]
}

proptest! {
    #[test]
    fn least_squares_solves_the_normal_equations(
        from in proptest::array::uniform5(point()),
        to in proptest::array::uniform5(point()),
    ) {
        let spread: f32 = from.iter().map(|p| (p[0] - from[0][0]).abs() + (p[1] - from[0][1]).abs()).sum();
        prop_assume!(spread > 10.0);
        let s = Similarity::least_squares(&from, &to).unwrap();
        let want = normal_equations(&from, &to);
        let scale = want.iter().map(|v| v.abs()).fold(1.0, f64::max);
        for (got, want) in [s.a, s.b, s.tx, s.ty].into_iter().zip(want) {
            prop_assert!(close(got, want, 1e-4 * scale), "{s:?} against {want:?}");
        }
    }

    #[test]
    fn an_exact_similarity_is_recovered_and_inverted(
        angle in -3.1f32..3.1, scale in 0.05f32..20.0, tx in -500.0f32..500.0, ty in -500.0f32..500.0,
        from in proptest::array::uniform5(point()),
    ) {
        let spread: f32 = from.iter().map(|p| (p[0] - from[0][0]).abs() + (p[1] - from[0][1]).abs()).sum();
        prop_assume!(spread > 10.0);
        let t = Similarity { a: scale * angle.cos(), b: scale * angle.sin(), tx, ty };
        let to = from.map(|p| t.apply(p));
        let s = Similarity::least_squares(&from, &to).unwrap();
        let inv = s.inverse().unwrap();
        for (p, q) in from.iter().zip(&to) {
            let mapped = s.apply(*p);
            let back = inv.apply(*q);
            let tol = 1e-3 * (1.0 + q[0].abs().max(q[1].abs()));
            prop_assert!((mapped[0] - q[0]).abs() < tol && (mapped[1] - q[1]).abs() < tol);
            let tol = 1e-3 * (1.0 + p[0].abs().max(p[1].abs())) * (1.0 + 1.0 / scale);
            prop_assert!((back[0] - p[0]).abs() < tol && (back[1] - p[1]).abs() < tol);
        }
    }
}

/// The aligned crop in f64: each output pixel averages `n × n` points of
/// the inverse transform's bilinear samples (black outside the frame).
fn warp_reference(
    px: &[u8],
    w: usize,
    h: usize,
    lm: &Landmarks,
    size: usize,
    n: usize,
) -> Vec<f64> {
    let to = FaceTemplate::ARCFACE.scaled(size, size);
    let [a, b, tx, ty] = normal_equations(lm, &to);
    let d = a * a + b * b;
    let get = |x: i64, y: i64| {
        if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
            0.0
        } else {
            f64::from(px[y as usize * w + x as usize]) / 255.0
        }
    };
    let mut out = Vec::new();
    for oy in 0..size {
        for ox in 0..size {
            let mut acc = 0.0;
            for j in 0..n {
                for i in 0..n {
                    let u = ox as f64 + (i as f64 + 0.5) / n as f64 - tx;
                    let v = oy as f64 + (j as f64 + 0.5) / n as f64 - ty;
                    // The inverse of [a -b; b a] is [a b; -b a] / d.
                    let x = (a * u + b * v) / d - 0.5;
                    let y = (-b * u + a * v) / d - 0.5;
                    let (x0, y0) = (x.floor(), y.floor());
                    let (fx, fy) = (x - x0, y - y0);
                    let (x0, y0) = (x0 as i64, y0 as i64);
                    let top = get(x0, y0) * (1.0 - fx) + get(x0 + 1, y0) * fx;
                    let bot = get(x0, y0 + 1) * (1.0 - fx) + get(x0 + 1, y0 + 1) * fx;
                    acc += top * (1.0 - fy) + bot * fy;
                }
            }
            out.push(acc / (n * n) as f64);
        }
    }
    out
}

/// Landmarks of a face of eye distance about `eyes` px at `(cx, cy)`, turned by `angle`.
fn face_at(cx: f32, cy: f32, eyes: f32, angle: f32) -> Landmarks {
    let t = FaceTemplate::ARCFACE;
    let k = eyes / ((t.points[1][0] - t.points[0][0]) * 112.0) * 112.0;
    let (c, s) = (angle.cos(), angle.sin());
    t.points.map(|[x, y]| {
        let (x, y) = ((x - 0.5) * k, (y - 0.5) * k);
        [cx + c * x - s * y, cy + s * x + c * y]
    })
}

proptest! {
    #[test]
    fn the_warp_matches_the_f64_reference(
        seed in any::<u64>(), cx in 10.0f32..90.0, cy in 10.0f32..70.0,
        eyes in 8.0f32..60.0, angle in -0.6f32..0.6, area in any::<bool>(),
    ) {
        let (w, h) = (100, 80);
        let mut state = seed | 1;
        let px: Vec<u8> = (0..w * h).map(|_| {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            (state >> 24) as u8
        }).collect();
        let lm = face_at(cx, cy, eyes, angle);
        let size = 24;
        let r = face_recipe(size, 1, if area { Resize::Area } else { Resize::Bilinear });
        let mut out = vec![0.0; r.len()];
        r.apply_aligned(&Frame::new(w, h, PixelFormat::Gray8, &px).unwrap(), &lm, &mut out).unwrap();
        let shrink = 1.0 / Similarity::aligning(&lm, &FaceTemplate::ARCFACE, size, size).unwrap().scale();
        let n = if area && shrink > 1.0 { (shrink.ceil() as usize).min(8) } else { 1 };
        let want = warp_reference(&px, w, h, &lm, size, n);
        for (i, (g, e)) in out.iter().zip(&want).enumerate() {
            prop_assert!(close(*g, *e, 2e-4), "pixel {i}: {g} against {e}");
        }
    }
}

proptest! {
    #[test]
    fn the_warp_through_a_plane_is_the_direct_warp_bit_for_bit(
        seed in any::<u64>(), cx in -20.0f32..120.0, cy in -20.0f32..100.0,
        eyes in 4.0f32..80.0, angle in -0.8f32..0.8, area in any::<bool>(),
        rgb in any::<bool>(), channels in prop::sample::select(vec![1usize, 3]),
        invert in any::<bool>(), short in any::<bool>(),
    ) {
        // Faces partly or wholly outside the frame included: the taps there
        // go the direct way, inside they read the plane; a plane too short
        // is not used.
        let (w, h) = (100, 80);
        let format = if rgb { PixelFormat::Rgb8 } else { PixelFormat::Gray8 };
        let mut state = seed | 1;
        let px: Vec<u8> = (0..w * h * format.bytes_per_pixel()).map(|_| {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            (state >> 24) as u8
        }).collect();
        let f = Frame::new(w, h, format, &px).unwrap();
        let lm = face_at(cx, cy, eyes, angle);
        let r = Recipe {
            invert,
            mean: [0.1, 0.2, 0.3],
            std: [0.5, 0.25, 2.0],
            ..face_recipe(24, channels, if area { Resize::Area } else { Resize::Bilinear })
        };
        let mut direct = vec![0.0; r.len()];
        r.apply_aligned(&f, &lm, &mut direct).unwrap();
        let need = r.aligned_plane_len(&f, &lm).unwrap();
        prop_assert!(need <= w * h);
        let mut plane = vec![f32::NAN; if short { need.saturating_sub(1) } else { need }];
        let mut fast = vec![0.0; r.len()];
        r.apply_aligned_in(&f, &lm, &mut fast, &mut plane).unwrap();
        for (i, (a, b)) in direct.iter().zip(&fast).enumerate() {
            prop_assert_eq!(a.to_bits(), b.to_bits(), "value {}: {} against {}", i, a, b);
        }
    }
}

#[test]
fn a_face_inside_the_frame_needs_a_plane_of_its_footprint_only() {
    // Eyes 20 px apart in a 640×480 frame: the crop covers about 64 px of
    // the frame, so the plane is far smaller than the frame.
    let px = vec![0u8; 640 * 480];
    let f = Frame::new(640, 480, PixelFormat::Gray8, &px).unwrap();
    let r = face_recipe(32, 1, Resize::Area);
    let need = r
        .aligned_plane_len(&f, &face_at(300.0, 200.0, 20.0, 0.0))
        .unwrap();
    assert!((64 * 64..=80 * 80).contains(&need), "{need}");
    // A face far outside reads nothing.
    assert_eq!(
        r.aligned_plane_len(&f, &face_at(-500.0, 200.0, 20.0, 0.0))
            .unwrap(),
        0
    );
    // A plain recipe needs none.
    let plain = Recipe {
        crop: Crop::None,
        ..r
    };
    assert_eq!(
        plain
            .aligned_plane_len(&f, &face_at(300.0, 200.0, 20.0, 0.0))
            .unwrap(),
        0
    );
}

#[test]
fn marked_landmarks_land_on_the_template() {
    // A black 200×160 frame with a white 3×3 mark at each landmark of a face
    // turned by 0.3 rad; the aligned 112×112 crop is brightest at the template.
    let (w, h) = (200, 160);
    let lm = face_at(90.0, 70.0, 50.0, 0.3);
    let mut px = vec![0u8; w * h];
    for [x, y] in lm {
        let (x, y) = (x.floor() as usize, y.floor() as usize);
        for yy in y - 1..=y + 1 {
            for xx in x - 1..=x + 1 {
                px[yy * w + xx] = 255;
            }
        }
    }
    let r = face_recipe(112, 1, Resize::Bilinear);
    let mut out = vec![0.0; r.len()];
    r.apply_aligned(
        &Frame::new(w, h, PixelFormat::Gray8, &px).unwrap(),
        &lm,
        &mut out,
    )
    .unwrap();
    for [tx, ty] in FaceTemplate::ARCFACE.scaled(112, 112) {
        // The brightest pixel within 6 px of the template point is within 1.5 px of it.
        let (mut best, mut at) = (0.0, (0usize, 0usize));
        for y in (ty as usize - 6)..(ty as usize + 6) {
            for x in (tx as usize - 6)..(tx as usize + 6) {
                if out[y * 112 + x] > best {
                    best = out[y * 112 + x];
                    at = (x, y);
                }
            }
        }
        assert!(best > 0.5, "no mark near ({tx}, {ty})");
        let (dx, dy) = (at.0 as f32 + 0.5 - tx, at.1 as f32 + 0.5 - ty);
        assert!(dx.hypot(dy) < 1.5, "mark at {at:?}, template ({tx}, {ty})");
    }
}

#[test]
fn rgb_frames_align_per_channel() {
    // An RGB frame whose channels are constant 255, 128, 0: inside the frame
    // the crop keeps them, outside it is black.
    let (w, h) = (64, 64);
    let px: Vec<u8> = (0..w * h).flat_map(|_| [255u8, 128, 0]).collect();
    let lm = face_at(32.0, 32.0, 20.0, 0.0);
    let r = face_recipe(16, 3, Resize::Bilinear);
    let mut out = vec![0.0; r.len()];
    r.apply_aligned(
        &Frame::new(w, h, PixelFormat::Rgb8, &px).unwrap(),
        &lm,
        &mut out,
    )
    .unwrap();
    let centre = 8 * 16 + 8;
    assert!((out[centre] - 1.0).abs() < 1e-6);
    assert!((out[256 + centre] - 128.0 / 255.0).abs() < 1e-6);
    assert!(out[512 + centre].abs() < 1e-6);
}

#[test]
fn aligned_recipes_need_landmarks_and_good_ones() {
    let px = vec![0u8; 32 * 32];
    let f = Frame::new(32, 32, PixelFormat::Gray8, &px).unwrap();
    let r = face_recipe(16, 1, Resize::Area);
    assert!(r.needs_landmarks());
    let mut out = vec![0.0; r.len()];
    assert_eq!(r.apply(&f, &mut out), Err(PreprocessError::NeedsLandmarks));
    assert_eq!(
        r.apply_aligned(&f, &[[3.0, 3.0]; 5], &mut out),
        Err(PreprocessError::BadLandmarks)
    );
    let mut nan = face_at(16.0, 16.0, 8.0, 0.0);
    nan[2][0] = f32::NAN;
    assert_eq!(
        r.apply_aligned(&f, &nan, &mut out),
        Err(PreprocessError::BadLandmarks)
    );
    let bad = Recipe {
        crop: Crop::Aligned(FaceTemplate {
            points: [[0.5, 0.5]; 5],
        }),
        ..r
    };
    assert!(matches!(bad.validate(), Err(PreprocessError::BadRecipe(_))));
    // A plain recipe ignores landmarks.
    let plain = Recipe {
        crop: Crop::None,
        ..r
    };
    let (mut a, mut b) = (vec![0.0; r.len()], vec![0.0; r.len()]);
    plain.apply(&f, &mut a).unwrap();
    plain.apply_aligned(&f, &[[3.0, 3.0]; 5], &mut b).unwrap();
    assert_eq!(a, b);
}

#[cfg(feature = "serde")]
#[test]
fn the_stored_recipe_keeps_the_template_and_plain_recipes_unchanged() {
    use fewshot_core::preprocess::RecipeSpec;
    let r = face_recipe(64, 1, Resize::Area);
    let json = serde_json::to_string(&RecipeSpec::from(r)).unwrap();
    assert!(json.contains("\"align\""), "{json}");
    let back: RecipeSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back.recipe().unwrap(), r);
    // Omniglot's stored recipe has no `align` key, as before.
    let plain = serde_json::to_string(&RecipeSpec::from(Recipe::OMNIGLOT_28)).unwrap();
    assert!(!plain.contains("align"), "{plain}");
    // Both a centre crop and a template: refused.
    let mut both = RecipeSpec::from(r);
    both.crop = Some(0.5);
    assert!(matches!(both.recipe(), Err(PreprocessError::BadRecipe(_))));
}
