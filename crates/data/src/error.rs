//! The crate's single error type.
//!
//! Every failure a user can provoke — a missing or corrupt file, a bad data set name, an index
//! past the end, a malformed partition spec — is a [`DataError`] variant rather than a panic.
//! File errors carry the path of the file (for the embedded sets, a pseudo-path under
//! `embedded/`) and say what is wrong with it, so that a message alone is enough to act on.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Result alias used throughout `synfed-data`.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, validating or slicing a data set.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file exists but could not be read.
    #[error("{}: cannot read file: {source}", .file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },

    /// The file (or its decompressed content) is empty.
    #[error("{}: file is empty", .file.display())]
    Empty {
        /// The file.
        file: PathBuf,
    },

    /// The file starts with the gzip magic but does not inflate cleanly.
    #[error("{}: corrupt or truncated gzip data: {source}", .file.display())]
    Gzip {
        /// The file.
        file: PathBuf,
        /// The decoder's error.
        source: io::Error,
    },

    /// A gzip file inflates past the size its format declares (a decompression bomb, or a
    /// header that understates the content).
    #[error("{}: inflates past {limit} bytes, the most its format allows", .file.display())]
    InflatesTooFar {
        /// The file.
        file: PathBuf,
        /// The declared (or format-wide) bound on the inflated size.
        limit: u64,
    },

    /// The leading magic number does not identify the expected format.
    #[error("{}: bad magic number {found:#010x}, expected {expected:#010x} ({format})", .file.display())]
    BadMagic {
        /// The file.
        file: PathBuf,
        /// The format that was expected, e.g. "IDX image file".
        format: &'static str,
        /// The magic the format requires.
        expected: u32,
        /// The magic found in the file.
        found: u32,
    },

    /// An IDX image file declares an image size other than the expected one.
    #[error(
        "{}: images are {}x{}, expected {}x{}",
        .file.display(), .found.0, .found.1, .expected.0, .expected.1
    )]
    BadDimensions {
        /// The file.
        file: PathBuf,
        /// Expected (rows, cols).
        expected: (usize, usize),
        /// Declared (rows, cols).
        found: (usize, usize),
    },

    /// The file is shorter than its header (or the header itself) requires.
    #[error("{}: truncated: expected {expected} bytes, found {found}", .file.display())]
    Truncated {
        /// The file.
        file: PathBuf,
        /// Bytes required by the header.
        expected: u64,
        /// Bytes present.
        found: u64,
    },

    /// The file is longer than its header accounts for.
    #[error(
        "{}: {found} bytes, but the header accounts for {expected}; trailing data means a corrupt file",
        .file.display()
    )]
    TrailingBytes {
        /// The file.
        file: PathBuf,
        /// Bytes accounted for by the header.
        expected: u64,
        /// Bytes present.
        found: u64,
    },

    /// A record-based file whose length is not a whole number of records.
    #[error(
        "{}: length {len} is not a whole number of {record}-byte records (truncated, or not this format)",
        .file.display()
    )]
    RecordSize {
        /// The file.
        file: PathBuf,
        /// File length in bytes.
        len: usize,
        /// Record length in bytes.
        record: usize,
    },

    /// A label is outside `0..classes`.
    #[error("{}: {kind} {label} of record {index} is out of range 0..{classes}", .file.display())]
    LabelOutOfRange {
        /// The file.
        file: PathBuf,
        /// Which label ("label", "fine label", "coarse label").
        kind: &'static str,
        /// Zero-based record index.
        index: usize,
        /// The offending label.
        label: u32,
        /// Number of classes.
        classes: usize,
    },

    /// An images file and its labels file disagree on the number of records.
    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        .images_file.display(), .labels_file.display()
    )]
    CountMismatch {
        /// The images file.
        images_file: PathBuf,
        /// Its record count.
        images: usize,
        /// The labels file.
        labels_file: PathBuf,
        /// Its record count.
        labels: usize,
    },

    /// A class-names file lists the wrong number of names.
    #[error("{}: {found} class names, expected {expected}", .file.display())]
    BadClassNames {
        /// The file.
        file: PathBuf,
        /// Names expected.
        expected: usize,
        /// Non-empty lines found.
        found: usize,
    },

    /// A data set name that is not one of [`crate::DatasetName::ALL`].
    #[error(
        "unknown data set `{name}`; valid names: {}",
        crate::DatasetName::valid_names()
    )]
    UnknownDataset {
        /// The name given.
        name: String,
    },

    /// A file-backed data set was requested without a data directory.
    #[error(
        "data set `{name}` is read from files: pass a data directory (--data-dir DIR), \
         or use an embedded set (demo-mnist, demo-cifar10)"
    )]
    DataDirRequired {
        /// The data set.
        name: &'static str,
    },

    /// The data directory does not exist or is not a directory.
    #[error("data directory {} does not exist or is not a directory", .dir.display())]
    DataDirNotFound {
        /// The directory given.
        dir: PathBuf,
    },

    /// A required file was not found under any accepted name or location.
    #[error("{dataset}: cannot find `{file}`; looked for {}", join_paths(.searched))]
    FileNotFound {
        /// The data set.
        dataset: &'static str,
        /// The file's canonical name.
        file: &'static str,
        /// Every path tried.
        searched: Vec<PathBuf>,
    },

    /// One split of a data set is present, the other is not (e.g. CIFAR-100 with only
    /// `test.bin`). No substitute split is ever invented.
    #[error(
        "{dataset}: the {split} split is missing (found {}, but none of {}); \
         add the official `{file}` to the data directory",
        .present.display(), join_paths(.searched)
    )]
    MissingSplit {
        /// The data set.
        dataset: &'static str,
        /// The missing split ("train" or "test").
        split: &'static str,
        /// The canonical name of the missing file.
        file: &'static str,
        /// The file of the other split that was found.
        present: PathBuf,
        /// Every path tried for the missing split.
        searched: Vec<PathBuf>,
    },

    /// An image index past the end of a data set.
    #[error("index {index} is out of range for a data set of {len} images")]
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// The data set's length.
        len: usize,
    },

    /// Parts handed to [`crate::Dataset::new`] or [`crate::Splits::new`] do not fit together.
    #[error("invalid data set: {reason}")]
    InvalidDataset {
        /// What does not fit.
        reason: String,
    },

    /// A [`crate::Normalization`] applied to data with a different number of channels or an
    /// incompatible layout.
    #[error("normalisation has {expected} channel(s) but the data has {found}")]
    ChannelMismatch {
        /// Channels in the normalisation.
        expected: usize,
        /// Channels in the data.
        found: usize,
    },

    /// A numeric argument outside its domain (batch size 0, k = 0, more clients than samples…).
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The argument.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },

    /// A partition spec that does not parse.
    #[error("invalid partition `{spec}`: {reason} (expected `iid`, `dirichlet:<alpha>` or `shards:<per_client>`)")]
    InvalidPartition {
        /// The spec given.
        spec: String,
        /// Why it is invalid.
        reason: String,
    },

    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

impl DataError {
    pub(crate) fn io(file: &Path, source: io::Error) -> Self {
        Self::Io {
            file: file.to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid_argument(name: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            name,
            reason: reason.into(),
        }
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_the_problem() {
        let err = DataError::BadMagic {
            file: PathBuf::from("d/train-images-idx3-ubyte"),
            format: "IDX image file",
            expected: 0x803,
            found: 0x801,
        };
        assert_eq!(
            err.to_string(),
            "d/train-images-idx3-ubyte: bad magic number 0x00000801, expected 0x00000803 (IDX image file)"
        );
        let err = DataError::FileNotFound {
            dataset: "mnist",
            file: "train-images-idx3-ubyte",
            searched: vec![PathBuf::from("a"), PathBuf::from("b")],
        };
        assert_eq!(
            err.to_string(),
            "mnist: cannot find `train-images-idx3-ubyte`; looked for a, b"
        );
    }

    #[test]
    fn unknown_dataset_lists_valid_names() {
        let msg = DataError::UnknownDataset {
            name: "svhn".into(),
        }
        .to_string();
        for name in ["mnist", "cifar10", "cifar100", "demo-mnist", "demo-cifar10"] {
            assert!(msg.contains(name), "{msg}");
        }
    }
}
