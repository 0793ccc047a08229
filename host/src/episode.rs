//! N-way K-shot episodes: class splits and a seeded, reproducible sampler.

use rand::seq::{index, SliceRandom};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The shape of an episode, in the literature's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EpisodeShape {
    /// Classes per episode (N-way).
    pub k_way: usize,
    /// Support images per class (K-shot).
    pub n_shot: usize,
    /// Query images per class.
    pub q_queries: usize,
}

impl EpisodeShape {
    /// Images one class must have to take part.
    pub fn per_class(&self) -> usize {
        self.n_shot + self.q_queries
    }
}

/// One episode: image ids of the support and query sets, class-major. The
/// support images of episode class `c` are `support[c * n_shot..(c + 1) * n_shot]`,
/// its queries `query[c * q_queries..(c + 1) * q_queries]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// Sampled classes (indices into the sampler's class list).
    pub classes: Vec<usize>,
    /// Support image ids.
    pub support: Vec<usize>,
    /// Query image ids.
    pub query: Vec<usize>,
}

/// Errors of building a sampler.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EpisodeError {
    /// Too few classes have enough images for the requested shape.
    #[error(
        "{k_way}-way episodes need {k_way} classes with at least {per_class} images ({n_shot} shots + {q_queries} queries), \
         but only {eligible} of {total} classes have that many"
    )]
    TooFewClasses {
        /// Requested ways.
        k_way: usize,
        /// Images needed per class.
        per_class: usize,
        /// Requested shots.
        n_shot: usize,
        /// Requested queries.
        q_queries: usize,
        /// Classes with enough images.
        eligible: usize,
        /// All classes.
        total: usize,
    },
    /// A shape with zero ways, shots or queries.
    #[error("episode shape needs k_way >= 1, n_shot >= 1 and q_queries >= 1")]
    EmptyShape,
    /// A share outside 0..=1, or group labels that do not match the classes.
    #[error("episodes within one alphabet: {0}")]
    BadGroups(String),
}

/// Samples episodes from classes given as lists of image ids.
#[derive(Debug, Clone)]
pub struct EpisodeSampler {
    shape: EpisodeShape,
    /// Eligible classes: (class index in the input, its image ids after the cap).
    classes: Vec<(usize, Vec<usize>)>,
    /// Classes left out for having too few images.
    pub dropped: usize,
    /// Every group's eligible classes (positions in `classes`, ascending),
    /// with the share of episodes drawn inside one group.
    within: Option<(Vec<Vec<usize>>, f64)>,
}

