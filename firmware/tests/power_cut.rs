//! Power cuts during a gallery save: whatever step the power is cut at, the
//! gallery read at the next boot is the old one or the new one.
//!
//! Two file systems: a model of a disk that keeps only what was made durable
//! (file contents after fsync, directory entries after the directory's fsync;
//! the pessimistic crash) or everything written (the optimistic one), and the
//! real file system with a failure injected at every step.
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use fewshot_firmware::core::store;
use fewshot_firmware::core::Gallery;
use fewshot_firmware::storage::{FileStore, Fs, StdFs, Storage};

type G = Gallery<8, 4>;

fn gallery(names: &[&str]) -> G {
    let mut g = G::new();
    for (i, n) in names.iter().enumerate() {
        g.enroll(n, &[i as f32, 1.0, 2.0, 3.0]).unwrap();
    }
    g
}

fn bytes(g: &G, generation: u32) -> Vec<u8> {
    let mut out = vec![0; g.encoded_len()];
    store::encode(g, generation, &mut out).unwrap();
    out
}

/// A disk model: inodes with written and durable contents, a directory with
/// written and durable entries. Every mutating call is a step; at step
/// `cut_at` the call fails halfway (a write stores half its bytes) and the
/// power is gone: later calls fail.
#[derive(Debug, Clone, Default)]
struct SimFs {
    written: Vec<Vec<u8>>,
    durable: Vec<Vec<u8>>,
    dir: BTreeMap<PathBuf, usize>,
    durable_dir: BTreeMap<PathBuf, usize>,
    steps: usize,
    cut_at: Option<usize>,
    dead: bool,
}

