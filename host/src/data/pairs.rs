use std::path::{Path, PathBuf};

use super::DataError;

/// One image of a pair: a person and the image's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairImage {
    /// Person (folder) name.
    pub name: String,
    /// Image number, as in `Name_0003.jpg`.
    pub number: u32,
}

impl PairImage {
    /// The image file under an LFW-style folder: `images/Name/Name_NNNN.jpg`.
    pub fn path(&self, images: &Path) -> PathBuf {
        images
            .join(&self.name)
            .join(format!("{}_{:04}.jpg", self.name, self.number))
    }
}

/// Two images and whether they show the same person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// First image.
    pub a: PairImage,
    /// Second image.
    pub b: PairImage,
    /// Same person (matched pair) or not.
    pub same: bool,
}

/// An LFW pair list.
#[derive(Debug, Clone)]
pub struct PairList {
    /// The pairs, in file order.
    pub pairs: Vec<Pair>,
}

impl PairList {
    /// Reads a list in LFW's format: a header line `N` (or `folds N`), then per
    /// fold `N` matched lines `Name i j` and `N` mismatched lines `Name1 i Name2 j`.
    pub fn load(path: &Path) -> Result<PairList, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses the text of a pair list; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<PairList, DataError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or_else(|| DataError::malformed(path, 1, "empty file; expected a count line"))?;
        let counts: Vec<usize> = header
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| {
                DataError::malformed(
                    path,
                    1,
                    format!("expected a count `N` or `folds N`, found {header:?}"),
                )
            })?;
        let (folds, per) = match counts[..] {
            [n] => (1, n),
            [f, n] => (f, n),
            _ => {
                return Err(DataError::malformed(
                    path,
                    1,
                    format!("expected a count `N` or `folds N`, found {header:?}"),
                ))
            }
        };
        let number = |s: &str, line: usize| {
            s.parse::<u32>().map_err(|_| {
                DataError::malformed(path, line, format!("expected an image number, found {s:?}"))
            })
        };
        let mut pairs = Vec::with_capacity(2 * folds * per);
        for fold in 0..folds {
            for k in 0..2 * per {
                let same = k < per;
                let (i, line) = lines.next().ok_or_else(|| {
                    DataError::malformed(
                        path,
                        text.lines().count(),
                        format!("file ends early: fold {} needs {per} matched and {per} mismatched pairs", fold + 1),
                    )
                })?;
                let n = i + 1;
                let f: Vec<&str> = line.split_whitespace().collect();
                let pair = match (same, &f[..]) {
                    (true, [name, a, b]) => Pair {
                        a: PairImage {
                            name: name.to_string(),
                            number: number(a, n)?,
                        },
                        b: PairImage {
                            name: name.to_string(),
                            number: number(b, n)?,
                        },
                        same,
                    },
                    (false, [n1, a, n2, b]) => Pair {
                        a: PairImage {
                            name: n1.to_string(),
                            number: number(a, n)?,
                        },
                        b: PairImage {
                            name: n2.to_string(),
                            number: number(b, n)?,
                        },
                        same,
                    },
                    (true, _) => {
                        return Err(DataError::malformed(
                            path,
                            n,
                            format!("expected a matched pair `Name i j`, found {line:?}"),
                        ))
                    }
                    (false, _) => {
                        return Err(DataError::malformed(
                            path,
                            n,
                            format!("expected a mismatched pair `Name1 i Name2 j`, found {line:?}"),
                        ))
                    }
                };
                pairs.push(pair);
            }
        }
        if let Some((i, line)) = lines.next() {
            return Err(DataError::malformed(
                path,
                i + 1,
                format!("more pairs than the header announces: {line:?}"),
            ));
        }
        Ok(PairList { pairs })
    }
}

/// Why a pair list could not be sampled.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// An image file is not named `<Name>_NNNN.<ext>`.
    #[error("{0}: not named <Name>_NNNN as LFW images are")]
    NotLfwName(PathBuf),
    /// A fold has too few people for the pairs asked for.
    #[error("fold {fold}: {people} people ({with_two} with two or more images) cannot give {per_fold} distinct matched and mismatched pairs; ask for fewer folds or pairs")]
    TooFew {
        /// Fold number, from 1.
        fold: usize,
        /// People in the fold.
        people: usize,
        /// Of whom this many have two images or more.
        with_two: usize,
        /// Pairs of each kind asked for.
        per_fold: usize,
    },
}

/// The LFW image number of a file `<Name>_NNNN.jpg`.
fn lfw_number(path: &Path, name: &str) -> Result<u32, SampleError> {
    let bad = || SampleError::NotLfwName(path.to_path_buf());
    let stem = path.file_stem().and_then(|s| s.to_str()).ok_or_else(bad)?;
    let rest = stem.strip_prefix(name).ok_or_else(bad)?;
    rest.strip_prefix('_')
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)
}

