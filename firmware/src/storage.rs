//! [`FileStore`]: the gallery's bytes in a file, replaced atomically (the
//! [`Storage`] trait and [`MemStorage`] come from [`fewshot_door::storage`]).
//!
//! A save writes `<file>.tmp`, fsyncs it, renames it over `<file>` and
//! fsyncs the directory. A power cut at any point leaves `<file>` holding
//! either the old gallery or the new one (the rename is atomic, and the new
//! bytes are on disk before it). A `<file>.tmp` left by a cut is removed at
//! the next load. All file operations go through [`Fs`], so tests can cut the
//! power at every step.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use fewshot_door::storage::*;

/// The file operations [`FileStore`] needs, one call per step that a power
/// cut can interrupt.
pub trait Fs {
    /// The file's bytes, `None` when it does not exist.
    fn read(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Creates or truncates `path` and writes `bytes` (not yet durable).
    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Makes the file's contents durable (fsync).
    fn sync_file(&mut self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` atomically.
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames) durable (fsync).
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&mut self, path: &Path) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&mut self, path: &Path) -> io::Result<bool>;
}

impl<F: Fs + ?Sized> Fs for &mut F {
    fn read(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        (**self).read(path)
    }
    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        (**self).write(path, bytes)
    }
    fn sync_file(&mut self, path: &Path) -> io::Result<()> {
        (**self).sync_file(path)
    }
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        (**self).rename(from, to)
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        (**self).sync_dir(dir)
    }
    fn remove(&mut self, path: &Path) -> io::Result<()> {
        (**self).remove(path)
    }
    fn exists(&mut self, path: &Path) -> io::Result<bool> {
        (**self).exists(path)
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl Fs for StdFs {
    fn read(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        std::fs::File::create(path)?.write_all(bytes)
    }

    fn sync_file(&mut self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .sync_all()
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn exists(&mut self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }
}

/// Errors of [`FileStore`]; each names the file and the step.
#[derive(Debug, thiserror::Error)]
#[error("{} ({step}): {source}", path.display())]
pub struct FileStoreError {
    /// The file concerned.
    pub path: PathBuf,
    /// What was being done.
    pub step: &'static str,
    /// The cause.
    pub source: io::Error,
}

/// A gallery file replaced atomically (see the module documentation).
#[derive(Debug)]
pub struct FileStore<F: Fs = StdFs> {
    fs: F,
    path: PathBuf,
}

impl FileStore<StdFs> {
    /// The gallery file at `path` on the real file system.
    pub fn open(path: impl Into<PathBuf>) -> Self {
        FileStore::with_fs(StdFs, path)
    }
}

impl<F: Fs> FileStore<F> {
    /// The gallery file at `path` on `fs`.
    pub fn with_fs(fs: F, path: impl Into<PathBuf>) -> Self {
        FileStore {
            fs,
            path: path.into(),
        }
    }

    /// The gallery file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file system, back.
    pub fn into_fs(self) -> F {
        self.fs
    }

    /// The temporary file a save writes first.
    pub fn temp_path(&self) -> PathBuf {
        with_suffix(&self.path, ".tmp")
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn err(&self, path: &Path, step: &'static str) -> impl FnOnce(io::Error) -> FileStoreError {
        let path = path.to_path_buf();
        move |source| FileStoreError { path, step, source }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl<F: Fs> Storage for FileStore<F> {
    type Error = FileStoreError;

    fn load(&mut self) -> Result<Option<Vec<u8>>, FileStoreError> {
        let tmp = self.temp_path();
        // A save cut short by a power cut: the file itself is intact.
        if self.fs.exists(&tmp).map_err(self.err(&tmp, "checking"))? {
            self.fs
                .remove(&tmp)
                .map_err(self.err(&tmp, "removing an interrupted save"))?;
        }
        let path = self.path.clone();
        self.fs.read(&path).map_err(self.err(&path, "reading"))
    }

    fn save(&mut self, bytes: &[u8]) -> Result<(), FileStoreError> {
        let tmp = self.temp_path();
        let result = self
            .fs
            .write(&tmp, bytes)
            .map_err(self.err(&tmp, "writing"))
            .and_then(|()| self.fs.sync_file(&tmp).map_err(self.err(&tmp, "syncing")))
            .and_then(|()| {
                self.fs
                    .rename(&tmp, &self.path.clone())
                    .map_err(self.err(&tmp, "renaming"))
            });
        if let Err(e) = result {
            // Best effort: the next load removes it anyway.
            let _ = self.fs.remove(&tmp);
            return Err(e);
        }
        let dir = self.dir();
        self.fs
            .sync_dir(&dir)
            .map_err(self.err(&dir, "syncing the directory"))
    }

    fn set_aside(&mut self) -> Result<String, FileStoreError> {
        let mut n = 1u32;
        let aside = loop {
            let candidate = with_suffix(&self.path, &format!(".corrupt-{n}"));
            if !self
                .fs
                .exists(&candidate)
                .map_err(self.err(&candidate, "checking"))?
            {
                break candidate;
            }
            n += 1;
        };
        let path = self.path.clone();
        self.fs
            .rename(&path, &aside)
            .map_err(self.err(&path, "setting aside"))?;
        let dir = self.dir();
        self.fs
            .sync_dir(&dir)
            .map_err(self.err(&dir, "syncing the directory"))?;
        Ok(aside.display().to_string())
    }
}
