//! Statistics of evaluations: confidence intervals, ROC curves, AUC and
//! decision thresholds.
//!
//! Conventions used throughout:
//!
//! * scores are **distances**: smaller means more alike;
//! * a pair (or probe) is **accepted** at threshold `t` when `distance <= t`.
//!
//! Callers must pass finite distances. Functions returning an `Option` give
//! `None` when any input is NaN or infinite, and the ROC builders give an empty
//! `Vec`; [`all_finite`] lets callers check their inputs up front.
//!
//! The ROC builders and [`auc`] sort once and sweep, so they run in
//! `O(n log n)` and are fine for hundreds of thousands of scores.

use std::cmp::Ordering;

/// Mean with a 95% confidence interval half-width.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MeanCi {
    /// Arithmetic mean of the values.
    pub mean: f64,
    /// Half-width of the 95% confidence interval: `1.96 * sd / sqrt(n)`.
    pub ci95: f64,
    /// Number of values.
    pub n: usize,
}

/// Mean and 95% confidence half-width `1.96 * s / sqrt(n)`, where `s` is the
/// sample standard deviation (denominator `n - 1`).
///
/// A single value gives `ci95 = 0`. Returns `None` for an empty slice or when
/// any value is NaN or infinite.
pub fn mean_ci95(values: &[f64]) -> Option<MeanCi> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let ci95 = if n < 2 {
        0.0
    } else {
        let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
        let sd = (ss / (n - 1) as f64).sqrt();
        1.96 * sd / (n as f64).sqrt()
    };
    Some(MeanCi { mean, ci95, n })
}

/// A proportion `k / n` with its 95% Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ProportionCi {
    /// `k / n`.
    pub rate: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end of the 95% interval.
    pub high: f64,
}

/// `k` of `n` items (errors of Lake's runs, say) with the 95% Wilson score
/// interval, which stays inside [0, 1] and is honest for small `n` and for
/// rates near 0 or 1, where `1.96 * sqrt(p (1 - p) / n)` is not. `None` when
/// `n` is 0 or `k > n`.
pub fn proportion_ci95(k: usize, n: usize) -> Option<ProportionCi> {
    if n == 0 || k > n {
        return None;
    }
    const Z: f64 = 1.959_963_984_540_054;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let z2n = Z * Z / n;
    let centre = (p + z2n / 2.0) / (1.0 + z2n);
    let half = Z / (1.0 + z2n) * (p * (1.0 - p) / n + z2n / (4.0 * n)).sqrt();
    Some(ProportionCi {
        rate: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    })
}

/// One point of a ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RocPoint {
    /// Distance threshold: scores `<= threshold` are accepted.
    pub threshold: f32,
    /// False accept rate: fraction of impostors / strangers accepted.
    pub far: f64,
    /// True accept rate: fraction of genuine pairs / probes correctly accepted.
    pub tar: f64,
}

/// True when every value is finite (neither NaN nor infinite).
pub fn all_finite(xs: &[f32]) -> bool {
    xs.iter().all(|x| x.is_finite())
}

/// What one score contributes to a ROC sweep.
#[derive(Clone, Copy)]
enum Role {
    /// Counts towards the TAR numerator once accepted.
    Hit,
    /// Counts towards the FAR numerator once accepted.
    FalseAccept,
    /// Only provides a threshold (e.g. a genuine probe whose nearest identity
    /// is wrong): never counted as a true or a false accept.
    Neutral,
}

