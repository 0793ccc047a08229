//! Int8 storage and integer kernels against f64 references.
use fewshot_core::quant::{dot_i8, nearest_q8, quantize_into, QuantizedEmbedding};
use fewshot_core::Distance;
use proptest::prelude::*;

const DIM: usize = 24;

fn f64_distance(d: Distance, a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    match d {
        Distance::L2 => a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum(),
        Distance::Dot => -dot,
        Distance::Cosine => {
            let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            1.0 - dot / (na * nb).max(1e-8)
        }
    }
}

fn emb() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-4.0f32..4.0, DIM)
}

proptest! {
    #[test]
    fn quantization_error_is_at_most_half_a_step(x in emb()) {
        let q = QuantizedEmbedding::<DIM>::quantize(&x).unwrap();
        let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        prop_assert!((f64::from(q.scale()) - f64::from(max) / 127.0).abs() <= 1e-6 * f64::from(max));
        for (d, v) in q.dequantize().iter().zip(&x) {
            prop_assert!((f64::from(*d) - f64::from(*v)).abs() <= f64::from(q.scale()) * 0.5 * (1.0 + 1e-5));
        }
        prop_assert!(q.values().iter().all(|&v| v >= -127));
    }

    #[test]
    fn integer_kernels_equal_f64_on_dequantized(a in emb(), b in emb()) {
        let qa = QuantizedEmbedding::<DIM>::quantize(&a).unwrap();
        let qb = QuantizedEmbedding::<DIM>::quantize(&b).unwrap();
        let da: Vec<f64> = qa.dequantize().iter().map(|&v| f64::from(v)).collect();
        let db: Vec<f64> = qb.dequantize().iter().map(|&v| f64::from(v)).collect();
        // Exact integer dot product.
        let want_dot: i64 = qa.values().iter().zip(qb.values()).map(|(&x, &y)| i64::from(x) * i64::from(y)).sum();
        prop_assert_eq!(i64::from(dot_i8(qa.values(), qb.values())), want_dot);
        let mag = da.iter().map(|x| x * x).sum::<f64>() + db.iter().map(|x| x * x).sum::<f64>();
        for d in Distance::ALL {
            let got = f64::from(d.between_q8(qa.view(), qb.view()));
            let want = f64_distance(d, &da, &db);
            let t = match d { Distance::Cosine => 1e-5, _ => 1e-5 * mag + 1e-6 };
            prop_assert!((got - want).abs() <= t, "{d:?}: {got} vs {want}");
        }
    }

    #[test]
    fn int8_distances_close_to_f32(a in emb(), b in emb()) {
        // Bound from |x - x̂| <= s/2 per value: for l2, |‖a-b‖² - ‖â-b̂‖²| <= 2‖a-b‖·δ + δ²
        // with δ = ‖e_a - e_b‖ <= sqrt(DIM)·(s_a + s_b)/2.
        let qa = QuantizedEmbedding::<DIM>::quantize(&a).unwrap();
        let qb = QuantizedEmbedding::<DIM>::quantize(&b).unwrap();
        let delta = (DIM as f64).sqrt() * f64::from(qa.scale() + qb.scale()) / 2.0;
        let a64: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
        let b64: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
        let exact = f64_distance(Distance::L2, &a64, &b64);
        let got = f64::from(Distance::L2.between_q8(qa.view(), qb.view()));
        prop_assert!((got - exact).abs() <= 2.0 * exact.sqrt() * delta + delta * delta + 1e-3);
    }

    #[test]
    fn nearest_q8_matches_f64_on_dequantized(query in emb(), protos in prop::collection::vec(emb(), 1..10)) {
        let qq = QuantizedEmbedding::<DIM>::quantize(&query).unwrap();
        let qp: Vec<_> = protos.iter().map(|p| QuantizedEmbedding::<DIM>::quantize(p).unwrap()).collect();
        let dq: Vec<f64> = qq.dequantize().iter().map(|&v| f64::from(v)).collect();
        for d in Distance::ALL {
            let got = nearest_q8(qq.view(), qp.iter().map(|p| p.view()), d).unwrap();
            let ds: Vec<f64> = qp.iter().map(|p| {
                let v: Vec<f64> = p.dequantize().iter().map(|&x| f64::from(x)).collect();
                f64_distance(d, &dq, &v)
            }).collect();
            let min = ds.iter().copied().fold(f64::INFINITY, f64::min);
            prop_assert!((ds[got.index] - min).abs() <= 1e-3, "{d:?}");
        }
    }
}

#[test]
fn hand_computed_quantization() {
    // max 2.54 -> scale 0.02; 1.0 / 0.02 = 50; 0.01/0.02 = 0.5 rounds to even 0; 0.03/0.02 = 1.5 -> 2.
    let mut q = [0i8; 4];
    let s = quantize_into(&[2.54, -1.0, 0.01, 0.03], &mut q);
    assert!((s - 0.02).abs() < 1e-7);
    assert_eq!(q, [127, -50, 0, 2]);
    let s = quantize_into(&[0.0; 4], &mut q);
    assert_eq!((s, q), (0.0, [0; 4]));
    assert!(QuantizedEmbedding::<3>::quantize(&[1.0, f32::NAN, 0.0]).is_err());
    assert!(QuantizedEmbedding::<3>::quantize(&[1.0, 0.0]).is_err());
}
