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
