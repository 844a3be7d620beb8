//! The CIFAR-10 and CIFAR-100 binary formats.
//!
//! A CIFAR binary file is a plain sequence of fixed-size records with no header: CIFAR-10
//! records are 1 label byte + 3,072 pixel bytes, CIFAR-100 records are 1 coarse-label byte +
//! 1 fine-label byte + 3,072 pixel bytes. The pixels are already channel-major (the 1,024 R
//! values, then G, then B, each plane 32×32 row-major), which is exactly the layout a
//! [`Dataset`] keeps, so records are copied plane-for-plane without reordering. With no header
//! to check, validation rests on the record size dividing the file length and on every label
//! being in range. CIFAR-100 uses the fine label (100 classes).

use std::path::Path;

use crate::dataset::{Dataset, ImageShape};
use crate::error::{DataError, Result};
use crate::read;

/// CIFAR images are 3×32×32.
pub(crate) const SHAPE: ImageShape = ImageShape::new(3, 32, 32);
/// CIFAR-10 class names in label order (`batches.meta.txt`).
pub(crate) const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Number of CIFAR-100 fine classes.
pub(crate) const CIFAR100_FINE: usize = 100;
/// Number of CIFAR-100 coarse classes (superclasses).
const CIFAR100_COARSE: usize = 20;

/// The two record layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `label, pixels[3072]`.
    Cifar10,
    /// `coarse_label, fine_label, pixels[3072]`.
    Cifar100,
}

impl Layout {
    /// Bytes before the pixels.
    const fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 => 1,
            Self::Cifar100 => 2,
        }
    }

    /// Bytes per record.
    pub(crate) const fn record_len(self) -> usize {
        self.label_bytes() + SHAPE.numel()
    }

    /// Number of classes of the label that is kept.
    pub(crate) const fn classes(self) -> usize {
        match self {
            Self::Cifar10 => CIFAR10_CLASSES.len(),
            Self::Cifar100 => CIFAR100_FINE,
        }
    }

    /// Checks a record's label bytes and returns the label that is kept.
    fn label(self, record: &[u8], index: usize, file: &Path) -> Result<u32> {
        let check = |kind: &'static str, label: u8, classes: usize| {
            if usize::from(label) < classes {
                Ok(u32::from(label))
            } else {
                Err(DataError::LabelOutOfRange {
                    file: file.to_path_buf(),
                    kind,
                    index,
                    label: u32::from(label),
                    classes,
                })
            }
        };
        match self {
            Self::Cifar10 => check("label", record[0], self.classes()),
            Self::Cifar100 => {
                check("coarse label", record[0], CIFAR100_COARSE)?;
                check("fine label", record[1], self.classes())
            }
        }
    }
}

/// Validated records accumulated from one or more CIFAR binary files (e.g. the five
/// CIFAR-10 training batches).
#[derive(Debug)]
pub(crate) struct Records {
    layout: Layout,
    pixels: Vec<u8>,
    labels: Vec<u32>,
}

impl Records {
    /// No records yet.
    pub(crate) fn new(layout: Layout) -> Self {
        Self::with_capacity(layout, 0)
    }

    /// No records yet, with room for those in `bytes` bytes of files, so that appending
    /// several files never reallocates.
    pub(crate) fn with_capacity(layout: Layout, bytes: usize) -> Self {
        let records = bytes / layout.record_len();
        Self {
            layout,
            pixels: Vec::with_capacity(records * SHAPE.numel()),
            labels: Vec::with_capacity(records),
        }
    }

    /// Validates every record of `bytes` (read from `file`) and appends them. On error nothing
    /// is appended.
    pub(crate) fn append(&mut self, bytes: &[u8], file: &Path) -> Result<()> {
        let record = self.layout.record_len();
        if bytes.is_empty() {
            return Err(DataError::Empty {
                file: file.to_path_buf(),
            });
        }
        if bytes.len() % record != 0 {
            return Err(DataError::RecordSize {
                file: file.to_path_buf(),
                len: bytes.len(),
                record,
            });
        }
        let labels = bytes
            .chunks_exact(record)
            .enumerate()
            .map(|(index, r)| self.layout.label(r, index, file))
            .collect::<Result<Vec<u32>>>()?;
        self.pixels.reserve(labels.len() * SHAPE.numel());
        for r in bytes.chunks_exact(record) {
            self.pixels
                .extend_from_slice(&r[self.layout.label_bytes()..]);
        }
        self.labels.extend(labels);
        Ok(())
    }

    /// Number of records so far.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.labels.len()
    }

    /// The records as a data set with the given class names.
    pub(crate) fn into_dataset(self, name: &str, class_names: Vec<String>) -> Result<Dataset> {
        Dataset::new(name, SHAPE, self.pixels, self.labels, class_names)
    }
}

/// Builds a CIFAR-10 data set named `name` (official class names) from the contents of one
/// CIFAR-10 binary file, raw or gzip-compressed exactly as on disk (inflation bounded by
/// the largest record file); `path` names the file in errors.
pub fn cifar10_from_bytes(name: &str, bytes: &[u8], path: &Path) -> Result<Dataset> {
    from_bytes(Layout::Cifar10, name, bytes, path, cifar10_class_names())
}