impl SimFs {
    fn step(&mut self) -> io::Result<bool> {
        if self.dead {
            return Err(io::Error::other("no power"));
        }
        self.steps += 1;
        if Some(self.steps) == self.cut_at {
            self.dead = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// The disk after the power comes back: only durable state
    /// (`pessimistic`), or everything written.
    fn reboot(&self, pessimistic: bool) -> SimFs {
        let (dir, contents) = if pessimistic {
            (self.durable_dir.clone(), self.durable.clone())
        } else {
            (self.dir.clone(), self.written.clone())
        };
        SimFs {
            written: contents.clone(),
            durable: contents,
            dir: dir.clone(),
            durable_dir: dir,
            ..SimFs::default()
        }
    }
}

fn cut() -> io::Error {
    io::Error::other("power cut")
}

impl Fs for SimFs {
    fn read(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(self.dir.get(path).map(|&i| self.written[i].clone()))
    }

    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let cut_now = self.step()?;
        let inode = match self.dir.get(path) {
            Some(&i) => i,
            None => {
                self.written.push(Vec::new());
                self.durable.push(Vec::new());
                self.dir.insert(path.to_path_buf(), self.written.len() - 1);
                self.written.len() - 1
            }
        };
        let n = if cut_now {
            bytes.len() / 2
        } else {
            bytes.len()
        };
        self.written[inode] = bytes[..n].to_vec();
        if cut_now {
            Err(cut())
        } else {
            Ok(())
        }
    }

    fn sync_file(&mut self, path: &Path) -> io::Result<()> {
        if self.step()? {
            return Err(cut());
        }
        let i = *self.dir.get(path).ok_or(io::ErrorKind::NotFound)?;
        self.durable[i] = self.written[i].clone();
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        if self.step()? {
            return Err(cut());
        }
        let i = self.dir.remove(from).ok_or(io::ErrorKind::NotFound)?;
        self.dir.insert(to.to_path_buf(), i);
        Ok(())
    }

    fn sync_dir(&mut self, _dir: &Path) -> io::Result<()> {
        if self.step()? {
            return Err(cut());
        }
        self.durable_dir = self.dir.clone();
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        if self.step()? {
            return Err(cut());
        }
        self.dir.remove(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(())
    }

    fn exists(&mut self, path: &Path) -> io::Result<bool> {
        Ok(self.dir.contains_key(path))
    }
}

/// What the next boot reads: the decoded gallery, or `None` for no file.
fn boot_read<F: Fs>(fs: F, path: &Path) -> Option<G> {
    let mut store = FileStore::with_fs(fs, path);
    let bytes = store.load().expect("loading after the cut")?;
    Some(
        store::decode::<8, 4>(&bytes)
            .expect("the file after a cut must decode")
            .gallery,
    )
}

#[test]
fn a_cut_at_any_step_leaves_the_old_or_the_new_gallery_on_a_model_disk() {
    let path = Path::new("/door/gallery.fsgl");
    let old = gallery(&["ann", "bob"]);
    let new = gallery(&["ann", "bob", "cy"]);
    for first_save in [false, true] {
        // The disk before: the old gallery saved (or nothing, for a first save).
        let mut before = SimFs::default();
        if !first_save {
            FileStore::with_fs(&mut before, path)
                .save(&bytes(&old, 1))
                .unwrap();
        }
        let expected_old = (!first_save).then(|| old.clone());
        // Count the steps of an uncut save.
        let mut probe = before.clone();
        probe.steps = 0;
        FileStore::with_fs(&mut probe, path)
            .save(&bytes(&new, 2))
            .unwrap();
        let steps = probe.steps;
        assert_eq!(steps, 4, "write, fsync, rename, fsync dir");
        for cut_at in 1..=steps + 1 {
            let mut fs = before.clone();
            fs.steps = 0;
            fs.cut_at = Some(cut_at);
            let saved = FileStore::with_fs(&mut fs, path).save(&bytes(&new, 2));
            assert_eq!(saved.is_ok(), cut_at > steps, "cut at step {cut_at}");
            for pessimistic in [true, false] {
                let after = boot_read(fs.reboot(pessimistic), path);
                assert!(
                    after == expected_old || after.as_ref() == Some(&new),
                    "cut at step {cut_at} (pessimistic {pessimistic}, first save {first_save}): read {after:?}"
                );
                if cut_at > steps {
                    assert_eq!(after.as_ref(), Some(&new), "an uncut save is durable");
                }
            }
        }
    }
}

#[test]
fn skipping_the_fsync_before_the_rename_would_be_caught() {
    // The model is strict enough to catch the classic mistake: rename a file
    // whose contents were never made durable, and a cut after the directory
    // sync leaves an empty gallery file.
    let path = Path::new("/door/gallery.fsgl");
    let mut fs = SimFs::default();
    FileStore::with_fs(&mut fs, path)
        .save(&bytes(&gallery(&["ann"]), 1))
        .unwrap();
    let tmp = Path::new("/door/gallery.fsgl.tmp");
    fs.write(tmp, &bytes(&gallery(&["ann", "bob"]), 2)).unwrap();
    fs.rename(tmp, path).unwrap();
    fs.sync_dir(Path::new("/door")).unwrap();
    let mut store = FileStore::with_fs(fs.reboot(true), path);
    let read = store.load().unwrap().unwrap();
    assert!(store::decode::<8, 4>(&read).is_err());
}

/// The real file system, failing (and doing half a write) at step `fail_at`.
struct FailingFs {
    steps: usize,
    fail_at: usize,
}

impl FailingFs {
    fn step(&mut self) -> io::Result<()> {
        self.steps += 1;
        if self.steps == self.fail_at {
            Err(io::Error::other("injected failure"))
        } else {
            Ok(())
        }
    }
}

impl Fs for FailingFs {
    fn read(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        StdFs.read(path)
    }
    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.step() {
            StdFs.write(path, &bytes[..bytes.len() / 2])?;
            return Err(e);
        }
        StdFs.write(path, bytes)
    }
    fn sync_file(&mut self, path: &Path) -> io::Result<()> {
        self.step()?;
        StdFs.sync_file(path)
    }
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        StdFs.rename(from, to)
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.step()?;
        StdFs.sync_dir(dir)
    }
    fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.step()?;
        StdFs.remove(path)
    }
    fn exists(&mut self, path: &Path) -> io::Result<bool> {
        StdFs.exists(path)
    }
}

#[test]
fn a_failure_at_any_step_on_the_real_file_system_leaves_the_old_or_the_new_gallery() {
    let old = gallery(&["ann"]);
    let new = gallery(&["ann", "bob"]);
    for fail_at in 1..=6 {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("gallery.fsgl");
        FileStore::open(&path).save(&bytes(&old, 1)).unwrap();
        let result =
            FileStore::with_fs(FailingFs { steps: 0, fail_at }, &path).save(&bytes(&new, 2));
        let after = boot_read(StdFs, &path);
        match result {
            Ok(()) => assert_eq!(after, Some(new.clone()), "step {fail_at}"),
            Err(e) => {
                assert!(
                    e.to_string().contains(&*tmp.path().to_string_lossy()),
                    "{e}"
                );
                assert!(
                    after == Some(old.clone()) || after == Some(new.clone()),
                    "failure at step {fail_at}: read {after:?}"
                );
            }
        }
        assert!(
            !tmp.path().join("gallery.fsgl.tmp").exists(),
            "step {fail_at}: the temporary file is gone after the next boot"
        );
    }
}

