//! Distances, prototypes and classification against a naive f64 reference.
use fewshot_core::classify::{nearest, softmax_neg_distances};
use fewshot_core::prototype::{add_shot, l2_normalize, mean_into};
use fewshot_core::{CoreError, Decision, Distance, OpenSet};
use proptest::prelude::*;

fn f64_distance(d: Distance, a: &[f32], b: &[f32]) -> f64 {
    let a: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
    let b: Vec<f64> = b.iter().map(|&x| f64::from(x)).collect();
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    match d {
        Distance::L2 => a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum(),
        Distance::Dot => -dot,
        Distance::Cosine => {
            let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            1.0 - dot / (na * nb).max(1e-8)
        }
    }
}

/// Rounding bound for an f32 sum of `n` terms whose magnitudes sum to `mag`.
fn tol(d: Distance, a: &[f32], b: &[f32]) -> f64 {
    let mag: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| match d {
            Distance::L2 => (f64::from(x) - f64::from(y)).powi(2),
            _ => (f64::from(x) * f64::from(y)).abs(),
        })
        .sum();
    let scale = match d {
        // Cosine is a ratio of order one.
        Distance::Cosine => 1.0,
        _ => mag,
    };
    1e-5 * scale + 1e-6
}

fn vecs(n: usize, dim: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Vec<f32>>> {
    dim.prop_flat_map(move |d| prop::collection::vec(prop::collection::vec(-10.0f32..10.0, d), n))
}

proptest! {
    #[test]
    fn distances_match_f64(v in vecs(2, 1..96)) {
        for d in Distance::ALL {
            let got = f64::from(d.between(&v[0], &v[1]));
            let want = f64_distance(d, &v[0], &v[1]);
            prop_assert!((got - want).abs() <= tol(d, &v[0], &v[1]), "{d:?}: {got} vs {want}");
        }
    }

    #[test]
    fn distance_to_self_is_minimal(v in vecs(1, 1..64)) {
        let a = &v[0];
        prop_assert_eq!(Distance::L2.between(a, a), 0.0);
        if a.iter().any(|x| x.abs() > 1e-3) {
            prop_assert!(Distance::Cosine.between(a, a).abs() < 1e-5);
        }
    }

    #[test]
    fn prototype_is_f64_mean(shots in (1usize..6).prop_flat_map(|n| vecs(n, 1..48))) {
        let dim = shots[0].len();
        let mut proto = vec![0.0f32; dim];
        let n = mean_into(shots.iter().map(|s| &s[..]), &mut proto).unwrap();
        prop_assert_eq!(n, shots.len());
        for j in 0..dim {
            let want = shots.iter().map(|s| f64::from(s[j])).sum::<f64>() / n as f64;
            prop_assert!((f64::from(proto[j]) - want).abs() <= 1e-5 * 10.0);
        }
    }

    #[test]
    fn running_mean_equals_batch_mean(shots in (1usize..8).prop_flat_map(|n| vecs(n, 1..48))) {
        let dim = shots[0].len();
        let mut running = shots[0].clone();
        let mut count = 1;
        for s in &shots[1..] {
            count = add_shot(&mut running, count, s).unwrap();
        }
        prop_assert_eq!(count as usize, shots.len());
        for j in 0..dim {
            let want = shots.iter().map(|s| f64::from(s[j])).sum::<f64>() / shots.len() as f64;
            prop_assert!((f64::from(running[j]) - want).abs() <= 1e-4, "{} vs {want}", running[j]);
        }
    }

    #[test]
    fn normalize_gives_unit_norm(v in vecs(1, 1..64)) {
        let mut x = v[0].clone();
        let before: f64 = v[0].iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
        l2_normalize(&mut x);
        if before > 1e-3 {
            let after: f64 = x.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
            prop_assert!((after - 1.0).abs() < 1e-5);
            for (a, b) in x.iter().zip(&v[0]) {
                prop_assert!((f64::from(*a) - f64::from(*b) / before).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn nearest_reports_the_pairwise_distance_bit_for_bit(protos in (1usize..12).prop_flat_map(|n| vecs(n + 1, 1..70))) {
        // `nearest` sums the query's norm once for cosine: the same value.
        let (query, protos) = protos.split_first().unwrap();
        for d in Distance::ALL {
            let got = nearest(query, protos.iter().map(|p| &p[..]), d).unwrap();
            let want = protos.iter().map(|p| d.between(query, p)).fold(f32::INFINITY, f32::min);
            prop_assert_eq!(got.distance.to_bits(), want.to_bits(), "{:?}", d);
        }
    }

    #[test]
    fn nearest_matches_f64_argmin(protos in (1usize..12).prop_flat_map(|n| vecs(n + 1, 1..32))) {
        let (query, protos) = protos.split_first().unwrap();
        for d in Distance::ALL {
            let got = nearest(query, protos.iter().map(|p| &p[..]), d).unwrap();
            let mut want: Vec<(f64, usize)> = protos.iter().enumerate().map(|(i, p)| (f64_distance(d, query, p), i)).collect();
            want.sort_by(|a, b| a.0.total_cmp(&b.0));
            let t = protos.iter().map(|p| tol(d, query, p)).fold(0.0, f64::max);
            // The chosen prototype is at the minimum distance (equal to it up to rounding).
            prop_assert!((f64_distance(d, query, &protos[got.index]) - want[0].0).abs() <= 2.0 * t);
            prop_assert!((f64::from(got.distance) - want[0].0).abs() <= 2.0 * t);
            if protos.len() > 1 {
                prop_assert!((f64::from(got.margin) - (want[1].0 - want[0].0)).abs() <= 4.0 * t);
            } else {
                prop_assert!(got.margin.is_infinite());
            }
        }
    }

    #[test]
    fn softmax_matches_f64(ds in prop::collection::vec(0.0f32..200.0, 1..30)) {
        let mut probs = vec![0.0f32; ds.len()];
        softmax_neg_distances(&ds, &mut probs);
        let z: f64 = ds.iter().map(|&d| (-f64::from(d)).exp()).sum();
        if z > 1e-300 {
            for (p, d) in probs.iter().zip(&ds) {
                prop_assert!((f64::from(*p) - (-f64::from(*d)).exp() / z).abs() < 1e-5);
            }
        }
        prop_assert!((probs.iter().map(|&p| f64::from(p)).sum::<f64>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn hand_computed_distances() {
    let a = [1.0, 2.0, 2.0];
    let b = [0.0, 2.0, 0.0];
    assert_eq!(Distance::L2.between(&a, &b), 5.0);
    assert_eq!(Distance::Dot.between(&a, &b), -4.0);
    // cos = 4 / (3 * 2)
    assert!((Distance::Cosine.between(&a, &b) - (1.0 - 4.0 / 6.0)).abs() < 1e-7);
    // The zero vector is at cosine distance 1 from everything, never NaN.
    assert_eq!(Distance::Cosine.between(&[0.0; 3], &b), 1.0);
}

#[test]
fn hand_computed_classification_and_open_set() {
    let protos = [[0.0f32, 0.0], [3.0, 0.0], [0.0, 1.0]];
    let q = [0.5, 0.2];
    let n = nearest(&q, protos.iter().map(|p| &p[..]), Distance::L2).unwrap();
    // d = 0.29, 6.29, 0.89
    assert_eq!(n.index, 0);
    assert!((n.distance - 0.29).abs() < 1e-6);
    assert!((n.margin - 0.6).abs() < 1e-6);
    assert_eq!(OpenSet::threshold(0.3).decide(Some(n)), Decision::Known(n));
    assert_eq!(
        OpenSet::threshold(0.28).decide(Some(n)),
        Decision::Unknown(Some(n))
    );
    let strict = OpenSet {
        max_distance: 1.0,
        min_margin: 0.7,
    };
    assert_eq!(strict.decide(Some(n)), Decision::Unknown(Some(n)));
    assert_eq!(strict.decide(None), Decision::Unknown(None));

    let mut probs = [0.0; 3];
    softmax_neg_distances(&[0.29, 6.29, 0.89], &mut probs);
    let z = (-0.29f64).exp() + (-6.29f64).exp() + (-0.89f64).exp();
    assert!((f64::from(probs[0]) - (-0.29f64).exp() / z).abs() < 1e-6);
}

#[test]
fn bad_inputs_are_errors() {
    let empty: [&[f32]; 0] = [];
    assert_eq!(nearest(&[1.0], empty, Distance::L2), Err(CoreError::Empty));
    let protos: [&[f32]; 1] = [&[1.0, 2.0]];
    assert_eq!(
        nearest(&[1.0], protos, Distance::L2),
        Err(CoreError::DimMismatch {
            expected: 1,
            found: 2
        })
    );
    let protos: [&[f32]; 1] = [&[1.0]];
    assert_eq!(
        nearest(&[f32::NAN], protos, Distance::L2),
        Err(CoreError::NonFinite)
    );
    let mut p = [0.0f32; 2];
    assert_eq!(mean_into(empty, &mut p), Err(CoreError::Empty));
    assert_eq!(
        add_shot(&mut p, 1, &[f32::INFINITY, 0.0]),
        Err(CoreError::NonFinite)
    );
}
