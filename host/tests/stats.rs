//! Tests of `fewshot_host::stats` against hand-computed cases and naive
//! quadratic references.

use fewshot_host::stats::{
    accuracy_at, all_finite, auc, best_threshold, mean_ci95, open_set_roc, proportion_ci95,
    tar_at_far, verification_roc, RocPoint,
};
use proptest::prelude::*;

// ---------------------------------------------------------- proportion_ci95

const Z95: f64 = 1.959_963_984_540_054;

#[test]
fn proportion_ci95_hand_computed() {
    // 19 of 200 wrong (the committed ProtoNet on Lake's runs 01-10). The Wilson
    // interval is the set of p0 with (p - p0)^2 <= z^2 p0 (1 - p0) / n; its ends
    // are the roots of (1 + z^2/n) p0^2 - (2p + z^2/n) p0 + p^2 = 0, here
    // 0.0616631027173865 and 0.1436016116481994 (30-digit arithmetic).
    let c = proportion_ci95(19, 200).expect("19 <= 200");
    assert!((c.rate - 0.095).abs() < 1e-15);
    assert!((c.low - 0.061_663_102_717_386_5).abs() < 1e-12, "{}", c.low);
    assert!(
        (c.high - 0.143_601_611_648_199_4).abs() < 1e-12,
        "{}",
        c.high
    );
    // None wrong: the interval starts at 0 and ends at z^2 / (n + z^2).
    let c = proportion_ci95(0, 20).expect("0 <= 20");
    assert_eq!(c.low, 0.0);
    assert!((c.high - Z95 * Z95 / (20.0 + Z95 * Z95)).abs() < 1e-12);
    let c = proportion_ci95(20, 20).expect("20 <= 20");
    assert_eq!(c.high, 1.0);
    assert!((c.low - 20.0 / (20.0 + Z95 * Z95)).abs() < 1e-12);
}

#[test]
fn proportion_ci95_refuses_empty_and_impossible() {
    assert_eq!(proportion_ci95(0, 0), None);
    assert_eq!(proportion_ci95(3, 2), None);
}

proptest! {
    /// Each end is a root of the score test's quadratic (solved here by the
    /// quadratic formula in f64) and the interval holds the rate.
    #[test]
    fn proportion_ci95_ends_solve_the_score_test(n in 1usize..5_000, frac in 0.0f64..=1.0) {
        let k = ((n as f64) * frac).floor() as usize;
        let c = proportion_ci95(k, n).expect("k <= n");
        let (p, nf) = (k as f64 / n as f64, n as f64);
        let a = 1.0 + Z95 * Z95 / nf;
        let b = -(2.0 * p + Z95 * Z95 / nf);
        let cc = p * p;
        let disc = (b * b - 4.0 * a * cc).max(0.0).sqrt();
        let (r1, r2) = ((-b - disc) / (2.0 * a), (-b + disc) / (2.0 * a));
        prop_assert!((c.low - r1.max(0.0)).abs() < 1e-9, "low {} root {}", c.low, r1);
        prop_assert!((c.high - r2.min(1.0)).abs() < 1e-9, "high {} root {}", c.high, r2);
        prop_assert!(c.low <= p + 1e-15 && p <= c.high + 1e-15);
    }
}

// ---------------------------------------------------------------- mean_ci95

#[test]
fn mean_ci95_hand_computed() {
    // mean = (0.9 + 1.0 + 0.8 + 0.7) / 4 = 3.4 / 4 = 0.85
    // deviations: 0.05, 0.15, -0.05, -0.15; squares: 0.0025, 0.0225, 0.0025, 0.0225
    // sum of squares = 0.05; sample variance = 0.05 / 3 = 1/60
    // sd = sqrt(1/60) = 0.129099444873580...
    // ci95 = 1.96 * sd / sqrt(4) = 0.98 * 0.129099444873580... = 0.126517455976109...
    let m = mean_ci95(&[0.9, 1.0, 0.8, 0.7]).expect("non-empty finite input");
    assert_eq!(m.n, 4);
    assert!((m.mean - 0.85).abs() < 1e-12, "mean {}", m.mean);
    assert!(
        (m.ci95 - 0.126_517_455_976_109).abs() < 1e-12,
        "ci95 {}",
        m.ci95
    );
}

