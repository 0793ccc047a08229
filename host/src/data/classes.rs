use std::path::{Path, PathBuf};

use super::DataError;

/// File extensions read as images.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["png", "pgm", "jpg", "jpeg", "pnm"];

/// How classes are laid out under a root folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `<Alphabet>/<character>/<image>` (Omniglot) if the first class folder holds folders, else flat.
    Auto,
    /// `<Alphabet>/<character>/<image>`: each character is a class named `Alphabet/character`.
    Omniglot,
    /// `<class>/<image>`.
    Flat,
}

/// One class: its name and image files, sorted by file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    /// Name relative to the root (`Greek/character01`, `s12`, `George_W_Bush`).
    pub name: String,
    /// Image files, sorted by file name.
    pub images: Vec<PathBuf>,
}

/// Classes found under a root folder, sorted by name.
#[derive(Debug, Clone)]
pub struct ClassSet {
    /// The root folder.
    pub root: PathBuf,
    /// The classes.
    pub classes: Vec<Class>,
}

impl ClassSet {
    /// Reads the classes under `root`. Every class folder must hold at least
    /// one image and nothing but images; an empty or odd folder is an error
    /// that names it.
    pub fn load(root: &Path, layout: Layout) -> Result<ClassSet, DataError> {
        let top = sorted_dirs(root)?;
        if top.is_empty() {
            return Err(DataError::layout(root, "no class folders inside"));
        }
        let nested = match layout {
            Layout::Omniglot => true,
            Layout::Flat => false,
            Layout::Auto => !sorted_dirs(&top[0])?.is_empty(),
        };
        let mut classes = Vec::new();
        for dir in &top {
            if nested {
                let alphabet = file_name(dir);
                let inner = sorted_dirs(dir)?;
                if inner.is_empty() {
                    return Err(DataError::layout(
                        dir,
                        "expected character folders inside (Omniglot layout)",
                    ));
                }
                for c in inner {
                    let name = format!("{alphabet}/{}", file_name(&c));
                    classes.push(Class {
                        images: images_in(&c)?,
                        name,
                    });
                }
            } else {
                classes.push(Class {
                    name: file_name(dir),
                    images: images_in(dir)?,
                });
            }
        }
        Ok(ClassSet {
            root: root.to_path_buf(),
            classes,
        })
    }

    /// Number of images over all classes.
    pub fn image_count(&self) -> usize {
        self.classes.iter().map(|c| c.images.len()).sum()
    }

    /// Whether the classes sit in alphabet folders (`Alphabet/character01`).
    pub fn has_alphabets(&self) -> bool {
        self.classes.iter().any(|c| c.name.contains('/'))
    }

    /// Each class's alphabet (all of its name but the last folder) as an id
    /// from 0, in order of first appearance; classes at the root share one.
    pub fn alphabet_ids(&self) -> Vec<usize> {
        let mut seen: std::collections::HashMap<&str, usize> = Default::default();
        self.classes
            .iter()
            .map(|c| {
                let alphabet = c.name.rsplit_once('/').map_or("", |(a, _)| a);
                let next = seen.len();
                *seen.entry(alphabet).or_insert(next)
            })
            .collect()
    }

    /// Drops the classes whose name also appears in `other` (for example the
    /// alphabets a model was trained on), returning how many were dropped.
    pub fn exclude(&mut self, other: &ClassSet) -> usize {
        self.exclude_names(other.classes.iter().map(|c| c.name.as_str()))
    }

    /// Drops the classes with these names, returning how many were dropped.
    pub fn exclude_names<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> usize {
        let names: std::collections::HashSet<&str> = names.into_iter().collect();
        let before = self.classes.len();
        self.classes.retain(|c| !names.contains(c.name.as_str()));
        before - self.classes.len()
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let read = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(entries(dir)?.into_iter().filter(|p| p.is_dir()).collect())
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn images_in(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut images = Vec::new();
    for p in entries(dir)? {
        if p.is_dir() {
            return Err(DataError::layout(
                &p,
                "unexpected folder inside a class folder",
            ));
        }
        if is_image(&p) {
            images.push(p);
        } else {
            return Err(DataError::layout(
                &p,
                "not an image (expected .png, .pgm, .jpg or .jpeg)",
            ));
        }
    }
    if images.is_empty() {
        return Err(DataError::layout(dir, "class folder holds no images"));
    }
    Ok(images)
}
