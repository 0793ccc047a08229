use std::path::PathBuf;

/// Errors reading data sets; each names the file (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A path does not exist in any of the places looked.
    #[error("not found; looked at {}", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "))]
    NotFound {
        /// Every path tried.
        looked: Vec<PathBuf>,
    },
    /// A file or folder could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An image could not be read or decoded (the device's decoder names the file).
    #[error("{0} (expected a PNG, PGM or JPEG image)")]
    Image(#[from] fewshot_firmware::camera::ImageError),
    /// An image could not be preprocessed.
    #[error("{}: {source}", path.display())]
    Preprocess {
        /// The image file.
        path: PathBuf,
        /// The cause.
        source: fewshot_core::PreprocessError,
    },
    /// The face detector could not be loaded or run.
    #[error("face detector: {0}")]
    Detector(String),
    /// A text file has a malformed line.
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was expected.
        message: String,
    },
    /// A folder does not have the expected layout.
    #[error("{}: {message}", path.display())]
    Layout {
        /// The folder.
        path: PathBuf,
        /// What was expected.
        message: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn layout(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Layout {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn malformed(
        path: impl Into<PathBuf>,
        line: usize,
        message: impl Into<String>,
    ) -> Self {
        DataError::Malformed {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}
