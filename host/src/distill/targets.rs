//! Teacher targets: the teacher's unit embedding of every training image and
//! of its mirror image, computed once and kept in an append-only cache file.
//!
//! The cache is `<cache>/teacher-<id>.bin` (`<cache>` as for the face index:
//! `FEWSHOT_CACHE`, else `$XDG_CACHE_HOME/fewshot`, else `~/.cache/fewshot`;
//! `<id>` hashes the teacher file and its recipe). It starts with a header
//! (`FSTEACH1`, the embedding size as `u32`) and holds one record per image:
//! the key's length (`u32`), the key (the image's size and checksum, as
//! the face index; for a blend of a mixed view, `mix`, the share's bits and
//! both images' keys), then `2 × dim` little-endian `f32` (image, mirror). A
//! record cut short by a crash is dropped when the file is next opened.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::teacher::Teacher;
use super::views::{blend, Mix};
use crate::augment::{hflip, Shape};
use crate::data::{faces, preprocess_file};
use crate::embed::Embedder;

const MAGIC: &[u8; 8] = b"FSTEACH1";
/// Images preprocessed and embedded (then stored) at a time.
const CHUNK: usize = 128;

/// Teacher targets of a list of images, in its order.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Embedding size.
    pub dim: usize,
    /// `n × 2 × dim` values: each image's unit embedding, then its mirror's.
    pub data: Vec<f32>,
}