impl EpisodeSampler {
    /// A sampler over `classes` (each a list of image ids). Classes with fewer
    /// than `n_shot + q_queries` images are left out and counted in `dropped`.
    /// With `cap`, a class keeps at most `cap` of its images, chosen once by `seed`.
    pub fn new(
        classes: &[Vec<usize>],
        shape: EpisodeShape,
        cap: Option<usize>,
        seed: u64,
    ) -> Result<EpisodeSampler, EpisodeError> {
        if shape.k_way == 0 || shape.n_shot == 0 || shape.q_queries == 0 {
            return Err(EpisodeError::EmptyShape);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut eligible = Vec::new();
        for (i, images) in classes.iter().enumerate() {
            if images.len() < shape.per_class() {
                continue;
            }
            let mut images = images.clone();
            if let Some(cap) = cap {
                if images.len() > cap {
                    images = index::sample(&mut rng, images.len(), cap.max(shape.per_class()))
                        .into_iter()
                        .map(|j| images[j])
                        .collect();
                    images.sort_unstable();
                }
            }
            eligible.push((i, images));
        }
        let dropped = classes.len() - eligible.len();
        if eligible.len() < shape.k_way {
            return Err(EpisodeError::TooFewClasses {
                k_way: shape.k_way,
                per_class: shape.per_class(),
                n_shot: shape.n_shot,
                q_queries: shape.q_queries,
                eligible: eligible.len(),
                total: classes.len(),
            });
        }
        Ok(EpisodeSampler {
            shape,
            classes: eligible,
            dropped,
            within: None,
        })
    }

    /// Draws a `share` of the episodes (0 to 1) with their classes from one
    /// group, as Lake's one-shot runs take their 20 characters from one
    /// alphabet: `groups[i]` is the group of input class `i`. The group is
    /// chosen with probability proportional to its eligible classes; a group
    /// of fewer than `k_way` gives all of them and the rest come from other
    /// groups. The other episodes are drawn as before.
    pub fn within_groups(
        mut self,
        groups: &[usize],
        share: f64,
    ) -> Result<EpisodeSampler, EpisodeError> {
        if !(0.0..=1.0).contains(&share) {
            return Err(EpisodeError::BadGroups(format!(
                "the share of such episodes must be within 0 to 1, not {share}"
            )));
        }
        let mut by_group: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (position, (class, _)) in self.classes.iter().enumerate() {
            let group = groups.get(*class).ok_or_else(|| {
                EpisodeError::BadGroups(format!(
                    "{} group labels for at least {} classes",
                    groups.len(),
                    class + 1
                ))
            })?;
            by_group.entry(*group).or_default().push(position);
        }
        self.within = (share > 0.0).then(|| (by_group.into_values().collect(), share));
        Ok(self)
    }

    /// The episode shape.
    pub fn shape(&self) -> EpisodeShape {
        self.shape
    }

    /// Number of classes episodes are drawn from.
    pub fn eligible(&self) -> usize {
        self.classes.len()
    }

    /// Episode number `index` of the stream `seed`: the same pair always gives
    /// the same episode, whatever else was sampled before or in parallel.
    pub fn episode(&self, seed: u64, index: u64) -> Episode {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        let s = self.shape;
        let picked: Vec<usize> = match &self.within {
            Some((groups, share)) if rng.random::<f64>() < *share => {
                let mut at = rng.random_range(0..self.classes.len());
                let mut group = &groups[0];
                for g in groups {
                    if at < g.len() {
                        group = g;
                        break;
                    }
                    at -= g.len();
                }
                let inside = s.k_way.min(group.len());
                let mut picked: Vec<usize> = index::sample(&mut rng, group.len(), inside)
                    .into_iter()
                    .map(|i| group[i])
                    .collect();
                if inside < s.k_way {
                    let others: Vec<usize> = (0..self.classes.len())
                        .filter(|c| group.binary_search(c).is_err())
                        .collect();
                    picked.extend(
                        index::sample(&mut rng, others.len(), s.k_way - inside)
                            .into_iter()
                            .map(|i| others[i]),
                    );
                }
                picked
            }
            _ => index::sample(&mut rng, self.classes.len(), s.k_way).into_vec(),
        };
        let mut episode = Episode {
            classes: Vec::with_capacity(s.k_way),
            support: Vec::with_capacity(s.k_way * s.n_shot),
            query: Vec::with_capacity(s.k_way * s.q_queries),
        };
        for c in picked {
            let (class, images) = &self.classes[c];
            let mut chosen: Vec<usize> = index::sample(&mut rng, images.len(), s.per_class())
                .into_iter()
                .map(|j| images[j])
                .collect();
            chosen.shuffle(&mut rng);
            episode.classes.push(*class);
            episode.support.extend_from_slice(&chosen[..s.n_shot]);
            episode.query.extend_from_slice(&chosen[s.n_shot..]);
        }
        episode
    }
}

/// A split of class indices into train, validation and test parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ClassSplit {
    /// The seed that chose it.
    pub seed: u64,
    /// Training classes.
    pub train: Vec<usize>,
    /// Validation classes.
    pub val: Vec<usize>,
    /// Test classes.
    pub test: Vec<usize>,
}

impl ClassSplit {
    /// Shuffles `0..n` with `seed` and cuts it into parts of the given fractions
    /// (test takes what is left). Each part is sorted.
    pub fn new(n: usize, val_fraction: f64, test_fraction: f64, seed: u64) -> ClassSplit {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n_val = ((n as f64) * val_fraction).round() as usize;
        let n_test = (((n as f64) * test_fraction).round() as usize).min(n - n_val.min(n));
        let n_val = n_val.min(n);
        let n_train = n - n_val - n_test;
        let part = |from: usize, len: usize| {
            let mut v = order[from..from + len].to_vec();
            v.sort_unstable();
            v
        };
        ClassSplit {
            seed,
            train: part(0, n_train),
            val: part(n_train, n_val),
            test: part(n_train + n_val, n_test),
        }
    }
}