#[test]
fn mean_ci95_single_value_has_zero_width() {
    assert_eq!(
        mean_ci95(&[3.5]),
        Some(fewshot_host::stats::MeanCi {
            mean: 3.5,
            ci95: 0.0,
            n: 1
        })
    );
}

#[test]
fn mean_ci95_constant_values_have_zero_width() {
    let m = mean_ci95(&[2.0, 2.0, 2.0]).expect("finite");
    assert_eq!(m.mean, 2.0);
    assert_eq!(m.ci95, 0.0);
}

#[test]
fn mean_ci95_rejects_empty_and_non_finite() {
    assert_eq!(mean_ci95(&[]), None);
    assert_eq!(mean_ci95(&[1.0, f64::NAN]), None);
    assert_eq!(mean_ci95(&[f64::INFINITY, 1.0]), None);
}

// ---------------------------------------------------------------- ROC

#[test]
fn verification_roc_hand_computed_with_ties() {
    // genuine {1, 2, 2}, impostor {2, 3}
    // t = 1: genuine accepted 1/3, impostors 0/2
    // t = 2: genuine 3/3, impostors 1/2 (the tie at 2 is accepted on both sides)
    // t = 3: genuine 3/3, impostors 2/2
    let roc = verification_roc(&[1.0, 2.0, 2.0], &[2.0, 3.0]);
    assert_eq!(roc.len(), 4);
    assert!(roc[0].threshold < 1.0);
    assert_eq!((roc[0].far, roc[0].tar), (0.0, 0.0));
    assert_eq!(
        roc[1..],
        [
            RocPoint {
                threshold: 1.0,
                far: 0.0,
                tar: 1.0 / 3.0
            },
            RocPoint {
                threshold: 2.0,
                far: 0.5,
                tar: 1.0
            },
            RocPoint {
                threshold: 3.0,
                far: 1.0,
                tar: 1.0
            },
        ]
    );
}

#[test]
fn verification_roc_endpoints() {
    let genuine = [0.3, 0.1, 0.7, 0.2, 0.9];
    let impostor = [0.8, 0.4, 1.3, 0.6];
    let roc = verification_roc(&genuine, &impostor);
    let first = roc.first().expect("non-empty");
    let last = roc.last().expect("non-empty");
    assert_eq!((first.far, first.tar), (0.0, 0.0));
    assert!(first.threshold < 0.1);
    assert_eq!((last.far, last.tar), (1.0, 1.0));
    assert_eq!(last.threshold, 1.3);
    // 9 distinct values + the leading point, strictly increasing thresholds.
    assert_eq!(roc.len(), 10);
    assert!(roc.windows(2).all(|w| w[0].threshold < w[1].threshold));
}

#[test]
fn roc_rejects_empty_sides_and_non_finite() {
    assert!(verification_roc(&[], &[1.0]).is_empty());
    assert!(verification_roc(&[1.0], &[]).is_empty());
    assert!(verification_roc(&[1.0, f32::NAN], &[2.0]).is_empty());
    assert!(verification_roc(&[1.0], &[f32::INFINITY]).is_empty());
    assert!(open_set_roc(&[], &[1.0]).is_empty());
    assert!(open_set_roc(&[(1.0, true)], &[]).is_empty());
    assert!(open_set_roc(&[(f32::NAN, true)], &[1.0]).is_empty());
    assert!(open_set_roc(&[(1.0, true)], &[f32::NEG_INFINITY]).is_empty());
}

#[test]
fn all_finite_detects_nan_and_infinity() {
    assert!(all_finite(&[]));
    assert!(all_finite(&[0.0, -1.0, f32::MAX]));
    assert!(!all_finite(&[0.0, f32::NAN]));
    assert!(!all_finite(&[f32::INFINITY]));
}