/// Sorts the scores once and emits one point per distinct value, plus a
/// leading point strictly below every value with `far = tar = 0`.
fn sweep(mut scores: Vec<(f32, Role)>, n_hit: usize, n_false: usize) -> Vec<RocPoint> {
    scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&(min, _)) = scores.first() else {
        return Vec::new();
    };
    let mut points = Vec::with_capacity(scores.len() + 1);
    points.push(RocPoint {
        threshold: min.next_down(),
        far: 0.0,
        tar: 0.0,
    });
    let (mut hits, mut false_accepts) = (0usize, 0usize);
    let mut i = 0;
    while i < scores.len() {
        let value = scores[i].0;
        // `==` (not `total_cmp`) so that -0.0 and 0.0 form a single group,
        // as they are the same threshold under `<=`.
        while i < scores.len() && scores[i].0 == value {
            match scores[i].1 {
                Role::Hit => hits += 1,
                Role::FalseAccept => false_accepts += 1,
                Role::Neutral => {}
            }
            i += 1;
        }
        points.push(RocPoint {
            threshold: value,
            far: false_accepts as f64 / n_false as f64,
            tar: hits as f64 / n_hit as f64,
        });
    }
    points
}

/// Verification ROC from genuine-pair and impostor-pair distances.
///
/// One point per distinct distance value (threshold = that value), plus a
/// first point strictly below every value with `far = tar = 0`; sorted by
/// increasing threshold, so the last point has `far = tar = 1`.
/// `tar(t)` is the fraction of genuine distances `<= t`, `far(t)` the fraction
/// of impostor distances `<= t`.
///
/// Returns an empty `Vec` when either side is empty (a rate over no pairs is
/// undefined) or when any distance is not finite.
pub fn verification_roc(genuine: &[f32], impostor: &[f32]) -> Vec<RocPoint> {
    if genuine.is_empty() || impostor.is_empty() || !all_finite(genuine) || !all_finite(impostor) {
        return Vec::new();
    }
    let scores = genuine
        .iter()
        .map(|&d| (d, Role::Hit))
        .chain(impostor.iter().map(|&d| (d, Role::FalseAccept)))
        .collect();
    sweep(scores, genuine.len(), impostor.len())
}

/// Open-set identification ROC (the door).
///
/// Each genuine probe is `(distance to its nearest enrolled prototype,
/// whether that nearest identity is the right one)`; each stranger probe is its
/// nearest distance. `tar(t)` is the fraction of **all** genuine probes that
/// are correct and have distance `<= t`; `far(t)` is the fraction of strangers
/// with distance `<= t`. The point layout is that of [`verification_roc`]:
/// every distinct distance (wrongly identified genuine probes included) is a
/// threshold, after a leading `far = tar = 0` point. The last point has
/// `far = 1` and `tar` = the rank-1 identification rate.
///
/// Returns an empty `Vec` when either side is empty or any distance is not
/// finite.
pub fn open_set_roc(genuine: &[(f32, bool)], strangers: &[f32]) -> Vec<RocPoint> {
    if genuine.is_empty()
        || strangers.is_empty()
        || genuine.iter().any(|(d, _)| !d.is_finite())
        || !all_finite(strangers)
    {
        return Vec::new();
    }
    let scores = genuine
        .iter()
        .map(|&(d, correct)| (d, if correct { Role::Hit } else { Role::Neutral }))
        .chain(strangers.iter().map(|&d| (d, Role::FalseAccept)))
        .collect();
    sweep(scores, genuine.len(), strangers.len())
}

/// The point with the highest TAR among those with `far <= max_far`; among
/// equal TARs, the one with the largest threshold.
///
/// The points need not be sorted. Returns `None` when `points` is empty or no
/// point has `far <= max_far` (e.g. a negative or NaN `max_far`).
pub fn tar_at_far(points: &[RocPoint], max_far: f64) -> Option<RocPoint> {
    points
        .iter()
        .filter(|p| p.far <= max_far)
        .max_by(|a, b| {
            a.tar
                .total_cmp(&b.tar)
                .then_with(|| a.threshold.total_cmp(&b.threshold))
        })
        .copied()
}

