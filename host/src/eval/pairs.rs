//! The pairs protocol (LFW's): distances of matched and mismatched pairs, a
//! threshold chosen by 10-fold cross-validation (or given, or chosen on
//! another list), accuracy, and a model threshold's operating point.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fewshot_core::Distance;

use crate::data::{DataError, PairList};
use crate::embed::Embeddings;
use crate::stats::{accuracy_at, best_threshold, mean_ci95};

/// Errors of the pairs protocol.
#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    /// The pair list could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A pair names an image that is not there.
    #[error("{image}: image named by {list} does not exist")]
    MissingImage {
        /// The missing image.
        image: PathBuf,
        /// The pair list naming it.
        list: PathBuf,
    },
    /// A threshold needs both kinds of pairs with finite distances.
    #[error("no finite distances for both matched and mismatched pairs{0}")]
    NoThreshold(&'static str),
}

/// A pair list resolved against its image folder: each image once.
#[derive(Debug, Clone)]
pub struct PairSet {
    /// The images to embed, each once, in first-use order.
    pub paths: Vec<PathBuf>,
    rows: Vec<(usize, usize)>,
    same: Vec<bool>,
}

impl PairSet {
    /// Reads the pair list `pairs` of images under `images`; every image must exist.
    pub fn load(images: &Path, pairs: &Path) -> Result<PairSet, PairsError> {
        let list = PairList::load(pairs)?;
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        let mut paths = Vec::new();
        let mut rows = Vec::new();
        for pair in &list.pairs {
            let mut row = |p: PathBuf| {
                *index.entry(p.clone()).or_insert_with(|| {
                    paths.push(p);
                    paths.len() - 1
                })
            };
            rows.push((row(pair.a.path(images)), row(pair.b.path(images))));
        }
        if let Some(p) = paths.iter().find(|p| !p.is_file()) {
            return Err(PairsError::MissingImage {
                image: p.clone(),
                list: pairs.to_path_buf(),
            });
        }
        Ok(PairSet {
            paths,
            rows,
            same: list.pairs.iter().map(|p| p.same).collect(),
        })
    }

    /// The pairs' distances, `embeddings` holding one row per [`Self::paths`].
    pub fn distances(&self, embeddings: &Embeddings, distance: Distance) -> PairDistances {
        PairDistances {
            distances: self
                .rows
                .iter()
                .map(|&(a, b)| distance.between(embeddings.row(a), embeddings.row(b)))
                .collect(),
            same: self.same.clone(),
        }
    }
}

/// Genuine and impostor distances of a pair list, in file order.
#[derive(Debug, Clone)]
pub struct PairDistances {
    /// Distance of each pair.
    pub distances: Vec<f32>,
    /// Whether each pair is of one person.
    pub same: Vec<bool>,
}

/// A threshold and the accuracy it gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verification {
    /// Pairs at or below it are "same".
    pub threshold: f32,
    /// Share of pairs decided right.
    pub accuracy: f64,
    /// 95 % interval of the accuracy over folds, when cross-validated.
    pub ci95: Option<f64>,
}

impl PairDistances {
    /// Distances of (matched, mismatched) pairs.
    pub fn genuine_impostor(&self) -> (Vec<f32>, Vec<f32>) {
        self.split(|_| true)
    }

    /// Fold of each pair: its rank among the pairs of its kind, cut into `folds` parts.
    fn folds(&self, folds: usize) -> Vec<usize> {
        let n_same = self.same.iter().filter(|s| **s).count();
        let n_diff = self.same.len() - n_same;
        let (mut i_same, mut i_diff) = (0, 0);
        self.same
            .iter()
            .map(|&same| {
                let (i, n) = if same {
                    (&mut i_same, n_same)
                } else {
                    (&mut i_diff, n_diff)
                };
                let f = *i * folds / n;
                *i += 1;
                f
            })
            .collect()
    }