/// Open-set scores used by the hand-computed open-set tests.
///
/// genuine probes (distance, nearest identity correct):
///   (1, yes) (2, yes) (3, NO) (4, yes) (7, yes)       -> 5 genuine probes
/// strangers: 3.5, 6, 8, 9                             -> 4 strangers
///
/// threshold | correct genuine <= t | strangers <= t | TAR | FAR
///   < 1     | 0                    | 0              | 0   | 0
///     1     | 1                    | 0              | 1/5 | 0
///     2     | 2                    | 0              | 2/5 | 0
///     3     | 2 (wrong identity)   | 0              | 2/5 | 0
///     3.5   | 2                    | 1              | 2/5 | 1/4
///     4     | 3                    | 1              | 3/5 | 1/4
///     6     | 3                    | 2              | 3/5 | 2/4
///     7     | 4                    | 2              | 4/5 | 2/4
///     8     | 4                    | 3              | 4/5 | 3/4
///     9     | 4                    | 4              | 4/5 | 1
fn door_scores() -> (Vec<(f32, bool)>, Vec<f32>) {
    (
        vec![
            (4.0, true),
            (1.0, true),
            (7.0, true),
            (3.0, false),
            (2.0, true),
        ],
        vec![8.0, 3.5, 9.0, 6.0],
    )
}

#[test]
fn open_set_roc_hand_computed() {
    let (genuine, strangers) = door_scores();
    let roc = open_set_roc(&genuine, &strangers);
    let expected: [(f32, f64, f64); 9] = [
        (1.0, 0.0, 0.2),
        (2.0, 0.0, 0.4),
        (3.0, 0.0, 0.4),
        (3.5, 0.25, 0.4),
        (4.0, 0.25, 0.6),
        (6.0, 0.5, 0.6),
        (7.0, 0.5, 0.8),
        (8.0, 0.75, 0.8),
        (9.0, 1.0, 0.8),
    ];
    assert_eq!(roc.len(), expected.len() + 1);
    assert!(roc[0].threshold < 1.0);
    assert_eq!((roc[0].far, roc[0].tar), (0.0, 0.0));
    for (p, &(threshold, far, tar)) in roc[1..].iter().zip(&expected) {
        assert_eq!(p.threshold, threshold);
        assert!((p.far - far).abs() < 1e-15, "{p:?}");
        assert!((p.tar - tar).abs() < 1e-15, "{p:?}");
    }
}

#[test]
fn tar_at_far_hand_computed() {
    let (genuine, strangers) = door_scores();
    let roc = open_set_roc(&genuine, &strangers);

    // FAR 0: the best TAR is 2/5, reached at t = 2 and t = 3 (the probe at 3 has
    // the wrong identity, so it adds nothing); the larger threshold, 3, wins.
    let p = tar_at_far(&roc, 0.0).expect("some point has far 0");
    assert_eq!(p.threshold, 3.0);
    assert_eq!(p.far, 0.0);
    assert!((p.tar - 0.4).abs() < 1e-15);

    // FAR 1/4: t = 3.5 and t = 4 are also allowed; t = 4 reaches TAR 3/5.
    let p = tar_at_far(&roc, 0.25).expect("some point has far <= 1/4");
    assert_eq!(p.threshold, 4.0);
    assert_eq!(p.far, 0.25);
    assert!((p.tar - 0.6).abs() < 1e-15);

    // FAR 1/2: t = 7 reaches 4/5.
    assert_eq!(tar_at_far(&roc, 0.5).map(|p| p.threshold), Some(7.0));
    // FAR 1: TAR 4/5 is reached at 7, 8 and 9; the largest threshold wins.
    assert_eq!(tar_at_far(&roc, 1.0).map(|p| p.threshold), Some(9.0));

    // Unsorted input gives the same answer.
    let mut shuffled = roc.clone();
    shuffled.reverse();
    shuffled.swap(1, 6);
    assert_eq!(tar_at_far(&shuffled, 0.25), tar_at_far(&roc, 0.25));
}

#[test]
fn tar_at_far_none_cases() {
    assert_eq!(tar_at_far(&[], 0.5), None);
    let roc = verification_roc(&[1.0], &[2.0]);
    assert_eq!(tar_at_far(&roc, -0.1), None);
    assert_eq!(tar_at_far(&roc, f64::NAN), None);
}

// ---------------------------------------------------------------- AUC

#[test]
fn auc_hand_computed_with_ties() {
    // genuine {0.1, 0.3, 0.5}, impostor {0.3, 0.6}; a pair scores 1 when the
    // genuine distance is smaller, 1/2 on a tie, 0 otherwise:
    //   (0.1, 0.3) 1    (0.1, 0.6) 1
    //   (0.3, 0.3) 1/2  (0.3, 0.6) 1
    //   (0.5, 0.3) 0    (0.5, 0.6) 1
    // total 4.5 over 6 pairs = 0.75
    assert_eq!(auc(&[0.1, 0.3, 0.5], &[0.3, 0.6]), Some(0.75));
}

