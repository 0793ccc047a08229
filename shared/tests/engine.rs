//! The int8 engine against a naive f64 reference of the ONNX quantized
//! operators, and the blob decoder against damaged blobs.

use fewshot_core::engine::blob::{encode, Affine, LayerSpec, OutputSpec, Spec, HEADER_LEN};
use fewshot_core::engine::{Arena, Model};
use fewshot_core::{BlobError, Distance, EngineError, GalleryThresholds, Recipe};
use proptest::prelude::*;

/// The reference: ONNX `QuantizeLinear`, `QLinearConv` (requantised in f64,
/// rounded half to even), ReLU as saturation at the zero point, `MaxPool`.
fn reference(spec: &Spec, input: &[f32]) -> (Vec<u8>, Affine) {
    let r = &spec.recipe;
    let (mut c, mut h, mut w) = (r.channels, r.height, r.width);
    let q_in = spec.input;
    let mut x: Vec<u8> = input
        .iter()
        .map(|&v| {
            ((f64::from(v) / f64::from(q_in.scale)).round_ties_even() + f64::from(q_in.zero_point))
                .clamp(0.0, 255.0) as u8
        })
        .collect();
    let mut q = q_in;
    for l in &spec.layers {
        let oh = (h + 2 * l.pad - l.k) / l.stride + 1;
        let ow = (w + 2 * l.pad - l.k) / l.stride + 1;
        let gin = if l.depthwise { 1 } else { c };
        let mut y = vec![0u8; l.cout * oh * ow];
        for oc in 0..l.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = i64::from(l.bias[oc]);
                    for g in 0..gin {
                        let ic = if l.depthwise { oc } else { g };
                        for ky in 0..l.k {
                            for kx in 0..l.k {
                                let iy = (oy * l.stride + ky) as i64 - l.pad as i64;
                                let ix = (ox * l.stride + kx) as i64 - l.pad as i64;
                                let v = if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                    0
                                } else {
                                    i64::from(x[ic * h * w + iy as usize * w + ix as usize])
                                        - i64::from(q.zero_point)
                                };
                                let wt = l.weight[((oc * gin + g) * l.k + ky) * l.k + kx];
                                acc += v * i64::from(wt);
                            }
                        }
                    }
                    let real = acc as f64 * f64::from(q.scale) * f64::from(l.weight_scale[oc])
                        / f64::from(l.out.scale);
                    let lo = if l.relu {
                        f64::from(l.out.zero_point)
                    } else {
                        0.0
                    };
                    y[(oc * oh + oy) * ow + ox] = (real.round_ties_even()
                        + f64::from(l.out.zero_point))
                    .clamp(lo, 255.0) as u8;
                }
            }
        }
        (c, h, w) = (l.cout, oh, ow);
        if l.pool {
            let (ph, pw) = (oh / 2, ow / 2);
            let mut p = vec![0u8; c * ph * pw];
            for ch in 0..c {
                for py in 0..ph {
                    for px in 0..pw {
                        let at = |yy: usize, xx: usize| y[(ch * oh + yy) * ow + xx];
                        p[(ch * ph + py) * pw + px] = at(2 * py, 2 * px)
                            .max(at(2 * py, 2 * px + 1))
                            .max(at(2 * py + 1, 2 * px))
                            .max(at(2 * py + 1, 2 * px + 1));
                    }
                }
            }
            (h, w) = (ph, pw);
            y = p;
        }
        x = y;
        q = l.out;
    }
    (x, q)
}

fn recipe(channels: usize, side: usize) -> Recipe {
    Recipe {
        width: side,
        height: side,
        channels,
        ..Recipe::OMNIGLOT_28
    }
}

