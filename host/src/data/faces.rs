//! Faces of image files for recipes that align: each image's largest face,
//! found once by the device's YuNet detector and cached on disk.
//!
//! **Detector**: `FEWSHOT_DETECTOR`, else `<data>/models/yunet_s_dynamic.onnx`,
//! run as on the device ([`FaceDetector::find_face`]: the largest face,
//! detected again around itself).
//! **Cache**: one JSON line per image in `<cache>/faces-<detector>.jsonl`,
//! keyed by the image's content (its size and a 64-bit FNV-1a of its
//! bytes: a copied, moved or re-extracted data folder keeps its cache), with
//! `<cache>` = `FEWSHOT_CACHE`, else `$XDG_CACHE_HOME/fewshot`, else
//! `~/.cache/fewshot`; `<detector>` is a checksum of the detector file and
//! its settings, so another detector never reads these faces. The warp
//! itself takes microseconds and is redone from the cached landmarks.
//!
//! **No face**: when the detector finds none, the template is placed on the
//! centred square of half the shorter side (the framing of LFW's photos,
//! and of the face crops before alignment), and the image is recorded:
//! [`no_face_files`] lists them, commands report the count and, with
//! `--json`, the files.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use fewshot_core::detect::{largest, Face};
use fewshot_core::{FaceTemplate, Frame, Landmarks};
use fewshot_firmware::detect::{FaceDetector, DEFAULT_DETECTOR};

use super::DataError;

/// Environment variable naming the face detector.
pub const DETECTOR_ENV: &str = "FEWSHOT_DETECTOR";
/// Environment variable naming the cache folder.
pub const CACHE_ENV: &str = "FEWSHOT_CACHE";
/// Names how faces are found (part of the cache's name): change it when
/// the detection code changes what it finds.
const METHOD: &str = "find_face 3";
/// The fallback's square, as a fraction of the shorter side.
pub const FALLBACK_CROP: f32 = 0.5;

/// Where an image's landmarks came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Found {
    /// The detector's largest face.
    Face(Face),
    /// No face was found: the centred fallback.
    Fallback(Landmarks),
}

impl Found {
    /// The landmarks to align by.
    pub fn landmarks(&self) -> Landmarks {
        match self {
            Found::Face(f) => f.landmarks,
            Found::Fallback(l) => *l,
        }
    }
}

/// The template on the centred square of [`FALLBACK_CROP`] of the shorter side.
pub fn fallback_landmarks(width: usize, height: usize, template: &FaceTemplate) -> Landmarks {
    let side = FALLBACK_CROP * width.min(height) as f32;
    let (x0, y0) = ((width as f32 - side) / 2.0, (height as f32 - side) / 2.0);
    template.points.map(|[x, y]| [x0 + x * side, y0 + y * side])
}

/// The faces of image files: a detector and its cache.
pub struct FaceIndex {
    detector: FaceDetector,
    cache_file: Option<PathBuf>,
    faces: Mutex<HashMap<String, Option<Face>>>,
    no_face: Mutex<Vec<PathBuf>>,
}

static INDEX: OnceLock<Result<FaceIndex, String>> = OnceLock::new();

/// The process's index: the detector and cache the environment names.
fn index() -> Result<&'static FaceIndex, DataError> {
    INDEX
        .get_or_init(|| {
            let path = std::env::var_os(DETECTOR_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| super::data_root().join(DEFAULT_DETECTOR));
            FaceIndex::open(&path, cache_dir().as_deref()).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|message| DataError::Detector(message.clone()))
}

impl FaceIndex {
    /// Loads the detector at `path` and the faces cached for it in `cache_dir`
    /// (none: nothing is cached).
    pub fn open(path: &Path, cache_dir: Option<&Path>) -> Result<FaceIndex, DataError> {
        open_index(path, cache_dir).map_err(DataError::Detector)
    }

    /// The file the faces are cached in.
    pub fn cache_file(&self) -> Option<&Path> {
        self.cache_file.as_deref()
    }