/// Area under the verification ROC: the probability that a random genuine
/// distance is smaller than a random impostor distance, ties counting 1/2
/// (the Mann-Whitney statistic).
///
/// Sorts the impostors and binary-searches each genuine distance:
/// `O((n + m) log m)`. The count is kept in integers, so the only rounding is
/// the final division. Returns `None` when either side is empty or any
/// distance is not finite.
pub fn auc(genuine: &[f32], impostor: &[f32]) -> Option<f64> {
    if genuine.is_empty() || impostor.is_empty() || !all_finite(genuine) || !all_finite(impostor) {
        return None;
    }
    let mut imp = impostor.to_vec();
    imp.sort_by(f32::total_cmp);
    // Twice the Mann-Whitney U: 2 per impostor above, 1 per tie.
    let mut twice_u: u128 = 0;
    for &g in genuine {
        let below = imp.partition_point(|&x| x < g);
        let below_or_tied = imp.partition_point(|&x| x <= g);
        let greater = imp.len() - below_or_tied;
        let ties = below_or_tied - below;
        twice_u += 2 * greater as u128 + ties as u128;
    }
    let pairs = genuine.len() as f64 * impostor.len() as f64;
    Some(twice_u as f64 / (2.0 * pairs))
}

/// Pair-classification accuracy at `threshold`:
/// `(genuine accepted + impostors rejected) / (genuine + impostors)`.
///
/// Returns NaN when both slices are empty, the threshold is NaN, or any
/// distance is NaN or infinite (an infinite threshold is fine).
pub fn accuracy_at(threshold: f32, genuine: &[f32], impostor: &[f32]) -> f64 {
    let total = genuine.len() + impostor.len();
    if total == 0 || threshold.is_nan() || !all_finite(genuine) || !all_finite(impostor) {
        return f64::NAN;
    }
    let accepted = genuine.iter().filter(|&&d| d <= threshold).count();
    let rejected = impostor.iter().filter(|&&d| d > threshold).count();
    (accepted + rejected) as f64 / total as f64
}

/// The threshold maximising [`accuracy_at`], and that accuracy.
///
/// Candidates are the midpoints between consecutive distinct sorted distances
/// (of both sides together), one threshold just below the minimum (rejects
/// everything) and one just above the maximum (accepts everything). Ties go to
/// the smallest threshold. When two distinct distances are adjacent `f32`
/// values their midpoint is not representable; the lower value is used, which
/// accepts the same pairs.
///
/// Runs in `O(n log n)`. Returns `None` when both sides are empty or any
/// distance is not finite.
pub fn best_threshold(genuine: &[f32], impostor: &[f32]) -> Option<(f32, f64)> {
    let total = genuine.len() + impostor.len();
    if total == 0 || !all_finite(genuine) || !all_finite(impostor) {
        return None;
    }
    let mut scores: Vec<(f32, bool)> = genuine
        .iter()
        .map(|&d| (d, true))
        .chain(impostor.iter().map(|&d| (d, false)))
        .collect();
    scores.sort_by(|a, b| a.0.total_cmp(&b.0));

    // Below the minimum nothing is accepted: every impostor is right.
    let min = scores[0].0;
    let mut best_threshold = min.next_down();
    let mut best_correct = impostor.len();
    let (mut genuine_accepted, mut impostor_accepted) = (0usize, 0usize);
    let mut i = 0;
    while i < scores.len() {
        let value = scores[i].0;
        while i < scores.len() && scores[i].0 == value {
            if scores[i].1 {
                genuine_accepted += 1;
            } else {
                impostor_accepted += 1;
            }
            i += 1;
        }
        // Threshold between this group and the next (or above the maximum).
        let threshold = match scores.get(i) {
            Some(&(next, _)) => midpoint_below(value, next),
            None => value.next_up(),
        };
        let correct = genuine_accepted + (impostor.len() - impostor_accepted);
        if correct > best_correct {
            best_correct = correct;
            best_threshold = threshold;
        }
    }
    Some((best_threshold, best_correct as f64 / total as f64))
}

/// A threshold in `[a, b)` for finite `a < b`: their midpoint, or `a` when the
/// midpoint rounds up to `b` in `f32`.
fn midpoint_below(a: f32, b: f32) -> f32 {
    let mid = ((f64::from(a) + f64::from(b)) / 2.0) as f32;
    match mid.partial_cmp(&b) {
        Some(Ordering::Less) => mid,
        _ => a,
    }
}