#[test]
fn a_corrupt_file_is_set_aside_under_a_fresh_name() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("gallery.fsgl");
    let mut store = FileStore::open(&path);
    for n in 1..=2 {
        std::fs::write(&path, format!("garbage {n}")).unwrap();
        let kept = store.set_aside().unwrap();
        assert_eq!(
            PathBuf::from(&kept),
            tmp.path().join(format!("gallery.fsgl.corrupt-{n}"))
        );
        assert_eq!(
            std::fs::read_to_string(&kept).unwrap(),
            format!("garbage {n}")
        );
        assert_eq!(store.load().unwrap(), None);
    }
}

/// A stand-in encoder for booting a door of 192-d embeddings (never asked
/// to embed here).
struct Dim192;

impl fewshot_firmware::door::Encoder for Dim192 {
    type Error = fewshot_firmware::encoder::EncoderError;
    fn dim(&self) -> usize {
        192
    }
    fn embed_frame(
        &mut self,
        _: &fewshot_firmware::core::Frame<'_>,
    ) -> Result<Vec<f32>, fewshot_firmware::encoder::EncoderError> {
        Ok(vec![0.0; 192])
    }
}

#[test]
fn a_door_of_a_thousand_people_keeps_them_through_a_cut_at_any_step() {
    use fewshot_firmware::door::{Config, Door, DoorGallery, DEFAULT_CAPACITY};
    use fewshot_firmware::events::Recorder;
    use fewshot_firmware::sim::SimHardware;

    let mut old = DoorGallery::<192>::with_capacity(DEFAULT_CAPACITY);
    let embedding =
        |i: usize| -> Vec<f32> { (0..192).map(|j| ((i * 7 + j) % 13) as f32 * 0.1).collect() };
    for i in 0..1000 {
        old.enroll(&format!("Person {i}"), &embedding(i)).unwrap();
    }
    // Old: people 0-999; new: one left (id 0), one joined (id 1000).
    let mut new = old.clone();
    new.remove(0).unwrap();
    new.enroll("Person 1000", &embedding(1000)).unwrap();
    assert_eq!((old.len(), new.len()), (1000, 1000));
    let encode = |g: &DoorGallery<192>, generation| {
        let mut out = vec![0; g.encoded_len()];
        store::encode(g, generation, &mut out).unwrap();
        out
    };
    let path = Path::new("/door/gallery.fsgl");
    let mut before = SimFs::default();
    FileStore::with_fs(&mut before, path)
        .save(&encode(&old, 1))
        .unwrap();
    for cut_at in 1..=5 {
        let mut fs = before.clone();
        fs.steps = 0;
        fs.cut_at = Some(cut_at);
        let saved = FileStore::with_fs(&mut fs, path).save(&encode(&new, 2));
        assert_eq!(saved.is_ok(), cut_at > 4, "cut at step {cut_at}");
        for pessimistic in [true, false] {
            // The door boots on what the disk kept, with the default capacity.
            let hw = SimHardware::new();
            let door: fewshot_firmware::sim::SimDoor<192, _, _, _> = Door::boot(
                Dim192,
                hw.io(),
                hw.camera.clone(),
                FileStore::with_fs(fs.reboot(pessimistic), path),
                Recorder::new(),
                Config::new(fewshot_firmware::core::Distance::L2, 1.0),
            )
            .unwrap();
            let got = door.gallery();
            assert!(
                got == &old || got == &new,
                "cut at step {cut_at} (pessimistic {pessimistic}): {} people, first id {:?}",
                got.len(),
                got.iter().next().map(|i| i.id)
            );
            if cut_at > 4 {
                assert_eq!(got, &new, "an uncut save is durable");
            }
        }
    }
    // A door started with a smaller capacity refuses the intact gallery
    // instead of setting it aside as corrupt.
    let hw = SimHardware::new();
    let mut config = Config::new(fewshot_firmware::core::Distance::L2, 1.0);
    config.capacity = 999;
    let refused = Door::<192, _, _, _, _, _, _, _, _, _>::boot(
        Dim192,
        hw.io(),
        hw.camera.clone(),
        FileStore::with_fs(before.reboot(true), path),
        Recorder::new(),
        config,
    );
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("1000 people") && message.contains("999"),
        "{message}"
    );
}
