//! The door protocol on identity folders: people with at least
//! [`MIN_ENROLLED_IMAGES`] images are enrolled from their first `K` images
//! (by file name) and probe with the rest; everyone else is a stranger. Also
//! the thresholds for galleries of a given size ([`gallery_thresholds`]).

use std::path::{Path, PathBuf};

use fewshot_core::prototype::mean_into;
use fewshot_core::{nearest, CoreError, Distance};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::ClassSet;
use crate::embed::Embeddings;
use crate::stats::{open_set_roc, tar_at_far, RocPoint};

/// Identities with at least this many images are enrolled; the rest are strangers.
pub const MIN_ENROLLED_IMAGES: usize = 3;

/// Errors of the door protocol.
#[derive(Debug, thiserror::Error)]
pub enum DoorEvalError {
    /// Enrollment must leave each enrolled person an image to probe with.
    #[error("enrollment takes 1 or 2 images (people need {MIN_ENROLLED_IMAGES} to be enrolled), got {0}")]
    Shots(usize),
    /// Nobody can be enrolled.
    #[error("no identity has {MIN_ENROLLED_IMAGES} or more images to enroll")]
    NobodyToEnroll,
    /// A requested gallery is larger than the people that can be enrolled.
    #[error("a gallery of {asked} people was asked for; only {enrolled} can be enrolled")]
    GalleryTooLarge {
        /// Gallery size asked for.
        asked: usize,
        /// People with enough images.
        enrolled: usize,
    },
    /// Strangers are needed to measure false accepts.
    #[error("no stranger probes to measure false accepts with")]
    NoStrangers,
    /// The target false-accept rate is not in [0, 1).
    #[error("the target false-accept rate must be in [0, 1), got {0}")]
    Far(f64),
    /// An embedding was unusable.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The matcher (full context embeddings) failed.
    #[error("matching: {0}")]
    Matcher(String),
}

/// How a door matches probes to its gallery: the rows it compares (the
/// model's distance to the nearest row is the door's score). Plain models
/// compare embeddings with prototypes ([`Prototypes`]); a Matching Network
/// with full context embeddings embeds the gallery in its own context and
/// attends each probe over it.
pub trait GalleryMatcher {
    /// The gallery's rows (people × `dim`) from its prototypes.
    fn gallery(&self, prototypes: &[f32], dim: usize) -> Result<Vec<f32>, DoorEvalError>;
    /// The probes' rows (probes × `dim`) from their embeddings, against the
    /// gallery's rows.
    fn probes(
        &self,
        embeddings: &[f32],
        gallery: &[f32],
        dim: usize,
    ) -> Result<Vec<f32>, DoorEvalError>;
}

/// Embeddings against prototypes, as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prototypes;

impl GalleryMatcher for Prototypes {
    fn gallery(&self, prototypes: &[f32], _: usize) -> Result<Vec<f32>, DoorEvalError> {
        Ok(prototypes.to_vec())
    }

    fn probes(&self, embeddings: &[f32], _: &[f32], _: usize) -> Result<Vec<f32>, DoorEvalError> {
        Ok(embeddings.to_vec())
    }
}

/// Who is enrolled with which images, who probes, and the strangers: rows of
/// `paths`.
#[derive(Debug, Clone)]
pub struct DoorSet {
    /// Every image, in row order.
    pub paths: Vec<PathBuf>,
    /// Each enrolled identity's name and the rows of its enrollment shots.
    pub enrolled: Vec<(String, Vec<usize>)>,
    /// Genuine probes: `(row, enrolled identity)`.
    pub genuine: Vec<(usize, usize)>,
    /// Stranger probes' rows.
    pub strangers: Vec<usize>,
}

/// Scores of a door's probes against its gallery's prototypes.
#[derive(Debug, Clone, Default)]
pub struct DoorScores {
    /// Each genuine probe's nearest distance and whether that nearest is its own identity.
    pub genuine: Vec<(f32, bool)>,
    /// Each stranger probe's nearest distance.
    pub strangers: Vec<f32>,
}

impl DoorScores {
    /// Closed-set rank-1: the share of genuine probes whose nearest is right.
    pub fn rank1(&self) -> f64 {
        let right = self.genuine.iter().filter(|(_, ok)| *ok).count();
        right as f64 / self.genuine.len().max(1) as f64
    }

