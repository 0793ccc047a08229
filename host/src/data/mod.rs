//! Data sets on disk: class folders, Lake's one-shot runs, LFW pair lists, and
//! decoding images into preprocessed tensors.

mod classes;
mod error;
pub mod faces;
mod images;
mod pairs;
mod runs;

use std::path::{Path, PathBuf};

pub use classes::{Class, ClassSet, Layout};
pub use error::DataError;
pub use images::{decode_frame, preprocess_file, OwnedFrame, Tensors};
pub use pairs::{Pair, PairImage, PairList, SampleError};
pub use runs::{OneShotRun, RunSet};

/// Environment variable naming the data folder.
pub const DATA_ENV: &str = "FEWSHOT_DATA";
/// The data folder used when neither `--data` nor `FEWSHOT_DATA` says otherwise.
pub const DEFAULT_DATA: &str = "../shared/data";

/// The data root: `FEWSHOT_DATA` if set, else `../shared/data`.
pub fn data_root() -> PathBuf {
    std::env::var_os(DATA_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA))
}

/// Finds a data path: as given if it exists, else under the data root.
/// The error names every place it looked.
pub fn resolve(path: &Path) -> Result<PathBuf, DataError> {
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let mut looked = vec![path.to_path_buf()];
    if path.is_relative() {
        let under = data_root().join(path);
        if under.exists() {
            return Ok(under);
        }
        looked.push(under);
    }
    Err(DataError::NotFound { looked })
}