/// Builds a CIFAR-100 data set named `name` (fine labels, numbered class names) from the
/// contents of one CIFAR-100 binary file, raw or gzip-compressed exactly as on disk; `path`
/// names the file in errors.
pub fn cifar100_from_bytes(name: &str, bytes: &[u8], path: &Path) -> Result<Dataset> {
    from_bytes(
        Layout::Cifar100,
        name,
        bytes,
        path,
        numbered_class_names(CIFAR100_FINE),
    )
}

/// One file's records, decoded and validated, as a data set.
fn from_bytes(
    layout: Layout,
    name: &str,
    bytes: &[u8],
    path: &Path,
    class_names: Vec<String>,
) -> Result<Dataset> {
    let mut records = Records::new(layout);
    records.append(&read::decode(bytes, path)?, path)?;
    records.into_dataset(name, class_names)
}

/// CIFAR-10 class names as owned strings.
pub(crate) fn cifar10_class_names() -> Vec<String> {
    CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
}

/// Placeholder names `class_0`, `class_1`, … for when no names file is available.
pub(crate) fn numbered_class_names(classes: usize) -> Vec<String> {
    (0..classes).map(|k| format!("class_{k}")).collect()
}

/// Parses a names file (one name per line, blank lines ignored) that must list exactly
/// `expected` names.
pub(crate) fn parse_class_names(text: &str, file: &Path, expected: usize) -> Result<Vec<String>> {
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if names.len() == expected {
        Ok(names)
    } else {
        Err(DataError::BadClassNames {
            file: file.to_path_buf(),
            expected,
            found: names.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::cifar_records;

    #[test]
    fn cifar10_records_keep_plane_order() {
        let bytes = cifar_records(&[(&[6], 10), (&[9], 200)]);
        let mut records = Records::new(Layout::Cifar10);
        records.append(&bytes, Path::new("b1")).unwrap();
        let ds = records.into_dataset("c10", cifar10_class_names()).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.shape(), ImageShape::new(3, 32, 32));
        assert_eq!(ds.labels(), &[6, 9]);
        let image = ds.image(1).unwrap();
        assert_eq!(
            (image[0], image[1024], image[2048], image[3071]),
            (200, 201, 202, 202)
        );
        assert_eq!(ds.class_names()[6], "frog");
    }

    #[test]
    fn cifar100_uses_fine_label() {
        let bytes = cifar_records(&[(&[19, 99], 1), (&[0, 49], 2)]);
        let mut records = Records::new(Layout::Cifar100);
        records.append(&bytes, Path::new("test.bin")).unwrap();
        let ds = records
            .into_dataset("c100", numbered_class_names(100))
            .unwrap();
        assert_eq!(ds.labels(), &[99, 49]);
        assert_eq!(ds.num_classes(), 100);
        assert_eq!(ds.image(1).unwrap()[0], 2);
        assert_eq!(ds.class_names()[49], "class_49");
    }

    #[test]
    fn several_files_append() {
        let mut records = Records::new(Layout::Cifar10);
        records
            .append(&cifar_records(&[(&[1], 0)]), Path::new("a"))
            .unwrap();
        records
            .append(&cifar_records(&[(&[2], 0), (&[3], 0)]), Path::new("b"))
            .unwrap();
        assert_eq!(records.len(), 3);
    }

    #[test]
    fn truncated_record_is_an_error() {
        let bytes = cifar_records(&[(&[1], 0), (&[2], 0)]);
        let mut records = Records::new(Layout::Cifar10);
        let err = records
            .append(&bytes[..bytes.len() - 1], Path::new("data_batch_1.bin"))
            .unwrap_err();
        assert!(
            matches!(
                err,
                DataError::RecordSize {
                    len: 6145,
                    record: 3073,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("data_batch_1.bin: length 6145"),
            "{err}"
        );
        assert_eq!(records.len(), 0);
        // A CIFAR-10 file read as CIFAR-100 fails the same way.
        let err = Records::new(Layout::Cifar100)
            .append(&bytes, Path::new("x"))
            .unwrap_err();
        assert!(matches!(err, DataError::RecordSize { .. }), "{err}");
    }

    #[test]
    fn empty_file_is_an_error() {
        let err = Records::new(Layout::Cifar10)
            .append(&[], Path::new("e"))
            .unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }));
    }

    #[test]
    fn labels_out_of_range() {
        let mut records = Records::new(Layout::Cifar10);
        let bytes = cifar_records(&[(&[1], 0), (&[10], 0)]);
        let err = records.append(&bytes, Path::new("b")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "b: label 10 of record 1 is out of range 0..10"
        );
        assert_eq!(records.len(), 0, "nothing appended on error");

        let mut records = Records::new(Layout::Cifar100);
        let bytes = cifar_records(&[(&[3, 100], 0)]);
        let err = records.append(&bytes, Path::new("t")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t: fine label 100 of record 0 is out of range 0..100"
        );
        let bytes = cifar_records(&[(&[20, 5], 0)]);
        let err = records.append(&bytes, Path::new("t")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t: coarse label 20 of record 0 is out of range 0..20"
        );
    }

    #[test]
    fn class_names_file() {
        let names = parse_class_names("a\nb\r\n\n c \n", Path::new("n"), 3).unwrap();
        assert_eq!(names, ["a", "b", "c"]);
        let err = parse_class_names("a\nb\n", Path::new("n.txt"), 3).unwrap_err();
        assert_eq!(err.to_string(), "n.txt: 2 class names, expected 3");
    }
}