/// A random layer stack from a seed (small, so the reference is quick).
fn random_spec(seed: u64, channels: usize, side: usize, linear: bool) -> Spec {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut layers = Vec::new();
    let (mut c, mut h) = (channels, side);
    let depth = 1 + (next() % 3) as usize;
    for i in 0..depth {
        let kind = next() % 3;
        let depthwise = kind == 2 && i > 0;
        let (k, stride, pad) = match next() % 3 {
            0 => (3, 1, 1),
            1 => (3, 2, 1),
            _ => (1, 1, 0),
        };
        let cout = if depthwise {
            c
        } else {
            1 + (next() % 6) as usize
        };
        let oh = (h + 2 * pad - k) / stride + 1;
        let pool = oh >= 4 && next() % 2 == 0;
        let gin = if depthwise { 1 } else { c };
        let n = cout * gin * k * k;
        layers.push(LayerSpec {
            cout,
            k,
            stride,
            pad,
            depthwise,
            relu: next() % 4 != 0,
            pool,
            out: Affine {
                scale: 0.01 + (next() % 100) as f32 / 500.0,
                zero_point: if next() % 2 == 0 {
                    0
                } else {
                    (next() % 200) as u8
                },
            },
            weight_scale: (0..cout)
                .map(|_| 0.001 + (next() % 100) as f32 / 5000.0)
                .collect(),
            bias: (0..cout).map(|_| (next() % 2001) as i32 - 1000).collect(),
            weight: (0..n)
                .map(|_| ((next() % 255) as i32 - 127) as i8)
                .collect(),
        });
        c = cout;
        h = if pool { oh / 2 } else { oh };
    }
    let features = c * h * h;
    let output = if linear {
        let dim = 1 + (next() % 7) as usize;
        OutputSpec::Linear {
            dim,
            weight_scale: (0..dim)
                .map(|_| 0.001 + (next() % 50) as f32 / 1000.0)
                .collect(),
            bias: (0..dim)
                .map(|_| (next() % 100) as f32 / 50.0 - 1.0)
                .collect(),
            weight: (0..dim * features)
                .map(|_| ((next() % 255) as i32 - 127) as i8)
                .collect(),
        }
    } else {
        OutputSpec::Flatten
    };
    Spec {
        recipe: recipe(channels, side),
        distance: Distance::L2,
        threshold: None,
        gallery_thresholds: None,
        input: Affine {
            scale: 1.0 / 255.0 + (next() % 10) as f32 / 1000.0,
            zero_point: (next() % 256) as u8,
        },
        layers,
        output,
    }
}