    /// The open-set ROC ([`open_set_roc`]).
    pub fn roc(&self) -> Vec<RocPoint> {
        open_set_roc(&self.genuine, &self.strangers)
    }

    /// TAR (right and accepted) and FAR (strangers accepted) at threshold `t`.
    pub fn at_threshold(&self, t: f32) -> (f64, f64) {
        let tar = self.genuine.iter().filter(|(d, ok)| *ok && *d <= t).count() as f64
            / self.genuine.len().max(1) as f64;
        let far = self.strangers.iter().filter(|d| **d <= t).count() as f64
            / self.strangers.len().max(1) as f64;
        (tar, far)
    }
}

impl DoorSet {
    /// The protocol over `set`, with every image of `extra_strangers` a stranger.
    pub fn new(
        set: &ClassSet,
        extra_strangers: Option<&ClassSet>,
        enroll_shots: usize,
    ) -> Result<DoorSet, DoorEvalError> {
        let mut door = DoorSet {
            paths: Vec::new(),
            enrolled: Vec::new(),
            genuine: Vec::new(),
            strangers: Vec::new(),
        };
        let k = enroll_shots;
        if k == 0 || k >= MIN_ENROLLED_IMAGES {
            return Err(DoorEvalError::Shots(k));
        }
        for class in &set.classes {
            if class.images.len() >= MIN_ENROLLED_IMAGES {
                let id = door.enrolled.len();
                let shots = class.images[..k].iter().map(|p| door.push(p)).collect();
                door.enrolled.push((class.name.clone(), shots));
                for p in &class.images[k..] {
                    let row = door.push(p);
                    door.genuine.push((row, id));
                }
            } else {
                for p in &class.images {
                    let row = door.push(p);
                    door.strangers.push(row);
                }
            }
        }
        for class in extra_strangers.iter().flat_map(|s| &s.classes) {
            for p in &class.images {
                let row = door.push(p);
                door.strangers.push(row);
            }
        }
        if door.enrolled.is_empty() {
            return Err(DoorEvalError::NobodyToEnroll);
        }
        Ok(door)
    }

    fn push(&mut self, p: &Path) -> usize {
        self.paths.push(p.to_path_buf());
        self.paths.len() - 1
    }

    /// Each enrolled identity's prototype: the mean of its shots' embeddings.
    pub fn prototypes(&self, emb: &Embeddings) -> Result<Vec<f32>, CoreError> {
        let dim = emb.dim;
        let mut prototypes = vec![0.0f32; self.enrolled.len() * dim];
        for ((_, shots), proto) in self.enrolled.iter().zip(prototypes.chunks_mut(dim)) {
            mean_into(shots.iter().map(|&r| emb.row(r)), proto)?;
        }
        Ok(prototypes)
    }

    /// Every probe against every enrolled identity's prototype.
    pub fn scores(
        &self,
        emb: &Embeddings,
        prototypes: &[f32],
        distance: Distance,
    ) -> Result<DoorScores, DoorEvalError> {
        let all: Vec<usize> = (0..self.enrolled.len()).collect();
        self.scores_for(emb, prototypes, distance, &all, &Prototypes)
    }

    /// The door with only the identities `gallery` enrolled, matched by
    /// `matcher`: their probes are genuine, and every image of the others
    /// (shots and probes) joins the strangers.
    pub fn scores_for(
        &self,
        emb: &Embeddings,
        prototypes: &[f32],
        distance: Distance,
        gallery: &[usize],
        matcher: &dyn GalleryMatcher,
    ) -> Result<DoorScores, DoorEvalError> {
        let dim = emb.dim;
        let mut index_of = vec![None; self.enrolled.len()];
        for (i, &id) in gallery.iter().enumerate() {
            index_of[id] = Some(i);
        }
        let protos: Vec<f32> = gallery
            .iter()
            .flat_map(|&id| prototypes[id * dim..(id + 1) * dim].iter().copied())
            .collect();
        // The probes in order: genuine (or, not enrolled, strangers), the
        // shots of those not enrolled, then the strangers.
        let mut rows = Vec::new();
        let mut genuine_of = Vec::new();
        for &(row, id) in &self.genuine {
            rows.push(row);
            genuine_of.push(index_of[id]);
        }
        for (id, (_, shots)) in self.enrolled.iter().enumerate() {
            if index_of[id].is_none() {
                rows.extend(shots.iter().copied());
                genuine_of.extend(std::iter::repeat_n(None, shots.len()));
            }
        }
        rows.extend(self.strangers.iter().copied());
        genuine_of.extend(std::iter::repeat_n(None, self.strangers.len()));
        let embeddings: Vec<f32> = rows
            .iter()
            .flat_map(|&r| emb.row(r).iter().copied())
            .collect();
        let against = matcher.gallery(&protos, dim)?;
        let matched = matcher.probes(&embeddings, &against, dim)?;
        if against.len() != protos.len() || matched.len() != embeddings.len() {
            return Err(DoorEvalError::Matcher(format!(
                "{} gallery and {} probe values, expected {} and {}",
                against.len(),
                matched.len(),
                protos.len(),
                embeddings.len()
            )));
        }
        let mut scores = DoorScores::default();
        for (probe, own) in matched.chunks(dim).zip(genuine_of) {
            let n = nearest(probe, against.chunks(dim), distance)?;
            match own {
                Some(i) => scores.genuine.push((n.distance, n.index == i)),
                None => scores.strangers.push(n.distance),
            }
        }
        Ok(scores)
    }
}

