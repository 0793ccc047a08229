//! Augmentations against hand-computed cases.
use fewshot_host::augment::{
    affine, brightness_contrast, hflip, rotate90, AffineParams, AffineRanges, FaceAugment, Shape,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const S3: Shape = Shape {
    channels: 1,
    height: 3,
    width: 3,
};

fn identity() -> AffineParams {
    AffineParams {
        scale: 1.0,
        ..Default::default()
    }
}

#[test]
fn rotate90_by_hand() {
    // 1 2 3 / 4 5 6 / 7 8 9 turned a quarter counter-clockwise is 3 6 9 / 2 5 8 / 1 4 7.
    let img: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    assert_eq!(
        rotate90(&img, S3, 1),
        vec![3.0, 6.0, 9.0, 2.0, 5.0, 8.0, 1.0, 4.0, 7.0]
    );
    assert_eq!(
        rotate90(&img, S3, 2),
        (1..=9).rev().map(|v| v as f32).collect::<Vec<_>>()
    );
    let mut r = img.clone();
    for _ in 0..4 {
        r = rotate90(&r, S3, 1);
    }
    assert_eq!(r, img);
}

#[test]
fn affine_identity_shift_and_rotation() {
    let img: Vec<f32> = (0..25).map(|v| v as f32).collect();
    let s5 = Shape {
        channels: 1,
        height: 5,
        width: 5,
    };
    assert_eq!(affine(&img, s5, identity(), -1.0), img);
    // Shift right by one pixel: column 0 comes from outside (fill), column x from x - 1.
    let shifted = affine(
        &img,
        s5,
        AffineParams {
            shift: (1.0, 0.0),
            ..identity()
        },
        -1.0,
    );
    for y in 0..5 {
        assert_eq!(shifted[y * 5], -1.0);
        for x in 1..5 {
            assert!((shifted[y * 5 + x] - img[y * 5 + x - 1]).abs() < 1e-5);
        }
    }
    // A 90° rotation about the centre equals rotate90 (up to the direction convention).
    let rot = affine(
        &img,
        s5,
        AffineParams {
            rotation_deg: 90.0,
            ..identity()
        },
        -1.0,
    );
    let a = rotate90(&img, s5, 1);
    let b = rotate90(&img, s5, 3);
    let close = |v: &[f32]| rot.iter().zip(v).all(|(p, q)| (p - q).abs() < 1e-4);
    assert!(close(&a) || close(&b), "{rot:?}");
}

#[test]
fn flip_and_jitter_by_hand() {
    let img: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    assert_eq!(
        hflip(&img, S3),
        vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0, 9.0, 8.0, 7.0]
    );
    // Mean 5: (v - 5) * 2 + 5 + 1.
    assert_eq!(brightness_contrast(&[4.0, 6.0], 1.0, 2.0), vec![4.0, 8.0]);
}

#[test]
fn random_draws_stay_in_range_and_are_seeded() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..1000 {
        let p = AffineRanges::OMNIGLOT.sample(&mut rng, 28);
        assert!(p.rotation_deg.abs() <= 15.0 && p.shear.abs() <= 0.3);
        assert!((0.8..=1.2).contains(&p.scale));
        assert!(p.shift.0.abs() <= 2.8 && p.shift.1.abs() <= 2.8);
    }
    let a = AffineRanges::OMNIGLOT.sample(&mut ChaCha8Rng::seed_from_u64(9), 28);
    let b = AffineRanges::OMNIGLOT.sample(&mut ChaCha8Rng::seed_from_u64(9), 28);
    assert_eq!(a, b);
    let face = FaceAugment {
        max_shift: 2,
        flip: true,
        brightness: 0.1,
        contrast: 0.1,
    };
    let img: Vec<f32> = (0..9).map(|v| v as f32).collect();
    let x = face.apply(&mut ChaCha8Rng::seed_from_u64(1), &img, S3);
    let y = face.apply(&mut ChaCha8Rng::seed_from_u64(1), &img, S3);
    assert_eq!(x, y);
}