#[test]
fn auc_extremes() {
    assert_eq!(auc(&[0.1, 0.2], &[0.3, 0.4]), Some(1.0));
    assert_eq!(auc(&[0.3, 0.4], &[0.1, 0.2]), Some(0.0));
    assert_eq!(auc(&[0.5, 0.5], &[0.5]), Some(0.5));
    // -0.0 and 0.0 are the same distance: a tie.
    assert_eq!(auc(&[-0.0], &[0.0]), Some(0.5));
}

#[test]
fn auc_none_cases() {
    assert_eq!(auc(&[], &[1.0]), None);
    assert_eq!(auc(&[1.0], &[]), None);
    assert_eq!(auc(&[f32::NAN], &[1.0]), None);
    assert_eq!(auc(&[1.0], &[f32::INFINITY]), None);
}

// ---------------------------------------------------------------- thresholds

#[test]
fn accuracy_at_hand_computed() {
    // genuine {1, 2, 5}, impostor {3, 4, 6}, t = 2.5:
    // genuine accepted: 1, 2 -> 2; impostors rejected: 3, 4, 6 -> 3; 5 / 6.
    assert_eq!(
        accuracy_at(2.5, &[1.0, 2.0, 5.0], &[3.0, 4.0, 6.0]),
        5.0 / 6.0
    );
    // At t = 2 the genuine distance 2 is accepted (<=).
    assert_eq!(accuracy_at(2.0, &[2.0], &[3.0]), 1.0);
    assert_eq!(accuracy_at(f32::INFINITY, &[2.0], &[3.0]), 0.5);
    assert!(accuracy_at(1.0, &[], &[]).is_nan());
    assert!(accuracy_at(f32::NAN, &[1.0], &[2.0]).is_nan());
    assert!(accuracy_at(1.0, &[f32::NAN], &[2.0]).is_nan());
}

#[test]
fn best_threshold_separable() {
    let genuine = [0.1, 0.2, 0.3];
    let impostor = [0.7, 0.9];
    let (t, acc) = best_threshold(&genuine, &impostor).expect("non-empty");
    assert_eq!(acc, 1.0);
    assert!(t > 0.3 && t < 0.7, "threshold {t}");
    // The candidate is the midpoint of the gap.
    assert!((t - 0.5).abs() < 1e-6, "threshold {t}");
}

#[test]
fn best_threshold_hand_computed() {
    // genuine {1, 2, 5}, impostor {3, 4, 6}; correct pairs per candidate:
    //   < 1: 0 + 3 = 3    1.5: 1 + 3 = 4    2.5: 2 + 3 = 5    3.5: 2 + 2 = 4
    //   4.5: 2 + 1 = 3    5.5: 3 + 1 = 4    > 6: 3 + 0 = 3
    assert_eq!(
        best_threshold(&[1.0, 2.0, 5.0], &[3.0, 4.0, 6.0]),
        Some((2.5, 5.0 / 6.0))
    );
}

#[test]
fn best_threshold_ties_go_to_smallest() {
    // genuine {2}, impostor {1}: < 1 -> 1/2, 1.5 -> 0, > 2 -> 1/2.
    // Tie between "below the minimum" and "above the maximum": the smaller wins.
    let (t, acc) = best_threshold(&[2.0], &[1.0]).expect("non-empty");
    assert_eq!(acc, 0.5);
    assert!(t < 1.0, "threshold {t}");
}

#[test]
fn best_threshold_one_side_empty() {
    // Only genuine: accepting all is perfect; only "above the maximum" does it.
    let (t, acc) = best_threshold(&[1.0, 2.0], &[]).expect("non-empty");
    assert_eq!(acc, 1.0);
    assert!(t > 2.0);
    // Only impostors: rejecting all is perfect.
    let (t, acc) = best_threshold(&[], &[1.0, 2.0]).expect("non-empty");
    assert_eq!(acc, 1.0);
    assert!(t < 1.0);
}