    /// The images of this index whose face was not found.
    pub fn no_face_files(&self) -> Vec<PathBuf> {
        self.no_face.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

fn open_index(path: &Path, cache_dir: Option<&Path>) -> Result<FaceIndex, String> {
    let detector = FaceDetector::load(path, None).map_err(|e| {
        format!("{e} (the recipe aligns faces; set {DETECTOR_ENV} to a YuNet .onnx file)")
    })?;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let settings = format!("{METHOD} {}", detector.settings());
    let key = fnv1a(bytes.iter().chain(settings.as_bytes()));
    let cache_file = cache_dir.map(|d| d.join(format!("faces-{key:016x}.jsonl")));
    let mut faces = HashMap::new();
    if let Some(file) = &cache_file {
        if let Ok(text) = std::fs::read_to_string(file) {
            // A line that does not parse (a write cut short) is skipped: the
            // image is detected again.
            for line in text.lines() {
                if let Ok(entry) = serde_json::from_str::<Entry>(line) {
                    faces.insert(entry.key, entry.face.map(Face::from));
                }
            }
        }
    }
    Ok(FaceIndex {
        detector,
        cache_file,
        faces: Mutex::new(faces),
        no_face: Mutex::new(Vec::new()),
    })
}

/// 64-bit FNV-1a: names the cache file after the detector and its settings,
/// and keys each image by its bytes.
pub(crate) fn fnv1a<'a>(bytes: impl Iterator<Item = &'a u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn cache_dir() -> Option<PathBuf> {
    std::env::var_os(CACHE_ENV)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("fewshot")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/fewshot")))
}

/// One cached detection.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    key: String,
    face: Option<StoredFace>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredFace {
    #[serde(rename = "box")]
    bbox: [f32; 4],
    score: f32,
    landmarks: Landmarks,
}

impl From<StoredFace> for Face {
    fn from(s: StoredFace) -> Face {
        Face {
            bbox: s.bbox,
            score: s.score,
            landmarks: s.landmarks,
        }
    }
}

/// The cache key of an image file: its size and a checksum of its bytes, so
/// that the same image keeps its cached face (and teacher targets) wherever
/// the data folder lies and whatever its files' times.
pub(crate) fn key_of(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    Ok(content_key(&bytes))
}

/// The key this cache used before [`key_of`] (absolute path, size and
/// modification time): records under it are still found, and stored again
/// under the content key, while the file keeps that size and time.
pub(crate) fn legacy_key_of(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let abs = std::fs::canonicalize(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{}|{}|{mtime}", abs.display(), meta.len()))
}

/// [`key_of`] of a file holding `bytes`.
fn content_key(bytes: &[u8]) -> String {
    format!("{}|{:016x}", bytes.len(), fnv1a(bytes.iter()))
}

/// The face to align `frame` (decoded from `path`) by, from the process's
/// index ([`FaceIndex::face_of`]).
pub fn face_of(
    path: &Path,
    frame: &Frame<'_>,
    template: &FaceTemplate,
) -> Result<Found, DataError> {
    index()?.face_of(path, frame, template)
}

impl FaceIndex {
    /// The face to align `frame` (decoded from `path`) by: the cached or
    /// newly found face, else the centred fallback (recorded).
    pub fn face_of(
        &self,
        path: &Path,
        frame: &Frame<'_>,
        template: &FaceTemplate,
    ) -> Result<Found, DataError> {
        let key = key_of(path)?;
        let cached = self.faces.lock().ok().and_then(|m| m.get(&key).copied());
        // A record under the old key: kept, and stored under the new one.
        let cached = cached.or_else(|| {
            let old = legacy_key_of(path)?;
            let face = self.faces.lock().ok()?.get(&old).copied()?;
            remember(self, key.clone(), face);
            Some(face)
        });
        let face = match cached {
            Some(face) => face,
            None => {
                let (_, face) = self
                    .detector
                    .find_face(frame)
                    .map_err(|e| DataError::Detector(format!("{}: {e}", path.display())))?;
                remember(self, key, face);
                face
            }
        };
        Ok(match face {
            Some(face) => Found::Face(face),
            None => {
                if let Ok(mut list) = self.no_face.lock() {
                    if !list.iter().any(|p| p == path) {
                        list.push(path.to_path_buf());
                    }
                }
                Found::Fallback(fallback_landmarks(frame.width, frame.height, template))
            }
        })
    }
}

/// Keeps a detection in memory and appends it to the cache file (a cache
/// that cannot be written only costs detecting again next time).
fn remember(index: &FaceIndex, key: String, face: Option<Face>) {
    let entry = Entry {
        key: key.clone(),
        face: face.map(|f| StoredFace {
            bbox: f.bbox,
            score: f.score,
            landmarks: f.landmarks,
        }),
    };
    if let Ok(mut faces) = index.faces.lock() {
        faces.insert(key, face);
        if let (Some(file), Ok(line)) = (&index.cache_file, serde_json::to_string(&entry)) {
            let _ = file
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(file)
                })
                .and_then(|mut f| writeln!(f, "{line}"));
        }
    }
}

/// Every image of this process whose face was not found (the fallback was used).
pub fn no_face_files() -> Vec<PathBuf> {
    INDEX
        .get()
        .and_then(|i| i.as_ref().ok())
        .map(FaceIndex::no_face_files)
        .unwrap_or_default()
}

/// What the detector sees in one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    /// Faces found.
    pub faces: usize,
    /// The largest face, if any.
    pub largest: Option<Face>,
}

/// Runs the detector on every image (in parallel, without the cache, so
/// every image is really detected), with a progress bar when `progress`.
pub fn survey(paths: &[PathBuf], progress: bool) -> Result<Vec<Seen>, DataError> {
    use rayon::prelude::*;
    let index = index()?;
    let bar = if progress {
        indicatif::ProgressBar::new(paths.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let seen = paths
        .par_iter()
        .map(|p| {
            let owned = super::decode_frame(p)?;
            let frame = owned.as_frame().map_err(|source| DataError::Preprocess {
                path: p.clone(),
                source,
            })?;
            let faces = index
                .detector
                .detect(&frame)
                .map_err(|e| DataError::Detector(format!("{}: {e}", p.display())))?;
            bar.inc(1);
            Ok(Seen {
                faces: faces.len(),
                largest: largest(&faces).copied(),
            })
        })
        .collect();
    bar.finish_and_clear();
    seen
}

/// The detector file in use.
pub fn detector_path() -> Result<PathBuf, DataError> {
    Ok(index()?.detector.path().to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        // The FNV authors' test vectors for 64-bit FNV-1a.
        assert_eq!(fnv1a(b"".iter()), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a".iter()), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar".iter()), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_key_follows_the_content_not_the_path_or_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = dir.path().join("a.png");
        let b = dir.path().join("sub").join("b.png");
        let c = dir.path().join("c.png");
        std::fs::create_dir_all(dir.path().join("sub")).expect("sub dir");
        std::fs::write(&a, b"same bytes").expect("write a");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&b, b"same bytes").expect("write b");
        std::fs::write(&c, b"same bytez").expect("write c");
        let ka = key_of(&a).expect("key a");
        assert_eq!(
            ka,
            key_of(&b).expect("key b"),
            "a copy elsewhere, written later"
        );
        assert_ne!(ka, key_of(&c).expect("key c"), "one byte differs");
        assert!(key_of(&dir.path().join("missing.png")).is_err());
    }
}
