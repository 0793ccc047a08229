//! The detector's letterbox against a naive f64 reference: a frame, or a
//! rectangle of it reaching outside, resized into the model's input with
//! `n × n` bilinear samples per input pixel when shrinking, B G R planes.
use fewshot_core::detect::Letterbox;
use fewshot_core::preprocess::{Frame, PixelFormat};
use proptest::prelude::*;

/// The letterbox in f64, written from its definition: input pixel `(ox, oy)`
/// inside the resized rectangle averages the bilinear samples at
/// `origin + (o + (k + 0.5) / n) / scale` (half-pixel centres, edge pixels
/// repeated, samples outside the frame black); the rest of the input is black.
fn reference(px: &[u8], w: usize, h: usize, bpp: usize, lb: &Letterbox) -> Vec<f64> {
    let step = 1.0 / f64::from(lb.scale);
    let shrink = step;
    // At most two frame pixels between samples, at most 8 per axis.
    let n = if shrink > 2.0 {
        ((shrink / 2.0).ceil() as usize).min(8)
    } else {
        1
    };
    let taps = |origin: f32, o: usize, k: usize, len: usize| -> Option<(usize, usize, f64)> {
        let x = f64::from(origin) + (o as f64 + (k as f64 + 0.5) / n as f64) * step;
        if x < 0.0 || x > len as f64 {
            return None;
        }
        let u = (x - 0.5).clamp(0.0, (len - 1) as f64);
        let a = u.floor() as usize;
        Some((a, (a + 1).min(len - 1), u - a as f64))
    };
    let plane = lb.width * lb.height;
    let mut out = vec![0.0; 3 * plane];
    for oy in 0..lb.inner_height {
        for ox in 0..lb.inner_width {
            for c in 0..3 {
                let ch = if bpp == 3 { 2 - c } else { 0 };
                let at = |x: usize, y: usize| f64::from(px[(y * w + x) * bpp + ch]);
                let mut acc = 0.0;
                for j in 0..n {
                    for i in 0..n {
                        let (Some((xa, xb, fx)), Some((ya, yb, fy))) =
                            (taps(lb.x0, ox, i, w), taps(lb.y0, oy, j, h))
                        else {
                            continue;
                        };
                        let top = at(xa, ya) * (1.0 - fx) + at(xb, ya) * fx;
                        let bottom = at(xa, yb) * (1.0 - fx) + at(xb, yb) * fx;
                        acc += top * (1.0 - fy) + bottom * fy;
                    }
                }
                out[c * plane + oy * lb.width + ox] = acc / (n * n) as f64;
            }
        }
    }
    out
}

proptest! {
    #[test]
    fn the_letterbox_matches_the_f64_reference(
        seed in any::<u64>(), w in 5usize..120, h in 5usize..120, rgb in any::<bool>(),
        x in -40.0f32..60.0, y in -40.0f32..60.0, rw in 4.0f32..200.0, rh in 4.0f32..200.0,
        whole in any::<bool>(), size in 1usize..4,
    ) {
        let bpp = if rgb { 3 } else { 1 };
        let mut state = seed | 1;
        let px: Vec<u8> = (0..w * h * bpp).map(|_| {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            (state >> 24) as u8
        }).collect();
        let format = if rgb { PixelFormat::Rgb8 } else { PixelFormat::Gray8 };
        let frame = Frame::new(w, h, format, &px).unwrap();
        let (iw, ih) = (32 * size, 32 * (4 - size));
        let lb = if whole {
            Letterbox::fit(w, h, iw, ih)
        } else {
            Letterbox::fit_region([x, y, rw, rh], iw, ih)
        };
        let mut out = vec![f32::NAN; 3 * iw * ih];
        lb.fill(&frame, &mut out).unwrap();
        let want = reference(&px, w, h, bpp, &lb);
        for (i, (g, e)) in out.iter().zip(&want).enumerate() {
            prop_assert!((f64::from(*g) - e).abs() < 1e-3 * (1.0 + e.abs()), "value {i}: {g} against {e}");
        }
    }
}

#[test]
fn a_frame_shrunk_very_much_matches_the_reference_too() {
    // 3 000 × 40 RGB into 64 × 32: about 47 frame pixels an input pixel, so
    // a chunk of input columns reaches too far to be summed by columns and
    // is summed pixel by pixel; and a region shrunk less, summed by columns.
    let (w, h) = (3000, 40);
    let px: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let frame = Frame::new(w, h, PixelFormat::Rgb8, &px).unwrap();
    for lb in [
        Letterbox::fit(w, h, 64, 32),
        Letterbox::fit_region([100.0, -5.0, 400.0, 50.0], 64, 32),
    ] {
        let mut out = vec![f32::NAN; 3 * 64 * 32];
        lb.fill(&frame, &mut out).unwrap();
        let want = reference(&px, w, h, 3, &lb);
        for (i, (g, e)) in out.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - e).abs() < 1e-3 * (1.0 + e.abs()),
                "{lb:?}: value {i}: {g} against {e}"
            );
        }
    }
}

#[test]
fn an_exact_halving_averages_each_two_by_two_block() {
    // A 4×2 grey frame halved into a 32×32 input: half-pixel centres put the
    // single bilinear sample of each input pixel between four frame pixels.
    let px = [0u8, 10, 20, 30, 40, 50, 60, 70];
    let frame = Frame::new(4, 2, PixelFormat::Gray8, &px).unwrap();
    let half = Letterbox {
        x0: 0.0,
        y0: 0.0,
        width: 32,
        height: 32,
        scale: 0.5,
        inner_width: 2,
        inner_height: 1,
    };
    let mut out = vec![f32::NAN; 3 * 32 * 32];
    half.fill(&frame, &mut out).unwrap();
    // (0 + 10 + 40 + 50) / 4 and (20 + 30 + 60 + 70) / 4 in all three
    // planes, black beyond.
    for c in 0..3 {
        let p = &out[c * 32 * 32..];
        assert_eq!((p[0], p[1], p[2], p[32]), (25.0, 45.0, 0.0, 0.0));
    }
}