#[test]
fn best_threshold_adjacent_floats() {
    // The midpoint of two adjacent f32 values is not representable; the
    // reported threshold must still give the reported accuracy.
    let a = 1.0f32;
    let b = a.next_up();
    let (t, acc) = best_threshold(&[a], &[b]).expect("non-empty");
    assert_eq!(acc, 1.0);
    assert_eq!(accuracy_at(t, &[a], &[b]), 1.0);
}

#[test]
fn best_threshold_none_cases() {
    assert_eq!(best_threshold(&[], &[]), None);
    assert_eq!(best_threshold(&[f32::NAN], &[1.0]), None);
    assert_eq!(best_threshold(&[1.0], &[f32::INFINITY]), None);
}

// ---------------------------------------------------------------- scale

#[test]
fn large_inputs_are_fast_enough() {
    // 100k genuine and 100k impostors: a quadratic implementation would need
    // 10^10 comparisons and never finish in a test run.
    // Genuine ~ evenly spread over [0, 1), impostors over [0.5, 1.5).
    let n: u64 = 100_000;
    let genuine: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32 / n as f32).collect();
    let impostor: Vec<f32> = (0..n)
        .map(|i| 0.5 + ((i * 104_729) % n) as f32 / n as f32)
        .collect();
    let roc = verification_roc(&genuine, &impostor);
    assert_eq!((roc[0].far, roc[0].tar), (0.0, 0.0));
    let last = roc.last().expect("non-empty");
    assert_eq!((last.far, last.tar), (1.0, 1.0));
    // Continuous limit: a genuine distance exceeds an impostor one only when
    // both fall in the overlap [0.5, 1) (probability 1/2 * 1/2) and then half
    // the time, so AUC = 1 - 1/8 = 0.875.
    let a = auc(&genuine, &impostor).expect("non-empty");
    assert!((a - 0.875).abs() < 1e-3, "auc {a}");
    // Any t in [0.5, 1] accepts t of the genuine pairs and rejects
    // 1 - (t - 0.5) of the impostors: accuracy (t + 1.5 - t) / 2 = 0.75.
    let (_, acc) = best_threshold(&genuine, &impostor).expect("non-empty");
    assert!((acc - 0.75).abs() < 1e-3, "accuracy {acc}");
}

// ---------------------------------------------------------------- proptest

/// Naive reference: the fraction of `xs` that are `<= t`, in f64.
fn frac_le(xs: &[f32], t: f64) -> f64 {
    xs.iter().filter(|&&x| f64::from(x) <= t).count() as f64 / xs.len() as f64
}

/// Sorted distinct values of all the given slices, in f64.
fn distinct(slices: &[&[f32]]) -> Vec<f64> {
    let mut v: Vec<f64> = slices
        .iter()
        .flat_map(|s| s.iter().map(|&x| f64::from(x)))
        .collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// Naive O(n*m) Mann-Whitney AUC in f64.
fn naive_auc(genuine: &[f32], impostor: &[f32]) -> f64 {
    let mut s = 0.0f64;
    for &g in genuine {
        for &i in impostor {
            if g < i {
                s += 1.0;
            } else if g == i {
                s += 0.5;
            }
        }
    }
    s / (genuine.len() * impostor.len()) as f64
}

/// Distances on a coarse grid (quarters in [0, 5)) so that ties are common.
fn tied_scores(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec((0u8..20).prop_map(|k| f32::from(k) / 4.0), 1..max_len)
}

/// Arbitrary finite distances over a wide range.
fn wide_scores(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-1e30f32..1e30f32, 1..max_len)
}

fn check_roc_against_naive(
    roc: &[RocPoint],
    thresholds: &[f64],
    tar_far: impl Fn(f64) -> (f64, f64),
) {
    assert_eq!(roc.len(), thresholds.len() + 1);
    assert!(f64::from(roc[0].threshold) < thresholds[0]);
    assert_eq!((roc[0].far, roc[0].tar), (0.0, 0.0));
    for (p, &t) in roc[1..].iter().zip(thresholds) {
        assert_eq!(f64::from(p.threshold), t);
        let (tar, far) = tar_far(t);
        assert_eq!(p.tar, tar, "tar at {t}");
        assert_eq!(p.far, far, "far at {t}");
    }
}

