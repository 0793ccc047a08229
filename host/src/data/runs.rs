use std::path::{Path, PathBuf};

use super::DataError;

/// Name of the label file in each run folder.
pub const LABELS_FILE: &str = "class_labels.txt";

/// One of Lake's one-shot runs: one training image per class, and test images
/// each labelled with the index of its class's training image.
#[derive(Debug, Clone)]
pub struct OneShotRun {
    /// Run name (`run01`).
    pub name: String,
    /// Training images, one per class, sorted by file name.
    pub training: Vec<PathBuf>,
    /// Test images with the index of their class in `training`.
    pub test: Vec<(PathBuf, usize)>,
}

/// A folder of one-shot runs.
#[derive(Debug, Clone)]
pub struct RunSet {
    /// The runs, sorted by name.
    pub runs: Vec<OneShotRun>,
}

impl RunSet {
    /// Reads `root/runNN/class_labels.txt` for every run folder under `root`,
    /// or a single run if `root` itself holds the label file.
    pub fn load(root: &Path) -> Result<RunSet, DataError> {
        let runs = if root.join(LABELS_FILE).is_file() {
            let base = root.parent().unwrap_or(Path::new("."));
            vec![load_run(base, root)?]
        } else {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
                .map_err(|e| DataError::io(root, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join(LABELS_FILE).is_file())
                .collect();
            dirs.sort();
            dirs.iter()
                .map(|d| load_run(root, d))
                .collect::<Result<_, _>>()?
        };
        if runs.is_empty() {
            return Err(DataError::layout(
                root,
                format!("no run folders with a {LABELS_FILE} (expected runNN/{LABELS_FILE})"),
            ));
        }
        Ok(RunSet { runs })
    }
}

/// Parses one run; paths in the label file are relative to `base`.
fn load_run(base: &Path, dir: &Path) -> Result<OneShotRun, DataError> {
    let labels = dir.join(LABELS_FILE);
    let text = std::fs::read_to_string(&labels).map_err(|e| DataError::io(&labels, e))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [] => continue,
            [test, train] => {
                let (test, train) = (base.join(test), base.join(train));
                for p in [&test, &train] {
                    if !p.is_file() {
                        return Err(DataError::malformed(
                            &labels,
                            line_no,
                            format!("image {} does not exist", p.display()),
                        ));
                    }
                }
                pairs.push((test, train));
            }
            _ => {
                return Err(DataError::malformed(
                    &labels,
                    line_no,
                    format!("expected two paths \"runNN/test/itemXX.png runNN/training/classYY.png\", found {line:?}"),
                ))
            }
        }
    }
    if pairs.is_empty() {
        return Err(DataError::malformed(&labels, 1, "no test items listed"));
    }
    let mut training: Vec<PathBuf> = pairs.iter().map(|(_, t)| t.clone()).collect();
    training.sort();
    training.dedup();
    let test = pairs
        .into_iter()
        .map(|(test, train)| {
            let class = training.binary_search(&train).unwrap_or_default();
            (test, class)
        })
        .collect();
    Ok(OneShotRun {
        name,
        training,
        test,
    })
}