fn run(model: &Model<'_>, input: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let h = model.header();
    let mut bytes = vec![0u8; h.arena_bytes];
    let mut words = vec![0i32; h.accumulator_words];
    let mut arena = Arena::new(&mut bytes, &mut words);
    let features = model.features(input, &mut arena).unwrap().0.to_vec();
    let mut out = vec![0f32; model.dim()];
    model.embed(input, &mut arena, &mut out).unwrap();
    (features, out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every activation within one step of the reference (they differ only
    /// where the exact product is a tie: the engine rounds half up, ONNX half
    /// to even); the output stage is the f64 formula on the engine's codes.
    #[test]
    fn engine_matches_the_reference(seed in any::<u64>(), channels in prop::sample::select(vec![1usize, 3]),
                                    side in 4usize..14, linear in any::<bool>(), pixels in any::<u64>()) {
        let spec = random_spec(seed, channels, side, linear);
        let blob = encode(&spec).unwrap();
        let model = Model::from_bytes(&blob).unwrap();
        let mut p = pixels | 1;
        let input: Vec<f32> = (0..model.input_len()).map(|_| {
            p ^= p << 13; p ^= p >> 7; p ^= p << 17;
            (p % 1000) as f32 / 1000.0 * 1.4 - 0.7
        }).collect();
        let (features, out) = run(&model, &input);
        let (expected, q) = reference(&spec, &input);
        prop_assert_eq!(features.len(), expected.len());
        for (i, (&a, &b)) in features.iter().zip(&expected).enumerate() {
            prop_assert!((i32::from(a) - i32::from(b)).abs() <= 1, "activation {}: engine {} reference {}", i, a, b);
        }
        // The output stage on the engine's own codes, in f64.
        let deq: Vec<f64> = features.iter().map(|&v| (f64::from(v) - f64::from(q.zero_point)) * f64::from(q.scale)).collect();
        let want: Vec<f64> = match &spec.output {
            OutputSpec::Flatten => deq,
            OutputSpec::Linear { dim, weight_scale, bias, weight } => (0..*dim).map(|o| {
                deq.iter().enumerate().map(|(i, &v)| v * f64::from(weight[o * features.len() + i]) * f64::from(weight_scale[o])).sum::<f64>()
                    + f64::from(bias[o])
            }).collect(),
        };
        for (a, b) in out.iter().zip(&want) {
            prop_assert!((f64::from(*a) - b).abs() <= 1e-4 * (1.0 + b.abs()), "output {} vs {}", a, b);
        }
    }
}

/// A hand-computed case: one 1×1 convolution, scale 1 everywhere.
#[test]
fn a_hand_computed_layer() {
    let spec = Spec {
        recipe: recipe(1, 2),
        distance: Distance::Cosine,
        threshold: Some(0.25),
        gallery_thresholds: GalleryThresholds::new(&[(10, 0.3), (50, 0.2)]).ok(),
        input: Affine {
            scale: 1.0,
            zero_point: 10,
        },
        layers: vec![LayerSpec {
            cout: 2,
            k: 1,
            stride: 1,
            pad: 0,
            depthwise: false,
            relu: true,
            pool: false,
            out: Affine {
                scale: 2.0,
                zero_point: 3,
            },
            weight_scale: vec![1.0, 1.0],
            bias: vec![1, -20],
            weight: vec![3, -1],
        }],
        output: OutputSpec::Flatten,
    };
    let blob = encode(&spec).unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(model.header().threshold, Some(0.25));
    assert_eq!(
        model
            .header()
            .gallery_thresholds
            .unwrap()
            .points()
            .collect::<Vec<_>>(),
        vec![(10, 0.3), (50, 0.2)]
    );
    assert_eq!(model.header().distance, Distance::Cosine);
    assert_eq!(model.dim(), 8);
    // Inputs 0, 1, 2, 7 → codes 10, 11, 12, 17 → x − zp = 0, 1, 2, 7.
    let (features, out) = run(&model, &[0.0, 1.0, 2.0, 7.0]);
    // Channel 0: (1 + 3x) / 2 = 0.5, 2, 3.5, 11 → half up 1, 2, 4, 11 → +3.
    // Channel 1: (−20 − x) / 2 = −10, −10.5, −11, −13.5 → clamped at zp 3 (ReLU).
    assert_eq!(features, vec![4, 5, 7, 14, 3, 3, 3, 3]);
    assert_eq!(out, vec![2.0, 4.0, 8.0, 22.0, 0.0, 0.0, 0.0, 0.0]);
}

fn small_blob() -> Vec<u8> {
    encode(&random_spec(7, 1, 8, true)).unwrap()
}

/// Recomputes the checksum after an edit, so the field check itself is tested.
fn reseal(mut b: Vec<u8>) -> Vec<u8> {
    let n = b.len();
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn every_truncation_and_every_flipped_byte_is_refused() {
    let blob = small_blob();
    for n in 0..blob.len() {
        assert!(Model::from_bytes(&blob[..n]).is_err(), "truncated to {n}");
    }
    for i in 0..blob.len() {
        let mut b = blob.clone();
        b[i] ^= 0x5a;
        assert!(Model::from_bytes(&b).is_err(), "byte {i} flipped");
    }
}

#[test]
fn bad_fields_are_named() {
    let blob = small_blob();
    let field = |at: usize, v: &[u8]| {
        let mut b = blob.clone();
        b[at..at + v.len()].copy_from_slice(v);
        Model::from_bytes(&reseal(b)).unwrap_err()
    };
    let invalid = |e: BlobError| match e {
        BlobError::Invalid { field, .. } => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(invalid(field(16, &[2])), "recipe channels");
    assert_eq!(invalid(field(17, &[9])), "recipe resize");
    assert_eq!(invalid(field(19, &[7])), "recipe crop");
    // std[0] = 0.
    assert_eq!(
        invalid(field(20 + 40 + 12, &0f32.to_le_bytes())),
        "recipe std"
    );
    assert_eq!(invalid(field(84, &[3])), "distance");
    assert_eq!(
        invalid(field(86, &f32::INFINITY.to_le_bytes())),
        "threshold"
    );
    // With a linear layer the mismatch is named on the linear side.
    assert_eq!(invalid(field(155, &999u16.to_le_bytes())), "linear size");
    assert_eq!(invalid(field(157, &1u32.to_le_bytes())), "arena bytes");
    assert_eq!(invalid(field(165, &(-1f32).to_le_bytes())), "input scale");
    assert_eq!(invalid(field(170, &[0])), "layer count");
    // Gallery thresholds: too many points, sizes not increasing, junk after the last.
    assert_eq!(invalid(field(90, &[9])), "gallery thresholds");
    assert_eq!(invalid(field(90, &[1])), "gallery thresholds");
    assert_eq!(invalid(field(95, &[1])), "gallery thresholds");
    assert_eq!(
        Model::from_bytes(&reseal({
            let mut b = blob.clone();
            b[..8].copy_from_slice(b"FSMCU\0\0\x02");
            b
        }))
        .unwrap_err(),
        BlobError::BadMagic
    );
    assert_eq!(HEADER_LEN, 171);
}

#[test]
fn wrong_buffers_are_errors() {
    let blob = small_blob();
    let model = Model::from_bytes(&blob).unwrap();
    let h = *model.header();
    let mut bytes = vec![0u8; h.arena_bytes];
    let mut words = vec![0i32; h.accumulator_words];
    let mut arena = Arena::new(&mut bytes, &mut words);
    let input = vec![0.5f32; model.input_len()];
    assert!(matches!(
        model.features(&input[1..], &mut arena),
        Err(EngineError::InputLen { .. })
    ));
    let mut out = vec![0f32; model.dim() + 1];
    assert!(matches!(
        model.embed(&input, &mut arena, &mut out),
        Err(EngineError::OutputLen { .. })
    ));
    let mut small = vec![0u8; h.arena_bytes - 1];
    let mut arena = Arena::new(&mut small, &mut words);
    assert!(matches!(
        model.features(&input, &mut arena),
        Err(EngineError::ArenaTooSmall { .. })
    ));
}
