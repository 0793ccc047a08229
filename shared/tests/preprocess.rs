//! Preprocessing against hand-computed cases and a naive f64 reference.
use fewshot_core::preprocess::{Crop, Frame, PixelFormat, Recipe, Resize};
use fewshot_core::PreprocessError;
use proptest::prelude::*;

fn recipe(w: usize, h: usize, channels: usize, resize: Resize) -> Recipe {
    Recipe {
        width: w,
        height: h,
        channels,
        crop: Crop::None,
        resize,
        invert: false,
        mean: [0.0; 3],
        std: [1.0; 3],
    }
}

fn run(r: &Recipe, f: &Frame<'_>) -> Vec<f32> {
    let mut out = vec![0.0; r.len()];
    r.apply(f, &mut out).unwrap();
    out
}

/// Naive f64 area resize of a grey image: integrate the piecewise-constant
/// image over each output cell by sub-sampling on a fine grid that the cell
/// edges fall on exactly (both sizes divide `fine`).
fn area_reference(px: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f64> {
    let fine_x = w * ow;
    let fine_y = h * oh;
    let mut out = vec![0.0; ow * oh];
    for fy in 0..fine_y {
        for fx in 0..fine_x {
            let v = f64::from(px[(fy / oh) * w + fx / ow]) / 255.0;
            out[(fy / h) * ow + fx / w] += v;
        }
    }
    let cell = (w * h) as f64;
    out.iter().map(|v| v / cell).collect()
}

/// Naive f64 bilinear resize with half-pixel centres.
fn bilinear_reference(px: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f64> {
    let get = |x: usize, y: usize| f64::from(px[y * w + x]) / 255.0;
    let mut out = Vec::new();
    for oy in 0..oh {
        for ox in 0..ow {
            let sx = ((ox as f64 + 0.5) * w as f64 / ow as f64 - 0.5).clamp(0.0, (w - 1) as f64);
            let sy = ((oy as f64 + 0.5) * h as f64 / oh as f64 - 0.5).clamp(0.0, (h - 1) as f64);
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
            let top = get(x0, y0) * (1.0 - fx) + get(x1, y0) * fx;
            let bot = get(x0, y1) * (1.0 - fx) + get(x1, y1) * fx;
            out.push(top * (1.0 - fy) + bot * fy);
        }
    }
    out
}

fn image() -> impl Strategy<Value = (usize, usize, Vec<u8>)> {
    (1usize..40, 1usize..40)
        .prop_flat_map(|(w, h)| (Just(w), Just(h), prop::collection::vec(any::<u8>(), w * h)))
}

proptest! {
    #[test]
    fn area_matches_reference((w, h, px) in image(), ow in 1usize..30, oh in 1usize..30) {
        let f = Frame::new(w, h, PixelFormat::Gray8, &px).unwrap();
        let got = run(&recipe(ow, oh, 1, Resize::Area), &f);
        let want = area_reference(&px, w, h, ow, oh);
        for (g, r) in got.iter().zip(&want) {
            prop_assert!((f64::from(*g) - r).abs() < 1e-4, "{g} vs {r}");
        }
    }

    #[test]
    fn bilinear_matches_reference((w, h, px) in image(), ow in 1usize..30, oh in 1usize..30) {
        let f = Frame::new(w, h, PixelFormat::Gray8, &px).unwrap();
        let got = run(&recipe(ow, oh, 1, Resize::Bilinear), &f);
        let want = bilinear_reference(&px, w, h, ow, oh);
        for (g, r) in got.iter().zip(&want) {
            prop_assert!((f64::from(*g) - r).abs() < 1e-4, "{g} vs {r}");
        }
    }

    #[test]
    fn same_size_is_identity((w, h, px) in image()) {
        let f = Frame::new(w, h, PixelFormat::Gray8, &px).unwrap();
        for resize in [Resize::Area, Resize::Bilinear] {
            let got = run(&recipe(w, h, 1, resize), &f);
            for (g, p) in got.iter().zip(&px) {
                prop_assert!((f64::from(*g) - f64::from(*p) / 255.0).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn area_halving_is_block_mean() {
    #[rustfmt::skip]
    let px = [
        0, 255, 10, 20,
        255, 0, 30, 40,
        1, 2, 100, 100,
        3, 4, 100, 100,
    ];
    let f = Frame::new(4, 4, PixelFormat::Gray8, &px).unwrap();
    let got = run(&recipe(2, 2, 1, Resize::Area), &f);
    let want = [
        510.0 / 4.0 / 255.0,
        100.0 / 4.0 / 255.0,
        10.0 / 4.0 / 255.0,
        100.0 / 255.0,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?}");
    }
}

#[test]
fn rgb_to_grey_invert_normalise_and_crop() {
    // 3x3 RGB; the centre square of fraction 1/3 is the middle pixel.
    let mut px = vec![0u8; 27];
    px[12..15].copy_from_slice(&[200, 100, 50]);
    let f = Frame::new(3, 3, PixelFormat::Rgb8, &px).unwrap();
    let r = Recipe {
        crop: Crop::CenterSquare(1.0 / 3.0),
        invert: true,
        mean: [0.5, 0.0, 0.0],
        std: [0.25, 1.0, 1.0],
        ..recipe(1, 1, 1, Resize::Bilinear)
    };
    let grey = (0.299 * 200.0 + 0.587 * 100.0 + 0.114 * 50.0) / 255.0;
    let got = run(&r, &f);
    assert!(
        (got[0] - ((1.0 - grey) - 0.5) / 0.25).abs() < 1e-5,
        "{got:?}"
    );
    // Three channels keep R, G, B in CHW order.
    let r3 = Recipe {
        crop: Crop::CenterSquare(1.0 / 3.0),
        ..recipe(1, 1, 3, Resize::Area)
    };
    let got = run(&r3, &f);
    close(&got, &[200.0 / 255.0, 100.0 / 255.0, 50.0 / 255.0]);
    // A grey frame replicates into three channels.
    let g = Frame::new(1, 1, PixelFormat::Gray8, &[51]).unwrap();
    close(&run(&recipe(1, 1, 3, Resize::Area), &g), &[0.2; 3]);
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

#[test]
fn omniglot_recipe_turns_strokes_into_ones() {
    // A white 105x105 image with one black 15x15 block at the top-left.
    let mut px = vec![255u8; 105 * 105];
    for y in 0..15 {
        for x in 0..15 {
            px[y * 105 + x] = 0;
        }
    }
    let f = Frame::new(105, 105, PixelFormat::Gray8, &px).unwrap();
    let out = run(&Recipe::OMNIGLOT_28, &f);
    // 15 source pixels = 4 output pixels exactly (scale 3.75).
    assert_eq!(out[0], 1.0);
    assert_eq!(out[3 * 28 + 3], 1.0);
    assert_eq!(out[4], 0.0);
    assert_eq!(out[27 * 28 + 27], 0.0);
}

#[test]
fn bad_frames_and_recipes_are_errors() {
    assert_eq!(
        Frame::new(2, 2, PixelFormat::Rgb8, &[0; 4]).unwrap_err(),
        PreprocessError::FrameSize {
            expected: 12,
            found: 4
        }
    );
    assert_eq!(
        Frame::new(0, 2, PixelFormat::Gray8, &[]).unwrap_err(),
        PreprocessError::EmptyFrame
    );
    // A frame built by hand with an inconsistent buffer is caught too.
    let lying = Frame {
        width: 10,
        height: 10,
        format: PixelFormat::Gray8,
        pixels: &[0; 5],
    };
    let mut out = [0.0; 4];
    assert!(matches!(
        recipe(2, 2, 1, Resize::Area).apply(&lying, &mut out),
        Err(PreprocessError::FrameSize { .. })
    ));
    let ok = Frame::new(1, 1, PixelFormat::Gray8, &[0]).unwrap();
    let mut short = [0.0; 3];
    assert_eq!(
        recipe(2, 2, 1, Resize::Area).apply(&ok, &mut short),
        Err(PreprocessError::OutputSize {
            expected: 4,
            found: 3
        })
    );
    assert!(matches!(
        recipe(2, 2, 2, Resize::Area).apply(&ok, &mut out),
        Err(PreprocessError::BadRecipe(_))
    ));
    let zero_std = Recipe {
        std: [0.0; 3],
        ..recipe(2, 2, 1, Resize::Area)
    };
    assert!(matches!(
        zero_std.apply(&ok, &mut out),
        Err(PreprocessError::BadRecipe(_))
    ));
    let bad_crop = Recipe {
        crop: Crop::CenterSquare(1.5),
        ..recipe(2, 2, 1, Resize::Area)
    };
    assert!(matches!(
        bad_crop.apply(&ok, &mut out),
        Err(PreprocessError::BadRecipe(_))
    ));
}