impl Targets {
    /// Image `i`'s target (`mirror`: of its mirror image).
    pub fn row(&self, i: usize, mirror: bool) -> &[f32] {
        let start = (2 * i + usize::from(mirror)) * self.dim;
        &self.data[start..start + self.dim]
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.data.len() / (2 * self.dim).max(1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The cache folder targets go to by default (the face index's).
pub fn default_cache() -> Option<PathBuf> {
    faces::cache_dir()
}

/// The teacher's targets for `paths`: read from the cache file in `cache`
/// where it has them, computed (with a progress bar) and appended to it
/// where not. Without a cache folder they are computed every time.
pub fn teacher_targets(
    teacher: &Teacher,
    paths: &[PathBuf],
    cache: Option<&Path>,
    progress: bool,
) -> anyhow::Result<Targets> {
    let keys: Vec<String> = paths
        .iter()
        .map(|p| faces::key_of(p))
        .collect::<Result<_, _>>()?;
    let recipe = teacher.recipe();
    targets_of(
        teacher,
        &keys,
        |i| faces::legacy_key_of(&paths[i]),
        |i| Ok(preprocess_file(&paths[i], &recipe)?),
        cache,
        progress,
    )
}

/// The teacher's targets for a mixed view of `paths`: image `i`'s is its
/// embedding of the blend of its crops of `paths[i]` and of
/// `paths[mixes[i].partner]` (and of the blend's mirror), cached as
/// [`teacher_targets`] under a key naming both images and the share.
pub fn mixed_targets(
    teacher: &Teacher,
    paths: &[PathBuf],
    mixes: &[Mix],
    cache: Option<&Path>,
    progress: bool,
) -> anyhow::Result<Targets> {
    if mixes.len() != paths.len() || mixes.iter().any(|m| m.partner >= paths.len()) {
        anyhow::bail!(
            "internal: {} blends for {} images",
            mixes.len(),
            paths.len()
        );
    }
    let own: Vec<String> = paths
        .iter()
        .map(|p| faces::key_of(p))
        .collect::<Result<_, _>>()?;
    let keys: Vec<String> = mixes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                "mix {:08x} {} {}",
                m.share.to_bits(),
                own[i],
                own[m.partner]
            )
        })
        .collect();
    let recipe = teacher.recipe();
    targets_of(
        teacher,
        &keys,
        |_| None,
        |i| {
            let a = preprocess_file(&paths[i], &recipe)?;
            let b = preprocess_file(&paths[mixes[i].partner], &recipe)?;
            Ok(blend(&a, &b, mixes[i].share))
        },
        cache,
        progress,
    )
}

/// The targets of the items named by `keys`, item `i`'s crop made by
/// `crop(i)`: cached ones read, missing ones computed and appended.
/// `legacy(i)` is an older key item `i` may be stored under.
fn targets_of(
    teacher: &Teacher,
    keys: &[String],
    legacy: impl Fn(usize) -> Option<String>,
    crop: impl Fn(usize) -> anyhow::Result<Vec<f32>> + Sync,
    cache: Option<&Path>,
    progress: bool,
) -> anyhow::Result<Targets> {
    let dim = teacher.dim();
    let file = cache.map(|d| d.join(format!("teacher-{:016x}.bin", teacher.id())));
    let (mut known, complete) = match &file {
        Some(f) => read_cache(f, dim)?,
        None => (HashMap::new(), 0),
    };
    // Records under the cache's old keys count, and are stored again under
    // the content keys.
    let mut rekeyed = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if known.contains_key(key) {
            continue;
        }
        let old = legacy(i).and_then(|old| known.get(&old).cloned());
        if let Some(row) = old {
            known.insert(key.clone(), row);
            rekeyed.push(i);
        }
    }
    let missing: Vec<usize> = (0..keys.len())
        .filter(|&i| !known.contains_key(&keys[i]))
        .collect();
    let mut writer = match &file {
        Some(f) if !(missing.is_empty() && rekeyed.is_empty()) => {
            Some(open_for_append(f, dim, complete)?)
        }
        _ => None,
    };
    if let Some(w) = &mut writer {
        rekeyed
            .iter()
            .try_for_each(|&i| write_record(w, &keys[i], &known[&keys[i]]))
            .and_then(|()| w.flush())
            .with_context(|| format!("writing the teacher cache {}", file_name(&file)))?;
    }
    if !missing.is_empty() {
        let bar = if progress {
            let bar = ProgressBar::new(missing.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "teacher {bar:40} {pos}/{len} images ({elapsed}, eta {eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message("(image and mirror; cached for the next run)");
            bar
        } else {
            ProgressBar::hidden()
        };
        let recipe = teacher.recipe();
        let shape = Shape {
            channels: recipe.channels,
            height: recipe.height,
            width: recipe.width,
        };
        for chunk in missing.chunks(CHUNK) {
            let crops: Vec<Vec<f32>> = chunk
                .par_iter()
                .map(|&i| {
                    let crop = crop(i)?;
                    let mirror = hflip(&crop, shape);
                    Ok([crop, mirror].concat())
                })
                .collect::<anyhow::Result<_>>()?;
            let embedded = teacher
                .embed(&crops.concat())
                .with_context(|| format!("teacher {}", teacher.name()))?;
            for (j, &i) in chunk.iter().enumerate() {
                let mut row = embedded[2 * j * dim..2 * (j + 1) * dim].to_vec();
                for half in row.chunks_mut(dim) {
                    normalize(half);
                }
                if let Some(w) = &mut writer {
                    write_record(w, &keys[i], &row).with_context(|| {
                        format!("writing the teacher cache {}", file_name(&file))
                    })?;
                }
                known.insert(keys[i].clone(), row);
            }
            if let Some(w) = &mut writer {
                w.flush()
                    .with_context(|| format!("writing the teacher cache {}", file_name(&file)))?;
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
    }
    let mut data = Vec::with_capacity(keys.len() * 2 * dim);
    for key in keys {
        data.extend_from_slice(&known[key]);
    }
    Ok(Targets { dim, data })
}

fn file_name(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map_or_else(String::new, |f| f.display().to_string())
}

/// Scales `v` to unit length (a zero vector stays zero).
fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The complete records of a cache file, and the length they end at.
fn parse(bytes: &[u8], dim: usize) -> Option<(HashMap<String, Vec<f32>>, usize)> {
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes(bytes[8..12].try_into().ok()?) as usize;
    if stored != dim {
        return None;
    }
    let mut map = HashMap::new();
    let mut at = 12;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let end = at + 4 + len + 8 * dim;
        if end > bytes.len() {
            break;
        }
        let Ok(key) = std::str::from_utf8(&bytes[at + 4..at + 4 + len]) else {
            break;
        };
        let values = bytes[at + 4 + len..end]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        map.insert(key.to_string(), values);
        at = end;
    }
    Some((map, at))
}

/// Reads a cache file: its records, and the length their complete ones end
/// at; a missing or foreign file reads as empty (length 0).
fn read_cache(path: &Path, dim: usize) -> anyhow::Result<(HashMap<String, Vec<f32>>, usize)> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(parse(&bytes, dim).unwrap_or_default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((HashMap::new(), 0)),
        Err(e) => Err(e).with_context(|| format!("reading the teacher cache {}", path.display())),
    }
}

/// Opens the cache for appending after its first `keep` bytes (where its
/// complete records end, from [`read_cache`]): cuts a record a crash left
/// unfinished, and starts the file afresh when `keep` is 0 (missing, or not
/// a cache of `dim`).
fn open_for_append(
    path: &Path,
    dim: usize,
    keep: usize,
) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let ctx = || format!("opening the teacher cache {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(ctx)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .with_context(ctx)?;
    file.set_len(keep as u64).with_context(ctx)?;
    let mut w = std::io::BufWriter::new(file);
    use std::io::Seek;
    w.seek(std::io::SeekFrom::Start(keep as u64))
        .with_context(ctx)?;
    if keep == 0 {
        w.write_all(MAGIC).with_context(ctx)?;
        w.write_all(&(dim as u32).to_le_bytes()).with_context(ctx)?;
    }
    Ok(w)
}

fn write_record(w: &mut impl Write, key: &str, values: &[f32]) -> std::io::Result<()> {
    w.write_all(&(key.len() as u32).to_le_bytes())?;
    w.write_all(key.as_bytes())?;
    for v in values {
        w.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_cut_record_is_dropped() {
        let dim = 2;
        let mut bytes = MAGIC.to_vec();
        bytes.extend(2u32.to_le_bytes());
        write_record(&mut bytes, "a", &[1.0, 0.0, 0.0, 1.0]).unwrap();
        let whole = bytes.len();
        write_record(&mut bytes, "bb", &[0.5, 0.5, -0.5, 0.5]).unwrap();
        let (map, end) = parse(&bytes, dim).unwrap();
        assert_eq!(end, bytes.len());
        assert_eq!(map["a"], vec![1.0, 0.0, 0.0, 1.0]);
        assert_eq!(map["bb"], vec![0.5, 0.5, -0.5, 0.5]);
        // A crash in the middle of the second record: the first survives.
        let (map, end) = parse(&bytes[..bytes.len() - 3], dim).unwrap();
        assert_eq!(end, whole);
        assert_eq!(map.len(), 1);
        // Another embedding size or another file: not this cache.
        assert!(parse(&bytes, 3).is_none());
        assert!(parse(b"not a cache file", dim).is_none());
    }
}