proptest! {
    #[test]
    fn verification_roc_matches_naive(genuine in tied_scores(40), impostor in tied_scores(40)) {
        let roc = verification_roc(&genuine, &impostor);
        let thresholds = distinct(&[&genuine, &impostor]);
        check_roc_against_naive(&roc, &thresholds, |t| {
            (frac_le(&genuine, t), frac_le(&impostor, t))
        });
    }

    #[test]
    fn verification_roc_matches_naive_wide(genuine in wide_scores(40), impostor in wide_scores(40)) {
        let roc = verification_roc(&genuine, &impostor);
        let thresholds = distinct(&[&genuine, &impostor]);
        check_roc_against_naive(&roc, &thresholds, |t| {
            (frac_le(&genuine, t), frac_le(&impostor, t))
        });
    }

    #[test]
    fn open_set_roc_matches_naive(
        genuine in prop::collection::vec(((0u8..20).prop_map(|k| f32::from(k) / 4.0), any::<bool>()), 1..40),
        strangers in tied_scores(40),
    ) {
        let roc = open_set_roc(&genuine, &strangers);
        let dists: Vec<f32> = genuine.iter().map(|&(d, _)| d).collect();
        let thresholds = distinct(&[&dists, &strangers]);
        check_roc_against_naive(&roc, &thresholds, |t| {
            let hits = genuine
                .iter()
                .filter(|&&(d, correct)| correct && f64::from(d) <= t)
                .count();
            (hits as f64 / genuine.len() as f64, frac_le(&strangers, t))
        });
    }

    #[test]
    fn auc_matches_naive(genuine in tied_scores(60), impostor in tied_scores(60)) {
        let got = auc(&genuine, &impostor).expect("non-empty finite");
        let want = naive_auc(&genuine, &impostor);
        prop_assert!((got - want).abs() < 1e-12, "auc {got} vs naive {want}");
    }

    #[test]
    fn auc_matches_naive_wide(genuine in wide_scores(60), impostor in wide_scores(60)) {
        let got = auc(&genuine, &impostor).expect("non-empty finite");
        let want = naive_auc(&genuine, &impostor);
        prop_assert!((got - want).abs() < 1e-12, "auc {got} vs naive {want}");
    }

    #[test]
    fn auc_is_trapezoid_area_under_roc(genuine in tied_scores(60), impostor in tied_scores(60)) {
        // Ties make diagonal ROC segments; the trapezoid rule credits them 1/2,
        // exactly like the Mann-Whitney statistic.
        let roc = verification_roc(&genuine, &impostor);
        let area: f64 = roc
            .windows(2)
            .map(|w| (w[1].far - w[0].far) * (w[0].tar + w[1].tar) / 2.0)
            .sum();
        let got = auc(&genuine, &impostor).expect("non-empty finite");
        prop_assert!((got - area).abs() < 1e-9, "auc {got} vs trapezoid {area}");
    }

    #[test]
    fn best_threshold_matches_naive(
        genuine in prop::collection::vec((0u8..20).prop_map(|k| f32::from(k) / 4.0), 0..40),
        impostor in prop::collection::vec((0u8..20).prop_map(|k| f32::from(k) / 4.0), 0..40),
    ) {
        prop_assume!(!genuine.is_empty() || !impostor.is_empty());
        let (t, acc) = best_threshold(&genuine, &impostor).expect("non-empty finite");
        // The reported accuracy is what the reported threshold achieves.
        prop_assert_eq!(accuracy_at(t, &genuine, &impostor), acc);
        // Naive: try every candidate, keep the first (smallest) maximum.
        let values = distinct(&[&genuine, &impostor]);
        let mut candidates = vec![values[0] - 0.125];
        candidates.extend(values.windows(2).map(|w| (w[0] + w[1]) / 2.0));
        candidates.push(values[values.len() - 1] + 0.125);
        let mut best = (f64::NAN, -1.0);
        for &c in &candidates {
            // Grid values are multiples of 1/4, so midpoints are exact in f32.
            let a = accuracy_at(c as f32, &genuine, &impostor);
            if a > best.1 {
                best = (c, a);
            }
        }
        prop_assert_eq!(acc, best.1);
        // Same candidate interval: the midpoint, or the same side of all values.
        if best.0 < values[0] {
            prop_assert!(f64::from(t) < values[0]);
        } else if best.0 > values[values.len() - 1] {
            prop_assert!(f64::from(t) > values[values.len() - 1]);
        } else {
            prop_assert_eq!(f64::from(t), best.0);
        }
    }
}