    fn split(&self, keep: impl Fn(usize) -> bool) -> (Vec<f32>, Vec<f32>) {
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for (i, (&d, &same)) in self.distances.iter().zip(&self.same).enumerate() {
            if keep(i) {
                if same {
                    genuine.push(d)
                } else {
                    impostor.push(d)
                }
            }
        }
        (genuine, impostor)
    }

    /// Accuracy at a given threshold.
    pub fn at(&self, threshold: f32) -> Verification {
        let (genuine, impostor) = self.genuine_impostor();
        Verification {
            threshold,
            accuracy: accuracy_at(threshold, &genuine, &impostor),
            ci95: None,
        }
    }

    /// The threshold of best accuracy on these pairs.
    pub fn best_threshold(&self) -> Result<f32, PairsError> {
        let (genuine, impostor) = self.genuine_impostor();
        best_threshold(&genuine, &impostor)
            .map(|(t, _)| t)
            .ok_or(PairsError::NoThreshold(""))
    }

    /// `folds`-fold cross-validation: each fold is decided by the threshold
    /// best on the others. Folds are cut within the matched and within the
    /// mismatched pairs, so each holds both kinds in the list's proportion.
    /// The threshold reported is the mean of the folds' thresholds.
    pub fn cross_validate(&self, folds: usize) -> Result<Verification, PairsError> {
        let fold = self.folds(folds);
        let (mut accuracies, mut thresholds) = (Vec::new(), Vec::new());
        for f in 0..folds {
            let (g, i) = self.split(|k| fold[k] != f);
            let (t, _) =
                best_threshold(&g, &i).ok_or(PairsError::NoThreshold(" in a training fold"))?;
            let (tg, ti) = self.split(|k| fold[k] == f);
            accuracies.push(accuracy_at(t, &tg, &ti));
            thresholds.push(f64::from(t));
        }
        let s = mean_ci95(&accuracies).ok_or(PairsError::NoThreshold(": no folds"))?;
        Ok(Verification {
            threshold: (thresholds.iter().sum::<f64>() / folds as f64) as f32,
            accuracy: s.mean,
            ci95: Some(s.ci95),
        })
    }

    /// (TAR, FAR) at `threshold`: the shares of matched and of mismatched
    /// pairs at or below it.
    pub fn operating_point(&self, threshold: f32) -> (f64, f64) {
        let (genuine, impostor) = self.genuine_impostor();
        let share =
            |d: &[f32]| d.iter().filter(|v| **v <= threshold).count() as f64 / d.len() as f64;
        (share(&genuine), share(&impostor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(genuine: &[f32], impostor: &[f32]) -> PairDistances {
        PairDistances {
            distances: genuine.iter().chain(impostor).copied().collect(),
            same: genuine
                .iter()
                .map(|_| true)
                .chain(impostor.iter().map(|_| false))
                .collect(),
        }
    }

    #[test]
    fn folds_hold_both_kinds_in_proportion() {
        let p = pairs(&[0.1; 20], &[0.9; 40]);
        let folds = p.folds(10);
        for f in 0..10 {
            let same = (0..60).filter(|&i| folds[i] == f && p.same[i]).count();
            let diff = (0..60).filter(|&i| folds[i] == f && !p.same[i]).count();
            assert_eq!((same, diff), (2, 4), "fold {f}");
        }
    }

    #[test]
    fn separable_pairs_verify_perfectly_and_counts_are_shares() {
        let p = pairs(&[0.1, 0.2, 0.3, 0.35], &[0.6, 0.7, 0.8, 0.25]);
        // By hand: at 0.3, matched 0.1 0.2 0.3 in (3 of 4), mismatched 0.25 in (1 of 4).
        assert_eq!(p.operating_point(0.3), (0.75, 0.25));
        // 3 + 3 of 8 right at 0.3.
        assert_eq!(p.at(0.3).accuracy, 0.75);
        let q = pairs(&[0.1; 10], &[0.9; 10]);
        let cv = q.cross_validate(10).unwrap();
        assert_eq!(cv.accuracy, 1.0);
        assert!(cv.threshold >= 0.1 && cv.threshold < 0.9);
    }
}