impl PairList {
    /// Samples a pair list in the manner of LFW's View 2: people are dealt
    /// into `folds` disjoint folds by a seeded shuffle; each fold gets
    /// `per_fold` distinct matched pairs (a person with two or more images,
    /// two of them) and `per_fold` distinct mismatched pairs (two people, one
    /// image each). Classes must be LFW-style `<Name>/<Name>_NNNN.jpg`.
    pub fn sample(
        classes: &[super::Class],
        folds: usize,
        per_fold: usize,
        seed: u64,
    ) -> Result<PairList, SampleError> {
        use rand::seq::SliceRandom;
        use rand::{RngExt, SeedableRng};
        use std::collections::HashSet;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut people: Vec<(&str, Vec<u32>)> = Vec::with_capacity(classes.len());
        for c in classes {
            let numbers = c
                .images
                .iter()
                .map(|p| lfw_number(p, &c.name))
                .collect::<Result<Vec<_>, _>>()?;
            people.push((&c.name, numbers));
        }
        people.shuffle(&mut rng);
        let mut pairs = Vec::with_capacity(2 * folds * per_fold);
        for fold in 0..folds {
            let group: Vec<&(&str, Vec<u32>)> = people.iter().skip(fold).step_by(folds).collect();
            let multi: Vec<&&(&str, Vec<u32>)> = group.iter().filter(|p| p.1.len() >= 2).collect();
            let matched_max: usize = multi.iter().map(|p| p.1.len() * (p.1.len() - 1) / 2).sum();
            if matched_max < per_fold || group.len() < 2 {
                return Err(SampleError::TooFew {
                    fold: fold + 1,
                    people: group.len(),
                    with_two: multi.len(),
                    per_fold,
                });
            }
            let image = |name: &str, number: u32| PairImage {
                name: name.to_string(),
                number,
            };
            let mut seen = HashSet::new();
            while seen.len() < per_fold {
                let (name, numbers) = multi[rng.random_range(0..multi.len())];
                let i = rng.random_range(0..numbers.len());
                let j = rng.random_range(0..numbers.len() - 1);
                let j = if j >= i { j + 1 } else { j };
                let (a, b) = (numbers[i.min(j)], numbers[i.max(j)]);
                if seen.insert((*name, a, b)) {
                    pairs.push(Pair {
                        a: image(name, a),
                        b: image(name, b),
                        same: true,
                    });
                }
            }
            let mut seen = HashSet::new();
            let mut tries = 0usize;
            while seen.len() < per_fold {
                tries += 1;
                if tries > 1000 * per_fold {
                    return Err(SampleError::TooFew {
                        fold: fold + 1,
                        people: group.len(),
                        with_two: multi.len(),
                        per_fold,
                    });
                }
                let p = rng.random_range(0..group.len());
                let q = rng.random_range(0..group.len() - 1);
                let q = if q >= p { q + 1 } else { q };
                let (p, q) = (p.min(q), p.max(q));
                let (n1, i1) = (group[p].0, &group[p].1);
                let (n2, i2) = (group[q].0, &group[q].1);
                let (a, b) = (
                    i1[rng.random_range(0..i1.len())],
                    i2[rng.random_range(0..i2.len())],
                );
                if seen.insert((n1, a, n2, b)) {
                    pairs.push(Pair {
                        a: image(n1, a),
                        b: image(n2, b),
                        same: false,
                    });
                }
            }
        }
        Ok(PairList { pairs })
    }

    /// The list in LFW's text format (`folds N` header when there are
    /// several folds). Pairs must be in fold order, matched ones first, as
    /// [`PairList::sample`] and [`PairList::parse`] keep them.
    pub fn to_lfw_text(&self, folds: usize) -> String {
        let per = self.pairs.len() / (2 * folds.max(1));
        let mut out = if folds > 1 {
            format!("{folds}\t{per}\n")
        } else {
            format!("{per}\n")
        };
        for p in &self.pairs {
            if p.same {
                out += &format!("{}\t{}\t{}\n", p.a.name, p.a.number, p.b.number);
            } else {
                out += &format!(
                    "{}\t{}\t{}\t{}\n",
                    p.a.name, p.a.number, p.b.name, p.b.number
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;
    use crate::data::Class;

    fn person(name: &str, n: u32) -> Class {
        Class {
            name: name.into(),
            images: (1..=n)
                .map(|i| PathBuf::from(format!("/x/{name}/{name}_{i:04}.jpg")))
                .collect(),
        }
    }

    #[test]
    fn sampled_pairs_are_lfw_shaped_disjoint_by_fold_and_round_trip() {
        let classes: Vec<Class> = (0..40)
            .map(|i| person(&format!("P_{i}"), 1 + (i % 4)))
            .collect();
        let list = PairList::sample(&classes, 4, 5, 7).unwrap();
        assert_eq!(list.pairs.len(), 40);
        let mut fold_of = std::collections::HashMap::new();
        for (k, p) in list.pairs.iter().enumerate() {
            let fold = k / 10;
            assert_eq!(p.same, k % 10 < 5, "matched pairs come first in a fold");
            assert_eq!(p.same, p.a.name == p.b.name);
            if p.same {
                assert!(p.a.number < p.b.number);
            }
            for name in [&p.a.name, &p.b.name] {
                assert_eq!(
                    *fold_of.entry(name.clone()).or_insert(fold),
                    fold,
                    "{name} in two folds"
                );
            }
        }
        let text = list.to_lfw_text(4);
        let back = PairList::parse(&text, Path::new("x.txt")).unwrap();
        assert_eq!(back.pairs, list.pairs);
        // Same seed, same list.
        assert_eq!(
            PairList::sample(&classes, 4, 5, 7).unwrap().pairs,
            list.pairs
        );
    }

    #[test]
    fn too_few_people_and_odd_names_are_errors() {
        let classes = vec![person("A_B", 2), person("C_D", 1)];
        assert!(matches!(
            PairList::sample(&classes, 1, 3, 0),
            Err(SampleError::TooFew { fold: 1, .. })
        ));
        let odd = vec![Class {
            name: "A_B".into(),
            images: vec![PathBuf::from("/x/A_B/photo.jpg")],
        }];
        assert!(matches!(
            PairList::sample(&odd, 1, 1, 0),
            Err(SampleError::NotLfwName(_))
        ));
    }
}