/// The threshold for a gallery of `gallery` people.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GalleryThreshold {
    /// People enrolled.
    pub gallery: usize,
    /// Distances at or below it open the door.
    pub threshold: f32,
    /// Target false-accept rate per stranger probe (against the whole gallery).
    pub target_far: f64,
    /// False-accept rate at the threshold on the calibration probes.
    pub far: f64,
    /// True-accept rate there (right identity and accepted).
    pub tar: f64,
    /// Random galleries drawn (1 when every enrollable person is in it).
    pub trials: usize,
    /// Stranger probes over all trials.
    pub stranger_probes: usize,
}

/// For each size in `sizes` (increasing): `trials` random galleries of that
/// many of the enrolled people (seeded), matched by `matcher`, their probes
/// pooled, and the threshold with the highest TAR whose share of strangers
/// let in is at most `target_far`, or the previous size's if that is
/// stricter.
#[allow(clippy::too_many_arguments)]
pub fn gallery_thresholds(
    door: &DoorSet,
    emb: &Embeddings,
    distance: Distance,
    matcher: &dyn GalleryMatcher,
    sizes: &[usize],
    target_far: f64,
    trials: usize,
    seed: u64,
) -> Result<Vec<GalleryThreshold>, DoorEvalError> {
    if !(0.0..1.0).contains(&target_far) {
        return Err(DoorEvalError::Far(target_far));
    }
    let prototypes = door.prototypes(emb)?;
    let people = door.enrolled.len();
    let mut out: Vec<GalleryThreshold> = Vec::new();
    for &size in sizes {
        if size > people || size == 0 {
            return Err(DoorEvalError::GalleryTooLarge {
                asked: size,
                enrolled: people,
            });
        }
        let runs = if size == people { 1 } else { trials.max(1) };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ size as u64);
        let mut pooled = DoorScores::default();
        for _ in 0..runs {
            let gallery = sample(&mut rng, people, size).into_vec();
            let s = door.scores_for(emb, &prototypes, distance, &gallery, matcher)?;
            pooled.genuine.extend(s.genuine);
            pooled.strangers.extend(s.strangers);
        }
        if pooled.strangers.is_empty() {
            return Err(DoorEvalError::NoStrangers);
        }
        let point = tar_at_far(&pooled.roc(), target_far).ok_or(CoreError::NonFinite)?;
        // A larger gallery never gets a laxer threshold (each stranger meets
        // more people): where sampling says otherwise, the smaller's holds.
        let threshold = match out.last() {
            Some(prev) if prev.threshold < point.threshold => prev.threshold,
            _ => point.threshold,
        };
        let (tar, far) = pooled.at_threshold(threshold);
        out.push(GalleryThreshold {
            gallery: size,
            threshold,
            target_far,
            far,
            tar,
            trials: runs,
            stranger_probes: pooled.strangers.len(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Class;

    /// Three people on a line (shots at 0, 10 and 20; probes at 1, 11 and
    /// 22), one stranger at 14; the project's l2 is squared.
    fn door() -> (DoorSet, Embeddings) {
        let class = |name: &str, n: usize| Class {
            name: name.into(),
            images: (0..n)
                .map(|i| PathBuf::from(format!("{name}/{i}.png")))
                .collect(),
        };
        let set = ClassSet {
            root: PathBuf::from("people"),
            classes: vec![class("a", 3), class("b", 3), class("c", 3), class("s", 1)],
        };
        let door = DoorSet::new(&set, None, 2).unwrap();
        // Rows: a0 a1 a2 b0 b1 b2 c0 c1 c2 s0.
        let data = vec![0.0, 0.0, 1.0, 10.0, 10.0, 11.0, 20.0, 20.0, 22.0, 14.0];
        (door, Embeddings { dim: 1, data })
    }

    #[test]
    fn scores_follow_the_hand_computed_case() {
        let (door, emb) = door();
        assert_eq!(door.enrolled.len(), 3);
        assert_eq!(door.genuine, vec![(2, 0), (5, 1), (8, 2)]);
        assert_eq!(door.strangers, vec![9]);
        let protos = door.prototypes(&emb).unwrap();
        assert_eq!(protos, vec![0.0, 10.0, 20.0]);
        let all = door.scores(&emb, &protos, Distance::L2).unwrap();
        assert_eq!(all.genuine, vec![(1.0, true), (1.0, true), (4.0, true)]);
        assert_eq!(all.strangers, vec![16.0]);
        assert_eq!(all.rank1(), 1.0);
        assert_eq!(all.at_threshold(1.5), (2.0 / 3.0, 0.0));
        // Only b enrolled: a's and c's images are strangers (a: 10, 10, 9
        // away; c: 10, 10, 12), as is s (4); squared.
        let b = door
            .scores_for(&emb, &protos, Distance::L2, &[1], &Prototypes)
            .unwrap();
        assert_eq!(b.genuine, vec![(1.0, true)]);
        let mut strangers = b.strangers.clone();
        strangers.sort_by(f32::total_cmp);
        assert_eq!(
            strangers,
            vec![16.0, 81.0, 100.0, 100.0, 100.0, 100.0, 144.0]
        );
    }

    /// A matcher that moves the gallery's rows by +5 and the probes by +4.
    struct Shift;

    impl GalleryMatcher for Shift {
        fn gallery(&self, prototypes: &[f32], _: usize) -> Result<Vec<f32>, DoorEvalError> {
            Ok(prototypes.iter().map(|p| p + 5.0).collect())
        }
        fn probes(&self, e: &[f32], _: &[f32], _: usize) -> Result<Vec<f32>, DoorEvalError> {
            Ok(e.iter().map(|p| p + 4.0).collect())
        }
    }

    #[test]
    fn scores_are_taken_between_the_matchers_rows() {
        let (door, emb) = door();
        let protos = door.prototypes(&emb).unwrap();
        // Gallery rows 5, 15, 25; probes a2 b2 c2 s0 become 5, 15, 26, 18:
        // nearest a (0), b (0), c (1); s0: b (9). Plain prototypes give 1,
        // 1, 4 and 16.
        let s = door
            .scores_for(&emb, &protos, Distance::L2, &[0, 1, 2], &Shift)
            .unwrap();
        assert_eq!(s.genuine, vec![(0.0, true), (0.0, true), (1.0, true)]);
        assert_eq!(s.strangers, vec![9.0]);
    }

    #[test]
    fn gallery_thresholds_keep_strangers_out_at_the_target_rate() {
        let (door, emb) = door();
        // The whole gallery: the one stranger is at 16, so at FAR 0 the
        // threshold stays below 16 and admits every genuine probe (≤ 4).
        let t =
            gallery_thresholds(&door, &emb, Distance::L2, &Prototypes, &[3], 0.0, 5, 1).unwrap();
        assert_eq!(t[0].trials, 1);
        assert!(t[0].threshold >= 4.0 && t[0].threshold < 16.0, "{t:?}");
        assert_eq!((t[0].tar, t[0].far), (1.0, 0.0));
        let err = gallery_thresholds(&door, &emb, Distance::L2, &Prototypes, &[4], 0.01, 5, 1)
            .unwrap_err();
        assert!(matches!(
            err,
            DoorEvalError::GalleryTooLarge {
                asked: 4,
                enrolled: 3
            }
        ));
        assert!(
            gallery_thresholds(&door, &emb, Distance::L2, &Prototypes, &[3], 1.5, 5, 1).is_err()
        );
    }
}
